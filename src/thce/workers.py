"""Tasks run in spawned worker processes, their progress and log lines relayed to the parent.

A run's methods train independently of each other (:mod:`thce.join`), and on a CPU a second process gains far more
than a second thread: the DCASE-style CRNN trained 1.26x faster on two threads than on one through torch's GRU
(benchmarks/results/frame_models_rnn_type.json), 1.44x through :mod:`thce.recurrent`'s
(frame_models_gru_backward.json). :func:`run_in_processes` lets ``thce experiment --jobs N`` train
them side by side. Each worker process is spawned (a fresh interpreter: no forked OpenMP or allocator state), runs
``setup(*setup_args)`` once, then takes items from a shared queue and runs ``task(state, item, progress)`` on each;
the longest items should come first. Progress calls and ``thce`` log records come back to the parent through one
queue: each item reports on its own lane (:func:`lane`), log lines go to the parent's handlers. A failed item stops
the others at once and its exception is raised in the parent (with the worker's traceback as a note); a worker that
dies without a word (killed, out of memory) is a :class:`WorkerDied`. On Linux a worker also dies with its parent.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import multiprocessing
import pickle
import queue as queue_module
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

from thce.errors import ThceError
from thce.progress import ProgressFn

#: The loggers whose levels a worker copies from the parent (what the CLI sets: :func:`thce.cli._setup_logging`).
RELAYED_LOGGERS = ("thce", "thce.training")


#: The environment variables that size the thread pools of OpenMP (torch's, numpy's), OpenBLAS and MKL.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class WorkerDied(ThceError):
    """A worker process ended without reporting (killed by a signal, out of memory, ``os._exit``)."""


def lane(progress: ProgressFn, name: str) -> ProgressFn:
    """``progress`` as one of several reporters at once: ``progress.lane(name)`` where it has one (the CLI's
    :class:`~thce.cli.progress.ProgressBars` draws each lane as its own bar), else its descriptions prefixed."""
    own = getattr(progress, "lane", None)
    if callable(own):
        return own(name)
    return lambda desc, done, total: progress(f"{name}: {desc}", done, total)


def run_in_processes(
    task: Callable[[Any, Any, ProgressFn], Any],
    items: Sequence[Hashable],
    *,
    processes: int,
    setup: Callable[..., Any],
    setup_args: tuple[Any, ...] = (),
    progress: ProgressFn | None = None,
    threads: int | None = None,
    share_cores: int | None = None,
) -> dict[Any, Any]:
    """``{item: task(state, item, progress)}`` over ``items``, run by ``processes`` spawned workers (each with
    ``state = setup(*setup_args)``); ``task`` and ``setup`` must be importable module-level functions and their
    arguments and results picklable. Items are handed out in order, one at a time, to whichever worker is free.
    ``threads``: the workers' OpenMP, OpenBLAS and MKL thread pools (:data:`THREAD_VARIABLES`, where the environment
    does not set them): without it each worker's numpy would start a pool over all cores, whose spinning threads
    slowed two one-thread training workers on 2 cores by 1.3-2x. ``share_cores``: torch's threads in each worker
    follow ``share_cores // workers still busy``, so that a worker left alone after the others ran out of items takes
    the cores they freed (each worker looks at each progress call: a training batch; the change is torch's thread
    count only, which can change floating-point summation order and so the last bits of what it computes).

    Raises:
        ValueError: ``processes < 1`` or items repeat.
        WorkerDied: a worker ended without reporting; the exception an item raised, re-raised here.
    """
    if processes < 1:
        raise ValueError(f"run_in_processes: processes must be >= 1, got {processes}")
    if len(set(items)) != len(items):
        raise ValueError("run_in_processes: items must be distinct")
    context = multiprocessing.get_context("spawn")
    todo, done, relay = context.Queue(), context.Queue(), context.Queue()
    for item in items:
        todo.put(item)
    processes = min(processes, len(items))
    for _ in range(processes):
        todo.put(None)
    levels = {name: logging.getLogger(name).level for name in RELAYED_LOGGERS}
    busy = context.Value("i", processes)  # workers that have not yet found the end of the queue
    cores = (share_cores, busy) if share_cores else None
    workers = [
        context.Process(target=_worker, args=(task, setup, setup_args, todo, done, relay, levels, cores),
                        name=f"thce-{i}")
        for i in range(processes)
    ]  # fmt: skip
    relayer = threading.Thread(target=_relay, args=(relay, progress), daemon=True)
    relayer.start()
    results: dict[Any, Any] = {}
    try:
        with _environment({name: str(threads) for name in THREAD_VARIABLES} if threads else {}):
            for worker in workers:
                worker.start()
        while len(results) < len(items):
            try:
                kind, item, payload = done.get(timeout=0.5)
            except queue_module.Empty:
                if any(w.is_alive() for w in workers) and all(w.exitcode in (None, 0) for w in workers):
                    continue
                try:  # what a worker sent just before it ended may still be on its way
                    kind, item, payload = done.get(timeout=2.0)
                except queue_module.Empty:
                    code = next((w.exitcode for w in workers if w.exitcode), 0)
                    raise WorkerDied(f"a worker process ended without reporting (exit code {code}"
                                     f"{', killed by a signal' if code and code < 0 else ''}); "
                                     f"{len(items) - len(results)} of {len(items)} tasks unfinished") from None  # fmt: skip
            if kind == "error":
                raise payload
            results[item] = payload
        for worker in workers:  # they stop at their sentinels, after sending what is still in their buffers
            worker.join(timeout=30)
    finally:
        for worker in workers:
            if worker.is_alive():  # an item failed (or the parent was interrupted): stop the others now
                worker.terminate()
        for worker in workers:
            worker.join()
        relay.put(None)
        relayer.join()
    return results


def _worker(
    task: Callable[[Any, Any, ProgressFn], Any],
    setup: Callable[..., Any],
    setup_args: tuple[Any, ...],
    todo: Any,
    done: Any,
    relay: Any,
    levels: dict[str, int],
    cores: tuple[int, Any] | None,
) -> None:
    """A worker process: die with the parent, relay logs, set up once, then run items until the ``None`` sentinel
    (``cores``: ``run_in_processes``'s ``share_cores`` and the shared count of busy workers, or ``None``)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops the workers
    top = logging.getLogger(RELAYED_LOGGERS[0])
    top.handlers[:] = [logging.handlers.QueueHandler(relay)]
    top.propagate = False
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    item: Any = None
    try:
        state = setup(*setup_args)
        while (item := todo.get()) is not None:
            reporter = _LaneProgress(relay, str(item), cores)
            done.put(("ok", item, task(state, item, reporter)))
        if cores is not None:
            with cores[1].get_lock():
                cores[1].value -= 1
    except BaseException as error:  # noqa: BLE001 - every failure goes to the parent, which raises it
        done.put(("error", item, _picklable(error)))


class _LaneProgress:
    """A worker's progress callback: ``(lane, description, done, total)`` onto the relay queue; with ``cores``, also
    torch's threads set to the cores over the workers still busy."""

    def __init__(self, relay: Any, name: str, cores: tuple[int, Any] | None = None) -> None:
        self.relay, self.name, self.cores = relay, name, cores

    def __call__(self, desc: str, done: int, total: int) -> None:
        if self.cores is not None:
            import torch  # only workers that share cores have torch to size

            share_cores, busy = self.cores
            wanted = max(1, share_cores // max(1, busy.value))
            if torch.get_num_threads() != wanted:
                torch.set_num_threads(wanted)
        self.relay.put(("progress", self.name, desc, done, total))


def _relay(relay: Any, progress: ProgressFn | None) -> None:
    """The parent's side of the relay queue, until ``None``: progress onto lanes, log records to the handlers."""
    lanes: dict[str, ProgressFn] = {}
    while (message := relay.get()) is not None:
        if isinstance(message, logging.LogRecord):
            logging.getLogger(message.name).handle(message)
        elif progress is not None:
            _, name, desc, done, total = message
            if name not in lanes:
                lanes[name] = lane(progress, name)
            lanes[name](desc, done, total)


def _picklable(error: BaseException) -> BaseException:
    """``error`` with the worker's traceback as a note, or a :class:`ThceError` saying it where it cannot cross."""
    text = "".join(traceback.format_exception(error))
    try:
        error.add_note(f"in a worker process:\n{text}")
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - an exception class that does not pickle
        return ThceError(f"{type(error).__name__} in a worker process: {error}\n{text}")


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` for the block (what a process spawned in it inherits), except variables already
    set; the environment as it was afterwards."""
    added = {name: value for name, value in values.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent ends (``prctl(PR_SET_PDEATHSIG)``), so no orphan keeps writing
    into a run folder whose lock went with the parent. Elsewhere: nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except OSError:
        pass
