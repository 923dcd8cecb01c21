"""Window scores -> a score over time -> events: the one rule ``thce detect`` and ``thce events`` apply.

**Score over time.** Time is cut into frames one hop long: frame ``j`` is ``[j*hop, (j+1)*hop)`` (the last one ends
at the end of the file). A window *hears* a frame when the frame's centre lies in the window's support (the part
of the window the model's output depends on, :func:`thce.detection.inference.receptive_field`). A frame's score for
a class is the **lowest** score of the windows that hear it: a frame is part of an event at threshold ``t`` only when every
window that hears it detects the class. Frames before the first support or after the last one are heard by the
first (last) window alone, so files shorter than two windows and events at the start or end of a file are handled
by the same rule. Digital-silence windows (which training rejects as clips) score ``-inf`` and so veto the frames they
hear at any threshold.

Why the minimum: a window detects an event that lies anywhere in its support. A short event in frame ``j`` makes
every window hearing ``j`` fire, and no window that hears only other frames; the frames whose windows all fire are
the frames the event can be in (to within a hop). So a run of ``n`` firing windows whose support is ``m`` hops
long gives ``n - m + 1`` frames, and more firing windows always give more frames: an event is at least one hop
long and a longer detection never yields a shorter event. A run of fewer than ``m`` windows (say one window firing
between two that hear the same frames and do not) gives no frame: the windows disagree about every frame. With
``hop = window`` (no overlap, ``m = 1``) every firing window is its own event.

**Agreement** (``agreement``; ``thce detect``'s default 0.5, measured below). Trained models often fire only when enough of an event is inside the
window, which leaves runs shorter than ``m``. With ``agreement = a < 1`` a frame counts when at least a fraction ``a``
of the windows hearing it detect (its score is that order statistic of their scores): fewer events are lost, and
events grow by up to ``(1 - a) * support`` in all. Every statement above (one hop at least, more detecting windows
never a shorter event, thresholding the saved curve gives the events) holds for any ``a``. On a 180 s synthetic
scene with a small trained CNN (2 s windows, 8 events), ``a = 1`` kept 1 event at hop 0.25 s (F 0 %), ``a = 0.5``
6 (event-based ER 87.5 %, F 42.9 %; the previous localisation rule: ER 125 %, F 42.1 %).

**Events** (:func:`curve_to_events`), per class: optional median filter over the score curve (``median_filter_s``;
a median of scores thresholded is a majority vote of the frame decisions), runs of frames with score >= the class
threshold, events of one class less than ``min_gap_s`` apart merged, events shorter than ``min_event_s`` dropped
(:class:`EventRules`). Each event's score is the highest frame score in it. The curve after the median filter is what
``thce detect`` saves (:mod:`thce.detection.tables`), so thresholding the saved table (``thce events``,
sed_scores_eval) gives the same events.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from thce.errors import ConfigError


def frame_edges(duration_s: float, hop_s: float) -> np.ndarray:
    """``(F + 1,)`` frame boundaries in seconds: ``0, hop, 2 hop, ..., duration`` (the last frame may be shorter;
    a final sliver under a millisecond joins the frame before it)."""
    if not hop_s > 0 or not duration_s > 0:
        raise ValueError(f"frame_edges: expected positive hop and duration, got {hop_s}, {duration_s}")
    n = max(1, math.ceil(duration_s / hop_s - 1e-3 / hop_s))
    edges = np.arange(n + 1, dtype=np.float64) * hop_s
    edges[-1] = duration_s
    return edges


def hearing_windows(centres_s: np.ndarray, n_windows: int, hop_s: float, support_s: tuple[float, float]) -> np.ndarray:
    """``(F, 2)`` first and last window (inclusive) whose support ``[k*hop + a, k*hop + b)`` holds each frame centre.

    A centre heard by no window (before the first support, after the last, or between supports shorter than a hop)
    takes the nearest window(s) by support centre."""
    a, b = support_s
    eps = 1e-9 * max(hop_s, 1.0)
    lo = np.floor((centres_s - b) / hop_s + eps).astype(np.int64) + 1  # k*hop + b > t
    hi = np.floor((centres_s - a) / hop_s + eps).astype(np.int64)  # k*hop + a <= t
    lo = np.clip(lo, 0, n_windows - 1)
    hi = np.clip(hi, 0, n_windows - 1)
    empty = lo > hi
    if empty.any():
        nearest = np.clip(np.rint((centres_s[empty] - (a + b) / 2.0) / hop_s), 0, n_windows - 1).astype(np.int64)
        lo[empty] = hi[empty] = nearest
    return np.stack([lo, hi], axis=1)


def score_curve(
    window_scores: np.ndarray,
    *,
    hop_s: float,
    support_s: tuple[float, float],
    duration_s: float,
    silent: np.ndarray | None = None,
    agreement: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """The score over time (module docstring).

    Args:
        window_scores: ``(K, L)`` scores of windows starting at ``k * hop_s``.
        hop_s: seconds between windows (and the frame length).
        support_s: ``(a, b)`` seconds from a window's start: the part of it the model hears.
        duration_s: length of the file, seconds.
        silent: ``(K,)`` bool, windows of digital silence (score ``-inf``: they veto their frames), or None.
        agreement: the fraction of the windows hearing a frame that must detect for the frame to count: the frame's
            score is the ``ceil(agreement * c)``-th highest of its ``c`` windows' scores (1: the lowest).

    Returns:
        ``edges (F + 1,)`` frame boundaries in seconds and ``curve (F, L)`` float32 frame scores.
    """
    scores = np.asarray(window_scores, dtype=np.float32)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"window_scores: expected (K >= 1, L), got shape {scores.shape}")
    if silent is not None and silent.shape == (scores.shape[0],) and silent.any():
        scores = scores.copy()
        scores[silent] = -np.inf
    edges = frame_edges(duration_s, hop_s)
    centres = (edges[:-1] + edges[1:]) / 2.0
    heard = hearing_windows(centres, scores.shape[0], hop_s, support_s)
    if not 0.0 < agreement <= 1.0:
        raise ConfigError(f"agreement: expected a fraction in (0, 1], got {agreement!r}")
    span = int((heard[:, 1] - heard[:, 0]).max()) + 1
    if agreement >= 1.0:
        curve = scores[heard[:, 0]]
        for d in range(1, span):  # running minimum over each frame's contiguous range of windows
            curve = np.minimum(curve, scores[np.minimum(heard[:, 0] + d, heard[:, 1])])
        return edges, np.ascontiguousarray(curve, dtype=np.float32)
    count = heard[:, 1] - heard[:, 0] + 1  # (F,)
    index = heard[:, :1] + np.arange(span)[None, :]  # (F, span)
    gathered = scores[np.minimum(index, heard[:, 1:])]  # (F, span, L)
    gathered[index > heard[:, 1:]] = -np.inf  # beyond the frame's windows: never among the highest
    rank = np.ceil(agreement * count - 1e-9).astype(np.int64) - 1  # 0-based rank from the top
    ordered = -np.sort(-gathered, axis=1)
    curve = np.take_along_axis(ordered, rank[:, None, None], axis=1)[:, 0, :]
    return edges, np.ascontiguousarray(curve, dtype=np.float32)


def median_filter_frames(median_filter_s: float | None, *, hop_s: float, support_s: tuple[float, float]) -> int:
    """Median filter length in frames (odd, >= 1) for ``median_filter_s`` seconds (None: a quarter of the
    support; 0: off)."""
    seconds = (support_s[1] - support_s[0]) / 4.0 if median_filter_s is None else median_filter_s
    n = max(1, int(round(seconds / hop_s)))
    return n if n % 2 else n + 1 if n > 1 else 1


def median_filter_curve(curve: np.ndarray, kernel: int) -> np.ndarray:
    """Median of ``kernel`` (odd) neighbouring frames per class, ``(F, L)`` -> same shape; the edges repeat the
    first and last frame. Thresholding the result equals a majority vote of thresholded frames."""
    if kernel <= 1 or curve.shape[0] == 0:
        return np.asarray(curve, dtype=np.float32).copy()
    from scipy.ndimage import median_filter

    return median_filter(np.asarray(curve, dtype=np.float32), size=(kernel, 1), mode="nearest")


def runs(active: np.ndarray) -> list[tuple[int, int]]:
    """``(first, last)`` indices (inclusive) of each run of True in a 1-D bool array."""
    padded = np.r_[False, active, False].astype(np.int8)
    change = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(change[::2], change[1::2])]


@dataclass(frozen=True)
class EventRules:
    """How runs of active frames become events (the post-processing after the threshold, :func:`curve_to_events`);
    ``thce detect`` and ``thce events`` take these settings from the same flags.

    Attributes:
        min_event_s: events shorter than this are dropped (after merging), seconds; 0 = keep all.
        min_gap_s: events of one class less than this apart are merged, seconds; 0 = only touching runs.
    """

    min_event_s: float = 0.0
    min_gap_s: float = 0.0

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a negative or non-finite setting."""
        for name, value in dataclasses.asdict(self).items():
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name}: expected a non-negative number of seconds, got {value!r}")


