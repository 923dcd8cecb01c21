"""One multi-seed result of a config from runs that trained different methods of it on the same clips.

Methods train independently of each other: each reads the settings all methods share and its own config tables
(:func:`thce.methods.method_settings`), and its random streams are named after it. So a run made for some methods
stands for those methods in any run of a config that agrees on what they read: after changing an Algorithm 1
setting, the baseline's runs need not be repeated. :func:`join_runs` assembles, per seed, one run folder from
parts that each ran some of ``config.methods``, refusing unless every method comes from a finished run with that
seed, the same settings for that method and the same scored clips, then summarises the seeds as ``thce experiment
--seeds`` does (:func:`thce.repeats.summarise_seeds`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thce.config import ExperimentConfig, load_config, save_config
from thce.encoders import encoder_table
from thce.errors import ConfigError
from thce.repeats import summarise_seeds
from thce.io import atomic_write, ensure_dir, read_json, write_json
from thce.locks import folder_lock
from thce.methods import METHODS, method_settings
from thce.rundir import (
    CLIPS,
    CONFIG,
    ENVIRONMENT_KEYS,
    EVENT_COUNTS,
    FINISHED_FILES,
    RESULTS,
    SCORES,
    VAL_SCORES,
    experiment_settings,
    finished_run,
    same_clips,
)

#: The methods a part provides and the folder holding its runs, ``folder/seed_<s>/``.
Part = tuple[Sequence[str], Path]


def _owner(stage_key: str, parts: Sequence[Part]) -> int | None:
    """Which part trained the stage ``"method/stage[/iteration]"`` (Algorithm 1's ``proposed/...``: proposed1's)."""
    method = stage_key.split("/", 1)[0]
    method = "proposed1" if method == "proposed" else method
    return next((i for i, (methods, _) in enumerate(parts) if method in methods), None)


def _check_part(run_dir: Path, methods: Sequence[str], config: ExperimentConfig) -> dict[str, Any]:
    """The run's results.json, after checking that it is finished and trained ``methods`` as ``config`` would."""
    if not finished_run(run_dir, with_config=True):
        raise ConfigError(f"{run_dir}: not a finished run (needs config.toml and {', '.join(FINISHED_FILES)})")
    theirs = experiment_settings(load_config(run_dir / CONFIG))
    wanted = experiment_settings(config)
    for method in methods:
        if method_settings(theirs, method) != method_settings(wanted, method):
            free = ", ".join(ENVIRONMENT_KEYS)
            raise ConfigError(f"{run_dir}: its config.toml trains {method} with other settings than the config's "
                              f"(only {free} and other methods' tables may differ)")  # fmt: skip
    results = read_json(run_dir / RESULTS, what="run results")
    missing = [m for m in methods if m not in results.get("methods", {})]
    if missing:
        raise ConfigError(f"{run_dir}: has no results of {', '.join(missing)}")
    return results


