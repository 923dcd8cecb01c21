"""The process pool that computes feature shards: this process and forked (or spawned) workers claim shards in order
from a shared counter, so the work balances itself; each process computes with one torch thread, so a shard's bytes
do not depend on the number of workers. What a shard is and how it is computed is the caller's
(:class:`ShardWork`, see :func:`thce.data.features.compute_features`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection as mp_connection
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

import torch


class ShardWork(Protocol):
    """Shards to compute: ``len(work)`` of them; ``work(i)`` computes and saves shard ``i`` (in any process: with
    spawned workers the object is pickled); ``work.name(i)`` names it in messages."""

    def __len__(self) -> int: ...

    def __call__(self, index: int) -> None: ...

    def name(self, index: int) -> str: ...


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


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


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one thread inside the block: every process computes shards alike (with any thread count, a kernel
    could be chosen that rounds differently), so the output does not depend on the number of workers."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_shards(work: ShardWork, *, workers: int, on_done: Callable[[int], None]) -> None:
    """Compute every shard of ``work``; ``on_done(i)`` is called in this process when shard ``i`` is saved.

    ``workers``: processes computing shards, this one included (``workers - 1`` are started; 1 or a single shard:
    this process only). Every process computes with one torch thread (:func:`one_torch_thread`).

    Raises:
        The first exception raised computing a shard (with a worker's traceback as its cause), or RuntimeError when
        a worker died.
    """
    if workers == 1 or len(work) <= 1:
        with one_torch_thread():
            for index in range(len(work)):
                work(index)
                on_done(index)
        return
    _run_parallel(work, workers=workers, on_done=on_done)


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


def _worker_main(work: ShardWork, next_task: Any, conn: Connection) -> None:
    """Loop of a worker process: claim shards in order and compute them until none is left.

    Messages to the parent: ``("start", i)``, ``("done", i)``, ``("error", i, exception, traceback text)``; the pipe
    closes when the worker exits.
    """
    torch.set_num_threads(1)  # before any torch operation: see start_method()
    try:
        while (index := _claim(next_task, len(work))) is not None:
            conn.send(("start", index))
            try:
                work(index)
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


def _run_parallel(work: ShardWork, *, workers: int, on_done: Callable[[int], None]) -> None:
    """Compute every shard of ``work`` in this process and ``workers - 1`` worker processes.

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
    count = len(work)

    def finish(index: int) -> None:
        nonlocal finished
        finished += 1
        on_done(index)

    def handle(worker: _Worker) -> None:
        nonlocal error
        try:
            message = worker.conn.recv()
        except EOFError:  # the worker exited
            worker.conn.close()
            worker.process.join()
            pool.remove(worker)
            if worker.task is not None and error is None:
                shard = work.name(worker.task)
                error = (RuntimeError(f"feature worker died (exit code {worker.process.exitcode}) computing {shard}"),
                         None)  # fmt: skip
                _stop_claims(next_task, count)
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
            _stop_claims(next_task, count)

    def poll(timeout: float | None) -> None:
        by_conn = {w.conn: w for w in pool}
        for conn in mp_connection.wait(list(by_conn), timeout):
            handle(by_conn[conn])  # type: ignore[index]

    try:
        with one_torch_thread():
            for _ in range(min(workers, count) - 1):
                reader, writer = context.Pipe(duplex=False)
                process = context.Process(
                    target=_worker_main, args=(work, next_task, writer), daemon=True, name="thce-features"
                )
                # Python >= 3.12 warns on a fork of any threaded process; start_method() says why this one is safe.
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", r".*use of fork\(\) may lead to deadlocks", DeprecationWarning)
                    process.start()
                writer.close()  # only the worker holds it now: its exit ends the pipe
                pool.append(_Worker(process, reader))
            while error is None and (index := _claim(next_task, count)) is not None:
                try:
                    work(index)
                except Exception as exc:
                    error = (exc, None)
                    _stop_claims(next_task, count)
                    break
                finish(index)
                poll(0)
            while pool and (error is not None or finished < count):
                poll(None)
    except BaseException:
        _stop_claims(next_task, count)
        _end_workers(pool)
        raise
    _end_workers(pool)  # every shard is done: a worker left is exiting or, spawned, still starting
    if error is None and finished < count:  # a worker exited between claiming a shard and announcing it
        error = (RuntimeError(f"feature workers exited with {count - finished} shard(s) not computed"), None)
    if error is not None:
        exc, remote = error
        if remote is not None:
            raise exc from _WorkerTraceback(remote)
        raise exc


def _end_workers(pool: Sequence[_Worker]) -> None:
    for worker in pool:
        worker.process.terminate()
    for worker in pool:
        worker.process.join()
        worker.conn.close()
