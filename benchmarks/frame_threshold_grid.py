"""Which threshold grid to choose frame-level post-processing from, decided on validation clips only.

    python benchmarks/frame_threshold_grid.py RUN_DIR [RUN_DIR ...] [--grid NAME=T1,T2,...] [--repeats 5] [--out JSON]

A larger grid always scores at least as well on the clips it is chosen on, so its validation F says nothing; here
each run's validation clips are split in two halves (stratified by the class of their event, background clips
apart; ``--repeats`` random splits, seeded), each class's post-processing
(:func:`thce.detection.frame_events.choose_post_processing`, today's median-filter, gap and shortest-event grids) is
chosen on one half with each threshold grid and scored on the other, and the held-out counts of both halves give a
class-average event F per grid (all validation clips, as the choice is made). ``default`` is today's
:data:`~thce.detection.frame_events.THRESHOLD_GRID`; ``--grid NAME=...`` adds a grid (default: ``to_0.99``, today's
grid without the thresholds above 0.99 it gained from this comparison). ``paired_vs_default``: each added grid minus
``default``, mean and 95 % bootstrap interval over the (run, method) rows. Each RUN_DIR is a finished frame-level run
or a folder of ``seed_N`` runs; every method with saved scores counts. Also given, for the record and not for the
decision: the test clips' class-average F (all clips, and each class on its own clips as DCASE 2017 Task 2 scores)
with the post-processing chosen on all validation clips.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))


def clip_classes(names: list[str], reference, classes: tuple[str, ...]) -> np.ndarray:
    """Per clip, the index of its (first) event's class, or ``len(classes)`` for a clip without events."""
    first: dict[str, str] = {}
    for e in reference.events:
        first.setdefault(e.file, e.label)
    return np.array([classes.index(first[Path(n).name]) if Path(n).name in first else len(classes) for n in names])


def held_out_counts(names, scores, reference, hop_s, classes, grid, halves) -> np.ndarray:
    """Per-clip event counts ``(n, L, 3)`` of every clip scored with the post-processing chosen on the other half."""
    from thce.detection.events import EventList
    from thce.detection.frame_events import choose_post_processing, clip_counts, detect_clips

    counts = np.zeros((len(names), len(classes), 3), dtype=np.int64)
    for half in (0, 1):
        fit, held = np.flatnonzero(halves != half), np.flatnonzero(halves == half)

        def subset(rows):
            files = {Path(names[i]).name for i in rows}
            return [names[i] for i in rows], EventList(tuple(sorted(files)),
                                                       tuple(e for e in reference.events if e.file in files))

        fit_names, fit_ref = subset(fit)
        held_names, held_ref = subset(held)
        post, _ = choose_post_processing(fit_names, scores[fit], fit_ref, hop_s, classes, thresholds=grid)
        detected = detect_clips(held_names, scores[held], hop_s, classes, post)
        counts[held] = clip_counts(held_names, detected, held_ref, classes)
    return counts


def split_halves(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0/1 per clip: each stratum's clips shuffled and dealt alternately."""
    halves = np.zeros(len(strata), dtype=np.int64)
    for value in np.unique(strata):
        rows = rng.permutation(np.flatnonzero(strata == value))
        halves[rows[1::2]] = 1
    return halves


def run_method_figures(run: Path, grids: dict[str, tuple[float, ...]], repeats: int, seed: int) -> dict:
    """Per method of one run: the held-out validation F per grid (mean over the repeats) and the test figures."""
    from frame_post_processing import load_scores

    from thce.detection.frame_events import (
        choose_post_processing, class_set_counts, clip_counts, count_figures, detect_clips,
    )

    classes, hop_s, clips, split_scores, references = load_scores(run)
    strata = clip_classes(clips["val"], references["val"], classes)
    out = {}
    for method, val in split_scores["val"].items():
        rng = np.random.default_rng(seed)
        splits = [split_halves(strata, rng) for _ in range(repeats)]
        row: dict = {"held_out_val_f": {}, "test_f": {}, "test_own_clips_f": {}, "thresholds": {}}
        for name, grid in grids.items():
            f = [count_figures(held_out_counts(clips["val"], val, references["val"], hop_s, classes, grid, halves),
                               classes)["class_average"]["f_score"] for halves in splits]  # fmt: skip
            row["held_out_val_f"][name] = float(np.mean(f))
            post, _ = choose_post_processing(clips["val"], val, references["val"], hop_s, classes, thresholds=grid)
            test = split_scores["test"][method]
            counts = clip_counts(clips["test"], detect_clips(clips["test"], test, hop_s, classes, post),
                                 references["test"], classes)  # fmt: skip
            row["test_f"][name] = count_figures(counts, classes)["class_average"]["f_score"]
            row["test_own_clips_f"][name] = count_figures(class_set_counts(counts), classes)["class_average"]["f_score"]
            row["thresholds"][name] = post.thresholds
        out[method] = row
    return out


def paired(rows: list[dict], key: str, a: str, b: str, seed: int) -> dict:
    """Mean of ``b - a`` over the (run, method) rows with a 95 % bootstrap interval over the rows."""
    diff = np.array([r[key][b] - r[key][a] for r in rows])
    rng = np.random.default_rng(seed)
    boot = rng.choice(diff, size=(10000, len(diff))).mean(axis=1)
    return {"mean": float(diff.mean()), "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
            "rows": len(diff)}  # fmt: skip


def main() -> None:
    from thce.detection.frame_events import THRESHOLD_GRID

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--grid", action="append", default=[], help="NAME=T1,T2,... (thresholds in (0, 1))")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    grids = {"default": tuple(THRESHOLD_GRID)}
    for spec in args.grid or [f"to_0.99={','.join(str(t) for t in THRESHOLD_GRID if t <= 0.99)}"]:
        name, _, values = spec.partition("=")
        grids[name] = tuple(sorted(float(v) for v in values.split(",")))
    runs = [seed_run for run in args.runs for seed_run in (sorted(run.glob("seed_*/")) or [run])]  # folders only
    figures = {str(run): run_method_figures(run.resolve(), grids, args.repeats, args.seed) for run in runs}
    rows = [row for per_method in figures.values() for row in per_method.values()]
    names = list(grids)
    report = {
        "command": "python benchmarks/frame_threshold_grid.py " + " ".join(sys.argv[1:]),
        "grids": grids, "repeats": args.repeats,
        "mean_over_runs": {name: {key: float(np.mean([r[key][name] for r in rows]))
                                  for key in ("held_out_val_f", "test_f", "test_own_clips_f")} for name in names},
        "paired_vs_default": {name: {key: paired(rows, key, "default", name, args.seed)
                                     for key in ("held_out_val_f", "test_f", "test_own_clips_f")}
                              for name in names[1:]},
        "runs": figures,
    }  # fmt: skip
    text = json.dumps(report, indent=2, default=float)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
