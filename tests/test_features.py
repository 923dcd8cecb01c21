"""data/features.py: cache key, hit, resume, atomic shards, worker pool, FeatureStore indexing, Normaliser."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from thce.audio import LogMel, LogMelConfig, load_audio
from thce.data import feature_pool, features
from thce.data.feature_store import FeatureStore, shard_name
from thce.data.features import cache_key, compute_features
from thce.data.normaliser import Normaliser
from thce.errors import DataError
from tests.conftest import load_benchmark

CFG = LogMelConfig(duration_s=0.5, n_mels=16, sample_rate_hz=8000, n_fft=256)


@pytest.fixture()
def wavs(tmp_path):
    """Seven short WAVs of different tones, lengths and rates."""
    rng = np.random.default_rng(1)
    paths = []
    for i in range(7):
        sr = 8000 if i % 3 else 16000
        n = int(sr * (0.3 + 0.1 * i))
        t = np.arange(n) / sr
        x = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.05 * rng.standard_normal(n)
        path = tmp_path / "audio" / f"clip{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, x.astype(np.float32), sr)
        paths.append(path)
    return paths


class ShardCounter:
    """Wraps features._compute_shard and records the first path of each computed shard."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        original = features._compute_shard

        def counting(paths, extractor, batch_size):
            self.calls.append(paths[0].name)
            return original(paths, extractor, batch_size)

        monkeypatch.setattr(features, "_compute_shard", counting)


def direct(paths, cfg=CFG) -> np.ndarray:
    waves = np.stack([load_audio(p, sample_rate_hz=cfg.sample_rate_hz, duration_s=cfg.duration_s) for p in paths])
    return LogMel(cfg)(torch.from_numpy(waves)).numpy()


def test_store_equals_direct_computation(wavs, tmp_path):
    store = compute_features(wavs, config=CFG, cache_dir=tmp_path / "cache", shard_size=3, batch_size=2)
    assert len(store) == 7
    assert store.shape == (7, CFG.num_frames, CFG.n_mels)
    assert store.shard_sizes == [3, 3, 1]
    expected = direct(wavs)
    np.testing.assert_allclose(store[np.arange(7)].astype(np.float32), expected, atol=0.02, rtol=2e-3)
    one = store[4]
    assert one.shape == (CFG.num_frames, CFG.n_mels) and one.dtype == np.float16
    np.testing.assert_array_equal(store[-3], one)
    picked = store[[6, 0, 4, 4]]
    assert picked.shape == (4, CFG.num_frames, CFG.n_mels) and picked.dtype == np.float16
    np.testing.assert_array_equal(picked[0], store[6])
    np.testing.assert_array_equal(picked[2], one)
    np.testing.assert_array_equal(store[1:3], store[[1, 2]])
    np.testing.assert_array_equal(store[np.arange(7) % 2 == 0], store[[0, 2, 4, 6]])
    assert store.paths == [p.resolve() for p in wavs]
    with pytest.raises(IndexError):
        store[7]
    # pickles without the memmaps and reopens lazily
    clone = pickle.loads(pickle.dumps(store))
    assert len(pickle.dumps(store)) < 20000
    np.testing.assert_array_equal(clone[5], store[5])


def test_cache_hit_computes_nothing(wavs, tmp_path, monkeypatch):
    counter = ShardCounter(monkeypatch)
    seen = []
    def record(_desc, done, total):
        seen.append((done, total))

    first = compute_features(wavs, config=CFG, cache_dir=tmp_path / "c", shard_size=3, progress=record)
    assert len(counter.calls) == 3
    assert seen == [(0, 7), (3, 7), (6, 7), (7, 7)]
    seen.clear()
    second = compute_features(wavs, config=CFG, cache_dir=tmp_path / "c", shard_size=3, progress=record)
    assert len(counter.calls) == 3, "second call must not compute"
    assert seen == [(7, 7)]
    assert second.directory == first.directory
    assert len(list((tmp_path / "c").iterdir())) == 1


