"""Window scores -> score over time -> events (thce.detection.localise, thce.detection.detect.scores_to_events) on synthetic scores."""

from __future__ import annotations

import numpy as np
import pytest

from thce.detection.detect import FileScores, scores_to_events
from thce.errors import ConfigError
from thce.detection.localise import curve_to_events, frame_edges, median_filter_frames, score_curve

WINDOW = 2.0


def fscores(column, *, hop_s=1.0, support_s=(0.0, WINDOW), duration_s=None, silent=None):
    scores = np.asarray(column, dtype=np.float32).reshape(len(column), -1)
    k = scores.shape[0]
    duration_s = duration_s if duration_s is not None else (k - 1) * hop_s + WINDOW
    classes = ("dog",) if scores.shape[1] == 1 else tuple(f"c{i}" for i in range(scores.shape[1]))
    return FileScores("f.wav", scores, classes, hop_s, WINDOW, support_s, duration_s, silent)


def events(column, threshold=0.5, **kw):
    post = {k: kw.pop(k) for k in ("median_filter_s", "min_event_s", "min_gap_s", "agreement") if k in kw}
    post.setdefault("median_filter_s", 0)
    post.setdefault("agreement", 1.0)  # all windows must agree (the strict rule); other fractions tested below
    return [(e.onset_s, e.offset_s) for e in scores_to_events(fscores(column, **kw), np.array([threshold]), **post)]


def firing(n, *, before=5, after=5):
    return [0] * before + [1] * n + [0] * after


def test_frames_are_one_hop_and_end_at_the_file_end():
    assert frame_edges(5.0, 1.0).tolist() == [0, 1, 2, 3, 4, 5]
    assert frame_edges(5.3, 1.0).tolist() == [0, 1, 2, 3, 4, 5, 5.3]
    assert frame_edges(5.0004, 1.0).tolist() == [0, 1, 2, 3, 4, 5.0004]  # no sliver frame


def test_one_two_many_firing_windows_with_50_percent_overlap():
    # hop 1 s, support 2 s: every frame is heard by two windows (m = 2)
    assert events(firing(1)) == []  # its neighbours hear both its frames and do not fire: no frame all agree on
    assert events(firing(2)) == [(6.0, 7.0)]  # windows 5 and 6 both hear [6, 7): one hop
    assert events(firing(3)) == [(6.0, 8.0)]
    assert events(firing(10)) == [(6.0, 15.0)]  # n - m + 1 frames


def test_one_firing_window_without_overlap_is_that_window():
    assert events(firing(1), hop_s=2.0) == [(10.0, 12.0)]
    assert events(firing(3), hop_s=2.0) == [(10.0, 16.0)]


@pytest.mark.parametrize("hop_s", [0.25, 0.5, 1.0, 2.0])
def test_a_longer_detection_never_gives_a_shorter_event_and_none_is_shorter_than_a_hop(hop_s):
    lengths = []
    for n in range(1, 30):
        found = events(firing(n, before=12, after=12), hop_s=hop_s)
        assert len(found) <= 1
        lengths.append(found[0][1] - found[0][0] if found else 0.0)
        for onset, offset in found:
            assert offset - onset >= hop_s - 1e-9
    assert lengths == sorted(lengths) and lengths[-1] > 0


def test_more_firing_windows_give_a_superset_of_event_time():
    rng = np.random.default_rng(0)
    for _ in range(50):
        base = rng.random(40)
        raised = np.where(rng.random(40) < 0.2, 1.0, base)
        fs_lo, fs_hi = fscores(base, hop_s=0.5), fscores(raised, hop_s=0.5)
        for agreement in (1.0, 0.5, 0.3):
            _, lo = score_curve(fs_lo.scores, hop_s=0.5, support_s=(0, 2), duration_s=fs_lo.duration_s,
                                agreement=agreement)  # fmt: skip
            _, hi = score_curve(fs_hi.scores, hop_s=0.5, support_s=(0, 2), duration_s=fs_hi.duration_s,
                                agreement=agreement)  # fmt: skip
            assert np.all(hi >= lo)
            for e in events(base, hop_s=0.5, agreement=agreement):
                assert any(on <= e[0] and e[1] <= off for on, off in events(raised, hop_s=0.5, agreement=agreement))


@pytest.mark.parametrize("hop_s", [0.1, 0.25, 0.5])
@pytest.mark.parametrize("event", [(3.3, 3.5), (4.05, 9.6), (0.0, 1.2), (12.0, 14.9)])
def test_an_any_part_detector_is_localised_to_a_hop(hop_s, event):
    """A model that fires iff the event overlaps its window's support: the rule recovers the event."""
    duration = 14.9
    k = 1 + int(np.ceil((duration - WINDOW) / hop_s - 1e-9))
    starts = np.arange(k) * hop_s
    fire = ((starts < event[1]) & (starts + WINDOW > event[0])).astype(float)
    (found,) = events(fire, hop_s=hop_s, duration_s=duration)
    assert abs(found[0] - event[0]) < hop_s + 1e-6 or (event[0] == 0.0 and found[0] == 0.0)
    assert abs(found[1] - event[1]) < hop_s + 1e-6 or (event[1] == duration and found[1] == duration)


