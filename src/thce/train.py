"""Training: Algorithm 1 of the paper (learn the embedding, then the detector) and the baseline.

- :func:`learn_embedding`: for ``n_iter`` iterations, cluster the training embeddings per class (K_c rule),
  initialise the cluster layer W from the centroids (times alpha), tune only W for ``head_only_epochs``, then train
  end to end for ``epochs`` (``last_epochs`` in the last iteration) with the weighted triple-header CE (Eq. 8).
- :func:`train_detector`: a sigmoid layer of L outputs on the cluster layer; head only with Eq. 2 (Proposed1),
  then end to end with Eq. 2 (Proposed2); each stage stops early on validation loss and keeps its best model.
- :func:`train_baseline`: the same encoder with a sigmoid layer on the embedding, end to end with Eq. 2.

Head-only stages run on embeddings computed once with the frozen encoder in eval mode (dropout off, batch-norm
statistics fixed): the result is the same as re-running the frozen encoder every epoch, minus dropout noise on the
input of the head, and it makes these stages nearly free.

Library code does not print: per-epoch records go to a :class:`MetricsLog` (``metrics.csv``) and to the logger,
per-batch progress to an optional ``progress(description, done, total)`` callback.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from thce import seeds
from thce.augment import AugmentConfig, BatchAugmenter, band_std_of, mix_targets, mixed_loss
from thce.cluster import Clustering, cluster_per_class
from thce.config import SELECTIONS, DetectorConfig, EmbeddingConfig, StageConfig, TrainConfig
from thce.distributed import SINGLE, Distributed
from thce.losses import (
    TripleHeaderCrossEntropy,
    bce_class_weights,
    eq3_ordering,
    eq3_terms,
    triple_header_ce,
    weighted_bce,
)
from thce.imbalance import ImbalanceLoss, balanced_sampling_order
from thce.metrics import per_class_auc, per_class_eer
from thce.io import atomic_write
from thce.models import ClusterLayer, DetectorHead, EmbeddingOutput, EventDetector, l2_normalise

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]


class FeatureArray(Protocol):
    """Anything indexable by an index array giving ``(n, frames, mels)`` features (FeatureStore, ndarray)."""

    def __getitem__(self, index: np.ndarray) -> np.ndarray: ...

    def __len__(self) -> int: ...


@dataclass
class TrainingData:
    """The clips a run trains and evaluates on.

    Attributes:
        features: (N, frames, mels) raw features, indexable by index arrays (memory-mapped cache or ndarray).
        class_index: (N,) class of each clip: ``0..L-1`` for the events in ``classes``, ``L`` for background.
        splits: split name (train/val/test) -> sorted clip indices.
        classes: the L event names, in output order.
        normalise: raw features -> normalised float32 (training-split mean and std); identity if ``None``.
    """

    features: FeatureArray
    class_index: np.ndarray
    splits: dict[str, np.ndarray]
    classes: tuple[str, ...]
    normalise: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def num_events(self) -> int:
        return len(self.classes)

    @property
    def num_classes(self) -> int:
        """Classes for clustering: the events plus background."""
        return len(self.classes) + 1

    def load(self, indices: np.ndarray) -> Tensor:
        """Normalised features of ``indices`` as float32 (n, frames, mels)."""
        order = np.argsort(indices, kind="stable")  # memory maps read fastest in file order
        raw = np.asarray(self.features[indices[order]])
        x = raw if self.normalise is None else self.normalise(raw)
        out = np.empty_like(x, dtype=np.float32)
        out[order] = x
        return torch.from_numpy(out)

    def targets(self, indices: np.ndarray) -> Tensor:
        """(n, L) multi-hot targets: one-hot for an event clip, all zeros for background."""
        classes = torch.as_tensor(self.class_index[indices], dtype=torch.long)
        return nn.functional.one_hot(classes, self.num_classes)[:, : self.num_events].float()

    def class_counts(self, split: str) -> np.ndarray:
        """(L + 1,) clips per class in ``split`` (background last)."""
        return np.bincount(self.class_index[self.splits[split]], minlength=self.num_classes)


class MetricsLog:
    """Per-epoch records appended to a CSV (flushed each row, so a killed run keeps what it logged)."""

    COLUMNS = (
        "method", "stage", "iteration", "epoch", "train_loss", "val_loss", "val_eer", "val_auc",
        "eq3_train", "eq3_val", "own_over_other_val", "seconds",
    )  # fmt: skip

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        #: ``"method/stage[/iteration]" -> epoch`` whose weights an early-stopped stage kept (0: its starting state)
        self.selected_epochs: dict[str, int] = {}
        #: model-selection warnings (a stage whose starting state beat every trained epoch on validation)
        self.warnings: list[dict[str, str]] = []
        if path is not None and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as handle:
                csv.writer(handle).writerow(self.COLUMNS)

    def write(self, **row: Any) -> None:
        unknown = set(row) - set(self.COLUMNS)
        if unknown:
            raise KeyError(f"MetricsLog: unknown columns {sorted(unknown)}")
        self.rows.append(row)
        logger.info(
            "%s/%s%s epoch=%s train=%.4f val=%s", row.get("method"), row.get("stage"),
            "" if row.get("iteration") in (None, "") else f" it={row['iteration']}", row.get("epoch"),
            row.get("train_loss", float("nan")), _fmt(row.get("val_loss")),
        )  # fmt: skip
        if self.path is not None:
            with self.path.open("a", newline="") as handle:
                csv.writer(handle).writerow([_fmt(row.get(c)) for c in self.COLUMNS])

    def select(self, method: str, stage: str, iteration: int | str, epoch: int) -> None:
        """Record that a stage kept the weights of ``epoch`` (Algorithm 1: the least validation loss)."""
        key = "/".join(str(part) for part in (method, stage, iteration) if str(part) != "")
        self.selected_epochs[key] = int(epoch)

    def warn(self, method: str, stage: str, iteration: int | str, message: str) -> None:
        """Record and log a warning about a stage's model selection (once per stage)."""
        key = "/".join(str(part) for part in (method, stage, iteration) if str(part) != "")
        self.warnings = [w for w in self.warnings if w["stage"] != key]
        self.warnings.append({"stage": key, "message": message})
        logger.warning("WARNING: %s", message)

    def drop_after(self, method: str, stage: str, iteration: int | str, epoch: int) -> None:
        """Forget the rows of one stage after ``epoch`` (a resumed stage logs those epochs again)."""

        def later(row: dict[str, Any]) -> bool:
            return (str(row.get("method")), str(row.get("stage")), str(row.get("iteration", ""))) == (
                method, stage, str(iteration)
            ) and int(row.get("epoch") or 0) > epoch

        self.rows = [row for row in self.rows if not later(row)]
        if self.path is not None and self.path.exists():
            with self.path.open(newline="") as handle:
                kept = [row for row in csv.DictReader(handle) if not later(row)]
            with atomic_write(self.path, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.COLUMNS)
                writer.writeheader()
                writer.writerows(kept)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


