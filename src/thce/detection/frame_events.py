"""Frame scores of clips -> events, and the post-processing a frame-level run chooses on validation.

A frame-level model scores every output frame of a clip, ``(frames_out, L)`` with frame ``j`` covering
``[j * hop_s, (j + 1) * hop_s)``. Events come from :mod:`thce.detection.localise`'s one rule (median filter, per-class
threshold, merge gaps, drop short events). :func:`choose_post_processing` picks, per class, the threshold, the
median-filter length, the gap below which events merge and the shortest event kept that maximise that class's
event-based F on the validation clips (DCASE 2017 Task 2's metric: onset within a 500 ms collar), not the EER: what
a user of the detector wants is events. Each class's F depends only on its own events, so classes are chosen
independently. The grid (some 2,500 settings per class) is counted with :func:`_grid_f`, which gives exactly what
:func:`evaluate_clips` gives for each setting (a test checks it) in a fraction of the time.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thce.detection.metrics import DCASE_COLLAR_S, evaluate_events
from thce.detection.events import Event, EventList
from thce.detection.localise import EventRules, exact_events, frame_edges, median_filter_curve

#: What :func:`choose_post_processing` tries: thresholds on the sigmoid scores and median-filter lengths (s). The
#: grids reach 0.99 and 1.5 s: on the first DCASE-style run validation chose the old edges (0.95, 0.75 s). Above
#: 0.99 the thresholds go on in roughly even steps of the logit to 0.9999: Eq. 2's class weights (tens to a hundred
#: at frame level) push event frames' sigmoid towards 1, and with a grid ending at 0.99 12 of the 18 per-class
#: choices of the 225-event config's baseline and Proposed2 (3 seeds) sat on that edge; on validation clips held
#: out from the choice the longer grid scored +0.4 points of event F (benchmarks/results/frame_threshold_grid.json),
#: +0.2 [-0.5, +0.9] over both DCASE-style configs (frame_threshold_grid_both_configs.json; docs/results.md says
#: where the test clips disagree).
THRESHOLD_GRID = (*(round(float(t), 2) for t in np.arange(0.05, 0.951, 0.05)), 0.97, 0.98, 0.99,
                  0.995, 0.998, 0.999, 0.9995, 0.9999)  # fmt: skip
MEDIAN_FILTER_GRID_S = (0.0, 0.15, 0.25, 0.45, 0.75, 1.05, 1.5)
#: Gaps (s) below which events of a class merge (a baby's cry broken at each breath is one event), and the shortest
#: event kept (s): both tried with every threshold and median filter.
MIN_GAP_GRID_S = (0.0, 0.25, 0.5, 1.0, 2.0)
MIN_EVENT_GRID_S = (0.0, 0.1, 0.2, 0.4)


@dataclass(frozen=True)
class PostProcessing:
    """Per class: a threshold on the frame scores, a median filter, the gap below which events merge and the shortest
    event kept (seconds; 0: off; a class absent from the last two: 0)."""

    thresholds: dict[str, float]
    median_filter_s: dict[str, float]
    min_event_s: dict[str, float] = field(default_factory=dict)
    min_gap_s: dict[str, float] = field(default_factory=dict)

    def rules(self, label: str) -> EventRules:
        """The merge and minimum-length rules of ``label``."""
        return EventRules(min_event_s=self.min_event_s.get(label, 0.0), min_gap_s=self.min_gap_s.get(label, 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {"thresholds": dict(self.thresholds), "median_filter_s": dict(self.median_filter_s),
                "min_event_s": dict(self.min_event_s), "min_gap_s": dict(self.min_gap_s)}  # fmt: skip

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any], classes: Sequence[str]) -> PostProcessing:
        """What :meth:`to_dict` wrote (a checkpoint's ``frames.post_processing``); the rules may be one number for
        every class (checkpoints written before they were chosen per class). Raises KeyError for a class without a
        threshold or median filter."""

        def per_class(key: str, required: bool) -> dict[str, float]:
            value = saved.get(key, {} if not required else None)
            if isinstance(value, (int, float)):
                return {c: float(value) for c in classes}
            missing = [c for c in classes if c not in value] if required else []
            if missing:
                raise KeyError(f"post_processing.{key} lacks {', '.join(missing)}")
            return {c: float(value[c]) for c in classes if c in value}

        return cls(per_class("thresholds", True), per_class("median_filter_s", True),
                   per_class("min_event_s", False), per_class("min_gap_s", False))  # fmt: skip


@contextlib.contextmanager
def _quiet_metrics() -> Iterator[None]:
    """:func:`evaluate_events` on one clip or one class at a time, without its notes on labels or files absent from
    one side (expected here, and thousands of them over a grid)."""
    logger = logging.getLogger(evaluate_events.__module__)
    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before


def median_frames(median_filter_s: float, hop_s: float) -> int:
    """A median filter's length in frames: odd, at least 1 (off)."""
    n = max(1, int(round(median_filter_s / hop_s)))
    return n if n % 2 else n + 1


def clip_events(
    name: str, scores: np.ndarray, hop_s: float, classes: Sequence[str], post: PostProcessing
) -> list[Event]:
    """Events of one clip from its frame scores ``(frames_out, L)``; times in seconds from the clip's start."""
    edges = frame_edges(scores.shape[0] * hop_s, hop_s)
    events: list[Event] = []
    for column, label in enumerate(classes):
        curve = median_filter_curve(scores[:, column : column + 1], median_frames(post.median_filter_s[label], hop_s))
        found = exact_events(edges, curve, np.array([post.thresholds[label]]), [label], post.rules(label))
        events += [Event(name, onset, offset, label, score) for onset, offset, label, score in found]
    return sorted(events, key=lambda e: (e.onset_s, e.label))


def reference_list(names: Sequence[str], events: Mapping[str, Sequence[tuple[float, float, str]]]) -> EventList:
    """The reference events of the clips ``names`` (``{name: [(onset_s, offset_s, label), ...]}``), files keyed by
    base name as in every event list."""
    listed = [Event(Path(name).name, on, off, label) for name in names for on, off, label in events.get(name, ())]
    return EventList(tuple(Path(name).name for name in names), tuple(listed), "reference events")


def detect_clips(
    names: Sequence[str], scores: np.ndarray, hop_s: float, classes: Sequence[str], post: PostProcessing
) -> EventList:
    """Events of every clip (``scores`` (n, frames_out, L)), files keyed by base name."""
    names = [Path(name).name for name in names]
    events = [e for name, clip in zip(names, scores) for e in clip_events(name, clip, hop_s, classes, post)]
    return EventList(tuple(names), tuple(events), "detected events")


def evaluate_clips(
    names: Sequence[str],
    scores: np.ndarray,
    reference: EventList,
    hop_s: float,
    classes: Sequence[str],
    post: PostProcessing,
    *,
    collar_s: float = DCASE_COLLAR_S,
) -> dict[str, Any]:
    """DCASE 2017 Task 2's event-based metrics of the clips' detected events against ``reference``."""
    with _quiet_metrics():  # one clip or one class at a time: the notes on absent labels are expected
        return evaluate_events(reference, detect_clips(names, scores, hop_s, classes, post), collar_s=collar_s,
                               classes=classes)  # fmt: skip


def choose_post_processing(
    names: Sequence[str],
    scores: np.ndarray,
    reference: EventList,
    hop_s: float,
    classes: Sequence[str],
    *,
    thresholds: Sequence[float] = THRESHOLD_GRID,
    median_filters_s: Sequence[float] = MEDIAN_FILTER_GRID_S,
    min_gaps_s: Sequence[float] = MIN_GAP_GRID_S,
    min_events_s: Sequence[float] = MIN_EVENT_GRID_S,
    collar_s: float = DCASE_COLLAR_S,
) -> tuple[PostProcessing, dict[str, float]]:
    """Per class, the (threshold, median filter, minimum gap, minimum event) of the grids with the best event-based
    F on these (validation) clips ``scores`` ``(n, frames_out, L)``; ties go to the shorter filter, then the lower
    threshold, the shorter gap, the shorter minimum. Returns the choice and each class's F."""
    if scores.ndim != 3 or scores.shape[0] != len(names) or scores.shape[2] != len(classes):
        raise ValueError(f"scores {scores.shape}: expected ({len(names)}, frames, {len(classes)})")
    edges = frame_edges(scores.shape[1] * hop_s, hop_s)
    files = [Path(name).name for name in names]
    chosen: dict[str, dict[str, float]] = {key: {} for key in ("t", "m", "gap", "min")}
    best_f: dict[str, float] = {}
    for column, label in enumerate(classes):
        onsets: dict[str, list[float]] = {}
        for e in reference.events:
            if e.label == label:
                onsets.setdefault(e.file, []).append(e.onset_s)
        ref_onsets = [np.sort(onsets.get(name, [])) for name in files]
        best = (-1.0, median_filters_s[0], thresholds[0], min_gaps_s[0], min_events_s[0])
        for median_s in median_filters_s:
            # the clips' curves as the columns of one curve: median_filter_curve filters each column alone
            curves = median_filter_curve(scores[..., column].T, median_frames(median_s, hop_s)).T
            for threshold in thresholds:
                f = _grid_f(curves >= threshold, edges, ref_onsets, min_gaps_s, min_events_s, collar_s)
                g, m = np.unravel_index(int(np.argmax(f)), f.shape)  # the first of the best: shortest gap, minimum
                if f[g, m] > best[0] + 1e-12:
                    best = (float(f[g, m]), median_s, threshold, min_gaps_s[g], min_events_s[m])
        best_f[label], chosen["m"][label], chosen["t"][label], chosen["gap"][label], chosen["min"][label] = best
    return PostProcessing(chosen["t"], chosen["m"], chosen["min"], chosen["gap"]), best_f


def _grid_f(
    active: np.ndarray,
    edges: np.ndarray,
    ref_onsets: Sequence[np.ndarray],
    min_gaps_s: Sequence[float],
    min_events_s: Sequence[float],
    collar_s: float,
) -> np.ndarray:
    """One class's event-based F (onset within ``collar_s``) of the events in ``active`` ``(n, T)`` (frames at or
    above the threshold) for every (minimum gap, minimum event) pair: ``(len(min_gaps_s), len(min_events_s))``,
    -1 where there are neither reference nor detected events. Events as :func:`thce.detection.localise.exact_events`
    makes them (runs of active frames, same gap and length rules on the same edges)."""
    padded = np.diff(np.pad(active, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    clip, first = np.nonzero(padded == 1)
    _, end = np.nonzero(padded == -1)  # row-major: the k-th end closes the k-th start
    onset, offset = edges[first], edges[end]
    n_ref = sum(len(r) for r in ref_onsets)
    eps = 1e-9
    out = np.full((len(min_gaps_s), len(min_events_s)), -1.0)
    for g, gap in enumerate(min_gaps_s):
        starts = np.ones(len(clip), dtype=bool)  # a run opens an event unless it merges into the one before
        starts[1:] = (clip[1:] != clip[:-1]) | (onset[1:] - offset[:-1] >= gap - eps)
        heads = np.flatnonzero(starts)
        tails = np.r_[heads[1:] - 1, len(clip) - 1].astype(np.int64)[: len(heads)]  # none when there are no runs
        ev_clip, ev_on, ev_len = clip[heads], onset[heads], offset[tails] - onset[heads]
        for m, shortest in enumerate(min_events_s):
            keep = ev_len >= shortest - eps
            n_sys = int(keep.sum())
            if n_ref + n_sys:
                tp = _onset_hits(ev_clip[keep], ev_on[keep], ref_onsets, collar_s)
                out[g, m] = 2.0 * tp / (n_ref + n_sys)
    return out


def _onset_hits(clips: np.ndarray, onsets: np.ndarray, ref_onsets: Sequence[np.ndarray], collar_s: float) -> int:
    """The size of a maximum matching of detected onsets (``clips`` sorted, ``onsets`` sorted within a clip) to each
    clip's sorted reference onsets, pairs within ``collar_s``: on a line a greedy sweep is maximal."""
    hits = 0
    bounds = np.flatnonzero(np.r_[True, clips[1:] != clips[:-1]]) if len(clips) else np.array([], dtype=np.int64)
    for a, b in zip(bounds, np.r_[bounds[1:], len(clips)]):
        ref = ref_onsets[int(clips[a])]
        i, j, est = 0, int(a), onsets
        while i < len(ref) and j < b:
            if abs(est[j] - ref[i]) <= collar_s + 1e-9:
                hits, i, j = hits + 1, i + 1, j + 1
            elif est[j] < ref[i]:
                j += 1
            else:
                i += 1
    return hits


def class_set_counts(counts: np.ndarray) -> np.ndarray:
    """DCASE 2017 Task 2 scores each class on its own mixtures (each holds that class's event or none): the per-clip
    counts ``(..., n_clips, L, 3)`` of :func:`clip_counts` with a class's counts zeroed on every clip that holds a
    reference event of another class, so that sums over clips give each class's figures on its own clips (its
    event clips and the clips without events). A detection of class ``c`` in another class's clip then costs ``c``
    nothing, as in Task 2; over all clips (:func:`clip_counts` as it is) it is an insertion.

    >>> counts = np.array([[[1, 1, 1], [0, 0, 1]], [[0, 0, 1], [1, 1, 1]], [[0, 0, 1], [0, 0, 0]]])
    >>> class_set_counts(counts)[..., 2].tolist()  # clip 0 is class 0's, clip 1 class 1's, clip 2 both's
    [[1, 0], [0, 1], [1, 0]]
    """
    n_ref = counts[..., 1]
    others = (n_ref.sum(axis=-1, keepdims=True) - n_ref) > 0
    return np.where(others[..., None], 0, counts)


def count_figures(counts: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Event-based F and error rate from per-clip counts ``(n_clips, L, 3)`` (:func:`clip_counts`, or
    :func:`class_set_counts`): per class (``2 tp / (n_ref + n_sys)``, ``(n_ref + n_sys - 2 tp) / n_ref``: one class
    at a time there are no substitutions), their mean over the classes with reference events (``class_average``,
    Task 2's ranking figure) and from the counts summed over classes (``overall``); ``None`` where undefined."""

    def figures(tp: int, n_ref: int, n_sys: int) -> dict[str, Any]:
        f = 2.0 * tp / (n_ref + n_sys) if n_ref + n_sys else None
        er = (n_ref + n_sys - 2.0 * tp) / n_ref if n_ref else None
        return {"tp": tp, "n_ref": n_ref, "n_sys": n_sys, "f_score": f, "error_rate": er}

    totals = counts.sum(axis=0)
    class_wise = {label: figures(*(int(v) for v in totals[c])) for c, label in enumerate(classes)}
    scored = [row for row in class_wise.values() if row["n_ref"]]
    average = {key: float(np.mean([row[key] for row in scored])) if scored else None
               for key in ("f_score", "error_rate")}  # fmt: skip
    return {"class_wise": class_wise, "class_average": average,
            "overall": figures(*(int(v) for v in totals.sum(axis=0)))}  # fmt: skip


def clip_counts(
    names: Sequence[str], detected: EventList, reference: EventList, classes: Sequence[str], *,
    collar_s: float = DCASE_COLLAR_S,
) -> np.ndarray:  # fmt: skip
    """Per clip and class the event-based counts ``(n_clips, L, 3)``: true positives, reference events, detected
    events (int64). Summed over any set of clips they give that set's class-wise F (``2 tp / (n_ref + n_sys)``) and
    error rate (``(n_ref + n_sys - 2 tp) / n_ref``): what a bootstrap over clips resamples."""
    counts = np.zeros((len(names), len(classes), 3), dtype=np.int64)
    by_file_ref: dict[str, list[Event]] = {}
    by_file_est: dict[str, list[Event]] = {}
    for e in reference.events:
        by_file_ref.setdefault(e.file, []).append(e)
    for e in detected.events:
        by_file_est.setdefault(e.file, []).append(e)
    for i, name in enumerate(Path(n).name for n in names):
        ref, est = by_file_ref.get(name, []), by_file_est.get(name, [])
        if not ref and not est:
            continue
        with _quiet_metrics():
            result = evaluate_events(EventList((name,), tuple(ref)), EventList((name,), tuple(est)),
                                     collar_s=collar_s, classes=classes)
        for c, label in enumerate(classes):
            row = result["class_wise"][label]
            counts[i, c] = (row["tp"], row["n_ref"], row["n_sys"])
    return counts

