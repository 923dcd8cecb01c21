"""Built-in synthetic scenes: determinism, manifest, EBR, no clipping, resumability, validation."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from thce.data.manifest import read_manifest
from thce.data.synth import (
    BACKGROUND,
    EVENT_LABELS,
    LABELS,
    SynthConfig,
    clip_id,
    clip_rng,
    generate_scenes,
    source_of,
    synthesise_clip,
)
from thce.data.splits import assign_splits
from thce.errors import ConfigError

COUNTS = {"dog": 2, "baby": 1, "gun": 2, "background": 3}


def small_config(**overrides) -> SynthConfig:
    values = {"counts": COUNTS, "duration_s": 1.0, "seed": 3}
    values.update(overrides)
    return SynthConfig(**values)


def wav_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "audio").rglob("*.wav"))}


def measured_ebr_db(clip) -> float:
    on, off = round(clip.onset_s * 16000), round(clip.offset_s * 16000)
    rms = lambda x: math.sqrt(float(np.mean(np.square(x))))  # noqa: E731
    return 20.0 * math.log10(rms(clip.event[on:off]) / rms(clip.background[on:off]))


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_scenes(small_config(), out)
    return out


def test_same_seed_gives_identical_bytes_and_other_seed_differs(generated, tmp_path):
    again = tmp_path / "again"
    generate_scenes(small_config(), again)
    assert wav_bytes(again) == wav_bytes(generated)
    assert (again / "manifest.csv").read_bytes() == (generated / "manifest.csv").read_bytes()

    other = tmp_path / "other"
    generate_scenes(small_config(seed=4), other)
    first, second = wav_bytes(generated), wav_bytes(other)
    assert first.keys() == second.keys()
    assert all(first[name] != second[name] for name in first)


def test_a_clip_does_not_depend_on_the_counts(generated, tmp_path):
    out = tmp_path / "fewer"
    generate_scenes(small_config(counts={"gun": 1, "dog": 2}), out)
    for name, data in wav_bytes(out).items():
        assert data == (generated / name).read_bytes()


def test_manifest_matches_counts_and_clips(generated):
    config = small_config()
    rows = read_manifest(generated / "manifest.csv")
    assert Counter(row.label or BACKGROUND for row in rows) == Counter(COUNTS)
    assert len({row.group for row in rows}) == len(rows)
    for row in rows:
        assert row.split == ""
        assert row.path.stem == row.group
        assert row.path.parent.name == (row.label or BACKGROUND)
        audio, rate = sf.read(row.path, dtype="float32")
        assert rate == config.sample_rate_hz
        assert audio.shape == (config.n_samples,)
        if row.label:
            assert row.label in EVENT_LABELS
            onset, offset = float(row.extra["onset_s"]), float(row.extra["offset_s"])
            assert 0.0 <= onset < offset <= config.duration_s
        else:
            assert row.extra["onset_s"] == row.extra["offset_s"] == ""


@pytest.mark.parametrize("label", EVENT_LABELS)
def test_event_mixed_at_ebr_within_range_and_inside_clip(label):
    config = small_config(duration_s=2.0, ebr_db_range=(-3.0, 3.0))
    for index in range(3):
        clip = synthesise_clip(label, clip_rng(config.seed, label, index), config)
        assert clip.mixture.shape == clip.event.shape == clip.background.shape == (config.n_samples,)
        np.testing.assert_allclose(clip.mixture, clip.background + clip.event, atol=1e-12)
        assert 0.0 <= clip.onset_s < clip.offset_s <= config.duration_s
        on, off = round(clip.onset_s * 16000), round(clip.offset_s * 16000)
        assert not np.any(clip.event[:on]) and not np.any(clip.event[off:])
        assert -3.0 - 1e-6 <= measured_ebr_db(clip) <= 3.0 + 1e-6


def test_background_clip_has_no_event():
    config = small_config()
    clip = synthesise_clip(BACKGROUND, clip_rng(0, BACKGROUND, 0), config)
    assert clip.onset_s is None and clip.offset_s is None
    assert not np.any(clip.event)
    assert np.array_equal(clip.mixture, clip.background)


def test_loud_events_are_limited_without_clipping_and_keep_their_ebr(tmp_path):
    config = small_config(counts={"gun": 2, "dog": 1}, ebr_db_range=(30.0, 30.0))
    for label in ("gun", "dog"):
        clip = synthesise_clip(label, clip_rng(config.seed, label, 0), config)
        assert np.max(np.abs(clip.mixture)) <= 0.99 + 1e-12
        assert measured_ebr_db(clip) == pytest.approx(30.0, abs=1e-6)
    generate_scenes(config, tmp_path)
    for path in (tmp_path / "audio").rglob("*.wav"):
        pcm, _ = sf.read(path, dtype="int16")
        assert np.max(np.abs(pcm.astype(np.int32))) <= round(0.99 * 32767)


def test_no_clipping_in_generated_files(generated):
    for path in (generated / "audio").rglob("*.wav"):
        pcm, _ = sf.read(path, dtype="int16")
        assert 0 < np.max(np.abs(pcm.astype(np.int32))) <= round(0.99 * 32767)


def test_resume_rewrites_only_missing_or_truncated_files(tmp_path):
    config = small_config()
    calls: list[tuple[int, int]] = []
    manifest = generate_scenes(config, tmp_path, progress=lambda _desc, done, total: calls.append((done, total)))
    assert calls == [(i, config.total) for i in range(1, config.total + 1)]
    before_manifest = manifest.read_bytes()
    before = wav_bytes(tmp_path)
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (tmp_path / "audio").rglob("*.wav")}

    deleted = tmp_path / "audio" / "dog" / f"{clip_id('dog', 1)}.wav"
    truncated = tmp_path / "audio" / "background" / f"{clip_id(BACKGROUND, 2)}.wav"
    deleted.unlink()
    truncated.write_bytes(truncated.read_bytes()[:100])
    generate_scenes(config, tmp_path)

    for path, stamp in stamps.items():
        if path not in (deleted, truncated):
            assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp, f"{path} was rewritten"
    assert wav_bytes(tmp_path) == before  # the two damaged clips are back, byte for byte
    assert manifest.read_bytes() == before_manifest  # onsets of kept clips are recomputed identically
    assert not list(tmp_path.rglob("*.tmp"))


def test_worker_processes_write_the_same_files_and_manifest(tmp_path):
    config = small_config(test_counts={"gun": 2, BACKGROUND: 1})
    one = generate_scenes(config, tmp_path / "one", workers=1)
    calls: list[tuple[int, int]] = []
    two = generate_scenes(config, tmp_path / "two", workers=2, progress=lambda _d, done, total: calls.append((done, total)))
    assert wav_bytes(tmp_path / "one") == wav_bytes(tmp_path / "two")
    assert one.read_text() == two.read_text().replace("/two/", "/one/")
    assert (tmp_path / "one" / "events.tsv").read_text() == (tmp_path / "two" / "events.tsv").read_text().replace(
        "/two/", "/one/"
    )
    assert sorted(calls) == [(i, config.total) for i in range(1, config.total + 1)]


def test_other_settings_do_not_reuse_existing_files(tmp_path):
    generate_scenes(small_config(counts={"dog": 1}), tmp_path)
    generate_scenes(small_config(counts={"dog": 1}, seed=99), tmp_path)
    fresh = tmp_path / "fresh"
    generate_scenes(small_config(counts={"dog": 1}, seed=99), fresh)
    name = f"audio/dog/{clip_id('dog', 0)}.wav"
    assert (tmp_path / name).read_bytes() == (fresh / name).read_bytes()


def test_a_run_killed_while_changing_settings_leaves_nothing_stale(tmp_path, monkeypatch):
    import thce.data.synth as synth

    generate_scenes(small_config(), tmp_path)
    real_write = synth._write_wav
    calls = []

    def failing_write(*args):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(args)
        real_write(*args)

    monkeypatch.setattr(synth, "_write_wav", failing_write)
    with pytest.raises(KeyboardInterrupt):
        generate_scenes(small_config(seed=99), tmp_path)
    monkeypatch.setattr(synth, "_write_wav", real_write)
    generate_scenes(small_config(seed=99), tmp_path)
    fresh = tmp_path / "fresh"
    generate_scenes(small_config(seed=99), fresh)
    assert wav_bytes(tmp_path) == wav_bytes(fresh)


def test_from_ratio_and_dict_round_trip():
    config = SynthConfig.from_ratio({"dog": 2, "baby": 2, "gun": 1, "background": 26}, 3, seed=5)
    assert config.counts == {"dog": 6, "baby": 6, "gun": 3, "background": 78}
    assert config.total == 93 and config.seed == 5
    assert SynthConfig.from_dict(config.to_dict()) == config
    assert config.n_samples == 160000


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"counts": {"dog": -1}}, "non-negative"),
        ({"counts": {"cat": 1}}, "unknown label"),
        ({"counts": {"dog": 1.5}}, "non-negative integer"),
        ({"counts": {"dog": 0}}, "nothing to generate"),
        ({"counts": {"dog": 1}, "ebr_db_range": (6.0, -6.0)}, "ebr_db_range"),
        ({"counts": {"dog": 1}, "ebr_db_range": (0.0, float("nan"))}, "ebr_db_range"),
        ({"counts": {"dog": 1}, "ebr_db_range": (1.0,)}, "ebr_db_range"),
        ({"counts": {"dog": 1}, "duration_s": 0.0}, "duration_s"),
        ({"counts": {"dog": 1}, "sample_rate_hz": 4000}, "sample_rate_hz"),
        ({"counts": {"dog": 1}, "seed": -1}, "seed"),
    ],
)
def test_invalid_configs_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SynthConfig(**kwargs)


def test_other_invalid_inputs():
    with pytest.raises(ConfigError, match="unit"):
        SynthConfig.from_ratio({"dog": 1}, 0)
    with pytest.raises(ConfigError, match="ratio"):
        SynthConfig.from_ratio({"dog": -2}, 1)
    with pytest.raises(ConfigError, match="unknown config key 'synth.sample_rate'"):
        SynthConfig.from_dict({"counts": {"dog": 1}, "sample_rate": 16000})
    with pytest.raises(ConfigError, match="label"):
        synthesise_clip("cat", np.random.default_rng(0), small_config())
    assert set(LABELS) == {"dog", "baby", "gun", BACKGROUND}


def test_separate_test_set(tmp_path):
    config = SynthConfig(counts={"dog": 2, "background": 2}, test_counts={"dog": 3, "gun": 1}, duration_s=1.0, seed=5)
    rows = read_manifest(generate_scenes(config, tmp_path))
    test_rows = [r for r in rows if r.split == "test"]
    assert sorted(r.label for r in test_rows) == ["dog", "dog", "dog", "gun"]
    assert all(r.path.name.startswith("test_") and r.group.startswith("test_") for r in test_rows)
    assert [r.split for r in rows if r not in test_rows] == ["", "", "", ""]
    # the test clip dog 0 is not the training clip dog 0
    train_dog = next(r for r in rows if r.label == "dog" and r.split == "")
    test_dog = next(r for r in test_rows if r.label == "dog")
    assert train_dog.path.read_bytes() != test_dog.path.read_bytes()


# ----------------------------------------------------------------------------------------------------------------------
# Few source recordings (sources_per_class)

SOURCES = {"counts": {"dog": 6, "gun": 3, "background": 6}, "test_counts": {"dog": 4, "background": 4},
           "sources_per_class": {"dog": 2, "gun": 1, "background": 3}, "test_sources_per_class": 2}  # fmt: skip


def test_sources_group_clips_and_keep_test_sources_apart(tmp_path):
    config = small_config(**SOURCES)
    rows = read_manifest(generate_scenes(config, tmp_path))
    pool = [r for r in rows if r.split == ""]
    test = [r for r in rows if r.split == "test"]
    assert Counter(r.group for r in pool) == {
        "dog_src000": 3, "dog_src001": 3, "gun_src000": 3,
        "background_src000": 2, "background_src001": 2, "background_src002": 2,
    }  # fmt: skip
    assert Counter(r.group for r in test) == {"test_dog_src000": 2, "test_dog_src001": 2,
                                              "test_background_src000": 2, "test_background_src001": 2}  # fmt: skip
    assert not {r.group for r in pool} & {r.group for r in test}
    # disjoint in content too, not only in name: test source k is not pool source k
    for label in ("dog", "background"):
        for k in range(2):
            assert source_of(config, label, k)[1] != source_of(config, label, k, test=True)[1]
    # the grouped split never puts one source in two splits
    split = assign_splits(pool, fractions=(0.5, 0.5, 0.0), seed=0)
    by_group: dict[str, set[str]] = {}
    for row in split:
        by_group.setdefault(row.group, set()).add(row.split)
    assert all(len(splits) == 1 for splits in by_group.values())
    assert {r.split for r in split if r.label == "dog"} == {"train", "val"}


def test_sources_same_seed_gives_identical_bytes(tmp_path):
    config = small_config(**SOURCES)
    generate_scenes(config, tmp_path / "a")
    generate_scenes(config, tmp_path / "b")
    assert wav_bytes(tmp_path / "a") == wav_bytes(tmp_path / "b")
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()
    generate_scenes(small_config(**{**SOURCES, "seed": 4}), tmp_path / "c")
    assert wav_bytes(tmp_path / "c").keys() == wav_bytes(tmp_path / "a").keys()
    assert all(v != wav_bytes(tmp_path / "a")[k] for k, v in wav_bytes(tmp_path / "c").items())
    # the sources change the clips; without them (0) a folder's fingerprint is that of before they existed
    generate_scenes(small_config(counts=SOURCES["counts"]), tmp_path / "d")
    assert wav_bytes(tmp_path / "d")["audio/dog/dog_00000.wav"] != wav_bytes(tmp_path / "a")["audio/dog/dog_00000.wav"]
    assert "sources_per_class" not in (tmp_path / "d" / "synth.json").read_text()
    assert all(r.group == r.path.stem for r in read_manifest(tmp_path / "d" / "manifest.csv"))


def _log_centroid(x: np.ndarray, *, floor: bool = False, sr: int = 16000) -> float:
    """log of the spectral centroid (Hz) of ``x``; ``floor``: of its median short-time power spectrum (the bed's
    steady part, not its passing confusers)."""
    if floor:
        freqs, _, stft = signal.stft(x, fs=sr, nperseg=512)
        power = np.median(np.abs(stft) ** 2, axis=1)
    else:
        freqs, power = np.fft.rfftfreq(x.size, 1.0 / sr), np.abs(np.fft.rfft(x)) ** 2
    return math.log(float((power * freqs).sum() / power.sum()))


@pytest.mark.parametrize("label", LABELS)
def test_clips_of_one_source_are_more_alike_than_clips_of_different_sources(label):
    """Spectral centroid of the event and of the bed under it: its spread within a source (8 sources x 3 clips) is
    well under the spread of the source means (measured ratios 0.02-0.58 over seeds 0-3)."""
    config = small_config(duration_s=2.0, sources_per_class=8)
    parts = ["background"] if label == BACKGROUND else ["event", "background"]
    values: dict[str, dict[int, list[float]]] = {part: {} for part in parts}
    for index in range(24):
        number, source = source_of(config, label, index)
        clip = synthesise_clip(label, clip_rng(config.seed, label, index), config, source)
        values["background"].setdefault(number, []).append(_log_centroid(clip.background, floor=True))
        if label != BACKGROUND:
            event = clip.event[round(clip.onset_s * 16000) : round(clip.offset_s * 16000)]
            values["event"].setdefault(number, []).append(_log_centroid(event))
    for part, per_source in values.items():
        assert len(per_source) == 8 and all(len(v) == 3 for v in per_source.values())
        within = float(np.mean([np.std(v) for v in per_source.values()]))
        between = float(np.std([np.mean(v) for v in per_source.values()]))
        assert within < 0.75 * between, (part, within, between)


def test_without_sources_a_clip_is_what_it_was():
    """sources 0: synthesise_clip without a source; the same clip whether or not the other labels have sources."""
    plain = small_config()
    mixed = small_config(sources_per_class={"dog": 2})
    assert source_of(plain, "dog", 0) is None and source_of(mixed, "gun", 0) is None
    a = synthesise_clip("gun", clip_rng(3, "gun", 1), plain)
    b = synthesise_clip("gun", clip_rng(3, "gun", 1), mixed, None)
    np.testing.assert_array_equal(a.mixture, b.mixture)
    assert mixed.sources("dog") == 2 and mixed.sources("dog", test=True) == 0 and mixed.sources("baby") == 0
    assert SynthConfig.from_dict(mixed.to_dict()) == mixed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sources_per_class": -1}, "sources_per_class: expected a non-negative integer"),
        ({"sources_per_class": {"cat": 2}}, "unknown label 'cat'"),
        ({"test_sources_per_class": {"dog": 1.5}}, r"test_sources_per_class\['dog'\]"),
        ({"sources_per_class": True}, "sources_per_class"),
    ],
)
def test_invalid_sources_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        small_config(**kwargs)
