"""data/features.py: cache key, hit, resume, atomic shards, worker pool, FeatureStore indexing, Normaliser."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from thce.audio import LogMel, LogMelConfig, load_audio
from thce.data import features
from thce.data.features import FeatureStore, Normaliser, cache_key, compute_features, shard_name
from thce.errors import DataError

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
    def record(done, total):
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
    """One pool run (spawning costs seconds): shards 0-2 are good, shard 3 holds a broken file.

    Shards are handed out in order, so shards 0-2 have started before shard 3 fails, and the pool finishes them.
    """
    serial = compute_features(wavs, config=CFG, cache_dir=tmp_path / "a", shard_size=2)
    bad = tmp_path / "audio" / "broken.wav"
    bad.write_text("not audio")
    seen = []
    with pytest.raises(DataError, match=r"broken\.wav"):
        compute_features(
            [*wavs, bad], config=CFG, cache_dir=tmp_path / "b", shard_size=2, workers=2,
            progress=lambda done, total: seen.append((done, total)),
        )
    assert seen[0] == (0, 8)
    (directory,) = (tmp_path / "b").iterdir()
    for k in range(3):
        pooled = np.load(directory / shard_name(k))
        np.testing.assert_array_equal(pooled, serial[[2 * k, 2 * k + 1]])
    assert not (directory / shard_name(3)).exists()
    assert sorted(p.name for p in directory.iterdir() if p.name.startswith(".")) == []  # no temporary files left


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
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("memory_bench", Path(__file__).parents[1] / "benchmarks" / "memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--sizes", "8", "16"])
    assert set(result["peak_rss_mb"]) == {8, 16} and result["rss_ratio"] > 0
