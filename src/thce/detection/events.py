"""Event lists: :class:`Event`, the events of a detection with its files and settings (:class:`DetectionResult`),
and their files (:func:`write_events`, :func:`read_event_list`).

Event lists follow the DCASE convention: tab-separated, one event per line, ``filename<TAB>onset<TAB>offset<TAB>
event_label`` in seconds, here with a header line and a ``score`` column (DCASE 2018+ task 4 style), and a line with
the file name alone for a file without events (DCASE 2017 task 2 style), so that evaluation knows the file was
processed. JSON output uses the project's names (``file, onset_s, offset_s, label, score``). Read back, a list may
also be a manifest CSV with ``onset_s``/``offset_s`` columns (e.g. from the synthetic scenes).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from thce.audio.read import AUDIO_EXTENSIONS, OTHER_SOUNDFILE_EXTENSIONS
from thce.errors import DataError
from thce.io import atomic_write, write_json

#: Columns of the tab-separated event list (DCASE names) and of JSON events (project names).
TSV_COLUMNS = ("filename", "onset", "offset", "event_label", "score")


class Event(NamedTuple):
    """One detected (or reference) event; times in seconds from the start of the file; ``score`` is the highest
    window score of the run (NaN in reference lists)."""

    file: str
    onset_s: float
    offset_s: float
    label: str
    score: float = math.nan


@dataclass
class DetectionResult:
    """Events of several files and how they were found.

    Attributes:
        files: ``[{"file": path, "duration_s": float, "windows": int}, ...]`` in input order.
        events: all events, grouped by file in input order, by onset within a file.
        thresholds: ``{class: threshold}``.
        settings: hop, window, support, median filter, threshold rule (for the JSON output).
        skipped: ``[{"file": path, "reason": words}, ...]`` files left out (``--skip-bad``).
    """

    files: list[dict[str, Any]]
    events: list[Event]
    thresholds: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)


def write_events(path: str | os.PathLike, result: DetectionResult) -> Path:
    """Write ``result`` atomically: JSON for ``*.json``, otherwise the tab-separated DCASE event list (module
    docstring). Returns the path."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return write_json(
            path,
            {
                "settings": result.settings,
                "thresholds": result.thresholds,
                "files": result.files,
                "skipped": result.skipped,
                "events": [e._asdict() for e in result.events],
            },
        )
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        write_event_tsv(handle, result)
    return path


def write_event_tsv(handle: Any, result: DetectionResult) -> None:
    """The tab-separated event list of ``result`` to an open text ``handle``."""
    writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
    writer.writerow(TSV_COLUMNS)
    by_file: dict[str, list[Event]] = {}
    for event in result.events:
        by_file.setdefault(event.file, []).append(event)
    for entry in result.files:
        found = by_file.get(entry["file"], [])
        if not found:
            writer.writerow([entry["file"]])
        for e in found:
            writer.writerow([e.file, f"{e.onset_s:.3f}", f"{e.offset_s:.3f}", e.label, f"{e.score:.6f}"])


@dataclass(frozen=True)
class EventList:
    """Events and the files they were looked for in (a file may have none). Files are keyed by base name;
    ``source`` is where the list was read from (for messages)."""

    files: tuple[str, ...]
    events: tuple[Event, ...]
    source: str = ""

    @property
    def all_files(self) -> list[str]:
        """The listed files and the files of the events, in first-seen order."""
        return list(dict.fromkeys([*self.files, *(e.file for e in self.events)]))


