"""Detection metrics: DET curve, equal error rate (EER), per-class and overall EER (paper, Sec. 4).

Conventions, shared by every function here:

- ``scores`` are detector outputs, higher meaning "more likely the event"; a clip is *detected* at threshold
  ``t`` when ``score >= t``.
- The false alarm rate (FAR) is the fraction of negatives detected, the miss rate (MR) the fraction of positives
  not detected. Both are fractions in ``[0, 1]`` (not percent).
- Per class (:func:`per_class_eer`), the positives are that class's clips and the negatives *all* other clips
  (other events and background); the overall EER is the unweighted mean over classes (the paper's "equal weight
  to each class").

Only numpy and scipy are needed at run time; :func:`det_curve` agrees with ``sklearn.metrics.det_curve`` (scikit-learn >= 1.7)
point for point, which the tests check.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.stats

__all__ = [
    "det_curve",
    "equal_error_rate",
    "eer_threshold",
    "per_class_eer",
    "roc_auc",
    "per_class_auc",
    "det_points",
    "per_class_det_points",
]

#: Rates are clipped to ``[RATE_CLIP, 1 - RATE_CLIP]`` before the normal-deviate (probit) transform.
RATE_CLIP = 1e-4


def _validate_binary(scores: np.ndarray, is_positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert ``scores`` (N,) float and ``is_positive`` (N,) boolean-like; return float64 and bool arrays.

    Raises:
        ValueError: shapes differ or are not 1-D, scores are not finite, labels are not boolean-like, or one of the
            two classes (positives, negatives) is absent.
    """
    scores_arr = np.asarray(scores)
    labels_arr = np.asarray(is_positive)
    if scores_arr.ndim != 1:
        raise ValueError(f"scores: expected a 1-D array of shape (N,), got shape {scores_arr.shape}")
    if labels_arr.shape != scores_arr.shape:
        raise ValueError(
            f"is_positive: expected the same shape as scores {scores_arr.shape}, got shape {labels_arr.shape}"
        )
    if scores_arr.size == 0:
        raise ValueError("scores: expected at least one positive and one negative clip, got an empty array")
    if not (np.issubdtype(scores_arr.dtype, np.number) or scores_arr.dtype == bool):
        raise ValueError(f"scores: expected a numeric array, got dtype {scores_arr.dtype}")
    scores_arr = scores_arr.astype(np.float64)
    if not np.all(np.isfinite(scores_arr)):
        bad = np.flatnonzero(~np.isfinite(scores_arr))
        raise ValueError(
            f"scores: expected finite values, got {bad.size} non-finite value(s) (NaN or inf), first at index {bad[0]}"
        )
    if labels_arr.dtype == bool:
        labels_bool = labels_arr
    else:
        if not np.issubdtype(labels_arr.dtype, np.number):
            raise ValueError(f"is_positive: expected booleans or 0/1 values, got dtype {labels_arr.dtype}")
        values = np.unique(labels_arr)
        if not np.all(np.isin(values, (0, 1))):
            shown = ", ".join(repr(v.item()) for v in values[:5])
            raise ValueError(f"is_positive: expected booleans or 0/1 values, got values {{{shown}}}")
        labels_bool = labels_arr == 1
    n_pos = int(labels_bool.sum())
    n_neg = labels_bool.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            "is_positive: expected both positive and negative clips, "
            f"got {n_pos} positive and {n_neg} negative; the DET curve and EER are undefined"
        )
    return scores_arr, labels_bool


