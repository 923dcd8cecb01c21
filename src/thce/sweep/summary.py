"""A sweep's numbers from its finished runs (``sweep.json``): per variant and method the EERs over seeds, the
paired bootstrap intervals against the reference variant, the best variant on validation.

The table. Per variant and method: mean ± std over seeds of the overall EER on validation and on test, and paired
bootstrap intervals (:func:`thce.stats.bootstrap_eer_difference`) of the overall-EER difference to the reference
variant, on validation and on test: same method, same seeds, the same clips (the runs' ``clips.json`` must agree),
so each draw resamples the clips of each seed once and compares both variants on them. The best variant of each
method is the one with the lowest mean *validation* EER; test numbers are for reporting, never for choosing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thce.errors import DataError
from thce.repeats import load_test_scores
from thce.io import read_json
from thce.rundir import RESULTS, same_clips
from thce.stats import ScoredTestSet, bootstrap_eer_difference, mean_std_eer
from thce.training.diagnostics import embedding_learning_per_seed
from thce.variants import Variant


def _load_results(run_dir: Path) -> dict[str, Any]:
    results = read_json(run_dir / RESULTS, what="run results")
    for method, entry in results["methods"].items():
        if "val_eer" not in entry:
            raise DataError(f"{run_dir}/results.json: no val_eer for {method} (made by an older thce); rerun it")
    return results


def summarise(
    out_dir: str | Path,
    variants: Sequence[Variant],
    seeds: Sequence[int],
    *,
    reference: Variant,
    draws: int = 1000,
    confidence: float = 0.95,
    bootstrap_seed: int = 0,
    run_dirs: Mapping[str, Mapping[int, Path]] | None = None,
    methods: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Read the finished runs ``out_dir/<slug>/seed_<s>/`` and build the sweep table.

    ``run_dirs`` gives other folders for some variants (``{slug: {seed: run folder}}``, e.g. reference runs made
    before the sweep); ``"runs"`` then lists those folders. ``methods``: the methods to tabulate (the sweep's
    ``config.methods``: reference runs may hold more, trained with settings the sweep did not check, and then
    neither their rows nor their embedding records belong in the table); ``None``: every method all of a
    variant's runs have.

    Returns:
        ``{"selection", "seeds", "reference", "varied", "classes", "bootstrap", "variants": [{"name", "slug",
        "assignments", "runs", "methods": {method: {"val_eer": {class: {"mean", "std"}}, "test_eer": {...},
        "val_overall": [per seed], "test_overall": [per seed], "vs_reference": {"val": ci, "test": ci},
        "vs_reference_over_seeds": {"val": ci, "test": ci}}},
        "embedding_learning": [per seed]}], "best": {method: {"variant", "slug", "val_eer", "test_eer"}}}``, EERs
        as fractions; ``embedding_learning`` (:func:`thce.training.diagnostics.embedding_learning`) only for
        variants that ran Algorithm 1. ``ci`` is
        :func:`thce.stats.bootstrap_eer_difference`'s dict (variant minus reference, overall EER) for variants
        other than the reference, or ``{"unpaired": reason}`` when the runs did not score the same clips;
        ``vs_reference_over_seeds`` (with more than one seed) resamples the seeds as well as the clips.
    """
    out_dir = Path(out_dir)
    where = {v.slug: {s: out_dir / v.slug / f"seed_{s}" for s in seeds} for v in variants}
    for slug, dirs in (run_dirs or {}).items():
        where[slug] = {s: Path(dirs[s]) for s in seeds}
    runs = {v.slug: [_load_results(where[v.slug][s]) for s in seeds] for v in variants}
    classes = tuple(runs[reference.slug][0]["classes"])
    entries = []
    for variant in variants:
        variant_runs = runs[variant.slug]
        methods_present = [m for m in variant_runs[0]["methods"] if all(m in r["methods"] for r in variant_runs)]
        if methods is not None:
            methods_present = [m for m in methods_present if m in methods]
        table: dict[str, Any] = {}
        for method in methods_present:
            val = mean_std_eer([{method: r["methods"][method]["val_eer"]} for r in variant_runs])[method]
            test = mean_std_eer([{method: r["methods"][method]["eer"]} for r in variant_runs])[method]
            entry = {
                "val_eer": val,
                "test_eer": test,
                "val_overall": [r["methods"][method]["val_eer"]["overall"] for r in variant_runs],
                "test_overall": [r["methods"][method]["eer"]["overall"] for r in variant_runs],
            }
            if variant != reference and all(method in r["methods"] for r in runs[reference.slug]):
                pairs = [(where[variant.slug][s], where[reference.slug][s]) for s in seeds]
                intervals = {
                    split: _paired_bootstrap(
                        pairs, method, split, classes, draws=draws, confidence=confidence, seed=bootstrap_seed
                    )
                    for split in ("val", "test")
                }
                entry["vs_reference"] = {split: clips for split, (clips, _) in intervals.items()}
                if len(seeds) > 1:  # the seeds resampled too (training noise in the interval)
                    entry["vs_reference_over_seeds"] = {split: both for split, (_, both) in intervals.items()}
            table[method] = entry
        entry = {
            "name": variant.name,
            "slug": variant.slug,
            "assignments": dict(variant.assignments),
            "runs": [_shown_path(where[variant.slug][s], out_dir) for s in seeds],
            "methods": table,
        }
        learning = embedding_learning_per_seed(variant_runs) if methods is None or "proposed1" in methods else None
        if learning:
            entry["embedding_learning"] = learning  # per seed (thce.training.diagnostics.embedding_learning)
        entries.append(entry)
    return {
        "selection": "best variant per method = lowest mean overall EER on VALIDATION; test columns are for reporting",
        "seeds": list(seeds),
        "reference": reference.name,
        "varied": list(dict.fromkeys(k for v in variants for k, _ in v.assignments)),
        "classes": list(classes),
        "bootstrap": {"draws": draws, "confidence": confidence, "paired_by": "seed and clip", "seed": bootstrap_seed},
        "variants": entries,
        "best": best_on_validation(entries),
    }


