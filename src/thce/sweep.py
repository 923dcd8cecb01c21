"""Ablation sweeps: variants of one config on identical features and splits, one table, chosen on validation.

A :class:`~thce.variants.Variant` is a set of config assignments (``{"embedding.alpha": 8}``), made by
:mod:`thce.variants` from ``thce sweep --vary``. :func:`run_sweep` runs every variant with seeds
``seed .. seed+N-1`` (:func:`thce.experiment.run_experiment`) in ``out_dir/<variant slug>/seed_<s>/`` and writes
``out_dir/sweep.json`` and ``out_dir/sweep.md``; with more than one seed, each variant's folder also gets the
summary a ``--seeds`` run writes (results.json, report.md, det.png), so ``thce report out_dir/<variant slug>``
works on it as on ``thce experiment --seeds``.

Identical data. For a given seed every variant gets the same clips and split: both derive from ``config.seed`` and
the data settings only (a variant that changes ``data.*`` or ``synth.*`` may change them; the runs' ``clips.json``
tell, and a comparison over different clips is marked unpaired). Synthetic clips are written once per (synth
settings, seed) into ``out_dir/data/<key>/``, which each run's ``data`` folder links to, and all variants share one
feature cache (``data.cache_dir``, ``out_dir/cache`` unless set). The cache is keyed by the feature settings and
the resolved clip paths with their sizes and mtimes, so sharing it is safe: a variant with other features or other
clips gets a cache of its own beside the others, and the same clips are computed once.

The table. Per variant and method: mean ± std over seeds of the overall EER on validation and on test, and paired
bootstrap intervals (:func:`thce.stats.bootstrap_eer_difference`) of the overall-EER difference to the reference
variant, on validation and on test: same method, same seeds, the same clips (the runs' ``clips.json`` must agree),
so each draw resamples the clips of each seed once and compares both variants on them. The best variant of each
method is the one with the lowest mean *validation* EER; test numbers are for reporting, never for choosing.

Resumable: a run with ``results.json`` is not redone (its ``config.toml`` must match); with ``resume`` an
interrupted one continues after its last completed epoch, without it starts over.

Runs you already have. ``reference_runs`` (``thce sweep --reference-runs DIR``) takes the reference variant's runs
from ``DIR/seed_<s>/`` (e.g. a ``thce experiment --seeds N`` folder) instead of running them; their configuration
must train the sweep's methods as the reference variant would (up to :data:`ENVIRONMENT_KEYS`; they may have run
more methods, and other settings of tables those methods do not read), and nothing is written into ``DIR``. Synthetic
clips made by another run live in another folder, so their paths differ: two runs pair when both configurations
have the same synthetic data (same ``synth`` and ``data`` settings and seed, which fix every clip) and the same
clip names relative to each run's clip folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thce.config import ExperimentConfig, config_from_dict, load_config, save_config, set_dotted_key
from thce.errors import ConfigError, DataError, OutputError
from thce.experiment import load_test_scores, run_experiment, summarise_seeds
from thce.io import atomic_write, read_json, write_json
from thce.methods import method_settings, method_short_name
from thce.stats import ScoredTestSet, bootstrap_eer_difference, mean_std_eer
from thce.training.diagnostics import embedding_learning_per_seed
from thce.progress import ProgressFn
from thce.report import embedding_learning_line
from thce.locks import folder_lock
from thce.rundir import (
    CONFIG,
    ENVIRONMENT_KEYS,
    FINISHED_FILES,
    RESULTS,
    experiment_settings,
    finished_run,
    same_clips,
)
from thce.variants import Variant, toml_value

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------- configs


def variant_config(config: ExperimentConfig, variant: Variant) -> ExperimentConfig:
    """``config`` with the variant's assignments applied and validated (errors name the variant and the key)."""
    table = config.to_dict()
    for key, value in variant.assignments:
        if key == "seed":
            raise ConfigError(f"variant {variant.name}: the seed is the repeat axis of a sweep, not a variant key")
        set_dotted_key(table, key.split("."), value, where=f"variant {variant.name}")
    return config_from_dict(table, source=f"variant {variant.name}")


