"""The manifest: the exchange format every reader produces and every command accepts.

A manifest CSV has the columns ``path,label,split,group`` (extra columns such as ``onset_s,offset_s`` are kept):

- ``path``: audio file, relative to the CSV's folder (absolute paths are accepted);
- ``label``: one event name, or empty for background (a clip has one event or none, as in the paper);
- ``split``: ``train``/``val``/``test``, or empty (then :mod:`thce.data.splits` assigns one by seed);
- ``group``: the source recording, so that clips sharing a source never straddle splits.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from thce.errors import DataError
from thce.io import atomic_write

COLUMNS = ("path", "label", "split", "group")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ManifestRow:
    """One clip. ``path`` is absolute once read; ``label`` is ``""`` for background."""

    path: Path
    label: str = ""
    split: str = ""
    group: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


def read_manifest(csv_path: str | os.PathLike) -> list[ManifestRow]:
    """Read and validate a manifest CSV; paths are resolved against the CSV's folder.

    Raises:
        DataError: the file is missing, lacks a required column, or a row has an unknown split or no path.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: manifest not found")
    root = csv_path.resolve().parent
    rows: list[ManifestRow] = []
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("path", "label") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{csv_path}: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
        for line_no, record in enumerate(reader, start=2):
            raw_path = (record.get("path") or "").strip()
            if not raw_path:
                raise DataError(f"{csv_path}:{line_no}: empty path")
            split = (record.get("split") or "").strip()
            if split and split not in SPLITS:
                raise DataError(f"{csv_path}:{line_no}: split {split!r} is not one of {', '.join(SPLITS)} or empty")
            path = Path(raw_path)
            rows.append(
                ManifestRow(
                    path=path if path.is_absolute() else root / path,
                    label=(record.get("label") or "").strip(),
                    split=split,
                    group=(record.get("group") or "").strip() or raw_path,
                    extra={k: v for k, v in record.items() if k not in COLUMNS and k is not None},
                )
            )
    if not rows:
        raise DataError(f"{csv_path}: manifest has no rows")
    return rows


def write_manifest(rows: list[ManifestRow], csv_path: str | os.PathLike) -> Path:
    """Write rows atomically, paths relative to the CSV's folder where possible. Returns the path written."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    root = csv_path.resolve().parent
    extra_columns = sorted({k for row in rows for k in row.extra})
    with atomic_write(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*COLUMNS, *extra_columns])
        for row in rows:
            path = Path(row.path)
            try:
                shown = path.resolve().relative_to(root).as_posix()
            except ValueError:
                shown = str(path)
            writer.writerow([shown, row.label, row.split, row.group, *(row.extra.get(k, "") for k in extra_columns)])
    return csv_path
