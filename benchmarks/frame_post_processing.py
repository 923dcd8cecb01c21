"""A finished frame-level run's event figures with the post-processing chosen again on its validation clips.

Reads RUN_DIR's saved frame scores (``val_scores.npz``, ``scores.npz``: one row per output frame, clips in
``clips.json``'s order) and the clips' strong labels (the run's manifest and ``events.tsv``), chooses each method's
per-class threshold and median filter on validation event F with the grids of :mod:`thce.detection.frame_events`
(as the run did, with the grids of today's code), and reports DCASE 2017 Task 2's event-based F and error rate on the
test clips: what a change of the grids would have given, without retraining, beside what the run chose (``as_run``)
and both averaged over the runs. A folder of ``seed_N/`` runs gives each seed on its own.

Usage: ``python benchmarks/frame_post_processing.py RUN_DIR [--out JSON]`` (prints JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def clip_key(path: str | Path) -> tuple[str, ...]:
    """A clip's split/class/file: the same for a run and its copies or links in other folders."""
    return Path(path).parts[-3:]


def load_scores(run: Path) -> tuple[tuple[str, ...], float, dict, dict, dict]:
    """A finished frame-level run's classes, frame hop (s), clip names per split (``clips.json``), saved frame scores
    ``{split: {method: (n, frames_out, L)}}`` and reference events ``{split: EventList}`` (``val``, ``test``)."""
    from thce.config import load_config
    from thce.data.strong import read_strong_labels
    from thce.detection.frame_events import reference_list
    from thce.run_data import run_manifest

    config = load_config(run / "config.toml")
    classes = tuple(config.data.classes)
    strong = read_strong_labels(run_manifest(config, run), events_path=config.data.events or None)
    clips = json.loads((run / "clips.json").read_text())
    hop_s = config.frame_model.stride * config.features.hop_ms / 1000.0
    # clips.json names the clips where the run was made, the manifest where it is now (a copied or linked run)
    labelled = {clip_key(clip): events for clip, events in strong.items()}
    split_scores, references = {}, {}
    for split, name in (("val", "val_scores.npz"), ("test", "scores.npz")):
        names = clips[split]
        missing = [n for n in names if clip_key(n) not in labelled]
        if missing:
            sys.exit(f"{run}: {len(missing)} {split} clips are not in the run's manifest, e.g. {missing[0]}")
        references[split] = reference_list(names, {n: labelled[clip_key(n)] for n in names})
        with np.load(run / name) as archive:
            split_scores[split] = {m: archive[m].reshape(len(names), -1, len(classes)) for m in archive.files
                                   if m != "class_index"}  # fmt: skip
    return classes, hop_s, clips, split_scores, references


def run_figures(run: Path) -> dict:
    from thce.detection.frame_events import choose_post_processing, detect_clips
    from thce.detection.metrics import evaluate_events

    classes, hop_s, clips, split_scores, references = load_scores(run)
    as_run = json.loads((run / "results.json").read_text())["methods"]
    out = {}
    for method, val in split_scores["val"].items():
        post, val_f = choose_post_processing(clips["val"], val, references["val"], hop_s, classes)
        test = split_scores["test"][method]
        events = evaluate_events(references["test"], detect_clips(clips["test"], test, hop_s, classes, post),
                                 classes=classes)  # fmt: skip
        out[method] = {"post_processing": post.to_dict(), "val_f": val_f, "class_average": events["class_average"],
                       "overall": {k: events["overall"][k] for k in ("f_score", "error_rate", "insertions",
                                                                     "deletions")},
                       "as_run": {"class_average": as_run[method]["events"]["class_average"],
                                  "post_processing": as_run[method]["post_processing"]}}  # fmt: skip
    return out


def mean_over_runs(runs: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Per method, the class-average event F and error rate over the runs, re-chosen and as each run chose."""
    methods = next(iter(runs.values())).keys()
    out = {}
    for method in methods:
        rows = [r[method] for r in runs.values()]
        out[method] = {
            "f_score": float(np.mean([r["class_average"]["f_score"] for r in rows])),
            "error_rate": float(np.mean([r["class_average"]["error_rate"] for r in rows])),
            "as_run_f_score": float(np.mean([r["as_run"]["class_average"]["f_score"] for r in rows])),
            "as_run_error_rate": float(np.mean([r["as_run"]["class_average"]["error_rate"] for r in rows])),
        }
    return out


def main() -> None:
    from thce.detection.frame_events import MEDIAN_FILTER_GRID_S, MIN_EVENT_GRID_S, MIN_GAP_GRID_S, THRESHOLD_GRID

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    runs = sorted(args.run.glob("seed_*/")) or [args.run]  # folders only
    figures = {run.name: run_figures(run) for run in runs}
    report = {"command": "python benchmarks/frame_post_processing.py " + " ".join(sys.argv[1:]),
              "grids": {"thresholds": THRESHOLD_GRID, "median_filter_s": MEDIAN_FILTER_GRID_S,
                        "min_gap_s": MIN_GAP_GRID_S, "min_event_s": MIN_EVENT_GRID_S},
              "mean_over_runs": mean_over_runs(figures), "runs": figures}  # fmt: skip
    text = json.dumps(report, indent=2, default=float)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