def _synth_dir(config: ExperimentConfig, out_dir: Path) -> Path:
    """Where the sweep keeps the synthetic clips of this config's synth settings and seed."""
    synth = dataclasses.replace(config.synth, seed=config.seed)
    key = hashlib.sha256(json.dumps(synth.to_dict(), sort_keys=True).encode("utf-8")).hexdigest()[:12]
    return out_dir / "data" / f"seed_{config.seed}_{key}"


def _share_synthetic_clips(config: ExperimentConfig, run_dir: Path, out_dir: Path) -> None:
    """Make ``run_dir/data`` (where the run writes its synthetic clips) a link to the sweep's shared folder, so
    that the variants of a seed read the same files and hit the same feature cache."""
    link = run_dir / "data"
    if config.data.source != "synth" or link.exists() or link.is_symlink():
        return
    target = _synth_dir(config, out_dir)
    target.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        link.symlink_to(os.path.relpath(target, run_dir), target_is_directory=True)
    except OSError as error:  # e.g. no symlinks on this file system: each run makes its own clips
        logger.warning("sweep: cannot link %s to %s (%s); this run synthesises its own clips", link, target, error)


def _reference_run_dirs(reference_runs: Path, config: ExperimentConfig, seeds: Sequence[int]) -> dict[int, Path]:
    """``{seed: reference_runs/seed_<s>}``, each a finished run that trained ``config.methods`` as ``config`` with
    that seed would (:func:`thce.methods.method_settings`, up to :data:`ENVIRONMENT_KEYS`): it may have run more
    methods, and differ in tables none of ``config.methods`` reads (a baseline-only sweep can reuse runs of another
    ``embedding.last_epochs``), as methods train independently of each other; a ConfigError naming the folder
    otherwise."""
    dirs = {}
    for seed in seeds:
        run_dir = reference_runs / f"seed_{seed}"
        if not finished_run(run_dir, with_config=True):
            raise ConfigError(f"--reference-runs {reference_runs}: no finished run seed_{seed}/ (needs config.toml "
                              f"and {', '.join(FINISHED_FILES)})")  # fmt: skip
        theirs = load_config(run_dir / CONFIG)
        missing = [m for m in config.methods if m not in theirs.methods]
        if missing:
            raise ConfigError(f"{run_dir}: did not run {', '.join(missing)}")
        theirs_settings = experiment_settings(theirs)
        wanted_settings = experiment_settings(dataclasses.replace(config, seed=seed))
        for method in config.methods:
            if method_settings(theirs_settings, method) != method_settings(wanted_settings, method):
                free = ", ".join(ENVIRONMENT_KEYS)
                raise ConfigError(f"{run_dir}: its config.toml is not the reference variant's for {method} (only "
                                  f"{free} and tables {method} does not read may differ)")  # fmt: skip
        dirs[seed] = run_dir
    return dirs


# ----------------------------------------------------------------------------------------------- the sweep


