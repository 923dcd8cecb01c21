"""``thce data import FORMAT ...`` (dataset readers -> manifest CSV) and ``thce data mix`` (DCASE 2017-style mixtures).

Each import writes the manifest (``--out``) and, beside it, ``<out stem>.skipped.csv`` listing every clip left out and
why; ``--strict`` stops at the first bad input instead.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from thce.cli.progress import ProgressBars
from thce.errors import ConfigError

#: Formats with strong labels: their import also writes ``events.tsv`` beside the manifest.
STRONG_FORMATS = ("audioset-strong", "dcase2017")


def _classes(text: str | None) -> list[str] | None:
    if text is None:
        return None
    classes = [c.strip() for c in text.split(",") if c.strip()]
    if not classes:
        raise ConfigError(f"--classes {text!r}: expected comma-separated labels such as dog,baby,gun")
    return classes


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


def skipped_path(out: Path) -> Path:
    """Where an import lists what it left out: ``manifest.csv`` -> ``manifest.skipped.csv``."""
    return out.with_name(f"{out.stem}.skipped.csv")


def check_manifest_outputs(manifest: Path, skipped: Path, *, inputs: list[Path], overwrite: bool) -> None:
    """Before any work: the manifest and skipped list can be written, neither is one of ``inputs`` (a manifest
    checked into itself), and neither replaces a file that is not a thce manifest / skipped list (unless
    ``overwrite``). Raises :class:`ConfigError` or :class:`~thce.errors.OutputError` naming the file."""
    from thce.data.manifest import COLUMNS, SKIPPED_COLUMNS
    from thce.io import check_output_path, refuse_other_kind, starts_with

    for out, columns, what in ((manifest, COLUMNS, "a thce manifest"),
                               (skipped, SKIPPED_COLUMNS, "a thce list of skipped clips")):  # fmt: skip
        looks_ours = starts_with(",".join(columns).encode())
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


def _import_inputs(args: argparse.Namespace) -> list[Path]:
    """The files an import reads besides audio (none may be its output)."""
    if args.format == "audioset":
        inputs = list(args.segments)
    elif args.format == "audioset-strong":
        inputs = list(args.tsv)
    elif args.format == "dcase2017":
        from thce.data.dcase2017 import find_dcase2017_meta

        inputs = list(find_dcase2017_meta(args.roots).values())
    elif args.format == "esc50":
        inputs = [args.root / "meta" / "esc50.csv"]
    elif args.format == "manifest":
        inputs = [args.manifest]
    else:
        inputs = []
    return inputs + ([args.label_map] if getattr(args, "label_map", None) else [])


def run_import(args: argparse.Namespace) -> int:
    from thce.data import audioset, readers
    from thce.data.manifest import write_manifest, write_skipped

    from thce.data.strong import EVENTS_FILE, write_strong_labels

    inputs = _import_inputs(args)
    check_manifest_outputs(args.out, skipped_path(args.out), inputs=inputs, overwrite=args.overwrite)
    events_out = args.out.parent / EVENTS_FILE
    if args.format in STRONG_FORMATS:
        if any(source.is_file() and events_out.is_file() and events_out.samefile(source) for source in inputs):
            raise ConfigError(f"{events_out}: is also an input of the import; write the manifest to another folder")
        check_events_output(events_out, overwrite=args.overwrite)
    label_map = readers.load_label_map(args.label_map) if getattr(args, "label_map", None) else None
    if args.format == "audioset-strong":
        ontology = audioset.load_ontology(args.ontology) if args.ontology else None
        result = audioset.read_audioset_strong(
            args.tsv, args.audio_dir, label_map=label_map, ontology=ontology, split=args.split, strict=args.strict
        )
    elif args.format == "dcase2017":
        from thce.data.dcase2017 import read_dcase2017_task2

        result = read_dcase2017_task2(
            args.roots, devtest_split=args.devtest, label_map=label_map, strict=args.strict
        )
    elif args.format == "audioset":
        ontology = audioset.load_ontology(args.ontology) if args.ontology else None
        result = audioset.read_audioset(
            args.segments, args.audio_dir, label_map=label_map, ontology=ontology, split=args.split,
            strict=args.strict,
        )  # fmt: skip
    elif args.format == "esc50":
        result = readers.read_esc50(args.root, label_map=label_map, strict=args.strict)
    elif args.format == "folder":
        result = readers.read_folder(args.root, classes=_classes(args.classes), strict=args.strict)
    else:
        result = readers.read_checked_manifest(
            args.manifest, classes=_classes(args.classes), check_audio=args.check_audio, strict=args.strict
        )
    write_manifest(result.rows, args.out)
    if result.strong is not None:
        write_strong_labels(events_out, result.rows, result.strong)
    listed = write_skipped(result.left_out, skipped_path(args.out))
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
            args.events, args.backgrounds, args.out, config=config, classes=_classes(args.classes),
            progress=bars, strict=args.strict,
        )  # fmt: skip
    listed = write_skipped(result.skipped, args.out / "skipped.csv")
    labels = Counter(row.label or "background" for row in result.rows)
    labelled = ", ".join(f"{k} {v}" for k, v in sorted(labels.items()))
    print(f"{result.manifest}: {_count(len(result.rows), 'mixture')} ({labelled})")
    if result.skipped:
        print(f"{len(result.skipped)} sources or mixtures skipped: listed in {listed}")
    return 0


def audioset_options(p: argparse.ArgumentParser, *, test_file: str) -> None:
    """The options of both AudioSet imports: where the clips are, the label map, the ontology, the split."""
    p.add_argument("--audio-dir", type=Path, required=True,
                   help="folder of downloaded clips (YTID.wav, YTID_START.wav, YTID_START_END.flac, ...)")
    p.add_argument("--label-map", type=Path,
                   help="JSON/TOML {label: [MIDs]} (default dog=/m/0bt9lr, baby=/t/dd00002, gun=/m/032s66)")
    p.add_argument("--ontology", type=Path, help="AudioSet ontology.json, to add descendants of mapped MIDs")
    p.add_argument("--split", default="", choices=["", "train", "val", "test"],
                   help=f"split for every row (e.g. test for {test_file}); default: by seed later")


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="import data sets into a manifest; make DCASE-style mixtures")
    sub = data.add_subparsers(dest="data_command", required=True)

    imp = sub.add_parser(
        "import", help="read a data set into a manifest CSV (path,label,split,group)",
        description="Read a data set into a manifest CSV. Clips left out are listed in OUT_STEM.skipped.csv.",
    )  # fmt: skip
    formats = imp.add_subparsers(dest="format", required=True, metavar="FORMAT")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", type=Path, required=True, help="manifest CSV to write")
        p.add_argument("--strict", action="store_true", help="stop at the first bad input instead of skipping it")
        p.add_argument("--overwrite", action="store_true",
                       help="replace an --out (or its .skipped.csv) that is not a manifest thce wrote")
        p.set_defaults(func=run_import)

    audioset = formats.add_parser("audioset", help="AudioSet segment CSVs + a folder of downloaded clips")
    audioset.add_argument("segments", type=Path, nargs="+", help="segment CSV(s), e.g. balanced_train_segments.csv")
    audioset_options(audioset, test_file="eval_segments.csv")
    common(audioset)

    strong = formats.add_parser(
        "audioset-strong", help="AudioSet strong-label TSV(s) + a folder of downloaded clips (writes events.tsv too)",
        description="AudioSet's strong labels (segment_id, start_time_seconds, end_time_seconds, label) as a manifest "
        "and its event list events.tsv beside it. Events of unmapped MIDs are dropped; a clip without mapped events "
        "is background; a clip with events of two classes is excluded.",
    )  # fmt: skip
    strong.add_argument("tsv", type=Path, nargs="+", help="strong-label TSV(s), e.g. audioset_train_strong.tsv")
    audioset_options(strong, test_file="audioset_eval_strong.tsv")
    common(strong)

    dcase = formats.add_parser(
        "dcase2017", help="DCASE 2017 Task 2 (TUT Rare Sound Events 2017) mixtures (writes events.tsv too)",
        description="DCASE 2017 Task 2 mixtures as a manifest and its event list events.tsv beside it, from the "
        "event lists (event_list_<set>_<class>.csv) or mixture recipes (mixture_recipes_<set>_<class>.yaml, "
        "preferred: they name the background recording, the group) found under ROOT, with the mixtures' audio. "
        "devtrain -> train, devtest -> --devtest, evaltest -> test.",
    )  # fmt: skip
    dcase.add_argument("roots", type=Path, nargs="+", metavar="ROOT",
                       help="data set folder(s), e.g. TUT-rare-sound-events-2017-development/data")
    dcase.add_argument("--devtest", default="test", choices=["val", "test"],
                       help="split of the devtest mixtures (default test; val when evaltest is the test set)")
    dcase.add_argument("--label-map", type=Path,
                       help='JSON/TOML {label: [DCASE classes]}, e.g. baby = ["babycry"] (default: DCASE\'s names; '
                       "events of unmapped classes are dropped)")
    common(dcase)

    esc = formats.add_parser("esc50", help="ESC-50 (meta/esc50.csv, audio/)")
    esc.add_argument("root", type=Path, help="the ESC-50 folder")
    esc.add_argument("--label-map", type=Path,
                     help="JSON/TOML {label: [categories]} (default dog=dog, baby=crying_baby; others background)")
    common(esc)

    folder = formats.add_parser("folder", help="one folder per class: ROOT/<label>/**/*.wav|flac|ogg|mp3")
    folder.add_argument("root", type=Path, help="folder with a subfolder per class and one named background")
    folder.add_argument("--classes", help="allowed labels, comma-separated (others are skipped)")
    common(folder)

    manifest = formats.add_parser("manifest", help="validate a hand-written manifest CSV")
    manifest.add_argument("manifest", type=Path, help="manifest CSV (path,label[,split,group])")
    manifest.add_argument("--classes", help="allowed labels, comma-separated (others are skipped)")
    manifest.add_argument("--check-audio", action="store_true", help="also open every file's header")
    common(manifest)

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
