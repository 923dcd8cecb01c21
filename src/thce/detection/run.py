"""One detection as ``thce detect`` makes it, for Python callers too: every check before any work, the model over
each input, then the files beside the event list (score tables, the skip list, review pages) and the event list.

:func:`run_detection` writes exactly what ``thce detect`` writes (the command only parses its arguments into a
:class:`DetectionOutputs` and a :class:`~thce.detection.config.DetectConfig` and prints :meth:`DetectionRun.summary`).
The event list and the skip list are checked before anything else is imported (:mod:`thce.audio` imports torch),
so that a wrong path fails at once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from thce.data.manifest import SKIPPED_LIST_KIND, Skipped, looks_like_skipped_list, skipped_list_path, write_skipped
from thce.detection.config import DetectConfig
from thce.detection.outputs import check_events_out, writes_through
from thce.io import check_output_file, check_output_path, ensure_dir
from thce.progress import ProgressFn

if TYPE_CHECKING:
    from thce.detection.detect import FileDetection
    from thce.detection.events import DetectionResult, EventList
    from thce.detection.pages import DetectionPages

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class DetectionOutputs:
    """What a detection writes.

    Attributes:
        events: the event list: a file (``.json``, or a tab-separated DCASE list ``.tsv``/``.csv``/``.txt``; any name
            for a device or FIFO), an open text stream (the tab-separated list, as ``thce detect`` prints it without
            ``--out``), or ``None`` (not written; the caller has :attr:`DetectionRun.result`).
        scores: folder of the per-file score tables (:mod:`thce.detection.tables`), or ``None``.
        skip_list: file listing the inputs ``skip_bad`` left out, or ``None``: the CSV of every list of skipped
            files thce writes (:func:`thce.data.manifest.write_skipped`: ``path,problem,source``).
        plots: folder of a picture per file and an ``index.html`` (:mod:`thce.detection.pages`), or ``None``.
        reference: reference events drawn under the detected ones in ``plots`` (any list
            :func:`thce.detection.events.read_event_list` reads).
        overwrite: replace existing outputs that are not thce files of their kind.
    """

    events: Path | TextIO | None = None
    scores: Path | None = None
    skip_list: Path | None = None
    plots: Path | None = None
    reference: Path | None = None
    overwrite: bool = False

    @classmethod
    def beside(
        cls,
        events: Path | TextIO | None,
        *,
        scores: Path | None = None,
        skip_bad: bool = False,
        plots: Path | None = None,
        reference: Path | None = None,
        overwrite: bool = False,
    ) -> DetectionOutputs:
        """``thce detect``'s outputs: score tables in ``scores``, else beside a regular ``events`` file
        (``events.tsv`` -> ``events.scores/``); with ``skip_bad``, the skip list beside it (``events.skipped.csv``).
        Neither beside a stream, a device or a FIFO (``/dev/null``)."""
        regular = events if isinstance(events, Path) and not writes_through(events) else None
        if scores is None and regular is not None:
            scores = regular.with_name(regular.stem + ".scores")
        skip_list = skipped_list_path(regular) if skip_bad and regular is not None else None
        return cls(events, scores, skip_list, plots, reference, overwrite)


@dataclass
class DetectionRun:
    """What :func:`run_detection` found and wrote.

    Attributes:
        result: the events, files, thresholds, settings and skipped inputs.
        scores: the folder of score tables, if any were written.
        skip_list: the list of skipped inputs, if one was written.
        pages: the review page's ``index.html``, if ``plots`` was asked for.
    """

    result: DetectionResult
    scores: Path | None = None
    skip_list: Path | None = None
    pages: Path | None = None

    def summary(self) -> list[str]:
        """Lines saying what was found, what was skipped and where the files beside the event list are."""
        result, settings = self.result, self.result.settings
        # every digit a float needs: `thce events --threshold` with the printed values finds the same events
        thresholds = ", ".join(f"{name} {float(value)!r}" for name, value in result.thresholds.items())
        rules = "".join(f", {words} {_seconds(settings[key])}" for key, words in
                        (("min_gap_s", "min gap"), ("min_event_s", "min event"))
                        if _any_positive(settings.get(key, 0.0)))  # fmt: skip
        lines = [
            f"{len(result.events)} events in {len(result.files)} file(s); window {settings['window_s']:g} s, "
            f"hop {settings['hop_s']:g} s, median filter {settings['median_filter_frames']} frame(s){rules}; "
            f"thresholds ({settings['threshold_rule']}): {thresholds}"
        ]
        if result.skipped:
            lines.append(f"Skipped {len(result.skipped)} file(s) that could not be read:")
            lines += [f"  {s['file']}: {s['reason']}" for s in result.skipped]
        if self.scores is not None:
            lines.append(f"Scores: {self.scores}/ (one onset, offset, <class>... table per file)")
        if self.skip_list is not None:
            lines.append(f"Skip list: {self.skip_list}")
        if self.pages is not None:
            lines.append(f"Pages: {self.pages}")
        return lines


def _any_positive(value: float | dict[str, float]) -> bool:
    return any(v > 0 for v in value.values()) if isinstance(value, dict) else value > 0


def _seconds(value: float | dict[str, float]) -> str:
    """A setting of one number or one per class, in seconds: ``0.5 s`` or ``dog 2 s, baby 0 s``."""
    if isinstance(value, dict):
        return ", ".join(f"{label} {seconds:g} s" for label, seconds in value.items())
    return f"{value:g} s"


def _check_event_outputs(outputs: DetectionOutputs, inputs: list[Path]) -> None:
    """Before any work: the event list and the skip list can be written, are none of ``inputs`` and replace no file
    of another kind (:func:`thce.io.check_output_file`)."""
    if isinstance(outputs.events, Path):
        check_events_out(outputs.events, overwrite=outputs.overwrite, inputs=inputs)
    if outputs.skip_list is not None:
        check_output_file(outputs.skip_list, looks_ours=looks_like_skipped_list, what=SKIPPED_LIST_KIND,
                          overwrite=outputs.overwrite, inputs=inputs)  # fmt: skip


def _read_reference(outputs: DetectionOutputs, paths: list[str]) -> EventList | None:
    """The reference events for the pages; a warning (and ``None``) where they cannot be used: without ``plots``,
    or naming none of the inputs."""
    if outputs.reference is None:
        return None
    if outputs.plots is None:
        logger.warning("--reference %s: ignored without --plots (it is drawn in the pages; to score the events, "
                       "run thce evaluate-events)", outputs.reference)  # fmt: skip
        return None
    from thce.detection.events import read_event_list

    reference = read_event_list(outputs.reference)
    if not {Path(p).name for p in paths} & set(reference.all_files):
        logger.warning("--reference %s: names none of the %d input file(s) (files are matched by base name), so "
                       "no reference is drawn", outputs.reference, len(paths))  # fmt: skip
    return reference


def _check_per_file_outputs(outputs: DetectionOutputs, paths: list[str], inputs: list[Path]) -> DetectionPages | None:
    """Before any work: the score tables and pages of ``paths`` can be written, are none of ``inputs`` and replace
    no file of another kind; returns the page writer (``outputs.plots``)."""
    from thce.detection.tables import check_unique_stems, looks_like_table, table_name

    if outputs.scores is not None:
        check_unique_stems(paths)
        check_output_path(outputs.scores, directory=True)
        for name in (table_name(p) for p in paths):
            check_output_file(outputs.scores / name, looks_ours=looks_like_table, what="a score table",
                              overwrite=outputs.overwrite, inputs=inputs)  # fmt: skip
    reference = _read_reference(outputs, paths)
    if outputs.plots is None:
        return None
    from thce.detection.pages import check_plots_dir

    return check_plots_dir(outputs.plots, paths, overwrite=outputs.overwrite, reference=reference)


def _held(folders: list[Path | None]) -> contextlib.ExitStack:
    """The output folders locked for this process (:func:`thce.locks.folder_lock`), released when the stack is."""
    from thce.locks import folder_lock

    stack = contextlib.ExitStack()
    try:
        for folder in folders:
            if folder is not None:
                stack.enter_context(folder_lock(folder))
    except BaseException:
        stack.close()
        raise
    return stack


def run_detection(
    run_dir: str | os.PathLike,
    audio: Sequence[str | os.PathLike],
    *,
    outputs: DetectionOutputs,
    method: str = "proposed2",
    config: DetectConfig | None = None,
    device: str = "cpu",
    skip_bad: bool = False,
    progress: ProgressFn | None = None,
) -> DetectionRun:
    """Detect events in ``audio`` (files, folders, globs: :func:`thce.detection.inputs.expand_inputs`) with the
    ``method`` checkpoint of ``run_dir`` and write ``outputs``, as ``thce detect`` does.

    Every mistake (an output that cannot be written, is one of the inputs or would replace a file of another kind,
    audio matching nothing, no checkpoint, the output folders held by another process, an unusable device, bad
    settings) raises a :class:`~thce.errors.ThceError` before any file is read. ``skip_bad``: leave out unreadable inputs (listed in
    :attr:`DetectionOutputs.skip_list`) instead of stopping.
    """
    inputs = [Path(outputs.reference)] if outputs.reference is not None else []  # never written over
    _check_event_outputs(outputs, inputs)  # before torch is imported (thce.audio imports it)
    from thce.detection.inputs import expand_inputs
    from thce.rundir import checkpoint_path

    paths = expand_inputs([os.fspath(p) for p in audio])
    inputs += [Path(p) for p in paths]
    pages = _check_per_file_outputs(outputs, paths, inputs)
    checkpoint_path(run_dir, method)
    with _held([outputs.scores, outputs.plots]):  # one process writes these folders at a time
        return _detect(run_dir, paths, outputs, pages, method=method, config=config, device=device,
                       skip_bad=skip_bad, progress=progress)  # fmt: skip


def _detect(
    run_dir: str | os.PathLike,
    paths: list[str],
    outputs: DetectionOutputs,
    pages: DetectionPages | None,
    *,
    method: str,
    config: DetectConfig | None,
    device: str,
    skip_bad: bool,
    progress: ProgressFn | None,
) -> DetectionRun:
    """:func:`run_detection` after its checks, in the output folders this process holds."""
    from thce.detection.detect import detect_run
    from thce.detection.events import write_event_tsv, write_events
    from thce.detection.tables import table_name, write_audio_index, write_table
    from thce.devices import check_device

    check_device(device, source="--device")
    config = config or DetectConfig()
    config.validate()

    def on_file(found: FileDetection) -> None:
        if outputs.scores is not None:
            ensure_dir(outputs.scores)
            write_table(outputs.scores / table_name(found.scores.path), found.edges, found.curve, found.scores.classes)
        if pages is not None:
            pages.add(found)

    result = detect_run(
        run_dir, paths, method=method, config=config, device=device, progress=progress, skip_bad=skip_bad,
        on_file=on_file,
    )  # fmt: skip
    run = DetectionRun(result)
    if outputs.scores is not None and result.files:
        write_audio_index(outputs.scores, [f["file"] for f in result.files])
        run.scores = outputs.scores
    if result.skipped and outputs.skip_list is not None:
        write_skipped([Skipped(s["file"], s["reason"], "thce detect") for s in result.skipped], outputs.skip_list)
        run.skip_list = outputs.skip_list
    if pages is not None:
        run.pages = pages.finish(result)
    if isinstance(outputs.events, Path):
        write_events(outputs.events, result)
    elif outputs.events is not None:
        buffer = io.StringIO()  # the whole list at once: nothing half-written on a stream if formatting fails
        write_event_tsv(buffer, result)
        outputs.events.write(buffer.getvalue())
    return run
