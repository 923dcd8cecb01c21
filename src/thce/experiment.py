"""One experiment, end to end: clips -> splits -> cached features (:mod:`thce.run_data`) -> each method, in one
process or several (``jobs``) -> scores -> EER -> report.

Writes the run directory whose layout :mod:`thce.rundir` owns: ``config.toml`` (resolved), ``checkpoints/``,
``metrics.csv`` (per epoch), ``results.json``, ``report.md``, ``det.png``.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thce.allocator import kept_bytes, reuse_freed_memory
from thce.checkpoint import save_checkpoint
from thce.config import ExperimentConfig, load_config, save_config
from thce.data.feature_pool import available_cpus
from thce.data.splits import split_counts
from thce.detection.frame_events import (
    choose_post_processing,
    class_set_counts,
    clip_counts,
    count_figures,
    detect_clips,
    reference_list,
)
from thce.detection.metrics import evaluate_events
from thce.distributed import SINGLE, Distributed
from thce.encoders import encoder_table
from thce.errors import ConfigError
from thce.io import atomic_write, write_json
from thce.machine import run_provenance
from thce.methods import METHODS, MethodRun, build_method_encoder, trainers, training_units
from thce.metrics import per_class_det_points, per_class_eer
from thce.models import EventDetector
from thce.progress import ProgressFn
from thce.repeats import summarise_seeds
from thce.report import write_report
from thce.run_data import PreparedData, prepare_data
from thce.rundir import (
    CHECKPOINTS,
    CLIPS,
    CONFIG,
    EVENT_COUNTS,
    METRICS,
    RESULTS,
    RESUME,
    SCORES,
    VAL_SCORES,
    clear_run_outputs,
    experiment_settings,
    open_run,
    read_spent,
    save_spent,
)
from thce.training.data import predict_scores
from thce.training.engine import RunContext
from thce.training.metrics_log import MetricsLog
from thce.workers import run_in_processes

logger = logging.getLogger(__name__)


def evaluate_and_save(
    model: EventDetector, method: str, prepared: PreparedData, config: ExperimentConfig, ctx: RunContext, out_dir: Path
) -> dict[str, Any]:
    """Score the validation split (``val_eer``, for choosing settings) and the test split (``eer``, DET), and save
    (rank 0) a self-contained checkpoint with the validation scores (and, for a frame-level run, the frame hop and
    the post-processing chosen on validation)."""
    data = prepared.data
    val, test = data.splits["val"], data.splits["test"]
    val_scores = predict_scores(model, data, val, ctx)
    scores = predict_scores(model, data, test, ctx)
    frames = None
    if data.frame_level:
        results = _frame_results(scores, val_scores, prepared)
        frames = {"hop_s": prepared.frame_hop_s, "post_processing": results["post_processing"]}
    else:
        labels = data.class_index[test]
        results = {
            "eer": per_class_eer(scores=scores, class_index=labels, classes=data.classes),
            "val_eer": per_class_eer(scores=val_scores, class_index=data.class_index[val], classes=data.classes),
            "det": per_class_det_points(scores=scores, class_index=labels, classes=data.classes),
            "test_scores": scores,
            "val_scores": val_scores,
        }
    if ctx.dist.is_main:
        save_checkpoint(
            out_dir / CHECKPOINTS / f"{method}.pt", whole_model(model, config, method),
            config=portable_config(config), method=method, classes=data.classes,
            normaliser=prepared.normaliser, val_scores=val_scores.reshape(-1, val_scores.shape[-1]),
            val_class_index=data.item_class(val).reshape(-1), train_class_counts=data.class_counts("train"),
            frames=frames,
        )  # fmt: skip
    return results


def _frame_results(scores: np.ndarray, val_scores: np.ndarray, prepared: PreparedData) -> dict[str, Any]:
    """A frame-level method's results: EER and DET over frames (every output frame an item), and the event-based
    metrics of DCASE 2017 Task 2 on the test clips with the post-processing chosen on validation (per class:
    threshold, median filter, merged gap and shortest event maximising validation event F over all validation
    clips): over all test clips (``events``) and with each class on its own clips as Task 2 scores it
    (``events_class_sets``, :func:`~thce.detection.frame_events.class_set_counts`). Scores are saved flattened, one
    row per frame."""
    data, hop_s = prepared.data, prepared.frame_hop_s
    paths = prepared.store.paths
    per_split: dict[str, Any] = {}
    for split, split_scores in (("val", val_scores), ("test", scores)):
        names = [str(paths[i]) for i in data.splits[split]]
        events = {name: prepared.strong.get(Path(name), ()) for name in names} if prepared.strong else {}
        per_split[split] = (names, split_scores, reference_list(names, events))
    post, val_f = choose_post_processing(*per_split["val"], hop_s, data.classes)
    names, _, reference = per_split["test"]
    detected = detect_clips(names, scores, hop_s, data.classes, post)
    counts = clip_counts(names, detected, reference, data.classes)
    flat = {split: s.reshape(-1, s.shape[-1]) for split, s in (("val", val_scores), ("test", scores))}
    frame_class = {split: data.item_class(data.splits[split]).reshape(-1) for split in ("val", "test")}
    return {
        "eer": per_class_eer(scores=flat["test"], class_index=frame_class["test"], classes=data.classes),
        "val_eer": per_class_eer(scores=flat["val"], class_index=frame_class["val"], classes=data.classes),
        "det": per_class_det_points(scores=flat["test"], class_index=frame_class["test"], classes=data.classes),
        "events": evaluate_events(reference, detected, classes=data.classes),
        "events_class_sets": count_figures(class_set_counts(counts), data.classes),
        "event_counts": counts,
        "val_event_f": val_f,
        "post_processing": post.to_dict(),
        "frame_hop_s": hop_s,
        "test_scores": flat["test"],
        "val_scores": flat["val"],
    }


def whole_model(model: EventDetector, config: ExperimentConfig, method: str) -> EventDetector:
    """``model`` as detect and export run it: a detector trained on a frozen encoder's cached embeddings
    (:attr:`thce.encoders.ModelConfig.cached_embeddings`, e.g. :class:`thce.pretrained.encoder.CachedPannsEncoder`)
    gets the whole network back (weights of ``model.pretrained``, the trained centring); any other model as it is."""
    if not config.model.cached_embeddings:
        return model
    with torch.random.fork_rng(devices=[]):  # the run's random state stays as it was
        torch.manual_seed(config.seed)  # without model.pretrained: the initialisation the embeddings came from
        encoder = model.encoder.full(build_method_encoder(config, method))
    return EventDetector(encoder, model.head, model.cluster_layer, model.scorer)


def portable_config(config: ExperimentConfig) -> ExperimentConfig:
    """The config a checkpoint keeps: ``model.pretrained`` cleared, since the checkpoint holds every weight and
    loading it (detect, export) must not need the PANNs file (the run's config.toml names it)."""
    if not config.model.pretrained:
        return config
    return dataclasses.replace(config, model=dataclasses.replace(config.model, pretrained=""))


def _check_resumable(config: ExperimentConfig, out_dir: Path) -> None:
    """Refuse to resume a run made with other settings; the machine's (:data:`thce.rundir.ENVIRONMENT_KEYS`: threads,
    cache folder) may differ, e.g. a run moved to a machine with more cores."""
    saved = out_dir / CONFIG
    if saved.is_file() and experiment_settings(load_config(saved)) != experiment_settings(config):
        raise ConfigError(
            f"{saved}: the run in {out_dir} used another configuration; resume it with that config "
            f"(thce experiment {saved} --out {out_dir} --resume) or start a new run directory"
        )


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    progress: ProgressFn | None = None,
    resume: bool = False,
    overwrite: bool = False,
    dist: Distributed = SINGLE,
    jobs: int = 1,
) -> dict[str, Any]:
    """Run every method of ``config.methods`` on identical features and splits; write the run directory.

    With ``resume``, a run killed at any point continues after its last completed epoch (per-stage state in
    ``checkpoints/resume/``) and ends with the results an uninterrupted run gives. A directory that holds a run is
    refused unless ``resume`` or ``overwrite`` (which replaces the run's results and checkpoints) is given.
    Under ``torchrun`` (``dist``), every rank trains and only rank 0 writes (it also prepares the data first).
    ``jobs`` > 1 trains the methods in that many worker processes side by side (:func:`_train_in_processes`), with
    the results one process gives. Returns the results dict also written to ``results.json``.
    """
    out_dir = Path(out_dir)
    if jobs < 1:
        raise ConfigError(f"jobs: must be >= 1 (processes training the methods side by side), got {jobs}")
    if jobs > 1 and dist.enabled:
        raise ConfigError("jobs: a torchrun job spreads each method over its ranks; train the methods in one "
                          "process each (jobs = 1) under torchrun")  # fmt: skip
    if not dist.is_main:  # rank 0 holds the folder
        return _run_experiment(config, out_dir, progress=progress, resume=resume, dist=dist)
    with open_run(out_dir, resume=resume, overwrite=overwrite):
        return _run_experiment(config, out_dir, progress=progress, resume=resume, dist=dist, jobs=jobs)


