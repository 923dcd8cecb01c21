"""``thce detect``, ``thce evaluate-events`` and ``thce export``: use a trained run on real recordings."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from thce.cli.progress import ProgressBars


def run_detect(args: argparse.Namespace) -> int:
    from thce.outputs import check_events_out
    from thce.rundir import checkpoint_path

    # mistakes fail at once, before torch is imported and features computed: --out, the run, the device
    if args.out is not None:
        check_events_out(args.out, overwrite=args.overwrite)
    checkpoint_path(args.run_dir, args.method)
    from thce.detect import DetectConfig, detect_run
    from thce.events import write_event_tsv, write_events
    from thce.devices import check_device

    check_device(args.device, source="--device")
    config = DetectConfig(
        hop_s=args.hop_s, threshold=args.threshold, median_filter_s=args.median_filter_s, batch_size=args.batch_size
    )
    with ProgressBars(enabled=not args.quiet) as bars:
        result = detect_run(
            args.run_dir, [str(p) for p in args.audio], method=args.method, config=config, device=args.device,
            progress=bars,
        )
    thresholds = ", ".join(f"{name} {value:.3f}" for name, value in result.thresholds.items())
    summary = (
        f"{len(result.events)} events in {len(result.files)} file(s); window {result.settings['window_s']:g} s, "
        f"hop {result.settings['hop_s']:g} s, median filter {result.settings['median_filter_frames']} frame(s); "
        f"thresholds ({args.threshold}): {thresholds}"
    )
    if args.out is None:
        buffer = io.StringIO()
        write_event_tsv(buffer, result)
        sys.stdout.write(buffer.getvalue())
        print(summary, file=sys.stderr)
    else:
        write_events(args.out, result)
        print(summary)
        print(f"Events: {args.out}")
    return 0


def _json_object(path: Path) -> bool:
    from thce.io import read_head

    return read_head(path).lstrip().startswith(b"{")


def run_evaluate(args: argparse.Namespace) -> int:
    from thce.io import check_output_path, refuse_other_kind, write_json

    if args.out is not None:  # before the lists are read and scored
        check_output_path(args.out)
        refuse_other_kind(args.out, looks_ours=_json_object, what="a JSON file", overwrite=args.overwrite)
    from thce.event_metrics import evaluate_events, evaluation_markdown
    from thce.events import read_event_list

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    result = evaluate_events(
        read_event_list(args.reference), read_event_list(args.estimated), collar_s=args.collar_s, classes=classes
    )
    print(evaluation_markdown(result))
    if args.out is not None:
        write_json(args.out, result)
        print(f"\nMetrics: {args.out}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from thce.outputs import check_export_out
    from thce.rundir import checkpoint_path

    check_export_out(args.out, args.format, overwrite=args.overwrite)  # before torch is imported
    checkpoint_path(args.run_dir, args.method)
    from thce.export import export_run

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
    det.add_argument("audio", type=Path, nargs="+", help="audio files (any length, rate and channel count)")
    det.add_argument("--method", default="proposed2", help="checkpoint to use: baseline, proposed1, proposed2")
    det.add_argument("--hop-s", type=float, default=None,
                     help="seconds between windows (default: half the window; smaller = finer onsets, slower)")
    det.add_argument("--threshold", default="eer",
                     help="per-class threshold from the validation split: eer (default), far:RATE (e.g. far:0.01: "
                          "false-alarm rate at most 1%%), or a number for every class")
    det.add_argument("--median-filter-s", type=float, default=None,
                     help="median filter over window decisions, seconds (default: a quarter of the window; 0: off)")
    det.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (default 16)")
    det.add_argument("--device", default="cpu", help="torch device (default cpu)")
    det.add_argument("--out", type=Path, default=None,
                     help="events file: .json, or a tab-separated DCASE event list (.csv/.tsv/.txt); default: "
                          "the event list on stdout")
    det.add_argument("--overwrite", action="store_true",
                     help="replace an existing --out file that is not a thce event list of that format")
    det.set_defaults(func=run_detect)

    ev = subparsers.add_parser(
        "evaluate-events",
        help="event-based error rate and F-score (DCASE 2017 task 2: onset only, 500 ms collar)",
        description="Compare estimated events with a reference. Lists: a DCASE tab-separated event list "
        "(filename, onset, offset, event_label), a thce detection JSON, or a manifest CSV with onset_s/offset_s "
        "columns. Files are matched by base name.",
    )
    ev.add_argument("reference", type=Path, help="reference events")
    ev.add_argument("estimated", type=Path, help="estimated events (e.g. from `thce detect`)")
    ev.add_argument("--collar-s", type=float, default=0.5, help="onset collar in seconds (default 0.5)")
    ev.add_argument("--classes", default=None, help="comma-separated labels to evaluate (default: all seen)")
    ev.add_argument("--out", type=Path, default=None, help="also write the metrics as JSON")
    ev.add_argument("--overwrite", action="store_true", help="replace an existing --out file that is not JSON")
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
