"""The formats of ``thce data import FORMAT``, one :class:`ImportFormat` entry each in :data:`IMPORT_FORMATS`.

An entry is all the command line knows of a format: its subcommand (help, description, options), the files it reads
besides audio, whether it writes an event list, and the call of its reader in :mod:`thce.data` (each returns an
:class:`~thce.data.readers.ImportResult`). ``thce data import`` (:mod:`thce.cli.data`) registers one subcommand per
entry, adds the options every import shares (``--out``, ``--strict``, ``--overwrite``) and runs them all alike.
Readers are imported when their format runs, so that ``thce --help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from thce.errors import ConfigError

if TYPE_CHECKING:
    from thce.data.readers import ImportResult

#: ``--label-map`` as loaded: thce label -> the data set's labels (MIDs, categories, classes) that map to it.
LabelMap = dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class ImportFormat:
    """One ``thce data import`` FORMAT.

    ``add_arguments`` adds the format's own options to its subcommand; ``inputs`` names the files it reads besides
    audio and a ``--label-map`` (none may be an output of the import); ``read`` calls its reader with the loaded
    ``--label-map`` (None without one). ``writes_strong_labels``: the result has event times, written to
    ``events.tsv`` beside the manifest.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    inputs: Callable[[argparse.Namespace], list[Path]]
    read: Callable[[argparse.Namespace, LabelMap | None], ImportResult]
    description: str | None = None
    writes_strong_labels: bool = False


def parse_classes(text: str | None) -> list[str] | None:
    """``--classes dog,baby`` -> ``["dog", "baby"]``; None when not given."""
    if text is None:
        return None
    classes = [c.strip() for c in text.split(",") if c.strip()]
    if not classes:
        raise ConfigError(f"--classes {text!r}: expected comma-separated labels such as dog,baby,gun")
    return classes


def _audioset_options(p: argparse.ArgumentParser, *, test_file: str) -> None:
    """The options of both AudioSet imports: where the clips are, the label map, the ontology, the split."""
    p.add_argument("--audio-dir", type=Path, required=True,
                   help="folder of downloaded clips (YTID.wav, YTID_START.wav, YTID_START_END.flac, ...)")
    p.add_argument("--label-map", type=Path,
                   help="JSON/TOML {label: [MIDs]} (default dog=/m/0bt9lr, baby=/t/dd00002, gun=/m/032s66)")
    p.add_argument("--ontology", type=Path, help="AudioSet ontology.json, to add descendants of mapped MIDs")
    p.add_argument("--split", default="", choices=["", "train", "val", "test"],
                   help=f"split for every row (e.g. test for {test_file}); default: by seed later")  # fmt: skip


def _ontology(args: argparse.Namespace) -> dict[str, tuple[str, ...]] | None:
    from thce.data.audioset import load_ontology

    return load_ontology(args.ontology) if args.ontology else None


def _audioset_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("segments", type=Path, nargs="+", help="segment CSV(s), e.g. balanced_train_segments.csv")
    _audioset_options(p, test_file="eval_segments.csv")


def _read_audioset(args: argparse.Namespace, label_map: LabelMap | None) -> ImportResult:
    from thce.data.audioset import read_audioset

    return read_audioset(
        args.segments, args.audio_dir, label_map=label_map, ontology=_ontology(args), split=args.split,
        strict=args.strict,
    )  # fmt: skip


def _audioset_strong_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tsv", type=Path, nargs="+", help="strong-label TSV(s), e.g. audioset_train_strong.tsv")
    _audioset_options(p, test_file="audioset_eval_strong.tsv")


def _read_audioset_strong(args: argparse.Namespace, label_map: LabelMap | None) -> ImportResult:
    from thce.data.audioset import read_audioset_strong

    return read_audioset_strong(
        args.tsv, args.audio_dir, label_map=label_map, ontology=_ontology(args), split=args.split, strict=args.strict
    )


def _dcase2017_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("roots", type=Path, nargs="+", metavar="ROOT",
                   help="data set folder(s), e.g. TUT-rare-sound-events-2017-development/data")
    p.add_argument("--devtest", default="test", choices=["val", "test"],
                   help="split of the devtest mixtures (default test; val when evaltest is the test set)")
    p.add_argument("--label-map", type=Path,
                   help='JSON/TOML {label: [DCASE classes]}, e.g. baby = ["babycry"] (default: DCASE\'s names; '
                   "events of unmapped classes are dropped)")  # fmt: skip


