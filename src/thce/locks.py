"""One process at a time per output folder (a run, a sweep, detection pages, score tables).

:func:`folder_lock` holds an exclusive ``flock`` on ``FOLDER/.thce.lock`` for as long as the block runs; the file
names the holder (PID, host, start time), so a second process is refused at once with a line saying who has the
folder. The kernel drops the lock when its process dies however it dies, so a lock file left by a killed process
is stale: it is taken over with a warning. Locks are reentrant within a process (the command line takes the lock
before any work, the library takes it again when it writes).

:func:`taking_turns` is the other kind: processes of one run (``thce experiment --jobs``) that update the same file
wait for each other.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from thce.errors import OutputError
from thce.io import check_output_path, ensure_dir

logger = logging.getLogger(__name__)

#: The lock file in a locked folder (hidden; removed when the lock is released).
LOCK_NAME = ".thce.lock"

_held: dict[str, int] = {}  # realpath of a folder this process holds -> how many blocks hold it


def describe_holder(text: str) -> str:
    """``"PID 123 on host h, started 2026-01-02 03:04:05"`` from a lock file's text (what is known of it)."""
    try:
        holder = json.loads(text)
        return f"PID {holder['pid']} on host {holder['host']}, started {holder['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that left no details"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _acquire(lock_path: Path) -> int:
    """An open descriptor of ``lock_path`` holding its exclusive flock; refuses (OutputError) if another holds it."""
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            from thce.io import output_error

            raise output_error(lock_path, error) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            os.close(fd)
            raise OutputError(f"{lock_path.parent}: in use by another thce process ({holder}); wait for it to "
                              "finish or choose another output") from None  # fmt: skip
        try:  # the holder before us may have removed the file between our open and our flock: lock the new one
            if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder`` (created if missing; removed again at the end if it is still empty) for this process.

    Raises:
        OutputError: ``folder`` cannot be written, or another live process holds it (the line names it: PID,
            host, start time; a lock of another host is refused too, as it cannot be told whether it is alive).
    """
    folder = Path(folder)
    check_output_path(folder, directory=True)
    created = not folder.exists()
    ensure_dir(folder)
    key = os.path.realpath(folder)
    if key in _held:
        _held[key] += 1
        try:
            yield folder
        finally:
            _held[key] -= 1
        return
    lock_path = folder / LOCK_NAME
    fd = _acquire(lock_path)
    try:
        previous = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        if previous:
            _take_over(lock_path, previous)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    _held[key] = 1
    try:
        yield folder
    finally:
        del _held[key]
        try:
            lock_path.unlink(missing_ok=True)  # while still holding it: a waiting opener re-checks the inode
        finally:
            os.close(fd)
        if created:
            try:
                folder.rmdir()  # only if nothing was written into it
            except OSError:
                pass


def _take_over(lock_path: Path, previous: str) -> None:
    """Accept a lock file whose flock nobody holds: its process died (warned); one of another host is refused."""
    try:
        holder = json.loads(previous)
        host, pid = holder["host"], int(holder["pid"])
    except (ValueError, KeyError, TypeError):
        host, pid = socket.gethostname(), -1
    if host != socket.gethostname():
        raise OutputError(f"{lock_path.parent}: in use by a thce process on another host ({describe_holder(previous)});"
                          f" if it has ended, delete {lock_path}")  # fmt: skip
    state = "is no longer running" if pid < 0 or not _alive(pid) else "no longer holds it"
    logger.warning("%s: taking over a stale lock (%s %s)", lock_path.parent, describe_holder(previous), state)


@contextmanager
def taking_turns(lock_path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created, never removed) for the block, waiting while another
    process holds it: the worker processes of one run append to and rewrite the same files (``metrics.csv``, the
    stage timing) in turns."""
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield
