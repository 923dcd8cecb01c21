"""Frame scores of clips -> events, and the post-processing a frame-level run chooses on validation.

A frame-level model scores every output frame of a clip, ``(frames_out, L)`` with frame ``j`` covering
``[j * hop_s, (j + 1) * hop_s)``. Events come from :mod:`thce.detection.localise`'s one rule (median filter, per-class
threshold, merge gaps, drop short events). :func:`choose_post_processing` picks, per class, the threshold and the
median-filter length that maximise that class's event-based F on the validation clips (DCASE 2017 Task 2's metric:
onset within a 500 ms collar), not the EER: what a user of the detector wants is events. Each class's F depends
only on its own events, so classes are chosen independently.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thce.detection.metrics import DCASE_COLLAR_S, evaluate_events
from thce.detection.events import Event, EventList
from thce.detection.localise import EventRules, exact_events, frame_edges, median_filter_curve

#: What :func:`choose_post_processing` tries: thresholds on the sigmoid scores and median-filter lengths (s). The
#: grids reach 0.99 and 1.5 s: on the first DCASE-style run validation chose the old edges (0.95, 0.75 s).
THRESHOLD_GRID = (*(round(float(t), 2) for t in np.arange(0.05, 0.951, 0.05)), 0.97, 0.98, 0.99)
MEDIAN_FILTER_GRID_S = (0.0, 0.15, 0.25, 0.45, 0.75, 1.05, 1.5)


@dataclass(frozen=True)
class PostProcessing:
    """Per class: a threshold on the frame scores and a median filter (seconds, 0: off); for all classes the
    minimum event length and gap (seconds)."""

    thresholds: dict[str, float]
    median_filter_s: dict[str, float]
    min_event_s: float = 0.0
    min_gap_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"thresholds": dict(self.thresholds), "median_filter_s": dict(self.median_filter_s),
                "min_event_s": self.min_event_s, "min_gap_s": self.min_gap_s}  # fmt: skip


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
        rules = EventRules(min_event_s=post.min_event_s, min_gap_s=post.min_gap_s)
        found = exact_events(edges, curve, np.array([post.thresholds[label]]), [label], rules)
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
    collar_s: float = DCASE_COLLAR_S,
) -> tuple[PostProcessing, dict[str, float]]:
    """Per class, the (threshold, median filter) of the grids with the best event-based F on these (validation)
    clips; ties go to the shorter filter, then the lower threshold. Returns the choice and each class's F."""
    chosen_t: dict[str, float] = {}
    chosen_m: dict[str, float] = {}
    best_f: dict[str, float] = {}
    for column, label in enumerate(classes):
        own = EventList(reference.files, tuple(e for e in reference.events if e.label == label), reference.source)
        best = (-1.0, 0.0, thresholds[0])
        for median_s in median_filters_s:
            for threshold in thresholds:
                post = PostProcessing({label: threshold}, {label: median_s})
                result = evaluate_clips(names, scores[..., column : column + 1], own, hop_s, [label], post,
                                        collar_s=collar_s)  # fmt: skip
                f = result["class_wise"][label]["f_score"]
                f = -1.0 if f is None else float(f)
                if f > best[0] + 1e-12:
                    best = (f, median_s, threshold)
        best_f[label], chosen_m[label], chosen_t[label] = best
    return PostProcessing(chosen_t, chosen_m), best_f


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

