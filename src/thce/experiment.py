"""One experiment, end to end: clips -> splits -> cached features -> each method -> scores -> EER -> report.

Writes the run directory whose layout :mod:`thce.rundir` owns: ``config.toml`` (resolved), ``checkpoints/``,
``metrics.csv`` (per epoch), ``results.json``, ``report.md``, ``det.png``.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thce.config import ExperimentConfig, load_config, save_config
from thce.data.feature_store import FeatureStore, usable_indices
from thce.data.features import compute_features
from thce.data.normaliser import Normaliser
from thce.data.manifest import (
    SPLITS,
    ManifestRow,
    Skipped,
    check_split_coverage,
    describe_skipped,
    read_manifest,
    screen_rows,
    write_skipped,
)
from thce.data.splits import assign_splits, parse_ratio, rebalance, split_counts
from thce.data.strong import StrongLabels, frame_targets, read_strong_labels
from thce.data.synth import generate_scenes
from thce.distributed import SINGLE, Distributed
from thce.encoders import encoder_table
from thce.errors import ConfigError, DataError
from thce.checkpoint import save_checkpoint
from thce.io import atomic_write, write_json
from thce.metrics import per_class_det_points, per_class_eer
from thce.methods import MethodRun, build_method_encoder, trainers
from thce.models import EventDetector
from thce.machine import run_provenance
from thce.detection.frame_events import (
    choose_post_processing,
    class_set_counts,
    clip_counts,
    count_figures,
    detect_clips,
    reference_list,
)
from thce.detection.metrics import evaluate_events
from thce.repeats import summarise_seeds
from thce.report import write_report
from thce.rundir import (
    CHECKPOINTS,
    CLIPS,
    CONFIG,
    EVENT_COUNTS,
    METRICS,
    RESULTS,
    RESUME,
    SCORES,
    SKIPPED,
    VAL_SCORES,
    clear_run_outputs,
    experiment_settings,
    read_spent,
    save_spent,
    open_run,
)
from thce.training.data import TrainingData, predict_scores
from thce.progress import ProgressFn
from thce.training.engine import RunContext
from thce.training.metrics_log import MetricsLog

logger = logging.getLogger(__name__)



@dataclass
class PreparedData:
    """The training view of a data set plus what the report says about it."""

    data: TrainingData
    rows: list[ManifestRow]
    store: FeatureStore
    normaliser: Normaliser
    skipped: list[Skipped] = dataclasses.field(default_factory=list)
    strong: StrongLabels | None = None  # frame-level runs: every clip's events (data.strong_labels)
    frame_hop_s: float = 0.0  # frame-level runs: seconds per output frame


def run_manifest(config: ExperimentConfig, out_dir: Path, progress: ProgressFn | None = None) -> Path:
    """The run's manifest: the synthetic scenes' (generated into ``out_dir/data`` if not there yet), or the
    config's ``data.manifest``."""
    if config.data.source == "synth":
        synth = dataclasses.replace(config.synth, seed=config.seed)
        return generate_scenes(synth, out_dir / "data", progress=progress, workers=config.data.feature_workers)
    return Path(config.data.manifest)


def load_rows(
    config: ExperimentConfig,
    out_dir: Path,
    progress: ProgressFn | None = None,
    skipped: list[Skipped] | None = None,
    *,
    manifest: Path | None = None,
) -> list[ManifestRow]:
    """The manifest rows of the run (``manifest``: :func:`run_manifest`'s, found if ``None``), with every split
    filled (and train/val re-ratioed if configured).

    Rows with a problem (missing file, unknown label, duplicate, ...) are dropped and appended to ``skipped``;
    with ``data.strict`` the first problems stop the run instead."""
    manifest = run_manifest(config, out_dir, progress) if manifest is None else manifest
    rows, bad = screen_rows(
        read_manifest(manifest), classes=config.data.classes, source=Path(manifest).name, strict=config.data.strict
    )
    if skipped is not None:
        skipped.extend(bad)
    rows = assign_splits(rows, fractions=config.data.split_fractions, seed=config.seed)
    if config.data.ratio:
        ratio = parse_ratio(config.data.ratio)
        if len(ratio) != len(config.data.classes) + 1:
            raise DataError(
                f"data.ratio {config.data.ratio!r}: expected {len(config.data.classes) + 1} parts "
                f"({', '.join(config.data.classes)}, background)"
            )
        shrink = [("" if name == "background" else name) for name in config.data.ratio_shrink] or None
        rows = rebalance(rows, labels=[*config.data.classes, ""], ratio=ratio, seed=config.seed, shrink=shrink)
    return rows


