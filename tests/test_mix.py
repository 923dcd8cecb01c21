"""data/mix.py: EBR definition, anti-clipping, DCASE 2017 task 2-style mixtures (onsets, presence, splits, seed)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from thce.audio import load_audio, probe_audio
from thce.cli import main
from thce.data.manifest import read_manifest, read_skipped
from thce.data.mix import MixConfig, make_mixtures, mix_event, rms
from thce.errors import ConfigError, DataError


def ebr(event: np.ndarray, background: np.ndarray) -> float:
    return 20 * np.log10(rms(event) / rms(background))


@pytest.mark.parametrize("target", [-6.0, 0.0, 6.0])
def test_mix_event_hits_the_ebr_under_the_event(target):
    rng = np.random.default_rng(0)
    background = 0.05 * rng.standard_normal(16000)
    background[:8000] *= 4  # louder first half: only the part under the event counts
    event = np.sin(np.arange(3000) / 5.0)
    out = mix_event(background, event, onset=10000, ebr_db=target)
    assert ebr(out.event[10000:13000], out.background[10000:13000]) == pytest.approx(target, abs=1e-4)
    assert np.all(out.event[:10000] == 0) and np.all(out.event[13000:] == 0)
    np.testing.assert_allclose(out.mixture, out.background + out.event, atol=1e-6)
    np.testing.assert_allclose(out.background, background, atol=1e-6)  # no clipping: untouched


def test_anti_clipping_keeps_the_ebr():
    background = 0.5 * np.sign(np.sin(np.arange(8000) / 3.0))
    event = np.ones(1000)
    out = mix_event(background, event, onset=2000, ebr_db=6.0, max_peak=0.9)
    assert np.abs(out.mixture).max() == pytest.approx(0.9)
    assert ebr(out.event[2000:3000], out.background[2000:3000]) == pytest.approx(6.0, abs=1e-4)
    assert np.abs(out.background).max() < 0.5  # the whole mixture was scaled down


def test_mix_event_edge_cases():
    bg = np.zeros(1000)
    bg[:100] = 0.1  # silent under the event: the whole background's RMS is used
    out = mix_event(bg, np.ones(100), onset=500, ebr_db=0.0)
    assert rms(out.event[500:600]) == pytest.approx(rms(bg))
    with pytest.raises(DataError, match="event is digital silence"):
        mix_event(bg, np.zeros(100), onset=0)
    with pytest.raises(DataError, match="background is digital silence"):
        mix_event(np.zeros(1000), np.ones(100), onset=0)
    with pytest.raises(ValueError, match="does not fit"):
        mix_event(bg, np.ones(100), onset=950)
    only_bg = mix_event(bg, None)
    assert np.all(only_bg.event == 0)


def test_config_validation():
    for kwargs, message in [
        ({"event_probability": 1.5}, "event_probability"),
        ({"ebr_db": ()}, "ebr_db"),
        ({"max_peak": 0.0}, "max_peak"),
        ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
        ({"num_mixtures": 0}, "num_mixtures"),
    ]:
        with pytest.raises(ConfigError, match=message):
            MixConfig(**kwargs)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Events: dog 6 files (harmonic, 0.4-0.9 s, 22.05 kHz stereo), gun 6 files (decaying noise, 44.1 kHz);
    backgrounds: 5 pink-ish noise recordings of 11-13 s at 16 kHz, one too short, one unreadable."""
    root = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(0)
    for i in range(6):
        sr = 22050
        t = np.arange(int((0.4 + 0.1 * i) * sr)) / sr
        x = 0.2 * np.sin(2 * np.pi * 500 * t) * np.hanning(t.size)
        path = root / "events" / "dog" / f"bark{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.stack([x, x], axis=1), sr)
        sr = 44100
        n = int(0.3 * sr)
        y = 0.5 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.05 * sr))
        path = root / "events" / "gun" / f"shot{i}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, y, sr)
    for i in range(5):
        x = np.cumsum(rng.standard_normal(16000 * (11 + i % 3)))
        x = 0.05 * (x - np.convolve(x, np.ones(200) / 200, mode="same")) / 10
        path = root / "backgrounds" / f"street{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x.astype(np.float32), 16000, subtype="FLOAT")
    sf.write(root / "backgrounds" / "short.wav", np.full(16000, 0.01, np.float32), 16000)
    (root / "backgrounds" / "broken.wav").write_text("not audio")
    return root


