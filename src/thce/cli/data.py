"""``thce data import FORMAT ...`` (dataset readers -> manifest CSV) and ``thce data mix`` (DCASE 2017-style mixtures).

The formats are the entries of :data:`thce.cli.import_formats.IMPORT_FORMATS`; this module runs any of them alike.
Each import writes the manifest (``--out``) and, beside it, ``<out stem>.skipped.csv`` listing every clip left out and
why; ``--strict`` stops at the first bad input instead.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from thce.cli.import_formats import IMPORT_FORMATS, ImportFormat, parse_classes
from thce.cli.progress import ProgressBars
from thce.errors import ConfigError


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{name} {text!r}: expected comma-separated numbers such as -6,0,6") from None
    if not values:
        raise ConfigError(f"{name} {text!r}: expected at least one number")
    return values


def _count(n: int, noun: str) -> str:
    """``1 clip``, ``2 clips``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def check_manifest_outputs(manifest: Path, skipped: Path, *, inputs: list[Path], overwrite: bool) -> None:
    """Before any work: the manifest and skipped list can be written, neither is one of ``inputs`` (a manifest
    checked into itself), and neither replaces a file that is not a thce manifest / skipped list (unless
    ``overwrite``). Raises :class:`ConfigError` or :class:`~thce.errors.OutputError` naming the file."""
    from thce.data.manifest import COLUMNS, SKIPPED_LIST_KIND, looks_like_skipped_list
    from thce.io import check_output_path, refuse_other_kind, starts_with

    for out, looks_ours, what in ((manifest, starts_with(",".join(COLUMNS).encode()), "a thce manifest"),
                                  (skipped, looks_like_skipped_list, SKIPPED_LIST_KIND)):  # fmt: skip
        check_output_path(out)
        if out.is_file() and any(source.is_file() and out.samefile(source) for source in inputs):
            raise ConfigError(f"{out}: is also an input of the import; write to another file")
        refuse_other_kind(out, looks_ours=looks_ours, what=what, overwrite=overwrite)


def check_events_output(events: Path, *, overwrite: bool) -> None:
    """Before any work: the event list (``events.tsv``) can be written and does not replace a file that is not one
    thce wrote (unless ``overwrite``)."""
    from thce.data.strong import EVENTS_HEADER
    from thce.io import check_output_path, refuse_other_kind, starts_with

    check_output_path(events)
    header = ("\t".join(EVENTS_HEADER) + "\n").encode()
    refuse_other_kind(events, looks_ours=starts_with(header), what="a thce event list", overwrite=overwrite)


def run_import(args: argparse.Namespace) -> int:
    from thce.data import readers
    from thce.data.manifest import skipped_list_path, write_manifest, write_skipped
    from thce.data.strong import EVENTS_FILE, write_strong_labels

    import_format: ImportFormat = args.import_format
    label_map_file = getattr(args, "label_map", None)
    inputs = import_format.inputs(args) + ([label_map_file] if label_map_file else [])
    check_manifest_outputs(args.out, skipped_list_path(args.out), inputs=inputs, overwrite=args.overwrite)
    events_out = args.out.parent / EVENTS_FILE
    if import_format.writes_strong_labels:
        if any(source.is_file() and events_out.is_file() and events_out.samefile(source) for source in inputs):
            raise ConfigError(f"{events_out}: is also an input of the import; write the manifest to another folder")
        check_events_output(events_out, overwrite=args.overwrite)
    result = import_format.read(args, readers.load_label_map(label_map_file) if label_map_file else None)
    write_manifest(result.rows, args.out)
    if result.strong is not None:
        write_strong_labels(events_out, result.rows, result.strong)
    listed = write_skipped(result.left_out, skipped_list_path(args.out))
    counts = ", ".join(f"{label} {n}" for label, n in result.label_counts().items()) or "none"
    print(f"{args.out}: {_count(len(result.rows), 'clip')} ({counts})")
    extra = {k: v for k, v in result.counts.items() if k not in ("imported",) and v}
    if extra:
        print("counts: " + ", ".join(f"{k} {v}" for k, v in extra.items()))
    if result.left_out:
        print(f"{len(result.skipped)} skipped, {len(result.excluded)} excluded: listed in {listed}")
    return 0


