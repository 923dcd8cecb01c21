"""AudioSet: segment CSVs plus a folder of locally downloaded clips -> manifest rows (:class:`~thce.data.readers.ImportResult`).

Its strong-label TSVs: :func:`read_audioset_strong`, the same with the events' times (``ImportResult.strong``).

Labels are mapped from AudioSet MIDs, with their ontology descendants, to ours (:data:`AUDIOSET_LABELS`, or a label
map, see :func:`thce.data.readers.load_label_map`); clips with two target events are excluded and counted, clips
with none are background.

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
import io
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from thce.data.manifest import SPLITS, ManifestRow, Skipped
from thce.data.readers import ImportResult, absolute, index_audio_files, validate_label_map
from thce.data.strong import StrongEvent, StrongLabels
from thce.errors import ConfigError, DataError

log = logging.getLogger(__name__)

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
    try:  # any readable file, a pipe too (<(zcat segments.csv.gz))
        text = csv_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path}: cannot read the segment CSV ({exc})") from None
    with io.StringIO(text, newline="") as handle:
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
    clips = _SegmentClips(audio_dir, split)
    mid_label = audioset_mid_labels(label_map, ontology)
    result = clips.result
    for csv_path in segment_csvs:
        segments, malformed = parse_segments(csv_path)
        if not segments:
            why = f"{malformed[0].source}: {malformed[0].problem}" if malformed else "no rows"
            raise DataError(
                f"{csv_path}: not an AudioSet segment list ({why}; expected rows YTID, start_seconds, end_seconds, "
                '"mid,mid" as in balanced_train_segments.csv)'
            )
        clips.counts["malformed"] += len(malformed)
        result.skipped += malformed
        for seg in segments:
            clips.add(seg.ytid, seg.start_s, seg.end_s, {mid_label[m] for m in seg.mids if m in mid_label}, seg.source)
    return clips.finish(strict)


class _SegmentClips:
    """The clips of AudioSet segments as they are added: the downloaded file found, duplicates skipped, segments
    with two target classes excluded, the others counted; :meth:`finish` checks the outcome."""

    def __init__(self, audio_dir: str | os.PathLike, split: str) -> None:
        """Raises: ConfigError (a bad split), DataError (``audio_dir`` is not a folder)."""
        if split and split not in SPLITS:
            raise ConfigError(f"split {split!r} is not one of {', '.join(SPLITS)} or empty")
        self.audio_dir = Path(audio_dir)
        if not self.audio_dir.is_dir():
            raise DataError(f"{self.audio_dir}: audio folder not found")
        self.files, self.split = index_audio_files(self.audio_dir), split
        self.result = ImportResult(rows=[])
        self.counts = Counter({"segments": 0, "multi_target": 0, "not_downloaded": 0, "duplicate": 0, "malformed": 0})
        self.seen: dict[tuple[str, float], str] = {}

    def add(self, ytid: str, start_s: float, end_s: float, classes: set[str], source: str) -> ManifestRow | None:
        """The row of a segment whose events are of ``classes`` (ours), or None (left out, counted, maybe listed)."""
        self.counts["segments"] += 1
        targets = sorted(classes)
        path = next((self.files[s] for s in audioset_file_stems(ytid, start_s, end_s) if s in self.files), None)
        shown = str(path) if path else f"{ytid}_{start_s:g}"
        key = (ytid, round(start_s, 3))
        if key in self.seen:
            self.counts["duplicate"] += 1
            self.result.skipped.append(Skipped(shown, f"duplicate segment (first listed at {self.seen[key]})", source))
            return None
        self.seen[key] = source
        if len(targets) > 1:
            self.counts["multi_target"] += 1
            if path is not None:
                self.result.excluded.append(Skipped(
                    shown, f"{len(targets)} target events ({', '.join(targets)}): excluded, one event per clip", source,
                ))  # fmt: skip
            return None
        if path is None:
            self.counts["not_downloaded"] += 1
            return None
        extra = {"ytid": ytid, "start_s": f"{start_s:.3f}", "end_s": f"{end_s:.3f}"}
        label = targets[0] if targets else ""
        row = ManifestRow(path=absolute(path), label=label, split=self.split, group=ytid, extra=extra)
        self.result.rows.append(row)
        return row

    def finish(self, strict: bool) -> ImportResult:
        audio_dir = self.audio_dir
        counts = self.counts
        counts["imported"] = len(self.result.rows)
        self.result.counts = dict(counts)
        if counts["not_downloaded"]:
            log.info("AudioSet: %d of %d segments have no file in %s", counts["not_downloaded"], counts["segments"],
                     audio_dir)  # fmt: skip
        if not self.result.rows and counts["not_downloaded"] == counts["segments"]:
            raise DataError(
                f"{audio_dir}: none of the {counts['segments']} segments listed has a file here (names tried for "
                "YTID, START: YTID.wav, YTID_START.wav, YTID_START_END.flac, ..., see `thce data import audioset -h`)"
            )
        self.result.finish(strict, str(audio_dir))
        return self.result


# ----------------------------------------------------------------------------------------------------------------------
# AudioSet strong labels

#: AudioSet's strong-label segments are 10 s long (the end used to find a clip's file by its name).
STRONG_SEGMENT_S = 10.0


@dataclass(frozen=True)
class StrongSegment:
    """The events of one segment of a strong-label TSV: ``(onset_s, offset_s, mid)`` from the segment's start."""

    ytid: str
    start_s: float
    events: tuple[tuple[float, float, str], ...]
    source: str  # "file.tsv:line" of its first line


