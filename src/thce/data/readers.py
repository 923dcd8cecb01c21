"""Dataset readers: each turns a data set as it lies on disk into manifest rows (:mod:`thce.data.manifest`).

- :func:`thce.data.audioset.read_audioset` (its own module): AudioSet segment CSVs plus a folder of downloaded
  clips, labels mapped from AudioSet MIDs with their ontology descendants; :func:`~thce.data.audioset.
  read_audioset_strong` the same from AudioSet's strong-label TSVs, with the events' times.
- :func:`thce.data.dcase2017.read_dcase2017_task2` (its own module): DCASE 2017 Task 2's mixtures with their events.
- :func:`read_esc50`: ESC-50 (``meta/esc50.csv``, ``audio/``); ``dog`` and ``crying_baby`` become ``dog`` and
  ``baby``, every other category background; folds kept in a ``fold`` column.
- :func:`read_folder`: one folder per class (``root/<label>/**/*.{wav,flac,ogg,mp3}``; ``background`` is background).
- :func:`read_checked_manifest`: a manifest CSV written by hand, validated (duplicates, missing files, unknown labels,
  optionally unreadable audio).

Every reader returns an :class:`ImportResult`: the rows, the clips left out because something is wrong with them
(``skipped``, each with the problem), the clips left out by design (``excluded``, e.g. two target events) and counts.
With ``strict=True`` a reader raises :class:`~thce.errors.DataError` at the first kind of bad input instead.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tomllib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from thce.audio.read import AUDIO_EXTENSIONS, probe_audio
from thce.data.manifest import ManifestRow, Skipped, describe_skipped, read_manifest, screen_rows
from thce.data.strong import StrongLabels
from thce.errors import ConfigError, DataError
from thce.io import read_text

log = logging.getLogger(__name__)

BACKGROUND_FOLDER = "background"
#: ESC-50 categories that are our labels by default; every other category is background.
ESC50_LABELS: dict[str, tuple[str, ...]] = {"dog": ("dog",), "baby": ("crying_baby",)}


@dataclass
class ImportResult:
    """What a reader found.

    Attributes:
        rows: manifest rows, paths absolute.
        skipped: clips left out because of a problem with them (missing file, duplicate, unknown label, ...).
        excluded: clips left out by design (e.g. AudioSet clips with two target events).
        counts: reader-specific tallies, e.g. ``{"segments": 120, "multi_target": 3, "not_downloaded": 40}``.
        strong: the rows' strong labels (:mod:`thce.data.strong`) from readers of data sets that have them (written
            as ``events.tsv`` beside the manifest), else ``None``.
    """

    rows: list[ManifestRow]
    skipped: list[Skipped] = field(default_factory=list)
    excluded: list[Skipped] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    strong: StrongLabels | None = None

    def label_counts(self) -> dict[str, int]:
        """Rows per label (``"background"`` for the empty label), sorted by name."""
        return dict(sorted(Counter(row.label or "background" for row in self.rows).items()))

    @property
    def left_out(self) -> list[Skipped]:
        """``skipped`` then ``excluded``: everything that goes to ``skipped.csv``."""
        return [*self.skipped, *self.excluded]

    def finish(self, strict: bool, source: str, expected: str = "") -> None:
        """Raise when nothing can be imported (an empty manifest is never a result) or, ``strict``, when a clip was
        skipped; otherwise warn about the skipped clips."""
        if not self.rows:
            found = f"; {describe_skipped(self.skipped, limit=2)}" if self.skipped else ""
            excluded = f"; {len(self.excluded)} excluded by design" if self.excluded else ""
            hint = f" (expected {expected})" if expected else ""
            raise DataError(f"{source}: no clips to import{hint}{found}{excluded}")
        if self.skipped:
            if strict:
                raise DataError(f"{source}: {describe_skipped(self.skipped)}")
            log.warning("import: %s", describe_skipped(self.skipped))


# ----------------------------------------------------------------------------------------------------------------------
# Label maps


def load_label_map(path: str | os.PathLike) -> dict[str, tuple[str, ...]]:
    """Read a label map (JSON or TOML, chosen by extension): our label -> source ids (AudioSet MIDs or ESC-50
    categories). A top-level ``labels`` table is used if present. Example (TOML)::

        dog = ["/m/0bt9lr"]              # a string or a list of strings
        baby = "/t/dd00002"
        [labels]                         # alternatively everything under [labels]

    Raises:
        ConfigError: unreadable file, wrong shape, ``background`` as a label, or an id under two labels.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read label map ({exc})") from exc
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: label map is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'} "
                          f"({exc})") from exc  # fmt: skip
    if isinstance(data, dict) and isinstance(data.get("labels"), dict):
        data = data["labels"]
    return validate_label_map(data, source=str(path))


