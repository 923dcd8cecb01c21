"""The detection product: a trained run used on recordings of any length.

Recordings (:mod:`~thce.detection.inputs`) -> window scores (:mod:`~thce.detection.inference`, the one scoring path
that detection and export share) -> a score over time and events (:mod:`~thce.detection.detect`,
:mod:`~thce.detection.localise`, per-class thresholds from :mod:`~thce.detection.thresholds`, the settings in
:mod:`~thce.detection.config`) -> event lists (:mod:`~thce.detection.events`), score tables
(:mod:`~thce.detection.tables`) and review pages (:mod:`~thce.detection.pages`); their evaluation
(:mod:`~thce.detection.metrics`, :mod:`~thce.detection.threshold_free`); the trained detector exported for deployment
(:mod:`~thce.detection.export`); the checks on output paths made before any work (:mod:`~thce.detection.outputs`).

:func:`run_detection` (:mod:`~thce.detection.run`) is ``thce detect`` for Python callers: it writes the same files.
The names below are imported when first used, so that importing a light submodule (``thce.detection.outputs``, the
command line's first checks) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Name -> the submodule defining it.
_EXPORTS = {
    "DetectConfig": "thce.detection.config",
    "EventRules": "thce.detection.localise",
    "DetectionOutputs": "thce.detection.run",
    "DetectionRun": "thce.detection.run",
    "run_detection": "thce.detection.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'thce.detection' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
