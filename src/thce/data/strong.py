"""Strong labels: when each event of a clip happens, and frame targets made from them.

The data model. The manifest stays one row per clip (``path,label,split,group``, see :mod:`thce.data.manifest`):
``label`` is the clip's event class, or empty for background, as for clip-level training. The events' times live in
an event list beside it, ``events.tsv``, in DCASE's own tab-separated format::

    filename<TAB>onset<TAB>offset<TAB>event_label      one line per event, times in seconds from the clip's start
    filename                                           a clip without events

with an optional header line (``filename, onset, offset, event_label``) and ``#`` comment lines. File names are
relative to the manifest's folder, as the manifest's paths are (absolute names are accepted; a name that matches no
manifest path is matched by its base name when exactly one manifest row has it, so DCASE's own lists of bare
mixture names work). A clip may have several events; each must be of the clip's class (one class per clip, the
paper's and DCASE 2017 Task 2's setting).

What :func:`read_strong_labels` gives, :data:`StrongLabels`: clip path (absolute, as :attr:`ManifestRow.path`) ->
its events, a tuple of :class:`StrongEvent` ``(onset_s, offset_s, label)`` sorted by onset:

- a clip labelled ``c`` listed with events: those events (all of class ``c``);
- a background clip (empty label): ``()`` always, listed or not: it holds no event of any class;
- a labelled clip not listed: absent from the mapping: weak label only (which class, not when).

Without ``events.tsv``, a manifest's ``onset_s,offset_s`` columns (what the synthetic scenes and ``thce data mix``
wrote before event lists existed) give one event per labelled row; a labelled row with both empty is weak only.

Frame targets (:func:`frame_targets`): output frame ``i`` covers ``[i * hop, (i + 1) * hop)`` seconds and is positive
for class ``c`` iff its centre ``(i + 0.5) * hop`` lies in ``[onset, offset)`` of an event of ``c``. With log-mel
frames centred on ``t * 10 ms`` (:mod:`thce.audio.logmel`) and an encoder pooling ``s`` input frames into one output
frame, the pooled frames' centres lie half an input hop (5 ms) earlier than this rule's: negligible against DCASE's
200 ms / 500 ms collars. :func:`clip_frame_targets` makes them for a list of clips (with which are strong);
:func:`frame_class` turns targets into one class per frame.

The synthetic scenes (:func:`thce.data.synth.generate_scenes`) and ``thce data mix`` write ``events.tsv`` with
:func:`write_strong_labels`; ``thce data import dcase2017`` (:mod:`thce.data.dcase2017`) and ``audioset-strong``
(:func:`thce.data.audioset.read_audioset_strong`) read the data sets that have strong labels; :mod:`thce.data.remix`
pastes events cut by their frame targets into other clips.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from thce.data.manifest import ManifestRow, manifest_root, read_manifest
from thce.errors import DataError
from thce.io import atomic_write, read_text

#: The event list beside ``manifest.csv``.
EVENTS_FILE = "events.tsv"
#: Its header line (DCASE's column names).
EVENTS_HEADER = ("filename", "onset", "offset", "event_label")


class StrongEvent(NamedTuple):
    """One event of a clip: seconds from the clip's start, ``0 <= onset_s < offset_s``, and its class."""

    onset_s: float
    offset_s: float
    label: str


#: Clip path (absolute) -> its events sorted by onset; ``()`` for background; a clip absent is weak only.
StrongLabels = dict[Path, tuple[StrongEvent, ...]]


def events_path_for(manifest_path: str | os.PathLike) -> Path:
    """Where a manifest's event list lies: ``events.tsv`` in the manifest's folder."""
    return manifest_root(manifest_path) / EVENTS_FILE


def read_strong_labels(
    manifest_path: str | os.PathLike,
    rows: Sequence[ManifestRow] | None = None,
    events_path: str | os.PathLike | None = None,
) -> StrongLabels:
    """The strong labels of a manifest's clips (module docstring): from ``events_path`` if given, else from
    ``events.tsv`` beside the manifest if there is one, else from the manifest's ``onset_s,offset_s`` columns.

    Args:
        manifest_path: the manifest CSV (its folder anchors relative names).
        rows: its rows as :func:`~thce.data.manifest.read_manifest` gives them, all of them (an event of a clip not
            among ``rows`` is an error); ``None``: read from ``manifest_path``. The result may be filtered to the
            rows a run keeps.
        events_path: an event list to use instead of ``events.tsv``.

    Returns:
        :data:`StrongLabels` for ``rows``.

    Raises:
        DataError: one line naming the file and line: a missing ``events_path``, a malformed line, an onset not
            before its offset or negative, a clip not in the manifest, an event whose label is not its clip's, a
            background clip with events, a labelled clip listed without any.
    """
    manifest_path = Path(manifest_path)
    read_here = rows is None
    rows = read_manifest(manifest_path) if rows is None else list(rows)
    if events_path is None:
        found = events_path_for(manifest_path)
        if found.is_file():
            events_path = found
    if events_path is not None:
        return _from_event_list(Path(events_path), manifest_root(manifest_path), rows)
    return _from_columns(manifest_path, rows, numbered=read_here)


