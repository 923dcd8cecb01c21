"""thce.io: atomic writes of regular files; devices, FIFOs, directories and links are never replaced."""

import errno
import os
import stat
import threading

import pytest

from thce.errors import OutputError
from thce.io import atomic_write, check_output_path, ensure_dir, refuse_other_kind, write_json


def test_regular_file_is_replaced_atomically_and_keeps_its_mode(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    target.chmod(0o640)
    with atomic_write(target) as handle:
        handle.write("new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temporary file left


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_fifo_is_written_through_not_replaced(tmp_path):
    """Item 1 of issue 14: a FIFO (as /dev/null or a pipe) gets the bytes; it stays a FIFO."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    write_json(fifo, {"a": 1})
    reader.join(timeout=30)
    assert received == ['{\n  "a": 1\n}\n']
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")
def test_character_device_is_written_through_not_replaced(tmp_path):
    """Item 1: ``--out /dev/null`` replaced /dev/null with a regular file. A null device made in tmp_path (never the
    machine's /dev/null) stays a device and swallows the write."""
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    with atomic_write(null) as handle:
        handle.write("events\n")
    info = null.lstat()
    assert stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_directory_and_symlink_to_one_are_refused(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(folder)
    for path in (folder, link):
        with pytest.raises(OutputError, match="is a directory"), atomic_write(path) as handle:
            handle.write("y")
        with pytest.raises(OutputError, match="is a directory"):
            check_output_path(path)
    assert link.is_symlink() and (folder / "keep").read_text() == "x"


def test_symlink_to_a_regular_file_writes_the_target_and_keeps_the_link(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_json(link, [1])
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "[\n  1\n]\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real.json"]


def test_path_under_a_regular_file_is_an_output_error(tmp_path):
    """Item 5 (as root chmod does not block writes: a path under a regular FILE cannot be written either)."""
    blocker = tmp_path / "somefile"
    blocker.write_text("mine")
    for path in (blocker / "out.json", blocker / "sub" / "out.json"):
        with pytest.raises(OutputError, match=f"{blocker} is a file, not a directory"):
            write_json(path, {})
        with pytest.raises(OutputError, match=f"{blocker} is a file, not a directory"):
            check_output_path(path)
    with pytest.raises(OutputError, match="is a file, not a directory"):
        ensure_dir(blocker)
    with pytest.raises(OutputError, match="is a file, not a directory"):
        check_output_path(blocker, directory=True)
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize(
    "code, words", [(errno.ENOSPC, "no space left on device"), (errno.EROFS, "read-only file system"),
                    (errno.EACCES, "permission denied")],
)  # fmt: skip
def test_os_errors_of_the_output_become_one_line_output_errors(tmp_path, monkeypatch, code, words):
    """Item 5, simulated in-process by monkeypatching: a full disk while syncing, a read-only or forbidden folder
    when the temporary file is made."""
    target = tmp_path / "a.txt"
    target.write_text("old")

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OutputError, match=f"{target}: cannot write: {words}"), atomic_write(target) as handle:
        handle.write("new")
    monkeypatch.undo()
    monkeypatch.setattr("tempfile.mkstemp", fail)
    with pytest.raises(OutputError, match=f"{target}: cannot write: {words}"):
        write_json(target, {})
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_other_os_errors_of_the_callers_code_pass_through(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_write(tmp_path / "a.txt") as handle:
        handle.write((tmp_path / "missing-input").read_text())


def test_read_only_folder_is_caught_up_front(tmp_path, monkeypatch):
    """os.access is what check_output_path asks (root passes chmod, so it is monkeypatched here)."""
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(OutputError, match="permission denied"):
        check_output_path(tmp_path / "new" / "out.tsv")
    with pytest.raises(OutputError, match="permission denied"):
        check_output_path(tmp_path, directory=True)


def test_refuse_other_kind(tmp_path):
    mine = tmp_path / "notes.tsv"
    mine.write_text("my notes\n")
    ours = lambda p: p.read_text().startswith("filename\t")  # noqa: E731
    with pytest.raises(OutputError, match="notes.tsv: exists and is not a thce event list.*--overwrite"):
        refuse_other_kind(mine, looks_ours=ours, what="a thce event list")
    refuse_other_kind(mine, looks_ours=ours, what="a thce event list", overwrite=True)
    refuse_other_kind(tmp_path / "missing.tsv", looks_ours=ours, what="x")
    (tmp_path / "empty.tsv").write_text("")
    refuse_other_kind(tmp_path / "empty.tsv", looks_ours=ours, what="x")
