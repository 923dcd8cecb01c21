"""Feature cache: log-mel features of many clips as sharded float16 ``.npy`` files, atomic, resumable, parallel.

Layout of one cache (``cache_dir/<key>/``)::

    meta.json                 {"format", "key", "config", "checks", "shard_size", "num_clips", "shards": [sizes],
                               "complete", "skipped": [{"index", "path", "problem"}], "files": [...]}
    shard_00000.npy           float16 (n_in_shard, num_frames, n_mels), clips [0, shard_size)
    shard_00000.skipped.json  only when a clip of the shard was skipped: [{"index", "path", "problem"}]
    shard_00001.npy           clips [shard_size, 2 * shard_size) ...

``key`` is a short sha256 of the :class:`~thce.audio.LogMelConfig`, the :class:`~thce.audio.ClipChecks`, the shard
size and the ordered list of resolved file paths with their size and mtime: change any of them and a new cache is
built beside the old one. Every shard is written to a temporary file and renamed into place (its ``.skipped.json``
first), so a killed run loses at most the shards in progress, and a rerun computes only the missing shards. Several
processes may fill one cache at the same time (e.g. the ranks of a ``torchrun`` job): they duplicate work but never
corrupt it, because the content of a shard is deterministic. Shards are computed by this process and forked worker
processes over all cores when there is enough work (``workers=0``, the default); every process computes with one
torch thread, so a shard's bytes do not depend on the number of workers.

Bad input does not stop a run unless asked to: with ``strict=False`` a clip that cannot be used (missing, empty,
truncated, not audio, unsupported codec, NaN/inf samples, digital silence, far too short or long: see
:func:`thce.audio.load_audio` and :class:`thce.audio.ClipChecks`) gets silence features (the log floor) and is listed
in :attr:`FeatureStore.skipped` with the problem, for the caller to leave out and report (``skipped.csv``).

:class:`FeatureStore` reads a finished cache with positioned reads (``os.preadv``) into fresh arrays, so memory stays
flat in the number of clips (pages of a memory map that has been read count in the resident set; the page cache does
not). Any shard is also a plain ``.npy`` file that ``np.load(mmap_mode="r")`` maps. :class:`Normaliser` holds
per-mel-band mean and standard deviation fitted on the training clips only (the paper: "normalized using the mean and
variance of the training data"), computed streaming in float64.

float16 keeps a log-mel value (about -23 .. +20) to within 0.016 (10-bit mantissa), far below the spread of the
features; it halves disk use and I/O.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import multiprocessing
import multiprocessing.connection as mp_connection
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from thce.audio.logmel import LogMel, LogMelConfig
from thce.audio.read import ClipChecks, load_audio
from thce.data.manifest import Skipped, describe_skipped
from thce.errors import AudioError, DataError
from thce.io import atomic_write, write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_NAME = "meta.json"
FEATURE_DTYPE = np.float16
_F16_MAX = float(np.finfo(np.float16).max)
#: With ``workers=0``: clips per process below which another worker does not pay. A forked worker starts in about
#: 30 ms (the time of ~30 clips); one shard of the default size is the least a worker can take.
MIN_CLIPS_PER_WORKER = 256
#: The same where workers are spawned (see :func:`start_method`): each imports torch, seconds, ~a thousand clips.
MIN_CLIPS_PER_SPAWNED_WORKER = 1024
DEFAULT_CHECKS = ClipChecks()
#: Age after which a temporary shard file is taken to be left by a killed run and deleted.
STALE_TEMPORARY_S = 3600.0

ProgressFn = Callable[[int, int], None]
#: One shard to compute: its clips' paths, the index of its first clip, its file.
Task = tuple[Sequence[Path], int, Path]


def shard_name(index: int) -> str:
    """File name of shard ``index`` (``shard_00000.npy``)."""
    return f"shard_{index:05d}.npy"


def skipped_name(index: int) -> str:
    """File name of the list of skipped clips of shard ``index`` (``shard_00000.skipped.json``)."""
    return f"shard_{index:05d}.skipped.json"


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


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
        """16 hex digits of sha256 over the format version, config, checks, shard size and file list."""
        payload = {
            "format": FORMAT_VERSION,
            "config": self.config.to_dict(),
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
            "skipped": [_skipped_json(s) for s in skipped],
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
            started (forked on Linux: milliseconds; see :func:`start_method`), each process uses one torch thread.
            1: in this process only. 0 (default): one per available CPU, at most one per shard and per
            :data:`MIN_CLIPS_PER_WORKER` clips to compute (so small jobs stay in this process). The output is the
            same, byte for byte, for any number of workers.
        batch_size: clips converted to float16 at a time (a float32 buffer of ~0.25 MB per 10 s clip).
        progress: called as ``progress(clips_done, clips_total)``, first with the clips already cached, then after
            each shard.
        strict: a bad clip raises :class:`DataError`. ``False``: it is given silence features and listed in
            :attr:`FeatureStore.skipped` (leave those indices out; see :func:`usable_indices`).
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
            progress(total, total)
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
        progress(done, total)
    tasks: list[Task] = [(info.paths[starts[i] : starts[i + 1]], starts[i], directory / shard_name(i)) for i in todo]
    job = _ShardJob(LogMel(config).eval(), checks, strict)
    if workers == 1 or len(tasks) <= 1:
        done = _run_serial(tasks, job, batch_size=batch_size, done=done, total=total, progress=progress)
    else:
        done = _run_parallel(
            tasks, job, workers=workers, batch_size=batch_size, done=done, total=total, progress=progress
        )
    skipped = _gather_skipped(directory, len(sizes))
    if strict and skipped:  # only from shards cached by an earlier non-strict run
        raise DataError(f"{directory}: cached features of {describe_skipped(skipped)}")
    if skipped:
        log.warning("features: %s", describe_skipped(skipped))
    write_json(meta_path, info.meta(complete=True, skipped=skipped))
    return FeatureStore(directory)


def usable_indices(store: FeatureStore, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """``indices`` (default: every clip) without the clips the store skipped, in the given order, as int64."""
    idx = np.arange(len(store), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    bad = np.array(sorted(s.index for s in store.skipped if s.index is not None), dtype=np.int64)
    return idx[~np.isin(idx, bad)] if bad.size else idx


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


def start_method() -> str:
    """How worker processes start: ``"fork"`` on Linux, else ``"spawn"``.

    A forked worker starts in milliseconds with torch and this module already imported; a spawned one imports torch
    again (seconds, the time of about a thousand clips), which made workers pointless on jobs of a few thousand
    clips. Forking a process whose torch has run parallel (OpenMP) regions is safe here because the child calls
    ``torch.set_num_threads(1)`` before any torch operation, so it never enters the parent's OpenMP thread pool (which
    does not exist in the child): the same rule as the workers of ``torch.utils.data.DataLoader``. The child uses no
    CUDA, and touches no lock of another parent thread except logging's, which Python re-creates after a fork. macOS
    (where system libraries are not fork-safe) and Windows spawn.
    """
    return "fork" if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _min_clips_per_worker() -> int:
    return MIN_CLIPS_PER_WORKER if start_method() == "fork" else MIN_CLIPS_PER_SPAWNED_WORKER


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """torch on one thread inside the block: every process computes shards alike (with any thread count, a kernel
    could be chosen that rounds differently), so the output does not depend on the number of workers."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _run_serial(
    tasks: Sequence[Task], job: _ShardJob, *, batch_size: int, done: int, total: int, progress: ProgressFn | None
) -> int:
    with _one_torch_thread():
        for shard_paths, start, out_path in tasks:
            array, skipped = _compute_shard(shard_paths, job, batch_size)
            _save_shard(out_path, array, skipped, start)
            done += len(shard_paths)
            if progress is not None:
                progress(done, total)
    return done


def _claim(next_task: Any, count: int) -> int | None:
    """Take the next task index from the shared counter, or ``None`` when none is left (or the run is stopping)."""
    with next_task.get_lock():
        index = int(next_task.value)
        if index >= count:
            return None
        next_task.value = index + 1
        return index


def _stop_claims(next_task: Any, count: int) -> None:
    with next_task.get_lock():
        next_task.value = count


class _WorkerTraceback(Exception):
    """The traceback of an exception raised in a worker process (attached as ``__cause__``)."""


def _worker_main(tasks: Sequence[Task], next_task: Any, conn: Connection, job: _ShardJob, batch_size: int) -> None:
    """Loop of a worker process: claim shards in order and compute them until none is left.

    Messages to the parent: ``("start", i)``, ``("done", i)``, ``("error", i, exception, traceback text)``; the pipe
    closes when the worker exits.
    """
    torch.set_num_threads(1)  # before any torch operation: see start_method()
    try:
        while (index := _claim(next_task, len(tasks))) is not None:
            conn.send(("start", index))
            shard_paths, start, out_path = tasks[index]
            try:
                array, skipped = _compute_shard(shard_paths, job, batch_size)
                _save_shard(out_path, array, skipped, start)
            except Exception as exc:
                text = traceback.format_exc()
                try:
                    conn.send(("error", index, exc, text))
                except Exception:  # the exception does not pickle
                    conn.send(("error", index, RuntimeError(f"{type(exc).__name__}: {exc}"), text))
                return
            conn.send(("done", index))
    except (KeyboardInterrupt, BrokenPipeError):  # Ctrl-C reaches every process of the group; the parent reports it
        pass
    finally:
        conn.close()


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    task: int | None = None  # the shard it is computing


