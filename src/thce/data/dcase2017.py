"""DCASE 2017 Task 2 ("TUT Rare Sound Events 2017"): its mixtures, with strong labels, as manifest rows
(:class:`~thce.data.readers.ImportResult` with ``strong``).

The data set's meta files, found anywhere under the folders given (``data/mixture_data/<set>/<hash>/meta/``):

- event lists ``event_list_<set>_<class>.csv``: tab-separated ``mixture file, onset, offset, class``, a mixture
  without its class's event listed alone (read with :func:`thce.detection.events.read_event_list`);
- mixture recipes ``mixture_recipes_<set>_<class>.yaml`` (the generator's): per mixture ``mixture_audio_filename``,
  ``event_present``, and when present ``event_class``, ``event_start_in_mixture_seconds``, ``event_length_seconds``,
  ``event_path``; ``bg_path`` and ``ebr`` always. Preferred over the event list of the same set and class: they
  name the background recording, which becomes the clip's ``group`` (``bg:<recording>``, a background file named
  ``<recording>_<start>_<end>.wav`` as TUT's are counted as its recording), so that clips of one background
  recording never straddle splits; with an event list only, each mixture is its own group.

``<set>`` is ``devtrain`` (split ``train``), ``devtest`` (``val`` or ``test``, the caller's choice) or ``evaltest``
(``test``); ``<class>`` is babycry, glassbreak or gunshot. The mixtures' audio (``mixture_..._<hash>.wav``) is looked
up by file name anywhere under the same folders. A clip's label is its event's class (through ``label_map``, e.g.
``baby = ["babycry"]``; default: DCASE's names); an event of a class the map leaves out is dropped and its mixture
is background. Extra manifest columns: ``dcase_set``, ``onset_s,offset_s`` (the event), and from recipes ``ebr_db,
event_file,background_file``.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from thce.data.manifest import SPLITS, ManifestRow, Skipped
from thce.data.readers import ImportResult, absolute, index_audio_files, validate_label_map
from thce.data.strong import StrongEvent, StrongLabels
from thce.errors import ConfigError, DataError
from thce.detection.events import read_event_list
from thce.io import read_text

log = logging.getLogger(__name__)

#: DCASE 2017 Task 2's subsets and the split each goes to (``devtest``: the caller's choice, default test).
DCASE2017_SETS = ("devtrain", "devtest", "evaltest")
DCASE2017_CLASSES = ("babycry", "glassbreak", "gunshot")
_META = re.compile(r"^(?P<kind>event_list|mixture_recipes)_(?P<set>devtrain|devtest|evaltest)_(?P<cls>\w+?)"
                   r"\.(?P<ext>csv|txt|yaml|yml)$")  # fmt: skip
_SEGMENT_NAME = re.compile(r"^(?P<recording>.+)_\d+(\.\d+)?_\d+(\.\d+)?$")


@dataclass(frozen=True)
class _Mixture:
    """One mixture as the meta files describe it."""

    name: str  # file name
    dcase_set: str
    dcase_class: str  # the class of the file it was listed in
    event_class: str = ""  # "" without event
    onset_s: float = 0.0
    offset_s: float = 0.0
    background: str = ""
    event_file: str = ""
    ebr_db: str = ""
    source: str = ""  # file:line


def find_dcase2017_meta(roots: Sequence[str | os.PathLike]) -> dict[tuple[str, str], Path]:
    """``{(set, class): meta file}`` under ``roots`` (files given directly count too); a recipe wins over an event
    list of the same set and class."""
    found: dict[tuple[str, str], Path] = {}
    for root in map(Path, roots):
        candidates = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in candidates:
            match = _META.match(path.name)
            if not match:
                continue
            key = (match["set"], match["cls"])
            have = found.get(key)
            if have is None or (match["kind"] == "mixture_recipes" and not have.name.startswith("mixture_recipes")):
                found[key] = path
    return found


class _RecipeLoader(yaml.SafeLoader):
    """Safe YAML with each mapping's line (``__line__``); Python tags (old generators' ``!!python/unicode``) read as
    the plain value under them, never as objects."""


def _mapping_with_line(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


def _plain(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


_RecipeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)
_RecipeLoader.add_multi_constructor("tag:yaml.org,2002:python/", _plain)


def _recording(bg_path: str) -> str:
    stem = Path(bg_path.replace("\\", "/")).stem
    match = _SEGMENT_NAME.match(stem)
    return match["recording"] if match else stem


def read_recipes(path: Path, dcase_set: str, dcase_class: str) -> tuple[list[_Mixture], list[Skipped]]:
    """The mixtures of a ``mixture_recipes_<set>_<class>.yaml``; malformed entries as :class:`Skipped` naming the
    file and line.

    Raises:
        DataError: not YAML, or not a list of mappings.
    """
    try:
        items = yaml.load(read_text(path, what="mixture recipe"), Loader=_RecipeLoader)  # noqa: S506 (safe loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise DataError(f"{where}: not a YAML mixture recipe ({getattr(error, 'problem', None) or error})") from None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise DataError(f"{path}: expected a YAML list of mixture recipes (mixture_audio_filename, event_present, ...)")
    mixtures: list[_Mixture] = []
    bad: list[Skipped] = []
    for item in items:
        where = f"{path.name}:{item.get('__line__', '?')}"
        name = str(item.get("mixture_audio_filename") or "").strip()
        present = item.get("event_present")
        if not name or not isinstance(present, bool):
            bad.append(Skipped(name or "?", "recipe without mixture_audio_filename or a true/false event_present",
                               where))  # fmt: skip
            continue
        common = {"name": Path(name).name, "dcase_set": dcase_set, "dcase_class": dcase_class, "source": where,
                  "background": str(item.get("bg_path") or "")}  # fmt: skip
        if not present:
            mixtures.append(_Mixture(**common))
            continue
        try:
            onset = float(item["event_start_in_mixture_seconds"])
            length = float(item["event_length_seconds"])
            event_class = str(item["event_class"]).strip()
        except (KeyError, TypeError, ValueError):
            bad.append(Skipped(name, "recipe with event_present but without a numeric event_start_in_mixture_seconds"
                               ", event_length_seconds or an event_class", where))  # fmt: skip
            continue
        if not (math.isfinite(onset) and math.isfinite(length)) or onset < 0 or length <= 0 or not event_class:
            bad.append(Skipped(name, f"event at {onset:g} s lasting {length:g} s (expected onset >= 0, length > 0)",
                               where))  # fmt: skip
            continue
        ebr = item.get("ebr")
        mixtures.append(_Mixture(
            **common, event_class=event_class, onset_s=onset, offset_s=onset + length,
            event_file=str(item.get("event_path") or ""),
            ebr_db=f"{float(ebr):g}" if isinstance(ebr, (int, float)) and not isinstance(ebr, bool) else "",
        ))  # fmt: skip
    return mixtures, bad


def read_event_list_mixtures(path: Path, dcase_set: str, dcase_class: str) -> list[_Mixture]:
    """The mixtures of an ``event_list_<set>_<class>.csv`` (at most one event each, as DCASE 2017 Task 2 has).

    Raises:
        DataError: malformed (file and line), or a mixture with two events.
    """
    listed = read_event_list(path)
    events: dict[str, list[Any]] = {}
    for event in listed.events:
        events.setdefault(event.file, []).append(event)
    mixtures = []
    for name in listed.all_files:
        found = events.get(name, [])
        if len(found) > 1:
            raise DataError(f"{path}: {name} has {len(found)} events; DCASE 2017 Task 2 mixtures have at most one")
        common = {"name": name, "dcase_set": dcase_set, "dcase_class": dcase_class, "source": path.name}
        if found:
            (event,) = found
            if not event.offset_s > event.onset_s:
                raise DataError(f"{path}: {name}: event from {event.onset_s:g} s to {event.offset_s:g} s has no length")
            mixtures.append(_Mixture(**common, event_class=event.label, onset_s=event.onset_s, offset_s=event.offset_s))
        else:
            mixtures.append(_Mixture(**common))
    return mixtures


def read_dcase2017_task2(
    roots: Sequence[str | os.PathLike],
    *,
    devtest_split: str = "test",
    label_map: Mapping[str, Sequence[str]] | None = None,
    strict: bool = False,
) -> ImportResult:
    """DCASE 2017 Task 2 mixtures under ``roots`` as manifest rows with strong labels (module docstring).

    Args:
        roots: folders holding the meta files and the mixtures' audio (or the meta files themselves).
        devtest_split: the split of the ``devtest`` mixtures: ``val`` (with ``evaltest`` as test) or ``test``.
        label_map: our label -> DCASE classes (e.g. ``{"baby": ["babycry"]}``); default: every class as named.
        strict: raise on a malformed recipe entry, a duplicated mixture or a missing audio file instead of skipping.

    Returns:
        :class:`ImportResult` with ``strong``: an event mixture's one event, ``()`` for background mixtures. Counts:
        ``mixtures``, ``events``, ``dropped_events`` (class not mapped), ``no_audio``, ``imported``.

    Raises:
        DataError: no meta files found, a malformed event list or recipe file, or (``strict``) a bad mixture.
        ConfigError: bad ``devtest_split`` or label map.
    """
    if devtest_split not in SPLITS:
        raise ConfigError(f"devtest split {devtest_split!r}: expected one of {', '.join(SPLITS)}")
    meta = find_dcase2017_meta(roots)
    shown_roots = ", ".join(str(r) for r in roots)
    if not meta:
        raise DataError(f"{shown_roots}: no DCASE 2017 Task 2 meta files (expected event_list_<set>_<class>.csv or "
                        "mixture_recipes_<set>_<class>.yaml, <set> devtrain, devtest or evaltest)")  # fmt: skip
    class_label = None
    if label_map is not None:
        mapped = validate_label_map(dict(label_map), source="DCASE 2017 label map")
        class_label = {cls: label for label, classes in mapped.items() for cls in classes}
    split_of = {"devtrain": "train", "devtest": devtest_split, "evaltest": "test"}
    files: dict[str, Path] = {}
    for root in roots:
        if Path(root).is_dir():
            files.update({stem: path for stem, path in index_audio_files(root).items() if stem not in files})
    result = ImportResult(rows=[], strong={})
    strong: StrongLabels = result.strong  # type: ignore[assignment]
    counts = Counter({"mixtures": 0, "events": 0, "dropped_events": 0, "no_audio": 0})
    seen: dict[str, str] = {}
    for (dcase_set, dcase_class), path in sorted(meta.items()):
        if path.name.startswith("mixture_recipes"):
            mixtures, bad = read_recipes(path, dcase_set, dcase_class)
            result.skipped += bad
        else:
            mixtures = read_event_list_mixtures(path, dcase_set, dcase_class)
        log.info("DCASE 2017: %s: %d mixtures", path, len(mixtures))
        for mixture in mixtures:
            counts["mixtures"] += 1
            if mixture.name in seen:
                result.skipped.append(Skipped(mixture.name, f"duplicate mixture (first listed in {seen[mixture.name]})",
                                              mixture.source))  # fmt: skip
                continue
            seen[mixture.name] = mixture.source
            audio = files.get(Path(mixture.name).stem)
            if audio is None:
                counts["no_audio"] += 1
                result.skipped.append(Skipped(mixture.name, "audio file not found", mixture.source))
                continue
            row, events = _mixture_row(mixture, absolute(audio), split_of[dcase_set], class_label)
            counts["events"] += bool(mixture.event_class)
            counts["dropped_events"] += bool(mixture.event_class) and not events
            result.rows.append(row)
            strong[row.path] = events
    counts["imported"] = len(result.rows)
    result.counts = dict(counts)
    result.finish(strict, shown_roots, expected="the mixtures' audio files beside their meta files")
    return result


def _mixture_row(
    mixture: _Mixture, path: Path, split: str, class_label: Mapping[str, str] | None
) -> tuple[ManifestRow, tuple[StrongEvent, ...]]:
    label = mixture.event_class if class_label is None else class_label.get(mixture.event_class, "")
    events = (StrongEvent(mixture.onset_s, mixture.offset_s, label),) if label else ()
    group = f"bg:{_recording(mixture.background)}" if mixture.background else Path(mixture.name).stem
    extra = {
        "dcase_set": mixture.dcase_set,
        "onset_s": f"{mixture.onset_s:.6f}" if events else "",
        "offset_s": f"{mixture.offset_s:.6f}" if events else "",
        "ebr_db": mixture.ebr_db,
        "event_file": mixture.event_file,
        "background_file": mixture.background,
    }
    return ManifestRow(path=path, label=label, split=split, group=group, extra=extra), events