def _background_only(rows: Sequence[ManifestRow]) -> StrongLabels:
    return {Path(row.path): () for row in rows if not row.label}


def _checked_event(where: str, onset: Any, offset: Any, label: str) -> StrongEvent:
    try:
        on, off = float(onset), float(offset)
    except (TypeError, ValueError):
        raise DataError(f"{where}: onset and offset must be numbers of seconds, got {onset!r}, {offset!r}") from None
    if not (math.isfinite(on) and math.isfinite(off)) or on < 0 or off <= on:
        raise DataError(f"{where}: expected 0 <= onset < offset, got onset {on:g}, offset {off:g}")
    if not label:
        raise DataError(f"{where}: empty event label")
    return StrongEvent(on, off, label)


def _from_columns(manifest_path: Path, rows: Sequence[ManifestRow], *, numbered: bool) -> StrongLabels:
    labels = _background_only(rows)
    for i, row in enumerate(rows):
        if not row.label:
            continue
        where = f"{manifest_path}:{i + 2}" if numbered else f"{manifest_path} ({Path(row.path).name})"
        onset, offset = (row.extra.get(k, "").strip() for k in ("onset_s", "offset_s"))
        if not onset and not offset:
            continue  # weak only
        if not onset or not offset:
            raise DataError(f"{where}: onset_s and offset_s must both be given or both be empty")
        labels[Path(row.path)] = (_checked_event(where, onset, offset, row.label),)
    return labels


