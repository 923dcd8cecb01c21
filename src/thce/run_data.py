"""The data a run trains on: its manifest (the synthetic scenes generated into the run, or the config's), the rows
with every split filled, the cached log-mel features, the training-split normaliser and, for a frame-level run, each
clip's frame targets (:class:`PreparedData`). :mod:`thce.experiment` prepares it once per run; the worker processes
of ``--jobs`` and the other ranks of a torchrun job read it again from what the first one made."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thce.config import ExperimentConfig
from thce.data.feature_store import FeatureStore, usable_indices
from thce.data.features import compute_features
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
from thce.data.normaliser import Normaliser
from thce.data.splits import assign_splits, parse_ratio, rebalance
from thce.data.strong import StrongLabels, frame_targets, read_strong_labels
from thce.data.synth import generate_scenes
from thce.encoders import encoder_table
from thce.errors import DataError
from thce.progress import ProgressFn
from thce.rundir import SKIPPED
from thce.training.data import TrainingData

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