def run_sweep(
    config: ExperimentConfig,
    variants: Sequence[Variant],
    seeds: int,
    out_dir: str | Path,
    *,
    reference: Mapping[str, Any] | Variant | None = None,
    reference_runs: str | Path | None = None,
    resume: bool = False,
    draws: int = 1000,
    confidence: float = 0.95,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run every variant with seeds ``config.seed .. config.seed+seeds-1`` and write ``sweep.json``/``sweep.md``.

    Args:
        config: the base config (``--set`` already applied); ``data.cache_dir`` defaults to ``out_dir/cache``.
        variants: what to run (e.g. :func:`product_variants`); all are validated before the first run.
        seeds: repeats per variant (each seed its own data, split and initialisation, shared by the variants).
        out_dir: the sweep directory.
        reference: the variant the bootstrap compares against: a :class:`Variant`, or assignments that pick
            exactly one variant (``{"embedding.alpha": 16}``); default the first variant.
        reference_runs: a folder whose ``seed_<s>/`` are finished runs of the reference variant: used instead of
            running it (read only; their config must be the reference's up to :data:`ENVIRONMENT_KEYS`).
        resume: continue interrupted runs (finished runs are never redone).
        draws, confidence: of the paired bootstrap.
        progress: passed to each run.

    Returns:
        The summary written to ``sweep.json`` (see :func:`summarise`).
    """
    if seeds < 1:
        raise ConfigError(f"--seeds: must be >= 1, got {seeds}")
    if not variants:
        raise ConfigError("sweep: no variants")
    out_dir = Path(out_dir)
    if not config.data.cache_dir:  # absolute: the runs' config.toml must read the same from any working directory
        cache_dir = os.path.abspath(out_dir / "cache")
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, cache_dir=cache_dir))
    by_slug: dict[str, Variant] = {}
    for variant in variants:
        if variant.slug in by_slug:
            first = by_slug[variant.slug].name
            raise ConfigError(f"variants {first} and {variant.name} would share the folder {variant.slug}")
        by_slug[variant.slug] = variant
    configs = [variant_config(config, variant) for variant in variants]  # every error before the first run
    ref = pick_reference(variants, reference)
    seed_list = [config.seed + k for k in range(seeds)]
    run_dirs: dict[str, dict[int, Path]] = {}
    if reference_runs is not None:
        run_dirs[ref.slug] = _reference_run_dirs(Path(reference_runs), configs[variants.index(ref)], seed_list)
    with folder_lock(out_dir):  # one process per sweep folder; each run locks its own folder too
        _check_config_destination(out_dir)
        save_config(config, out_dir / CONFIG)
        total = len(variants) * len(seed_list)
        for v, (variant, variant_cfg) in enumerate(zip(variants, configs)):
            if variant.slug in run_dirs:
                logger.info("sweep: %s from %s (not run)", variant.name, reference_runs)
                continue
            for s, seed in enumerate(seed_list):
                run_dir = out_dir / variant.slug / f"seed_{seed}"
                seed_config = dataclasses.replace(variant_cfg, seed=seed)
                step = f"sweep run {v * len(seed_list) + s + 1}/{total} ({variant.name}, seed {seed})"
                if finished_run(run_dir):
                    if load_config(run_dir / CONFIG).to_dict() != seed_config.to_dict():
                        raise ConfigError(f"{run_dir}: finished with another configuration than variant "
                                          f"{variant.name} of this sweep; use a new --out")  # fmt: skip
                    logger.info("%s: finished before, kept", step)
                    continue
                logger.info("%s: %s", step, "resuming" if resume and run_dir.exists() else "running")
                _share_synthetic_clips(seed_config, run_dir, out_dir)
                run_experiment(seed_config, run_dir, progress=progress, resume=resume)
            if len(seed_list) > 1:  # the variant's folder is then a `--seeds` run: `thce report` reads it
                summarise_seeds(variant_cfg, out_dir / variant.slug, seed_list)
        summary = summarise(
            out_dir, variants, seed_list, reference=ref, draws=draws, confidence=confidence,
            bootstrap_seed=config.seed, run_dirs=run_dirs, methods=config.methods,
        )  # fmt: skip
        write_json(out_dir / "sweep.json", summary)
        with atomic_write(out_dir / "sweep.md", "w", encoding="utf-8") as handle:
            handle.write(sweep_table_markdown(summary))
    return summary


def pick_reference(variants: Sequence[Variant], reference: Mapping[str, Any] | Variant | None) -> Variant:
    """The reference variant: ``None`` -> the first; a :class:`Variant` or assignments -> the one variant matching."""
    if reference is None:
        return variants[0]
    wanted = dict(reference.assignments) if isinstance(reference, Variant) else dict(reference)
    matches = [v for v in variants if v.matches(wanted)]
    described = ", ".join(f"{k}={toml_value(v)}" for k, v in wanted.items())
    if len(matches) != 1:
        how = "matches no variant" if not matches else f"matches {len(matches)} variants; give more keys"
        raise ConfigError(f"--reference {described}: {how} (variants: {'; '.join(v.name for v in variants)})")
    return matches[0]


def _load_results(run_dir: Path) -> dict[str, Any]:
    results = read_json(run_dir / RESULTS, what="run results")
    for method, entry in results["methods"].items():
        if "val_eer" not in entry:
            raise DataError(f"{run_dir}/results.json: no val_eer for {method} (made by an older thce); rerun it")
    return results


def _check_config_destination(out_dir: Path) -> None:
    """Refuse, before any work, to replace a ``config.toml`` in ``out_dir`` unless the folder holds a sweep
    (``sweep.json``, ``data/`` or ``<variant>/seed_<s>/``): the sweep writes its resolved base config there, and a
    user's own file (often the very config being swept, comments and all) would be lost."""
    path = out_dir / CONFIG
    if not path.is_file() or path.stat().st_size == 0:
        return
    if (out_dir / "sweep.json").is_file() or (out_dir / "data").is_dir() or any(out_dir.glob("*/seed_*/")):
        return
    raise OutputError(f"{path}: exists and is not a sweep's; not overwritten (the sweep writes its resolved config "
                      "there: choose another --out)")  # fmt: skip


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


def ci_cell(ci: Mapping[str, Any] | None) -> str:
    """A table cell for a bootstrap interval: ``-1.2 [-3.4, +0.5]`` (percentage points), ``unpaired`` or ``–``."""
    if ci is None:
        return "–"
    if "unpaired" in ci:
        return "unpaired"
    return f"{100 * ci['difference']:+.1f} [{100 * ci['low']:+.1f}, {100 * ci['high']:+.1f}]"


def sweep_table_markdown(summary: Mapping[str, Any]) -> str:
    """``sweep.md``: which variant is best per method (on validation), then one row per method and variant."""
    seeds = summary["seeds"]
    confidence = summary["bootstrap"]["confidence"]
    lines = [
        f"# Sweep over {', '.join(summary['varied']) or 'nothing'}: {len(summary['variants'])} variants x "
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))})",
        "",
        "**Best variant per method, chosen by mean overall EER on validation** (the test columns are for reporting;",
        "never choose a setting on them):",
        "",
    ]
    for method, best in summary["best"].items():
        lines.append(
            f"- {method_short_name(method)}: {best['variant']} (validation {100 * best['val_eer']:.1f} %, "
            f"test {100 * best['test_eer']:.1f} %)"
        )
    lines += [
        "",
        "Overall EER (%), mean ± std over seeds. Δ = variant − reference (percentage points) with its paired "
        f"bootstrap {100 * confidence:g} % interval ({summary['bootstrap']['draws']} draws over clips, stratified by "
        f"class, paired by seed and clip); 'seeds too': each draw also resamples the seeds, so the interval holds "
        f"how much other training runs would move Δ (coarse with few seeds). Reference: {summary['reference']}.",
        "",
        "| Method | Variant | Val EER | Test EER | Δ val [CI] | Δ val [CI, seeds too] | Δ test [CI] |",
        "| :-- | :-- | --: | --: | --: | --: | --: |",
    ]
    methods = list(dict.fromkeys(m for entry in summary["variants"] for m in entry["methods"]))
    for method in methods:
        best = summary["best"].get(method, {}).get("variant")
        for entry in summary["variants"]:
            stats = entry["methods"].get(method)
            if stats is None:
                continue
            marks = [("reference", entry["name"] == summary["reference"]), ("best on val", entry["name"] == best)]
            name = entry["name"] + "".join(f" ({mark})" for mark, on in marks if on)
            val, test = stats["val_eer"]["overall"], stats["test_eer"]["overall"]
            vs, over_seeds = stats.get("vs_reference", {}), stats.get("vs_reference_over_seeds", {})
            lines.append(
                f"| {method_short_name(method)} | {name} | {100 * val['mean']:.1f} ± {100 * val['std']:.1f} | "
                f"{100 * test['mean']:.1f} ± {100 * test['std']:.1f} | {ci_cell(vs.get('val'))} | "
                f"{ci_cell(over_seeds.get('val'))} | {ci_cell(vs.get('test'))} |"
            )
    learning = [(e["name"], embedding_learning_line(e.get("embedding_learning", []))) for e in summary["variants"]]
    if any(line for _, line in learning):
        lines += ["", "Algorithm 1's embedding per variant:", ""]
        lines += [f"- {name}: {line}" for name, line in learning if line]
    lines += ["", "Runs: `<variant folder>/seed_<s>/` beside this file; sweep.json has these numbers and per class."]
    return "\n".join(lines) + "\n"