@dataclass
class RunContext:
    """What every stage needs besides its data: settings, seed, where to log, whom to tell about progress."""

    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    log: MetricsLog = field(default_factory=MetricsLog)
    progress: ProgressFn | None = None
    resume_dir: Path | None = None  # where fit_stage keeps per-stage state; None: no checkpoints
    dist: Distributed = SINGLE  # this process's place in a torchrun job (see thce.distributed)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training-batch augmentation (off by default)

    @property
    def device(self) -> torch.device:
        if self.dist.device.type == "cuda":
            return self.dist.device  # this rank's GPU
        if self.train.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.train.device)

    @property
    def global_batch_size(self) -> int:
        """Clips per optimisation step over all ranks (``train.batch_size`` per rank)."""
        return self.train.batch_size * self.dist.world_size

    def autocast(self) -> torch.autocast:
        """bfloat16 autocast of a training forward pass when ``train.precision = "bf16"`` (else a no-op)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.train.precision == "bf16")

    def generator(self, *names: str | int) -> torch.Generator:
        """The random stream ``names`` of this run (:func:`thce.seeds.generator`)."""
        return seeds.generator(self.seed, *names)


# ------------------------------------------------------------------------------------------ shared loops


def _chunks(n: int, size: int) -> Iterator[np.ndarray]:
    """Positions ``0..n-1`` in consecutive chunks of ``size``."""
    for start in range(0, n, size):
        yield np.arange(start, min(start + size, n))


@torch.no_grad()
def embed(encoder: nn.Module, data: TrainingData, indices: np.ndarray, ctx: RunContext, desc: str = "embed") -> Tensor:
    """Embeddings (n, D) of ``indices`` with the encoder in eval mode (the mode is restored afterwards).

    In a distributed job every rank embeds its share and the shares are gathered: all ranks return all rows."""
    was_training = encoder.training
    encoder.eval()
    mine = indices[ctx.dist.share(len(indices))]
    out = []
    batch = max(ctx.train.batch_size, 256)
    total = math.ceil(len(mine) / batch)
    for done, positions in enumerate(_chunks(len(mine), batch), start=1):
        out.append(encoder(data.load(mine[positions]).to(ctx.device)).float().cpu())
        if ctx.progress:
            ctx.progress(desc, done, total)
    encoder.train(was_training)
    local = torch.cat(out) if out else torch.empty(0, getattr(encoder, "embedding_dim", 0))
    return ctx.dist.gather_rows(local)


@torch.no_grad()
def calibrate_centring(encoder: nn.Module, data: TrainingData, indices: np.ndarray, ctx: RunContext) -> None:
    """Set the centring statistics (``model.center_embedding``) to the mean and variance, over ``indices``, of what
    the centring layer receives with the encoder in eval mode: the statistics eval mode uses are estimated on
    eval-mode inputs (no dropout, batch norms on their running statistics). Nothing else changes: no parameter or
    other buffer moves, the mode is restored, the global random state is untouched.

    Training calls it before every clustering and before every validation of a stage that trains the encoder
    (:func:`calibration_indices`), so clustering, validation, the head-only stages and scoring centre with the
    statistics of the network as it is: with statistics carried over from training (a batch norm's running
    averages of train-mode inputs, or statistics fixed at the last clustering), the encoder's output drifts away
    from them within a few epochs, and every eval-mode embedding collapses into one narrow cone (measured on the
    demo: mean within-class and between-class cosine 0.99 after training, against 0.05 and -0.02 right after a
    calibration). Before any calibration a fresh batch norm would centre nothing (running mean 0, variance 1).""" + "\n"
    layers = [m for m in encoder.modules() if isinstance(m, EmbeddingOutput) and m.center is not None]
    if not layers or not hasattr(encoder, "pre_output"):
        return
    was_training = encoder.training
    encoder.eval()
    batch = max(ctx.train.batch_size, 256)
    inputs = [encoder.pre_output(data.load(indices[positions]).to(ctx.device)).float().cpu() for positions in _chunks(len(indices), batch)]
    for layer in layers:
        layer.calibrate(inputs)
        layer.to(ctx.device)
    encoder.train(was_training)


def calibration_indices(data: TrainingData, limit: int = 256) -> np.ndarray:
    """The training clips the centring statistics are estimated on: all of them, or ``limit`` spread evenly."""
    train = data.splits["train"]
    if len(train) <= limit:
        return train
    return train[np.linspace(0, len(train) - 1, limit).astype(int)]


def _has_centring(encoder: nn.Module) -> bool:
    return any(isinstance(m, EmbeddingOutput) and m.center is not None for m in encoder.modules())


def _same_clip_cosine(encoder: nn.Module, data: TrainingData, indices: np.ndarray, ctx: RunContext) -> float:
    """Mean cosine between two train-mode embeddings of the same clip (two dropout masks, batch statistics where
    the encoder uses them): 1 means training sees what evaluation sees. Parameters, buffers (batch-norm running
    statistics) and the global random state are restored."""
    state = copy.deepcopy(encoder.state_dict())
    rng = torch.get_rng_state()
    was_training = encoder.training
    encoder.train()
    with torch.no_grad():
        x = data.load(indices).to(ctx.device)
        first, second = encoder(x).float(), encoder(x).float()
    encoder.load_state_dict(state)
    encoder.train(was_training)
    torch.set_rng_state(rng)
    return float(nn.functional.cosine_similarity(first, second, dim=1).mean())


def _balanced_accuracy(predicted: Tensor, truth: Tensor, num_classes: int) -> float:
    """Mean over the classes present in ``truth`` of the fraction predicted right (chance: 1 / classes)."""
    recalls = [float((predicted[truth == c] == c).float().mean()) for c in range(num_classes) if bool((truth == c).any())]
    return float(np.mean(recalls)) if recalls else float("nan")


def embedding_diagnostics(
    embeddings: Tensor, class_index: Tensor, centroids: Tensor, cluster_class: Tensor, num_classes: int
) -> dict[str, float]:
    """How well eval-mode embeddings (n, D) of clips of ``class_index`` (n,) separate classes, given cluster
    centroids (K, D) of classes ``cluster_class`` (K,). Accuracies are balanced (mean recall over classes), so a
    chance-level embedding scores ``1 / num_classes`` whatever the class ratio:

    - ``nearest_cluster_accuracy``: the clip's most similar centroid belongs to its class;
    - ``class_centroid_accuracy``: the most similar class centroid (normalised mean of the class's cluster
      centroids) is its class's;
    - ``one_nn_accuracy``: leave-one-out nearest neighbour among the clips;
    - ``mean_cos_within_class`` / ``mean_cos_between_classes``: mean cosine of pairs of distinct clips of one
      class / of two classes, each averaged per class first.
    """
    emb = l2_normalise(embeddings.float())
    cen = l2_normalise(centroids.float().to(emb.device))
    truth = class_index.to(emb.device)
    cluster_class = cluster_class.to(emb.device)
    nearest_cluster = cluster_class[(emb @ cen.t()).argmax(dim=1)]
    class_centroids = torch.stack([
        l2_normalise(cen[cluster_class == c].mean(dim=0)) if bool((cluster_class == c).any()) else torch.zeros_like(cen[0])
        for c in range(num_classes)
    ])  # fmt: skip
    nearest_class = (emb @ class_centroids.t()).argmax(dim=1)
    cos = emb @ emb.t()
    eye = torch.eye(len(emb), dtype=torch.bool, device=emb.device)
    nearest_clip = truth[cos.masked_fill(eye, float("-inf")).argmax(dim=1)] if len(emb) > 1 else truth
    same = truth.unsqueeze(0) == truth.unsqueeze(1)
    within, between = [], []
    for c in range(num_classes):
        rows = truth == c
        if not bool(rows.any()):
            continue
        pairs_same = same[rows] & ~eye[rows]
        if bool(pairs_same.any()):
            within.append(float(cos[rows][pairs_same].mean()))
        if bool((~same[rows]).any()):
            between.append(float(cos[rows][~same[rows]].mean()))
    return {
        "nearest_cluster_accuracy": _balanced_accuracy(nearest_cluster, truth, num_classes),
        "class_centroid_accuracy": _balanced_accuracy(nearest_class, truth, num_classes),
        "one_nn_accuracy": _balanced_accuracy(nearest_clip, truth, num_classes),
        "mean_cos_within_class": float(np.mean(within)) if within else float("nan"),
        "mean_cos_between_classes": float(np.mean(between)) if between else float("nan"),
    }


@torch.no_grad()
def predict_scores(model: EventDetector, data: TrainingData, indices: np.ndarray, ctx: RunContext) -> np.ndarray:
    """Detection scores (n, L): sigmoid outputs of ``model`` in eval mode."""
    model.eval()
    outputs = model.head(model.features_for_head(embed(model.encoder, data, indices, ctx, "score").to(ctx.device)))
    return model.detection_scores(outputs).cpu().numpy()


def _stage_path(ctx: RunContext, method: str, stage: str, iteration: int | str) -> Path | None:
    if ctx.resume_dir is None:
        return None
    name = "-".join(str(part) for part in (method, stage, iteration) if part != "")
    return ctx.resume_dir / f"{name}.pt"


def _save_stage(path: Path, payload: dict[str, Any]) -> None:
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)


class _Batches(torch.utils.data.Dataset):
    """Feature batches for a :class:`~torch.utils.data.DataLoader` with workers: item ``i`` = ``load(batches[i])``."""

    def __init__(self, batches: list[np.ndarray], load: Callable[[np.ndarray], Tensor]) -> None:
        self.batches, self.load = batches, load

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Tensor:
        return self.load(self.batches[i])


def _batch_inputs(
    batches: list[np.ndarray], load: Callable[[np.ndarray], Tensor] | None, ctx: RunContext
) -> Iterator[Tensor | None]:
    """The inputs of each batch on ``ctx.device``: ``None`` without ``load``; read in the loop, or ahead of it by
    ``train.loader_workers`` processes into page-locked memory (copied to the GPU without blocking)."""
    if load is None:
        yield from (None for _ in batches)
        return
    cuda = ctx.device.type == "cuda"
    pin = cuda and ctx.train.pin_memory
    if ctx.train.loader_workers == 0:
        for positions in batches:
            x = load(positions)
            yield (x.pin_memory() if pin else x).to(ctx.device, non_blocking=pin)
        return
    loader = torch.utils.data.DataLoader(
        _Batches(batches, load), batch_size=None, shuffle=False, num_workers=ctx.train.loader_workers,
        pin_memory=pin, multiprocessing_context="fork", prefetch_factor=2,
        generator=torch.Generator(),  # its worker seeds must not consume the global random state (dropout's)
    )  # fmt: skip
    for x in loader:
        yield x.to(ctx.device, non_blocking=pin)


def _rank_local_randomness(ctx: RunContext, *step: str | int) -> Any:
    """A context in which dropout draws differ between ranks, seeded from (seed, rank, ``step``) and leaving the
    global random state as it was, so that it advances the same way on every rank (replicated stages, resumption
    and the initialisation of later models stay in step)."""
    if not ctx.dist.enabled:
        return contextlib.nullcontext()
    seed = seeds.derive_seed(ctx.seed, "dropout", ctx.dist.rank, *step)
    devices = [ctx.device.index or 0] if ctx.device.type == "cuda" else []

    @contextlib.contextmanager
    def scope() -> Iterator[None]:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    return scope()


Validation = Callable[[], "float | dict[str, float]"]


def _criterion(values: dict[str, float], selection: str) -> float:
    """The number a stage minimises for model selection: validation loss, mean EER, or 1 - mean AUC."""
    if selection == "val_auc":
        return 1.0 - values["val_auc"]
    return values[selection]


def _warn_if_start_won(
    ctx: RunContext, method: str, stage: str, iteration: int | str, state: dict[str, Any], selection: str
) -> None:
    """Make it loud when a stage's starting state scored better on validation than every trained epoch."""
    best_epoch, best, initial = state.get("best_epoch"), state.get("best_loss"), state.get("initial")
    if best_epoch is None or initial is None or not math.isfinite(initial):
        return
    name = "/".join(str(part) for part in (method, stage, iteration) if str(part) != "")
    if best_epoch == 0:
        message = (
            f"{name} kept its starting state (epoch 0): no trained epoch improved {selection} "
            f"({initial:.4g} at the start)"
        )
    elif not state.get("start_trained") and initial <= best:
        message = (
            f"{name}: no trained epoch beat the UNTRAINED initialisation on {selection} (untrained {initial:.4g}, "
            f"best trained {best:.4g} at epoch {best_epoch}); epoch {best_epoch} is kept, but the model may not "
            "have learned anything"
        )
    else:
        return
    ctx.log.warn(method, stage, iteration, message)


