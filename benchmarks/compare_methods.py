"""Two methods of the same runs compared on validation and on test, seeds paired, clips paired.

    python benchmarks/compare_methods.py RUNS --method proposed2_aux --reference proposed2 [--seeds 0 1 2]
                                         [--out benchmarks/results/compare/NAME.json] [--note TEXT]

``RUNS/seed_<s>/`` are finished runs (``thce experiment --seeds`` or a joined folder) that trained both methods.
For each split the JSON holds the mean overall EER of each method over the seeds and the percentile bootstrap
interval of ``overall EER(method) - overall EER(reference)`` (:func:`thce.stats.bootstrap_eer_difference`: each
draw resamples every seed's clips, stratified by class, and averages the seeds' differences). Both methods scored
the same clips of the same run, so the pairing is exact. Decide on ``val``; ``test`` is what to report. The JSON goes
to stdout and, with ``--out``, to that file (with the command that made it).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from thce.repeats import load_test_scores
from thce.io import read_json, write_json
from thce.metrics import per_class_eer
from thce.stats import bootstrap_eer_difference


def compare(runs: Path, method: str, reference: str, seeds: list[int]) -> dict[str, Any]:
    """``{"val": {...}, "test": {...}}``: per split each method's mean overall EER (%) over ``seeds`` and the
    bootstrap interval of their difference (percentage points)."""
    run_dirs = [runs / f"seed_{seed}" for seed in seeds]
    classes = tuple(read_json(run_dirs[0] / "results.json", what="run results")["classes"])
    out: dict[str, Any] = {"runs": str(runs), "method": method, "reference": reference, "seeds": seeds}
    for split in ("val", "test"):
        sets = [load_test_scores(d, classes, split) for d in run_dirs]
        for name in (method, reference):
            if any(name not in s.scores for s in sets):
                raise SystemExit(f"{runs}: a run did not score {name} on {split}")

        def mean_eer(name: str) -> float:
            eers = [per_class_eer(scores=s.scores[name], class_index=s.class_index, classes=classes) for s in sets]
            return float(np.mean([eer["overall"] for eer in eers]))

        ci = bootstrap_eer_difference(sets, method=method, reference=reference, seed=seeds[0])
        out[split] = {
            "eer_percent": {name: round(100 * mean_eer(name), 2) for name in (method, reference)},
            "difference_pp": {k: round(100 * ci[k], 2) for k in ("difference", "low", "high")},
            "draws": ci["draws"],
            "confidence": ci["confidence"],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="folder of seed_<s>/ runs that trained both methods")
    parser.add_argument("--method", required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--note", default="", help="what the runs are, kept in the JSON")
    args = parser.parse_args(argv)
    result = compare(args.runs, args.method, args.reference, args.seeds)
    if args.note:
        result["note"] = args.note
    result["command"] = "python benchmarks/compare_methods.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