def parse_strong_segments(tsv_path: str | os.PathLike) -> tuple[list[StrongSegment], list[Skipped]]:
    """Segments of an AudioSet strong-label TSV (``segment_id<TAB>start_time_seconds<TAB>end_time_seconds<TAB>label``
    with a header line; ``segment_id`` = ``YTID_<start in ms>``, label a MID), in first-seen order. A fifth column
    (``present``, as in the framed eval file) keeps only ``PRESENT`` lines.

    Returns:
        ``(segments, malformed)``: a segment with a malformed line is left out whole, as :class:`Skipped` naming the
        file and line (its other lines would give it incomplete labels).

    Raises:
        DataError: the file cannot be read.
    """
    tsv_path = Path(tsv_path)
    try:
        text = tsv_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{tsv_path}: cannot read the strong-label TSV ({exc})") from None
    events: dict[str, list[tuple[float, float, str]]] = {}
    first_line: dict[str, str] = {}
    bad: dict[str, Skipped] = {}
    first = True
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")]
        header, first = first and len(fields) >= 4 and not any(ch.isdigit() for ch in fields[1]), False
        if header:
            continue  # segment_id, start_time_seconds, ...
        where = f"{tsv_path.name}:{line_no}"
        segment = fields[0]
        first_line.setdefault(segment, where)
        events.setdefault(segment, [])
        if len(fields) >= 5 and fields[4].upper() != "PRESENT":
            continue
        ytid, _, start_ms = segment.rpartition("_")
        problem = None
        if len(fields) < 4:
            problem = f"malformed line {line.strip()!r:.80} (expected segment_id, start, end, label)"
        elif not ytid or not start_ms.isdigit():
            problem = f"segment id {segment!r} is not YTID_<start in ms>"
        else:
            try:
                onset, offset = float(fields[1]), float(fields[2])
            except ValueError:
                onset = offset = math.nan
            if not (math.isfinite(onset) and math.isfinite(offset)) or onset < 0 or offset <= onset or not fields[3]:
                problem = f"event {fields[1]!r} .. {fields[2]!r} {fields[3]!r} (expected 0 <= start < end and a label)"
            else:
                events[segment].append((onset, offset, fields[3]))
        if problem and segment not in bad:
            bad[segment] = Skipped(segment, problem, where)
    segments = [
        StrongSegment(seg.rpartition("_")[0], int(seg.rpartition("_")[2]) / 1000.0, tuple(found), first_line[seg])
        for seg, found in events.items()
        if seg not in bad
    ]
    return segments, list(bad.values())


def merge_events(events: Iterable[tuple[float, float, str]]) -> tuple[StrongEvent, ...]:
    """Events of one clip with the overlapping or touching ones of a class joined (a Dog and a Bark label over the
    same bark become one event), sorted by onset.

    >>> merge_events([(1.0, 2.0, "dog"), (1.5, 3.0, "dog"), (4.0, 5.0, "dog")])
    (StrongEvent(onset_s=1.0, offset_s=3.0, label='dog'), StrongEvent(onset_s=4.0, offset_s=5.0, label='dog'))
    """
    merged: list[StrongEvent] = []
    for onset, offset, label in sorted(events, key=lambda e: (e[2], e[0], e[1])):
        last = merged[-1] if merged else None
        if last is not None and last.label == label and onset <= last.offset_s:
            merged[-1] = StrongEvent(last.onset_s, max(last.offset_s, offset), label)
        else:
            merged.append(StrongEvent(onset, offset, label))
    return tuple(sorted(merged))


def read_audioset_strong(
    tsv_paths: Sequence[str | os.PathLike],
    audio_dir: str | os.PathLike,
    *,
    label_map: Mapping[str, Sequence[str]] | None = None,
    ontology: Mapping[str, Sequence[str]] | None = None,
    split: str = "",
    strict: bool = False,
) -> ImportResult:
    """AudioSet segments of strong-label TSVs (e.g. ``audioset_train_strong.tsv``) that have a local audio file, as
    manifest rows with strong labels.

    MIDs are mapped to our labels as in :func:`read_audioset` (descendants included); events of other MIDs are
    dropped; a segment with no mapped event is background (``()``), one with events of two of our classes is
    excluded (one class per clip); overlapping events of a class are merged (:func:`merge_events`). Files are found
    as :func:`read_audioset` finds them, for a segment of :data:`STRONG_SEGMENT_S` from the id's start.

    Returns:
        :class:`ImportResult` with ``strong``; rows and counts as :func:`read_audioset`'s, plus ``events``.

    Raises:
        DataError: ``audio_dir`` is not a folder, a TSV cannot be read or has no segment, or (``strict``) a bad line.
        ConfigError: bad label map or split.
    """
    clips = _SegmentClips(audio_dir, split)
    mid_label = audioset_mid_labels(label_map, ontology)
    strong: StrongLabels = {}
    for tsv_path in tsv_paths:
        segments, malformed = parse_strong_segments(tsv_path)
        if not segments:
            why = f"{malformed[0].source}: {malformed[0].problem}" if malformed else "no lines"
            raise DataError(
                f"{tsv_path}: not an AudioSet strong-label TSV ({why}; expected lines segment_id<TAB>"
                "start_time_seconds<TAB>end_time_seconds<TAB>label as in audioset_train_strong.tsv)"
            )
        clips.counts["malformed"] += len(malformed)
        clips.result.skipped += malformed
        for seg in segments:
            mapped = [(on, off, mid_label[mid]) for on, off, mid in seg.events if mid in mid_label]
            end_s = seg.start_s + STRONG_SEGMENT_S
            row = clips.add(seg.ytid, seg.start_s, end_s, {label for _, _, label in mapped}, seg.source)
            if row is not None:
                strong[row.path] = merge_events(mapped)
                clips.counts["events"] += len(strong[row.path])
    clips.result.strong = strong
    return clips.finish(strict)


