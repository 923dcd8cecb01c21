"""Saved scores: per file, the score over time as a sed_scores_eval score table.

A table is a tab-separated file ``<audio stem>.tsv`` with the header ``onset<TAB>offset<TAB><class>...`` and one row
per frame (one hop long; rows contiguous from 0 to the end of the file), the values being the score over time that
``thce detect`` thresholds (:mod:`thce.detection.localise`, after the median filter). This is the format
``sed_scores_eval.io.read_sed_scores`` reads (frames of digital silence hold ``-inf``: no threshold detects them),
so threshold-independent metrics (PSDS, collar-based curves) run on a folder of them, and
:func:`events_from_tables` (``thce events``) re-thresholds them without the model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from thce.errors import ConfigError, DataError
from thce.detection.events import DetectionResult, Event
from thce.io import atomic_write, read_head
from thce.detection.localise import curve_to_events

SCORE_SUFFIX = ".tsv"


def table_name(audio_path: str | os.PathLike) -> str:
    """``rec.wav`` -> ``rec.tsv`` (sed_scores_eval keys a table by the audio file's stem)."""
    return Path(audio_path).stem + SCORE_SUFFIX


def check_unique_stems(paths: Sequence[str | os.PathLike]) -> None:
    """Raise :class:`ConfigError` when two inputs would share a score table name (same stem, other folders)."""
    seen: dict[str, str] = {}
    for p in paths:
        name = table_name(p)
        if name in seen and seen[name] != os.fspath(p):
            raise ConfigError(
                f"{p} and {seen[name]} would both save their scores as {name}: score tables are keyed by the "
                "audio file's name; rename one or detect them in separate runs"
            )
        seen[name] = os.fspath(p)


def looks_like_table(path: Path) -> bool:
    """A file that starts with ``onset<TAB>offset<TAB>``."""
    return read_head(path, 64).startswith(b"onset\toffset\t")


def write_table(path: str | os.PathLike, edges: np.ndarray, curve: np.ndarray, classes: Sequence[str]) -> Path:
    """Write one score table atomically: ``edges`` ``(F + 1,)`` seconds, ``curve`` ``(F, L)``."""
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("\t".join(["onset", "offset", *classes]) + "\n")
        for j in range(curve.shape[0]):
            values = "\t".join(f"{v:.6f}" for v in curve[j])
            handle.write(f"{edges[j]:.6f}\t{edges[j + 1]:.6f}\t{values}\n")
    return path


def read_table(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """``(edges (F + 1,), curve (F, L), classes)`` of one score table.

    Raises:
        DataError: naming the file (and line) when it is not a score table.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read a score table ({getattr(error, 'strerror', None) or error})") from None
    header = lines[0].split("\t") if lines else []
    if len(header) < 3 or header[:2] != ["onset", "offset"]:
        raise DataError(f"{path}: not a score table (expected a header onset<TAB>offset<TAB><class>...)")
    rows = []
    for no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            values = [float(f) for f in fields]
        except ValueError:
            raise DataError(f"{path}:{no}: expected numbers, got {line!r:.80}") from None
        if len(values) != len(header) or not all(math.isfinite(v) or v == -math.inf for v in values):
            raise DataError(f"{path}:{no}: expected {len(header)} numbers (-inf: silence), got {line!r:.80}")
        rows.append(values)
    if not rows:
        raise DataError(f"{path}: a score table without rows")
    table = np.array(rows, dtype=np.float64)
    onsets, offsets = table[:, 0], table[:, 1]
    if np.any(offsets <= onsets) or np.any(np.abs(onsets[1:] - offsets[:-1]) > 1e-6):
        raise DataError(f"{path}: rows must be contiguous frames (each onset the previous offset, offset > onset)")
    edges = np.r_[onsets, offsets[-1]]
    return edges, table[:, 2:].astype(np.float32), tuple(header[2:])


def table_paths(source: str | os.PathLike) -> list[Path]:
    """The score tables of ``source``: a folder (its ``*.tsv`` that are tables) or one table file."""
    source = Path(source)
    if source.is_dir():
        found = sorted(p for p in source.glob("*" + SCORE_SUFFIX) if p.is_file() and looks_like_table(p))
        if not found:
            raise DataError(f"{source}: no score tables (*.tsv with an onset, offset, <class>... header) in it")
        return found
    if not source.exists():
        raise DataError(f"{source}: scores not found")
    return [source]


def parse_thresholds(text: str, classes: Sequence[str]) -> np.ndarray:
    """``"0.5"`` (every class) or ``"dog=0.4,baby=0.6"`` (every class named) -> ``(L,)``."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isfinite(value):
        return np.full(len(classes), value)
    given: dict[str, float] = {}
    for part in text.split(","):
        name, _, number = part.partition("=")
        try:
            given[name.strip()] = float(number)
        except ValueError:
            raise ConfigError(f"--threshold {text!r}: expected a number or CLASS=NUMBER,... ") from None
    unknown = [n for n in given if n not in classes]
    missing = [c for c in classes if c not in given]
    if unknown or missing:
        raise ConfigError(
            f"--threshold {text!r}: classes are {', '.join(classes)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            + (f"; missing: {', '.join(missing)}" if missing else "")
        )
    return np.array([given[c] for c in classes])


#: In a scores folder: ``{table name: audio path as given to thce detect}`` (tables are keyed by stem, event lists
#: by file name).
AUDIO_INDEX = "audio_files.json"


def write_audio_index(folder: str | os.PathLike, paths: Sequence[str | os.PathLike]) -> Path:
    """Write :data:`AUDIO_INDEX` in ``folder`` for the tables of ``paths``."""
    from thce.io import write_json

    return write_json(Path(folder) / AUDIO_INDEX, {table_name(p): os.fspath(p) for p in paths})


def _audio_names(folder: Path) -> dict[str, str]:
    import json

    try:
        index = json.loads((folder / AUDIO_INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in index.items()} if isinstance(index, dict) else {}


def events_from_tables(
    source: str | os.PathLike, threshold: str, *, min_event_s: float = 0.0, min_gap_s: float = 0.0
) -> DetectionResult:
    """Threshold saved score tables into events (the rule of :func:`thce.detection.localise.curve_to_events`); files are
    named as ``thce detect`` was given them (its :data:`AUDIO_INDEX`), else by the table's stem."""
    files, events = [], []
    thresholds: np.ndarray | None = None
    classes: tuple[str, ...] = ()
    tables = table_paths(source)
    names = _audio_names(tables[0].parent)
    for path in tables:
        edges, curve, table_classes = read_table(path)
        if thresholds is None:
            classes, thresholds = table_classes, parse_thresholds(threshold, table_classes)
        elif table_classes != classes:
            raise DataError(f"{path}: classes {', '.join(table_classes)} differ from {', '.join(classes)}")
        name = names.get(path.name, path.stem)
        files.append({"file": name, "duration_s": round(float(edges[-1]), 6), "frames": int(curve.shape[0])})
        for on, off, label, sc in curve_to_events(
            edges, curve, thresholds, classes, min_event_s=min_event_s, min_gap_s=min_gap_s
        ):
            events.append(Event(name, round(on, 3), round(off, 3), label, round(sc, 6)))
    assert thresholds is not None
    return DetectionResult(
        files=files,
        events=events,
        thresholds={c: float(t) for c, t in zip(classes, thresholds)},
        settings={"scores": os.fspath(source), "min_event_s": min_event_s, "min_gap_s": min_gap_s},
    )