def _run_experiment(
    config: ExperimentConfig,
    out_dir: Path,
    *,
    progress: ProgressFn | None,
    resume: bool,
    dist: Distributed,
    jobs: int = 1,
) -> dict[str, Any]:
    """:func:`run_experiment` in a folder this process holds (rank 0) or that rank 0 holds (other ranks)."""
    resume_dir = out_dir / RESUME
    metrics_path = out_dir / METRICS
    if dist.is_main:
        if resume:
            _check_resumable(config, out_dir)
        else:  # with overwrite: no stale checkpoint or result of the old run is left
            shutil.rmtree(resume_dir, ignore_errors=True)
            metrics_path.unlink(missing_ok=True)
            clear_run_outputs(out_dir)
            if (out_dir / CONFIG).is_file():  # the replaced run's config goes at once, with its results
                save_config(config, out_dir / CONFIG)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    spent = read_spent(resume_dir) if resume else {}  # seconds earlier processes of this run spent per stage
    timing: dict[str, float] = {}
    start = time.perf_counter()
    provenance = run_provenance()  # the code this process starts with: a commit landing while it trains is not it
    if dist.is_main:
        prepared = prepare_data(config, out_dir, progress)
        # only now the run exists: bad data or an unknown label stop it above, leaving nothing that marks a run
        resume_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / CONFIG)
    dist.barrier()  # the synthetic clips and the feature cache exist: the other ranks only read them
    if not dist.is_main:
        prepared = prepare_data(config, out_dir, write_files=False)
    ctx = _run_context(config, out_dir, progress, dist, shared_log=jobs > 1)
    prepared = _on_frozen_embeddings(prepared, config, ctx)
    data = prepared.data
    timing["data"] = spent.get("data", 0.0) + time.perf_counter() - start
    if dist.is_main:
        save_spent(resume_dir, timing)
    run = _method_run(config, prepared, ctx, out_dir, timing=timing, spent=spent)
    units = training_units(config.methods)
    methods: dict[str, Any] = {}
    if jobs > 1 and len(units) > 1:
        methods = _train_in_processes(config, run, units, jobs, out_dir, progress)
    else:
        for train in trainers(config.methods):  # the registry's order; every method from the same initial encoder
            methods.update(train(run))
    diagnostics = run.diagnostics
    test_scores = {name: entry.pop("test_scores") for name, entry in methods.items()}
    val_scores = {name: entry.pop("val_scores") for name, entry in methods.items()}
    event_counts = {name: entry.pop("event_counts") for name, entry in methods.items() if "event_counts" in entry}
    results = {
        "classes": list(data.classes),
        "methods": methods,
        "data": {"counts": split_counts(prepared.rows)},
        "encoder": encoder_table(config).encoder,
        "embedding_diagnostics": _jsonable(diagnostics),
        "timing_s": {k: round(v, 2) for k, v in timing.items()},
        "selected_epochs": dict(ctx.log.selected_epochs),
        "selection": ctx.log.selection_summary(),  # per early-stopped stage: criterion, kept epoch, its validation
        "warnings": list(ctx.log.warnings),
        "provenance": provenance,  # thce and torch versions, git commit, machine
    }
    if dist.enabled:
        results["world_size"] = dist.world_size
    if jobs > 1 and len(units) > 1:  # the stages' seconds overlap: their sum is more than the wall time
        results["processes"] = min(jobs, len(units))
    if not dist.is_main:
        return results
    with atomic_write(out_dir / VAL_SCORES, "wb") as handle:
        np.savez(handle, class_index=data.item_class(data.splits["val"]).reshape(-1), **val_scores)
    with atomic_write(out_dir / SCORES, "wb") as handle:
        np.savez(handle, class_index=data.item_class(data.splits["test"]).reshape(-1), **test_scores)
    if event_counts:  # frame-level runs: per test clip and class (tp, n_ref, n_sys), for bootstraps over clips
        with atomic_write(out_dir / EVENT_COUNTS, "wb") as handle:
            np.savez(handle, **event_counts)
    write_json(out_dir / CLIPS, scored_clips(prepared))
    write_json(out_dir / RESULTS, results)
    write_report(out_dir, results)
    return results


