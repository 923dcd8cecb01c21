"""``thce detect``, ``thce events``, ``thce evaluate-events`` and ``thce export``: use a trained run on real
recordings."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from thce.cli.progress import ProgressBars

if TYPE_CHECKING:
    from thce.detection.localise import EventRules


def run_detect(args: argparse.Namespace) -> int:
    from thce.detection import DetectConfig, DetectionOutputs, run_detection

    outputs = DetectionOutputs.beside(
        sys.stdout if args.out is None else args.out, scores=args.scores, skip_bad=args.skip_bad, plots=args.plots,
        reference=args.reference, overwrite=args.overwrite,
    )  # fmt: skip
    config = DetectConfig(
        hop_s=args.hop_s, threshold=args.threshold, median_filter_s=args.median_filter_s, batch_size=args.batch_size,
        events=_event_rules(args), agreement=args.agreement,
    )  # fmt: skip
    with ProgressBars(enabled=not args.quiet) as bars:
        found = run_detection(
            args.run_dir, args.audio, outputs=outputs, method=args.method, config=config, device=args.device,
            skip_bad=args.skip_bad, progress=bars,
        )  # fmt: skip
    _print_summary(found.summary(), args.out)
    return 0


def _print_summary(lines: list[str], out: Path | None) -> None:
    """What a command found: on stderr after an event list on stdout; else on stdout, naming the ``out`` file."""
    if out is None:
        print("\n".join(lines), file=sys.stderr)
    else:
        print("\n".join(lines))
        print(f"Events: {out}")


def run_events(args: argparse.Namespace) -> int:
    """``thce events SCORES --threshold ...``: saved score tables -> events, without the model."""
    from thce.detection.outputs import check_events_out

    if args.out is not None:
        tables = sorted(args.scores.iterdir()) if args.scores.is_dir() else [args.scores]
        check_events_out(args.out, overwrite=args.overwrite, inputs=tables)
    from thce.detection.events import write_event_tsv, write_events
    from thce.detection.localise import EventRules
    from thce.detection.tables import events_from_tables

    result = events_from_tables(args.scores, args.threshold, _event_rules(args) or EventRules())
    if args.out is None:
        buffer = io.StringIO()
        write_event_tsv(buffer, result)
        sys.stdout.write(buffer.getvalue())
    else:
        write_events(args.out, result)
    _print_summary([f"{len(result.events)} events in {len(result.files)} file(s) from {args.scores}"], args.out)
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


#: The flags of :class:`thce.detection.localise.EventRules` (``thce detect`` and ``thce events``): field -> help.
EVENT_RULE_FLAGS = {
    "min_event_s": "drop events shorter than this, seconds (after merging)",
    "min_gap_s": "merge events of one class less than this apart, seconds",
}
#: What the rules are when neither flag is given.
_RULE_DEFAULTS = {
    "detect": "default: a frame-level run's per-class values chosen on validation, else 0; either flag sets both "
    "rules for every class, the other at 0",
    "events": "default 0",
}


def _add_event_rules(parser: argparse.ArgumentParser, command: str) -> None:
    for name, text in EVENT_RULE_FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=None,
                            help=f"{text} ({_RULE_DEFAULTS[command]})")  # fmt: skip


def _event_rules(args: argparse.Namespace) -> EventRules | None:
    """The rules the flags give; ``None`` when neither flag is given."""
    from thce.detection.localise import EventRules

    given = {name: getattr(args, name) for name in EVENT_RULE_FLAGS if getattr(args, name) is not None}
    return EventRules(**given) if given else None


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
    _add_event_rules(det, "detect")
    det.add_argument("--agreement", type=float, default=0.5,
                     help="fraction of the windows hearing a moment that must detect a class for it to be part of "
                          "an event (default 0.5; 1: all, the tightest onsets for a model that fires on any part "
                          "of an event; lower keeps events a model detects in fewer windows)")
    det.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (default 16)")
    det.add_argument("--skip-bad", action="store_true",
                     help="leave out files that cannot be read (listed with the reason, in <out stem>.skipped.csv) "
                          "instead of stopping")
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
    _add_event_rules(evs, "events")
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
