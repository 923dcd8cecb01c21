"""The manifest: the exchange format every reader produces and every command accepts.

A manifest CSV has the columns ``path,label,split,group`` (extra columns such as ``onset_s,offset_s`` are kept):

- ``path``: audio file, relative to the CSV's folder (absolute paths are accepted);
- ``label``: one event name, or empty for background (a clip has one event or none, as in the paper);
- ``split``: ``train``/``val``/``test``, or empty (then :mod:`thce.data.splits` assigns one by seed);
- ``group``: the source recording, so that clips sharing a source never straddle splits.

Readers of whole data sets (AudioSet, ESC-50, folder per class) are in :mod:`thce.data.readers`. Clips left out of an
import or a run are :class:`Skipped` records (path, problem, source), written as ``skipped.csv`` by
:func:`write_skipped`; :func:`screen_rows` drops duplicated rows, files listed with conflicting labels, missing files
and unknown labels, and :func:`check_split_coverage` names every class without clips in a split.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from thce.errors import DataError
from thce.io import atomic_write, ensure_dir, read_text, starts_with

COLUMNS = ("path", "label", "split", "group")
#: The splits a manifest row may name, in this order everywhere (experiment, splits, mixing, readers).
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ManifestRow:
    """One clip. ``path`` is absolute once read; ``label`` is ``""`` for background."""

    path: Path
    label: str = ""
    split: str = ""
    group: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


def manifest_root(csv_path: str | os.PathLike) -> Path:
    """The folder a manifest's relative paths start from: the CSV's folder, its target's when the CSV is a symbolic
    link; not resolved otherwise (messages and skipped.csv keep the paths the user has)."""
    csv_path = Path(csv_path)
    return (csv_path.resolve() if csv_path.is_symlink() else Path(os.path.abspath(csv_path))).parent


def read_manifest(csv_path: str | os.PathLike) -> list[ManifestRow]:
    """Read and validate a manifest CSV; paths are resolved against the CSV's folder.

    Raises:
        DataError: the file is missing, lacks a required column, or a row has an unknown split or no path.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: manifest not found")
    root = manifest_root(csv_path)
    rows: list[ManifestRow] = []
    text = read_text(csv_path, what="manifest")  # not UTF-8, unreadable: one line naming it
    with io.StringIO(text, newline="") as handle:
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
    ensure_dir(csv_path.parent, for_path=csv_path)  # an unwritable location: one line naming it (OutputError)
    root = Path(os.path.abspath(csv_path)).parent
    extra_columns = sorted({k for row in rows for k in row.extra})
    with atomic_write(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*COLUMNS, *extra_columns])
        for row in rows:
            path = Path(os.path.abspath(row.path))  # not resolved: a symbolic link keeps its own name
            try:
                shown = path.relative_to(root).as_posix()
            except ValueError:
                shown = str(path)
            writer.writerow([shown, row.label, row.split, row.group, *(row.extra.get(k, "") for k in extra_columns)])
    return csv_path


# ----------------------------------------------------------------------------------------------------------------------
# Problems: what was left out and why (``skipped.csv``), and screening rows before any audio is read.

SKIPPED_COLUMNS = ("path", "problem", "source")


@dataclass(frozen=True)
class Skipped:
    """A clip left out of a run or an import, with the reason.

    Attributes:
        path: the file (as given).
        problem: what is wrong, in words (e.g. ``"audio file not found"``).
        source: where the clip came from, e.g. ``"manifest.csv:12"`` or ``"features"``.
        index: position of the clip in the list it was skipped from (e.g. a feature store), if any.
    """

    path: str
    problem: str
    source: str = ""
    index: int | None = None


def skipped_list_path(out: Path) -> Path:
    """Where a list of what was left out goes beside ``out``: ``manifest.csv`` -> ``manifest.skipped.csv``,
    ``events.tsv`` -> ``events.skipped.csv`` (imports and ``thce detect --skip-bad``; one format for both,
    :func:`write_skipped`'s)."""
    return out.with_name(f"{out.stem}.skipped.csv")


#: What a list of :func:`write_skipped` is called in refusals to replace a file of another kind.
SKIPPED_LIST_KIND = "a thce list of skipped files"


def looks_like_skipped_list(path: Path) -> bool:
    """Whether ``path`` starts as :func:`write_skipped` starts a file (its header)."""
    return starts_with(",".join(SKIPPED_COLUMNS).encode())(path)