def test_make_mixtures(sources, tmp_path):
    config = MixConfig(num_mixtures=30, event_probability=0.6, seed=4)
    result = make_mixtures(sources / "events", sources / "backgrounds", tmp_path / "mix", config=config)
    rows = read_manifest(result.manifest)
    assert len(rows) == 30 and sorted(r.path.name for r in rows) == [f"mix_{i:05d}.wav" for i in range(30)]
    assert Counter(r.split for r in rows) == {"train": 21, "val": 6, "test": 3}
    labels = Counter(r.label for r in rows)
    assert set(labels) == {"dog", "gun", ""} and 6 <= labels[""] <= 18  # binomial(30, 0.4): mean 12, sd 2.7
    assert sorted(Path(s.path).name for s in result.skipped) == ["broken.wav", "short.wav"]
    problems = {Path(s.path).name: s.problem for s in result.skipped}
    assert problems["broken.wav"] == probe_audio(sources / "backgrounds" / "broken.wav")  # the words of data import
    for row in rows:
        info = sf.info(str(row.path))
        assert (info.samplerate, info.frames, info.channels) == (16000, 160000, 1)
        if not row.label:
            assert row.extra["onset_s"] == row.extra["offset_s"] == row.extra["ebr_db"] == ""
            continue
        onset, offset = float(row.extra["onset_s"]), float(row.extra["offset_s"])
        assert 0.0 <= onset < offset <= 10.0
        assert float(row.extra["ebr_db"]) in (-6.0, 0.0, 6.0)
        event = load_audio(row.extra["event_file"], sample_rate_hz=16000, duration_s=None)
        assert offset - onset == pytest.approx(event.size / 16000, abs=1e-3)
        assert row.group == "bg:" + Path(row.extra["background_file"]).name
    # the EBR as heard: mixture minus the background segment under the event (no clipping at these levels)
    row = next(r for r in rows if r.label == "dog")
    mixture = load_audio(row.path, sample_rate_hz=16000, duration_s=10.0)
    background = load_audio(row.extra["background_file"], sample_rate_hz=16000, duration_s=10.0,
                            offset_s=float(row.extra["background_offset_s"]))  # fmt: skip
    on, off = round(float(row.extra["onset_s"]) * 16000), round(float(row.extra["offset_s"]) * 16000)
    assert ebr(mixture[on:off] - background[on:off], background[on:off]) == pytest.approx(
        float(row.extra["ebr_db"]), abs=0.05
    )
    # sources never straddle splits
    for column in ("background_file", "event_file"):
        split_of: dict[str, set[str]] = {}
        for r in rows:
            if r.extra[column]:
                split_of.setdefault(r.extra[column], set()).add(r.split)
        assert all(len(s) == 1 for s in split_of.values()), column
    # onsets spread over the clip (uniform)
    onsets = [float(r.extra["onset_s"]) for r in rows if r.label]
    assert min(onsets) < 3.0 and max(onsets) > 6.0


def test_mixtures_are_seeded_and_resumable(sources, tmp_path):
    config = MixConfig(num_mixtures=6, seed=1, split_fractions=None)
    first = make_mixtures(sources / "events", sources / "backgrounds", tmp_path / "a", config=config)
    assert {r.split for r in first.rows} == {""}
    same = make_mixtures(sources / "events", sources / "backgrounds", tmp_path / "b", config=config)
    for a, b in zip(first.rows, same.rows):
        assert a.path.read_bytes() == b.path.read_bytes() and a.extra == b.extra
    other = make_mixtures(sources / "events", sources / "backgrounds", tmp_path / "c",
                          config=MixConfig(num_mixtures=6, seed=2, split_fractions=None))  # fmt: skip
    assert [r.extra for r in other.rows] != [r.extra for r in first.rows]
    # a rerun renders only what is missing
    first.rows[2].path.unlink()
    stamps = {r.path: r.path.stat().st_mtime_ns for r in first.rows if r.path.exists()}
    again = make_mixtures(sources / "events", sources / "backgrounds", tmp_path / "a", config=config)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert again.rows[2].path.read_bytes() == same.rows[2].path.read_bytes()


@pytest.mark.parametrize(("probability", "expect"), [(0.0, {""}), (1.0, {"dog", "gun"})])
def test_event_probability_extremes(sources, tmp_path, probability, expect):
    config = MixConfig(num_mixtures=10, event_probability=probability, duration_s=2.0, split_fractions=None)
    result = make_mixtures(sources / "events", sources / "backgrounds", tmp_path, config=config)
    assert {r.label for r in result.rows} == expect


def test_cli_mix_and_errors(sources, tmp_path, capsys):
    out = tmp_path / "mix"
    argv = ["-q", "data", "mix", "--events", str(sources / "events"), "--backgrounds", str(sources / "backgrounds"),
            "--out", str(out), "--count", "5", "--duration-s", "2", "--ebr-db", "0", "--seed", "3", "--no-split"]
    assert main(argv) == 0
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == 5 and all(r.extra["ebr_db"] in ("", "0") for r in rows)
    assert sorted(Path(s.path).name for s in read_skipped(out / "skipped.csv")) == ["broken.wav", "short.wav"]
    assert "5 mixtures" in capsys.readouterr().out
    assert main([*argv[:-1], "--strict"]) == 2
    assert "broken.wav" in capsys.readouterr().err
    with pytest.raises(DataError, match="no usable background"):
        make_mixtures(sources / "events", sources / "events", tmp_path / "x", config=MixConfig(duration_s=60.0))


def test_cli_mix_out_that_cannot_be_a_folder_is_one_line(sources, tmp_path, capsys):
    """--out a file, or under one: exit status 2 and one line naming it (was a NotADirectoryError traceback after
    every source had been read)."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine\n")
    for out in (blocker, blocker / "mix"):
        argv = ["-q", "data", "mix", "--events", str(sources / "events"), "--backgrounds",
                str(sources / "backgrounds"), "--out", str(out), "--count", "2", "--duration-s", "2"]  # fmt: skip
        assert main(argv) == 2, out
        err = capsys.readouterr().err
        assert err.startswith(f"thce: error: {out}: cannot write there") and err.count("\n") == 1, err
    assert blocker.read_text() == "mine\n"