def run_mix(args: argparse.Namespace) -> int:
    from thce.data.manifest import write_skipped
    from thce.data.mix import MixConfig, make_mixtures
    from thce.io import check_output_path

    check_output_path(args.out, directory=True)  # an unwritable --out: one line naming it, before the sources are read
    check_manifest_outputs(args.out / "manifest.csv", args.out / "skipped.csv", inputs=[], overwrite=args.overwrite)
    check_events_output(args.out / "events.tsv", overwrite=args.overwrite)

    fractions = None if args.no_split else _floats(args.split_fractions, "--split-fractions")
    if fractions is not None and len(fractions) != 3:
        raise ConfigError(f"--split-fractions {args.split_fractions!r}: expected three values (train, val, test)")
    config = MixConfig(
        num_mixtures=args.count, duration_s=args.duration_s, sample_rate_hz=args.sample_rate_hz,
        ebr_db=_floats(args.ebr_db, "--ebr-db"), event_probability=args.event_probability, max_peak=args.max_peak,
        split_fractions=fractions, seed=args.seed, events_per_mixture=args.events_per_mixture,  # type: ignore[arg-type]
    )  # fmt: skip
    with ProgressBars(enabled=not args.quiet) as bars:
        result = make_mixtures(
            args.events, args.backgrounds, args.out, config=config, classes=parse_classes(args.classes),
            progress=bars, strict=args.strict,
        )  # fmt: skip
    listed = write_skipped(result.skipped, args.out / "skipped.csv")
    labels = Counter(row.label or "background" for row in result.rows)
    labelled = ", ".join(f"{k} {v}" for k, v in sorted(labels.items()))
    print(f"{result.manifest}: {_count(len(result.rows), 'mixture')} ({labelled})")
    if result.skipped:
        print(f"{len(result.skipped)} sources or mixtures skipped: listed in {listed}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="import data sets into a manifest; make DCASE-style mixtures")
    sub = data.add_subparsers(dest="data_command", required=True)

    imp = sub.add_parser(
        "import", help="read a data set into a manifest CSV (path,label,split,group)",
        description="Read a data set into a manifest CSV. Clips left out are listed in OUT_STEM.skipped.csv.",
    )  # fmt: skip
    formats = imp.add_subparsers(dest="format", required=True, metavar="FORMAT")

    for import_format in IMPORT_FORMATS:
        p = formats.add_parser(import_format.name, help=import_format.help, description=import_format.description)
        import_format.add_arguments(p)
        p.add_argument("--out", type=Path, required=True, help="manifest CSV to write")
        p.add_argument("--strict", action="store_true", help="stop at the first bad input instead of skipping it")
        p.add_argument("--overwrite", action="store_true",
                       help="replace an --out (or its .skipped.csv) that is not a manifest thce wrote")
        p.set_defaults(func=run_import, import_format=import_format)

    mix = sub.add_parser(
        "mix", help="DCASE 2017 task 2-style mixtures of isolated events and backgrounds",
        description="Mix isolated events (EVENTS/<label>/*) into background recordings at random EBRs and onsets.",
    )  # fmt: skip
    mix.add_argument("--events", type=Path, required=True, help="isolated events, one folder per class")
    mix.add_argument("--backgrounds", type=Path, required=True, help="background recordings (>= --duration-s)")
    mix.add_argument("--out", type=Path, required=True,
                     help="output folder (audio/, manifest.csv, events.tsv, skipped.csv)")
    mix.add_argument("--count", type=int, default=100, help="number of mixtures (default 100)")
    mix.add_argument("--duration-s", type=float, default=10.0, help="mixture length (default 10)")
    mix.add_argument("--sample-rate-hz", type=int, default=16000, help="output rate (default 16000)")
    mix.add_argument("--ebr-db", default="-6,0,6", help="EBRs to draw from, dB (default -6,0,6)")
    mix.add_argument("--event-probability", type=float, default=0.5, help="P(mixture has an event) (default 0.5)")
    mix.add_argument("--max-peak", type=float, default=0.99, help="anti-clipping peak (default 0.99)")
    mix.add_argument("--split-fractions", default="0.7,0.2,0.1", help="source/mixture split (default 0.7,0.2,0.1)")
    mix.add_argument("--no-split", action="store_true", help="leave the split column empty")
    mix.add_argument("--classes", help="event classes to use, comma-separated (default: every folder)")
    mix.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    mix.add_argument("--events-per-mixture", type=int, default=1,
                     help="events in a mixture that has any, of one class, not overlapping (default 1, as DCASE 2017)")
    mix.add_argument("--strict", action="store_true", help="stop at the first unusable source file")
    mix.add_argument("--overwrite", action="store_true",
                     help="replace a manifest.csv, events.tsv or skipped.csv in --out that thce did not write")
    mix.set_defaults(func=run_mix)