def _from_event_list(path: Path, root: Path, rows: Sequence[ManifestRow]) -> StrongLabels:
    if not path.is_file():
        raise DataError(f"{path}: event list not found" if not path.exists() else f"{path}: not a file")
    by_path = {Path(os.path.abspath(row.path)): row for row in rows}
    by_name: dict[str, list[ManifestRow]] = {}
    for row in rows:
        by_name.setdefault(Path(row.path).name, []).append(row)

    def clip_of(name: str, where: str) -> ManifestRow:
        given = Path(name.replace("\\", "/"))
        row = by_path.get(Path(os.path.abspath(given if given.is_absolute() else root / given)))
        if row is None and len(by_name.get(given.name, ())) == 1:
            row = by_name[given.name][0]
        if row is None:
            raise DataError(f"{where}: {name!r} is not a clip of the manifest (names are relative to {root})")
        return row

    listed: dict[Path, list[StrongEvent]] = {}
    first_line: dict[Path, str] = {}
    first = True
    for line_no, line in enumerate(read_text(path, what="event list").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")]
        while len(fields) > 1 and not fields[-1]:
            fields.pop()
        where = f"{path}:{line_no}"
        header = first and len(fields) == 4 and not any(ch.isdigit() for ch in fields[1])
        first = False
        if header:
            continue  # filename, onset, offset, event_label (or other names)
        if len(fields) not in (1, 4):
            raise DataError(f"{where}: expected filename<TAB>onset<TAB>offset<TAB>event_label or a file name alone, "
                            f"got {len(fields)} fields")  # fmt: skip
        row = clip_of(fields[0], where)
        clip = Path(row.path)
        first_line.setdefault(clip, where)
        events = listed.setdefault(clip, [])
        if len(fields) == 1:
            continue
        event = _checked_event(where, fields[1], fields[2], fields[3])
        if not row.label:
            raise DataError(f"{where}: event {event.label!r} in a background clip (its manifest label is empty)")
        if event.label != row.label:
            raise DataError(f"{where}: event {event.label!r} in a clip labelled {row.label!r}: a clip's events are "
                            "of its class")  # fmt: skip
        events.append(event)
    labels = _background_only(rows)
    for clip, events in listed.items():
        if not events and by_path[Path(os.path.abspath(clip))].label:
            label = by_path[Path(os.path.abspath(clip))].label
            raise DataError(f"{first_line[clip]}: a clip labelled {label!r} listed without events")
        labels[clip] = tuple(sorted(events))
    return labels


def write_strong_labels(
    path: str | os.PathLike, rows: Sequence[ManifestRow], labels: Mapping[Path, Sequence[StrongEvent]]
) -> Path:
    """Write the event list of ``rows`` atomically (module docstring), in the rows' order: each event of a clip, a
    clip without events as its name alone, a clip absent from ``labels`` (weak only) not at all. Names are relative
    to ``path``'s folder where possible; times with 6 decimals. Returns the path."""
    path = Path(path)
    root = Path(os.path.abspath(path)).parent
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(EVENTS_HEADER)
        for row in rows:
            events = labels.get(Path(row.path))
            if events is None:
                continue
            clip = Path(os.path.abspath(row.path))
            try:
                name = clip.relative_to(root).as_posix()
            except ValueError:
                name = str(clip)
            if not events:
                writer.writerow([name])
            for event in sorted(events):
                writer.writerow([name, f"{event.onset_s:.6f}", f"{event.offset_s:.6f}", event.label])
    return path


def frame_targets(
    events: Iterable[StrongEvent | tuple[float, float, str]],
    classes: Sequence[str],
    num_frames: int,
    frame_hop_s: float,
) -> np.ndarray:
    """Frame targets of one clip: ``(num_frames, len(classes))`` uint8, 1 where the frame is inside an event.

    Frame ``i`` covers ``[i * frame_hop_s, (i + 1) * frame_hop_s)`` and is positive for class ``c`` iff its centre
    ``(i + 0.5) * frame_hop_s`` lies in ``[onset, offset)`` of an event of ``c`` (compared to 1e-9 of a frame, so
    that a centre exactly on an onset counts and one exactly on an offset does not, floating point aside). Events
    beyond the last frame are cut.

    >>> frame_targets([(0.25, 0.45, "dog")], ["dog", "gun"], 6, 0.1)[:, 0].tolist()
    [0, 0, 1, 1, 0, 0]

    Raises:
        DataError: an event's label is not one of ``classes``.
        ValueError: ``num_frames < 0`` or ``frame_hop_s <= 0``.
    """
    if num_frames < 0 or not frame_hop_s > 0:
        raise ValueError(f"frame_targets: need num_frames >= 0 and frame_hop_s > 0, got {num_frames}, {frame_hop_s}")
    column = {label: c for c, label in enumerate(classes)}
    targets = np.zeros((num_frames, len(classes)), dtype=np.uint8)
    for onset_s, offset_s, label in events:
        if label not in column:
            raise DataError(f"event label {label!r} is not one of the classes {', '.join(classes)}")
        # centre (i + 0.5) * hop in [onset, offset)  <=>  onset / hop - 0.5 <= i < offset / hop - 0.5
        first = max(0, math.ceil(round(onset_s / frame_hop_s - 0.5, 9)))
        stop = min(num_frames, math.ceil(round(offset_s / frame_hop_s - 0.5, 9)))
        if stop > first:
            targets[first:stop, column[label]] = 1
    return targets


def clip_frame_targets(
    rows: Sequence[ManifestRow], labels: Mapping[Path, Sequence[StrongEvent]], classes: Sequence[str],
    num_frames: int, frame_hop_s: float,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Frame targets of many clips: ``(targets, strong)``, ``targets`` ``(len(rows), num_frames, len(classes))``
    uint8 by :func:`frame_targets`, ``strong`` ``(len(rows),)`` bool, False for a clip that is weak only (absent from
    ``labels``; its targets are all zero and must be masked or filled by the caller).

    Raises:
        DataError: an event's label is not one of ``classes``.
    """
    targets = np.zeros((len(rows), num_frames, len(classes)), dtype=np.uint8)
    strong = np.zeros(len(rows), dtype=bool)
    for i, row in enumerate(rows):
        events = labels.get(Path(row.path))
        if events is not None:
            targets[i] = frame_targets(events, classes, num_frames, frame_hop_s)
            strong[i] = True
    return targets, strong


def frame_class(targets: np.ndarray) -> np.ndarray:
    """One class per frame from ``targets`` ``(..., T, L)``: ``(..., T)`` int64, the event class ``0..L-1`` of each
    frame, ``L`` (background) where none is active. Where several classes are active the first in class order
    wins (the lowest index: the config's order of classes).

    >>> frame_class(np.array([[0, 0], [1, 0], [1, 1], [0, 1]])).tolist()
    [2, 0, 0, 1]
    """
    targets = np.asarray(targets)
    active = targets.any(axis=-1)
    first = np.argmax(targets > 0, axis=-1)
    return np.where(active, first, targets.shape[-1]).astype(np.int64)
