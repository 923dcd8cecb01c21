"""``thce experiment --jobs N`` against one process, on the same machine in the same run.

    python benchmarks/method_jobs.py [--config configs/synth-dcase2017-crnn.toml] [--set KEY=VALUE ...]
        [--jobs 2] [--work DIR] [--out JSON]

Runs the config twice as a user would start it, each into a folder of its own under ``--work`` (so each makes its
own clips and feature cache): ``one`` in one process with ``train.num_threads`` as the config says (unset: PyTorch's
threads over all cores), then ``jobs`` with ``--jobs N`` (threads: the cores shared out). The JSON holds each run's
wall seconds and stage seconds, the ratio one / jobs (> 1: the jobs run is faster), each method's class-average
validation event F (frame-level runs) or validation EER, for the record (thread counts differ, so results may differ
in the last digits), the machine and the date. ``--set`` values go to both runs (e.g. a shorter schedule).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def timed_run(config: Path, out: Path, overrides: list[str], jobs: int) -> dict[str, Any]:
    """One ``thce experiment`` into ``out`` (which must not hold a run): wall seconds, stage seconds, figures."""
    command = [sys.executable, "-m", "thce", "-q", "experiment", str(config), "--out", str(out), "--jobs", str(jobs)]
    for override in overrides:
        command += ["--set", override]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    results = json.loads((out / "results.json").read_text())
    figures = {}
    for method, entry in results["methods"].items():
        val_f = entry.get("val_event_f")
        figures[method] = (
            {"val_event_f_class_average": round(sum(val_f.values()) / len(val_f), 4)}
            if val_f
            else {"val_eer_overall": round(entry["val_eer"]["overall"], 4)}
        )
    return {"command": " ".join(command[1:]), "wall_s": round(wall, 1), "timing_s": results["timing_s"],
            "processes": results.get("processes", 1), "figures": figures}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from thce.machine import describe_machine

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "synth-dcase2017-crnn.toml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, required=True, help="a new folder for the two runs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.work.exists():
        parser.error(f"--work {args.work}: exists; give a new folder")
    one = timed_run(args.config, args.work / "one", args.overrides, 1)
    jobs = timed_run(args.config, args.work / "jobs", args.overrides, args.jobs)
    report = {
        "benchmark": "method_jobs",
        "command": "python benchmarks/method_jobs.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "one_process": one,
        "jobs": jobs,
        "speedup_wall": round(one["wall_s"] / jobs["wall_s"], 3),
        "date": datetime.date.today().isoformat(),
        "machine": describe_machine(),
    }
    text = json.dumps(report, indent=1)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