def _dcase2017_inputs(args: argparse.Namespace) -> list[Path]:
    from thce.data.dcase2017 import find_dcase2017_meta

    return list(find_dcase2017_meta(args.roots).values())


def _read_dcase2017(args: argparse.Namespace, label_map: LabelMap | None) -> ImportResult:
    from thce.data.dcase2017 import read_dcase2017_task2

    return read_dcase2017_task2(args.roots, devtest_split=args.devtest, label_map=label_map, strict=args.strict)


def _esc50_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", type=Path, help="the ESC-50 folder")
    p.add_argument("--label-map", type=Path,
                   help="JSON/TOML {label: [categories]} (default dog=dog, baby=crying_baby; others background)")


def _read_esc50(args: argparse.Namespace, label_map: LabelMap | None) -> ImportResult:
    from thce.data.readers import read_esc50

    return read_esc50(args.root, label_map=label_map, strict=args.strict)


def _folder_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", type=Path, help="folder with a subfolder per class and one named background")
    p.add_argument("--classes", help="allowed labels, comma-separated (others are skipped)")


def _read_folder(args: argparse.Namespace, label_map: LabelMap | None) -> ImportResult:
    from thce.data.readers import read_folder

    return read_folder(args.root, classes=parse_classes(args.classes), strict=args.strict)


def _manifest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", type=Path, help="manifest CSV (path,label[,split,group])")
    p.add_argument("--classes", help="allowed labels, comma-separated (others are skipped)")
    p.add_argument("--check-audio", action="store_true", help="also open every file's header")


def _read_manifest(args: argparse.Namespace, label_map: LabelMap | None) -> ImportResult:
    from thce.data.readers import read_checked_manifest

    return read_checked_manifest(
        args.manifest, classes=parse_classes(args.classes), check_audio=args.check_audio, strict=args.strict
    )


#: Every format, in the order ``thce data import --help`` lists them.
IMPORT_FORMATS: tuple[ImportFormat, ...] = (
    ImportFormat(
        "audioset", "AudioSet segment CSVs + a folder of downloaded clips",
        add_arguments=_audioset_arguments, inputs=lambda args: list(args.segments), read=_read_audioset,
    ),
    ImportFormat(
        "audioset-strong", "AudioSet strong-label TSV(s) + a folder of downloaded clips (writes events.tsv too)",
        description="AudioSet's strong labels (segment_id, start_time_seconds, end_time_seconds, label) as a "
        "manifest and its event list events.tsv beside it. Events of unmapped MIDs are dropped; a clip without "
        "mapped events is background; a clip with events of two classes is excluded.",
        add_arguments=_audioset_strong_arguments, inputs=lambda args: list(args.tsv), read=_read_audioset_strong,
        writes_strong_labels=True,
    ),
    ImportFormat(
        "dcase2017", "DCASE 2017 Task 2 (TUT Rare Sound Events 2017) mixtures (writes events.tsv too)",
        description="DCASE 2017 Task 2 mixtures as a manifest and its event list events.tsv beside it, from the "
        "event lists (event_list_<set>_<class>.csv) or mixture recipes (mixture_recipes_<set>_<class>.yaml, "
        "preferred: they name the background recording, the group) found under ROOT, with the mixtures' audio. "
        "devtrain -> train, devtest -> --devtest, evaltest -> test.",
        add_arguments=_dcase2017_arguments, inputs=_dcase2017_inputs, read=_read_dcase2017, writes_strong_labels=True,
    ),
    ImportFormat(
        "esc50", "ESC-50 (meta/esc50.csv, audio/)",
        add_arguments=_esc50_arguments, inputs=lambda args: [args.root / "meta" / "esc50.csv"], read=_read_esc50,
    ),
    ImportFormat(
        "folder", "one folder per class: ROOT/<label>/**/*.wav|flac|ogg|mp3",
        add_arguments=_folder_arguments, inputs=lambda args: [], read=_read_folder,
    ),
    ImportFormat(
        "manifest", "validate a hand-written manifest CSV",
        add_arguments=_manifest_arguments, inputs=lambda args: [args.manifest], read=_read_manifest,
    ),
)  # fmt: skip
