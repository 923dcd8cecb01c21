"""Running a sweep: every variant of a config with seeds ``seed .. seed+N-1`` on identical data, each run in
``out_dir/<variant slug>/seed_<s>/``; then ``sweep.json`` (:mod:`thce.sweep.summary`) and ``sweep.md``
(:mod:`thce.sweep.markdown`).

Identical data. For a given seed every variant gets the same clips and split: both derive from ``config.seed`` and
the data settings only (a variant that changes ``data.*`` or ``synth.*`` may change them; the runs' ``clips.json``
tell, and a comparison over different clips is marked unpaired). Synthetic clips are written once per (synth
settings, seed) into ``out_dir/data/<key>/``, which each run's ``data`` folder links to, and all variants share one
feature cache (``data.cache_dir``, ``out_dir/cache`` unless set). The cache is keyed by the feature settings and
the resolved clip paths with their sizes and mtimes, so sharing it is safe: a variant with other features or other
clips gets a cache of its own beside the others, and the same clips are computed once.

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
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from thce.config import ExperimentConfig, config_from_dict, load_config, save_config, set_dotted_key
from thce.errors import ConfigError, OutputError
from thce.experiment import run_experiment
from thce.repeats import summarise_seeds
from thce.io import atomic_write, write_json
from thce.locks import folder_lock
from thce.methods import method_settings
from thce.progress import ProgressFn
from thce.rundir import CONFIG, ENVIRONMENT_KEYS, FINISHED_FILES, experiment_settings, finished_run
from thce.sweep.markdown import sweep_table_markdown
from thce.sweep.summary import summarise
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
