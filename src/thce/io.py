"""Output files: atomic writes of regular files (a reader never sees a half-written file, a kill never corrupts a
finished one), and the checks that keep a user's other things (devices, FIFOs, directories, files of another kind)
from being replaced.

Every OSError about an output path raised here becomes a :class:`thce.errors.OutputError` naming the path and the
problem, so the command line prints one line instead of a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from thce.errors import DataError, OutputError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
#: errnos of a write that fails because of where it goes (not because of what is written).
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (``lstat`` succeeds or fails with other than ENOENT/ENOTDIR)."""
    for candidate in (path, *path.parents):
        try:
            candidate.lstat()
            return candidate
        except (FileNotFoundError, NotADirectoryError):
            continue
    return Path(path.anchor or ".")


def output_error(path: str | os.PathLike, error: OSError) -> OutputError:
    """An :class:`OutputError` for ``error``, raised while writing ``path``, in one line naming what is wrong."""
    path = Path(path)
    if error.errno == errno.ENOTDIR:
        blocker = _nearest_existing(path.parent)
        if blocker.exists() and not blocker.is_dir():
            return OutputError(f"{path}: cannot write there: {blocker} is a file, not a directory")
    reason = {
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "read-only file system",
        errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EISDIR: "is a directory",
    }.get(error.errno or -1, (error.strerror or str(error)).lower())
    return OutputError(f"{path}: cannot write: {reason}")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _writable_through(mode: int) -> bool:
    """Character devices (``/dev/null``, a terminal) and FIFOs are written to in place, never replaced."""
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def check_output_path(path: str | os.PathLike, *, directory: bool = False) -> Path:
    """Check, before any work and without creating anything, that ``path`` can be written: a file (or, with
    ``directory``, a folder to create files in). Raises :class:`OutputError` naming the path and the problem.

    A file may be missing, a regular file (replaced atomically), or a character device or FIFO (written through);
    a directory, block device or socket is refused. Missing parents are fine if the nearest existing one is a
    writable directory."""
    path = Path(path)
    try:
        mode = path.stat().st_mode  # follows a symlink: what counts is what it points to
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as error:
        raise output_error(path, error) from None
    if mode is not None:
        if directory:
            if not stat.S_ISDIR(mode):
                raise OutputError(f"{path}: cannot write there: it is a file, not a directory")
            _check_dir_writable(path, path)
            return path
        if stat.S_ISDIR(mode):
            raise OutputError(f"{path}: is a directory; give a file name")
        if not (stat.S_ISREG(mode) or _writable_through(mode)):
            raise OutputError(f"{path}: is {_kind(mode)}; not written (give a regular file name)")
        if _writable_through(mode):
            if not os.access(path, os.W_OK):
                raise OutputError(f"{path}: cannot write: permission denied")
            return path
    parent = Path(os.path.realpath(path)).parent if path.is_symlink() else (path if directory else path.parent)
    existing = _nearest_existing(parent)
    if not existing.is_dir():
        raise OutputError(f"{path}: cannot write there: {existing} is a file, not a directory")
    _check_dir_writable(path, existing)
    return path


def _check_dir_writable(path: Path, directory: Path) -> None:
    if os.access(directory, os.W_OK | os.X_OK):
        return
    try:
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    where = "" if directory == path else f" ({directory})"
    raise OutputError(f"{path}: cannot write: {'read-only file system' if read_only else 'permission denied'}{where}")


def ensure_dir(path: str | os.PathLike, *, for_path: str | os.PathLike | None = None) -> Path:
    """``mkdir -p path``; an :class:`OutputError` naming ``for_path`` (the file to be written in it; default
    ``path``) and the problem if it cannot be made."""
    path = Path(path)
    named = Path(for_path) if for_path is not None else path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        where = "it" if named == path else str(path)
        raise OutputError(f"{named}: cannot write there: {where} is a file, not a directory") from None
    except OSError as error:
        raise output_error(named, error) from None
    return path


