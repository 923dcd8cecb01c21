"""Run the CPU-sized versions of the paper's settings end to end and time them against the 30-minute goal.

    python benchmarks/paper_configs.py [--configs synth-6-1-2-16-cnn ...] [--runs runs/paper-configs]
                                       [--out benchmarks/results/paper_configs.json] [--keep-data]
                                       [--set KEY=VALUE ...] [--readme docs/results.md]

Each config (``configs/NAME.toml``, default: every ``synth-*.toml``) runs as a user would run it,
``thce -q experiment configs/NAME.toml --out RUNS/NAME``, in a subprocess, one after the other. Per config the JSON
holds the wall seconds, the exit status, the overall EER of every method (from the run's ``results.json``, with the
per-class EERs, the run's own stage timings and the epochs each stage ran), the goal (1800 s) and whether it was met,
and the load average before and after (the machine may be shared: a load above the core count inflates the time).
The JSON goes to stdout and to ``--out``; entries of configs not run this time are kept from the previous file, so
one config can be re-measured alone. With ``--set`` the configs run with those overrides and their entries are named
``NAME@KEY=VALUE`` (e.g. ``--set 'model.lstm_init="pytorch"'`` for the LSTM with PyTorch's initialisation). The
epoch each early-stopped stage kept is under ``selected_epochs``. The run's audio and feature cache are deleted afterwards unless
``--keep-data`` (about 0.5 GB per config).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from thce.machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "src" / "thce" / "configs"
GOAL_S = 1800.0


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def epochs_per_stage(metrics_csv: Path) -> dict[str, int]:
    """Epochs each ``method/stage`` ran, from the run's ``metrics.csv``."""
    if not metrics_csv.is_file():
        return {}
    with metrics_csv.open(newline="") as handle:
        return dict(Counter(f"{row['method']}/{row['stage']}" for row in csv.DictReader(handle)))


