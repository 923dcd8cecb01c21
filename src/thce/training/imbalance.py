"""The field's imbalance methods as training stages: each method's config (its ``[method]`` table, reference
defaults) builds its loss (:mod:`thce.losses.imbalance`), and :func:`train_with_imbalance_loss` trains the encoder
with it end to end, with the loss's head, sampler and schedule. The table of methods is in
:mod:`thce.losses.imbalance`; softmax methods treat background as one more class."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch

from thce.config_reader import read_table
from thce.errors import ConfigError
from thce.losses.imbalance import (
    CB_KINDS,
    FOCAL_REDUCTIONS,
    BinaryCrossEntropy,
    ClassBalancedLoss,
    ImbalanceLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    OversampledCrossEntropy,
    SigmoidFocalLoss,
    SoftTripleLoss,
    check_counts,
)
from thce.models import EventDetector
from thce.sampling import Counts, weighted_sampling_order
from thce.training.data import TrainingData, detection_validation, embed, feature_loader, make_augmenter
from thce.training.engine import RunContext, StageConfig, fit_stage

# ----------------------------------------------------------------------------------------------- configs


class LossConfig:
    """Base of the frozen config dataclasses: ``method`` name, ``validate``, ``build``, ``to_dict``."""

    method: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a bad value (the loss constructors repeat the checks as ValueError)."""

    def build(self, class_counts: Counts, *, embedding_dim: int | None = None) -> ImbalanceLoss:
        raise NotImplementedError  # pragma: no cover

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        return {"method": self.method, **values}


def _num_events(class_counts: Counts, who: str) -> int:
    return len(check_counts(class_counts, who=who, positive=False)) - 1


@dataclass(frozen=True)
class BCEConfig(LossConfig):
    """Unweighted BCE (the paper's Eq. 1); no parameters."""

    method: ClassVar[str] = "bce"

    def build(self, class_counts: Counts, *, embedding_dim: int | None = None) -> BinaryCrossEntropy:
        return BinaryCrossEntropy(_num_events(class_counts, "BCEConfig"))


@dataclass(frozen=True)
class FocalConfig(LossConfig):
    """Sigmoid focal loss (Lin et al. 2017): ``gamma`` 2, ``alpha`` 0.25 (None: no alpha), ``reduction``
    ``"positives"`` (sum / number of positives, the reference), ``"mean"`` or ``"sum"``."""

    method: ClassVar[str] = "focal"
    gamma: float = 2.0
    alpha: float | None = 0.25
    reduction: str = "positives"

    def validate(self) -> None:
        if self.gamma < 0:
            raise ConfigError(f"focal.gamma: must be >= 0, got {self.gamma}")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"focal.alpha: must be in [0, 1], got {self.alpha}")
        if self.reduction not in FOCAL_REDUCTIONS[:3]:
            raise ConfigError(f"focal.reduction: must be one of {FOCAL_REDUCTIONS[:3]}, got {self.reduction!r}")

    def build(self, class_counts: Counts, *, embedding_dim: int | None = None) -> SigmoidFocalLoss:
        self.validate()
        return SigmoidFocalLoss(
            _num_events(class_counts, "FocalConfig"), gamma=self.gamma, alpha=self.alpha, reduction=self.reduction
        )


@dataclass(frozen=True)
class ClassBalancedConfig(LossConfig):
    """Class-balanced loss (Cui et al. 2019): ``beta`` 0.9999, ``kind`` softmax / sigmoid / focal, ``gamma`` (focal
    only; reference code default 1.0)."""

    method: ClassVar[str] = "class_balanced"
    beta: float = 0.9999
    kind: str = "softmax"
    gamma: float = 1.0

    def validate(self) -> None:
        if not 0.0 <= self.beta < 1.0:
            raise ConfigError(f"class_balanced.beta: must be in [0, 1), got {self.beta}")
        if self.kind not in CB_KINDS:
            raise ConfigError(f"class_balanced.kind: must be one of {CB_KINDS}, got {self.kind!r}")
        if self.gamma < 0:
            raise ConfigError(f"class_balanced.gamma: must be >= 0, got {self.gamma}")

    def build(self, class_counts: Counts, *, embedding_dim: int | None = None) -> ClassBalancedLoss:
        self.validate()
        return ClassBalancedLoss(class_counts, beta=self.beta, kind=self.kind, gamma=self.gamma)


@dataclass(frozen=True)
class OversamplingConfig(LossConfig):
    """Class-balanced oversampling with plain cross-entropy; no parameters (use ``loss.sampling_weights``)."""

    method: ClassVar[str] = "oversampling"

    def build(self, class_counts: Counts, *, embedding_dim: int | None = None) -> OversampledCrossEntropy:
        return OversampledCrossEntropy(class_counts)


@dataclass(frozen=True)
class LogitAdjustedConfig(LossConfig):
    """Logit-adjusted loss (Menon et al. 2021): ``tau`` 1."""

    method: ClassVar[str] = "logit_adjusted"
    tau: float = 1.0

    def validate(self) -> None:
        if self.tau < 0:
            raise ConfigError(f"logit_adjusted.tau: must be >= 0, got {self.tau}")

    def build(self, class_counts: Counts, *, embedding_dim: int | None = None) -> LogitAdjustedLoss:
        self.validate()
        return LogitAdjustedLoss(class_counts, tau=self.tau)


