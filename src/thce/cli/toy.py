"""``thce toy``: the paper's toy example (Sec. 3.1, Fig. 1); writes toy.png, toy.json and metrics.csv."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from thce.cli.progress import ProgressBars
from thce.errors import ConfigError

# Flags that override ToyConfig fields (flag name -> field name) and fields of its EmbeddingConfig.
_OVERRIDES = {"seed": "seed", "samples": "train_samples", "noise": "noise", "learning_rate": "learning_rate"}
_EMBEDDING_OVERRIDES = {"iterations": "n_iter", "epochs": "epochs", "last_epochs": "last_epochs", "alpha": "alpha"}


def run(args: argparse.Namespace) -> int:
    from thce.io import check_output_path
    from thce.locks import folder_lock

    check_output_path(args.out, directory=True)  # an unwritable --out: one line naming it, before any work
    with folder_lock(args.out):  # one process writes the folder at a time
        _check_not_others(args.out, overwrite=args.overwrite)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """``thce toy`` after its checks, in the folder this process holds."""
    from thce.io import ensure_dir
    from thce.rundir import METRICS
    from thce.toy import ToyConfig, run_toy, write_toy
    from thce.training.metrics_log import MetricsLog

    def given(table: dict[str, str]) -> dict[str, object]:
        return {field: getattr(args, flag) for flag, field in table.items() if getattr(args, flag) is not None}

    try:
        config = ToyConfig.tiny() if args.tiny else ToyConfig()
        embedding = dataclasses.replace(config.embedding, **given(_EMBEDDING_OVERRIDES))
        config = dataclasses.replace(config, **given(_OVERRIDES), embedding=embedding)
        config.validate()
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if getattr(args, "verbose", 0) == 0:  # the toy takes seconds: no per-epoch heartbeat unless -v
        logging.getLogger("thce.training").setLevel(logging.WARNING)
    out: Path = ensure_dir(args.out)
    (out / METRICS).unlink(missing_ok=True)
    with ProgressBars(enabled=not args.quiet) as bars:
        result = run_toy(config, log=MetricsLog(out / METRICS), progress=bars)
    paths = write_toy(result, out)

    print("iteration  accuracy  balanced  Eq.3(train)  red purity  red cluster sizes")
    for snapshot in result.snapshots:
        m = snapshot.measures
        print(
            f"{m['iteration']:>9}  {m['nearest_centroid_accuracy']:8.3f}  {m['balanced_accuracy']:8.3f}  "
            f"{m['eq3_train']['eq3']:11.3f}  {m['red_mode_purity']:10.3f}  {m['cluster_sizes']['red']}"
        )
    verdict = result.acceptance()
    print(
        f"\nfinal: held-out nearest-centroid accuracy {result.final['nearest_centroid_accuracy']:.3f} "
        f"(>= {verdict['min_accuracy']}: {'yes' if verdict['separated'] else 'NO'}); red forms "
        f"{verdict['red_clusters']} clusters matching its modes: {'yes' if verdict['red_forms_4_clusters'] else 'NO'}"
    )
    print(f"acceptance: {'PASS' if verdict['passed'] else 'FAIL'} ({result.seconds:.1f} s, config: "
          f"{'tiny' if args.tiny else 'default'}, seed {config.seed})")  # fmt: skip
    print(f"wrote {paths['figure']}, {paths['json']}, {out / METRICS}")
    return 1 if args.check and not verdict["passed"] else 0


def _check_not_others(out: Path, *, overwrite: bool) -> None:
    """Before any work: refuse an ``out`` that holds a ``thce experiment`` run (the toy's metrics.csv would replace
    the run's) or a toy.json, toy.png or metrics.csv that the toy did not write (unless ``overwrite``)."""
    from thce.io import check_output_file, thce_png
    from thce.rundir import METRICS, run_markers

    if not out.is_dir():
        return
    found = run_markers(out, ignore=(METRICS,))
    if found:
        raise ConfigError(f"{out}: holds a thce run ({', '.join(found)}); the toy writes metrics.csv there: "
                          "choose another --out")  # fmt: skip
    for name, looks_ours, what in (
        ("toy.json", _toy_json, "the toy's toy.json"),
        ("toy.png", thce_png, "a picture thce drew"),
        (METRICS, _toy_metrics, "the toy's metrics.csv"),
    ):
        check_output_file(out / name, looks_ours=looks_ours, what=what, overwrite=overwrite)


def _toy_json(path: Path) -> bool:
    import json

    from thce.io import read_text

    record = json.loads(read_text(path, what="toy.json"))
    return isinstance(record, dict) and str(record.get("experiment", "")).startswith("toy example")


def _toy_metrics(path: Path) -> bool:
    """metrics.csv with MetricsLog's header whose rows are all the toy's (an experiment's has other methods)."""
    import csv

    from thce.io import read_text
    from thce.toy import METHOD
    from thce.training.metrics_log import MetricsLog

    rows = list(csv.reader(read_text(path, what="metrics.csv").splitlines()))
    return bool(rows) and tuple(rows[0]) == MetricsLog.COLUMNS and all(not r or r[0] == METHOD for r in rows[1:])


def register(subparsers: argparse._SubParsersAction) -> None:
    toy = subparsers.add_parser(
        "toy",
        help="the paper's toy example (Sec. 3.1, Fig. 1): 3-unit LSTM embedding on the sphere",
        description="Runs Algorithm 1's embedding stage on the toy data (1000 sequences of 20 steps, classes "
        "blue:green:red = 1:1:4, red with 4 modes) and writes toy.png (one sphere per iteration), toy.json "
        "(measures per iteration) and metrics.csv (per epoch) into --out.",
    )
    toy.add_argument("--out", type=Path, required=True, help="output folder")
    toy.add_argument("--overwrite", action="store_true",
                     help="replace a toy.json, toy.png or metrics.csv in --out that the toy did not write")
    toy.add_argument("--tiny", action="store_true", help="a few-second run (300 samples, 2 short iterations)")
    toy.add_argument("--check", action="store_true", help="exit with status 1 when the acceptance criteria fail")
    toy.add_argument("--seed", type=int, help="seed for data, initialisation and training (default 0)")
    toy.add_argument("--samples", type=int, help="training samples (default 1000)")
    toy.add_argument("--iterations", type=int, help="Algorithm 1 iterations N_iter (default 5)")
    toy.add_argument("--epochs", type=int, help="end-to-end epochs per iteration (default 30)")
    toy.add_argument("--last-epochs", type=int, help="epochs of the last iteration (default 150)")
    toy.add_argument("--alpha", type=float, help="alpha folded into the cluster layer (default 16)")
    toy.add_argument("--noise", type=float, help="white-noise standard deviation of the toy data (default 0.1)")
    toy.add_argument("--learning-rate", type=float, help="Adam learning rate (default 0.01)")
    toy.set_defaults(func=run)

