"""Dataset readers: each turns a data set as it lies on disk into manifest rows (:mod:`thce.data.manifest`).

- :func:`read_audioset`: AudioSet segment CSVs plus a folder of locally downloaded clips, labels mapped from
  AudioSet MIDs (with their ontology descendants) to ours; clips with two target events are excluded and counted,
  clips with none are background.
- :func:`read_esc50`: ESC-50 (``meta/esc50.csv``, ``audio/``); ``dog`` and ``crying_baby`` become ``dog`` and
  ``baby``, every other category background; folds kept in a ``fold`` column.
- :func:`read_folder`: one folder per class (``root/<label>/**/*.{wav,flac,ogg,mp3}``; ``background`` is background).
- :func:`read_checked_manifest`: a manifest CSV written by hand, validated (duplicates, missing files, unknown labels,
  optionally unreadable audio).

Every reader returns an :class:`ImportResult`: the rows, the clips left out because something is wrong with them
(``skipped``, each with the problem), the clips left out by design (``excluded``, e.g. two target events) and counts.
With ``strict=True`` a reader raises :class:`~thce.errors.DataError` at the first kind of bad input instead.

Finding a downloaded AudioSet clip. Downloaders name files differently; for a segment ``YTID, START, END`` the file
is looked up anywhere under the audio folder (subfolders included) by its name without extension, trying in order::

    YTID                      e.g. --4gqARaEJE.wav
    YTID_START                e.g. --4gqARaEJE_30.wav, --4gqARaEJE_30.000.flac, --4gqARaEJE_30000.ogg (ms)
    YTID_START_END            e.g. --4gqARaEJE_30_40.wav, --4gqARaEJE_30.000_40.000.flac, --4gqARaEJE_30000_40000.wav
    YTID_START-END            e.g. --4gqARaEJE_30-40.mp3

each also with a leading ``Y`` (``Y--4gqARaEJE.wav``, the PANNs downloader's names), and with START/END written as
integer seconds, as in the CSV (``30.000``), with one decimal, or in milliseconds. Extensions: wav, flac, ogg, oga,
opus, mp3 (preferred in that order when a name exists with several). A segment without a file counts as
``not_downloaded`` (not listed: the segment CSVs are that list).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from thce.audio.read import AUDIO_EXTENSIONS, probe_audio
from thce.data.manifest import SPLITS, ManifestRow, Skipped, describe_skipped, read_manifest, screen_rows
from thce.errors import ConfigError, DataError

log = logging.getLogger(__name__)

BACKGROUND_FOLDER = "background"

#: Our default labels and the AudioSet MIDs they stand for (each with its ontology descendants, see below).
AUDIOSET_LABELS: dict[str, tuple[str, ...]] = {
    "dog": ("/m/0bt9lr",),  # Dog
    "baby": ("/t/dd00002",),  # Baby cry, infant cry
    "gun": ("/m/032s66",),  # Gunshot, gunfire
}

#: Descendants of the default MIDs in the AudioSet ontology (ontology.json, v1), used when no ontology file is given.
AUDIOSET_DESCENDANTS: dict[str, tuple[str, ...]] = {
    "/m/0bt9lr": (  # Dog
        "/m/05tny_",  # Bark
        "/m/07r_k2n",  # Yip
        "/m/07qf0zm",  # Howl
        "/m/07rc7d9",  # Bow-wow
        "/m/0ghcn6",  # Growling
        "/t/dd00136",  # Whimper (dog)
    ),
    "/t/dd00002": (),  # Baby cry, infant cry: no children
    "/m/032s66": (  # Gunshot, gunfire
        "/m/04zjc",  # Machine gun
        "/m/02z32qm",  # Fusillade
        "/m/0_1c",  # Artillery fire
        "/m/073cg4",  # Cap gun
    ),
}

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
    """

    rows: list[ManifestRow]
    skipped: list[Skipped] = field(default_factory=list)
    excluded: list[Skipped] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def label_counts(self) -> dict[str, int]:
        """Rows per label (``"background"`` for the empty label), sorted by name."""
        return dict(sorted(Counter(row.label or "background" for row in self.rows).items()))

    @property
    def left_out(self) -> list[Skipped]:
        """``skipped`` then ``excluded``: everything that goes to ``skipped.csv``."""
        return [*self.skipped, *self.excluded]


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


def load_ontology(path: str | os.PathLike) -> dict[str, tuple[str, ...]]:
    """Read the AudioSet ``ontology.json`` (a list of ``{"id", "name", "child_ids", ...}``) as ``{mid: child_ids}``.

    Raises:
        ConfigError: unreadable or not in that shape.
    """
    path = Path(path)
    try:
        nodes = json.loads(path.read_text(encoding="utf-8"))
        return {str(n["id"]): tuple(str(c) for c in n.get("child_ids", [])) for n in nodes}
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{path}: not an AudioSet ontology.json (list of {{id, child_ids}}): {exc}") from exc


