"""Evaluation of event lists: segment-based error rate and F-score over 1 s segments (:func:`evaluate_segments`,
as ``sed_eval.sound_event.SegmentBasedMetrics(time_resolution=1.0)``), and DCASE 2017 task 2's
(:func:`evaluate_events`): event-based error rate and F-score, onset only, with a 500 ms collar, computed as
``sed_eval.sound_event.EventBasedMetrics(t_collar=0.5, evaluate_onset=True, evaluate_offset=False)`` does (maximum bipartite matching of same-label events whose onsets are within the collar;
left-over pairs within the collar are substitutions). sed_eval itself is not a dependency: its dcase_util no longer
imports on current setuptools (``pkg_resources``); the tests pin our numbers to sed_eval's on fixed examples, and
on random cases where the ``eval`` extra is installed. Threshold-free metrics of saved scores:
:mod:`thce.detection.threshold_free`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from thce.detection.events import Event, EventList
from thce.errors import DataError

log = logging.getLogger(__name__)

#: DCASE 2017 task 2: onsets within 500 ms of the reference count as correct.
DCASE_COLLAR_S = 0.5


def _max_matching(hit: np.ndarray) -> list[tuple[int, int]]:
    """Maximum-cardinality matching ``[(ref, est), ...]`` in the bipartite graph ``hit`` (n_ref, n_est) bool."""
    if hit.size == 0 or not hit.any():
        return []
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    match = maximum_bipartite_matching(csr_matrix(hit.astype(np.int8)), perm_type="column")
    return [(r, int(e)) for r, e in enumerate(match) if e >= 0]


def _rates(n_ref: float, n_sys: float, tp: float, subs: float, fn: float, fp: float) -> dict[str, float | None]:
    def ratio(a: float, b: float) -> float | None:
        return None if b == 0 else a / b

    return {
        "error_rate": ratio(subs + fn + fp, n_ref),
        "f_score": ratio(2.0 * tp, n_ref + n_sys),
        "precision": ratio(tp, n_sys),
        "recall": ratio(tp, n_ref),
    }


@dataclass(frozen=True)
class EventMatch:
    """How one file's reference and estimated events pair up, as :func:`evaluate_events` counts them.

    Attributes:
        n_ref, n_sys: how many reference and estimated events.
        hits: ``(reference index, estimated index)`` pairs of the same label whose onsets are within the collar (a
            maximum matching): the true positives.
        substitutions: left-over pairs within the collar of other labels (sed_eval's greedy order).
    """

    n_ref: int
    n_sys: int
    hits: tuple[tuple[int, int], ...]
    substitutions: tuple[tuple[int, int], ...]


def pooled_rates(matches: Sequence[EventMatch]) -> dict[str, float | None]:
    """``error_rate``, ``f_score``, ``precision``, ``recall`` of the events of one or more files together, as
    :func:`evaluate_events` gives them overall (fractions; None: undefined)."""
    n_ref, n_sys = sum(m.n_ref for m in matches), sum(m.n_sys for m in matches)
    tp, subs = sum(len(m.hits) for m in matches), sum(len(m.substitutions) for m in matches)
    return _rates(n_ref, n_sys, tp, subs, n_ref - tp - subs, n_sys - tp - subs)


def match_events(
    reference: Sequence[Event], estimated: Sequence[Event], *, collar_s: float = DCASE_COLLAR_S
) -> EventMatch:
    """Pair one file's reference and estimated events (onset only, ``collar_s`` collar): the matching behind
    :func:`evaluate_events`, for showing which event was hit, missed or a false alarm."""
    ref_on = np.array([e.onset_s for e in reference], dtype=np.float64)
    est_on = np.array([e.onset_s for e in estimated], dtype=np.float64)
    eps = 1e-9  # onsets read back from millisecond text
    near = np.abs(ref_on[:, None] - est_on[None, :]) <= collar_s + eps
    same = np.array([[r.label == s.label for s in estimated] for r in reference], dtype=bool).reshape(near.shape)
    hits = _max_matching(near & same)
    ref_done = np.zeros(len(reference), dtype=bool)
    est_done = np.zeros(len(estimated), dtype=bool)
    for r, s in hits:
        ref_done[r] = est_done[s] = True
    substitutions = []
    for r in np.flatnonzero(~ref_done):  # sed_eval: greedy over left-overs, reference order
        for s in np.flatnonzero(~est_done):
            if near[r, s]:
                est_done[s] = True
                substitutions.append((int(r), int(s)))
                break
    return EventMatch(len(reference), len(estimated), tuple(hits), tuple(substitutions))


def evaluate_events(
    reference: EventList,
    estimated: EventList,
    *,
    collar_s: float = DCASE_COLLAR_S,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Event-based error rate and F-score, onset only, with an onset collar (DCASE 2017 task 2: 0.5 s).

    Per file, a reference and an estimated event *match* when they have the same label and
    ``|onset_ref - onset_est| <= collar_s``; a maximum matching gives the true positives. Overall, left-over
    reference/estimate pairs within the collar (other labels) are substitutions ``S``; the other left-overs are
    deletions ``D`` and insertions ``I``: ``ER = (S + D + I) / N_ref``, ``F = 2 TP / (N_ref + N_sys)``. Class-wise
    there are no substitutions (``ER_c = (D_c + I_c) / N_ref,c``). Files are the union of both lists' files (an
    estimated file missing from the reference has no reference events). Rates are fractions; ``None`` where
    undefined (no reference events).

    Returns:
        ``{"collar_s", "files", "overall": {counts..., error_rate, f_score, precision, recall,
        substitution_rate, deletion_rate, insertion_rate}, "class_wise": {label: {...}},
        "class_average": {"error_rate", "f_score"}}`` (class average over classes with reference events, the
        DCASE 2017 task 2 ranking metric).
    """
    if not collar_s >= 0:
        raise ValueError(f"collar_s: expected a non-negative number of seconds, got {collar_s!r}")
    ref_name, est_name = reference.source or "the reference", estimated.source or "the estimated list"
    ref_files, est_files = reference.all_files, estimated.all_files
    files = list(dict.fromkeys([*ref_files, *est_files]))
    only_ref = [f for f in ref_files if f not in set(est_files)]
    only_est = [f for f in est_files if f not in set(ref_files)]
    if est_files and ref_files and len(only_est) == len(est_files):
        theirs = f"its file {est_files[0]} is not" if len(est_files) == 1 else f"none of its {len(est_files)} files is"
        raise DataError(
            f"{est_name}: {theirs} in {ref_name} ({_names(ref_files)}); files are matched by base name: is it the "
            "reference of these recordings?"
        )
    if only_ref:
        log.warning("%s only in %s (not in %s; their events count as missed): %s", _count(len(only_ref), "file"),
                    ref_name, est_name, _names(only_ref))  # fmt: skip
    if only_est:
        log.warning("%s only in %s (not in %s; their events count as insertions): %s", _count(len(only_est), "file"),
                    est_name, ref_name, _names(only_est))  # fmt: skip
    ref_labels = list(dict.fromkeys(e.label for e in reference.events))
    est_labels = list(dict.fromkeys(e.label for e in estimated.events))
    labels = list(classes) if classes is not None else list(dict.fromkeys([*ref_labels, *est_labels]))
    notes = _label_notes(ref_labels, est_labels, classes, ref_name, est_name)
    for note in notes:
        log.warning("%s", note)
    ref_by_file: dict[str, list[Event]] = {}
    est_by_file: dict[str, list[Event]] = {}
    for e in reference.events:
        ref_by_file.setdefault(e.file, []).append(e)
    for e in estimated.events:
        est_by_file.setdefault(e.file, []).append(e)
    overall = {"n_ref": 0, "n_sys": 0, "tp": 0, "substitutions": 0, "deletions": 0, "insertions": 0}
    per_class = {label: {"n_ref": 0, "n_sys": 0, "tp": 0, "deletions": 0, "insertions": 0} for label in labels}
    for name in files:
        ref = [e for e in ref_by_file.get(name, []) if e.label in per_class]
        est = [e for e in est_by_file.get(name, []) if e.label in per_class]
        match = match_events(ref, est, collar_s=collar_s)
        tp, subs = len(match.hits), len(match.substitutions)
        overall["n_ref"] += len(ref)
        overall["n_sys"] += len(est)
        overall["tp"] += tp
        overall["substitutions"] += subs
        overall["deletions"] += len(ref) - tp - subs
        overall["insertions"] += len(est) - tp - subs
        for label, counts in per_class.items():  # same-label hits only: the class's own maximum matching
            n_ref_c = sum(e.label == label for e in ref)
            n_sys_c = sum(e.label == label for e in est)
            tp_c = sum(ref[r].label == label for r, _ in match.hits)
            counts["n_ref"] += n_ref_c
            counts["n_sys"] += n_sys_c
            counts["tp"] += tp_c
            counts["deletions"] += n_ref_c - tp_c
            counts["insertions"] += n_sys_c - tp_c
    o = overall
    result_overall: dict[str, Any] = dict(o)
    result_overall.update(_rates(o["n_ref"], o["n_sys"], o["tp"], o["substitutions"], o["deletions"], o["insertions"]))
    for part in ("substitution", "deletion", "insertion"):
        count = o["substitutions" if part == "substitution" else part + "s"]
        result_overall[f"{part}_rate"] = None if o["n_ref"] == 0 else count / o["n_ref"]
    class_wise: dict[str, Any] = {}
    for label, c in per_class.items():
        class_wise[label] = {**c, **_rates(c["n_ref"], c["n_sys"], c["tp"], 0, c["deletions"], c["insertions"])}
    scored = [v for v in class_wise.values() if v["n_ref"] > 0]
    average = {
        "error_rate": float(np.mean([v["error_rate"] for v in scored])) if scored else None,
        "f_score": float(np.mean([v["f_score"] for v in scored])) if scored else None,
    }
    return {
        "metric": "event-based, onset only (DCASE 2017 task 2)",
        "collar_s": collar_s,
        "files": len(files),
        "files_only_in_reference": only_ref,
        "files_only_in_estimated": only_est,
        "label_notes": notes,
        "overall": result_overall,
        "class_wise": class_wise,
        "class_average": average,
    }


#: DCASE segment-based metrics: one-second segments.
SEGMENT_S = 1.0


def _activity(events: Sequence[Event], labels: Sequence[str], n_segments: int, segment_s: float) -> np.ndarray:
    """``(n_segments, L)`` bool: class active in a segment that any of its events overlaps (sed_eval's event roll:
    segments ``floor(onset / s)`` to ``ceil(offset / s)``)."""
    roll = np.zeros((n_segments, len(labels)), dtype=bool)
    index = {label: i for i, label in enumerate(labels)}
    for e in events:
        if e.label in index:
            first, stop = int(np.floor(e.onset_s / segment_s + 1e-9)), int(np.ceil(e.offset_s / segment_s - 1e-9))
            roll[first:stop, index[e.label]] = True
    return roll


def evaluate_segments(
    reference: EventList,
    estimated: EventList,
    *,
    segment_s: float = SEGMENT_S,
    classes: Sequence[str] | None = None,
    durations_s: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Segment-based error rate and F-score (DCASE, as ``sed_eval.sound_event.SegmentBasedMetrics`` computes them).

    Per file, each ``segment_s`` segment (from 0 to the file's length: ``durations_s[file]`` if given, else the
    last offset in either list) marks the classes active in it. Per segment ``FN`` / ``FP`` count reference-only /
    estimated-only classes: ``S = min(FN, FP)``, ``D = FN - S``, ``I = FP - S``; overall ``ER = (S + D + I) / N_ref``,
    ``F = 2 TP / (2 TP + FP + FN)``; class-wise ``ER_c = (FN_c + FP_c) / N_ref,c``; ``N`` counts active
    (segment, class) pairs.

    Returns:
        ``{"segment_s", "files", "overall": {counts, error_rate, f_score, precision, recall}, "class_wise",
        "class_average"}``; rates ``None`` where undefined.
    """
    if not segment_s > 0:
        raise ValueError(f"segment_s: expected a positive number of seconds, got {segment_s!r}")
    labels = list(classes) if classes is not None else list(
        dict.fromkeys([*(e.label for e in reference.events), *(e.label for e in estimated.events)])
    )
    files = list(dict.fromkeys([*reference.all_files, *estimated.all_files]))
    by_file: dict[str, tuple[list[Event], list[Event]]] = {f: ([], []) for f in files}
    for e in reference.events:
        by_file[e.file][0].append(e)
    for e in estimated.events:
        by_file[e.file][1].append(e)
    tp = fp = fn = subs = dels = ins = n_ref = n_sys = 0
    per = np.zeros((len(labels), 4), dtype=np.int64)  # tp, fp, fn, n_ref
    for name in files:
        ref, est = by_file[name]
        length = (durations_s or {}).get(name) or max([0.0, *(e.offset_s for e in ref), *(e.offset_s for e in est)])
        n = int(np.ceil(length / segment_s - 1e-9))
        r, s = _activity(ref, labels, n, segment_s), _activity(est, labels, n, segment_s)
        seg_tp, seg_fn, seg_fp = (r & s).sum(1), (r & ~s).sum(1), (~r & s).sum(1)
        seg_s = np.minimum(seg_fn, seg_fp)
        tp, fn, fp = tp + int(seg_tp.sum()), fn + int(seg_fn.sum()), fp + int(seg_fp.sum())
        subs, dels, ins = subs + int(seg_s.sum()), dels + int((seg_fn - seg_s).sum()), ins + int((seg_fp - seg_s).sum())
        n_ref, n_sys = n_ref + int(r.sum()), n_sys + int(s.sum())
        per += np.stack([(r & s).sum(0), (~r & s).sum(0), (r & ~s).sum(0), r.sum(0)], axis=1)

    def f_score(t: int, p: int, m: int) -> float | None:
        return None if 2 * t + p + m == 0 else 2 * t / (2 * t + p + m)

    overall = {"n_ref": n_ref, "n_sys": n_sys, "tp": tp, "fp": fp, "fn": fn,
               "substitutions": subs, "deletions": dels, "insertions": ins,
               "error_rate": None if n_ref == 0 else (subs + dels + ins) / n_ref, "f_score": f_score(tp, fp, fn),
               "precision": None if n_sys == 0 else tp / n_sys,
               "recall": None if n_ref == 0 else tp / n_ref}  # fmt: skip
    class_wise = {
        label: {"n_ref": int(c[3]), "tp": int(c[0]), "fp": int(c[1]), "fn": int(c[2]),
                "error_rate": None if c[3] == 0 else float(c[1] + c[2]) / c[3], "f_score": f_score(*map(int, c[:3]))}
        for label, c in zip(labels, per)
    }  # fmt: skip
    scored = [v for v in class_wise.values() if v["n_ref"] > 0]
    return {
        "metric": f"segment-based, {segment_s:g} s segments",
        "segment_s": segment_s,
        "files": len(files),
        "overall": overall,
        "class_wise": class_wise,
        "class_average": {
            "error_rate": float(np.mean([v["error_rate"] for v in scored])) if scored else None,
            "f_score": float(np.mean([v["f_score"] or 0.0 for v in scored])) if scored else None,
        },
    }


def _count(n: int, noun: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _names(names: Sequence[str], limit: int = 8) -> str:
    """The first ``limit`` names, comma-separated, and how many more."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _label_notes(
    ref_labels: list[str], est_labels: list[str], classes: Sequence[str] | None, ref_name: str, est_name: str
) -> list[str]:
    """Sentences about labels that cannot match: only in the estimated list (every such event is an insertion),
    left out by ``classes``, or listed in ``classes`` but in neither list."""
    notes = []
    if classes is None:
        unmatched = [label for label in est_labels if label not in ref_labels]
        if unmatched and ref_labels:
            notes.append(
                f"labels only in {est_name}, never in {ref_name} ({', '.join(ref_labels)}): {', '.join(unmatched)}; "
                "their events all count as insertions (do the label names match?)"
            )
        return notes
    ignored = [label for label in dict.fromkeys([*ref_labels, *est_labels]) if label not in classes]
    if ignored:
        notes.append(f"labels not evaluated (not among --classes {','.join(classes)}): {', '.join(ignored)}")
    absent = [c for c in classes if c not in ref_labels and c not in est_labels]
    if absent:
        notes.append(f"--classes {', '.join(absent)}: in neither {ref_name} nor {est_name} (a misspelt label?)")
    return notes


def evaluation_markdown(result: dict[str, Any]) -> str:
    """A Markdown table of :func:`evaluate_events`'s result (rates in percent)."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100.0 * value:.1f}"

    lines = [
        f"Event-based metrics, onset only, collar {1000 * result['collar_s']:.0f} ms, "
        f"{_count(result['files'], 'file')}",
        "",
        "| Class | Nref | Nsys | TP | ER % | F % |",
        "| :-- | --: | --: | --: | --: | --: |",
    ]
    for label, c in result["class_wise"].items():
        lines.append(f"| {label} | {c['n_ref']} | {c['n_sys']} | {c['tp']} | {pct(c['error_rate'])} | {pct(c['f_score'])} |")
    o = result["overall"]
    lines.append(f"| Overall | {o['n_ref']} | {o['n_sys']} | {o['tp']} | {pct(o['error_rate'])} | {pct(o['f_score'])} |")
    avg = result["class_average"]
    lines += [
        "",
        f"Overall: S={o['substitutions']} D={o['deletions']} I={o['insertions']}. "
        f"Class average: ER {pct(avg['error_rate'])} %, F {pct(avg['f_score'])} %.",
    ]
    for key, where, counted in (("files_only_in_reference", "the reference", "missed"),
                                ("files_only_in_estimated", "the estimated list", "insertions")):  # fmt: skip
        names = result.get(key) or []
        if names:
            lines.append(f"{_count(len(names), 'file')} only in {where} (events there count as {counted}): "
                         f"{_names(names, 20)}.")
    lines += [f"Note: {note}." for note in result.get("label_notes") or []]
    return "\n".join(lines)


def segments_markdown(result: dict[str, Any]) -> str:
    """A Markdown table of :func:`evaluate_segments`'s result (rates in percent)."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100.0 * value:.1f}"

    lines = [
        f"Segment-based metrics, {result['segment_s']:g} s segments, {_count(result['files'], 'file')}",
        "",
        "| Class | Nref | TP | FP | FN | ER % | F % |",
        "| :-- | --: | --: | --: | --: | --: | --: |",
    ]
    for label, c in [*result["class_wise"].items(), ("Overall", result["overall"])]:
        lines.append(
            f"| {label} | {c['n_ref']} | {c['tp']} | {c['fp']} | {c['fn']} | {pct(c['error_rate'])} "
            f"| {pct(c['f_score'])} |"
        )
    avg = result["class_average"]
    lines += ["", f"Class average: ER {pct(avg['error_rate'])} %, F {pct(avg['f_score'])} %."]
    return "\n".join(lines)