def write_skipped(items: Sequence[Skipped], csv_path: str | os.PathLike) -> Path:
    """Write ``path,problem,source`` rows atomically (a header only when nothing was skipped). Returns the path."""
    csv_path = Path(csv_path)
    with atomic_write(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(SKIPPED_COLUMNS)
        for item in items:
            writer.writerow([item.path, item.problem, item.source])
    return csv_path


def read_skipped(csv_path: str | os.PathLike) -> list[Skipped]:
    """Inverse of :func:`write_skipped`."""
    with Path(csv_path).open(newline="", encoding="utf-8") as handle:
        return [Skipped(r["path"], r["problem"], r.get("source") or "") for r in csv.DictReader(handle)]


def describe_skipped(items: Sequence[Skipped], *, limit: int = 5) -> str:
    """One message listing the first ``limit`` problems (for errors in strict mode and for logs)."""
    shown = "; ".join(f"{item.path}: {item.problem}" for item in items[:limit])
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return f"{len(items)} bad {'clip' if len(items) == 1 else 'clips'}: {shown}{more}"


def screen_rows(
    rows: Sequence[ManifestRow],
    *,
    classes: Sequence[str] | None = None,
    check_files: bool = True,
    source: str = "",
    strict: bool = False,
) -> tuple[list[ManifestRow], list[Skipped]]:
    """Drop the rows a run cannot use, saying why: duplicated rows, missing files, unknown labels.

    - The same file listed twice with the same label: the first row is kept, the others skipped ("duplicate").
    - The same file listed with different labels: every row of it is skipped (which label is right is unknown).
    - ``check_files``: a path that is not an existing file is skipped.
    - ``classes``: a label that is neither empty (background) nor one of ``classes`` is skipped.

    Args:
        rows: manifest rows (paths absolute, as :func:`read_manifest` gives them).
        classes: allowed event labels; ``None`` allows any label.
        check_files: stat every path.
        source: prefix of each :attr:`Skipped.source` (e.g. the manifest's name); the row number is appended.
        strict: raise instead of skipping.

    Returns:
        ``(kept_rows, skipped)``; kept rows keep their order.

    Raises:
        DataError: ``strict`` and at least one row is bad (the message lists them).
    """
    skipped: list[Skipped] = []

    def where(i: int) -> str:
        return f"{source}:{i + 2}" if source else f"row {i + 1}"  # +2: header line, 1-based

    labels_of: dict[Path, set[str]] = {}
    for row in rows:
        labels_of.setdefault(Path(row.path), set()).add(row.label)
    allowed = None if classes is None else set(classes) | {""}
    seen: dict[Path, int] = {}
    kept: list[ManifestRow] = []
    for i, row in enumerate(rows):
        path = Path(row.path)
        if len(labels_of[path]) > 1:
            shown = ", ".join(repr(label) for label in sorted(labels_of[path]))
            skipped.append(Skipped(str(path), f"listed with conflicting labels {shown}", where(i)))
            continue
        if path in seen:
            skipped.append(Skipped(str(path), f"duplicate row (first listed at {where(seen[path])})", where(i)))
            continue
        seen[path] = i
        if allowed is not None and row.label not in allowed:
            expected = ", ".join(list(classes or [])) + " or empty (background)"
            skipped.append(Skipped(str(path), f"unknown label {row.label!r} (expected {expected})", where(i)))
            continue
        if check_files and not path.is_file():
            problem = "audio file not found" if not path.exists() else "not a file"
            skipped.append(Skipped(str(path), problem, where(i)))
            continue
        kept.append(row)
    if strict and skipped:
        raise DataError(describe_skipped(skipped))
    return kept, skipped


def check_split_coverage(rows: Sequence[ManifestRow], classes: Sequence[str]) -> None:
    """Raise :class:`DataError` naming every (split, class) pair without clips; background counts as a class.

    Every class needs training clips to be learnt, validation clips for early stopping and test clips for its EER.
    """
    have = {(row.split, row.label) for row in rows}
    missing = [
        f"{split}/{label or 'background'}"
        for split in SPLITS
        for label in [*classes, ""]
        if (split, label) not in have
    ]
    if missing:
        raise DataError(
            f"no clips of {', '.join(missing)}: every class needs clips in every split (add clips, fix the manifest's "
            "split column, or leave split empty so that clips are split by seed)"
        )
