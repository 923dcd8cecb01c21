"""Bad input never crashes a run or loses work: every case of issue 3 is skipped with a message naming the file and the
problem (listed in skipped.csv), or stops the run with strict=True; a run killed with SIGKILL resumes where it was."""

from __future__ import annotations

import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from thce.audio import ClipChecks, LogMel, LogMelConfig, load_audio, probe_audio
from thce.audio.read import audio_info, stream_audio
from thce.cli import main
from thce.data import features
from thce.data.feature_store import FeatureStore, shard_name, usable_indices
from thce.data.features import compute_features
from thce.data.manifest import (
    ManifestRow,
    check_split_coverage,
    read_manifest,
    read_skipped,
    screen_rows,
    write_skipped,
)
from thce.errors import AudioError, DataError

CFG = LogMelConfig(duration_s=1.0, n_mels=16, sample_rate_hz=8000, n_fft=256)
SR = CFG.sample_rate_hz


def noise(seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(round(seconds * sr))).astype(np.float32)


def wav_with_codec(path: Path, tag: int) -> Path:
    """A WAV whose fmt chunk names codec ``tag`` (e.g. 0x00FF, AAC), with some payload."""
    fmt = struct.pack("<HHIIHHH", tag, 1, SR, SR * 2, 2, 16, 0)
    data = os.urandom(2000)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def make_bad_files(root: Path) -> dict[str, tuple[Path, str]]:
    """Every bad-input case of the issue: name -> (file, regex the problem must match)."""
    root.mkdir(parents=True, exist_ok=True)
    cases: dict[str, tuple[Path, str]] = {}

    def add(name: str, path: Path, pattern: str) -> None:
        cases[name] = (path, pattern)

    add("missing", root / "missing.wav", "not found")
    (root / "zero_bytes.wav").write_bytes(b"")
    add("zero_bytes", root / "zero_bytes.wav", r"empty file \(0 bytes\)")
    sf.write(root / "no_samples.wav", np.zeros(0, np.float32), SR)
    add("no_samples", root / "no_samples.wav", r"empty \(0 samples\)")
    good = root / "source.wav"
    sf.write(good, noise(1.0, 1), SR, subtype="PCM_16")
    raw = good.read_bytes()
    (root / "truncated.wav").write_bytes(raw[: len(raw) // 2])
    add("truncated_wav", root / "truncated.wav", r"truncated file.*data chunk")
    sf.write(root / "source.flac", noise(1.0, 2), SR)
    raw = (root / "source.flac").read_bytes()
    (root / "truncated.flac").write_bytes(raw[: len(raw) // 2])
    add("truncated_flac", root / "truncated.flac", r"corrupt or truncated|truncated")
    (root / "notes.wav").write_text("this is a text file, not audio\n" * 30)
    add("not_audio", root / "notes.wav", r"cannot read as audio: not an audio file")
    add("unsupported_codec", wav_with_codec(root / "aac.wav", 0x00FF), r"unsupported codec.*0x00ff \(AAC\)")
    (root / "song.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" + os.urandom(3000))
    add("unsupported_format", root / "song.m4a", r"unsupported format '\.m4a'")
    x = noise(1.0, 3)
    x[100] = np.nan
    sf.write(root / "nan.wav", x, SR, subtype="FLOAT")
    add("nan", root / "nan.wav", "NaN or infinite")
    x = noise(1.0, 4)
    x[200] = np.inf
    sf.write(root / "inf.wav", x, SR, subtype="FLOAT")
    add("inf", root / "inf.wav", "NaN or infinite")
    sf.write(root / "silence.wav", np.zeros(SR, np.float32), SR, subtype="PCM_16")
    add("digital_silence", root / "silence.wav", "digital silence")
    sf.write(root / "blip.wav", noise(0.05, 5), SR)
    add("far_shorter", root / "blip.wav", r"far shorter than the clip duration \(0\.05 s")
    sf.write(root / "hour.wav", noise(15.0, 6), SR, subtype="PCM_16")
    add("far_longer", root / "hour.wav", r"far longer than the clip duration \(15\.0 s")
    return cases


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    return make_bad_files(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def good_files(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("good")
    paths = []
    for i in range(4):
        path = root / f"good{i}.wav"
        sf.write(path, noise(0.6 + 0.2 * i, 10 + i), SR)
        paths.append(path)
    return paths


@pytest.mark.parametrize(
    "case",
    ["missing", "zero_bytes", "no_samples", "truncated_wav", "truncated_flac", "not_audio", "unsupported_codec",
     "unsupported_format", "nan", "inf", "digital_silence", "far_shorter", "far_longer"],
)  # fmt: skip
def test_load_audio_names_file_and_problem(bad_files, case):
    path, pattern = bad_files[case]
    with pytest.raises(DataError) as info:
        load_audio(path, sample_rate_hz=SR, duration_s=CFG.duration_s, checks=ClipChecks())
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert re.search(pattern, message), message


def test_checks_are_optional_and_adjustable(bad_files):
    # without checks, silence, short and long clips load (padded / cropped): the library default of load_audio
    for case in ("digital_silence", "far_shorter", "far_longer"):
        assert load_audio(bad_files[case][0], sample_rate_hz=SR, duration_s=1.0).shape == (SR,)
    lenient = ClipChecks(min_duration_fraction=None, max_duration_factor=None, reject_silence=False)
    assert load_audio(bad_files["far_longer"][0], sample_rate_hz=SR, duration_s=1.0, checks=lenient).shape == (SR,)


def test_probe_audio_reads_headers_only(bad_files, good_files):
    assert probe_audio(good_files[0]) is None
    assert "not found" in probe_audio(bad_files["missing"][0])
    assert "unsupported codec" in probe_audio(bad_files["unsupported_codec"][0])
    assert "truncated" in probe_audio(bad_files["truncated_wav"][0])
    assert "0 samples" in probe_audio(bad_files["no_samples"][0])
    assert "cannot read as audio" in probe_audio(bad_files["not_audio"][0])


@pytest.mark.parametrize(
    "case",
    ["missing", "zero_bytes", "no_samples", "truncated_wav", "not_audio", "unsupported_codec", "unsupported_format"],
)
def test_a_bad_file_gets_one_diagnosis_wherever_it_is_opened(bad_files, case):
    """Data import (probe_audio), features (load_audio) and detection (audio_info, stream_audio) use the same words."""
    path, pattern = bad_files[case]
    problems = [probe_audio(path)]
    for read in (
        lambda: load_audio(path, sample_rate_hz=SR, duration_s=1.0),
        lambda: audio_info(path),
        lambda: list(stream_audio(path, sample_rate_hz=SR)),
    ):
        with pytest.raises(AudioError) as info:
            read()
        assert str(info.value) == f"{path}: {info.value.problem}"
        problems.append(info.value.problem)
    assert len(set(problems)) == 1 and re.search(pattern, problems[0]), problems
    copy = pickle.loads(pickle.dumps(info.value))  # feature workers send it to the parent
    assert (type(copy), copy.path, copy.problem, str(copy)) == (AudioError, str(path), problems[0], str(info.value))


def test_streaming_a_truncated_flac_fails_as_loading_it_does(bad_files):
    # libsndfile decodes a FLAC cut in half up to the cut without an error: detection must not score half a file
    path, _ = bad_files["truncated_flac"]
    with pytest.raises(AudioError) as loaded:
        load_audio(path, sample_rate_hz=SR, duration_s=None)
    with pytest.raises(AudioError) as streamed:
        list(stream_audio(path, sample_rate_hz=SR))
    assert streamed.value.problem == loaded.value.problem and "truncated" in streamed.value.problem


def test_a_flac_cut_after_its_first_blocks_fails_with_the_time(tmp_path):
    # the first 10 s blocks decode, so detection has scored them when the cut is reached: it stops (or, with
    # --skip-bad, skips the file) with the time instead of scoring part of the file as if it were all of it
    sf.write(tmp_path / "long.flac", noise(30.0), SR)
    raw = (tmp_path / "long.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(AudioError, match=r"(cannot read as audio after 1\d\.\d s: corrupt or truncated|truncated file)"):
        list(stream_audio(tmp_path / "cut.flac", sample_rate_hz=SR))


def test_features_skip_every_bad_case_and_keep_the_rest(bad_files, good_files, tmp_path):
    bad = [path for path, _ in bad_files.values()]
    paths = [good_files[0], *bad[:6], good_files[1], *bad[6:], good_files[2], good_files[3]]
    store = compute_features(paths, config=CFG, cache_dir=tmp_path / "c", shard_size=5, strict=False)
    assert len(store) == len(paths)
    skipped = {Path(s.path).name: s for s in store.skipped}
    assert len(skipped) == len(bad_files)
    for name, (path, pattern) in bad_files.items():
        item = skipped[path.name]
        assert paths[item.index] == path, name
        assert re.search(pattern, item.problem), (name, item.problem)
        assert not item.problem.startswith(str(path))  # path is its own column
    good_idx = usable_indices(store)
    assert [paths[i] for i in good_idx] == good_files
    # good clips are exactly what a direct computation gives; skipped ones are the log floor
    waves = np.stack([load_audio(p, sample_rate_hz=SR, duration_s=1.0) for p in good_files])
    expected = LogMel(CFG)(torch.from_numpy(waves)).numpy()
    np.testing.assert_allclose(store[good_idx].astype(np.float32), expected, atol=0.02, rtol=2e-3)
    assert (store[skipped["notes.wav"].index] == np.float16(np.log(CFG.log_floor))).all()
    # usable_indices keeps order and filters a given selection
    assert usable_indices(store, [len(paths) - 1, 1, 0]).tolist() == [len(paths) - 1, 0]

    # the list survives a reopen and a cache hit; strict refuses a cache with skipped clips
    assert [s.path for s in FeatureStore(store.directory).skipped] == [s.path for s in store.skipped]
    again = compute_features(paths, config=CFG, cache_dir=tmp_path / "c", shard_size=5, strict=False)
    assert again.directory == store.directory and len(again.skipped) == len(bad_files)
    existing = [p for p in paths if p.exists()]
    compute_features(existing, config=CFG, cache_dir=tmp_path / "c", shard_size=5, strict=False)
    with pytest.raises(DataError, match=r"cached features of \d+ bad clip"):
        compute_features(existing, config=CFG, cache_dir=tmp_path / "c", shard_size=5, strict=True)

    # skipped.csv round trip
    listed = write_skipped(store.skipped, tmp_path / "skipped.csv")
    back = read_skipped(listed)
    assert [(s.path, s.problem) for s in back] == [(s.path, s.problem) for s in store.skipped]
    assert listed.read_text().splitlines()[0] == "path,problem,source"


@pytest.mark.parametrize("case", ["missing", "not_audio", "digital_silence", "unsupported_codec"])
def test_strict_stops_with_the_file_and_problem(bad_files, good_files, tmp_path, case):
    path, pattern = bad_files[case]
    with pytest.raises(DataError) as info:
        compute_features([*good_files, path], config=CFG, cache_dir=tmp_path / "c", shard_size=2, strict=True)
    assert path.name in str(info.value) and re.search(pattern, str(info.value))


def test_pool_workers_gather_skipped_clips(bad_files, good_files, tmp_path):
    paths = [*good_files, bad_files["not_audio"][0], bad_files["nan"][0], *good_files]
    store = compute_features(paths, config=CFG, cache_dir=tmp_path / "c", shard_size=3, workers=2, strict=False)
    assert [s.index for s in store.skipped] == [4, 5]
    assert (store.directory / "shard_00001.skipped.json").is_file()
    serial = compute_features(paths, config=CFG, cache_dir=tmp_path / "s", shard_size=3, workers=1, strict=False)
    np.testing.assert_array_equal(store[np.arange(len(paths))], serial[np.arange(len(paths))])


# ----------------------------------------------------------------------------------------------------------------------
# Manifest-level problems: unknown label, duplicated rows, missing files, a class without clips in a split


def test_screen_rows_duplicates_conflicts_unknown_labels_missing(good_files, tmp_path):
    a, b, c, d = good_files
    rows = [
        ManifestRow(a, "dog"),
        ManifestRow(b, ""),
        ManifestRow(a, "dog", split="train"),  # duplicate of row 1
        ManifestRow(c, "dog"),
        ManifestRow(c, "gun"),  # conflicting labels: both rows of c go
        ManifestRow(d, "cat"),  # unknown label
        ManifestRow(tmp_path / "gone.wav", "gun"),  # missing file
    ]
    kept, skipped = screen_rows(rows, classes=["dog", "baby", "gun"], source="m.csv")
    assert kept == [rows[0], rows[1]]
    problems = {(Path(s.path).name, s.source): s.problem for s in skipped}
    assert problems[(a.name, "m.csv:4")] == "duplicate row (first listed at m.csv:2)"
    assert "conflicting labels 'dog', 'gun'" in problems[(c.name, "m.csv:5")]
    assert "conflicting labels" in problems[(c.name, "m.csv:6")]
    assert problems[(d.name, "m.csv:7")].startswith("unknown label 'cat' (expected dog, baby, gun")
    assert problems[("gone.wav", "m.csv:8")] == "audio file not found"
    with pytest.raises(DataError, match=r"5 bad clips: .*duplicate row"):
        screen_rows(rows, classes=["dog", "baby", "gun"], strict=True)


def test_class_without_clips_in_a_split_is_named(good_files):
    rows = [ManifestRow(good_files[0], label, split=split) for split in ("train", "val", "test") for label in
            ("dog", "")] + [ManifestRow(good_files[1], "gun", split="train")]  # fmt: skip
    with pytest.raises(DataError, match=r"no clips of val/gun, test/gun: every class needs clips in every split"):
        check_split_coverage(rows, ["dog", "gun"])
    check_split_coverage(rows, ["dog"])


def test_cli_manifest_import_lists_problems_and_strict_stops(bad_files, good_files, tmp_path, capsys):
    manifest = tmp_path / "hand.csv"
    lines = ["path,label,split,group"]
    lines += [f"{good_files[0]},dog,,", f"{good_files[1]},,,", f"{good_files[0]},dog,,"]  # duplicate
    lines += [f"{good_files[2]},cat,,", f"{bad_files['missing'][0]},gun,,", f"{bad_files['not_audio'][0]},gun,,"]
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "clean.csv"
    argv = ["data", "import", "manifest", str(manifest), "--out", str(out), "--classes", "dog,baby,gun"]
    assert main([*argv, "--check-audio"]) == 0
    rows = read_manifest(out)
    assert [(r.path.name, r.label) for r in rows] == [(good_files[0].name, "dog"), (good_files[1].name, "")]
    skipped = read_skipped(tmp_path / "clean.skipped.csv")
    assert sorted(Path(s.path).name for s in skipped) == sorted(
        [good_files[0].name, good_files[2].name, "missing.wav", "notes.wav"]
    )
    printed = capsys.readouterr().out
    assert "2 clips (background 1, dog 1)" in printed and "4 skipped" in printed

    assert main([*argv, "--strict"]) == 2
    err = capsys.readouterr().err
    assert f"thce: error: {manifest}: 3 bad clips: " in err and "duplicate row" in err


# ----------------------------------------------------------------------------------------------------------------------
# Resume after a kill: a subprocess computing features is killed with SIGKILL mid-run; the rerun computes only the
# shards that were not finished.

_KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from thce.audio import LogMelConfig
    from thce.data.features import compute_features

    paths = [Path(p) for p in sys.argv[2:]]
    cfg = LogMelConfig(duration_s=1.0, n_mels=16, sample_rate_hz=8000, n_fft=256)

    def slow(_desc, done, total):  # slow enough for the parent to kill it between and during shards
        time.sleep(0.3)

    compute_features(paths, config=cfg, cache_dir=sys.argv[1], shard_size=2, workers=1, progress=slow)
    """
)


def test_resume_after_sigkill_recomputes_only_missing_shards(good_files, tmp_path, monkeypatch):
    paths = [good_files[i % 4] for i in range(24)]  # 12 shards
    script = tmp_path / "run.py"
    script.write_text(_KILLED_RUN)
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, str(script), str(cache), *map(str, paths)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = list(cache.glob("*/shard_*.npy"))
            if len(done) >= 3 or proc.poll() is not None:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    (directory,) = cache.iterdir()
    finished = sorted(p.name for p in directory.glob("shard_*.npy"))
    assert 3 <= len(finished) < 12
    with pytest.raises(DataError, match="incomplete"):
        FeatureStore(directory)
    # a temporary file the kill left behind is cleaned up once stale, never used as a shard
    leftover = directory / ".shard_00011.npy.abc.tmp"
    leftover.write_bytes(b"\x93NUMPY partial")
    os.utime(leftover, (time.time() - 2 * features.STALE_TEMPORARY_S,) * 2)

    computed: list[int] = []
    original = features._compute_shard

    def counting(shard_paths, job, batch_size):
        computed.append(len(shard_paths))
        return original(shard_paths, job, batch_size)

    monkeypatch.setattr(features, "_compute_shard", counting)
    store = compute_features(paths, config=CFG, cache_dir=cache, shard_size=2, workers=1)
    assert len(computed) == 12 - len(finished)
    assert not leftover.exists()
    assert store.directory == directory and len(store) == 24
    fresh = compute_features(paths, config=CFG, cache_dir=tmp_path / "fresh", shard_size=2, workers=1)
    np.testing.assert_array_equal(store[np.arange(24)], fresh[np.arange(24)])
    assert shard_name(0) in finished