def validate_label_map(data: object, *, source: str = "label map") -> dict[str, tuple[str, ...]]:
    """Check and normalise ``{label: id or [ids]}``; see :func:`load_label_map`."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{source}: expected a table of label = [ids], got {type(data).__name__}")
    out: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for label, ids in data.items():
        label = str(label).strip()
        if not label or label.lower() == "background":
            raise ConfigError(f"{source}: label {label!r} is not allowed (background is implicit: unmapped clips)")
        if isinstance(ids, str):
            ids = [ids]
        if not isinstance(ids, (list, tuple)) or not ids or not all(isinstance(i, str) and i.strip() for i in ids):
            raise ConfigError(f"{source}: {label} must map to a non-empty string or list of strings, got {ids!r}")
        for source_id in ids:
            source_id = source_id.strip()
            if source_id in owner and owner[source_id] != label:
                raise ConfigError(f"{source}: {source_id!r} is mapped to both {owner[source_id]!r} and {label!r}")
            owner[source_id] = label
        out[label] = tuple(dict.fromkeys(i.strip() for i in ids))
    return out


def index_audio_files(root: str | os.PathLike) -> dict[str, Path]:
    """``{name without extension: path}`` of the audio files under ``root`` (recursively; hidden files ignored).
    When one name exists with several extensions, the first in :data:`~thce.audio.read.AUDIO_EXTENSIONS` wins."""
    rank = {ext: i for i, ext in enumerate(AUDIO_EXTENSIONS)}
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            stem, ext = os.path.splitext(name)
            ext = ext.lower()
            if name.startswith(".") or ext not in rank:
                continue
            path = Path(dirpath) / name
            have = found.get(stem)
            if have is None or rank[ext] < rank[have.suffix.lower()]:
                found[stem] = path
    return found


# ----------------------------------------------------------------------------------------------------------------------
# ESC-50


def read_esc50(
    root: str | os.PathLike,
    *,
    label_map: Mapping[str, Sequence[str]] | None = None,
    strict: bool = False,
) -> ImportResult:
    """ESC-50 (``root/meta/esc50.csv`` and ``root/audio/``) as manifest rows.

    Args:
        root: the ESC-50 folder.
        label_map: our label -> ESC-50 categories (default :data:`ESC50_LABELS`: dog -> dog, crying_baby -> baby);
            every other category is background.
        strict: raise on a missing audio file or a duplicated row instead of skipping it.

    Returns:
        Rows with ``group`` = the source recording (``src_file``; clips cut from one recording stay together) and
        extra columns ``fold`` (1-5, kept for fold-wise evaluation) and ``category``.

    Raises:
        DataError: the meta CSV is missing or lacks a column; (``strict``) a bad row.
        ConfigError: a mapped category does not occur in the meta CSV (a typo would silently give no clips).
    """
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise DataError(f"{meta}: ESC-50 meta file not found (expected ROOT/meta/esc50.csv)")
    category_label = {
        cat: label
        for label, cats in validate_label_map(dict(label_map or ESC50_LABELS), source="ESC-50 label map").items()
        for cat in cats
    }
    with io.StringIO(read_text(meta, what="ESC-50 meta file"), newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("filename", "fold", "category") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{meta}: missing column(s) {', '.join(missing)}")
        records = list(enumerate(reader, start=2))
    categories = {r["category"] for _, r in records}
    unknown = sorted(set(category_label) - categories)
    if unknown:
        raise ConfigError(f"ESC-50 label map: categories {unknown} do not occur in {meta}")
    rows: list[ManifestRow] = []
    for line_no, record in records:
        filename = (record.get("filename") or "").strip()
        path = absolute(root / "audio" / filename)
        src = (record.get("src_file") or "").strip()
        rows.append(ManifestRow(
            path=path, label=category_label.get(record["category"], ""), group=f"esc50-{src}" if src else filename,
            extra={"fold": (record.get("fold") or "").strip(), "category": record["category"]},
        ))  # fmt: skip
    kept, skipped = screen_rows(rows, check_files=True, source=meta.name)
    result = ImportResult(rows=kept, skipped=skipped, counts={"listed": len(rows), "imported": len(kept)})
    result.finish(strict, str(meta))
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Folder per class


def read_folder(
    root: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    background: str = BACKGROUND_FOLDER,
    strict: bool = False,
) -> ImportResult:
    """``root/<label>/**/*.{wav,flac,ogg,mp3}`` as manifest rows; the ``background`` folder is background.

    Args:
        root: folder with one subfolder per class (nested folders inside a class are searched too).
        classes: allowed labels; files of another class folder are skipped as "unknown label". ``None``: every
            folder is a class.
        background: name of the background folder.
        strict: open every file's header (:func:`~thce.audio.read.probe_audio`, as ``check_audio`` of
            :func:`read_checked_manifest`) and raise on the first bad or skipped file.

    Returns:
        Rows with ``group`` = the file's path below its class folder, without extension, and the path as found
        (absolute, symbolic links kept). Skipped: files directly in ``root``, files with an extension other than
        :data:`~thce.audio.read.AUDIO_EXTENSIONS`, unknown labels, broken symbolic links. Hidden files and folders are
        ignored.

    Raises:
        DataError: ``root`` is not a folder or holds no usable audio file; (``strict``) a bad or skipped file.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    allowed = None if classes is None else set(classes)
    result = ImportResult(rows=[])
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            result.skipped.append(Skipped(str(entry), "not inside a class folder (expected ROOT/<label>/...)", "folder"))
            continue
        label = "" if entry.name == background else entry.name
        for dirpath, dirnames, filenames in os.walk(entry):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                if path.suffix.lower() not in AUDIO_EXTENSIONS:
                    result.skipped.append(Skipped(str(path), f"unsupported extension {path.suffix or '(none)'!r} "
                                                  f"(expected one of {', '.join(AUDIO_EXTENSIONS)})", "folder"))
                    continue  # fmt: skip
                if label and allowed is not None and label not in allowed:
                    result.skipped.append(Skipped(str(path), f"unknown label {label!r} (class folder not among "
                                                  f"{', '.join(sorted(allowed))} or {background!r})", "folder"))
                    continue  # fmt: skip
                problem = _missing(path) or (probe_audio(path) if strict else None)
                if problem:
                    result.skipped.append(Skipped(str(path), problem, "folder"))
                    continue
                group = path.relative_to(entry).with_suffix("").as_posix()
                result.rows.append(ManifestRow(path=absolute(path), label=label, group=f"{entry.name}/{group}"))
    result.counts = {"imported": len(result.rows), "skipped": len(result.skipped)}
    result.finish(strict, str(root), expected="ROOT/<label>/**/*.wav|flac|ogg|mp3")
    return result