def prepare_data(
    config: ExperimentConfig, out_dir: Path, progress: ProgressFn | None = None, *, write_files: bool = True
) -> PreparedData:
    """Rows -> cached log-mel features -> :class:`TrainingData` normalised with training-split statistics (with an
    encoder that standardises its inputs itself, as PANNs' bn0 does: an identity :class:`Normaliser`).

    ``write_files=False`` (ranks other than 0, after rank 0 prepared the data) leaves ``skipped.csv`` alone."""
    skipped: list[Skipped] = []
    manifest = run_manifest(config, out_dir, progress)
    rows = load_rows(config, out_dir, progress, skipped, manifest=manifest)
    check_split_coverage(rows, config.data.classes)
    class_of = {name: i for i, name in enumerate(config.data.classes)}
    class_index = np.array([class_of.get(row.label, len(config.data.classes)) for row in rows], dtype=np.int64)
    cache_dir = Path(config.data.cache_dir) if config.data.cache_dir else out_dir / "cache"
    store = compute_features(
        [row.path for row in rows], config=config.features, cache_dir=cache_dir, workers=config.data.feature_workers,
        strict=config.data.strict, progress=progress,
    )  # fmt: skip
    skipped += store.skipped
    if write_files:
        write_skipped(skipped, out_dir / SKIPPED)
    if skipped and write_files:
        logger.warning("%s; listed in %s", describe_skipped(skipped), out_dir / SKIPPED)
    usable = usable_indices(store)  # clips whose audio decoded; class_index stays indexed by store position
    splits = {s: usable[np.array([rows[i].split == s for i in usable], dtype=bool)] for s in SPLITS}
    kept = [rows[i] for i in usable]
    check_split_coverage(kept, config.data.classes)  # a class may have lost its last clips of a split
    if encoder_table(config).kind.normalises_inputs:  # e.g. PANNs' bn0: the encoder standardises its features itself
        normaliser = Normaliser(np.zeros(config.features.n_mels), np.ones(config.features.n_mels))
    else:
        normaliser = Normaliser.fit(store, splits["train"])
    if not config.data.strong_labels:
        data = TrainingData(store, class_index, splits, tuple(config.data.classes), normaliser)
        return PreparedData(data, kept, store, normaliser, skipped)
    strong = read_strong_labels(manifest, events_path=config.data.events or None)
    stride = config.frame_model.stride
    hop_s = stride * config.features.hop_ms / 1000.0
    targets = np.stack([
        frame_targets(strong.get(row.path, ()), config.data.classes, config.features.num_frames // stride, hop_s)
        for row in rows
    ])  # fmt: skip
    data = TrainingData(store, class_index, splits, tuple(config.data.classes), normaliser, frame_targets=targets)
    return PreparedData(data, kept, store, normaliser, skipped, strong=strong, frame_hop_s=hop_s)


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
) -> dict[str, Any]:
    """Run every method of ``config.methods`` on identical features and splits; write the run directory.

    With ``resume``, a run killed at any point continues after its last completed epoch (per-stage state in
    ``checkpoints/resume/``) and ends with the results an uninterrupted run gives. A directory that holds a run is
    refused unless ``resume`` or ``overwrite`` (which replaces the run's results and checkpoints) is given.
    Under ``torchrun`` (``dist``), every rank trains and only rank 0 writes (it also prepares the data first).
    Returns the results dict also written to ``results.json``.
    """
    out_dir = Path(out_dir)
    if not dist.is_main:  # rank 0 holds the folder
        return _run_experiment(config, out_dir, progress=progress, resume=resume, dist=dist)
    with open_run(out_dir, resume=resume, overwrite=overwrite):
        return _run_experiment(config, out_dir, progress=progress, resume=resume, dist=dist)


def _run_experiment(
    config: ExperimentConfig, out_dir: Path, *, progress: ProgressFn | None, resume: bool, dist: Distributed
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
    if dist.is_main:
        prepared = prepare_data(config, out_dir, progress)
        # only now the run exists: bad data or an unknown label stop it above, leaving nothing that marks a run
        resume_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / CONFIG)
    dist.barrier()  # the synthetic clips and the feature cache exist: the other ranks only read them
    if not dist.is_main:
        prepared = prepare_data(config, out_dir, write_files=False)
    ctx = RunContext(
        train=config.train, seed=config.seed, log=MetricsLog(metrics_path if dist.is_main else None),
        progress=progress if dist.is_main else None, resume_dir=resume_dir, dist=dist, augment=config.augment,
    )  # fmt: skip
    if config.model.cached_embeddings:  # a fixed encoder: every method trains on its embeddings, computed once
        from thce.pretrained.frozen import frozen_training_data

        frozen = frozen_training_data(prepared.data, prepared.store, model=config.model, seed=config.seed, ctx=ctx)
        prepared = dataclasses.replace(prepared, data=frozen)
    data = prepared.data
    timing["data"] = spent.get("data", 0.0) + time.perf_counter() - start
    if dist.is_main:
        save_spent(resume_dir, timing)

    def evaluate(method: str, model: EventDetector) -> dict[str, Any]:
        return evaluate_and_save(model, method, prepared, config, ctx, out_dir)

    run = MethodRun(
        config, data, ctx, evaluate, checkpoint_dir=out_dir / CHECKPOINTS if dist.is_main else None, timing=timing,
        spent_before=spent, save_timing=(lambda totals: save_spent(resume_dir, totals)) if dist.is_main else None,
    )
    methods: dict[str, Any] = {}
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
        "provenance": run_provenance(),  # thce and torch versions, git commit, machine
    }
    if dist.enabled:
        results["world_size"] = dist.world_size
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


def run_seeds(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    seeds: int,
    progress: ProgressFn | None = None,
    resume: bool = False,
    overwrite: bool = False,
    dist: Distributed = SINGLE,
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
            run_experiment(
                seed_config, out_dir / f"seed_{seed}", progress=progress, resume=resume, overwrite=overwrite, dist=dist
            )

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