def test_events_at_the_start_and_end_of_the_file():
    assert events([1, 1, 0, 0, 0, 0, 0, 1, 1], duration_s=10.4) == [(0.0, 2.0), (8.0, 10.4)]
    # the first window alone hears the first frame, the last window alone the tail after the last full hop
    assert events([1, 0, 0, 0, 0, 0, 0, 0, 1], duration_s=10.4) == [(0.0, 1.0), (9.0, 10.4)]


@pytest.mark.parametrize("duration_s", [2.0, 2.6, 3.0, 3.9])
def test_files_shorter_than_two_windows(duration_s):
    k = 1 + int(np.ceil(duration_s - WINDOW - 1e-9))  # hop 1 s, the last window zero-padded
    assert events([1] * k, duration_s=duration_s) == [(0.0, duration_s)]
    assert events([0] * k, duration_s=duration_s) == []
    if k == 2:  # one of two windows fires: the part of the file it alone hears
        assert events([1, 0], duration_s=duration_s) == [(0.0, 1.0)]
        assert events([0, 1], duration_s=duration_s) == [(2.0, duration_s)]


def test_a_support_shorter_than_the_window():
    # the model hears [0.5, 1.5) of each 2 s window, hop 0.5: m = 2
    assert events(firing(2), hop_s=0.5, support_s=(0.5, 1.5)) == [(3.5, 4.0)]


def test_min_gap_merges_and_min_event_drops():
    column = [0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0]
    assert events(column) == [(3.0, 4.0), (6.0, 8.0), (13.0, 14.0)]
    assert events(column, min_gap_s=2.5) == [(3.0, 8.0), (13.0, 14.0)]
    assert events(column, min_event_s=1.5) == [(6.0, 8.0)]
    assert events(column, min_gap_s=2.5, min_event_s=1.5) == [(3.0, 8.0)]  # merged first, then dropped
    with pytest.raises(ConfigError):
        events(column, min_gap_s=-1)


def test_median_filter_removes_blips_and_fills_gaps():
    column = [0] * 3 + [1] + [0] * 4 + [1] * 6 + [0] + [1] * 6 + [0] * 3  # hop = window: a frame per window
    assert len(events(column, hop_s=2.0)) == 3
    assert events(column, hop_s=2.0, median_filter_s=6.0) == [(16.0, 42.0)]  # 3 frames: blip gone, gap filled
    assert median_filter_frames(0.3, hop_s=0.1, support_s=(0, 2)) == 3
    assert median_filter_frames(0.4, hop_s=0.1, support_s=(0, 2)) == 5  # made odd
    assert median_filter_frames(None, hop_s=0.1, support_s=(0, 2)) == 5  # a quarter of the support
    assert median_filter_frames(None, hop_s=1.0, support_s=(0, 2)) == 1


def test_silent_windows_veto_their_frames_and_scores_and_classes():
    silent = np.zeros(12, dtype=bool)
    silent[6] = True
    assert events([1] * 12, silent=silent) == [(0.0, 6.0), (8.0, 13.0)]
    two = np.stack([firing(4), np.full(14, 0.9)], axis=1)
    fs = fscores(two)
    found = scores_to_events(fs, np.array([0.5, 0.95]), median_filter_s=0, agreement=1.0)
    assert [(e.label, e.onset_s, e.offset_s) for e in found] == [("c0", 6.0, 9.0)]
    assert found[0].score == 1.0


def test_curve_to_events_checks_shapes():
    edges, curve = frame_edges(3.0, 1.0), np.zeros((3, 1), np.float32)
    with pytest.raises(ValueError):
        curve_to_events(edges, curve, np.array([0.5, 0.5]), ["a"])


def test_agreement_keeps_runs_shorter_than_the_support():
    # hop 0.5 s, support 2 s: four windows hear each frame
    assert events(firing(2), hop_s=0.5) == []  # all four must agree
    assert events(firing(2), hop_s=0.5, agreement=0.5) == [(3.0, 4.5)]  # two of four: the frames both hear
    assert events(firing(1), hop_s=0.5, agreement=0.25) == [(2.5, 4.5)]  # one of four: the window's support
    for agreement in (1.0, 0.75, 0.5, 0.25):
        lengths = [sum(off - on for on, off in events(firing(n, before=10, after=10), hop_s=0.5, agreement=agreement))
                   for n in range(1, 16)]  # fmt: skip
        assert lengths == sorted(lengths) and all(x == 0 or x >= 0.5 for x in lengths)
    with pytest.raises(ConfigError):
        events(firing(2), agreement=0.0)
