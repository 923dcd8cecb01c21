"""One detection as ``thce detect`` makes it, for Python callers too: every check before any work, the model over
each input, then the files beside the event list (score tables, the skip list, review pages) and the event list.

:func:`run_detection` writes exactly what ``thce detect`` writes (the command only parses its arguments into a
:class:`DetectionOutputs` and a :class:`~thce.detection.config.DetectConfig` and prints :meth:`DetectionRun.summary`).
The event list and the skip list are checked before anything else is imported (:mod:`thce.audio` imports torch),
so that a wrong path fails at once.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from thce.detection.config import DetectConfig
from thce.detection.outputs import check_events_out, writes_through
from thce.io import atomic_write, check_output_path, ensure_dir, refuse_other_kind, starts_with
from thce.progress import ProgressFn

if TYPE_CHECKING:
    from thce.detection.detect import FileDetection
    from thce.detection.events import DetectionResult
    from thce.detection.pages import DetectionPages

#: The first line of the list of files ``skip_bad`` left out (``<events stem>.skipped.tsv``): ``file<TAB>reason``.
SKIP_LIST_HEADER = "file\treason\n"


@dataclass(frozen=True)
class DetectionOutputs:
    """What a detection writes.

    Attributes:
        events: the event list: a file (``.json``, or a tab-separated DCASE list ``.tsv``/``.csv``/``.txt``; any name
            for a device or FIFO), an open text stream (the tab-separated list, as ``thce detect`` prints it without
            ``--out``), or ``None`` (not written; the caller has :attr:`DetectionRun.result`).
        scores: folder of the per-file score tables (:mod:`thce.detection.tables`), or ``None``.
        skip_list: file listing the inputs ``skip_bad`` left out (``file<TAB>reason``), or ``None``.
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
        (``events.tsv`` -> ``events.scores/``); with ``skip_bad``, the skip list beside it (``events.skipped.tsv``).
        Neither beside a stream, a device or a FIFO (``/dev/null``)."""
        regular = events if isinstance(events, Path) and not writes_through(events) else None
        if scores is None and regular is not None:
            scores = regular.with_name(regular.stem + ".scores")
        skip_list = regular.with_name(regular.stem + ".skipped.tsv") if skip_bad and regular is not None else None
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
        thresholds = ", ".join(f"{name} {value:.3f}" for name, value in result.thresholds.items())
        lines = [
            f"{len(result.events)} events in {len(result.files)} file(s); window {settings['window_s']:g} s, "
            f"hop {settings['hop_s']:g} s, median filter {settings['median_filter_frames']} frame(s); "
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


def _check_event_outputs(outputs: DetectionOutputs) -> None:
    """Before any work: the event list and the skip list can be written and replace no file of another kind."""
    if isinstance(outputs.events, Path):
        check_events_out(outputs.events, overwrite=outputs.overwrite)
    if outputs.skip_list is not None:
        check_output_path(outputs.skip_list)
        refuse_other_kind(outputs.skip_list, looks_ours=starts_with(SKIP_LIST_HEADER.encode()),
                          what="a thce skip list", overwrite=outputs.overwrite)  # fmt: skip


def _check_per_file_outputs(outputs: DetectionOutputs, paths: Sequence[str]) -> DetectionPages | None:
    """Before any work: the score tables and pages of ``paths`` can be written and replace no file of another kind;
    returns the page writer (``outputs.plots``)."""
    from thce.detection.tables import check_unique_stems, looks_like_table, table_name

    if outputs.scores is not None:
        check_unique_stems(paths)
        check_output_path(outputs.scores, directory=True)
        for name in (table_name(p) for p in paths):
            refuse_other_kind(outputs.scores / name, looks_ours=looks_like_table, what="a score table",
                              overwrite=outputs.overwrite)  # fmt: skip
    if outputs.plots is None:
        return None
    from thce.detection.events import read_event_list
    from thce.detection.pages import check_plots_dir

    reference = None if outputs.reference is None else read_event_list(outputs.reference)
    return check_plots_dir(outputs.plots, paths, overwrite=outputs.overwrite, reference=reference)


def _write_skip_list(path: Path, skipped: list[dict[str, str]]) -> None:
    with atomic_write(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(SKIP_LIST_HEADER)
        for s in skipped:
            handle.write(f"{s['file']}\t{s['reason']}\n")


def run_detection(
    run_dir: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    *,
    outputs: DetectionOutputs,
    method: str = "proposed2",
    config: DetectConfig | None = None,
    device: str = "cpu",
    skip_bad: bool = False,
    progress: ProgressFn | None = None,
) -> DetectionRun:
    """Detect events in ``inputs`` (files, folders, globs: :func:`thce.detection.inputs.expand_inputs`) with the
    ``method`` checkpoint of ``run_dir`` and write ``outputs``, as ``thce detect`` does.

    Every mistake (an output that cannot be written or would replace a file of another kind, inputs matching
    nothing, no checkpoint, an unusable device, bad settings) raises a :class:`~thce.errors.ThceError` before torch
    is imported and any file is read. ``skip_bad``: leave out unreadable inputs (listed in
    :attr:`DetectionOutputs.skip_list`) instead of stopping.
    """
    _check_event_outputs(outputs)  # before torch is imported (thce.audio imports it)
    from thce.detection.inputs import expand_inputs
    from thce.rundir import checkpoint_path

    paths = expand_inputs([os.fspath(p) for p in inputs])
    pages = _check_per_file_outputs(outputs, paths)
    checkpoint_path(run_dir, method)
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
        _write_skip_list(outputs.skip_list, result.skipped)
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
