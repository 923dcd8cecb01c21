"""Segment-based metrics by hand, and our event- and segment-based figures against sed_eval's on random cases
(run where the `eval` extra is installed: pip install 'thce[eval]')."""

from __future__ import annotations

import numpy as np
import pytest

from thce.detection.metrics import evaluate_events, evaluate_segments, segments_markdown
from thce.detection.events import Event, EventList


def elist(*events, files=()):
    return EventList(tuple(files) or tuple(dict.fromkeys(e[0] for e in events)), tuple(Event(*e) for e in events))


def test_segment_based_by_hand():
    ref = elist(("a.wav", 0.2, 2.5, "dog"), ("a.wav", 4.0, 5.0, "baby"))
    est = elist(("a.wav", 1.1, 1.9, "dog"), ("a.wav", 4.5, 4.8, "dog"))
    # segments 0-5: dog ref in 0, 1, 2; baby ref in 4; dog est in 1, 4
    result = evaluate_segments(ref, est)
    o = result["overall"]
    assert (o["n_ref"], o["n_sys"], o["tp"], o["fp"], o["fn"]) == (4, 2, 1, 1, 3)
    assert (o["substitutions"], o["deletions"], o["insertions"]) == (1, 2, 0)  # segment 4: baby -> dog
    assert o["error_rate"] == pytest.approx(3 / 4) and o["f_score"] == pytest.approx(2 / 6)
    assert result["class_wise"]["dog"]["error_rate"] == pytest.approx((2 + 1) / 3)
    assert result["class_wise"]["baby"]["f_score"] == 0.0
    assert "| Overall | 4 | 1 | 1 | 3 | 75.0 |" in segments_markdown(result)
    perfect = evaluate_segments(ref, ref)
    assert perfect["overall"]["error_rate"] == 0.0 and perfect["overall"]["f_score"] == 1.0
    # segments after the last event count when the file's length is known (as true negatives only)
    assert evaluate_segments(ref, est, durations_s={"a.wav": 60.0})["overall"]["error_rate"] == o["error_rate"]


def random_lists(rng, n_files=3, classes=("dog", "baby", "gun")):
    ref, est = [], []
    for f in range(n_files):
        name = f"f{f}.wav"
        for _ in range(rng.integers(0, 6)):
            on = float(np.round(rng.uniform(0, 28), 3))
            ref.append((name, on, float(np.round(on + rng.uniform(0.1, 3), 3)), str(rng.choice(classes))))
        for r in ref[-3:]:  # estimates near some references, plus noise
            if r[0] == name and rng.random() < 0.7:
                on = float(np.round(max(0.0, r[1] + rng.normal(0, 0.4)), 3))
                label = r[3] if rng.random() < 0.8 else str(rng.choice(classes))
                est.append((name, on, float(np.round(on + rng.uniform(0.1, 3), 3)), label))
        for _ in range(rng.integers(0, 3)):
            on = float(np.round(rng.uniform(0, 28), 3))
            est.append((name, on, float(np.round(on + rng.uniform(0.1, 2), 3)), str(rng.choice(classes))))
    files = [f"f{f}.wav" for f in range(n_files)]
    return elist(*ref, files=files), elist(*est, files=files)


def test_our_figures_match_sed_eval_on_random_cases():
    sed_eval = pytest.importorskip("sed_eval", reason="the eval extra is not installed (pip install 'thce[eval]')")
    rng = np.random.default_rng(16)
    classes = ["dog", "baby", "gun"]
    for _case in range(25):
        ref, est = random_lists(rng)
        ev = sed_eval.sound_event.EventBasedMetrics(
            event_label_list=classes, t_collar=0.5, evaluate_onset=True, evaluate_offset=False
        )
        seg = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=classes, time_resolution=1.0)
        for name in ref.files:
            r = [{"file": name, "onset": e.onset_s, "offset": e.offset_s, "event_label": e.label}
                 for e in ref.events if e.file == name]  # fmt: skip
            s = [{"file": name, "onset": e.onset_s, "offset": e.offset_s, "event_label": e.label}
                 for e in est.events if e.file == name]  # fmt: skip
            ev.evaluate(reference_event_list=r, estimated_event_list=s)
            seg.evaluate(reference_event_list=r, estimated_event_list=s)
        ours = evaluate_events(ref, est, classes=classes)
        theirs = ev.results()
        _close(ours["overall"]["error_rate"], theirs["overall"]["error_rate"]["error_rate"])
        _close(ours["overall"]["f_score"], theirs["overall"]["f_measure"]["f_measure"])
        for label in classes:
            theirs_f = theirs["class_wise"][label]["f_measure"]["f_measure"]
            if not np.isnan(theirs_f):  # sed_eval: NaN for a class without estimates or references; ours: 0 / None
                _close(ours["class_wise"][label]["f_score"], theirs_f)
                _close(ours["class_wise"][label]["error_rate"], theirs["class_wise"][label]["error_rate"]["error_rate"])
        ours_seg, theirs_seg = evaluate_segments(ref, est, classes=classes), seg.results()
        _close(ours_seg["overall"]["error_rate"], theirs_seg["overall"]["error_rate"]["error_rate"])
        _close(ours_seg["overall"]["f_score"], theirs_seg["overall"]["f_measure"]["f_measure"])


def _close(ours, theirs):
    if ours is None:
        assert theirs is None or np.isnan(theirs)
    else:
        assert ours == pytest.approx(float(theirs), abs=1e-9)


def test_class_average_counts_a_class_without_estimates_as_f_zero():
    """Unlike sed_eval's class-wise average (a NaN mean that leaves out a class whose F is undefined, e.g. one the
    system never outputs), ours scores such a class F = 0: never predicting a class is not rewarded."""
    ref = elist(("a.wav", 1.0, 2.0, "dog"), ("a.wav", 5.0, 6.0, "baby"))
    est = elist(("a.wav", 1.1, 2.0, "dog"))
    assert evaluate_events(ref, est)["class_average"]["f_score"] == pytest.approx(0.5)


def test_threshold_free_metrics_of_saved_scores(tmp_path):
    pytest.importorskip("sed_scores_eval", reason="the eval extra is not installed (pip install 'thce[eval]')")
    from thce.detection.threshold_free import threshold_free
    from thce.detection.tables import write_table

    truth = {"a": [(2.0, 4.0, "dog"), (10.0, 11.0, "baby")], "b": [(5.0, 8.0, "baby")]}
    rows = []
    for stem, events in truth.items():
        edges = np.round(np.arange(0, 20.01, 0.1), 6)
        centres = (edges[:-1] + edges[1:]) / 2
        curve = np.full((centres.size, 2), 0.1, np.float32)
        for on, off, label in events:
            curve[(centres > on) & (centres < off), ["dog", "baby"].index(label)] = 0.9
        curve[:5, 0] = -np.inf  # digital silence
        write_table(tmp_path / f"{stem}.tsv", edges, curve, ["dog", "baby"])
        rows += [f"{stem}.wav\t{on}\t{off}\t{label}" for on, off, label in events]
    (tmp_path / "ref.txt").write_text("\n".join(rows) + "\n")
    result = threshold_free(tmp_path, tmp_path / "ref.txt")
    assert result["files"] == 2 and result["psds1"] > 0.95 and 0 < result["psds2"] <= 1
    assert result["collar_best_f"]["dog"] == pytest.approx(1.0) and "PSDS1" in result["summary"]