def _run_parallel(
    tasks: Sequence[Task],
    job: _ShardJob,
    *,
    workers: int,
    batch_size: int,
    done: int,
    total: int,
    progress: ProgressFn | None,
) -> int:
    """Compute ``tasks`` in this process and ``workers - 1`` worker processes; returns the clips done.

    Every process claims the next shard in order from a shared counter as soon as it is free (dynamic balance: at the
    end, no process waits for more than one shard of another). This process starts computing at once, so a slow
    worker start (spawn) overlaps with useful work. On an error in a shard, no new shard is started, the shards in
    progress are finished (they are saved, not lost) and the first error is raised; on an interrupt, workers are
    terminated (a shard they were writing is left as a temporary file, never as a shard). Once every shard is done,
    workers still starting (spawn) are terminated rather than waited for.
    """
    context = multiprocessing.get_context(start_method())
    next_task = context.Value("i", 0)
    pool: list[_Worker] = []
    error: tuple[BaseException, str | None] | None = None
    finished = 0

    def finish(index: int) -> None:
        nonlocal done, finished
        finished += 1
        done += len(tasks[index][0])
        if progress is not None:
            progress(done, total)

    def handle(worker: _Worker) -> None:
        nonlocal error
        try:
            message = worker.conn.recv()
        except EOFError:  # the worker exited
            worker.conn.close()
            worker.process.join()
            pool.remove(worker)
            if worker.task is not None and error is None:
                shard = shard_name(worker.task)
                error = (RuntimeError(f"feature worker died (exit code {worker.process.exitcode}) computing {shard}"),
                         None)  # fmt: skip
                _stop_claims(next_task, len(tasks))
            return
        if message[0] == "start":
            worker.task = message[1]
        elif message[0] == "done":
            worker.task = None
            finish(message[1])
        else:
            worker.task = None
            if error is None:
                error = (message[2], message[3])
            _stop_claims(next_task, len(tasks))

    def poll(timeout: float | None) -> None:
        by_conn = {w.conn: w for w in pool}
        for conn in mp_connection.wait(list(by_conn), timeout):
            handle(by_conn[conn])  # type: ignore[index]

    try:
        with _one_torch_thread():
            for _ in range(min(workers, len(tasks)) - 1):
                reader, writer = context.Pipe(duplex=False)
                process = context.Process(
                    target=_worker_main, args=(tasks, next_task, writer, job, batch_size), daemon=True,
                    name="thce-features",
                )  # fmt: skip
                # Python >= 3.12 warns on a fork of any threaded process; start_method() says why this one is safe.
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", r".*use of fork\(\) may lead to deadlocks", DeprecationWarning)
                    process.start()
                writer.close()  # only the worker holds it now: its exit ends the pipe
                pool.append(_Worker(process, reader))
            while error is None and (index := _claim(next_task, len(tasks))) is not None:
                shard_paths, start, out_path = tasks[index]
                try:
                    array, skipped = _compute_shard(shard_paths, job, batch_size)
                    _save_shard(out_path, array, skipped, start)
                except Exception as exc:
                    error = (exc, None)
                    _stop_claims(next_task, len(tasks))
                    break
                finish(index)
                poll(0)
            while pool and (error is not None or finished < len(tasks)):
                poll(None)
    except BaseException:
        _stop_claims(next_task, len(tasks))
        _end_workers(pool)
        raise
    _end_workers(pool)  # every shard is done: a worker left is exiting or, spawned, still starting
    if error is None and finished < len(tasks):  # a worker exited between claiming a shard and announcing it
        error = (RuntimeError(f"feature workers exited with {len(tasks) - finished} shard(s) not computed"), None)
    if error is not None:
        exc, remote = error
        if remote is not None:
            raise exc from _WorkerTraceback(remote)
        raise exc
    return done