def fit_stage(
    *,
    stage: str,
    method: str,
    module: nn.Module,
    parameters: list[nn.Parameter],
    train_step: Callable[..., Tensor],
    num_train: int,
    val_loss: Validation,
    epochs: int,
    patience: int | None,
    ctx: RunContext,
    iteration: int | str = "",
    extra: Callable[[], dict[str, float]] | None = None,
    epoch_order: Callable[[torch.Generator], np.ndarray] | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
    on_restore: Callable[[dict[str, float]], None] | None = None,
    load: Callable[[np.ndarray], Tensor] | None = None,
    data_parallel: bool = False,
    batch_weight: Callable[[np.ndarray], float] | None = None,
    selection: str = "val_loss",
    start_trained: bool = False,
    augmenter: BatchAugmenter | None = None,
    mixup: bool = True,
) -> float:
    """Adam over ``parameters`` for up to ``epochs`` epochs of ``train_step(positions) -> loss``.

    ``epoch_order(generator)`` gives an epoch's positions (default: a permutation of ``num_train``), e.g. a
    class-balanced draw with replacement; ``on_epoch_start(epoch)`` (0-based) runs before each epoch. With
    ``load(positions) -> (b, frames, mels)`` features, the step is ``train_step(positions, x)`` with ``x`` already
    on the device (read ahead by ``train.loader_workers`` processes if set). With an ``augmenter``
    (:class:`thce.augment.BatchAugmenter`, training batches only, its own generator saved with the stage), ``x`` is
    augmented and, if ``mixup``, mixed within the batch, and the step is ``train_step(positions, x, (lam, perm))``
    so that it can mix its targets. Forward passes run under :meth:`RunContext.autocast`.
    ``train.weight_decay`` > 0 makes the optimiser AdamW (decoupled weight decay).

    ``val_loss()`` returns the validation loss, or a dict with ``"val_loss"`` and optionally ``"val_eer"`` /
    ``"val_auc"`` (logged to metrics.csv). With ``patience``, the stage stops once the ``selection`` criterion
    (validation loss, mean EER, or mean AUC) has not improved for ``patience`` epochs, counted from the first
    trained epoch, and restores the state of ``module`` with the best criterion (which epoch goes to
    ``ctx.log.select``; returns that criterion). The starting state (epoch 0) is a candidate only when
    ``start_trained`` (e.g. Proposed2 starting from Proposed1): a stage starting from an untrained model never
    returns it. Either way, a starting state that scores better than every trained epoch is a warning in the log
    and in ``ctx.log.warnings`` (results.json and report.md).

    Distributed (``ctx.dist``): every rank draws the same order in global batches of ``train.batch_size`` per
    rank. With ``data_parallel`` (stages that run the encoder), ``module`` trains under DistributedDataParallel on
    each rank's share of a batch; the loss of a share, a mean weighted by ``batch_weight(positions)`` (default:
    the number of clips), is scaled by its share of the batch's weight, so the averaged gradient is exactly that of
    the global batch's loss. Without it, every rank runs the whole batch (cheap head-only stages). Validation
    values, and so early stopping, are rank 0's.

    With ``ctx.resume_dir``, the state after every epoch (weights, optimiser, best model so far, random generators)
    is saved atomically (by rank 0) to ``<resume_dir>/<method>-<stage>[-<iteration>].pt``; a later call with the
    same file continues after the last completed epoch, or, when the stage had finished, loads its result and
    returns at once, so a killed run ends as an uninterrupted one would. ``on_restore`` receives the ``extra()``
    values saved with it.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"fit_stage: selection must be one of {SELECTIONS}, got {selection!r}")
    dist = ctx.dist
    if ctx.train.weight_decay > 0:
        optimiser: torch.optim.Optimizer = torch.optim.AdamW(
            parameters, lr=ctx.train.learning_rate, weight_decay=ctx.train.weight_decay
        )
    else:
        optimiser = torch.optim.Adam(parameters, lr=ctx.train.learning_rate)
    stream = (method, stage, iteration)  # unique per stage, like its resume file
    generator = ctx.generator("order", *stream)
    # its own stream (the batch order is the same with augmentation on or off), one per rank (each augments its share)
    augment_generator = ctx.generator("augment", *stream, dist.rank) if augmenter is not None else None
    path = _stage_path(ctx, method, stage, iteration)
    saved = torch.load(path, map_location="cpu", weights_only=True) if path is not None and path.exists() else None
    dist.barrier()  # every rank has read the stage's state before rank 0 overwrites it

    def validate() -> dict[str, float]:
        value = val_loss()
        values = {"val_loss": value} if not isinstance(value, dict) else value
        return {k: dist.broadcast_float(float(v)) for k, v in values.items()}

    if saved is not None:
        module.load_state_dict(saved["module"])
        torch.set_rng_state(saved["torch_rng"])
        if on_restore is not None and saved["extra"]:
            on_restore(saved["extra"])
        ctx.log.drop_after(method, stage, iteration, saved["epoch"])
        logger.info("%s: resumed after epoch %d%s", path.name, saved["epoch"], " (finished)" if saved["done"] else "")
        if saved["done"]:
            if patience is not None and saved.get("best_epoch") is not None:  # None: saved before thce recorded it
                ctx.log.select(method, stage, iteration, saved["best_epoch"])
                _warn_if_start_won(ctx, method, stage, iteration, saved, selection)
            return saved["result"]
        optimiser.load_state_dict(saved["optimiser"])
        generator.set_state(saved["generator"])
        if augment_generator is not None and saved.get("augment_generator") is not None:
            augment_generator.set_state(saved["augment_generator"])
        first_epoch, best_loss, since_best, current = saved["epoch"] + 1, saved["best_loss"], saved["since_best"], saved["current"]
        best_state, best_epoch = saved["best_state"], saved.get("best_epoch")
        initial, best_trained = saved.get("initial", math.nan), saved.get("best_trained", best_loss)
    else:
        first_epoch, since_best, current, best_epoch = 1, 0, math.nan, None
        best_loss, best_state, initial, best_trained = math.inf, None, math.nan, math.inf
        if patience is not None:
            initial = _criterion(validate(), selection)
            if start_trained:
                best_loss, best_state, best_epoch = initial, copy.deepcopy(module.state_dict()), 0

    def checkpoint(epoch: int, done: bool, result: float = math.nan) -> None:
        if path is None or not dist.is_main:
            return
        _save_stage(path, {
            "epoch": epoch, "done": done, "result": result, "module": module.state_dict(),
            "optimiser": optimiser.state_dict(), "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "augment_generator": augment_generator.get_state() if augment_generator is not None else None,
            "best_loss": best_loss, "best_state": best_state, "best_epoch": best_epoch, "since_best": since_best,
            "current": current, "initial": initial, "best_trained": best_trained, "start_trained": start_trained, "extra": extra() if extra else {},
        })  # fmt: skip

    sharded = data_parallel and dist.enabled
    forward = dist.data_parallel(module) if sharded else None
    weigh = batch_weight or (lambda positions: float(len(positions)))
    smallest = 2 * dist.world_size if sharded else 2  # batch norm cannot train on a batch of one

    epoch = first_epoch - 1
    for epoch in range(first_epoch, epochs + 1):
        start = time.perf_counter()
        module.train()
        losses = []
        if on_epoch_start is not None:
            on_epoch_start(epoch - 1)
        if epoch_order is not None:
            order = epoch_order(generator)
        else:
            order = torch.randperm(num_train, generator=generator).numpy()
        size = ctx.global_batch_size
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        if len(batches) > 1 and len(batches[-1]) < smallest:
            batches[-2:] = [np.concatenate(batches[-2:])]
        steps = [dist.split(positions) for positions in batches] if sharded else batches
        for done, (positions, local, x) in enumerate(zip(batches, steps, _batch_inputs(steps, load, ctx)), start=1):
            args: tuple = (local,) if load is None else (local, x)
            if augmenter is not None and x is not None:
                augmenter.train()
                x = augmenter(x, augment_generator)
                x, lam, perm = augmenter.mixup(x, augment_generator, enabled=mixup)
                args = (local, x, (lam, perm))
            if sharded:
                with _rank_local_randomness(ctx, *stream, epoch, done), ctx.autocast():
                    loss = forward(lambda: train_step(*args))
                loss = loss * (weigh(local) / weigh(positions) * dist.world_size)
            else:
                with ctx.autocast():
                    loss = train_step(*args)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            if ctx.progress:
                ctx.progress(f"{method} {stage} {iteration} epoch {epoch}".replace("  ", " "), done, len(batches))
        train_loss = float(np.mean(losses)) if losses else float("nan")
        if sharded:  # the global batches' mean loss; rank 0's batch-norm statistics for evaluation
            train_loss = float(dist.all_reduce_sum(torch.tensor(train_loss, dtype=torch.float64))) / dist.world_size
            dist.broadcast_module(module, buffers_only=True)
        values = validate()
        current = _criterion(values, selection)
        ctx.log.write(
            method=method, stage=stage, iteration=iteration, epoch=epoch, train_loss=train_loss, **values,
            seconds=time.perf_counter() - start, **(extra() if extra else {}),
        )  # fmt: skip
        if patience is not None:
            if current < best_loss:
                best_loss, best_state, best_epoch = current, copy.deepcopy(module.state_dict()), epoch
            if current < best_trained:  # patience counts from the first trained epoch, not from the start
                best_trained, since_best = current, 0
            else:
                since_best += 1
        stop = patience is not None and since_best >= patience
        if not stop and epoch < epochs:
            checkpoint(epoch, done=False)
        if stop:
            break
    if best_state is not None:
        module.load_state_dict(best_state)
        if best_epoch is not None:
            ctx.log.select(method, stage, iteration, best_epoch)
            _warn_if_start_won(
                ctx, method, stage, iteration,
                {"best_epoch": best_epoch, "best_loss": best_loss, "initial": initial, "start_trained": start_trained},
                selection,
            )  # fmt: skip
    dist.broadcast_module(module)  # replicated stages too: rank 0's result is the result
    result = best_loss if patience is not None else current
    checkpoint(epoch, done=True, result=result)
    return result


# ---------------------------------------------------------------------------------- Algorithm 1, step 1


@dataclass
class EmbeddingResult:
    """The learned embedding: encoder E, the cluster layer W (Eq. 4) and per-iteration diagnostics."""

    encoder: nn.Module
    cluster_layer: ClusterLayer
    clustering: Clustering
    diagnostics: list[dict[str, Any]]


def assign_to_own_class(h: Tensor, class_index: Tensor, cluster_class: Tensor) -> Tensor:
    """For samples without a k-means assignment (validation): the own-class cluster with the largest ``h``.

    ``h`` (n, K), ``class_index`` (n,), ``cluster_class`` (K,) -> (n,) cluster indices.
    """
    same = cluster_class.unsqueeze(0) == class_index.unsqueeze(1)
    return h.masked_fill(~same, float("-inf")).argmax(dim=1)


def _cluster_diagnostics(clustering: Clustering, embeddings: Tensor) -> dict[str, Any]:
    """Cluster sizes per class and cosine to own centroid / nearest same-class / nearest other-class centroid."""
    sizes = clustering.sizes()
    cos = embeddings @ clustering.centroids.t()
    own = clustering.assignment
    cos_own, cos_same, has_same, cos_other, _ = eq3_terms(cos, own, clustering.cluster_class)
    per_class = {}
    for c in range(len(clustering.clusters_per_class)):
        s = sizes[clustering.cluster_class == c]
        per_class[c] = {"clusters": len(s), "min_size": int(s.min()), "max_size": int(s.max())}
    return {
        "clusters": int(len(sizes)),
        "sizes_per_class": per_class,
        # Eq. 3's three terms as cosines, averaged over the training split (same-class: classes with >= 2 clusters)
        "mean_cos_own_centroid": float(cos_own.mean()),
        "mean_cos_nearest_same_class": float(cos_same[has_same].mean()) if has_same.any() else float("nan"),
        "mean_cos_nearest_other_class": float(cos_other.mean()),
        "eq3_at_clustering": eq3_ordering(cos, own, clustering.cluster_class),
    }


def _loader(data: TrainingData, indices: np.ndarray) -> Callable[[np.ndarray], Tensor]:
    """Positions into ``indices`` -> their normalised features (what a training step reads)."""
    return lambda positions: data.load(indices[positions])


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
        n = len(cluster_index)
        self.sums["eq3"] += eq3_ordering(h.detach(), cluster_index, cluster_class)["eq3"] * n
        self.total += n

    def pop(self, dist: Distributed = SINGLE) -> float:
        """The epoch's fraction (NaN before any batch), then reset. A collective call under torchrun."""
        held, total = (float(v) for v in dist.all_reduce_sum(
            torch.tensor([self.sums["eq3"], float(self.total)], dtype=torch.float64)
        ))  # fmt: skip
        self.total, self.sums["eq3"] = 0, 0.0
        return held / total if total else float("nan")