def curve_to_events(
    edges: np.ndarray,
    curve: np.ndarray,
    thresholds: np.ndarray,
    classes: Sequence[str],
    rules: EventRules | Sequence[EventRules] = EventRules(),
) -> list[tuple[float, float, str, float]]:
    """:func:`exact_events` as event lists hold them: times rounded to milliseconds, scores to 6 decimals (after
    sorting by the exact times)."""
    found = exact_events(edges, curve, thresholds, classes, rules)
    return [(round(on, 3), round(off, 3), label, round(sc, 6)) for on, off, label, sc in found]


def exact_events(
    edges: np.ndarray,
    curve: np.ndarray,
    thresholds: np.ndarray,
    classes: Sequence[str],
    rules: EventRules | Sequence[EventRules] = EventRules(),
) -> list[tuple[float, float, str, float]]:
    """Events ``(onset_s, offset_s, label, score)`` from a (median-filtered) score curve, sorted by onset, label;
    times and scores as computed (frame-level runs choose their post-processing on these).

    A frame is active for class ``l`` iff ``curve[:, l] >= thresholds[l]``; runs of active frames are events;
    same-class events less than ``rules.min_gap_s`` apart are merged (the merged score is the higher); events
    shorter than ``rules.min_event_s`` are then dropped. Every event is at least one frame long. ``rules`` may be
    one per class (a frame-level run's, chosen on validation).
    """
    per_class = [rules] * len(classes) if isinstance(rules, EventRules) else list(rules)
    if len(per_class) != len(classes):
        raise ValueError(f"{len(per_class)} event rules for {len(classes)} classes")
    for rule in per_class:
        rule.validate()
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if curve.ndim != 2 or thresholds.shape != (curve.shape[1],) or len(classes) != curve.shape[1]:
        raise ValueError(f"curve {curve.shape}, thresholds {thresholds.shape}, {len(classes)} classes disagree")
    if edges.shape != (curve.shape[0] + 1,):
        raise ValueError(f"edges: expected {curve.shape[0] + 1} boundaries, got {edges.shape}")
    events: list[tuple[float, float, str, float]] = []
    eps = 1e-9
    for column, (label, rule) in enumerate(zip(classes, per_class)):
        found: list[list[float]] = []
        values = curve[:, column].astype(np.float64)
        for first, last in runs(values >= thresholds[column]):
            onset, offset = float(edges[first]), float(edges[last + 1])
            score = float(values[first : last + 1].max())
            if found and onset - found[-1][1] < rule.min_gap_s - eps:
                found[-1][1], found[-1][2] = offset, max(found[-1][2], score)
            else:
                found.append([onset, offset, score])
        events += [(on, off, label, sc) for on, off, sc in found if off - on >= rule.min_event_s - eps]
    events.sort(key=lambda e: (e[0], e[2]))
    return events