def _end_workers(pool: Sequence[_Worker]) -> None:
    for worker in pool:
        worker.process.terminate()
    for worker in pool:
        worker.process.join()
        worker.conn.close()


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


def _skipped_json(item: Skipped) -> dict[str, Any]:
    return {"index": item.index, "path": item.path, "problem": item.problem}


def _save_shard(path: Path, array: np.ndarray, skipped: Sequence[Skipped] = (), start: int = 0) -> None:
    """Write ``array`` as ``.npy`` atomically (temporary file beside ``path``, fsync, rename); the shard's skipped
    clips (indices made global with ``start``) go to its ``.skipped.json`` first, so a shard never exists without."""
    if skipped:
        sidecar = path.with_name(path.name.replace(".npy", ".skipped.json"))
        write_json(sidecar, [_skipped_json(Skipped(s.path, s.problem, s.source, start + (s.index or 0))) for s in skipped])
    with atomic_write(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def _gather_skipped(directory: Path, num_shards: int) -> list[Skipped]:
    """Skipped clips of every shard, in index order."""
    out: list[Skipped] = []
    for i in range(num_shards):
        sidecar = directory / skipped_name(i)
        if sidecar.is_file():
            for item in json.loads(sidecar.read_text(encoding="utf-8")):
                out.append(Skipped(item["path"], item["problem"], "features", int(item["index"])))
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


def _npy_data_offset(path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
    """Byte offset of the data, shape and dtype of a C-ordered ``.npy`` file (reads its header only)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        if fortran:
            raise ValueError("Fortran-ordered array")
        return handle.tell(), tuple(shape), np.dtype(dtype)


def _pread_into(fd: int, buffer: np.ndarray, offset: int) -> None:
    """Fill ``buffer`` (C-contiguous) from ``fd`` at ``offset``."""
    view = memoryview(buffer).cast("B")
    got = 0
    while got < view.nbytes:
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [view[got:]], offset + got)
        else:  # pragma: no cover - platforms without preadv
            chunk = os.pread(fd, view.nbytes - got, offset + got)
            n = len(chunk)
            view[got : got + n] = chunk
        if n <= 0:
            raise OSError(f"unexpected end of file at byte {offset + got}")
        got += n


class FeatureStore:
    """Read-only view of a finished feature cache.

    ``store[i]`` -> float16 ``(num_frames, n_mels)``; ``store[indices]`` (int array, list, slice or bool mask) ->
    float16 ``(len(indices), num_frames, n_mels)`` in the order given. Only the requested clips are read, with
    positioned reads of contiguous runs (memory stays flat however many clips are read). Pickling sends the folder
    name and metadata only (DataLoader workers reopen the files).
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
        self._offsets: dict[int, int] = {}

    @property
    def key(self) -> str:
        return str(self.meta["key"])

    @property
    def paths(self) -> list[Path]:
        """The audio files, in store order."""
        return [Path(f["path"]) for f in self.meta["files"]]

    @property
    def skipped(self) -> list[Skipped]:
        """Clips that could not be used (``index`` = position in the store), with the problem; their features are
        the log floor. Empty when the cache was built with ``strict=True``."""
        return [
            Skipped(item["path"], item["problem"], "features", int(item["index"]))
            for item in self.meta.get("skipped", [])
        ]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(clips, num_frames, n_mels)``."""
        return (len(self), self.config.num_frames, self.config.n_mels)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.directory)!r}, shape={self.shape})"

    def _offset(self, index: int) -> int:
        """Data offset of shard ``index``, its header checked against the metadata."""
        offset = self._offsets.get(index)
        if offset is None:
            path = self.directory / shard_name(index)
            expected = (self.shard_sizes[index], *self.shape[1:])
            try:
                offset, shape, dtype = _npy_data_offset(path)
            except (OSError, ValueError) as exc:
                raise DataError(
                    f"{path}: unreadable feature shard ({exc}); delete it and rerun compute_features"
                ) from exc
            if shape != expected or dtype != FEATURE_DTYPE:
                raise DataError(f"{path}: shard has shape {shape} {dtype}, expected {expected} float16")
            self._offsets[index] = offset
        return offset

    def _read(self, shard: int, local: np.ndarray) -> np.ndarray:
        """Clips ``local`` (sorted, unique) of one shard, reading each contiguous run at once."""
        offset = self._offset(shard)
        clip_bytes = self.shape[1] * self.shape[2] * np.dtype(FEATURE_DTYPE).itemsize
        out = np.empty((local.size, *self.shape[1:]), dtype=FEATURE_DTYPE)
        breaks = np.flatnonzero(np.diff(local) != 1) + 1
        path = self.directory / shard_name(shard)
        fd = os.open(path, os.O_RDONLY)
        try:
            for lo, hi in zip([0, *breaks.tolist()], [*breaks.tolist(), local.size]):
                _pread_into(fd, out[lo:hi], offset + int(local[lo]) * clip_bytes)
        except OSError as exc:
            raise DataError(f"{path}: cannot read feature shard ({exc}); delete it and rerun compute_features") from exc
        finally:
            os.close(fd)
        return out

    def __getitem__(self, index: int | np.integer | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        n = len(self)
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -n <= i < n:
                raise IndexError(f"clip {i} out of range for a store of {n}")
            i %= n
            s = int(np.searchsorted(self._starts, i, side="right")) - 1
            return self._read(s, np.array([i - self._starts[s]]))[0]
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
            local, inverse = np.unique(idx[where] - self._starts[s], return_inverse=True)
            out[where] = self._read(int(s), local)[inverse.reshape(-1)]
        return out


def _as_float(x: np.ndarray, dtype: type[np.floating], *, copy: bool = False) -> np.ndarray:
    """``x`` as ``dtype``; float16 is converted by torch (vectorised; numpy's float16 cast is about 20x slower)."""
    x = np.asarray(x)
    if x.dtype == np.float16:
        torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
        return torch.from_numpy(np.ascontiguousarray(x)).to(torch_dtype).numpy()  # always a new array
    return np.array(x, dtype=dtype, copy=True) if copy else np.asarray(x, dtype=dtype)


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
        cls, store: FeatureStore | np.ndarray, indices: Sequence[int] | np.ndarray, *, chunk: int = 32
    ) -> Normaliser:
        """Mean and std per mel band over every frame of the clips ``store[indices]``, streaming ``chunk`` clips at a
        time in float64 (chunk statistics merged with Chan et al.'s parallel variance formula: no cancellation).
        Memory: about ``chunk`` x 0.5 MB for 10 s clips, whatever the number of clips.

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
            block = store[idx[start : start + chunk]]
            x = _as_float(block.reshape(-1, block.shape[-1]), np.float64)
            n_b = x.shape[0]
            mean_b = x.mean(axis=0)
            x -= mean_b
            np.square(x, out=x)
            m2_b = x.sum(axis=0)
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
        out = _as_float(x, np.float32, copy=True)  # normalised in place
        out -= self.mean.astype(np.float32)
        out *= (1.0 / self.std).astype(np.float32)
        return out

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