def shown(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def entry_name(name: str, overrides: list[str]) -> str:
    """Key of a config's entry: its name, plus the overrides (``NAME@key=value,...``) when there are any."""
    return name if not overrides else f"{name}@{','.join(overrides)}"


def run_config(name: str, runs: Path, keep_data: bool, overrides: list[str] = ()) -> dict[str, Any]:
    """Run ``configs/NAME.toml`` (with ``--set`` ``overrides``) with the CLI in a subprocess; return its timing and
    EERs."""
    out = runs / entry_name(name, list(overrides)).replace("@", "_").replace("=", "-").replace(",", "_").replace('"', "")
    shutil.rmtree(out, ignore_errors=True)
    sets = [arg for override in overrides for arg in ("--set", override)]
    command = [sys.executable, "-m", "thce", "-q", "experiment", str(CONFIGS / f"{name}.toml"), "--out", str(out), *sets]
    load_before = load_average()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    entry: dict[str, Any] = {
        "command": " ".join([f"thce -q experiment configs/{name}.toml --out {shown(out)}",
                             *(f"--set '{override}'" for override in overrides)]),
        "wall_s": round(wall, 1),
        "returncode": done.returncode,
        "goal_s": GOAL_S,
        "passed": done.returncode == 0 and wall < GOAL_S,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    results_path = out / "results.json"
    if done.returncode == 0 and results_path.is_file():
        results = json.loads(results_path.read_text())
        entry["overall_eer"] = {m: round(v["eer"]["overall"], 4) for m, v in results["methods"].items()}
        entry["eer"] = {m: {k: round(x, 4) for k, x in v["eer"].items()} for m, v in results["methods"].items()}
        entry["counts"] = results["data"]["counts"]
        entry["stage_s"] = results.get("timing_s", {})
        entry["epochs"] = epochs_per_stage(out / "metrics.csv")
        entry["selected_epochs"] = results.get("selected_epochs", {})
    else:
        entry["output_tail"] = done.stdout[-3000:]
    if not keep_data:
        for folder in ("data", "cache"):
            shutil.rmtree(out / folder, ignore_errors=True)
    return entry


README_START, README_END = "<!-- paper-configs:start -->", "<!-- paper-configs:end -->"


def readme_table(result: dict[str, Any], source: Path, page: Path = Path("docs/results.md")) -> str:
    """Markdown for ``page`` (the file it is written into, quoted in the command that rewrites it): per entry the date it was measured, the wall time with the load average after it (the machine may
    have been shared), the overall EER of every method and the epoch Proposed2's tuning kept."""
    entries = result["configs"]
    methods = sorted({m for entry in entries.values() for m in entry.get("overall_eer", {})},
                     key=lambda m: (m not in ("baseline", "proposed1", "proposed2"), m))
    short = {"baseline": "B", "proposed1": "P1", "proposed2": "P2"}
    lines = [
        f"Written by `python benchmarks/paper_configs.py ... --readme {shown(page)}` from `{shown(source)}` "
        "(2-core CPU; overall EER in %, unweighted mean over the classes).",
        "",
        "| config | measured | wall s (load) | " + " | ".join(short.get(m, m) for m in methods)
        + " | P2 kept tuning epoch |",
        "| :-- | :-- | --: | " + " | ".join("--:" for _ in methods) + " | --: |",
    ]
    for name, entry in entries.items():
        eers = entry.get("overall_eer", {})
        cells = [f"{100 * eers[m]:.1f}" if m in eers else "" for m in methods]
        kept = entry.get("selected_epochs", {}).get("proposed2/end-to-end", "")
        kept = f"{kept}" + (" (= P1)" if kept == 0 else "") if kept != "" else "n/a"
        load = entry.get("load_average_after", [None])[0]
        wall = f"{entry['wall_s']:.0f}" + (f" ({load:.1f})" if load is not None else "")
        measured = str(entry.get("date", ""))[:10]
        lines.append(f"| `{name}` | {measured} | {wall} | " + " | ".join(cells) + f" | {kept} |")
    return "\n".join(lines) + "\n"


def write_readme_table(readme: Path, result: dict[str, Any], source: Path) -> None:
    """Replace the table between the paper-configs markers of ``readme`` (atomically)."""
    from thce.io import rewrite_section

    rewrite_section(readme, readme_table(result, source, readme.resolve()), start=README_START, end=README_END)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = sorted(p.stem for p in CONFIGS.glob("synth-*.toml"))
    parser.add_argument("--configs", nargs="*", default=default,
                        help=f"config names (default: {' '.join(default)}); none: only rewrite --readme from --out")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "paper-configs", help="parent of the run directories")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "paper_configs.json")
    parser.add_argument("--keep-data", action="store_true", help="keep each run's audio and feature cache")
    parser.add_argument("--readme", type=Path, default=None,
                        help="also write the table of all entries between the paper-configs markers of this file "
                             "(docs/results.md)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every config run (entries are then named NAME@KEY=VALUE)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.configs if not (CONFIGS / f"{n}.toml").is_file()]
    if unknown:
        parser.error(f"no config {', '.join(unknown)} in {CONFIGS}")
    previous = json.loads(args.out.read_text()).get("configs", {}) if args.out.is_file() else {}
    configs = dict(previous)

    def summary() -> dict[str, Any]:
        return {
            "benchmark": "paper_configs",
            "question": "do the CPU-sized versions of the paper's settings finish in under 30 minutes on this machine?",
            "goal": f"each config: exit status 0 and wall_s < {GOAL_S:g}",
            "passed": all(entry["passed"] for entry in configs.values()),
            "machine": describe_machine(),
            "configs": dict(sorted(configs.items())),
        }

    result = json.loads(args.out.read_text()) if args.out.is_file() and not args.configs else None
    for name in args.configs:
        key = entry_name(name, args.overrides)
        print(f"{key}: running (load average {load_average()})", file=sys.stderr, flush=True)
        configs[key] = run_config(name, args.runs.resolve(), args.keep_data, args.overrides)
        print(f"{key}: {configs[key]['wall_s']} s, rc {configs[key]['returncode']}", file=sys.stderr, flush=True)
        result = summary()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")  # after every config: a kill loses at most one
    if result is None:
        parser.error(f"nothing to run and no {args.out} to report")
    print(json.dumps(result, indent=2))
    if args.readme is not None:
        write_readme_table(args.readme, result, args.out)
    return result


if __name__ == "__main__":
    main()
