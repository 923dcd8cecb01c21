"""Per-class detection thresholds chosen on the validation split (the operating point of a detector).

A rule is ``"eer"`` (each class's EER threshold on the validation scores, one-vs-all:
:func:`thce.metrics.eer_threshold`), ``"far:RATE"`` (the lowest threshold whose false-alarm rate on the validation
negatives is at most RATE, :func:`far_threshold`) or a number used for every class (:func:`parse_threshold_rule`).
A window or clip detects class ``l`` iff its score is at least ``thresholds[l]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from thce.errors import ConfigError, DataError


def parse_threshold_rule(rule: str | float) -> tuple[str, float]:
    """``"eer"`` -> ("eer", nan); ``"far:0.01"`` -> ("far", 0.01); ``"0.5"`` or 0.5 -> ("fixed", 0.5); ``"events"``
    -> ("events", nan): a frame-level run's thresholds chosen on validation event F; ``"auto"`` -> ("auto", nan):
    ``"events"`` for a frame-level run, ``"eer"`` for a clip-level one (:func:`resolve_threshold_rule`)."""
    if isinstance(rule, (int, float)) and not isinstance(rule, bool):
        text = str(rule)
    elif isinstance(rule, str):
        text = rule.strip().lower()
    else:
        raise ConfigError(f"threshold: expected 'eer', 'events', 'far:RATE' or a number, got {rule!r}")
    if text in ("eer", "events", "auto"):
        return text, math.nan
    if text.startswith("far:"):
        try:
            rate = float(text[4:])
        except ValueError:
            rate = math.nan
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"threshold {rule!r}: expected far:RATE with RATE in [0, 1), e.g. far:0.01")
        return "far", rate
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(
            f"threshold {rule!r}: expected 'eer', 'events', 'auto', 'far:RATE' (e.g. far:0.01) or a number"
        ) from None
    if not math.isfinite(value):
        raise ConfigError(f"threshold {rule!r}: expected a finite number")
    return "fixed", value


def far_threshold(negative_scores: np.ndarray, target_far: float) -> float:
    """Lowest threshold ``t`` (detect iff ``score >= t``) with at most ``floor(target_far * n)`` of the ``n``
    negative scores detected, i.e. false-alarm rate <= ``target_far``.

    >>> far_threshold(np.array([0.1, 0.2, 0.3, 0.9]), 0.25)  # one false alarm allowed: just above 0.3
    0.30000000000000004
    """
    neg = np.sort(np.asarray(negative_scores, dtype=np.float64))[::-1]
    if neg.size == 0:
        raise ValueError("far_threshold: no negative scores")
    allowed = math.floor(target_far * neg.size + 1e-9)
    if allowed >= neg.size:
        return float(neg[-1])
    return float(np.nextafter(neg[allowed], np.inf))


def resolve_threshold_rule(rule: str | float, *, frame_level: bool) -> str | float:
    """``"auto"`` -> ``"events"`` for a frame-level run, ``"eer"`` otherwise; ``"events"`` for a clip-level run is a
    :class:`ConfigError`; any other rule as given.

    >>> resolve_threshold_rule("auto", frame_level=True), resolve_threshold_rule("far:0.01", frame_level=False)
    ('events', 'far:0.01')
    """
    kind, _ = parse_threshold_rule(rule)
    if kind == "auto":
        return "events" if frame_level else "eer"
    if kind == "events" and not frame_level:
        raise ConfigError("threshold 'events': only for a frame-level run (data.strong_labels), whose checkpoint holds "
                          "thresholds chosen on validation event F; use eer, far:RATE or a number")  # fmt: skip
    return rule


def class_thresholds(
    *, val_scores: np.ndarray, val_class_index: np.ndarray, classes: Sequence[str], rule: str | float = "eer"
) -> np.ndarray:
    """Per-class detection thresholds ``(L,)`` from validation scores (one-vs-all: negatives are all other clips).

    Args:
        val_scores: ``(n, L)`` sigmoid scores of the validation clips.
        val_class_index: ``(n,)`` class of each clip, ``L`` for background.
        classes: the L names (for messages).
        rule: ``"eer"``, ``"far:RATE"`` or a number (see :func:`parse_threshold_rule`).

    Raises:
        DataError: a class lacks the validation positives or negatives the rule needs (named).
    """
    from thce.metrics import eer_threshold  # scipy.stats: most of a second to import, only for this rule

    kind, value = parse_threshold_rule(rule)
    if kind in ("events", "auto"):
        raise ValueError(f"class_thresholds: rule {rule!r} is resolved from the checkpoint, not from scores")
    scores = np.asarray(val_scores, dtype=np.float64)
    index = np.asarray(val_class_index)
    out = np.empty(len(classes), dtype=np.float64)
    for column, name in enumerate(classes):
        if kind == "fixed":
            out[column] = value
            continue
        positive = index == column
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_neg == 0 or (kind == "eer" and n_pos == 0):
            raise DataError(
                f"class {name!r}: the validation split has {n_pos} positive and {n_neg} negative clips, too few for "
                f"a {kind.upper()} threshold; use --threshold far:RATE or a number"
            )
        if kind == "eer":
            out[column] = eer_threshold(scores=scores[:, column], is_positive=positive)
        else:
            out[column] = far_threshold(scores[~positive, column], value)
    return out