def expand_descendants(mids: Iterable[str], children: Mapping[str, Sequence[str]]) -> set[str]:
    """``mids`` and all their descendants in ``children`` (``{mid: child mids}``; cycles are harmless).

    >>> sorted(expand_descendants(["/a"], {"/a": ["/b"], "/b": ["/c"]}))
    ['/a', '/b', '/c']
    """
    out: set[str] = set()
    stack = list(mids)
    while stack:
        mid = stack.pop()
        if mid not in out:
            out.add(mid)
            stack.extend(children.get(mid, ()))
    return out


def audioset_mid_labels(
    label_map: Mapping[str, Sequence[str]] | None = None, ontology: Mapping[str, Sequence[str]] | None = None
) -> dict[str, str]:
    """``{mid: our label}`` for every MID of ``label_map`` (default :data:`AUDIOSET_LABELS`) and its descendants
    (from ``ontology``, default :data:`AUDIOSET_DESCENDANTS`).

    Raises:
        ConfigError: a MID falls under two labels (e.g. one label's MID descends from another's).
    """
    label_map = validate_label_map(dict(label_map or AUDIOSET_LABELS), source="AudioSet label map")
    children = AUDIOSET_DESCENDANTS if ontology is None else ontology
    if ontology is None:
        unknown = sorted(m for mids in label_map.values() for m in mids if m not in AUDIOSET_DESCENDANTS)
        if unknown:
            log.info("AudioSet: no ontology given; %s used without descendants (pass ontology.json to add them)",
                     ", ".join(unknown))  # fmt: skip
    out: dict[str, str] = {}
    for label, mids in label_map.items():
        for mid in expand_descendants(mids, children):
            if mid in out and out[mid] != label:
                raise ConfigError(f"AudioSet label map: {mid} falls under both {out[mid]!r} and {label!r}")
            out[mid] = label
    return out


# ----------------------------------------------------------------------------------------------------------------------
# AudioSet


@dataclass(frozen=True)
class AudioSetSegment:
    """One row of a segment CSV."""

    ytid: str
    start_s: float
    end_s: float
    mids: tuple[str, ...]
    source: str  # "file.csv:line"


def parse_segments(csv_path: str | os.PathLike) -> tuple[list[AudioSetSegment], list[Skipped]]:
    """Rows of an AudioSet segment CSV (``#`` lines skipped; ``YTID, start_seconds, end_seconds, "mid,mid"``).

    Returns:
        ``(segments, malformed)``: malformed rows as :class:`Skipped` naming file and line.

    Raises:
        DataError: the file cannot be read.
    """
    csv_path = Path(csv_path)
    segments: list[AudioSetSegment] = []
    malformed: list[Skipped] = []
    try:
        handle = csv_path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{csv_path}: cannot read segment CSV ({exc})") from exc
    with handle:
        for line_no, fields in enumerate(csv.reader(handle, skipinitialspace=True), start=1):
            if not fields or not "".join(fields).strip() or fields[0].lstrip().startswith("#"):
                continue
            where = f"{csv_path.name}:{line_no}"
            if len(fields) < 4:
                malformed.append(Skipped(fields[0], f"malformed segment row {fields!r} (expected YTID, start, end, "
                                         '"mid,mid")', where))  # fmt: skip
                continue
            ytid = fields[0].strip()
            try:
                start, end = float(fields[1]), float(fields[2])
            except ValueError:
                malformed.append(Skipped(ytid, f"start/end {fields[1]!r}, {fields[2]!r} are not numbers", where))
                continue
            mids = tuple(m.strip() for f in fields[3:] for m in f.split(",") if m.strip())
            if not ytid or end <= start:
                malformed.append(Skipped(ytid, f"malformed segment (YTID {ytid!r}, {start} .. {end} s)", where))
                continue
            segments.append(AudioSetSegment(ytid, start, end, mids, where))
    return segments, malformed


def _time_forms(seconds: float) -> list[str]:
    forms = [f"{seconds:.3f}", f"{seconds:.1f}", f"{seconds:g}", str(round(seconds * 1000))]
    if float(seconds).is_integer():
        forms.insert(0, str(int(seconds)))
    return list(dict.fromkeys(forms))


def audioset_file_stems(ytid: str, start_s: float, end_s: float) -> list[str]:
    """File names (without extension) tried for a segment, in order (see the module docstring).

    >>> audioset_file_stems("-abc", 30.0, 40.0)[:4]
    ['-abc', 'Y-abc', '-abc_30', 'Y-abc_30']
    """
    stems = [ytid]
    for start, end in zip(_time_forms(start_s), _time_forms(end_s)):
        stems += [f"{ytid}_{start}", f"{ytid}_{start}_{end}", f"{ytid}_{start}-{end}"]
    stems = list(dict.fromkeys(stems))
    return [name for stem in stems for name in (stem, f"Y{stem}")]


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


