"""thce.workers: items run in spawned processes, progress and log lines relayed, failures raised in the parent.

The task functions live at module level: a spawned worker imports this module to find them (it imports no torch, so
a worker starts in about a second)."""

from __future__ import annotations

import logging
import os

import pytest

from thce.errors import ThceError
from thce.workers import WorkerDied, lane, run_in_processes


def _setup(offset: int) -> dict[str, int]:
    return {"offset": offset, "pid": os.getpid()}


def _task(state: dict[str, int], item: int, progress) -> tuple[int, int]:
    progress("counting", 1, 2)
    progress("counting", 2, 2)
    logging.getLogger("thce.training.test_workers").info("item %d done", item)
    return item + state["offset"], state["pid"]


def _fail_on_two(state: dict[str, int], item: int, progress) -> int:
    if item == 2:
        raise ValueError(f"item {item} is bad")
    return item


def _die(state: dict[str, int], item: int, progress) -> int:
    os._exit(3)


class _Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickling calls it with one argument
        super().__init__(f"{a} {b}")


def _raise_unpicklable(state: dict[str, int], item: int, progress) -> int:
    raise _Unpicklable(1, 2)


def _folder(path: str) -> str:
    return path


def _threads_as_others_finish(folder: str, item: str, progress) -> tuple[int, int]:
    """"long": torch's threads at its first progress call and once the other worker has run out of items; "short"
    waits until "long" has looked once, then ends (its worker finds the end of the queue)."""
    import time

    import torch

    marker = os.path.join(folder, "long-started")
    if item == "short":
        for _ in range(600):
            if os.path.exists(marker):
                break
            time.sleep(0.05)
        return 0, 0
    progress("working", 0, 1)
    first = torch.get_num_threads()
    open(marker, "w").close()
    for _ in range(600):
        progress("working", 0, 1)
        if torch.get_num_threads() != first:
            break
        time.sleep(0.05)
    return first, torch.get_num_threads()


def test_a_worker_left_alone_takes_the_cores_the_others_freed(tmp_path):
    results = run_in_processes(_threads_as_others_finish, ["long", "short"], processes=2, setup=_folder,
                               setup_args=(str(tmp_path),), share_cores=4)  # fmt: skip
    assert results["long"] == (2, 4)  # 4 cores over 2 busy workers, then over 1


def test_items_run_in_workers_set_up_once_with_progress_and_logs_relayed(caplog):
    calls: list[tuple[str, int, int]] = []
    for name in ("thce", "thce.training"):  # what the workers copy (a CLI test before this one may have set them)
        caplog.set_level(logging.INFO, logger=name)
    top = logging.getLogger("thce")
    top.addHandler(caplog.handler)  # the parent's handlers get the relayed records, whatever propagates to the root
    try:
        results = run_in_processes(_task, [1, 2, 3], processes=2, setup=_setup, setup_args=(10,),
                                   progress=lambda d, n, t: calls.append((d, n, t)))  # fmt: skip
    finally:
        top.removeHandler(caplog.handler)
    assert {item: value for item, (value, _) in results.items()} == {1: 11, 2: 12, 3: 13}
    pids = {pid for _, pid in results.values()}
    assert len(pids) <= 2 and os.getpid() not in pids  # two workers, each set up once, none of them this process
    assert sorted(calls) == sorted((f"{item}: counting", n, 2) for item in (1, 2, 3) for n in (1, 2))
    assert sorted({r.getMessage() for r in caplog.records if r.name.endswith("test_workers")}) == [
        "item 1 done", "item 2 done", "item 3 done"
    ]  # fmt: skip


def test_a_failed_item_is_raised_in_the_parent_with_the_workers_traceback():
    with pytest.raises(ValueError, match="item 2 is bad") as raised:
        run_in_processes(_fail_on_two, [1, 2, 3], processes=2, setup=_setup, setup_args=(0,))
    assert any("in a worker process" in note and "_fail_on_two" in note for note in raised.value.__notes__)


def test_a_worker_that_dies_without_a_word_is_reported():
    with pytest.raises(WorkerDied, match=r"exit code 3.*2 of 2 tasks unfinished"):
        run_in_processes(_die, [1, 2], processes=1, setup=_setup, setup_args=(0,))


def test_an_exception_that_cannot_be_pickled_arrives_as_a_thce_error():
    with pytest.raises(ThceError, match="_Unpicklable in a worker process: 1 2"):
        run_in_processes(_raise_unpicklable, [1], processes=1, setup=_setup, setup_args=(0,))


def test_bad_arguments():
    with pytest.raises(ValueError, match="processes must be >= 1"):
        run_in_processes(_task, [1], processes=0, setup=_setup)
    with pytest.raises(ValueError, match="distinct"):
        run_in_processes(_task, [1, 1], processes=1, setup=_setup)


def test_lanes_of_the_command_lines_bars_and_of_a_plain_callback():
    from thce.cli.progress import ProgressBars

    bars = ProgressBars(enabled=False)
    assert lane(bars, "proposed1") is bars.lane("proposed1") and bars.lane("baseline").position == 2
    seen: list[str] = []
    lane(lambda d, n, t: seen.append(d), "baseline")("epoch", 1, 3)
    assert seen == ["baseline: epoch"]


def _thread_variables(state: dict[str, int], item: int, progress) -> dict[str, str | None]:
    from thce.workers import THREAD_VARIABLES

    return {name: os.environ.get(name) for name in THREAD_VARIABLES}


def test_workers_thread_pools_are_sized_where_the_environment_does_not_say(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")  # the user's setting stays
    seen = run_in_processes(_thread_variables, [1], processes=1, setup=_setup, setup_args=(0,), threads=1)[1]
    assert seen == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "3", "MKL_NUM_THREADS": "1"}
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["OPENBLAS_NUM_THREADS"] == "3"  # ours, gone again
