"""Algorithm 1 of the paper (learn the embedding, then the detector) and the baseline.

- :func:`learn_embedding`: for ``n_iter`` iterations, cluster the training embeddings per class (K_c rule),
  initialise the cluster layer W from the centroids (times alpha), tune only W for ``head_only_epochs``, then train
  end to end for ``epochs`` (``last_epochs`` in the last iteration) with the weighted triple-header CE (Eq. 8,
  :class:`thce.losses.TripleHeaderCrossEntropy`). An ``on_iteration`` hook sees every iteration's result.
- :func:`train_detector`: a sigmoid layer of L outputs on the cluster layer; head only with Eq. 2 (Proposed1),
  then end to end with Eq. 2 (Proposed2); each stage stops early on validation and keeps its best model.
- :func:`train_baseline`: the same encoder with a sigmoid layer on the embedding, end to end with Eq. 2.
- Beyond the paper: ``proposed2_aux`` tunes Proposed1 end to end like Proposed2 with the last iteration's
  triple-header CE kept as an auxiliary loss (:class:`AuxiliaryTHCEConfig`, :func:`thce_auxiliary_loss`).

The models are built by the method registry (:mod:`thce.methods`); the stages here train what they are given.
Head-only stages run on embeddings computed once with the frozen encoder in eval mode (dropout off, batch-norm
statistics fixed): the result is the same as re-running the frozen encoder every epoch, minus dropout noise on the
input of the head, and it makes these stages nearly free.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from thce import seeds
from thce.augment import mix_targets
from thce.cluster import Clustering, assign_to_own_class, cluster_per_class
from thce.distributed import SINGLE, Distributed
from thce.errors import ConfigError
from thce.losses import TripleHeaderCrossEntropy, bce_class_weights, eq3_ordering, weighted_bce
from thce.models import ClusterLayer, EventDetector
from thce.sampling import balanced_sampling_order
from thce.training.data import (
    RemixedTraining,
    TrainingData,
    calibrate_centring,
    calibration_indices,
    detection_validation,
    embed,
    has_centring,
    item_rows,
    training_clips,
)
from thce.training.diagnostics import cluster_diagnostics, embedding_diagnostics, same_clip_cosine
from thce.training.engine import (
    SELECTIONS,
    EpochData,
    Learner,
    RunContext,
    Schedule,
    Selection,
    Stage,
    StageConfig,
    Validation,
    check_learning_rate,
    fit_stage,
    resume_file,
    save_resume_file,
    stage_finished,
)

@dataclass(frozen=True)
class EmbeddingConfig:
    """Algorithm 1, step 1 (paper: n_iter 5, epochs 30, last_epochs 150, head_only_epochs 2, beta' 5, beta'' 0).

    ``alpha`` scales the cosine similarities (folded into W at initialisation); the paper does not give it.
    ``balanced_clusters`` caps cluster sizes so that clusters are "roughly equal size".
    """

    n_iter: int = 5
    epochs: int = 30
    last_epochs: int = 150
    head_only_epochs: int = 2
    alpha: float = 16.0
    beta_same: float = 5.0
    beta_other: float = 0.0
    cluster_weights: bool = True
    balanced_clusters: bool = True
    kmeans_max_iter: int = 100
    loss_normaliser: str = "fixed"  # Eq. 8 over B x the mean training weight; "batch": the batch's sum of weights
    normalise_w: bool = False  # unit columns of W at the fixed scale alpha (h = alpha x cosine); default: W free
    max_clusters_per_class: int = 0  # cap on K_c (0: none, the paper's floor(I_c / min I_c'))
    learning_rate: float | None = None  # Adam's rate for the THCE stages; None: train.learning_rate (the paper's)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("n_iter", "kmeans_max_iter"):
            if getattr(self, name) < 1:
                raise ConfigError(f"embedding.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("epochs", "last_epochs", "head_only_epochs", "max_clusters_per_class"):
            if getattr(self, name) < 0:
                raise ConfigError(f"embedding.{name}: must be >= 0, got {getattr(self, name)}")
        if not self.alpha > 0:
            raise ConfigError(f"embedding.alpha: must be > 0, got {self.alpha}")
        check_learning_rate(self.learning_rate, "embedding.learning_rate")
        if self.loss_normaliser not in ("fixed", "batch"):
            raise ConfigError(f"embedding.loss_normaliser: {self.loss_normaliser!r} is not 'fixed' or 'batch'")
        if not self.beta_other < self.beta_same:
            raise ConfigError(
                f"embedding: beta_other ({self.beta_other}) must be smaller than beta_same ({self.beta_same}), Eq. 5"
            )


@dataclass(frozen=True)
class DetectorConfig(StageConfig):
    """Algorithm 1, step 2: ``head_only_max_epochs``, ``head_only_learning_rate`` and ``head_only_selection`` are
    Proposed1's head-only stage's, ``max_epochs``, ``learning_rate`` and ``selection`` the end-to-end stage's of
    Proposed2 (and the head-only stage's where its own are unset)."""

    section: ClassVar[str] = "detector"
    head_only_max_epochs: int = 200
    head_only_learning_rate: float | None = None  # None: train.learning_rate
    head_only_selection: str | None = None  # None: selection

    def validate(self, section: str) -> None:
        super().validate(section)
        if self.head_only_max_epochs < 0:
            raise ConfigError(f"{section}.head_only_max_epochs: must be >= 0, got {self.head_only_max_epochs}")
        check_learning_rate(self.head_only_learning_rate, f"{section}.head_only_learning_rate")
        if self.head_only_selection is not None and self.head_only_selection not in SELECTIONS:
            raise ConfigError(
                f"{section}.head_only_selection: {self.head_only_selection!r} is not one of {', '.join(SELECTIONS)}"
            )

    @property
    def head_only_criterion(self) -> str:
        """What Proposed1's head-only stage is selected on: ``head_only_selection``, else ``selection``."""
        return self.head_only_selection or self.selection


@dataclass(frozen=True)
class AuxiliaryTHCEConfig:
    """``proposed2_aux`` (beyond the paper): Proposed2's end-to-end stage on the loss Eq. 2 + ``weight`` x Eq. 8,
    the triple-header CE of Algorithm 1's last clustering, so that tuning for detection keeps the cluster
    structure the embedding stage learned. Its other settings are ``[detector]``'s (the end-to-end stage's)."""

    weight: float = 1.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise ConfigError(f"proposed2_aux.weight: must be a number > 0, got {self.weight}")


@dataclass(frozen=True)
class BaselineConfig(StageConfig):
    """The baseline's stage; ``l2_normalise`` keeps the encoder's final L2 normalisation (default: off)."""

    section: ClassVar[str] = "baseline"
    l2_normalise: bool = False


@dataclass(frozen=True)
class DCASE2017BaselineConfig(StageConfig):
    """The DCASE 2017 Task 2 baseline's stage, as published: up to 200 epochs, patience 10, Adam at 0.001
    (``thce.frame_models.DCASE2017_TASK2``); model selection on the validation loss (it monitored binary accuracy)."""

    section: ClassVar[str] = "dcase2017_baseline"
    max_epochs: int = 200
    patience: int = 10


# ---------------------------------------------------------------------------------- Algorithm 1, step 1


@dataclass
class EmbeddingResult:
    """The learned embedding: encoder E, the cluster layer W (Eq. 4), the last iteration's clustering and
    triple-header CE (``loss_fn``, whose cluster layer is W), and per-iteration diagnostics."""

    encoder: nn.Module
    clustering: Clustering
    diagnostics: list[dict[str, Any]]
    loss_fn: TripleHeaderCrossEntropy

    @property
    def cluster_layer(self) -> ClusterLayer:
        """W, the cluster layer the last iteration trained (the triple-header CE's)."""
        return self.loss_fn.cluster_layer


@dataclass
class EmbeddingIteration:
    """What :func:`learn_embedding` hands its ``on_iteration`` hook after each iteration's training.

    Attributes:
        iteration: 1 .. ``n_iter``.
        encoder: E as trained so far (the module being trained: measure it, do not change it).
        clustering: the iteration's per-class clustering of the training embeddings (made at its start).
        cluster_layer: W after the iteration's training.
        record: the iteration's diagnostics (the entry it adds to :attr:`EmbeddingResult.diagnostics`).
        cluster_seconds: wall time of the iteration's clustering (:func:`thce.cluster.cluster_per_class`).
    """

    iteration: int
    encoder: nn.Module
    clustering: Clustering
    cluster_layer: ClusterLayer
    record: dict[str, Any]
    cluster_seconds: float


def _cluster_batch_weight(assignment: Tensor, weights: Tensor | None) -> Callable[[np.ndarray], float]:
    """The denominator of the weighted mean THCE of a batch: ``sum_i weight_{k_i}`` (Eq. 8's cluster weights)."""
    if weights is None:
        return lambda positions: float(len(positions))
    return lambda positions: float(weights[assignment[torch.as_tensor(positions, device=assignment.device)]].sum())


class _Eq3Tally:
    """Running Eq. 3 fractions over the training batches of one epoch (weighted by batch size); under torchrun
    summed over ranks (each saw its share of every batch), so every rank logs the fraction over the whole epoch."""

    def __init__(self) -> None:
        self.total = 0
        self.sums = {"eq3": 0.0}

    def add(self, h: Tensor, cluster_index: Tensor, cluster_class: Tensor) -> None:
        n = cluster_index.numel()
        self.sums["eq3"] += eq3_ordering(h.detach(), cluster_index, cluster_class)["eq3"] * n
        self.total += n

    def pop(self, dist: Distributed = SINGLE) -> float:
        """The epoch's fraction (NaN before any batch), then reset. A collective call under torchrun."""
        held, total = (float(v) for v in dist.all_reduce_sum(
            torch.tensor([self.sums["eq3"], float(self.total)], dtype=torch.float64)
        ))  # fmt: skip
        self.total, self.sums["eq3"] = 0, 0.0
        return held / total if total else float("nan")


def _probe_rows(embedding: Tensor, item_class: Tensor, limit: int = 4096) -> tuple[Tensor, Tensor]:
    """The validation items the embedding diagnostics measure (their cost is quadratic): every clip, or for
    frames (``embedding`` (n, T', D)) at most ``limit`` frames spread evenly over the split."""
    if embedding.dim() == 2:
        return embedding, item_class
    rows = item_rows(embedding)
    keep = torch.as_tensor(np.linspace(0, len(rows) - 1, min(limit, len(rows))).astype(np.int64))
    return rows[keep], item_class.reshape(-1)[keep.to(item_class.device)]


def _iteration_finished(ctx: RunContext, method: str, iteration: int, saved_clustering: Path | None) -> bool:
    """An earlier process of this run finished the iteration's stages and kept its clustering."""
    return (
        saved_clustering is not None and saved_clustering.exists()
        and stage_finished(ctx, method, "embedding-head", iteration)
        and stage_finished(ctx, method, "embedding", iteration)
    )  # fmt: skip


def _save_clustering(
    ctx: RunContext, path: Path | None, clustering: Clustering, record: dict[str, Any], seconds: float
) -> None:
    """An iteration's clustering and its diagnostics at clustering time, for a resume (:func:`_load_clustering`)."""
    save_resume_file(ctx, path, {
        "centroids": clustering.centroids.cpu(), "cluster_class": clustering.cluster_class.cpu(),
        "assignment": clustering.assignment.cpu(), "clusters_per_class": clustering.clusters_per_class.cpu(),
        "record": json.dumps(record, default=float), "cluster_seconds": seconds,
    })  # fmt: skip


def _load_clustering(path: Path) -> tuple[Clustering, dict[str, Any], float]:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    clustering = Clustering(
        saved["centroids"], saved["cluster_class"], saved["assignment"], saved["clusters_per_class"]
    )
    return clustering, json.loads(saved["record"]), float(saved["cluster_seconds"])


def learn_embedding(
    encoder: nn.Module,
    data: TrainingData,
    config: EmbeddingConfig,
    ctx: RunContext,
    *,
    method: str = "proposed",
    on_iteration: Callable[[EmbeddingIteration], None] | None = None,
) -> EmbeddingResult:
    """Algorithm 1, step 1: ``n_iter`` rounds of per-class clustering and triple-header CE training.

    Logs per epoch (method ``method``) the THCE loss on train and validation and the fraction of samples for
    which Eq. 3's ordering holds (validation samples are assigned to the own-class cluster with the largest
    ``h``). Records per iteration, at clustering and after training, how well the eval-mode validation embeddings
    separate classes (:func:`~thce.training.diagnostics.embedding_diagnostics`) and the same-clip cosine of two
    train-mode passes (:func:`~thce.training.diagnostics.same_clip_cosine`). ``on_iteration`` is called after
    each iteration with an :class:`EmbeddingIteration` (the toy example measures the embedding there).

    With frame targets (``data.frame_level``) the samples are output frames: each class's training frames are
    clustered (the K_c rule on frame counts) and Eq. 8 averages over a batch's frames.
    """
    device = ctx.device
    encoder.to(device)
    train_idx, val_idx = data.splits["train"], data.splits["val"]
    train_class = torch.as_tensor(data.item_class(train_idx), dtype=torch.long)  # (n,) clips or (n, T') frames
    val_class = torch.as_tensor(data.item_class(val_idx), dtype=torch.long, device=device).reshape(-1)
    probe_idx = val_idx[np.linspace(0, len(val_idx) - 1, min(64, len(val_idx))).astype(int)]
    calibration = calibration_indices(data)
    diagnostics: list[dict[str, Any]] = []
    for iteration in range(1, config.n_iter + 1):
        saved_clustering = resume_file(ctx, f"{method}-clustering-{iteration}")
        train_emb: Tensor | None = None
        val_emb: Tensor | None = None
        if _iteration_finished(ctx, method, iteration, saved_clustering):
            # both stages restore their result (the encoder's centring statistics too): the clustering (minutes of
            # k-means over every training frame) and its diagnostics are what the earlier process made of the same
            # encoder, read back instead of redone
            clustering, record, cluster_seconds = _load_clustering(saved_clustering)
        else:
            calibrate_centring(encoder, data, calibration, ctx)
            train_emb = embed(encoder, data, train_idx, ctx, f"{method} embed it {iteration}")
            start = time.perf_counter()
            clustering = cluster_per_class(
                item_rows(train_emb), train_class.reshape(-1), num_classes=data.num_classes, seed=seeds.derive_seed(ctx.seed, "kmeans", method, iteration),
                balanced=config.balanced_clusters, max_iter=config.kmeans_max_iter,
                max_clusters_per_class=config.max_clusters_per_class, dist=ctx.dist,
            )  # fmt: skip
            cluster_seconds = time.perf_counter() - start
            val_emb = embed(encoder, data, val_idx, ctx, f"{method} val")
            record = {
                "iteration": iteration,
                **cluster_diagnostics(clustering, item_rows(train_emb)),
                "at_clustering": {
                    **embedding_diagnostics(
                        *_probe_rows(val_emb, val_class), clustering.centroids, clustering.cluster_class, data.num_classes
                    ),
                    "same_clip_cosine": same_clip_cosine(encoder, data, probe_idx, ctx),
                },
            }  # fmt: skip
            _save_clustering(ctx, saved_clustering, clustering, record, cluster_seconds)
        assignment = clustering.assignment.reshape(train_class.shape).to(device)  # cluster of every item
        loss_fn = TripleHeaderCrossEntropy.from_centroids(
            clustering.centroids, clustering.cluster_class, alpha=config.alpha, beta_same=config.beta_same,
            beta_other=config.beta_other, weighted=config.cluster_weights, normalise_w=config.normalise_w,
            assignment=assignment if config.loss_normaliser == "fixed" else None,
        ).to(device)  # fmt: skip
        cluster_class = loss_fn.cluster_class
        tally = _Eq3Tally()
        last: dict[str, float] = {}
        latest_val: dict[str, Tensor | None] = {"embedding": val_emb}

        def step(h: Tensor, positions: np.ndarray, mix: tuple[Tensor, Tensor] | None = None) -> Tensor:
            k = assignment[positions]
            if k.dim() > 1:  # frames: each one an item of Eq. 8 (mixup is refused for frame-level runs)
                h, k = item_rows(h), k.reshape(-1)
            if mix is None or bool((mix[0] == 1).all()):
                tally.add(h, k, cluster_class)
                return loss_fn.loss_from_h(h, k)
            return loss_fn.mixed_loss_from_h(h, k, *mix)  # mixup in the embedding stage ("mix")

        def val_loss(recalibrate: bool = True) -> float:
            if recalibrate:  # the network as it is now, in eval mode (not needed while only W trains)
                calibrate_centring(encoder, data, calibration, ctx)
            with torch.no_grad():
                latest_val["embedding"] = embed(encoder, data, val_idx, ctx, f"{method} val")
                h_val = loss_fn.cluster_layer(item_rows(latest_val["embedding"]).to(device))
                k_val = assign_to_own_class(h_val, val_class, cluster_class)
                fractions = eq3_ordering(h_val, k_val, cluster_class)
                last.update(
                    eq3_train=tally.pop(ctx.dist), eq3_val=fractions["eq3"],
                    own_over_other_val=fractions["own_over_other"],
                )  # fmt: skip
                return loss_fn.loss_from_h(h_val, k_val).item()

        def stage(name: str, learner: Learner, clips: EpochData, epochs: int, validation: Validation) -> Stage:
            """A stage of this iteration, with Eq. 3's fractions logged every epoch and restored on resume."""
            selection = Selection(validation, extra=lambda: dict(last), on_restore=last.update)
            return Stage(method=method, name=name, learner=learner, data=clips,
                         schedule=Schedule(epochs, config.learning_rate), selection=selection, iteration=iteration)

        # Tune only the cluster layer (encoder frozen: its embeddings are computed once above; none when resumed
        # finished, as the stage then trains nothing).
        cached = train_emb.to(device) if train_emb is not None else None
        head_only = Learner(loss_fn, lambda p: step(loss_fn.cluster_layer(cached[p]), p))
        fit_stage(stage("embedding-head", head_only, EpochData(len(train_idx)), config.head_only_epochs,
                        lambda: val_loss(recalibrate=False)), ctx)  # fmt: skip
        # Then end to end with Eq. 8 (the last iteration trains longer).
        end_to_end = Learner(
            nn.ModuleList([encoder, loss_fn]), lambda p, x, mix=None: step(loss_fn.cluster_layer(encoder(x)), p, mix),
            data_parallel=True,
            batch_weight=None if loss_fn.reduction == "fixed" else _cluster_batch_weight(assignment, loss_fn.weights),
        )  # fmt: skip
        clips = training_clips(data, ctx, mixup=ctx.augment.mixup_in_embedding)
        epochs = config.last_epochs if iteration == config.n_iter else config.epochs
        fit_stage(stage("embedding", end_to_end, clips, epochs, val_loss), ctx)
        if latest_val["embedding"] is val_emb:  # no validation ran (stages resumed finished): embed once more
            latest_val["embedding"] = embed(encoder, data, val_idx, ctx, f"{method} val")
        record["after_training"] = {
            **dict(last),
            **embedding_diagnostics(
                *_probe_rows(latest_val["embedding"], val_class), loss_fn.cluster_layer.weight.detach(), cluster_class, data.num_classes
            ),
            "same_clip_cosine": same_clip_cosine(encoder, data, probe_idx, ctx),
        }  # fmt: skip
        diagnostics.append(record)
        if on_iteration is not None:
            layer = loss_fn.cluster_layer
            on_iteration(EmbeddingIteration(iteration, encoder, clustering, layer, record, cluster_seconds))
    return EmbeddingResult(encoder, clustering, diagnostics, loss_fn)


# ---------------------------------------------------------------------------------- Algorithm 1, step 2

#: ``(h, positions, mix) -> loss``: an extra loss of an end-to-end stage on the cluster-layer outputs ``h`` (B, K)
#: of the training clips at ``positions``; ``mix`` is the batch's mixup ``(lam, perm)`` or ``None``.
AuxiliaryLoss = Callable[[Tensor, np.ndarray, "tuple[Tensor, Tensor] | None"], Tensor]


def thce_auxiliary_loss(embedding: EmbeddingResult, weight: float) -> AuxiliaryLoss:
    """``weight`` x Eq. 8 of Algorithm 1's last iteration (its clustering, cluster weights, beta's and normaliser)
    on the training clips at ``positions``, each in the cluster that clustering gave it; on a mixup batch the
    mixed loss (each mixed clip counts as its two clips' clusters). ``proposed2_aux``'s auxiliary loss. Under
    torchrun it is exact with the default ``embedding.loss_normaliser = "fixed"`` (a per-clip mean over a fixed
    normaliser, like Eq. 2); with ``"batch"`` each rank divides by its own share's sum of weights."""
    loss_fn = embedding.loss_fn
    assignment = embedding.clustering.assignment

    def loss(h: Tensor, positions: np.ndarray, mix: tuple[Tensor, Tensor] | None = None) -> Tensor:
        k = assignment[torch.as_tensor(positions, dtype=torch.long)].to(h.device)
        value = loss_fn.loss_from_h(h, k) if mix is None else loss_fn.mixed_loss_from_h(h, k, *mix)
        return weight * value

    return loss


def _bce_weights(data: TrainingData, ctx: RunContext) -> Tensor | None:
    """Eq. 2's class weights raised to ``train.bce_weight_power`` (1: the paper's); ``None`` (Eq. 1) at power 0 and
    under ``train.balanced_sampling``, whose class-balanced draws already even out the classes (both together would
    correct the imbalance twice). Over frames the weights are large (an event class's frames are a few percent of
    all frames): a power below 1 tempers them."""
    power = ctx.train.bce_weight_power
    if ctx.train.balanced_sampling or power == 0.0:
        return None
    counts = data.class_counts("train")
    weights = bce_class_weights(counts[: data.num_events].tolist(), int(counts.sum()))
    return (weights if power == 1.0 else weights**power).to(ctx.device)


def _balanced_order(data: TrainingData, ctx: RunContext) -> Callable[[torch.Generator], np.ndarray] | None:
    """With ``train.balanced_sampling``: each epoch N class-balanced draws with replacement (background is a
    class); else ``None`` (a permutation)."""
    if not ctx.train.balanced_sampling:
        return None
    class_index = data.class_index[data.splits["train"]]
    return lambda generator: balanced_sampling_order(class_index, generator=generator).numpy()


def _bce_validation(model: EventDetector, data: TrainingData, weights: Tensor | None, ctx: RunContext) -> Validation:
    val_idx = data.splits["val"]
    targets = data.targets(val_idx).to(ctx.device)
    calibration = calibration_indices(data) if has_centring(model.encoder) else None

    def value() -> dict[str, float]:
        if calibration is not None:  # the kept epoch's state then holds statistics of its own network
            calibrate_centring(model.encoder, data, calibration, ctx)
        model.eval()
        with torch.no_grad():
            emb = embed(model.encoder, data, val_idx, ctx, "val").to(ctx.device)
            outputs = model.head(model.features_for_head(emb))
            loss = weighted_bce(outputs, targets, weights).item()
            return detection_validation(model.detection_scores(outputs).float().cpu().numpy(), data, loss)

    return value


def train_head_only(
    model: EventDetector, data: TrainingData, stage: DetectorConfig, ctx: RunContext, *, method: str
) -> float:
    """Train only ``model.head`` with Eq. 2 on frozen-encoder inputs; early stopping on ``stage.selection``.
    The head starts untrained, so its starting state is never kept. Returns the best validation criterion."""
    device = ctx.device
    model.to(device)
    weights = _bce_weights(data, ctx)
    with torch.no_grad():
        inputs = {
            split: model.features_for_head(embed(model.encoder, data, data.splits[split], ctx, f"{method} {split}").to(device))
            for split in ("train", "val")
        }
    targets = {split: data.targets(data.splits[split]).to(device) for split in ("train", "val")}

    def validation() -> dict[str, float]:
        model.head.eval()
        with torch.no_grad():
            outputs = model.head(inputs["val"])
            loss = weighted_bce(outputs, targets["val"], weights).item()
            return detection_validation(model.detection_scores(outputs).float().cpu().numpy(), data, loss)

    head = Learner(model.head, lambda p: weighted_bce(model.head(inputs["train"][p]), targets["train"][p], weights))
    return fit_stage(Stage(
        method=method, name="detector-head", learner=head,
        data=EpochData(len(inputs["train"]), epoch_order=_balanced_order(data, ctx)),
        schedule=Schedule(stage.head_only_max_epochs, stage.head_only_learning_rate, stage.patience),
        selection=Selection(validation, stage.head_only_criterion),
    ), ctx)  # fmt: skip


def train_end_to_end(
    model: EventDetector,
    data: TrainingData,
    stage: StageConfig,
    ctx: RunContext,
    *,
    method: str,
    start_trained: bool = False,
    auxiliary: AuxiliaryLoss | None = None,
    weighted: bool = True,
) -> float:
    """Train the whole model with Eq. 2 (on ``ctx.augment``-ed batches, targets mixed under mixup; a frame-level
    run's clips with events re-mixed every epoch under ``augment.remix_events``); early stopping
    on ``stage.selection``. ``start_trained``: the model comes from an earlier stage (Proposed2 from Proposed1), so
    keeping its starting state is allowed (and warned about). ``auxiliary``: a loss on the model's cluster-layer
    outputs added to Eq. 2 in training (validation and selection stay Eq. 2's); it needs a model with a cluster
    layer. ``weighted=False``: Eq. 1 (unweighted BCE) instead of Eq. 2. Returns the best validation criterion."""
    if auxiliary is not None and model.cluster_layer is None:
        raise ValueError(f"{method}: an auxiliary loss on the cluster layer needs a model that has one")
    device = ctx.device
    model.to(device)
    weights = _bce_weights(data, ctx) if weighted else None
    train_targets = data.targets(data.splits["train"]).to(device)
    clips = training_clips(data, ctx, epoch_order=_balanced_order(data, ctx))
    remixed = RemixedTraining(data, ctx, method) if ctx.augment.remix_events and data.frame_level else None
    if remixed is not None:  # events re-mixed into the training clips every epoch
        clips = replace(clips, load=remixed.load, on_epoch_start=remixed.start_epoch)

    def step(positions: np.ndarray, x: Tensor, mix: tuple[Tensor, Tensor] | None = None) -> Tensor:
        targets = train_targets[positions] if remixed is None else remixed.batch_targets(positions).to(device)
        if mix is not None:
            targets = mix_targets(targets, *mix)  # Eq. 2 is linear in the target: exactly the mixed loss
        if auxiliary is None:
            return weighted_bce(model(x), targets, weights)
        h = model.features_for_head(model.encoder(x))
        return weighted_bce(model.head(h), targets, weights) + auxiliary(h, positions, mix)

    selection = Selection(_bce_validation(model, data, weights, ctx), stage.selection, start_trained=start_trained)
    learner = Learner(model, step, data_parallel=True)
    return fit_stage(Stage(method=method, name="end-to-end", learner=learner, data=clips, schedule=stage.schedule(),
                           selection=selection), ctx)  # fmt: skip


def train_detector(
    model: EventDetector,
    data: TrainingData,
    stage: DetectorConfig,
    ctx: RunContext,
    *,
    end_to_end: bool,
    auxiliary: AuxiliaryLoss | None = None,
) -> dict[str, EventDetector]:
    """Algorithm 1, step 2, on ``model``: the learned encoder and cluster layer with an untrained sigmoid layer of L
    outputs. Head only (Proposed1), then end to end (Proposed2, starting from Proposed1). Returns
    ``{"proposed1": model}`` and, if ``end_to_end``, ``"proposed2"``; with ``auxiliary`` also ``"proposed2_aux"``:
    Proposed1 tuned end to end like Proposed2 with ``auxiliary`` added to its training loss."""
    train_head_only(model, data, stage, ctx, method="proposed1")
    models = {"proposed1": copy.deepcopy(model)}
    if end_to_end:
        train_end_to_end(model, data, stage, ctx, method="proposed2", start_trained=True)
        models["proposed2"] = model
    if auxiliary is not None:
        # its own dropout draws, whether or not Proposed2 trained before it (methods train independently)
        torch.manual_seed(seeds.derive_seed(ctx.seed, "proposed2_aux"))
        tuned = copy.deepcopy(models["proposed1"])
        train_end_to_end(tuned, data, stage, ctx, method="proposed2_aux", start_trained=True, auxiliary=auxiliary)
        models["proposed2_aux"] = tuned
    return models


def train_baseline(model: EventDetector, data: TrainingData, stage: StageConfig, ctx: RunContext) -> EventDetector:
    """The baseline on ``model`` (the encoder with a sigmoid layer on the embedding): end to end with Eq. 2."""
    train_end_to_end(model, data, stage, ctx, method="baseline")
    return model
