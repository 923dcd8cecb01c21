"""Reading a run's ``results.json`` dictionary (see :mod:`thce.report` for its shape): its classes and methods
checked, an EER value, a fraction shown as percent. Shared by the tables (:mod:`thce.report`), the figures
(:mod:`thce.figures`) and ``thce report``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def results_classes_and_methods(results: Any) -> tuple[list[str], dict[str, Any]]:
    """Return ``(classes, methods)`` of a results dictionary, or raise a ValueError saying what is wrong."""
    if not isinstance(results, Mapping):
        raise ValueError(f"results: expected a dict shaped like results.json, got {type(results).__name__}")
    classes = results.get("classes")
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"results['classes']: expected a non-empty list of class names, got {classes!r}")
    methods = results.get("methods")
    if not isinstance(methods, Mapping) or not methods:
        raise ValueError(
            "results['methods']: expected a non-empty dict {method: {'eer': {...}, 'det': {...}}}, "
            f"got {type(methods).__name__ if methods is not None else 'nothing'}"
        )
    for name, entry in methods.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("eer"), Mapping):
            raise ValueError(
                f"results['methods'][{name!r}]: expected a dict with an 'eer' dict {{class: fraction, ..., "
                f"'overall': fraction}}, got {entry!r:.120}"
            )
    return list(classes), dict(methods)


def eer_value(eer: Mapping[str, Any], key: str) -> float | None:
    """The EER fraction under ``key``, or None if missing or not a finite number."""
    value = eer.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def percent(value: float) -> str:
    """A fraction as percent with one decimal: 0.0867 -> '8.7'."""
    return f"{100.0 * value:.1f}"
