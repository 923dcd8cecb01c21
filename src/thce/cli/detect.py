"""``thce detect``, ``thce events``, ``thce evaluate-events`` and ``thce export``: use a trained run on real
recordings."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thce.cli.progress import ProgressBars

if TYPE_CHECKING:
    from thce.detection.events import EventList

logger = logging.getLogger(__name__)

SKIP_LIST_HEADER = "file\treason\n"  # the first line of ``--skip-bad``'s list beside --out


def _scores_dir(args: argparse.Namespace) -> Path | None:
    """``--scores``, else next to a regular ``--out`` file (``events.tsv`` -> ``events.scores/``), else none (no
    ``--out``, or ``--out`` a device or pipe such as ``/dev/null``)."""
    from thce.detection.outputs import writes_through

    if args.scores is not None:
        return args.scores
    if args.out is None or writes_through(args.out):
        return None
    return args.out.with_name(args.out.stem + ".scores")


def _skip_list(args: argparse.Namespace) -> Path | None:
    """Where ``--skip-bad`` lists the files it left out: beside a regular ``--out`` file (``events.tsv`` ->
    ``events.skipped.tsv``); none without ``--skip-bad`` or a regular ``--out``."""
    from thce.detection.outputs import writes_through

    if not args.skip_bad or args.out is None or writes_through(args.out):
        return None
    return args.out.with_name(args.out.stem + ".skipped.tsv")


def _check_scores_dir(folder: Path, names: list[str], overwrite: bool, inputs: list[Path]) -> None:
    """Before any work: ``folder`` can hold the tables, and none of them is an input or would replace a file of
    another kind."""
    from thce.io import check_output_file, check_output_path
    from thce.detection.tables import looks_like_table

    check_output_path(folder, directory=True)
    for name in names:
        check_output_file(folder / name, looks_ours=looks_like_table, what="a score table", overwrite=overwrite,
                          inputs=inputs)  # fmt: skip


def _read_reference(args: argparse.Namespace, paths: list[str]) -> EventList | None:
    """``--reference``'s events, for the pages; a warning (and ``None``) where they cannot be used: without
    ``--plots``, or naming none of the inputs."""
    if args.reference is None:
        return None
    if args.plots is None:
        logger.warning("--reference %s: ignored without --plots (it is drawn in the pages; to score the events, "
                       "run thce evaluate-events)", args.reference)  # fmt: skip
        return None
    from thce.detection.events import read_event_list

    reference = read_event_list(args.reference)
    if not {Path(p).name for p in paths} & set(reference.all_files):
        logger.warning("--reference %s: names none of the %d input file(s) (files are matched by base name), so "
                       "no reference is drawn", args.reference, len(paths))  # fmt: skip
    return reference


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


def run_detect(args: argparse.Namespace) -> int:
    from thce.detection.inputs import expand_inputs
    from thce.detection.outputs import check_events_out
    from thce.rundir import checkpoint_path
    from thce.detection.tables import check_unique_stems, table_name

    # mistakes fail at once, before torch is imported and features computed: --out, the inputs, the run, the device
    inputs = [args.reference] if args.reference is not None else []
    if args.out is not None:
        check_events_out(args.out, overwrite=args.overwrite, inputs=inputs)
    skip_list = _skip_list(args)
    if skip_list is not None:
        from thce.io import check_output_file, starts_with

        check_output_file(skip_list, looks_ours=starts_with(SKIP_LIST_HEADER.encode()), what="a thce skip list",
                          overwrite=args.overwrite, inputs=inputs)  # fmt: skip
    paths = expand_inputs([str(p) for p in args.audio])
    inputs += [Path(p) for p in paths]
    scores_dir = _scores_dir(args)
    if scores_dir is not None:
        check_unique_stems(paths)
        _check_scores_dir(scores_dir, [table_name(p) for p in paths], args.overwrite, inputs)
    reference = _read_reference(args, paths)
    plots = None
    if args.plots is not None:
        from thce.detection.pages import check_plots_dir

        plots = check_plots_dir(args.plots, paths, overwrite=args.overwrite, reference=reference)
    checkpoint_path(args.run_dir, args.method)
    with _held([scores_dir, args.plots]):  # one process writes these folders at a time
        return _detect(args, paths, scores_dir, skip_list, plots)


def _detect(
    args: argparse.Namespace, paths: list[str], scores_dir: Path | None, skip_list: Path | None, plots: Any
) -> int:
    """``thce detect`` after its checks, in the output folders this process holds."""
    from thce.detection.detect import DetectConfig, FileDetection, detect_run
    from thce.detection.events import write_event_tsv, write_events
    from thce.devices import check_device
    from thce.io import ensure_dir
    from thce.detection.tables import table_name

    check_device(args.device, source="--device")
    config = DetectConfig(
        hop_s=args.hop_s, threshold=args.threshold, median_filter_s=args.median_filter_s, batch_size=args.batch_size,
        min_event_s=args.min_event_s, min_gap_s=args.min_gap_s, agreement=args.agreement,
    )
    config.validate()

    def on_file(found: FileDetection) -> None:
        if scores_dir is not None:
            from thce.detection.tables import write_table

            ensure_dir(scores_dir)
            write_table(scores_dir / table_name(found.scores.path), found.edges, found.curve, found.scores.classes)
        if plots is not None:
            plots.add(found)

    with ProgressBars(enabled=not args.quiet) as bars:
        result = detect_run(
            args.run_dir, paths, method=args.method, config=config, device=args.device, progress=bars,
            skip_bad=args.skip_bad, on_file=on_file,
        )
    # every digit a float needs: `thce events --threshold` with the printed values finds the same events
    thresholds = ", ".join(f"{name} {float(value)!r}" for name, value in result.thresholds.items())
    summary = (
        f"{len(result.events)} events in {len(result.files)} file(s); window {result.settings['window_s']:g} s, "
        f"hop {result.settings['hop_s']:g} s, median filter {result.settings['median_filter_frames']} frame(s); "
        f"thresholds ({args.threshold}): {thresholds}"
    )
    lines = [summary]
    if result.skipped:
        lines.append(f"Skipped {len(result.skipped)} file(s) that could not be read:")
        lines += [f"  {s['file']}: {s['reason']}" for s in result.skipped]
    if scores_dir is not None and result.files:
        from thce.detection.tables import write_audio_index

        write_audio_index(scores_dir, [f["file"] for f in result.files])
        lines.append(f"Scores: {scores_dir}/ (one onset, offset, <class>... table per file)")
    if result.skipped and skip_list is not None:
        _write_skipped(skip_list, result.skipped)
        lines.append(f"Skip list: {skip_list}")
    if plots is not None:
        lines.append(f"Pages: {plots.finish(result)}")
    if args.out is None:
        buffer = io.StringIO()
        write_event_tsv(buffer, result)
        sys.stdout.write(buffer.getvalue())
        print("\n".join(lines), file=sys.stderr)
    else:
        write_events(args.out, result)
        print("\n".join(lines))
        print(f"Events: {args.out}")
    return 0


def _write_skipped(path: Path, skipped: list[dict[str, str]]) -> None:
    from thce.io import atomic_write

    with atomic_write(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(SKIP_LIST_HEADER)
        for s in skipped:
            handle.write(f"{s['file']}\t{s['reason']}\n")


def run_events(args: argparse.Namespace) -> int:
    """``thce events SCORES --threshold ...``: saved score tables -> events, without the model."""
    from thce.detection.outputs import check_events_out

    if args.out is not None:
        tables = sorted(args.scores.iterdir()) if args.scores.is_dir() else [args.scores]
        check_events_out(args.out, overwrite=args.overwrite, inputs=tables)
    from thce.detection.events import write_event_tsv, write_events
    from thce.detection.tables import events_from_tables

    result = events_from_tables(args.scores, args.threshold, min_event_s=args.min_event_s, min_gap_s=args.min_gap_s)
    summary = f"{len(result.events)} events in {len(result.files)} file(s) from {args.scores}"
    if args.out is None:
        buffer = io.StringIO()
        write_event_tsv(buffer, result)
        sys.stdout.write(buffer.getvalue())
        print(summary, file=sys.stderr)
    else:
        write_events(args.out, result)
        print(f"{summary}\nEvents: {args.out}")
    return 0


def _metrics_json(path: Path) -> bool:
    """What ``thce evaluate-events --out`` writes: a JSON object with the event- and segment-based metrics."""
    from thce.io import read_text

    found = json.loads(read_text(path, what="metrics file"))
    return isinstance(found, dict) and {"metric", "collar_s", "overall", "segment_based"} <= found.keys()


def run_evaluate(args: argparse.Namespace) -> int:
    from thce.errors import ConfigError
    from thce.io import check_output_file, write_json

    if not args.collar_s >= 0:  # before the lists are read and scored
        raise ConfigError(f"--collar-s: expected a non-negative number of seconds, got {args.collar_s:g}")
    if not args.segment_s > 0:
        raise ConfigError(f"--segment-s: expected a positive number of seconds, got {args.segment_s:g}")
    if args.out is not None:
        inputs = [args.reference, args.estimated]
        if args.scores is not None:
            inputs += sorted(args.scores.iterdir()) if args.scores.is_dir() else [args.scores]
        check_output_file(args.out, looks_ours=_metrics_json, what="the metrics of thce evaluate-events",
                          overwrite=args.overwrite, inputs=inputs)  # fmt: skip
    from thce.detection.metrics import evaluate_events, evaluate_segments, evaluation_markdown, segments_markdown
    from thce.detection.events import read_event_list

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    reference, estimated = read_event_list(args.reference), read_event_list(args.estimated)
    result = evaluate_events(reference, estimated, collar_s=args.collar_s, classes=classes)
    result["segment_based"] = evaluate_segments(reference, estimated, segment_s=args.segment_s, classes=classes)
    print(evaluation_markdown(result))
    print()
    print(segments_markdown(result["segment_based"]))
    if args.scores is not None:
        from thce.detection.threshold_free import threshold_free

        result["threshold_free"] = threshold_free(args.scores, args.reference)
        print()
        print(result["threshold_free"]["summary"])
    if args.out is not None:
        write_json(args.out, result)
        print(f"\nMetrics: {args.out}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from thce.detection.outputs import check_export_out
    from thce.rundir import checkpoint_path

    checkpoint = checkpoint_path(args.run_dir, args.method)
    check_export_out(args.out, args.format, overwrite=args.overwrite, inputs=[checkpoint])  # before torch is imported
    from thce.detection.export import export_run

    result = export_run(
        args.run_dir, fmt=args.format, out=args.out, method=args.method, inputs=args.input, overwrite=args.overwrite
    )
    print(f"Exported {args.method} ({result.inputs} -> class scores) as {result.metadata['format']}: {result.path}")
    print(f"Metadata: {result.metadata_path}")
    if result.max_abs_diff is None:
        print("Parity not checked (install onnxruntime: pip install 'thce[export]')")
    else:
        print(f"Parity with PyTorch: max abs difference {result.max_abs_diff:.2e}")
    print(json.dumps(result.metadata["input"], indent=None))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    det = subparsers.add_parser(
        "detect",
        help="find events in recordings of any length with a trained run",
        description="Slide windows of the training clip length over each file (read in blocks), score every class, "
        "threshold per class, median-filter and write events (file, onset, offset, label, score).",
    )
    det.add_argument("run_dir", type=Path, help="run directory of `thce experiment`")
    det.add_argument("audio", type=Path, nargs="+",
                     help="audio files (any length, rate and channel count), folders (searched recursively for "
                          "audio files) or globs (quote them; ** is recursive)")
    det.add_argument("--method", default="proposed2", help="checkpoint to use: baseline, proposed1, proposed2")
    det.add_argument("--hop-s", type=float, default=None,
                     help="seconds between windows (default: half the window; smaller = finer onsets, slower)")
    det.add_argument("--threshold", default="auto",
                     help="per-class threshold from the validation split: auto (default: events for a frame-level "
                          "run, else eer), eer, events (a frame-level run's thresholds chosen on validation event F), "
                          "far:RATE (e.g. far:0.01: false-alarm rate at most 1%%), or a number for every class")
    det.add_argument("--median-filter-s", type=float, default=None,
                     help="median filter over window decisions, seconds (default: a quarter of the window; a "
                          "frame-level run: each class's chosen on validation; 0: off)")
    det.add_argument("--min-event-s", type=float, default=0.0,
                     help="drop events shorter than this, seconds (after merging; default 0: keep all)")
    det.add_argument("--min-gap-s", type=float, default=0.0,
                     help="merge events of one class less than this apart, seconds (default 0)")
    det.add_argument("--agreement", type=float, default=0.5,
                     help="fraction of the windows hearing a moment that must detect a class for it to be part of "
                          "an event (default 0.5; 1: all, the tightest onsets for a model that fires on any part "
                          "of an event; lower keeps events a model detects in fewer windows)")
    det.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (default 16)")
    det.add_argument("--skip-bad", action="store_true",
                     help="leave out files that cannot be read (listed with the reason) instead of stopping")
    det.add_argument("--scores", type=Path, default=None,
                     help="folder for the score tables (onset, offset, <class>... per file; the sed_scores_eval "
                          "format); default: next to --out (events.tsv -> events.scores/), none without --out")
    det.add_argument("--plots", type=Path, default=None,
                     help="folder for pictures of each file (spectrogram, scores, events; a file longer than 2 "
                          "minutes as panels of 2 minutes) and an index.html with audio players and event tables")
    det.add_argument("--reference", type=Path, default=None,
                     help="reference events for --plots (any list that evaluate-events reads): drawn under the "
                          "detected ones, each marked hit, missed or false alarm (onsets within 500 ms), with each "
                          "file's event-based F-score")
    det.add_argument("--device", default="cpu", help="torch device (default cpu)")
    det.add_argument("--out", type=Path, default=None,
                     help="events file: .json, or a tab-separated DCASE event list (.csv/.tsv/.txt); default: "
                          "the event list on stdout")
    det.add_argument("--overwrite", action="store_true",
                     help="replace an existing --out file that is not a thce event list of that format")
    det.set_defaults(func=run_detect)

    evs = subparsers.add_parser(
        "events",
        help="turn saved score tables (thce detect --scores) into events at new thresholds, without the model",
        description="Threshold the score over time that `thce detect` saved (a folder of onset, offset, <class>... "
        "tables, or one table): runs of frames at or above the threshold are events.",
    )
    evs.add_argument("scores", type=Path, help="a folder of score tables or one table")
    evs.add_argument("--threshold", required=True,
                     help="a number for every class, or CLASS=NUMBER,... naming every class")
    evs.add_argument("--min-event-s", type=float, default=0.0, help="drop events shorter than this, seconds")
    evs.add_argument("--min-gap-s", type=float, default=0.0, help="merge events of one class closer than this")
    evs.add_argument("--out", type=Path, default=None,
                     help="events file (.json or .tsv/.csv/.txt); default: the event list on stdout")
    evs.add_argument("--overwrite", action="store_true", help="replace an existing --out of another kind")
    evs.set_defaults(func=run_events)

    ev = subparsers.add_parser(
        "evaluate-events",
        help="event-based (DCASE 2017 task 2: onset only, 500 ms collar) and segment-based (1 s) error rate and "
        "F-score",
        description="Compare estimated events with a reference. Lists: a DCASE tab-separated event list "
        "(filename, onset, offset, event_label), a thce detection JSON, or a manifest CSV with onset_s/offset_s "
        "columns. Files are matched by base name.",
    )
    ev.add_argument("reference", type=Path, help="reference events")
    ev.add_argument("estimated", type=Path, help="estimated events (e.g. from `thce detect`)")
    ev.add_argument("--collar-s", type=float, default=0.5, help="onset collar in seconds (default 0.5)")
    ev.add_argument("--classes", default=None, help="comma-separated labels to evaluate (default: all seen)")
    ev.add_argument("--segment-s", type=float, default=1.0,
                    help="segment length of the segment-based metrics, seconds (default 1)")
    ev.add_argument("--scores", type=Path, default=None,
                    help="also threshold-independent metrics (PSDS, collar-based F-score) from thce detect's saved "
                         "score tables; needs the eval extra: pip install 'thce[eval]'")
    ev.add_argument("--out", type=Path, default=None, help="also write the metrics as JSON")
    ev.add_argument("--overwrite", action="store_true",
                    help="replace an existing --out file that thce evaluate-events did not write")
    ev.set_defaults(func=run_evaluate)

    ex = subparsers.add_parser(
        "export",
        help="export a trained detector as ONNX or TorchScript",
        description="The exported model takes raw (unnormalised) log-mel windows (batch, frames, n_mels), as "
        "thce.audio.LogMel computes them, normalises them inside and returns sigmoid class scores (batch, L). "
        "TorchScript can also take raw audio (--input audio): (batch, samples) mono float32 at the model's rate, "
        "one window long. A JSON file beside the model describes the input, the classes and the thresholds.",
    )
    ex.add_argument("run_dir", type=Path, help="run directory of `thce experiment`")
    ex.add_argument("--format", choices=("onnx", "torchscript"),
                    help="onnx or torchscript (default: from the extension of --out: .onnx, or .pt/.pth/.ts)")
    ex.add_argument("--method", default="proposed2", help="checkpoint to export (default proposed2)")
    ex.add_argument("--input", default="logmel", choices=("logmel", "audio"),
                    help="what the model takes: log-mel windows (default) or raw audio (TorchScript only)")
    ex.add_argument("--out", type=Path, required=True, help="model file to write (e.g. model.onnx, model.pt)")
    ex.add_argument("--overwrite", action="store_true",
                    help="replace an existing --out (or its .json) that is not a model of that format")
    ex.set_defaults(func=run_export)