#: Extensions a file name alone on a line of a DCASE event list may have (a line holding anything else is an error:
#: a config or a space-separated list is not read as a list of files without events).
EVENT_LIST_AUDIO_EXTENSIONS = AUDIO_EXTENSIONS + OTHER_SOUNDFILE_EXTENSIONS


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_event_list(path: str | os.PathLike) -> EventList:
    """Read events from any of:

    - a thce detection JSON (``{"files": [...], "events": [...]}``);
    - a DCASE event list: tab-separated ``filename, onset, offset, event_label[, ...]`` with or without a header
      line; a line with only a file name lists a file without events;
    - a manifest CSV with ``path,label`` and ``onset_s,offset_s`` columns (e.g. from the synthetic scenes): a row
      with a label is an event, a background row (empty label) a file without events.

    File names are reduced to their base name (as DCASE does) and must then be unique.

    Raises:
        DataError: the file is missing or malformed (with the line number).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: event list not found" if not path.exists() else f"{path}: not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not an event list (not UTF-8 text)") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
    if path.suffix.lower() == ".json":
        listed = _read_json_events(path, text)
    else:
        first = next((line for line in text.splitlines() if line.strip()), "")
        columns = {c.strip() for c in first.split(",")}
        if "\t" not in first and "," in first and {"path", "onset_s", "offset_s"} <= columns:
            listed = _read_manifest_events(path)
        else:
            listed = _read_tsv_events(path, text)
    if not listed.files and not listed.events:
        raise DataError(f"{path}: no events and no files: not an event list (expected {_TSV_FORM})")
    return EventList(listed.files, listed.events, str(path))


_TSV_FORM = "filename<TAB>onset<TAB>offset<TAB>event_label lines, or a file name alone for a file without events"


class _FileKeys:
    """Base names of the files of one list, in first-seen order; two different paths may not share one."""

    def __init__(self) -> None:
        self.full: dict[str, str] = {}

    def key(self, name: str, where: str) -> str:
        base = Path(name.replace("\\", "/")).name
        if not base:
            raise DataError(f"{where}: empty file name")
        seen = self.full.setdefault(base, name)
        if seen != name:
            raise DataError(
                f"{where}: files {seen!r} and {name!r} share the base name {base!r}; event lists key files by base name"
            )
        return base

    @property
    def order(self) -> list[str]:
        return list(self.full)


def _event(keys: _FileKeys, where: str, name: str, onset: Any, offset: Any, label: str, score: Any = math.nan) -> Event:
    try:
        on, off = float(onset), float(offset)
        sc = math.nan if score in (None, "") else float(score)
    except (TypeError, ValueError):
        raise DataError(f"{where}: onset/offset must be numbers of seconds, got {onset!r}, {offset!r}") from None
    if not (math.isfinite(on) and math.isfinite(off)) or on < 0 or off < on:
        raise DataError(f"{where}: expected 0 <= onset <= offset, got onset {on}, offset {off}")
    if not label:
        raise DataError(f"{where}: empty event label")
    return Event(keys.key(name, where), on, off, label, sc)


def _read_tsv_events(path: Path, text: str) -> EventList:
    keys = _FileKeys()
    events: list[Event] = []
    first = True
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.rstrip("\n").split("\t")]
        where = f"{path}:{line_no}"
        while len(fields) > 1 and fields[-1] == "":
            fields.pop()
        is_audio = Path(fields[0]).suffix.lower() in EVENT_LIST_AUDIO_EXTENSIONS
        header, first = first and len(fields) >= 2 and not _is_number(fields[1]) and not is_audio, False
        if header:
            continue  # header line (filename, onset, ...)
        if len(fields) == 1:
            if not is_audio:
                raise DataError(f"{where}: not an event list line (expected {_TSV_FORM}; got {line.strip()!r:.80})")
            keys.key(fields[0], where)
            continue
        if len(fields) < 4:
            raise DataError(f"{where}: expected filename<TAB>onset<TAB>offset<TAB>event_label, got {line!r:.80}")
        score = fields[4] if len(fields) > 4 and _is_number(fields[4]) else math.nan
        events.append(_event(keys, where, fields[0], fields[1], fields[2], fields[3], score))
    return EventList(tuple(keys.order), tuple(events))


def _read_manifest_events(path: Path) -> EventList:
    from thce.data.manifest import read_manifest

    keys = _FileKeys()
    events: list[Event] = []
    for line_no, row in enumerate(read_manifest(path), start=2):
        where = f"{path}:{line_no}"
        name = str(row.path)
        keys.key(name, where)
        if not row.label:
            continue
        onset, offset = row.extra.get("onset_s", ""), row.extra.get("offset_s", "")
        if onset in ("", None) or offset in ("", None):
            raise DataError(f"{where}: event {row.label!r} has no onset_s/offset_s; a reference needs event times")
        events.append(_event(keys, where, name, onset, offset, row.label))
    return EventList(tuple(keys.order), tuple(events))


def _read_json_events(path: Path, text: str) -> EventList:
    try:
        payload = json.loads(text)
        files = [f["file"] if isinstance(f, dict) else str(f) for f in payload.get("files", [])]
        raw_events = payload["events"]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(f"{path}: not a thce event list (expected JSON with 'events'; {error})") from None
    keys = _FileKeys()
    for name in files:
        keys.key(name, str(path))
    events = []
    for i, item in enumerate(raw_events):
        where = f"{path} (event {i})"
        try:
            events.append(_event(keys, where, item["file"], item["onset_s"], item["offset_s"], item["label"], item.get("score")))
        except (KeyError, TypeError):
            raise DataError(f"{where}: expected keys file, onset_s, offset_s, label") from None
    return EventList(tuple(keys.order), tuple(events))