def learn_embedding(
    encoder: nn.Module,
    data: TrainingData,
    config: EmbeddingConfig,
    ctx: RunContext,
    *,
    method: str = "proposed",
) -> EmbeddingResult:
    """Algorithm 1, step 1: ``n_iter`` rounds of per-class clustering and triple-header CE training.

    Logs per epoch the THCE loss on train and validation and the fraction of samples for which Eq. 3's ordering
    holds (validation samples are assigned to the own-class cluster with the largest ``h``). Records per
    iteration, at clustering and after training, how well the eval-mode validation embeddings separate classes
    (:func:`embedding_diagnostics`) and the same-clip cosine of two train-mode passes (``same_clip_cosine``).
    """
    device = ctx.device
    encoder.to(device)
    train_idx, val_idx = data.splits["train"], data.splits["val"]
    train_class = torch.as_tensor(data.class_index[train_idx], dtype=torch.long)
    val_class = torch.as_tensor(data.class_index[val_idx], dtype=torch.long, device=device)
    probe_idx = val_idx[np.linspace(0, len(val_idx) - 1, min(64, len(val_idx))).astype(int)]
    calibration = calibration_indices(data)
    diagnostics: list[dict[str, Any]] = []
    for iteration in range(1, config.n_iter + 1):
        calibrate_centring(encoder, data, calibration, ctx)
        train_emb = embed(encoder, data, train_idx, ctx, f"{method} embed it {iteration}")
        clustering = cluster_per_class(
            train_emb, train_class, num_classes=data.num_classes, seed=seeds.derive_seed(ctx.seed, "kmeans", method, iteration),
            balanced=config.balanced_clusters, max_iter=config.kmeans_max_iter, dist=ctx.dist,
        )  # fmt: skip
        val_emb = embed(encoder, data, val_idx, ctx, f"{method} val")
        record: dict[str, Any] = {
            "iteration": iteration,
            **_cluster_diagnostics(clustering, train_emb),
            "at_clustering": {
                **embedding_diagnostics(val_emb, val_class, clustering.centroids, clustering.cluster_class, data.num_classes),
                "same_clip_cosine": _same_clip_cosine(encoder, data, probe_idx, ctx),
            },
        }  # fmt: skip
        assignment = clustering.assignment.to(device)
        loss_fn = TripleHeaderCrossEntropy.from_centroids(
            clustering.centroids, clustering.cluster_class, alpha=config.alpha, beta_same=config.beta_same,
            beta_other=config.beta_other, weighted=config.cluster_weights, normalise_w=config.normalise_w,
            assignment=assignment if config.loss_normaliser == "fixed" else None,
        ).to(device)  # fmt: skip
        cluster_class = loss_fn.cluster_class
        tally = _Eq3Tally()
        last: dict[str, float] = {}
        latest_val: dict[str, Tensor] = {"embedding": val_emb}

        def step(h: Tensor, positions: np.ndarray, mix: tuple[Tensor, Tensor] | None = None) -> Tensor:
            k = assignment[positions]
            if mix is None or bool((mix[0] == 1).all()):
                tally.add(h, k, cluster_class)
                return loss_fn.loss_from_h(h, k)
            # mixup into the embedding stage ("mix"): each mixed clip counts as its two clips, weights lam, 1 - lam
            per_sample = lambda kk: triple_header_ce(  # noqa: E731
                h, kk, cluster_class, beta_same=loss_fn.beta_same, beta_other=loss_fn.beta_other, reduction="none"
            )
            weights = None if loss_fn.weights is None else loss_fn.weights[k]
            if loss_fn.reduction == "fixed":
                return mixed_loss(per_sample, k, *mix, weights=weights, reduction="sum") / (len(k) * loss_fn.mean_weight)
            return mixed_loss(per_sample, k, *mix, weights=weights, reduction="mean")

        def val_loss(recalibrate: bool = True) -> float:
            if recalibrate:  # the network as it is now, in eval mode (not needed while only W trains)
                calibrate_centring(encoder, data, calibration, ctx)
            with torch.no_grad():
                latest_val["embedding"] = embed(encoder, data, val_idx, ctx, f"{method} val")
                h_val = loss_fn.cluster_layer(latest_val["embedding"].to(device))
                k_val = assign_to_own_class(h_val, val_class, cluster_class)
                fractions = eq3_ordering(h_val, k_val, cluster_class)
                last.update(
                    eq3_train=tally.pop(ctx.dist), eq3_val=fractions["eq3"],
                    own_over_other_val=fractions["own_over_other"],
                )  # fmt: skip
                return loss_fn.loss_from_h(h_val, k_val).item()

        # Tune only the cluster layer (encoder frozen: its embeddings are computed once above).
        cached = train_emb.to(device)
        fit_stage(
            stage="embedding-head", method=method, module=loss_fn, parameters=list(loss_fn.parameters()),
            train_step=lambda p: step(loss_fn.cluster_layer(cached[p]), p), num_train=len(train_idx),
            val_loss=lambda: val_loss(recalibrate=False), epochs=config.head_only_epochs, patience=None, ctx=ctx,
            iteration=iteration, extra=lambda: dict(last), on_restore=last.update,
        )  # fmt: skip
        # Then end to end with Eq. 8 (the last iteration trains longer).
        fit_stage(
            stage="embedding", method=method, module=nn.ModuleList([encoder, loss_fn]),
            parameters=[*encoder.parameters(), *loss_fn.parameters()],
            train_step=lambda p, x, mix=None: step(loss_fn.cluster_layer(encoder(x)), p, mix), load=_loader(data, train_idx),
            num_train=len(train_idx), val_loss=val_loss,
            epochs=config.last_epochs if iteration == config.n_iter else config.epochs,
            patience=None, ctx=ctx, iteration=iteration, extra=lambda: dict(last),
            on_restore=last.update, data_parallel=True, augmenter=make_augmenter(data, ctx),
            mixup=ctx.augment.mixup_in_embedding,
            batch_weight=None if loss_fn.reduction == "fixed" else _cluster_batch_weight(assignment, loss_fn.weights),
        )  # fmt: skip
        if latest_val["embedding"] is val_emb:  # no validation ran (stages resumed finished): embed once more
            latest_val["embedding"] = embed(encoder, data, val_idx, ctx, f"{method} val")
        record["after_training"] = {
            **dict(last),
            **embedding_diagnostics(
                latest_val["embedding"], val_class, loss_fn.cluster_layer.weight.detach(), cluster_class, data.num_classes
            ),
            "same_clip_cosine": _same_clip_cosine(encoder, data, probe_idx, ctx),
        }  # fmt: skip
        diagnostics.append(record)
    return EmbeddingResult(encoder, loss_fn.cluster_layer, clustering, diagnostics)