def _run_context(
    config: ExperimentConfig, out_dir: Path, progress: ProgressFn | None, dist: Distributed, *, shared_log: bool
) -> RunContext:
    """The training context of one process of a run; ``shared_log``: other processes log into ``metrics.csv`` too."""
    resume_dir = out_dir / RESUME
    log = MetricsLog(out_dir / METRICS if dist.is_main else None,
                     lock_path=resume_dir / f"{METRICS}.lock" if shared_log else None)  # fmt: skip
    return RunContext(
        train=config.train, seed=config.seed, log=log, progress=progress if dist.is_main else None,
        resume_dir=resume_dir, dist=dist, augment=config.augment,
    )  # fmt: skip


def _on_frozen_embeddings(prepared: PreparedData, config: ExperimentConfig, ctx: RunContext) -> PreparedData:
    """``prepared`` as the methods train on it: with a fixed encoder (``model.cached_embeddings``) its cached
    embeddings of every clip (computed once, then read), else as it is."""
    if not config.model.cached_embeddings:
        return prepared
    from thce.pretrained.frozen import frozen_training_data

    frozen = frozen_training_data(prepared.data, prepared.store, model=config.model, seed=config.seed, ctx=ctx)
    return dataclasses.replace(prepared, data=frozen)


def _method_run(
    config: ExperimentConfig,
    prepared: PreparedData,
    ctx: RunContext,
    out_dir: Path,
    *,
    timing: dict[str, float],
    spent: dict[str, float],
) -> MethodRun:
    """What the trainers of one process share; rank 0 saves checkpoints and stage times."""
    resume_dir = out_dir / RESUME
    main = ctx.dist.is_main

    def evaluate(method: str, model: EventDetector) -> dict[str, Any]:
        return evaluate_and_save(model, method, prepared, config, ctx, out_dir)

    return MethodRun(
        config, prepared.data, ctx, evaluate, checkpoint_dir=out_dir / CHECKPOINTS if main else None, timing=timing,
        spent_before=spent, save_timing=(lambda totals: save_spent(resume_dir, totals)) if main else None,
    )  # fmt: skip


