"""Feature cache: log-mel features of many clips as sharded float16 memmaps, atomic and resumable.

Layout of one cache (``cache_dir/<key>/``)::

    meta.json          {"format", "key", "config", "shard_size", "num_clips", "shards": [sizes], "files": [...],
                        "complete"}
    shard_00000.npy    float16 (n_in_shard, num_frames, n_mels), clips [0, shard_size)
    shard_00001.npy    clips [shard_size, 2 * shard_size) ...

``key`` is a short sha256 of the :class:`~thce.audio.LogMelConfig`, the shard size and the ordered list of resolved
file paths with their size and mtime: change any of them and a new cache is built beside the old one. Every shard is
written to a temporary file and renamed into place, so a killed run loses at most the shards in progress, and a rerun
computes only the missing shards. Several processes may fill one cache at the same time (e.g. the ranks of a
``torchrun`` job): they duplicate work but never corrupt it, because the content of a shard is deterministic.

:class:`FeatureStore` reads a finished cache through ``np.load(mmap_mode="r")``: memory stays flat in the number of
clips. :class:`Normaliser` holds per-mel-band mean and standard deviation fitted on the training clips only (the paper:
"normalized using the mean and variance of the training data"), computed streaming in float64.

float16 keeps a log-mel value (about -23 .. +20) to within 0.016 (10-bit mantissa), far below the spread of the
features; it halves disk use and I/O.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from thce.audio import LogMel, LogMelConfig, load_audio
from thce.errors import DataError
from thce.io import atomic_write, write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_NAME = "meta.json"
FEATURE_DTYPE = np.float16
_F16_MAX = float(np.finfo(np.float16).max)

ProgressFn = Callable[[int, int], None]


def shard_name(index: int) -> str:
    """File name of shard ``index`` (``shard_00000.npy``)."""
    return f"shard_{index:05d}.npy"


@dataclass(frozen=True)
class FeatureCacheInfo:
    """What identifies a cache: the files (resolved path, size in bytes, mtime in ns), the config and the shard size."""

    paths: tuple[Path, ...]
    sizes_bytes: tuple[int, ...]
    mtimes_ns: tuple[int, ...]
    config: LogMelConfig
    shard_size: int

    @classmethod
    def from_paths(
        cls, paths: Sequence[str | os.PathLike], *, config: LogMelConfig, shard_size: int
    ) -> FeatureCacheInfo:
        """Stat every file. Raises :class:`DataError` naming the first missing file."""
        resolved, sizes, mtimes = [], [], []
        for raw in paths:
            path = Path(raw).resolve()
            try:
                stat = path.stat()
            except FileNotFoundError:
                raise DataError(f"{raw}: audio file not found") from None
            except OSError as exc:
                raise DataError(f"{raw}: cannot stat audio file ({exc})") from exc
            resolved.append(path)
            sizes.append(int(stat.st_size))
            mtimes.append(int(stat.st_mtime_ns))
        return cls(tuple(resolved), tuple(sizes), tuple(mtimes), config, shard_size)

    @property
    def num_clips(self) -> int:
        return len(self.paths)

    @property
    def shard_sizes(self) -> list[int]:
        n, size = self.num_clips, self.shard_size
        return [min(size, n - start) for start in range(0, n, size)]

    def files_json(self) -> list[dict[str, Any]]:
        return [
            {"path": str(p), "size_bytes": s, "mtime_ns": m}
            for p, s, m in zip(self.paths, self.sizes_bytes, self.mtimes_ns)
        ]

    @property
    def key(self) -> str:
        """16 hex digits of sha256 over the format version, config, shard size and file list."""
        payload = {
            "format": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "shard_size": self.shard_size,
            "files": [[str(p), s, m] for p, s, m in zip(self.paths, self.sizes_bytes, self.mtimes_ns)],
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]

    def meta(self, *, complete: bool) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "key": self.key,
            "config": self.config.to_dict(),
            "shard_size": self.shard_size,
            "num_clips": self.num_clips,
            "shards": self.shard_sizes,
            "complete": complete,
            "files": self.files_json(),
        }


def cache_key(paths: Sequence[str | os.PathLike], *, config: LogMelConfig, shard_size: int = 256) -> str:
    """The directory name :func:`compute_features` uses for these files and config."""
    return FeatureCacheInfo.from_paths(paths, config=config, shard_size=shard_size).key


def compute_features(
    paths: Sequence[str | os.PathLike],
    *,
    config: LogMelConfig,
    cache_dir: str | os.PathLike,
    shard_size: int = 256,
    workers: int = 1,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> FeatureStore:
    """Compute (or reuse) log-mel features of ``paths`` in ``cache_dir/<key>/`` and open them.

    Args:
        paths: audio files, in the order the store will index them.
        config: front end; audio is read with ``load_audio(duration_s=config.duration_s)``.
        cache_dir: parent folder of caches; created if missing.
        shard_size: clips per shard file.
        workers: processes computing shards in parallel (spawned; each uses one torch thread). 1: in this process.
        batch_size: clips per :class:`~thce.audio.LogMel` call (bounds memory: ~ 3 MB per 10 s clip).
        progress: called as ``progress(clips_done, clips_total)``, first with the clips already cached, then after
            each shard.

    Returns:
        :class:`FeatureStore` over ``len(paths)`` clips, each ``(config.num_frames, config.n_mels)`` float16.

    Raises:
        DataError: a file is missing or not readable audio (message names it).
        ValueError: ``shard_size``, ``workers`` or ``batch_size`` < 1.
    """
    for name, value in (("shard_size", shard_size), ("workers", workers), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"compute_features: {name} must be >= 1, got {value}")
    info = FeatureCacheInfo.from_paths(paths, config=config, shard_size=shard_size)
    directory = Path(cache_dir) / info.key
    directory.mkdir(parents=True, exist_ok=True)
    total = info.num_clips
    meta_path = directory / META_NAME
    sizes = info.shard_sizes
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
    shard_shape = (config.num_frames, config.n_mels)
    todo = [i for i, n in enumerate(sizes) if not _shard_ok(directory / shard_name(i), (n, *shard_shape))]
    if not todo and _meta_complete(meta_path):
        log.info("feature cache hit: %s (%d clips)", directory, total)
        if progress is not None:
            progress(total, total)
        return FeatureStore(directory)

    write_json(meta_path, info.meta(complete=False))
    done = total - sum(sizes[i] for i in todo)
    log.info(
        "feature cache %s: %d clips in %d shards, %d to compute (%d workers)",
        directory, total, len(sizes), len(todo), workers,
    )
    if progress is not None:
        progress(done, total)
    tasks = [(info.paths[starts[i] : starts[i + 1]], directory / shard_name(i)) for i in todo]
    if workers == 1 or len(tasks) <= 1:
        extractor = LogMel(config).eval()
        for shard_paths, out_path in tasks:
            _save_shard(out_path, _compute_shard(shard_paths, extractor, batch_size))
            done += len(shard_paths)
            if progress is not None:
                progress(done, total)
    else:
        done = _run_pool(
            tasks, config=config, workers=workers, batch_size=batch_size, done=done, total=total, progress=progress
        )
    write_json(meta_path, info.meta(complete=True))
    return FeatureStore(directory)


def _run_pool(
    tasks: list[tuple[Sequence[Path], Path]],
    *,
    config: LogMelConfig,
    workers: int,
    batch_size: int,
    done: int,
    total: int,
    progress: ProgressFn | None,
) -> int:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=context, initializer=_init_worker, initargs=(config.to_dict(),)
    ) as pool:
        futures: dict[Future, int] = {
            pool.submit(_worker_shard, list(paths), out_path, batch_size): len(paths) for paths, out_path in tasks
        }
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in finished:
                    future.result()  # re-raises a worker's DataError here
                    done += futures[future]
                    if progress is not None:
                        progress(done, total)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return done


_WORKER_EXTRACTOR: LogMel | None = None


def _init_worker(config_dict: dict[str, Any]) -> None:
    global _WORKER_EXTRACTOR
    torch.set_num_threads(1)
    _WORKER_EXTRACTOR = LogMel(LogMelConfig.from_dict(config_dict)).eval()


def _worker_shard(paths: list[Path], out_path: Path, batch_size: int) -> int:
    assert _WORKER_EXTRACTOR is not None, "worker not initialised"
    _save_shard(out_path, _compute_shard(paths, _WORKER_EXTRACTOR, batch_size))
    return len(paths)


def _compute_shard(paths: Sequence[Path], extractor: LogMel, batch_size: int) -> np.ndarray:
    """Features of ``paths``: float16 ``(len(paths), num_frames, n_mels)``."""
    cfg = extractor.config
    out = np.empty((len(paths), cfg.num_frames, cfg.n_mels), dtype=FEATURE_DTYPE)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        waves = np.stack([load_audio(p, sample_rate_hz=cfg.sample_rate_hz, duration_s=cfg.duration_s) for p in chunk])
        with torch.inference_mode():
            feats = extractor(torch.from_numpy(waves)).numpy()
        out[start : start + len(chunk)] = np.clip(feats, -_F16_MAX, _F16_MAX)
    return out


def _save_shard(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` atomically (temporary file beside ``path``, fsync, rename)."""
    with atomic_write(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def _shard_ok(path: Path, shape: tuple[int, ...]) -> bool:
    """True when ``path`` is a readable float16 ``.npy`` of ``shape`` (its header is read, not its data)."""
    if not path.is_file():
        return False
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        log.warning("feature cache: unreadable shard %s, recomputing it", path)
        return False
    ok = array.shape == shape and array.dtype == FEATURE_DTYPE
    if not ok:
        log.warning("feature cache: shard %s has shape %s %s, expected %s float16; recomputing it",
                    path, array.shape, array.dtype, shape)
    del array
    return ok


def _meta_complete(meta_path: Path) -> bool:
    try:
        return bool(json.loads(meta_path.read_text(encoding="utf-8")).get("complete"))
    except (OSError, ValueError):
        return False


class FeatureStore:
    """Read-only view of a finished feature cache, one lazily opened memmap per shard.

    ``store[i]`` -> float16 ``(num_frames, n_mels)``; ``store[indices]`` (int array, list, slice or bool mask) ->
    float16 ``(len(indices), num_frames, n_mels)`` in the order given. Only the requested clips are read. Pickling
    sends the folder name only (DataLoader workers reopen the shards).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / META_NAME
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{meta_path}: feature cache not found") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{meta_path}: unreadable feature cache metadata ({exc})") from exc
        if meta.get("format") != FORMAT_VERSION:
            raise DataError(f"{meta_path}: cache format {meta.get('format')!r}, this version reads {FORMAT_VERSION}")
        if not meta.get("complete"):
            raise DataError(f"{meta_path}: feature cache is incomplete; rerun compute_features to finish it")
        self.meta: dict[str, Any] = meta
        self.config = LogMelConfig.from_dict(meta["config"])
        self.shard_sizes: list[int] = [int(n) for n in meta["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(self.shard_sizes, dtype=np.int64)])
        for i in range(len(self.shard_sizes)):
            if not (self.directory / shard_name(i)).is_file():
                raise DataError(f"{self.directory / shard_name(i)}: shard missing; rerun compute_features")
        self._shards: dict[int, np.ndarray] = {}

    @property
    def key(self) -> str:
        return str(self.meta["key"])

    @property
    def paths(self) -> list[Path]:
        """The audio files, in store order."""
        return [Path(f["path"]) for f in self.meta["files"]]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(clips, num_frames, n_mels)``."""
        return (len(self), self.config.num_frames, self.config.n_mels)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.directory)!r}, shape={self.shape})"

    def _shard(self, index: int) -> np.ndarray:
        shard = self._shards.get(index)
        if shard is None:
            path = self.directory / shard_name(index)
            try:
                shard = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DataError(
                    f"{path}: unreadable feature shard ({exc}); delete it and rerun compute_features"
                ) from exc
            expected = (self.shard_sizes[index], *self.shape[1:])
            if shard.shape != expected:
                raise DataError(f"{path}: shard has shape {shard.shape}, expected {expected}")
            self._shards[index] = shard
        return shard

    def __getitem__(self, index: int | np.integer | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        n = len(self)
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -n <= i < n:
                raise IndexError(f"clip {i} out of range for a store of {n}")
            i %= n
            s = int(np.searchsorted(self._starts, i, side="right")) - 1
            return np.array(self._shard(s)[i - self._starts[s]])
        if isinstance(index, slice):
            idx = np.arange(n)[index]
        else:
            idx = np.asarray(index)
            if idx.dtype == bool:
                if idx.shape != (n,):
                    raise IndexError(f"boolean mask of shape {idx.shape} for a store of {n}")
                idx = np.flatnonzero(idx)
            elif idx.size == 0:
                idx = idx.astype(np.int64)
            elif not np.issubdtype(idx.dtype, np.integer):
                raise IndexError(f"FeatureStore indices must be integers, got dtype {idx.dtype}")
        idx = idx.reshape(-1).astype(np.int64)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for a store of {n}")
        idx = np.where(idx < 0, idx + n, idx)
        out = np.empty((idx.size, *self.shape[1:]), dtype=FEATURE_DTYPE)
        shard_of = np.searchsorted(self._starts, idx, side="right") - 1
        for s in np.unique(shard_of):
            where = np.flatnonzero(shard_of == s)
            local = idx[where] - self._starts[s]
            order = np.argsort(local, kind="stable")  # read each shard front to back
            out[where[order]] = self._shard(int(s))[local[order]]
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_shards"] = {}
        return state


@dataclass
class Normaliser:
    """Per-mel-band standardisation: ``(x - mean) / std``, statistics from the training clips.

    Attributes:
        mean: float64 ``(n_mels,)``, mean log-mel energy of each band over all training frames.
        std: float64 ``(n_mels,)``, population standard deviation of each band (floored at ``min_std``).
    """

    mean: np.ndarray
    std: np.ndarray

    #: A band with (near) constant energy, e.g. an empty filter, is divided by this instead of ~0.
    min_std: ClassVar[float] = 1e-5

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(self.std, dtype=np.float64).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise DataError(f"Normaliser: mean has {self.mean.size} bands but std has {self.std.size}")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.std).all()) or (self.std <= 0).any():
            raise DataError("Normaliser: mean and std must be finite and std positive")

    @classmethod
    def fit(
        cls, store: FeatureStore | np.ndarray, indices: Sequence[int] | np.ndarray, *, chunk: int = 256
    ) -> Normaliser:
        """Mean and std per mel band over every frame of the clips ``store[indices]``, streaming ``chunk`` clips at a
        time in float64 (chunk statistics merged with Chan et al.'s parallel variance formula: no cancellation).

        Raises:
            DataError: ``indices`` is empty.
        """
        if chunk < 1:
            raise ValueError(f"Normaliser.fit: chunk must be >= 1, got {chunk}")
        idx = np.sort(np.asarray(indices, dtype=np.int64).reshape(-1))
        if idx.size == 0:
            raise DataError("Normaliser.fit: no training clips to compute statistics from")
        count = 0
        mean: np.ndarray | None = None
        m2: np.ndarray | None = None
        for start in range(0, idx.size, chunk):
            x = np.asarray(store[idx[start : start + chunk]], dtype=np.float64)
            x = x.reshape(-1, x.shape[-1])
            n_b = x.shape[0]
            mean_b = x.mean(axis=0)
            m2_b = np.square(x - mean_b).sum(axis=0)
            if mean is None or m2 is None:
                count, mean, m2 = n_b, mean_b, m2_b
                continue
            delta = mean_b - mean
            total = count + n_b
            mean = mean + delta * (n_b / total)
            m2 = m2 + m2_b + np.square(delta) * (count * n_b / total)
            count = total
        assert mean is not None and m2 is not None
        std = np.sqrt(m2 / count)
        return cls(mean=mean, std=np.maximum(std, cls.min_std))

    @property
    def n_mels(self) -> int:
        return int(self.mean.size)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Normalise features ``(..., frames, n_mels)`` (any float dtype) -> float32 of the same shape."""
        if x.shape[-1] != self.n_mels:
            raise ValueError(f"Normaliser fitted on {self.n_mels} mel bands, got features with {x.shape[-1]}")
        mean = self.mean.astype(np.float32)
        inv_std = (1.0 / self.std).astype(np.float32)
        return (np.asarray(x, dtype=np.float32) - mean) * inv_std

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normaliser:
        """Inverse of :meth:`to_dict`; raises :class:`DataError` on missing or unknown keys."""
        unknown = sorted(set(data) - {"mean", "std"})
        missing = sorted({"mean", "std"} - set(data))
        if unknown or missing:
            raise DataError(
                f"Normaliser: expected keys mean, std; missing {missing or 'none'}, unknown {unknown or 'none'}"
            )
        return cls(mean=np.asarray(data["mean"]), std=np.asarray(data["std"]))

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON (atomically)."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Normaliser:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path}: normalisation statistics not found") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable normalisation statistics ({exc})") from exc
        try:
            return cls.from_dict(data)
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from exc
