"""Repeats over seeds, summarised: what ``thce experiment --seeds`` and each variant of ``thce sweep`` end with.

:func:`summarise_seeds` reads the finished runs ``out_dir/seed_<s>/`` (their ``results.json``, ``scores.npz`` and, for
frame-level runs, ``event_counts.npz``) and writes the summary beside them (``results.json``, ``config.toml``,
``report.md``, ``det.png``): mean and std of each EER, bootstrap intervals of each method's difference to the
baseline over test clips and over seeds and test clips, and for frame-level runs the event figures over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thce.config import ExperimentConfig, save_config
from thce.detection.frame_events import class_set_counts, count_figures
from thce.encoders import encoder_table
from thce.figures import seeds_det_summary
from thce.io import read_json, write_json
from thce.report import write_report
from thce.rundir import CONFIG, EVENT_COUNTS, RESULTS, SCORES, VAL_SCORES
from thce.stats import ScoredTestSet, bootstrap_eer_difference, bootstrap_event_f_difference, mean_std_eer
from thce.training.diagnostics import embedding_learning_per_seed


def load_test_scores(run_dir: Path, classes: tuple[str, ...], split: str = "test") -> ScoredTestSet:
    """The scores a run saved for its test split (``scores.npz``), or with ``split="val"`` for its validation split
    (``val_scores.npz``)."""
    with np.load(run_dir / (VAL_SCORES if split == "val" else SCORES)) as archive:
        return ScoredTestSet(
            class_index=archive["class_index"],
            scores={k: archive[k] for k in archive.files if k != "class_index"},
            classes=classes,
        )


def summarise_seeds(config: ExperimentConfig, out_dir: Path, seed_list: Sequence[int]) -> dict[str, Any]:
    """The ``--seeds`` summary of the finished runs ``out_dir/seed_<s>/`` (their results.json and scores.npz),
    written to ``out_dir`` (results.json, config.toml, report.md, det.png): what :func:`run_seeds` ends with, and
    what ``thce sweep`` writes for each variant, so ``thce report`` reads either."""
    runs = [read_json(out_dir / f"seed_{seed}" / RESULTS, what="run results") for seed in seed_list]
    classes = tuple(runs[0]["classes"])
    spread = mean_std_eer([{m: entry["eer"] for m, entry in run["methods"].items()} for run in runs])
    test_sets = [load_test_scores(out_dir / f"seed_{seed}", classes) for seed in seed_list]
    methods = runs[0]["methods"]
    others = [method for method in methods if method != "baseline"] if "baseline" in methods else []
    frame_level = all("events" in entry for entry in methods.values())
    # EER intervals resample clips; a frame-level run's score rows are frames, which are neither independent nor few
    # (1000 draws over 10^5 frames took tens of minutes): its intervals are over clips, of event F (below)
    eer_others = [] if frame_level else others
    bootstrap = {method: bootstrap_eer_difference(test_sets, method=method, seed=config.seed) for method in eer_others}
    curves = seeds_det_summary(runs, test_sets)  # every seed's DET curves, and all seeds' test scores pooled
    over_seeds = {"seeds": list(seed_list), "eer": spread, "bootstrap": bootstrap, **curves}
    if len(test_sets) > 1 and eer_others:  # the seeds resampled too: how much other training runs would move it
        over_seeds["bootstrap_seeds"] = {
            method: bootstrap_eer_difference(test_sets, method=method, seed=config.seed, resample_seeds=True)
            for method in eer_others
        }
    if frame_level:  # the event figures over seeds, intervals over test clips and seeds
        over_seeds["events"] = _events_over_seeds(runs, out_dir, seed_list, others, config.seed)
    learning = embedding_learning_per_seed(runs)
    if learning:
        over_seeds["embedding_learning"] = learning  # per seed: did Algorithm 1's embedding stage separate classes?
    summary = {
        "classes": list(classes),
        "methods": {
            m: {"eer": {k: v["mean"] for k, v in spread[m].items()}, "det": curves["det_pooled"][m]} for m in spread
        },
        "data": runs[0]["data"],
        "encoder": encoder_table(config).encoder,
        "seeds": over_seeds,
        "provenance": runs[0]["provenance"],
    }
    save_config(config, out_dir / CONFIG)
    write_json(out_dir / RESULTS, summary)
    write_report(out_dir, summary)
    return summary


def _events_over_seeds(
    runs: Sequence[dict[str, Any]], out_dir: Path, seed_list: Sequence[int], others: Sequence[str], seed: int
) -> dict[str, Any]:
    """Frame-level runs over seeds: mean and std of each method's event-based F and ER (class average, overall,
    per class; ``*_sets``: each class on its own clips, as DCASE 2017 Task 2 scores it), and bootstrap intervals of
    each method's class-average F minus the baseline's over test clips and, with several seeds, over seeds and clips
    (``bootstrap_f[_sets][_seeds]``)."""
    classes = runs[0]["classes"]
    figures = []
    for run in runs:
        per_method = {}
        for method, entry in run["methods"].items():
            events = entry["events"]
            per_method[method] = {
                "f_class_average": events["class_average"]["f_score"],
                "er_class_average": events["class_average"]["error_rate"],
                "f_overall": events["overall"]["f_score"],
                "er_overall": events["overall"]["error_rate"],
                **{f"f_{label}": row["f_score"] for label, row in events["class_wise"].items()},
            }
        figures.append(per_method)
    counts = []
    for s in seed_list:
        with np.load(out_dir / f"seed_{s}" / EVENT_COUNTS) as archive:
            counts.append({method: archive[method] for method in archive.files})
    sets = [{method: class_set_counts(c) for method, c in run.items()} for run in counts]
    for per_method, run in zip(figures, sets):  # from the counts: runs written before events_class_sets have them
        for method, c in run.items():
            own = count_figures(c, classes)
            per_method.setdefault(method, {}).update({
                "f_class_average_sets": own["class_average"]["f_score"],
                "er_class_average_sets": own["class_average"]["error_rate"],
                "f_overall_sets": own["overall"]["f_score"], "er_overall_sets": own["overall"]["error_rate"],
                **{f"f_{label}_sets": row["f_score"] for label, row in own["class_wise"].items()}})  # fmt: skip
    summary: dict[str, Any] = {"figures": mean_std_eer(figures)}
    for suffix, per_seed in (("", counts), ("_sets", sets)):
        summary[f"bootstrap_f{suffix}"] = {m: bootstrap_event_f_difference(per_seed, method=m, seed=seed) for m in others}
        if len(counts) > 1:
            summary[f"bootstrap_f{suffix}_seeds"] = {
                m: bootstrap_event_f_difference(per_seed, method=m, seed=seed, resample_seeds=True) for m in others
            }
    return summary
