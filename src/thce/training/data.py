"""The training view of a data set, and what passes a network over it: embeddings, centring calibration, scores.

:class:`TrainingData` is what every stage reads: features indexable by clip, each clip's class, the splits and the
training split's normaliser. :func:`embed` and :func:`predict_scores` run a network over clips in eval mode (in a
torchrun job each rank its share, gathered); :func:`calibrate_centring` re-estimates the centring statistics of an
encoder (``model.center_embedding``) on eval-mode inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from thce import seeds
from thce.augment import BatchAugmenter, band_std_of
from thce.data.remix import EventBank, remix
from thce.data.strong import frame_class
from thce.metrics import per_class_auc, per_class_eer
from thce.models import EmbeddingOutput, EventDetector
from thce.training.engine import EpochData, RunContext


class FeatureArray(Protocol):
    """Anything indexable by an index array giving ``(n, frames, mels)`` features (FeatureStore, ndarray)."""

    def __getitem__(self, index: np.ndarray) -> np.ndarray: ...

    def __len__(self) -> int: ...


@dataclass
class TrainingData:
    """The clips a run trains and evaluates on.

    The items a loss sees are the clips (the paper's setting), or, with ``frame_targets`` (strong labels), the
    output frames of every clip: targets, item classes and class counts are then per frame, and the encoder must
    give one embedding per output frame, ``(n, frames_out, D)``.

    Attributes:
        features: (N, frames, mels) raw features, indexable by index arrays (memory-mapped cache or ndarray).
        class_index: (N,) class of each clip: ``0..L-1`` for the events in ``classes``, ``L`` for background.
        splits: split name (train/val/test) -> sorted clip indices.
        classes: the L event names, in output order.
        normalise: raw features -> normalised float32 (training-split mean and std); identity if ``None``.
        frame_targets: (N, frames_out, L) 0/1 targets of every output frame (strong labels), or ``None``.
    """

    features: FeatureArray
    class_index: np.ndarray
    splits: dict[str, np.ndarray]
    classes: tuple[str, ...]
    normalise: Callable[[np.ndarray], np.ndarray] | None = None
    frame_targets: np.ndarray | None = None

    @property
    def frame_level(self) -> bool:
        """Whether the items are output frames (strong labels) rather than clips."""
        return self.frame_targets is not None

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
        """(n, L) multi-hot targets: one-hot for an event clip, all zeros for background; with frame targets
        (n, frames_out, L)."""
        if self.frame_targets is not None:
            return torch.from_numpy(np.asarray(self.frame_targets[indices], dtype=np.float32))
        classes = torch.as_tensor(self.class_index[indices], dtype=torch.long)
        return nn.functional.one_hot(classes, self.num_classes)[:, : self.num_events].float()

    def item_class(self, indices: np.ndarray) -> np.ndarray:
        """The class of every item of the clips ``indices``: (n,) for clips, (n, frames_out) for frames, with
        ``0..L-1`` an event and ``L`` background. A frame where events of several classes overlap counts as the
        first of them in ``classes`` (clustering needs one class per item; the BCE targets keep every class)."""
        if self.frame_targets is None:
            return self.class_index[indices]
        return frame_class(np.asarray(self.frame_targets[indices]))

    def class_counts(self, split: str) -> np.ndarray:
        """(L + 1,) items per class in ``split`` (background last): clips, or frames with frame targets."""
        return np.bincount(self.item_class(self.splits[split]).reshape(-1), minlength=self.num_classes)


def item_rows(x: Tensor) -> Tensor:
    """Items as rows: (n, D) stays, (n, frames_out, D) -> (n * frames_out, D)."""
    return x.reshape(-1, x.shape[-1])


def _chunks(n: int, size: int) -> Iterator[np.ndarray]:
    """Positions ``0..n-1`` in consecutive chunks of ``size``."""
    for start in range(0, n, size):
        yield np.arange(start, min(start + size, n))


#: Input frames per eval-mode pass: 256 clips of 10 s at a 10 ms hop. Activations grow with frames x clips (the
#: first conv block of a 30 s clip alone holds 16 x 3000 x 64 floats), so longer clips go fewer at a time.
EVAL_FRAMES = 256 * 1000


def eval_batch_size(data: TrainingData, ctx: RunContext) -> int:
    """Clips per eval-mode pass (embedding, calibration, scoring): ``EVAL_FRAMES`` input frames (256 clips of 10 s,
    85 of 30 s), never fewer than a training batch."""
    return max(ctx.train.batch_size, EVAL_FRAMES // max(int(data.features.shape[1]), 1))


@torch.no_grad()
def embed(encoder: nn.Module, data: TrainingData, indices: np.ndarray, ctx: RunContext, desc: str = "embed") -> Tensor:
    """Embeddings (n, D) of ``indices`` with the encoder in eval mode (the mode is restored afterwards).

    In a distributed job every rank embeds its share and the shares are gathered: all ranks return all rows."""
    was_training = encoder.training
    encoder.eval()
    mine = indices[ctx.dist.share(len(indices))]
    out = []
    batch = eval_batch_size(data, ctx)
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
    calibration). Before any calibration a fresh batch norm would centre nothing (running mean 0, variance 1)."""
    layers = [m for m in encoder.modules() if isinstance(m, EmbeddingOutput) and m.center is not None]
    if not layers or not hasattr(encoder, "pre_output"):
        return
    was_training = encoder.training
    encoder.eval()
    batch = eval_batch_size(data, ctx)
    inputs = [
        encoder.pre_output(data.load(indices[positions]).to(ctx.device)).float().cpu()
        for positions in _chunks(len(indices), batch)
    ]
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


def has_centring(encoder: nn.Module) -> bool:
    """Whether ``encoder`` centres its embedding (``model.center_embedding``), i.e. has statistics to calibrate."""
    return any(isinstance(m, EmbeddingOutput) and m.center is not None for m in encoder.modules())


@torch.no_grad()
def predict_scores(model: EventDetector, data: TrainingData, indices: np.ndarray, ctx: RunContext) -> np.ndarray:
    """Detection scores (n, L): sigmoid outputs of ``model`` in eval mode."""
    model.eval()
    outputs = model.head(model.features_for_head(embed(model.encoder, data, indices, ctx, "score").to(ctx.device)))
    return model.detection_scores(outputs).cpu().numpy()


def detection_validation(scores: np.ndarray, data: TrainingData, loss: float) -> dict[str, float]:
    """Validation values of a detector: its loss and the mean over classes of the EER and ROC AUC of its
    validation ``scores`` (n_val, L), or (n_val, frames_out, L) over every frame."""
    class_index = data.item_class(data.splits["val"]).reshape(-1)
    scores = scores.reshape(-1, scores.shape[-1])
    return {
        "val_loss": loss,
        "val_eer": per_class_eer(scores=scores, class_index=class_index, classes=data.classes)["overall"],
        "val_auc": per_class_auc(scores=scores, class_index=class_index, classes=data.classes)["overall"],
    }


def feature_loader(data: TrainingData, indices: np.ndarray) -> Callable[[np.ndarray], Tensor]:
    """Positions into ``indices`` -> their normalised features (what a training step reads)."""
    return lambda positions: data.load(indices[positions])


def make_augmenter(data: TrainingData, ctx: RunContext) -> BatchAugmenter | None:
    """The training-batch augmenter of ``ctx.augment`` on ``ctx.device``, or ``None`` when everything is off."""
    if not ctx.augment.enabled:
        return None
    return BatchAugmenter(ctx.augment, band_std_of(data.normalise)).to(ctx.device)


def training_clips(data: TrainingData, ctx: RunContext, **settings: Any) -> EpochData:
    """What an epoch of a stage that runs the encoder reads: the training split's normalised features, batch by
    batch, augmented as ``ctx.augment`` says; ``settings``: the rest of :class:`~thce.training.engine.EpochData`
    (``epoch_order``, ``on_epoch_start``, ``mixup``, or another ``load``)."""
    train = data.splits["train"]
    clips = EpochData(len(train), load=feature_loader(data, train), augmenter=make_augmenter(data, ctx))
    return replace(clips, **settings)


class RemixedTraining:
    """The training clips of a frame-level detector stage with events re-mixed every epoch (``augment.remix_events``,
    :func:`thce.data.remix.remix`): events cut from the training clips pasted into each training clip at random
    onsets and event-to-background ratios, the frame targets updated to match. Deterministic under the run's seed
    (each epoch's draw is named after the method and the epoch, so a resumed stage draws what it would have).

    Holds the training clips' raw features twice in float16 (as cached, and the epoch's remix): mind the memory on
    large data sets."""

    def __init__(self, data: TrainingData, ctx: RunContext, method: str) -> None:
        if data.frame_targets is None:
            raise ValueError("RemixedTraining: needs frame targets (a frame-level run)")
        self.data, self.ctx, self.method = data, ctx, method
        train = data.splits["train"]
        self.raw = np.asarray(data.features[train], dtype=np.float32)
        self.clean_targets = np.asarray(data.frame_targets[train])
        self.stride = self.raw.shape[1] // self.clean_targets.shape[1]
        self.bank = EventBank.from_clips(self.raw, self.clean_targets, frame_stride=self.stride)
        self.features = self.raw.astype(np.float16)
        self.targets = self.clean_targets

    def start_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s (0-based) remix of every training clip."""
        augment = self.ctx.augment
        rng = np.random.default_rng(seeds.derive_seed(self.ctx.seed, "remix", self.method, epoch))
        features, self.targets = remix(
            self.raw, self.clean_targets, self.bank, rng, ebr_db_range=tuple(augment.remix_ebr_db),
            frame_stride=self.stride, events_per_clip=augment.remix_events, band_shift=augment.remix_band_shift,
        )  # fmt: skip
        self.features = features.astype(np.float16)

    def load(self, positions: np.ndarray) -> Tensor:
        """Normalised features (n, frames, mels) of the training clips at ``positions`` in this epoch's remix."""
        x = self.features[positions].astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(x if self.data.normalise is None else self.data.normalise(x),
                                                     dtype=np.float32))  # fmt: skip

    def batch_targets(self, positions: np.ndarray) -> Tensor:
        """(n, frames_out, L) targets of the training clips at ``positions`` in this epoch's remix."""
        return torch.from_numpy(np.asarray(self.targets[positions], dtype=np.float32))