def _train_in_processes(
    config: ExperimentConfig, run: MethodRun, units: list[str], jobs: int, out_dir: Path, progress: ProgressFn | None
) -> dict[str, Any]:
    """Train the methods ``units`` (:func:`thce.methods.training_units`) in ``jobs`` worker processes
    (:func:`thce.workers.run_in_processes`), each preparing the data again from the feature cache, with
    ``train.num_threads`` threads (unset: the usable cores shared out among the workers still training, so that the
    last takes them all). Algorithm 1's (proposed1, with proposed2) goes
    first: it is the longest, the others share the remaining processes. What the workers report (results, stage
    times, kept epochs, warnings, Algorithm 1's diagnostics) joins ``run``; returns the methods' results in the
    order one process gives them. Each method's random streams are its own, so the results are one process's."""
    processes = min(jobs, len(units))
    threads = config.train.num_threads or max(1, available_cpus() // processes)
    reports = run_in_processes(
        _train_unit, sorted(units, key=lambda name: name != "proposed1"), processes=processes, setup=_unit_setup,
        setup_args=(config, out_dir, threads, dict(run.spent_before), kept_bytes()), progress=progress,
        threads=threads, share_cores=None if config.train.num_threads else available_cpus(),
    )  # fmt: skip
    methods: dict[str, Any] = {}
    for name in units:
        report = reports[name]
        methods.update(report["methods"])
        run.timing.update(report["timing"])
        run.diagnostics.extend(report["diagnostics"])
        run.ctx.log.selected_epochs.update(report["selected_epochs"])
        run.ctx.log.criteria.update(report["criteria"])
        run.ctx.log.warnings.extend(report["warnings"])
    return methods


#: A worker's state: the config, the run folder, the prepared data and the seconds earlier processes spent.
_UnitState = tuple[ExperimentConfig, Path, PreparedData, dict[str, float]]


def _unit_setup(
    config: ExperimentConfig, out_dir: Path, threads: int, spent: dict[str, float], keep_bytes: int | None
) -> _UnitState:
    """A worker process of :func:`_train_in_processes`: the parent's allocator setting and ``threads``, then the
    run's data, read from what the parent prepared (clips, feature cache, embedding cache)."""
    if keep_bytes is not None:
        reuse_freed_memory(keep_bytes)
    torch.set_num_threads(threads)
    prepared = prepare_data(config, out_dir, write_files=False)
    prepared = _on_frozen_embeddings(prepared, config, _run_context(config, out_dir, None, SINGLE, shared_log=True))
    return config, out_dir, prepared, spent


def _train_unit(state: _UnitState, name: str, progress: ProgressFn) -> dict[str, Any]:
    """Train the method ``name`` (and what its trainer trains with it) in a worker; what the parent merges."""
    config, out_dir, prepared, spent = state
    ctx = _run_context(config, out_dir, progress, SINGLE, shared_log=True)
    run = _method_run(config, prepared, ctx, out_dir, timing={}, spent=spent)
    methods = METHODS[name].train(run)
    return {"methods": methods, "timing": run.timing, "diagnostics": run.diagnostics,
            "selected_epochs": ctx.log.selected_epochs, "criteria": ctx.log.criteria, "warnings": ctx.log.warnings}  # fmt: skip


def run_seeds(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    seeds: int,
    progress: ProgressFn | None = None,
    resume: bool = False,
    overwrite: bool = False,
    dist: Distributed = SINGLE,
    jobs: int = 1,
) -> dict[str, Any]:
    """Repeat :func:`run_experiment` with seeds ``seed, seed+1, ...`` (each its own data, split and init) in
    ``out_dir/seed_<s>/``, then summarise in ``out_dir``: mean and std of each EER, and bootstrap intervals of each
    method's overall EER difference to the baseline, over test clips and over seeds and test clips. The summary's
    ``methods`` hold the mean EERs and the DET curves of all seeds' test scores pooled; ``seeds`` also holds every
    seed's curves (the figure draws both, :func:`thce.figures.plot_det`)."""
    if seeds < 1:
        raise ValueError(f"run_seeds: seeds must be >= 1, got {seeds}")
    out_dir = Path(out_dir)
    seed_list = [config.seed + k for k in range(seeds)]

    def run_each() -> None:
        for seed in seed_list:
            seed_config = dataclasses.replace(config, seed=seed)
            run_experiment(seed_config, out_dir / f"seed_{seed}", progress=progress, resume=resume,
                           overwrite=overwrite, dist=dist, jobs=jobs)  # fmt: skip

    if not dist.is_main:
        run_each()
        return {}
    with open_run(out_dir, resume=resume, overwrite=overwrite):
        run_each()
        return summarise_seeds(config, out_dir, seed_list)


def scored_clips(prepared: PreparedData) -> dict[str, list[str]]:
    """``clips.json``: the (resolved) audio file of each row of ``val_scores.npz`` (``"val"``) and ``scores.npz``
    (``"test"``); runs with equal lists scored the same clips in the same order, so their scores pair clip by clip."""
    paths = prepared.store.paths
    return {split: [str(paths[i]) for i in prepared.data.splits[split]] for split in ("val", "test")}


def _jsonable(value: Any) -> Any:
    """Diagnostics with int keys and numpy/torch scalars turned into JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic, torch.Tensor)):
        value = value.item()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value