@dataclass(frozen=True)
class LDAMConfig(LossConfig):
    """LDAM-DRW (Cao et al. 2019): ``max_margin`` 0.5, ``s`` 30, ``drw_epoch`` 160 (0-based; reference: of 200
    epochs, i.e. the last 20%; set it to ~0.8 x your epochs; None: never re-weight), ``drw_beta`` 0.9999."""

    method: ClassVar[str] = "ldam_drw"
    max_margin: float = 0.5
    s: float = 30.0
    drw_epoch: int | None = 160
    drw_beta: float = 0.9999

    def validate(self) -> None:
        if self.max_margin <= 0 or self.s <= 0:
            raise ConfigError(f"ldam_drw: max_margin and s must be > 0, got {self.max_margin}, {self.s}")
        if self.drw_epoch is not None and self.drw_epoch < 0:
            raise ConfigError(f"ldam_drw.drw_epoch: must be >= 0, got {self.drw_epoch}")
        if not 0.0 <= self.drw_beta < 1.0:
            raise ConfigError(f"ldam_drw.drw_beta: must be in [0, 1), got {self.drw_beta}")

    def build(self, class_counts: Counts, *, embedding_dim: int | None = None) -> LDAMLoss:
        self.validate()
        return LDAMLoss(
            class_counts, max_margin=self.max_margin, s=self.s, drw_epoch=self.drw_epoch, drw_beta=self.drw_beta
        )


@dataclass(frozen=True)
class SoftTripleConfig(LossConfig):
    """SoftTriple (Qian et al. 2019): ``centers_per_class`` 10, ``la`` 20, ``gamma`` 0.1, ``tau`` 0.2,
    ``margin`` 0.01. ``build`` needs ``embedding_dim``."""

    method: ClassVar[str] = "softtriple"
    centers_per_class: int = 10
    la: float = 20.0
    gamma: float = 0.1
    tau: float = 0.2
    margin: float = 0.01

    def validate(self) -> None:
        if self.centers_per_class < 1:
            raise ConfigError(f"softtriple.centers_per_class: must be >= 1, got {self.centers_per_class}")
        if self.la <= 0 or self.gamma <= 0 or self.tau < 0:
            raise ConfigError(f"softtriple: need la > 0, gamma > 0, tau >= 0; got {self.la}, {self.gamma}, {self.tau}")

    def build(self, class_counts: Counts, *, embedding_dim: int | None = None) -> SoftTripleLoss:
        self.validate()
        if embedding_dim is None:
            raise ValueError("SoftTripleConfig.build: embedding_dim is required (the loss owns its centres)")
        return SoftTripleLoss(
            class_counts, embedding_dim, centers_per_class=self.centers_per_class, la=self.la, gamma=self.gamma,
            tau=self.tau, margin=self.margin,
        )  # fmt: skip


LOSS_CONFIGS: dict[str, type[LossConfig]] = {
    cls.method: cls
    for cls in (
        BCEConfig,
        FocalConfig,
        ClassBalancedConfig,
        OversamplingConfig,
        LogitAdjustedConfig,
        LDAMConfig,
        SoftTripleConfig,
    )
}


def loss_config(method: str, **values: Any) -> LossConfig:
    """The config of ``method`` (a ``LOSS_CONFIGS`` key) with ``values`` overriding its defaults; validated.

    >>> loss_config("ldam_drw", drw_epoch=40)
    LDAMConfig(max_margin=0.5, s=30.0, drw_epoch=40, drw_beta=0.9999)
    """
    if method not in LOSS_CONFIGS:
        raise ConfigError(f"unknown imbalance method {method!r}; known: {', '.join(LOSS_CONFIGS)}")
    config = read_table(LOSS_CONFIGS[method], values, method)
    config.validate()
    return config


# ----------------------------------------------------------------------------------------------- training


def train_with_imbalance_loss(
    model: EventDetector, data: TrainingData, stage: StageConfig, ctx: RunContext, *, method: str
) -> EventDetector:
    """Train ``model`` (an encoder with the head its loss expects, the loss as ``model.scorer``) end to end with
    that loss and its sampler or schedule; early stopping on ``stage.selection``. Returns ``model``."""
    loss_fn = model.scorer
    if not isinstance(loss_fn, ImbalanceLoss):
        raise TypeError(f"model.scorer must be an ImbalanceLoss, got {type(loss_fn).__name__}")
    device = ctx.device
    model.to(device)
    train_idx, val_idx = data.splits["train"], data.splits["val"]
    train_class = torch.as_tensor(data.class_index[train_idx], dtype=torch.long, device=device)
    val_class = torch.as_tensor(data.class_index[val_idx], dtype=torch.long, device=device)
    weights = loss_fn.sampling_weights(data.class_index[train_idx])
    epoch_order = None
    if weights is not None:  # class-balanced oversampling: N draws with replacement per epoch

        def epoch_order(generator: torch.Generator) -> np.ndarray:
            return weighted_sampling_order(weights, generator=generator).numpy()

    def validation() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            emb = embed(model.encoder, data, val_idx, ctx, "val").to(device)
            outputs = model.head(emb)
            loss = loss_fn(outputs, val_class).item()
            return detection_validation(model.detection_scores(outputs).float().cpu().numpy(), data, loss)

    fit_stage(
        stage="end-to-end", method=method, module=model, parameters=list(model.parameters()),
        train_step=lambda p, x, mix=None: loss_fn(model(x), train_class[p]), load=feature_loader(data, train_idx),
        num_train=len(train_idx), val_loss=validation, epochs=stage.max_epochs, patience=stage.patience, ctx=ctx,
        epoch_order=epoch_order, on_epoch_start=loss_fn.set_epoch, learning_rate=stage.learning_rate,
        selection=stage.selection, augmenter=make_augmenter(data, ctx), mixup=False,  # mixup: BCE and THCE stages only
        data_parallel=True, batch_weight=lambda p: loss_fn.batch_weight(train_class[p]),
    )  # fmt: skip
    return model
