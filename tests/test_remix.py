"""data/remix.py: events cut from clips' log-mel features and pasted into others keep their labels and onsets, leave
the host's other frames alone, hit the EBR asked for, and are deterministic under the seed."""

from __future__ import annotations

import numpy as np
import pytest

from thce.data.remix import EventBank, add_event, remix, shift_bands
from thce.data.strong import frame_targets

STRIDE = 4
T_OUT, F, L = 25, 8, 3  # 25 target frames of 4 input frames: 100 log-mel frames, 8 bands, 3 classes


def clips(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw log-mel-like features (noise around ln 1e-3) and their targets: clip i has an event of class i % L over
    target frames [5 + i, 9 + i), louder in its frames."""
    rng = np.random.default_rng(seed)
    features = np.log(1e-3) + rng.normal(0.0, 0.5, (n, T_OUT * STRIDE, F))
    targets = np.zeros((n, T_OUT, L), dtype=np.uint8)
    for i in range(n):
        targets[i, 5 + i : 9 + i, i % L] = 1
        features[i, (5 + i) * STRIDE : (9 + i) * STRIDE] += 4.0
    return features, targets


def test_bank_cuts_every_run_of_each_class():
    features, targets = clips(4)
    targets[0, 20:22, 2] = 1  # a second, shorter event in clip 0
    bank = EventBank.from_clips(features, targets, frame_stride=STRIDE)
    assert bank.classes == [0, 1, 2] and len(bank) == 5
    (first, second) = bank.by_class[0]
    assert (first.clip, first.start, first.features.shape) == (0, 5, (16, F))
    np.testing.assert_array_equal(first.features, features[0, 20:36])
    assert second.clip == 3 and second.start == 8
    assert [s.features.shape[0] for s in bank.by_class[2]] == [8, 16]
    assert len(EventBank.from_clips(features, targets, frame_stride=STRIDE, min_frames=3)) == 4
    with pytest.raises(ValueError, match="2 feature clips but 4 target clips"):
        EventBank.from_clips(features[:2], targets, frame_stride=STRIDE)
    with pytest.raises(ValueError, match="do not fit"):
        EventBank.from_clips(features[:, :50], targets, frame_stride=STRIDE)


def test_pasted_events_keep_labels_and_onsets_and_leave_the_rest_alone():
    features, targets = clips(6)
    bank = EventBank.from_clips(features[:3], targets[:3], frame_stride=STRIDE)
    hosts, host_targets = clips(5, seed=1)
    host_targets[:, :, :] = 0
    host_targets[0, 0:3, 1] = 1  # one host with its own event: never pasted over
    out, out_targets = remix(hosts, host_targets, bank, np.random.default_rng(7), ebr_db_range=(0.0, 6.0),
                             frame_stride=STRIDE, events_per_clip=2)  # fmt: skip
    assert out.shape == hosts.shape and out.dtype == hosts.dtype and out_targets.dtype == host_targets.dtype
    assert np.all(host_targets[0, 0:3, 1] == 1) and hosts is not out  # inputs untouched
    np.testing.assert_array_equal(out_targets[0, 0:3], host_targets[0, 0:3])  # the host's event: not pasted over
    for i in range(5):
        added = out_targets[i].astype(int) - host_targets[i]
        assert added.min() == 0  # nothing removed
        changed = np.flatnonzero(np.any(out[i] != hosts[i], axis=1))  # input frames that changed
        pasted = np.flatnonzero(added.any(axis=1))  # target frames gained
        # the changed input frames are exactly the pasted target frames' input frames
        assert changed.tolist() == [t * STRIDE + k for t in pasted for k in range(STRIDE)]
        assert 1 <= added.any(axis=1).sum() // 4 <= 2  # two events of 4 frames (one may not find room)
        assert np.all(added.sum(axis=1) <= 1) and np.all(out_targets[i].sum(axis=1) <= 1)  # no overlaps
        # each pasted run is a bank event of that class, added at the place its targets say
        for c in range(L):
            starts = np.flatnonzero(np.diff(np.concatenate([[0], added[:, c]])) == 1)
            for start in starts:
                a, b = start * STRIDE, (start + 4) * STRIDE
                candidates = [s.features for s in bank.by_class[c]]
                energy_added = np.exp(out[i, a:b]) - np.exp(hosts[i, a:b])
                # the added energy is proportional to one of the class's bank segments
                ratios = [energy_added / np.exp(seg) for seg in candidates]
                assert any(np.allclose(r, r.mean(), rtol=1e-6) for r in ratios)


def test_a_known_energy_ratio_gives_the_ebr_asked_for():
    rng = np.random.default_rng(3)
    host = rng.normal(-5.0, 1.0, (16, F))
    event = rng.normal(-2.0, 2.0, (16, F))
    for ebr in (-6.0, 0.0, 6.0):
        mixed = add_event(host, event, ebr)
        added = np.exp(mixed) - np.exp(host)
        assert 10 * np.log10(added.sum() / np.exp(host).sum()) == pytest.approx(ebr, abs=1e-9)
        np.testing.assert_allclose(added / np.exp(event), (added / np.exp(event)).mean(), rtol=1e-9)  # one gain
    # through remix: one event, a fixed EBR
    features, targets = clips(1)
    bank = EventBank.from_clips(features, targets, frame_stride=STRIDE)
    hosts = rng.normal(-6.0, 1.0, (1, T_OUT * STRIDE, F))
    out, out_targets = remix(hosts, np.zeros((1, T_OUT, L), np.uint8), bank, 0, ebr_db_range=(-3.0, -3.0),
                             frame_stride=STRIDE)  # fmt: skip
    frames = np.flatnonzero(out_targets[0, :, 0])
    a, b = frames[0] * STRIDE, (frames[-1] + 1) * STRIDE
    added = np.exp(out[0, a:b]) - np.exp(hosts[0, a:b])
    assert 10 * np.log10(added.sum() / np.exp(hosts[0, a:b]).sum()) == pytest.approx(-3.0, abs=1e-9)


def test_remix_is_deterministic_under_the_seed():
    features, targets = clips(3)
    bank = EventBank.from_clips(features, targets, frame_stride=STRIDE)
    hosts, host_targets = clips(4, seed=5)
    first = remix(hosts, host_targets, bank, 11, frame_stride=STRIDE, events_per_clip=2)
    again = remix(hosts, host_targets, bank, np.random.default_rng(11), frame_stride=STRIDE, events_per_clip=2)
    other = remix(hosts, host_targets, bank, 12, frame_stride=STRIDE, events_per_clip=2)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_remix_with_frame_targets_of_strong_labels_and_edge_cases():
    # targets made by frame_targets from events, float32 features, a stride of 1
    targets = frame_targets([(0.25, 0.45, "dog")], ["dog"], 10, 0.1)[None]
    features = np.full((1, 10, 2), np.log(1e-2), np.float32)
    bank = EventBank.from_clips(features + targets.astype(np.float32), targets)
    out, out_targets = remix(features, np.zeros_like(targets), bank, 0, ebr_db_range=(0.0, 0.0))
    assert out.dtype == np.float32 and out_targets[0, :, 0].sum() == 2
    # no room: nothing pasted; an empty bank: nothing pasted
    full = np.ones_like(targets)
    assert np.array_equal(remix(features, full, bank, 0)[0], features)
    empty = EventBank.from_clips(features, np.zeros_like(targets))
    assert len(empty) == 0 and np.array_equal(remix(features, targets, empty, 0)[1], targets)
    with pytest.raises(ValueError, match="frame_stride"):
        remix(features, targets, bank, 0, frame_stride=2)
    with pytest.raises(ValueError, match="ebr_db_range"):
        remix(features, targets, bank, 0, ebr_db_range=(6.0, -6.0))
    with pytest.raises(ValueError, match="expected features"):
        remix(features[0], targets, bank, 0)


def test_band_shift_moves_pasted_events_along_the_mel_axis_only():
    event = np.arange(12.0).reshape(2, 6)
    np.testing.assert_array_equal(shift_bands(event, 2), [[0, 0, 0, 1, 2, 3], [6, 6, 6, 7, 8, 9]])
    np.testing.assert_array_equal(shift_bands(event, -1), [[1, 2, 3, 4, 5, 5], [7, 8, 9, 10, 11, 11]])
    np.testing.assert_array_equal(shift_bands(event, 0), event)
    with pytest.raises(ValueError, match="within"):
        shift_bands(event, 6)
    # through remix: the same draws of class, segment, EBR and start as without a shift (the shift is drawn last),
    # the same targets, and the added energy is a shifted bank segment's
    features, targets = clips(3)
    bank = EventBank.from_clips(features, targets, frame_stride=STRIDE)
    hosts = np.random.default_rng(4).normal(-6.0, 1.0, (1, T_OUT * STRIDE, F))
    empty = np.zeros((1, T_OUT, L), np.uint8)
    plain = remix(hosts, empty, bank, 5, frame_stride=STRIDE)
    shifted = remix(hosts, empty, bank, 5, frame_stride=STRIDE, band_shift=3)
    np.testing.assert_array_equal(plain[1], shifted[1])
    frames = np.flatnonzero(shifted[1][0].any(axis=1))
    a, b = frames[0] * STRIDE, (frames[-1] + 1) * STRIDE
    added = np.exp(shifted[0][0, a:b]) - np.exp(hosts[0, a:b])
    label = int(np.flatnonzero(shifted[1][0, frames[0]])[0])
    candidates = [shift_bands(seg.features, s) for seg in bank.by_class[label] for s in range(-3, 4)]
    ratios = [added / np.exp(c) for c in candidates if c.shape == added.shape]
    assert any(np.allclose(r, r.mean(), rtol=1e-6) for r in ratios)
    moved = [not np.array_equal(remix(hosts, empty, bank, seed, frame_stride=STRIDE)[0],
                                remix(hosts, empty, bank, seed, frame_stride=STRIDE, band_shift=3)[0])
             for seed in range(6)]  # fmt: skip
    assert sum(moved) >= 3  # a shift of 0 (1 in 7) leaves the event as it was
    with pytest.raises(ValueError, match="band_shift"):
        remix(hosts, empty, bank, 5, frame_stride=STRIDE, band_shift=F)