def test_key_changes_with_config_files_and_content(wavs):
    base = cache_key(wavs, config=CFG)
    assert cache_key(list(wavs), config=CFG) == base
    assert cache_key(wavs, config=LogMelConfig(duration_s=0.5, n_mels=8, sample_rate_hz=8000, n_fft=256)) != base
    assert cache_key(wavs[:-1], config=CFG) != base
    assert cache_key(wavs[::-1], config=CFG) != base
    assert cache_key(wavs, config=CFG, shard_size=2) != base
    stat = wavs[0].stat()
    os.utime(wavs[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache_key(wavs, config=CFG) != base


def test_resume_recomputes_only_missing_shard(wavs, tmp_path, monkeypatch):
    store = compute_features(wavs, config=CFG, cache_dir=tmp_path / "c", shard_size=3)
    before = store[np.arange(7)]
    (store.directory / shard_name(1)).unlink()
    with pytest.raises(DataError, match="shard_00001.npy"):
        FeatureStore(store.directory)[3]
    counter = ShardCounter(monkeypatch)
    again = compute_features(wavs, config=CFG, cache_dir=tmp_path / "c", shard_size=3)
    assert counter.calls == ["clip3.wav"]
    np.testing.assert_array_equal(again[np.arange(7)], before)


def test_shard_write_is_atomic(wavs, tmp_path, monkeypatch):
    real_save = np.save
    state = {"n": 0}

    def failing_save(handle, array, *args, **kwargs):
        state["n"] += 1
        if state["n"] == 2:  # second shard: write part of it, then die
            handle.write(b"\x93NUMPY partial")
            raise RuntimeError("killed mid-write")
        return real_save(handle, array, *args, **kwargs)

    monkeypatch.setattr(features.np, "save", failing_save)
    with pytest.raises(RuntimeError, match="killed"):
        compute_features(wavs, config=CFG, cache_dir=tmp_path / "c", shard_size=3)
    (directory,) = (tmp_path / "c").iterdir()
    names = sorted(p.name for p in directory.iterdir())
    assert names == ["meta.json", shard_name(0)], names  # no partial shard, no temporary file
    with pytest.raises(DataError, match="incomplete"):
        FeatureStore(directory)

    monkeypatch.setattr(features.np, "save", real_save)
    counter = ShardCounter(monkeypatch)
    store = compute_features(wavs, config=CFG, cache_dir=tmp_path / "c", shard_size=3)
    assert counter.calls == ["clip3.wav", "clip6.wav"]
    assert len(store) == 7


def test_bad_file_raises_data_error_naming_it(wavs, tmp_path):
    bad = tmp_path / "audio" / "broken.wav"
    bad.write_text("not audio")
    with pytest.raises(DataError, match=r"broken\.wav"):
        compute_features([*wavs, bad], config=CFG, cache_dir=tmp_path / "c", shard_size=4)
    with pytest.raises(DataError, match=r"gone\.wav.*not found"):
        compute_features([*wavs, tmp_path / "gone.wav"], config=CFG, cache_dir=tmp_path / "c")


def test_worker_pool_writes_same_shards_and_propagates_errors(wavs, tmp_path):
    """Shards 0-2 are good, shard 3 holds a broken file.

    Shards are claimed in order, so shards 0-2 have started before shard 3 fails, and the pool finishes them.
    """
    serial = compute_features(wavs, config=CFG, cache_dir=tmp_path / "a", shard_size=2)
    bad = tmp_path / "audio" / "broken.wav"
    bad.write_text("not audio")
    seen = []
    with pytest.raises(DataError, match=r"broken\.wav"):
        compute_features(
            [*wavs, bad], config=CFG, cache_dir=tmp_path / "b", shard_size=2, workers=2,
            progress=lambda _desc, done, total: seen.append((done, total)),
        )
    assert seen[0] == (0, 8)
    (directory,) = (tmp_path / "b").iterdir()
    for k in range(3):
        pooled = np.load(directory / shard_name(k))
        np.testing.assert_array_equal(pooled, serial[[2 * k, 2 * k + 1]])
    assert not (directory / shard_name(3)).exists()
    assert sorted(p.name for p in directory.iterdir() if p.name.startswith(".")) == []  # no temporary files left


def shard_bytes(store: FeatureStore) -> dict[str, bytes]:
    """Every shard and skipped-clips file of a cache, by name."""
    return {p.name: p.read_bytes() for p in sorted(store.directory.glob("shard_*"))}


def test_output_is_byte_identical_for_any_worker_count(wavs, tmp_path, monkeypatch):
    torch.ones(1 << 22).mul_(2)  # a parallel (OpenMP) region in this process before the workers are forked
    bad = tmp_path / "audio" / "broken.wav"
    bad.write_text("not audio")
    paths = [*wavs, bad, *wavs]  # 15 clips, 8 shards; one skipped clip, so a .skipped.json too
    monkeypatch.setattr(features, "MIN_CLIPS_PER_WORKER", 1)  # workers=0 then uses every CPU on 15 clips
    monkeypatch.setattr(features, "MIN_CLIPS_PER_SPAWNED_WORKER", 1)
    threads = torch.get_num_threads()
    caches = {}
    for workers in (1, 0, 2, 3):
        store = compute_features(
            paths, config=CFG, cache_dir=tmp_path / f"w{workers}", shard_size=2, batch_size=1, workers=workers,
            strict=False,
        )  # fmt: skip
        assert [s.index for s in store.skipped] == [7]
        caches[workers] = shard_bytes(store)
    assert len(caches[1]) == 9
    for workers in (0, 2, 3):
        assert caches[workers] == caches[1], f"workers={workers} wrote different bytes"
    assert torch.get_num_threads() == threads, "this process's torch threads are restored"


@pytest.mark.skipif(feature_pool.start_method() != "fork", reason="the workers see this test's patches only when forked")
def test_every_process_computes_shards_and_progress_counts_each_once(wavs, tmp_path, monkeypatch):
    log_file = tmp_path / "pids.txt"
    original = features._compute_shard

    def slow(paths, job, batch_size):
        with open(log_file, "a") as handle:  # one short append per shard: atomic across processes
            handle.write(f"{os.getpid()}\n")
        time.sleep(0.2)  # long enough for the forked worker to start before this process has taken every shard
        return original(paths, job, batch_size)

    monkeypatch.setattr(features, "_compute_shard", slow)
    threads = torch.get_num_threads()
    seen = []
    store = compute_features(
        wavs, config=CFG, cache_dir=tmp_path / "c", shard_size=1, workers=2,
        progress=lambda _desc, done, total: seen.append(done),
    )  # fmt: skip
    pids = log_file.read_text().split()
    assert len(pids) == 7 and len(set(pids)) == 2 and str(os.getpid()) in pids
    assert seen == list(range(8)), "each shard reported once, counts increasing"
    assert torch.get_num_threads() == threads, "this process's torch threads are restored"
    assert not multiprocessing.active_children()
    serial = compute_features(wavs, config=CFG, cache_dir=tmp_path / "s", shard_size=1, workers=1)
    assert shard_bytes(store) == shard_bytes(serial)


@pytest.mark.skipif(feature_pool.start_method() != "fork", reason="the workers see this test's patches only when forked")
def test_a_worker_that_dies_is_reported_and_the_rerun_finishes(wavs, tmp_path, monkeypatch):
    parent = os.getpid()
    original = features._compute_shard

    def dying(paths, job, batch_size):
        if os.getpid() != parent:
            os._exit(3)  # a crash (segfault, OOM kill) without a Python exception
        time.sleep(0.3)  # leaves shards for the worker to claim
        return original(paths, job, batch_size)

    monkeypatch.setattr(features, "_compute_shard", dying)
    with pytest.raises(RuntimeError, match=r"feature worker died \(exit code 3\) computing shard_\d+\.npy"):
        compute_features(wavs, config=CFG, cache_dir=tmp_path / "c", shard_size=1, workers=2)
    assert not multiprocessing.active_children()
    monkeypatch.setattr(features, "_compute_shard", original)
    store = compute_features(wavs, config=CFG, cache_dir=tmp_path / "c", shard_size=1, workers=2)
    assert len(store) == 7
    assert not list(store.directory.glob(".*.tmp"))


def test_an_interrupt_stops_the_workers(wavs, tmp_path):
    def interrupt(_desc, done, total):
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compute_features(wavs, config=CFG, cache_dir=tmp_path / "c", shard_size=1, workers=2, progress=interrupt)
    assert not multiprocessing.active_children()
    store = compute_features(wavs, config=CFG, cache_dir=tmp_path / "c", shard_size=1, workers=2)  # resumes
    serial = compute_features(wavs, config=CFG, cache_dir=tmp_path / "s", shard_size=1, workers=1)
    assert shard_bytes(store) == shard_bytes(serial)


_FORK_AFTER_OPENMP = """
import sys
from pathlib import Path
import torch
from thce.audio import LogMelConfig
from thce.data.features import compute_features

torch.set_num_threads(2)
torch.ones(1 << 22).mul_(2)  # the parent's OpenMP thread pool is running when the workers are forked
cfg = LogMelConfig(duration_s=0.5, n_mels=16, sample_rate_hz=8000, n_fft=256)
paths = sys.argv[2:]
pooled = compute_features(paths, config=cfg, cache_dir=Path(sys.argv[1]) / "p", shard_size=1, workers=3)
serial = compute_features(paths, config=cfg, cache_dir=Path(sys.argv[1]) / "s", shard_size=1, workers=1)
same = all((pooled.directory / p.name).read_bytes() == p.read_bytes() for p in serial.directory.glob("shard_*"))
assert torch.get_num_threads() == 2
torch.ones(1 << 22).mul_(2)
print("same" if same else "different")
"""


def test_workers_forked_after_torch_used_threads_do_not_hang(wavs, tmp_path):
    """In a fresh process whose torch ran a 2-thread parallel region; a hang fails after the timeout."""
    script = tmp_path / "run.py"
    script.write_text(_FORK_AFTER_OPENMP)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "cache"), *map(str, wavs)], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "same"


