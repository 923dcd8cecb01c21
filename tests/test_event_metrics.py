"""Segment-based metrics by hand, and our event- and segment-based figures against sed_eval's on random cases
(run where the `eval` extra is installed: pip install 'thce[eval]')."""

from __future__ import annotations

import numpy as np
import pytest

from thce.event_metrics import evaluate_events, evaluate_segments, segments_markdown
from thce.events import Event, EventList


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
        _close(ours["class_average"]["f_score"], theirs["class_wise_average"]["f_measure"]["f_measure"])
        ours_seg, theirs_seg = evaluate_segments(ref, est, classes=classes), seg.results()
        _close(ours_seg["overall"]["error_rate"], theirs_seg["overall"]["error_rate"]["error_rate"])
        _close(ours_seg["overall"]["f_score"], theirs_seg["overall"]["f_measure"]["f_measure"])


def _close(ours, theirs):
    if ours is None:
        assert theirs is None or np.isnan(theirs)
    else:
        assert ours == pytest.approx(float(theirs), abs=1e-9)
