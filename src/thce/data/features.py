"""Feature cache: log-mel features of many clips as sharded float16 ``.npy`` files, atomic, resumable, parallel.

:func:`compute_features` fills a cache (layout in :mod:`thce.data.feature_store`) and opens it as a
:class:`~thce.data.feature_store.FeatureStore`. Its ``key`` is a short sha256 of the
:class:`~thce.audio.logmel.LogMelConfig`, the :class:`~thce.audio.read.ClipChecks`, the shard size and the ordered
list of resolved file paths with their size and mtime: change any of them and a new cache is built beside the old
one. Every shard is written to a temporary file and renamed into place (its ``.skipped.json`` first), so a killed
run loses at most the shards in progress, and a rerun computes only the missing shards. Several processes may fill
one cache at the same time (e.g. the ranks of a ``torchrun`` job): they duplicate work but never corrupt it, because
the content of a shard is deterministic. Shards are computed by this process and forked worker processes over all
cores when there is enough work (``workers=0``, the default; :mod:`thce.data.feature_pool`); every process computes
with one torch thread, so a shard's bytes do not depend on the number of workers.

Bad input does not stop a run unless asked to: with ``strict=False`` a clip that cannot be used (missing, empty,
truncated, not audio, unsupported codec, NaN/inf samples, digital silence, far too short or long: see
:func:`thce.audio.read.load_audio` and :class:`thce.audio.read.ClipChecks`) gets silence features (the log floor)
and is listed in :attr:`FeatureStore.skipped` with the problem, for the caller to leave out and report
(``skipped.csv``).

The training split's statistics are :class:`thce.data.normaliser.Normaliser`'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thce.audio.logmel import LogMel, LogMelConfig
from thce.audio.read import ClipChecks, load_audio
from thce.data.feature_pool import available_cpus, run_shards, start_method
from thce.data.feature_store import (
    FEATURE_DTYPE,
    FORMAT_VERSION,
    META_NAME,
    FeatureStore,
    shard_name,
    skipped_from_json,
    skipped_json,
    skipped_name,
)
from thce.data.manifest import Skipped, describe_skipped
from thce.errors import AudioError, DataError
from thce.io import atomic_write, write_json
from thce.progress import ProgressFn


log = logging.getLogger(__name__)

_F16_MAX = float(np.finfo(np.float16).max)
#: With ``workers=0``: clips per process below which another worker does not pay. A forked worker starts in about
#: 30 ms (the time of ~30 clips); one shard of the default size is the least a worker can take.
MIN_CLIPS_PER_WORKER = 256
#: The same where workers are spawned (see :func:`~thce.data.feature_pool.start_method`): each imports torch,
#: seconds, ~a thousand clips.
MIN_CLIPS_PER_SPAWNED_WORKER = 1024
DEFAULT_CHECKS = ClipChecks()
#: Age after which a temporary shard file is taken to be left by a killed run and deleted.
STALE_TEMPORARY_S = 3600.0

#: The description of :func:`compute_features`' progress calls.
PROGRESS = "log-mel features"
#: One shard to compute: its clips' paths, the index of its first clip, its file.
Task = tuple[Sequence[Path], int, Path]


@dataclass(frozen=True)
class FeatureCacheInfo:
    """What identifies a cache: the files (resolved path, size in bytes, mtime in ns; -1 for a missing file), the
    config, the clip checks and the shard size."""

    paths: tuple[Path, ...]
    sizes_bytes: tuple[int, ...]
    mtimes_ns: tuple[int, ...]
    config: LogMelConfig
    shard_size: int
    checks: ClipChecks | None = DEFAULT_CHECKS

    @classmethod
    def from_paths(
        cls,
        paths: Sequence[str | os.PathLike],
        *,
        config: LogMelConfig,
        shard_size: int,
        checks: ClipChecks | None = DEFAULT_CHECKS,
        strict: bool = True,
    ) -> FeatureCacheInfo:
        """Stat every file. ``strict``: raise :class:`DataError` naming the first missing file; otherwise a missing
        file gets size and mtime -1 (and is skipped when its shard is computed)."""
        resolved, sizes, mtimes = [], [], []
        for raw in paths:
            path = Path(raw).resolve()
            try:
                stat = path.stat()
                size, mtime = int(stat.st_size), int(stat.st_mtime_ns)
            except FileNotFoundError:
                if strict:
                    raise DataError(f"{raw}: audio file not found") from None
                size = mtime = -1
            except OSError as exc:
                if strict:
                    raise DataError(f"{raw}: cannot stat audio file ({exc})") from exc
                size = mtime = -1
            resolved.append(path)
            sizes.append(size)
            mtimes.append(mtime)
        return cls(tuple(resolved), tuple(sizes), tuple(mtimes), config, shard_size, checks)

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
        """16 hex digits of sha256 over the format version, config, checks, shard size and file list.

        The config's ``front_end`` enters only when it is not the paper's (``"panns"``: PANNs' dB features of a
        PANNs encoder), so caches made before that key existed keep their keys."""
        config = self.config.to_dict()
        if config.get("front_end") == "paper":
            del config["front_end"]
        payload = {
            "format": FORMAT_VERSION,
            "config": config,
            "checks": None if self.checks is None else self.checks.to_dict(),
            "shard_size": self.shard_size,
            "files": [[str(p), s, m] for p, s, m in zip(self.paths, self.sizes_bytes, self.mtimes_ns)],
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]

    def meta(self, *, complete: bool, skipped: Sequence[Skipped] = ()) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "key": self.key,
            "config": self.config.to_dict(),
            "checks": None if self.checks is None else self.checks.to_dict(),
            "shard_size": self.shard_size,
            "num_clips": self.num_clips,
            "shards": self.shard_sizes,
            "complete": complete,
            "skipped": [skipped_json(s) for s in skipped],
            "files": self.files_json(),
        }


def cache_key(
    paths: Sequence[str | os.PathLike],
    *,
    config: LogMelConfig,
    shard_size: int = 256,
    checks: ClipChecks | None = DEFAULT_CHECKS,
) -> str:
    """The directory name :func:`compute_features` uses for these files and config."""
    return FeatureCacheInfo.from_paths(paths, config=config, shard_size=shard_size, checks=checks, strict=False).key


def compute_features(
    paths: Sequence[str | os.PathLike],
    *,
    config: LogMelConfig,
    cache_dir: str | os.PathLike,
    shard_size: int = 256,
    workers: int = 0,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    strict: bool = True,
    checks: ClipChecks | None = DEFAULT_CHECKS,
) -> FeatureStore:
    """Compute (or reuse) log-mel features of ``paths`` in ``cache_dir/<key>/`` and open them.

    Args:
        paths: audio files, in the order the store will index them.
        config: front end; audio is read with ``load_audio(duration_s=config.duration_s, checks=checks)``.
        cache_dir: parent folder of caches; created if missing.
        shard_size: clips per shard file.
        workers: processes computing shards in parallel, this one included: ``workers - 1`` worker processes are
            started (forked on Linux: milliseconds; see :func:`~thce.data.feature_pool.start_method`), each process
            uses one torch thread. 1: in this process only. 0 (default): one per available CPU, at most one per
            shard and per :data:`MIN_CLIPS_PER_WORKER` clips to compute (so small jobs stay in this process). The
            output is the same, byte for byte, for any number of workers.
        batch_size: clips converted to float16 at a time (a float32 buffer of ~0.25 MB per 10 s clip).
        progress: called as ``progress("log-mel features", clips_done, clips_total)``, first with the clips already cached, then after
            each shard.
        strict: a bad clip raises :class:`DataError`. ``False``: it is given silence features and listed in
            :attr:`FeatureStore.skipped` (leave those indices out; see :func:`thce.data.feature_store.usable_indices`).
        checks: rejections beyond unreadable files (too short/long, digital silence); ``None``: none.

    Returns:
        :class:`FeatureStore` over ``len(paths)`` clips, each ``(config.num_frames, config.n_mels)`` float16.

    Raises:
        DataError: ``strict`` and a file is missing or not usable audio (message names it and the problem).
        ValueError: ``shard_size`` or ``batch_size`` < 1, or ``workers`` < 0.
    """
    for name, value, low in (("shard_size", shard_size, 1), ("workers", workers, 0), ("batch_size", batch_size, 1)):
        if value < low:
            raise ValueError(f"compute_features: {name} must be >= {low}, got {value}")
    info = FeatureCacheInfo.from_paths(paths, config=config, shard_size=shard_size, checks=checks, strict=strict)
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
        store = FeatureStore(directory)
        if strict and store.skipped:
            raise DataError(f"{directory}: cached features of {describe_skipped(store.skipped)}")
        if progress is not None:
            progress(PROGRESS, total, total)
        return store

    write_json(meta_path, info.meta(complete=False))
    _remove_stale_temporaries(directory)
    done = total - sum(sizes[i] for i in todo)
    todo_clips = total - done
    if workers == 0:
        workers = max(1, min(available_cpus(), len(todo), todo_clips // _min_clips_per_worker()))
    log.info(
        "feature cache %s: %d clips in %d shards, %d to compute (%d workers)",
        directory, total, len(sizes), len(todo), workers,
    )
    if progress is not None:
        progress(PROGRESS, done, total)
    tasks: list[Task] = [(info.paths[starts[i] : starts[i + 1]], starts[i], directory / shard_name(i)) for i in todo]
    work = _ShardWork(tasks, _ShardJob(LogMel(config).eval(), checks, strict), batch_size)

    def shard_done(index: int) -> None:
        nonlocal done
        done += len(tasks[index][0])
        if progress is not None:
            progress(PROGRESS, done, total)

    run_shards(work, workers=workers, on_done=shard_done)
    skipped = _gather_skipped(directory, len(sizes))
    if strict and skipped:  # only from shards cached by an earlier non-strict run
        raise DataError(f"{directory}: cached features of {describe_skipped(skipped)}")
    if skipped:
        log.warning("features: %s", describe_skipped(skipped))
    write_json(meta_path, info.meta(complete=True, skipped=skipped))
    return FeatureStore(directory)


@dataclass
class _ShardJob:
    """What computing a shard needs besides its paths (one per process)."""

    extractor: LogMel
    checks: ClipChecks | None
    strict: bool
    _buffer: np.ndarray | None = None

    @property
    def config(self) -> LogMelConfig:
        return self.extractor.config

    def shard_buffer(self, clips: int) -> np.ndarray:
        """A float16 ``(clips, num_frames, n_mels)`` array reused from shard to shard (a fresh 32 MB array per shard
        costs more in page faults than the cast that fills it); valid until the next call."""
        cfg = self.config
        if self._buffer is None or self._buffer.shape[0] < clips:
            self._buffer = np.empty((clips, cfg.num_frames, cfg.n_mels), dtype=FEATURE_DTYPE)
        return self._buffer[:clips]


@dataclass
class _ShardWork:
    """The shards :func:`compute_features` has to compute, as :class:`~thce.data.feature_pool.ShardWork`."""

    tasks: Sequence[Task]
    job: _ShardJob
    batch_size: int

    def __len__(self) -> int:
        return len(self.tasks)

    def __call__(self, index: int) -> None:
        shard_paths, start, out_path = self.tasks[index]
        array, skipped = _compute_shard(shard_paths, self.job, self.batch_size)
        _save_shard(out_path, array, skipped, start)

    def name(self, index: int) -> str:
        return self.tasks[index][2].name


def _min_clips_per_worker() -> int:
    return MIN_CLIPS_PER_WORKER if start_method() == "fork" else MIN_CLIPS_PER_SPAWNED_WORKER


def _compute_shard(paths: Sequence[Path], job: _ShardJob, batch_size: int) -> tuple[np.ndarray, list[Skipped]]:
    """Features of ``paths``: float16 ``(len(paths), num_frames, n_mels)``, and the clips skipped (``index`` local to
    the shard). A skipped clip's features are the log floor (silence). Clips are read and transformed one at a time
    into a float32 buffer of ``batch_size`` clips, cast to float16 a batch at a time. The array returned is the job's
    reused buffer: save it before the next call."""
    cfg = job.config
    out = job.shard_buffer(len(paths))
    buffer = np.empty((min(batch_size, len(paths)), cfg.num_frames, cfg.n_mels), dtype=np.float32)
    floor = math.log(cfg.log_floor)
    skipped: list[Skipped] = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        for k, path in enumerate(chunk):
            try:
                wave = load_audio(path, sample_rate_hz=cfg.sample_rate_hz, duration_s=cfg.duration_s, checks=job.checks)
            except AudioError as exc:
                if job.strict:
                    raise
                skipped.append(Skipped(str(path), exc.problem, "features", start + k))
                buffer[k] = floor
                continue
            job.extractor.compute(wave, out=buffer[k])  # numpy/scipy path: faster than torch.stft on CPU
        feats = torch.from_numpy(buffer[: len(chunk)]).clamp_(-_F16_MAX, _F16_MAX)
        torch.from_numpy(out[start : start + len(chunk)]).copy_(feats)  # torch's float16 cast: numpy's is ~20x slower
    return out, skipped


def _save_shard(path: Path, array: np.ndarray, skipped: Sequence[Skipped] = (), start: int = 0) -> None:
    """Write ``array`` as ``.npy`` atomically (temporary file beside ``path``, fsync, rename); the shard's skipped
    clips (indices made global with ``start``) go to its ``.skipped.json`` first, so a shard never exists without."""
    if skipped:
        sidecar = path.with_name(path.name.replace(".npy", ".skipped.json"))
        write_json(sidecar, [skipped_json(Skipped(s.path, s.problem, s.source, start + (s.index or 0))) for s in skipped])
    with atomic_write(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def _gather_skipped(directory: Path, num_shards: int) -> list[Skipped]:
    """Skipped clips of every shard, in index order."""
    out: list[Skipped] = []
    for i in range(num_shards):
        sidecar = directory / skipped_name(i)
        if sidecar.is_file():
            out.extend(skipped_from_json(item) for item in json.loads(sidecar.read_text(encoding="utf-8")))
    return out


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


def _remove_stale_temporaries(directory: Path) -> None:
    """Delete temporary shard files left by a killed run (untouched for :data:`STALE_TEMPORARY_S`; younger ones may
    belong to another process filling the same cache)."""
    now = time.time()
    for tmp in directory.glob(".shard_*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TEMPORARY_S:
                tmp.unlink()
                log.info("feature cache: removed %s, left by an interrupted run", tmp.name)
        except OSError:
            pass


def _meta_complete(meta_path: Path) -> bool:
    try:
        return bool(json.loads(meta_path.read_text(encoding="utf-8")).get("complete"))
    except (OSError, ValueError):
        return False