def test_normaliser_fit_matches_numpy(wavs, tmp_path):
    store = compute_features(wavs, config=CFG, cache_dir=tmp_path / "c", shard_size=3)
    train = np.array([5, 0, 2, 3, 6])
    norm = Normaliser.fit(store, train, chunk=2)  # several chunks spanning shards
    frames = store[np.sort(train)].astype(np.float64).reshape(-1, CFG.n_mels)
    np.testing.assert_allclose(norm.mean, frames.mean(axis=0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(norm.std, frames.std(axis=0), rtol=1e-8)

    out = norm(store[train])
    assert out.dtype == np.float32 and out.shape == (5, CFG.num_frames, CFG.n_mels)
    flat = out.astype(np.float64).reshape(-1, CFG.n_mels)
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(flat.std(axis=0), 1.0, atol=1e-4)
    assert norm(store[1]).shape == (CFG.num_frames, CFG.n_mels)

    again = Normaliser.from_dict(norm.to_dict())
    np.testing.assert_array_equal(again.mean, norm.mean)
    np.testing.assert_array_equal(again.std, norm.std)
    path = norm.save(tmp_path / "norm.json")
    np.testing.assert_array_equal(Normaliser.load(path).std, norm.std)
    with pytest.raises(DataError, match="unknown"):
        Normaliser.from_dict({"mean": [0.0], "std": [1.0], "var": [1.0]})
    with pytest.raises(DataError, match="no training clips"):
        Normaliser.fit(store, [])


def test_normaliser_constant_band_is_safe():
    x = np.zeros((4, 10, 3), dtype=np.float16)
    x[..., 1] = np.arange(10, dtype=np.float16)
    norm = Normaliser.fit(x, np.arange(4), chunk=3)
    assert norm.std[0] == Normaliser.min_std
    assert np.isfinite(norm(x)).all()


def test_memory_benchmark_runs_tiny():
    module = load_benchmark("memory")
    result = module.main(["--sizes", "8", "16"])
    assert set(result["peak_rss_mb"]) == {8, 16} and result["rss_ratio"] > 0