def join_seed(config: ExperimentConfig, parts: Sequence[Part], seed: int, run_dir: Path) -> dict[str, Any]:
    """Write ``run_dir`` (config.toml, results.json, scores.npz, val_scores.npz, clips.json and, for frame-level
    runs, event_counts.npz) joining the seed's
    runs of ``parts``; returns its results. ``config`` is the joined run's config (its seed is set to ``seed``)."""
    config = dataclasses.replace(config, seed=seed)
    sources = [folder / f"seed_{seed}" for _, folder in parts]
    results = [_check_part(source, methods, config) for source, (methods, _) in zip(sources, parts)]
    for split in ("val", "test"):
        reason = same_clips(sources, split)
        if reason is not None:
            raise ConfigError(f"seed {seed}: {reason}: {', '.join(str(s) for s in sources)}")
    for key in ("classes", "data"):
        if any(r.get(key) != results[0].get(key) for r in results[1:]):
            raise ConfigError(f"seed {seed}: the runs differ in {key}: {', '.join(str(s) for s in sources)}")
    by_method = {m: i for i, (methods, _) in enumerate(parts) for m in methods}
    ensure_dir(run_dir)
    for name in (SCORES, VAL_SCORES):
        loaded = [np.load(source / name) for source in sources]
        if any(not np.array_equal(z["class_index"], loaded[0]["class_index"]) for z in loaded[1:]):
            raise ConfigError(f"seed {seed}: the runs' {name} hold other clips")
        arrays = {"class_index": loaded[0]["class_index"]}
        arrays.update({m: loaded[by_method[m]][m] for m in config.methods})
        with atomic_write(run_dir / name, "wb") as handle:
            np.savez(handle, **arrays)
    if all((source / EVENT_COUNTS).is_file() for source in sources):  # frame-level runs: per-clip event counts
        counts = [np.load(source / EVENT_COUNTS) for source in sources]
        with atomic_write(run_dir / EVENT_COUNTS, "wb") as handle:
            np.savez(handle, **{m: counts[by_method[m]][m] for m in config.methods})
    with atomic_write(run_dir / CLIPS, "w") as handle:
        handle.write((sources[0] / CLIPS).read_text())
    proposed = by_method.get("proposed1")

    def owned(key: str, entries: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
        return {k: v for i, r in entries.items() for k, v in r.get(key, {}).items() if _owner(k, parts) == i}

    joined: dict[str, Any] = {
        "classes": results[0]["classes"],
        "methods": {m: results[by_method[m]]["methods"][m] for m in config.methods},
        "data": results[0]["data"],
        "encoder": encoder_table(config).encoder,
        "timing_s": {f"{stage} ({', '.join(methods)})": seconds for (methods, _), r in zip(parts, results)
                     for stage, seconds in r.get("timing_s", {}).items()},  # fmt: skip
        "selected_epochs": owned("selected_epochs", dict(enumerate(results))),
        "selection": owned("selection", dict(enumerate(results))),
        "warnings": [w for i, r in enumerate(results) for w in r.get("warnings", []) if _owner(w["stage"], parts) == i],
        "provenance": {
            **results[0].get("provenance", {}),
            "joined_from": [
                {"methods": list(methods), "run": str(source), "git_commit": r.get("provenance", {}).get("git_commit")}
                for (methods, _), source, r in zip(parts, sources, results)
            ],
        },
    }
    if proposed is not None and "embedding_diagnostics" in results[proposed]:
        joined["embedding_diagnostics"] = results[proposed]["embedding_diagnostics"]
    save_config(config, run_dir / CONFIG)
    write_json(run_dir / RESULTS, joined)
    return joined


def join_runs(config: ExperimentConfig, parts: Sequence[Part], seeds: Sequence[int], out_dir: Path) -> dict[str, Any]:
    """Join ``parts`` seed by seed into ``out_dir/seed_<s>/`` and write the ``--seeds`` summary into ``out_dir``.

    Every method of ``config.methods`` must come from exactly one part (proposed2 from proposed1's: it continues
    that training). Returns the summary (``out_dir/results.json``)."""
    provided = [m for methods, _ in parts for m in methods]
    twice = sorted({m for m in provided if provided.count(m) > 1})
    if twice or sorted(provided) != sorted(config.methods):
        raise ConfigError(f"the parts must provide each of {', '.join(config.methods)} once; they provide "
                          f"{', '.join(provided) or 'none'}")  # fmt: skip
    for methods, _ in parts:
        for method in methods:
            starts_from = METHODS[method].requires  # every provided method is one of config.methods: known
            if starts_from is not None and starts_from not in methods:
                raise ConfigError(f"{method} continues {starts_from}'s training: take both from the same runs")
    with folder_lock(out_dir):
        for seed in seeds:
            join_seed(config, parts, seed, out_dir / f"seed_{seed}")
        return summarise_seeds(config, out_dir, list(seeds))
