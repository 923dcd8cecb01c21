"""Commit a config's multi-seed result as ``benchmarks/results/sweeps/NAME.{json,md}`` (docs/results.md's "Configs over
seeds" table reads them: ``python benchmarks/sweep_tables.py --readme docs/results.md``).

From a finished ``thce experiment CONFIG --seeds N --out RUNS`` folder:

    python benchmarks/seeds_table.py CONFIG --name NAME --runs RUNS

or joined from runs that trained different methods of CONFIG on the same clips (``thce.join``: e.g. the baseline's
runs of an earlier version of CONFIG, which an Algorithm 1 setting does not enter, and the P1/P2 runs of a sweep),
each ``--join`` a comma-separated method list and a folder of ``seed_<s>/`` runs:

    python benchmarks/seeds_table.py CONFIG --name NAME --out JOINED --seeds 0 1 2 \\
        --join baseline,logreg_stats=DIR_A --join proposed1,proposed2=DIR_B [--set train.num_threads=1]

The JSON holds this command (and ``--note``: where the runs came from), the code it ran at, the seeds
summary (EER mean/std, bootstrap intervals against the baseline, whether Algorithm 1's embedding learned) and
each seed's overall test/validation EER, kept epochs and the commit of each run; the .md is the summary's report.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from thce.config import load_config
from thce.io import read_json, write_json
from thce.join import join_runs

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "benchmarks" / "results" / "sweeps"
#: Of the --seeds summary, into the JSON.
SUMMARY_KEYS = ("seeds", "eer", "bootstrap", "bootstrap_seeds", "embedding_learning", "events")


def _git_head() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def _without_note(argv: list[str]) -> list[str]:
    """The arguments less ``--note TEXT`` (the JSON holds the note on its own)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--note":
            skip = True
        elif not arg.startswith("--note="):
            kept.append(arg)
    return kept


def _short(commit: str | None) -> str:
    return commit[:7] if commit else "not recorded"


def _per_seed(runs: Path, seeds: list[int]) -> dict[str, Any]:
    """Each seed's overall (test, validation) EER per method, kept epochs, and the commit(s) its runs ran at."""
    out = {}
    for seed in seeds:
        results = read_json(runs / f"seed_{seed}" / "results.json", what="run results")
        methods = results["methods"]
        entry: dict[str, Any] = {m: [e["eer"]["overall"], e["val_eer"]["overall"]] for m, e in methods.items()}
        provenance = results.get("provenance", {})
        joined = provenance.get("joined_from")
        entry["_code"] = (
            {", ".join(p["methods"]): _short(p["git_commit"]) for p in joined}
            if joined else _short(provenance.get("git_commit"))
        )  # fmt: skip
        entry["_selected_epochs"] = results.get("selected_epochs", {})
        out[str(seed)] = entry
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="the config (TOML) the runs are of")
    parser.add_argument("--name", required=True, help="file name under benchmarks/results/sweeps/ (no suffix)")
    parser.add_argument("--runs", type=Path, help="a finished `thce experiment --seeds` folder")
    parser.add_argument("--join", action="append", default=[], metavar="METHODS=DIR", help="methods from DIR/seed_<s>/")
    parser.add_argument("--out", type=Path, help="with --join: where the joined runs and their summary go")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override in CONFIG")
    parser.add_argument("--note", default="", help="what the command line cannot say (where the runs came from)")
    parser.add_argument("--dest", type=Path, default=SWEEPS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if bool(args.runs) == bool(args.join) or (args.join and not args.out):
        parser.error("give --runs, or --join (twice or more) with --out")
    config = load_config(args.config, args.set)
    if args.join:
        parts = []
        for text in args.join:
            methods, _, folder = text.partition("=")
            if not folder:
                parser.error(f"--join {text!r}: expected METHODS=DIR")
            parts.append((tuple(m.strip() for m in methods.split(",") if m.strip()), Path(folder)))
        join_runs(config, parts, args.seeds, args.out)
        runs = args.out
    else:
        runs = args.runs
    summary = read_json(runs / "results.json", what="seeds summary")
    if summary.get("seeds", {}).get("seeds") != args.seeds:
        summarised = summary.get("seeds", {}).get("seeds")
        parser.error(f"{runs / 'results.json'}: summarises seeds {summarised}, not {args.seeds}")
    given = argv if argv is not None else sys.argv[1:]
    doc = {
        "command": " ".join(["python benchmarks/seeds_table.py", *map(shlex.quote, _without_note(given))]),
        "code": _git_head(),
        **({"note": args.note} if args.note else {}),
        "classes": summary["classes"],
        "data": summary["data"],
        "encoder": summary["encoder"],
        "seeds": {k: v for k, v in summary["seeds"].items() if k in SUMMARY_KEYS},
        "per_seed_overall_eer_test_val": _per_seed(runs, args.seeds),
    }
    args.dest.mkdir(parents=True, exist_ok=True)
    write_json(args.dest / f"{args.name}.json", doc)
    lines = (runs / "report.md").read_text(encoding="utf-8").splitlines()
    seeds = ", ".join(str(s) for s in args.seeds)
    lines[0] = f"# thce report: {args.config.stem}, seeds {seeds} (see the .json beside this file for the command)"
    (args.dest / f"{args.name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(json.dumps({m: round(100 * e["overall"]["mean"], 1) for m, e in summary["seeds"]["eer"].items()}))
    return doc


if __name__ == "__main__":
    main()