# ---------------------------------------------------------------------------------- Algorithm 1, step 2


def _bce_weights(data: TrainingData, ctx: RunContext) -> Tensor | None:
    """Eq. 2's class weights; ``None`` (Eq. 1) under ``train.balanced_sampling``, whose class-balanced draws
    already even out the classes (both together would correct the imbalance twice)."""
    if ctx.train.balanced_sampling:
        return None
    counts = data.class_counts("train")
    return bce_class_weights(counts[: data.num_events].tolist(), int(counts.sum())).to(ctx.device)


def _balanced_order(data: TrainingData, ctx: RunContext) -> Callable[[torch.Generator], np.ndarray] | None:
    """With ``train.balanced_sampling``: each epoch N class-balanced draws with replacement (background is a
    class); else ``None`` (a permutation)."""
    if not ctx.train.balanced_sampling:
        return None
    class_index = data.class_index[data.splits["train"]]
    return lambda generator: balanced_sampling_order(class_index, generator=generator).numpy()


def detection_validation(scores: np.ndarray, data: TrainingData, loss: float) -> dict[str, float]:
    """Validation values of a detector: its loss and the mean over classes of the EER and ROC AUC of its
    validation ``scores`` (n_val, L)."""
    class_index = data.class_index[data.splits["val"]]
    return {
        "val_loss": loss,
        "val_eer": per_class_eer(scores=scores, class_index=class_index, classes=data.classes)["overall"],
        "val_auc": per_class_auc(scores=scores, class_index=class_index, classes=data.classes)["overall"],
    }


