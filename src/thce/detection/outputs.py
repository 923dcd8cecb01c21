"""The output files of ``thce detect`` and ``thce export``: their format from the file name, and the checks made
before any work (and before torch is imported) that the path can be written and holds nothing of another kind."""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from thce.errors import ConfigError, OutputError
from thce.io import check_output_file, check_output_path, read_head

#: Extensions of ``thce detect --out`` and the format each gets (anything else is refused).
EVENT_SUFFIXES = {".json": "json", ".tsv": "tsv", ".csv": "tsv", ".txt": "tsv"}
#: Export formats, and the extensions of each: ``--format`` is inferred from them, and a mismatch is refused.
EXPORT_FORMATS = ("onnx", "torchscript")
EXPORT_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript", ".ts": "torchscript",
                   ".torchscript": "torchscript"}  # fmt: skip


def writes_through(path: Path) -> bool:
    """A character device or FIFO (``/dev/null``, ``/dev/stdout``, a pipe): written in place, any name goes."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def _detection_json(path: Path) -> bool:
    head = read_head(path)
    return head.lstrip().startswith(b"{") and b'"settings"' in head


def _event_tsv(path: Path) -> bool:
    from thce.detection.events import TSV_COLUMNS  # only when a file is there to recognise

    return read_head(path).startswith("\t".join(TSV_COLUMNS).encode())


def check_events_out(path: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path] = ()) -> str:
    """Before any work: ``path`` can be written, its extension names a format ``thce detect`` writes (any name for a
    device or FIFO), it is none of ``inputs`` and not a file of another kind (unless ``overwrite``,
    :func:`thce.io.check_output_file`). Returns ``json`` or ``tsv``."""
    path = Path(path)
    check_output_path(path)
    kind = EVENT_SUFFIXES.get(path.suffix.lower())
    if kind is None and not writes_through(path):
        raise OutputError(
            f"{path}: cannot tell the event-list format from the extension {path.suffix or '(none)'!r}: use .json "
            f"(detection JSON) or .tsv, .csv, .txt (tab-separated event list)"
        )
    if kind == "json":
        check_output_file(path, looks_ours=_detection_json, what="a thce detection JSON", overwrite=overwrite,
                          inputs=inputs)  # fmt: skip
        return "json"
    what = "a thce event list (header filename, onset, offset, event_label, score)"
    check_output_file(path, looks_ours=_event_tsv, what=what, overwrite=overwrite, inputs=inputs)
    return "tsv"


def infer_export_format(out: str | Path, fmt: str | None) -> str:
    """The export format for ``out``: ``fmt`` if given (refused when the extension names the other format), else
    the one its extension names (:data:`EXPORT_SUFFIXES`)."""
    out = Path(out)
    if fmt is not None and fmt not in EXPORT_FORMATS:
        raise ConfigError(f"format: expected one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    named = EXPORT_SUFFIXES.get(out.suffix.lower())
    if fmt is None:
        if named is None:
            raise ConfigError(
                f"{out}: cannot tell the format from the extension {out.suffix or '(none)'!r}: name the file "
                f"*.onnx or *.pt, or give --format onnx|torchscript"
            )
        return named
    if named is not None and named != fmt:
        raise ConfigError(
            f"{out}: the extension {out.suffix!r} is for {named}, not {fmt}: name the file "
            f"{out.with_suffix('.onnx' if fmt == 'onnx' else '.pt').name} or use --format {named}"
        )
    return fmt


def _torchscript(path: Path) -> bool:
    """A zip with ``code/`` in it (``torch.save`` archives have none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())


def _onnx(path: Path) -> bool:
    """A protobuf ModelProto: field 1 (``ir_version``, a varint) comes first."""
    return read_head(path, 1) == b"\x08"


def _export_metadata(path: Path) -> bool:
    head = read_head(path).lstrip()
    return head.startswith(b"{") and b'"format"' in head and b'"method"' in head


def check_export_out(
    out: str | Path, fmt: str | None, *, overwrite: bool = False, inputs: Iterable[str | Path] = ()
) -> str:
    """Before any work: the format (:func:`infer_export_format`), and that ``out`` and ``<out>.json`` can be written,
    are none of ``inputs`` (the checkpoint) and hold nothing but an earlier export of that format (unless
    ``overwrite``). Returns the format."""
    out = Path(out)
    fmt = infer_export_format(out, fmt)
    looks: Callable[[Path], bool] = _torchscript if fmt == "torchscript" else _onnx
    for path, looks_ours, what in (
        (out, looks, f"a {fmt} model"), (out.with_name(out.name + ".json"), _export_metadata, "thce export metadata")
    ):
        check_output_file(path, looks_ours=looks_ours, what=what, overwrite=overwrite, inputs=inputs)
    return fmt