def det_curve(*, scores: np.ndarray, is_positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detection error tradeoff curve: one operating point per distinct threshold.

    Element ``i`` of the outputs is the operating point "detected iff ``score >= thresholds[i]``". The thresholds
    are the distinct scores in increasing order, trimmed exactly as ``sklearn.metrics.det_curve`` (>= 1.7) trims
    them: the curve starts at the highest threshold that still detects every positive (MR = 0) and ends at the
    lowest threshold with no false alarm (FAR = 0), which is ``+inf`` (detect nothing) when the top score belongs to
    a negative clip.

    Args:
        scores: (N,) detector scores, higher = more likely the event; finite.
        is_positive: (N,) booleans (or 0/1): whether each clip is a positive; both classes must be present.

    Returns:
        ``(false_alarm_rate, miss_rate, thresholds)``, each of shape (M,), ``M <= N + 1``; rates are fractions,
        FAR non-increasing and MR non-decreasing along increasing thresholds.

    Raises:
        ValueError: see the module conventions (shape, finiteness, labels, both classes present).

    >>> far, mr, thr = det_curve(scores=np.array([0.1, 0.4, 0.35, 0.8]), is_positive=np.array([0, 0, 1, 1]))
    >>> far.tolist(), mr.tolist(), thr.tolist()
    ([0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.35, 0.4, 0.8])
    """
    scores_arr, labels = _validate_binary(scores, is_positive)
    order = np.argsort(-scores_arr, kind="mergesort")  # decreasing score
    sorted_scores = scores_arr[order]
    sorted_labels = labels[order]
    # last index of each run of equal scores (the cumulative counts there include the whole tie)
    distinct = np.flatnonzero(np.diff(sorted_scores))
    ends = np.r_[distinct, sorted_scores.size - 1]
    tps = np.cumsum(sorted_labels)[ends].astype(np.float64)
    fps = (ends + 1) - tps
    # a threshold at +inf where nothing is detected
    tps = np.r_[0.0, tps]
    fps = np.r_[0.0, fps]
    thresholds = np.r_[np.inf, sorted_scores[ends]]
    n_pos, n_neg = tps[-1], fps[-1]
    first = int(np.searchsorted(fps, 0.0, side="right")) - 1  # last point with no false alarm
    last = int(np.searchsorted(tps, n_pos, side="left")) + 1  # first point with no miss, inclusive
    keep = slice(first, last)
    far = fps[keep][::-1] / n_neg
    miss = (n_pos - tps[keep])[::-1] / n_pos
    return far, miss, thresholds[keep][::-1].copy()


def _eer_crossing(far: np.ndarray, miss: np.ndarray) -> tuple[int, float]:
    """Locate the FAR = MR crossing on a DET curve sorted by increasing threshold.

    Returns:
        ``(i, t)``: the crossing lies at ``(1 - t) * point[i - 1] + t * point[i]`` with ``t`` in ``(0, 1]``;
        ``t == 1`` (and possibly ``i == 0``) when point ``i`` itself has FAR == MR.
    """
    diff = far - miss  # >= 0 at the first point (MR = 0), <= 0 at the last (FAR = 0)
    i = int(np.argmax(diff <= 0.0))
    if diff[i] == 0.0 or i == 0:
        return i, 1.0
    before, after = diff[i - 1], diff[i]  # before > 0 > after
    return i, float(before / (before - after))


def equal_error_rate(*, scores: np.ndarray, is_positive: np.ndarray) -> float:
    """Equal error rate: the rate where the DET curve crosses the diagonal FAR = MR, as a fraction.

    Interpolation: along increasing thresholds, ``d = FAR - MR`` goes from ``>= 0`` (first point, MR = 0) to
    ``<= 0`` (last point, FAR = 0). Let ``i`` be the first point with ``d[i] <= 0``. If ``d[i] == 0`` the EER is
    ``FAR[i]`` (= ``MR[i]``). Otherwise the EER is where the straight segment, in linear rate coordinates, from
    point ``i - 1`` to point ``i`` meets the diagonal: with ``t = d[i-1] / (d[i-1] - d[i])``,
    ``EER = FAR[i-1] + t * (FAR[i] - FAR[i-1]) = MR[i-1] + t * (MR[i] - MR[i-1])``. That is the error rate of the
    detector that picks between the two neighbouring thresholds at random (the DET curve's convex combination).
    Perfectly separated scores give 0.0, fully inverted scores 1.0.

    Args:
        scores: (N,) detector scores, higher = more likely the event; finite.
        is_positive: (N,) booleans (or 0/1); both classes present.

    Returns:
        The EER, a fraction in ``[0, 1]``.

    >>> equal_error_rate(scores=np.array([0.9, 0.8, 0.2, 0.1]), is_positive=np.array([1, 1, 0, 0]))
    0.0
    >>> equal_error_rate(scores=np.array([0.1, 0.4, 0.35, 0.8]), is_positive=np.array([0, 0, 1, 1]))
    0.5
    """
    far, miss, _ = det_curve(scores=scores, is_positive=is_positive)
    i, t = _eer_crossing(far, miss)
    if t == 1.0:
        return float(far[i])
    return float(far[i - 1] + t * (far[i] - far[i - 1]))


def eer_threshold(*, scores: np.ndarray, is_positive: np.ndarray) -> float:
    """Score threshold at the EER point, e.g. to choose a detection threshold on validation data.

    The thresholds of the two operating points around the crossing are interpolated with the same ``t`` as the
    EER (see :func:`equal_error_rate`). When point ``i`` itself has FAR == MR its threshold is returned. When the
    upper neighbour is the ``+inf`` "detect nothing" point, the finite lower threshold is returned, so the result
    is always finite. On the data it came from, a threshold strictly between two consecutive scores operates like
    the upper one (``score >= threshold``); on new data it sits between them.

    Args:
        scores: (N,) detector scores; finite.
        is_positive: (N,) booleans (or 0/1); both classes present.

    Returns:
        The threshold, in the units of ``scores``.

    >>> eer_threshold(scores=np.array([0.9, 0.8, 0.2, 0.1]), is_positive=np.array([1, 1, 0, 0]))
    0.8
    """
    far, miss, thresholds = det_curve(scores=scores, is_positive=is_positive)
    i, t = _eer_crossing(far, miss)
    if t == 1.0:  # point i is on the diagonal; never the +inf point (FAR = 0 and MR = 1 there)
        return float(thresholds[i])
    if np.isinf(thresholds[i]):
        return float(thresholds[i - 1])
    return float(thresholds[i - 1] + t * (thresholds[i] - thresholds[i - 1]))


def _validate_multiclass(
    scores: np.ndarray, class_index: np.ndarray, classes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Check ``scores`` (N, L), ``class_index`` (N,) integers in ``[0, L]`` and ``classes`` (L names)."""
    names = [str(c) for c in classes]
    scores_arr = np.asarray(scores)
    index_arr = np.asarray(class_index)
    if scores_arr.ndim != 2:
        raise ValueError(f"scores: expected a 2-D array of shape (N, L), got shape {scores_arr.shape}")
    if scores_arr.shape[1] != len(names):
        raise ValueError(
            f"scores: expected {len(names)} columns (one per class in {names}), got shape {scores_arr.shape}"
        )
    if len(set(names)) != len(names) or "overall" in names:
        raise ValueError(f"classes: expected distinct names other than 'overall', got {names}")
    if index_arr.shape != (scores_arr.shape[0],):
        raise ValueError(
            f"class_index: expected shape ({scores_arr.shape[0]},) to match scores {scores_arr.shape}, "
            f"got {index_arr.shape}"
        )
    if not np.issubdtype(index_arr.dtype, np.integer):
        if np.issubdtype(index_arr.dtype, np.floating) and np.all(np.isfinite(index_arr)) and np.all(
            index_arr == np.round(index_arr)
        ):
            index_arr = index_arr.astype(np.int64)
        else:
            raise ValueError(f"class_index: expected integers in [0, {len(names)}], got dtype {index_arr.dtype}")
    if index_arr.size and (index_arr.min() < 0 or index_arr.max() > len(names)):
        raise ValueError(
            f"class_index: expected integers in [0, {len(names)}] ({len(names)} = background), "
            f"got values in [{index_arr.min()}, {index_arr.max()}]"
        )
    return scores_arr, index_arr, names


def _one_vs_all(index_arr: np.ndarray, column: int, name: str) -> np.ndarray:
    """Positives of class ``column`` against all other clips; raise naming the class if one side is empty."""
    is_positive = index_arr == column
    n_pos = int(is_positive.sum())
    n_neg = is_positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"class {name!r}: expected at least one positive and one negative clip, "
            f"got {n_pos} positive and {n_neg} negative; its EER is undefined"
        )
    return is_positive


def per_class_eer(*, scores: np.ndarray, class_index: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """EER of each class, one-vs-all, and their unweighted mean.

    For class ``l`` the positives are the clips with ``class_index == l`` and the negatives all other clips
    (other events and background, ``class_index == L``), scored by column ``l`` of ``scores``.

    Args:
        scores: (N, L) detector scores, column ``l`` for ``classes[l]``.
        class_index: (N,) integers in ``[0, L]``: the clip's class, ``L`` (= ``len(classes)``) for background.
        classes: the L event names, in column order.

    Returns:
        ``{class: eer, ..., "overall": mean over classes}``, fractions.

    Raises:
        ValueError: shapes or indices are inconsistent, or a class has no positive or no negative clip (named).

    >>> s = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.3], [0.3, 0.2]])
    >>> per_class_eer(scores=s, class_index=np.array([0, 1, 2, 2]), classes=["dog", "gun"])
    {'dog': 0.0, 'gun': 0.0, 'overall': 0.0}
    """
    scores_arr, index_arr, names = _validate_multiclass(scores, class_index, classes)
    result: dict[str, float] = {}
    for column, name in enumerate(names):
        is_positive = _one_vs_all(index_arr, column, name)
        try:
            result[name] = equal_error_rate(scores=scores_arr[:, column], is_positive=is_positive)
        except ValueError as error:
            raise ValueError(f"class {name!r}: {error}") from error
    result["overall"] = float(np.mean([result[name] for name in names]))
    return result


def roc_auc(*, scores: np.ndarray, is_positive: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random negative, ties
    counting one half (the Mann-Whitney U statistic over ``n_pos * n_neg``, from average ranks).

    >>> roc_auc(scores=np.array([0.9, 0.5, 0.5, 0.1]), is_positive=np.array([True, True, False, False]))
    0.875
    """
    scores_arr, pos = _validate_binary(scores, is_positive)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    ranks = scipy.stats.rankdata(scores_arr)  # average ranks for ties
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def per_class_auc(*, scores: np.ndarray, class_index: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """One-vs-all ROC AUC of each class (as :func:`per_class_eer`) and their unweighted mean ``"overall"``."""
    scores_arr, index_arr, names = _validate_multiclass(scores, class_index, classes)
    result = {
        name: roc_auc(scores=scores_arr[:, column], is_positive=_one_vs_all(index_arr, column, name))
        for column, name in enumerate(names)
    }
    result["overall"] = float(np.mean([result[name] for name in names]))
    return result


def _approx_probit(rates: np.ndarray) -> np.ndarray:
    """Approximate normal deviate of rates clipped to ``[RATE_CLIP, 1 - RATE_CLIP]``, numpy only.

    ``logit(p) / 1.702`` is within a few percent of the probit in the middle and monotone everywhere, which is all
    the arc-length spacing of :func:`det_points` needs (the plot itself uses the exact probit).
    """
    p = np.clip(rates, RATE_CLIP, 1.0 - RATE_CLIP)
    return np.log(p / (1.0 - p)) / 1.702


def det_points(*, scores: np.ndarray, is_positive: np.ndarray, max_points: int = 200) -> dict[str, list[float]]:
    """A thinned, JSON-friendly DET curve that keeps its shape.

    All points are kept when there are at most ``max_points``. Otherwise the kept points are: both extremes, the
    two points around the EER crossing (with ``max_points >= 8`` also their outer neighbours), and the rest spread
    evenly by arc length along the curve on (approximately) normal-deviate axes, the axes it is plotted on, so steep
    and flat stretches are both drawn faithfully.

    Args:
        scores: (N,) detector scores; finite.
        is_positive: (N,) booleans (or 0/1); both classes present.
        max_points: the most points returned; at least 4.

    Returns:
        ``{"far": [...], "mr": [...]}``: equal-length lists of fractions, rounded to 6 digits, ordered by increasing
        threshold (FAR non-increasing, MR non-decreasing).

    >>> det_points(scores=np.array([0.1, 0.4, 0.35, 0.8]), is_positive=np.array([0, 0, 1, 1]))
    {'far': [0.5, 0.5, 0.0], 'mr': [0.0, 0.5, 0.5]}
    """
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 4:
        raise ValueError(f"max_points: expected an integer >= 4, got {max_points!r}")
    far, miss, _ = det_curve(scores=scores, is_positive=is_positive)
    n = far.size
    if n <= max_points:
        keep = np.arange(n)
    else:
        i, _ = _eer_crossing(far, miss)
        required = {0, n - 1} | {j for j in (i - 1, i) if j >= 0}
        if max_points >= 8:  # room for the crossing's outer neighbours too
            required |= {j for j in (i - 2, i + 1) if 0 <= j < n}
        budget = max_points - len(required)
        x, y = _approx_probit(far), _approx_probit(miss)
        arc = np.r_[0.0, np.cumsum(np.hypot(np.diff(x), np.diff(y)))]
        if arc[-1] > 0.0 and budget > 0:
            targets = np.linspace(0.0, arc[-1], budget + 2)[1:-1]
            spread = np.searchsorted(arc, targets, side="left").clip(0, n - 1)
        else:
            spread = np.linspace(0, n - 1, budget + 2).round().astype(int)[1:-1]
        keep = np.array(sorted(required | {int(j) for j in spread}))
    return {
        "far": [round(float(v), 6) for v in far[keep]],
        "mr": [round(float(v), 6) for v in miss[keep]],
    }


def per_class_det_points(
    *, scores: np.ndarray, class_index: np.ndarray, classes: Sequence[str], max_points: int = 200
) -> dict[str, dict[str, list[float]]]:
    """One-vs-all :func:`det_points` for each class (the ``"det"`` entry of a method in ``results.json``).

    Args:
        scores: (N, L) detector scores, column ``l`` for ``classes[l]``.
        class_index: (N,) integers in ``[0, L]``, ``L`` for background.
        classes: the L event names, in column order.
        max_points: the most points per class; at least 4.

    Returns:
        ``{class: {"far": [...], "mr": [...]}, ...}``.

    >>> s = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.3], [0.3, 0.2]])
    >>> per_class_det_points(scores=s, class_index=np.array([0, 1, 2, 2]), classes=["dog", "gun"])["dog"]
    {'far': [0.0], 'mr': [0.0]}
    """
    scores_arr, index_arr, names = _validate_multiclass(scores, class_index, classes)
    out: dict[str, dict[str, list[float]]] = {}
    for column, name in enumerate(names):
        is_positive = _one_vs_all(index_arr, column, name)
        out[name] = det_points(scores=scores_arr[:, column], is_positive=is_positive, max_points=max_points)
    return out