def read_audioset(
    segment_csvs: Sequence[str | os.PathLike],
    audio_dir: str | os.PathLike,
    *,
    label_map: Mapping[str, Sequence[str]] | None = None,
    ontology: Mapping[str, Sequence[str]] | None = None,
    split: str = "",
    strict: bool = False,
) -> ImportResult:
    """AudioSet segments that have a local audio file, as manifest rows.

    Args:
        segment_csvs: segment CSVs (e.g. ``balanced_train_segments.csv``, ``eval_segments.csv``).
        audio_dir: folder of downloaded clips (searched recursively; names: see the module docstring).
        label_map: our label -> MIDs (default :data:`AUDIOSET_LABELS`); each MID's descendants count too.
        ontology: ``{mid: child mids}`` (see :func:`load_ontology`); default: :data:`AUDIOSET_DESCENDANTS`.
        split: split given to every row (e.g. ``"test"`` for the eval segments), or empty (split by seed later).
        strict: raise on a malformed row or a duplicated segment instead of skipping it.

    Returns:
        Rows with ``group`` = YTID and extra columns ``ytid,start_s,end_s``; ``excluded`` lists the downloaded
        clips with two target events; counts: ``segments``, ``multi_target`` (all such segments, downloaded or not),
        ``not_downloaded``, ``duplicate``, ``malformed``, ``imported``.

    Raises:
        DataError: ``audio_dir`` is not a folder, a CSV cannot be read, or (``strict``) a bad row.
        ConfigError: bad label map or split.
    """
    if split and split not in SPLITS:
        raise ConfigError(f"split {split!r} is not one of {', '.join(SPLITS)} or empty")
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise DataError(f"{audio_dir}: audio folder not found")
    mid_label = audioset_mid_labels(label_map, ontology)
    files = index_audio_files(audio_dir)
    result = ImportResult(rows=[])
    counts = Counter({"segments": 0, "multi_target": 0, "not_downloaded": 0, "duplicate": 0, "malformed": 0})
    seen: dict[tuple[str, float], str] = {}
    for csv_path in segment_csvs:
        segments, malformed = parse_segments(csv_path)
        if not segments:
            why = f"{malformed[0].source}: {malformed[0].problem}" if malformed else "no rows"
            raise DataError(
                f"{csv_path}: not an AudioSet segment list ({why}; expected rows YTID, start_seconds, end_seconds, "
                '"mid,mid" as in balanced_train_segments.csv)'
            )
        counts["malformed"] += len(malformed)
        result.skipped += malformed
        for seg in segments:
            counts["segments"] += 1
            targets = sorted({mid_label[m] for m in seg.mids if m in mid_label})
            path = next((files[s] for s in audioset_file_stems(seg.ytid, seg.start_s, seg.end_s) if s in files), None)
            shown = str(path) if path else f"{seg.ytid}_{seg.start_s:g}"
            key = (seg.ytid, round(seg.start_s, 3))
            if key in seen:
                counts["duplicate"] += 1
                result.skipped.append(Skipped(shown, f"duplicate segment (first listed at {seen[key]})", seg.source))
                continue
            seen[key] = seg.source
            if len(targets) > 1:
                counts["multi_target"] += 1
                if path is not None:
                    result.excluded.append(Skipped(
                        shown, f"{len(targets)} target events ({', '.join(targets)}): excluded, one event per clip",
                        seg.source,
                    ))  # fmt: skip
                continue
            if path is None:
                counts["not_downloaded"] += 1
                continue
            extra = {"ytid": seg.ytid, "start_s": f"{seg.start_s:.3f}", "end_s": f"{seg.end_s:.3f}"}
            label = targets[0] if targets else ""
            result.rows.append(ManifestRow(path=absolute(path), label=label, split=split, group=seg.ytid, extra=extra))
    counts["imported"] = len(result.rows)
    result.counts = dict(counts)
    if counts["not_downloaded"]:
        log.info("AudioSet: %d of %d segments have no file in %s", counts["not_downloaded"], counts["segments"],
                 audio_dir)  # fmt: skip
    if not result.rows and counts["not_downloaded"] == counts["segments"]:
        raise DataError(
            f"{audio_dir}: none of the {counts['segments']} segments listed has a file here (names tried for "
            "YTID, START: YTID.wav, YTID_START.wav, YTID_START_END.flac, ..., see `thce data import audioset -h`)"
        )
    _finish(result, strict, str(audio_dir))
    return result


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
    with meta.open(newline="", encoding="utf-8") as handle:
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
    _finish(result, strict, str(meta))
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
    _finish(result, strict, str(root), expected="ROOT/<label>/**/*.wav|flac|ogg|mp3")
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
    _finish(result, strict, str(csv_path))
    return result


def _finish(result: ImportResult, strict: bool, source: str, expected: str = "") -> None:
    """Raise when nothing can be imported (an empty manifest is never a result) or, ``strict``, when a clip was
    skipped; otherwise warn about the skipped clips."""
    if not result.rows:
        found = f"; {describe_skipped(result.skipped, limit=2)}" if result.skipped else ""
        excluded = f"; {len(result.excluded)} excluded by design" if result.excluded else ""
        hint = f" (expected {expected})" if expected else ""
        raise DataError(f"{source}: no clips to import{hint}{found}{excluded}")
    if result.skipped:
        if strict:
            raise DataError(f"{source}: {describe_skipped(result.skipped)}")
        log.warning("import: %s", describe_skipped(result.skipped))