def stitch_frames(
    window_frames: np.ndarray, *, hop_s: float, frame_hop_s: float, duration_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """A frame-level model's scores of overlapping windows -> one score per frame of the file.

    ``window_frames`` ``(K, T', L)``: window ``k`` starts at ``k * hop_s`` and its frame ``j`` covers
    ``[k * hop_s + j * frame_hop_s, ... + frame_hop_s)``; ``hop_s`` must be a whole number of frames. A frame of the
    file scores the mean of the windows that cover it (every frame of the file is covered: the windows reach its
    end). Returns ``(edges (F + 1,), curve (F, L))`` with frames ``frame_hop_s`` long, the last cut at the file's end.

    >>> w = np.array([[[0.0], [1.0]], [[3.0], [5.0]]])  # 2 windows of 2 frames, one frame apart
    >>> edges, curve = stitch_frames(w, hop_s=0.5, frame_hop_s=0.5, duration_s=1.5)
    >>> edges.tolist(), curve[:, 0].tolist()
    ([0.0, 0.5, 1.0, 1.5], [0.0, 2.0, 5.0])
    """
    steps = hop_s / frame_hop_s
    if abs(steps - round(steps)) > 1e-6 or round(steps) < 1:
        raise ConfigError(f"hop_s {hop_s:g}: a frame-level model needs a hop of whole frames ({frame_hop_s:g} s each)")
    steps = int(round(steps))
    windows, per_window, classes = window_frames.shape
    edges = frame_edges(duration_s, frame_hop_s)
    total = len(edges) - 1
    sums = np.zeros((max(total, (windows - 1) * steps + per_window), classes), dtype=np.float64)
    counts = np.zeros(len(sums), dtype=np.int64)
    for k in range(windows):
        sums[k * steps : k * steps + per_window] += window_frames[k]
        counts[k * steps : k * steps + per_window] += 1
    if (counts[:total] == 0).any():
        raise ValueError("stitch_frames: the windows do not cover every frame of the file")
    return edges, (sums[:total] / counts[:total, None]).astype(np.float32)