def absolute(path: str | os.PathLike) -> Path:
    """``path`` made absolute without resolving symbolic links: manifests and messages keep the name the user has
    (a link ``gun/take1.wav`` stays that, not its target's name)."""
    return Path(os.path.abspath(path))


def _missing(path: Path) -> str | None:
    """The problem of a path found by listing a folder that is not a readable file (e.g. a broken link), or None."""
    if path.is_file():
        return None
    if path.is_symlink() and not path.exists():
        return f"audio file not found (broken symbolic link to {os.readlink(path)})"
    return "not a file"


# ----------------------------------------------------------------------------------------------------------------------
# Hand-written manifest


def read_checked_manifest(
    csv_path: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    check_audio: bool = False,
    strict: bool = False,
) -> ImportResult:
    """A manifest CSV written by hand, validated row by row.

    Structural problems (missing column, unknown split, empty path) raise :class:`DataError` with file and line
    (:func:`~thce.data.manifest.read_manifest`). Row problems are skipped and listed (:func:`screen_rows`):
    duplicated rows, conflicting labels for one file, missing files, labels not in ``classes``; with
    ``check_audio`` also files whose header libsndfile cannot read (empty, truncated WAV, unsupported codec, not
    audio; :func:`~thce.audio.read.probe_audio`, no decoding).

    Raises:
        DataError: structural problem, or (``strict``) any row problem.
    """
    csv_path = Path(csv_path)
    rows = read_manifest(csv_path)
    kept, skipped = screen_rows(rows, classes=classes, check_files=True, source=csv_path.name)
    if check_audio:
        line_of = {id(row): i + 2 for i, row in enumerate(rows)}
        good = []
        for row in kept:
            problem = probe_audio(row.path)
            if problem:
                skipped.append(Skipped(str(row.path), problem, f"{csv_path.name}:{line_of[id(row)]}"))
            else:
                good.append(row)
        kept = good
    result = ImportResult(rows=kept, skipped=skipped, counts={"listed": len(rows), "imported": len(kept)})
    result.finish(strict, str(csv_path))
    return result