def refuse_other_kind(
    path: str | os.PathLike, *, looks_ours: Callable[[Path], bool], what: str, overwrite: bool = False
) -> None:
    """Refuse to replace an existing non-empty regular file at ``path`` that ``looks_ours`` does not recognise as
    ``what`` (e.g. "a thce event list"), unless ``overwrite``. Devices, FIFOs and missing files pass."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError:
        return
    if overwrite or not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        return
    try:
        ours = looks_ours(path)
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise OutputError(f"{path}: exists and is not {what}; not overwritten (pass --overwrite to replace it)")


def check_output_file(
    path: str | os.PathLike,
    *,
    looks_ours: Callable[[Path], bool],
    what: str,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
) -> Path:
    """The one rule for every file thce writes, checked before any work: ``path`` can be written
    (:func:`check_output_path`); it is none of ``inputs`` (the files the command reads: refused even with
    ``overwrite``); and an existing file is replaced only if ``looks_ours`` recognises it as ``what`` thce writes
    there (by its content or a marker), or with ``overwrite`` (:func:`refuse_other_kind`)."""
    path = check_output_path(path)
    refuse_input(path, inputs)
    refuse_other_kind(path, looks_ours=looks_ours, what=what, overwrite=overwrite)
    return path


def refuse_input(path: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """An :class:`OutputError` if the output ``path`` is the same file as one of ``inputs`` (links followed)."""
    path = Path(path)
    if not path.is_file():
        return
    for source in inputs:
        try:
            same = Path(source).is_file() and path.samefile(source)
        except OSError:
            same = False
        if same:
            raise OutputError(f"{path}: is also an input of this command ({source}); write to another file")


def read_head(path: Path, size: int = 4096) -> bytes:
    """The first ``size`` bytes of a file (for recognising what kind of file it is)."""
    with open(path, "rb") as handle:
        return handle.read(size)


def starts_with(prefix: bytes) -> Callable[[Path], bool]:
    """A ``looks_ours`` for :func:`refuse_other_kind`: the file begins with ``prefix`` (a header, a magic number)."""
    return lambda path: read_head(path, len(prefix)) == prefix


#: The first bytes of every PNG file.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: ``savefig(..., metadata=PNG_METADATA)``: the tEXt chunk by which :func:`thce_png` knows a picture thce drew.
PNG_METADATA = {"Software": "thce"}


def thce_png(path: Path) -> bool:
    """A PNG that thce drew (its ``Software`` tEXt chunk, :data:`PNG_METADATA`, comes before the image data)."""
    head = read_head(path, 4096)
    return head.startswith(PNG_SIGNATURE) and b"tEXtSoftware\x00thce" in head


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Write ``path``: a regular file (or a new one) through a temporary file beside it, fsynced and renamed over it
    on success; a character device or FIFO (``/dev/null``, a pipe) written through in place. A symlink is followed
    (its target is written, the link kept). A directory, block device or socket is refused, never replaced.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     target = pathlib.Path(folder) / "a.txt"
    ...     with atomic_write(target) as f:
    ...         _ = f.write("done")
    ...     target.read_text()
    'done'

    Raises:
        OutputError: the path cannot be written (named, with the problem); OSErrors of the caller's code inside the
            block pass through unchanged unless they say the disk is full or read-only.
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        info: os.stat_result | None = target.stat()
    except FileNotFoundError:
        info = None
    except OSError as error:
        raise output_error(path, error) from None
    if info is not None and not stat.S_ISREG(info.st_mode):
        if not _writable_through(info.st_mode):
            raise OutputError(f"{path}: is {_kind(info.st_mode)}; not replaced (give a regular file name)")
        try:
            handle = open(target, mode, **open_kwargs)
        except OSError as error:
            raise output_error(path, error) from None
        try:
            with handle:
                yield handle
        except OSError as error:
            if error.errno in _FULL or error.errno == errno.EPIPE:
                raise output_error(path, error) from None
            raise
        return
    parent = ensure_dir(target.parent, for_path=path)
    # mkstemp makes 0600 files; keep the mode of the file replaced, or give what open() would
    permissions = stat.S_IMODE(info.st_mode) if info is not None else 0o666 & ~_UMASK
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as error:
        raise output_error(path, error) from None
    try:
        try:
            os.chmod(tmp, permissions)
        except OSError as error:
            os.close(fd)
            raise output_error(path, error) from None
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            try:
                yield handle
            except OSError as error:
                if error.errno in _FULL:
                    raise output_error(path, error) from None
                raise
            try:
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as error:
                raise output_error(path, error) from None
        try:
            os.replace(tmp, target)
        except OSError as error:
            raise output_error(path, error) from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # already renamed, or the folder went away: nothing of ours is left to clean
        raise


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False)
        handle.write("\n")
    return Path(path)


def read_text(path: str | os.PathLike, what: str) -> str:
    """The UTF-8 text of ``path``, a file holding ``what`` (words for messages, e.g. "results file").

    Raises:
        DataError: ``"<path>: <what> not found"``, ``"... is not a file"`` or ``"<path>: cannot read the <what> (...)"``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found" if not path.exists() else f"{path}: {what} is not a file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the {what} ({error})") from None


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """The JSON in ``path`` (see :func:`read_text`); a :class:`DataError` naming it and where it is malformed."""
    try:
        return json.loads(read_text(path, what=what))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None


def replace_section(text: str, body: str, *, source: Path, start: str, end: str) -> str:
    """``text`` with what lies between the ``start`` and ``end`` marker lines replaced by ``body``."""
    if start not in text or end not in text or text.index(start) > text.index(end):
        raise DataError(f"{source}: no '{start}' ... '{end}' markers to write the results between")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def rewrite_section(path: Path, body: str, *, start: str, end: str) -> None:
    """Replace what lies between the ``start`` and ``end`` markers of the file ``path`` by ``body`` (atomically)."""
    text = replace_section(read_text(path, what="file to write the results into"), body, source=path, start=start,
                           end=end)  # fmt: skip
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(text)
