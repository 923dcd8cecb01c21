"""Time `make demo` on a fresh clone (installation included), as a new user would run it.

    python benchmarks/fresh_demo.py [--repo .] [--out benchmarks/results/fresh_demo.json] [--keep DIR]

Clones the committed HEAD of the repository into a temporary folder, runs `make demo` there, and writes JSON with
the wall time, the exit status, the machine and the date. The run directory is copied to --keep if given, so that
`thce report KEEP --readme docs/results.md --timing OUT` can quote both.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fresh_demo.json"))
    parser.add_argument("--keep", type=Path, help="copy the demo's run directory here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="thce-fresh-") as tmp:
        clone = Path(tmp) / "thce"
        subprocess.run(["git", "clone", "--quiet", str(args.repo), str(clone)], check=True)
        start = time.perf_counter()
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
        done = subprocess.run(["make", "demo"], cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - start
        if args.keep is not None and (clone / "runs" / "demo").is_dir():
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(clone / "runs" / "demo", args.keep, ignore=shutil.ignore_patterns("data", "cache"))
    result = {
        "benchmark": "fresh_demo",
        "command": "git clone && make demo",
        "wall_s": round(wall, 1),
        "returncode": done.returncode,
        "goal": "wall_s < 600",
        "date": datetime.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": sys.version.split()[0]},
        "output_tail": done.stdout[-3000:],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "output_tail"}, indent=2))
    return result


if __name__ == "__main__":
    main()
