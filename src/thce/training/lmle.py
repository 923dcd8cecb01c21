"""LMLE's training (Huang, Li, Loy, Tang, CVPR 2016): per-class clustering, quintuplet tables rebuilt every
``rebuild_every`` epochs, the triple-header hinge on class-balanced anchors; then, on the learned embedding, a
sigmoid detector trained like Proposed1 and Proposed2. The loss, the quintuplets and our reading of the paper are
in :mod:`thce.losses.lmle`."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from thce import seeds
from thce.cluster import Clustering, assign_to_own_class, cluster_per_class
from thce.errors import ConfigError, DataError
from thce.losses import eq3_ordering
from thce.losses.lmle import (
    DEFAULT_MARGINS,
    NEGATIVE,
    P_MINUS,
    TripleHeaderHinge,
    check_margins,
    eq1_fraction,
    quintuplets,
)
from thce.models import EventDetector
from thce.sampling import balanced_sampling_order
from thce.training.algorithm1 import DetectorConfig, train_end_to_end, train_head_only
from thce.training.data import TrainingData, calibrate_centring, embed
from thce.training.engine import EpochData, Learner, RunContext, Schedule, Selection, Stage, fit_stage

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class LMLEConfig:
    """LMLE embedding learning.

    ``epochs``: end-to-end epochs in all; an epoch is as many anchors as training clips (batches of
    ``train.batch_size`` anchors, each with its up to four members, so up to 5x the encoder inputs of an epoch of
    the triple-header CE). Default 270 = Algorithm 1's 4 x 30 + 150 with the paper's settings.
    ``rebuild_every``: epochs between re-clustering and rebuilding the quintuplet table (the paper: every 5000
    iterations; default 30, the re-clustering period of Algorithm 1).
    ``margins``: (g1, g2, g3) of Eq. (2), on squared distances of unit vectors (range [0, 4]).
    ``candidate_fraction``: the fraction of the training set, drawn afresh at every rebuild, among which members
    are searched (the paper: a random half); 1.0 gives the hardest members of the whole set.
    ``class_balanced``: draw anchors class-balanced (the paper's resampling), else every clip once per epoch.
    ``balanced_clusters``, ``kmeans_max_iter``: as in ``[embedding]``, for the same clusters as the proposed method.
    ``chunk_size``: anchors per block of the distance matrix when building the table (memory ``chunk x I``).
    """

    epochs: int = 270
    rebuild_every: int = 30
    margins: tuple[float, float, float] = DEFAULT_MARGINS
    candidate_fraction: float = 0.5
    class_balanced: bool = True
    balanced_clusters: bool = True
    kmeans_max_iter: int = 100
    chunk_size: int = 4096

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"lmle.epochs: must be >= 0, got {self.epochs}")
        for name in ("rebuild_every", "kmeans_max_iter", "chunk_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"lmle.{name}: must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.candidate_fraction <= 1.0:
            raise ConfigError(f"lmle.candidate_fraction: must be in (0, 1], got {self.candidate_fraction}")
        try:
            check_margins(self.margins)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"lmle.margins: {error}") from None


@dataclass
class LMLEResult:
    """The learned LMLE embedding.

    Attributes:
        encoder: E, mapping (B, frames, mels) features to L2-normalised (B, D) embeddings (in the train split's
            feature normalisation, like every thce encoder).
        clustering: the last per-class clustering (of the training split, positions as in ``splits["train"]``).
        table: the last quintuplet table (N_train, 4) over training-split positions, ``-1`` for empty sets.
        diagnostics: one record per rebuild: cluster sizes, seconds per phase, empty-set counts, Eq. (1) fraction.

    There is no cluster layer (LMLE has none). To detect events on it, train a sigmoid layer on the embedding with
    :func:`train_lmle_detector`.
    """

    encoder: nn.Module
    clustering: Clustering
    table: Tensor
    diagnostics: list[dict[str, Any]]


def learn_embedding_lmle(
    encoder: nn.Module, data: TrainingData, config: LMLEConfig, ctx: RunContext, *, method: str = "lmle"
) -> LMLEResult:
    """Learn an embedding with LMLE (Huang et al. 2016): quintuplets and the triple-header hinge loss, Eq. (2).

    Every ``config.rebuild_every`` epochs (and before the first): embed the training split with the encoder in
    eval mode, cluster every class into K_c clusters (:func:`thce.cluster.cluster_per_class`, the same rule and
    code as the proposed method), draw the candidate subset and build the quintuplet table (:func:`quintuplets`).
    Then train the encoder end to end: each batch is ``train.batch_size`` anchors (class-balanced draw) whose
    quintuplet members are loaded alongside; every distinct clip of the batch passes the encoder once. An epoch's
    anchors are drawn with ``fit_stage``'s generator, which is checkpointed with the stage, so a run resumed with
    ``ctx.resume_dir`` draws the anchors an uninterrupted run would.

    Per epoch it logs (``ctx.log``, method ``method``, stage ``embedding``) the training loss, the validation loss
    (quintuplets among the validation clips, each assigned to its nearest own-class centroid, all of them
    candidates) and the fractions of Eq. 3 of the THCE paper measured against the centroids
    (``eq3_val``, ``own_over_other_val``), so that both methods' embeddings are judged by the same yardstick.

    Args:
        encoder: the network E; must end in an L2 normalisation (``LSTMEncoder``, ``CNNEncoder``, ...).
        data: training data; uses ``splits["train"]`` and, if present and non-empty, ``splits["val"]``.
        config: see :class:`LMLEConfig`.
        ctx: device, batch size, learning rate (Adam), seed, metrics log, progress callback.
        method: the name under which epochs are logged.

    Returns:
        :class:`LMLEResult`; ``result.encoder`` is ``encoder``, trained in place.
    """
    config.validate()
    device = ctx.device
    encoder.to(device)
    train_idx = np.asarray(data.splits["train"])
    if len(train_idx) == 0:
        raise DataError("learn_embedding_lmle: the train split is empty")
    val_idx = np.asarray(data.splits.get("val", np.array([], dtype=np.int64)))
    train_class = torch.as_tensor(data.class_index[train_idx], dtype=torch.long)
    val_class = torch.as_tensor(data.class_index[val_idx], dtype=torch.long, device=device)
    loss_fn = TripleHeaderHinge(config.margins)
    calibrate_centring(encoder, data, train_idx, ctx)
    n_train = len(train_idx)
    diagnostics: list[dict[str, Any]] = []
    state: dict[str, Any] = {}

    def train_step(positions: np.ndarray) -> Tensor:
        anchors = torch.as_tensor(positions, dtype=torch.long)  # fit_stage's epoch order: see ``anchor_order``
        rows = torch.cat([anchors.unsqueeze(1), state["table"][anchors]], dim=1)  # (b, 5) train positions
        needed, inverse = torch.unique(rows[rows >= 0], return_inverse=True)
        local = torch.full_like(rows, -1)
        local[rows >= 0] = inverse
        emb = encoder(data.load(train_idx[needed.numpy()]).to(device))
        return loss_fn(emb, local.to(device))

    def val_loss() -> float:
        if len(val_idx) == 0:
            return float("nan")
        with torch.no_grad():
            emb = embed(encoder, data, val_idx, ctx, f"{method} val").to(device)
            cos = emb @ state["centroids"].t()
            k_val = assign_to_own_class(cos, val_class, state["cluster_class"])
            fractions = eq3_ordering(cos, k_val, state["cluster_class"])
            state["extra"] = {"eq3_val": fractions["eq3"], "own_over_other_val": fractions["own_over_other"]}
            table = quintuplets(emb, val_class, k_val, chunk_size=config.chunk_size)
            rows = torch.cat([torch.arange(len(emb), device=device).unsqueeze(1), table], dim=1)
            return loss_fn(emb, rows).item()

    def anchor_order(generator: torch.Generator) -> np.ndarray:
        """An epoch's n_train anchors, class-balanced (:func:`thce.sampling.balanced_sampling_order`), drawn with
        fit_stage's generator, which it checkpoints with the stage: a resumed run draws the anchors an
        uninterrupted one would."""
        return balanced_sampling_order(train_class, generator=generator).numpy()

    rebuild_starts = list(range(0, max(config.epochs, 1), config.rebuild_every))
    for rebuild, start_epoch in enumerate(rebuild_starts, start=1):
        epochs_now = max(0, min(config.rebuild_every, config.epochs - start_epoch))
        t0 = time.perf_counter()
        train_emb = embed(encoder, data, train_idx, ctx, f"{method} embed {rebuild}")
        t1 = time.perf_counter()
        clustering = cluster_per_class(
            train_emb, train_class, num_classes=data.num_classes, seed=seeds.derive_seed(ctx.seed, "kmeans", method, rebuild),
            balanced=config.balanced_clusters, max_iter=config.kmeans_max_iter,
        )  # fmt: skip
        t2 = time.perf_counter()
        generator = ctx.generator("candidates", method, rebuild)
        candidates = None
        if config.candidate_fraction < 1.0:
            chosen = torch.randperm(n_train, generator=generator)[: max(1, round(config.candidate_fraction * n_train))]
            candidates = torch.zeros(n_train, dtype=torch.bool).index_fill_(0, chosen, True)
        emb_dev = train_emb.to(device)
        table = quintuplets(
            emb_dev, train_class.to(device), clustering.assignment.to(device),
            candidates=None if candidates is None else candidates.to(device), chunk_size=config.chunk_size,
        )  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t3 = time.perf_counter()
        state.update(
            table=table.cpu(),
            centroids=clustering.centroids.to(device),
            cluster_class=clustering.cluster_class.to(device),
            extra={},
        )
        sizes = clustering.sizes()
        record: dict[str, Any] = {
            "rebuild": rebuild,
            "start_epoch": start_epoch,
            "clusters": len(sizes),
            "cluster_size_min": int(sizes.min()),
            "cluster_size_max": int(sizes.max()),
            "candidates": n_train if candidates is None else int(candidates.sum()),
            "anchors_without_p_minus": int((table[:, P_MINUS] < 0).sum()),
            "anchors_without_negative": int((table[:, NEGATIVE] < 0).sum()),
            "eq1_fraction_at_rebuild": eq1_fraction(emb_dev, table),
            "seconds_embed": t1 - t0,
            "seconds_cluster": t2 - t1,
            "seconds_quintuplets": t3 - t2,
        }
        logger.info(
            "%s rebuild %d: %d clusters, table of %d anchors in %.2fs, Eq. 1 holds for %.3f",
            method, rebuild, len(sizes), n_train, t3 - t2, record["eq1_fraction_at_rebuild"],
        )  # fmt: skip
        t4 = time.perf_counter()
        fit_stage(Stage(
            method=method, name="embedding", learner=Learner(encoder, train_step),
            data=EpochData(n_train, epoch_order=anchor_order if config.class_balanced else None),
            schedule=Schedule(epochs_now), selection=Selection(val_loss, extra=lambda: dict(state["extra"])),
            iteration=rebuild,
        ), ctx)  # fmt: skip
        record["seconds_train"] = time.perf_counter() - t4
        record["epochs"] = epochs_now
        diagnostics.append(record)
    return LMLEResult(encoder=encoder, clustering=clustering, table=state["table"], diagnostics=diagnostics)


def train_lmle_detector(model: EventDetector, data: TrainingData, stage: DetectorConfig, ctx: RunContext) -> None:
    """The detector on LMLE's embedding, trained in place like Proposed1 then Proposed2 (the sigmoid layer of
    ``model`` alone, then end to end from there), both logged as method ``lmle``."""
    train_head_only(model, data, stage, ctx, method="lmle")
    train_end_to_end(model, data, stage, ctx, method="lmle", start_trained=True)