def _shown_path(run_dir: Path, out_dir: Path) -> str:
    """A run folder as the table lists it: relative to the sweep folder when inside it."""
    try:
        return run_dir.relative_to(out_dir).as_posix()
    except ValueError:
        return str(run_dir)


def _paired_bootstrap(
    run_pairs: Sequence[tuple[Path, Path]],
    method: str,
    split: str,
    classes: tuple[str, ...],
    **kwargs: Any,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Bootstrap intervals of ``overall EER(variant) - overall EER(reference)`` for ``method`` on ``split``, pairing
    the two runs of each seed (``(variant run, reference run)`` folders) clip by clip: over the clips, and over the
    seeds and the clips (``None`` with one seed; the scores are read once for both); ``{"unpaired": reason}`` for
    both when they did not score the same clips."""
    sets = []
    for dirs in run_pairs:
        seed = dirs[0].name.removeprefix("seed_")
        reason = same_clips(dirs, split)
        if reason is not None:
            unpaired = {"unpaired": f"seed {seed}: {reason}"}
            return unpaired, unpaired
        mine, theirs = (load_test_scores(d, classes, split) for d in dirs)
        if not np.array_equal(mine.class_index, theirs.class_index):
            unpaired = {"unpaired": f"seed {seed}: the two runs' {split} clips differ in class"}
            return unpaired, unpaired
        pair = {"variant": mine.scores[method], "reference": theirs.scores[method]}
        sets.append(ScoredTestSet(mine.class_index, pair, classes))
    clips = bootstrap_eer_difference(sets, method="variant", reference="reference", **kwargs)
    over_seeds = (
        bootstrap_eer_difference(sets, method="variant", reference="reference", resample_seeds=True, **kwargs)
        if len(sets) > 1
        else None
    )
    return clips, over_seeds


def best_on_validation(entries: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method, the variant with the lowest mean overall validation EER (ties: the first listed); its test EER
    is carried along for reporting only.

    >>> entries = [{"name": "a", "slug": "a", "methods": {"m": {"val_eer": {"overall": {"mean": 0.2}},
    ...                                                        "test_eer": {"overall": {"mean": 0.1}}}}},
    ...            {"name": "b", "slug": "b", "methods": {"m": {"val_eer": {"overall": {"mean": 0.1}},
    ...                                                        "test_eer": {"overall": {"mean": 0.3}}}}}]
    >>> best_on_validation(entries)["m"]["variant"]
    'b'
    """
    best: dict[str, dict[str, Any]] = {}
    for entry in entries:
        for method, stats in entry["methods"].items():
            val = stats["val_eer"]["overall"]["mean"]
            if not math.isfinite(val):
                continue
            if method not in best or val < best[method]["val_eer"]:
                best[method] = {
                    "variant": entry["name"],
                    "slug": entry["slug"],
                    "val_eer": val,
                    "test_eer": stats["test_eer"]["overall"]["mean"],
                }
    return best