def _bce_validation(model: EventDetector, data: TrainingData, weights: Tensor | None, ctx: RunContext) -> Validation:
    val_idx = data.splits["val"]
    targets = data.targets(val_idx).to(ctx.device)
    calibration = calibration_indices(data) if _has_centring(model.encoder) else None

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

    return fit_stage(
        stage="detector-head", method=method, module=model.head, parameters=list(model.head.parameters()),
        train_step=lambda p: weighted_bce(model.head(inputs["train"][p]), targets["train"][p], weights),
        num_train=len(inputs["train"]), val_loss=validation, epochs=stage.head_only_max_epochs,
        patience=stage.patience, ctx=ctx, selection=stage.selection, epoch_order=_balanced_order(data, ctx),
    )  # fmt: skip


def train_end_to_end(
    model: EventDetector,
    data: TrainingData,
    stage: StageConfig,
    ctx: RunContext,
    *,
    method: str,
    start_trained: bool = False,
) -> float:
    """Train the whole model with Eq. 2 (on ``ctx.augment``-ed batches, targets mixed under mixup); early stopping
    on ``stage.selection``. ``start_trained``: the model
    comes from an earlier stage (Proposed2 from Proposed1), so keeping its starting state is allowed (and warned
    about). Returns the best validation criterion."""
    device = ctx.device
    model.to(device)
    weights = _bce_weights(data, ctx)
    train_idx = data.splits["train"]
    train_targets = data.targets(train_idx).to(device)

    def step(positions: np.ndarray, x: Tensor, mix: tuple[Tensor, Tensor] | None = None) -> Tensor:
        targets = train_targets[positions]
        if mix is not None:
            targets = mix_targets(targets, *mix)  # Eq. 2 is linear in the target: exactly the mixed loss
        return weighted_bce(model(x), targets, weights)

    return fit_stage(
        stage="end-to-end", method=method, module=model, parameters=list(model.parameters()),
        train_step=step, load=_loader(data, train_idx),
        num_train=len(train_idx), val_loss=_bce_validation(model, data, weights, ctx), epochs=stage.max_epochs,
        patience=stage.patience, ctx=ctx, data_parallel=True, selection=stage.selection,
        start_trained=start_trained, epoch_order=_balanced_order(data, ctx), augmenter=make_augmenter(data, ctx),
    )  # fmt: skip


def make_augmenter(data: TrainingData, ctx: RunContext) -> BatchAugmenter | None:
    """The training-batch augmenter of ``ctx.augment`` on ``ctx.device``, or ``None`` when everything is off."""
    if not ctx.augment.enabled:
        return None
    return BatchAugmenter(ctx.augment, band_std_of(data.normalise)).to(ctx.device)


def train_detector(
    embedding: EmbeddingResult,
    data: TrainingData,
    stage: DetectorConfig,
    ctx: RunContext,
    *,
    end_to_end: bool,
) -> dict[str, EventDetector]:
    """Algorithm 1, step 2: a sigmoid layer on the cluster layer; head only (Proposed1), then end to end
    (Proposed2, starting from Proposed1). Returns ``{"proposed1": model}`` and, if asked, ``"proposed2"``."""
    head = DetectorHead(embedding.cluster_layer.num_clusters, data.num_events)
    model = EventDetector(embedding.encoder, head, embedding.cluster_layer)
    train_head_only(model, data, stage, ctx, method="proposed1")
    models = {"proposed1": copy.deepcopy(model)}
    if end_to_end:
        train_end_to_end(model, data, stage, ctx, method="proposed2", start_trained=True)
        models["proposed2"] = model
    return models


def train_with_imbalance_loss(
    encoder: nn.Module, loss_fn: ImbalanceLoss, data: TrainingData, stage: StageConfig, ctx: RunContext, *, method: str
) -> EventDetector:
    """One of the field's imbalance methods (:mod:`thce.imbalance`): the same encoder with the head the loss
    expects, end to end with that loss (and its sampler or schedule), early stopping on validation loss."""
    device = ctx.device
    model = EventDetector(encoder, loss_fn.make_head(encoder.embedding_dim), scorer=loss_fn).to(device)
    train_idx, val_idx = data.splits["train"], data.splits["val"]
    train_class = torch.as_tensor(data.class_index[train_idx], dtype=torch.long, device=device)
    val_class = torch.as_tensor(data.class_index[val_idx], dtype=torch.long, device=device)
    weights = loss_fn.sampling_weights(data.class_index[train_idx])
    epoch_order = None
    if weights is not None:  # class-balanced oversampling: N draws with replacement per epoch

        def epoch_order(generator: torch.Generator) -> np.ndarray:
            return torch.multinomial(weights, len(weights), replacement=True, generator=generator).numpy()

    def validation() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            emb = embed(model.encoder, data, val_idx, ctx, "val").to(device)
            outputs = model.head(emb)
            loss = loss_fn(outputs, val_class).item()
            return detection_validation(model.detection_scores(outputs).float().cpu().numpy(), data, loss)

    fit_stage(
        stage="end-to-end", method=method, module=model, parameters=list(model.parameters()),
        train_step=lambda p, x, mix=None: loss_fn(model(x), train_class[p]), load=_loader(data, train_idx),
        num_train=len(train_idx), val_loss=validation, epochs=stage.max_epochs, patience=stage.patience, ctx=ctx,
        epoch_order=epoch_order, on_epoch_start=loss_fn.set_epoch,
        selection=stage.selection, augmenter=make_augmenter(data, ctx), mixup=False,  # mixup: BCE and THCE stages only
        data_parallel=True, batch_weight=lambda p: loss_fn.batch_weight(train_class[p]),
    )  # fmt: skip
    return model


def train_baseline(encoder: nn.Module, data: TrainingData, stage: StageConfig, ctx: RunContext) -> EventDetector:
    """The baseline: the same encoder with a sigmoid layer on the embedding, end to end with Eq. 2."""
    model = EventDetector(encoder, DetectorHead(encoder.embedding_dim, data.num_events))
    train_end_to_end(model, data, stage, ctx, method="baseline")
    return model
