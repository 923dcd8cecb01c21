"""The field's imbalance losses, each a loss on ``(outputs, targets)`` usable in one training step.

Every method is a small :class:`torch.nn.Module` (learnable weights inside when it has them) built from the
training split's class counts, directly or by its settings, the frozen dataclass beside it whose fields are the keys
of its ``[method]`` config table::

    counts = data.class_counts("train")                 # (L + 1,), background last
    loss_fn = LDAMLoss(counts, drw_epoch=40)             # or loss_config("ldam_drw", drw_epoch=40).build(counts)
    head = loss_fn.make_head(encoder.embedding_dim)      # nn.Linear, or the NormedLinear LDAM needs
    for epoch in range(epochs):
        loss_fn.set_epoch(epoch)                         # only LDAM-DRW uses it
        for x, class_index in batches:                   # class_index (B,) in [0, L]; L = background
            loss = loss_fn(head(encoder(x)), class_index)
    scores = loss_fn.scores(head(encoder(x_test)))       # (B, L) per-event detection scores in [0, 1]

**Targets.** A clip holds one event or none (the paper's setting), so targets are either class indices ``(B,)`` in
``[0, L]`` with ``L`` = background, or the ``(B, L)`` multi-hot rows of
:meth:`thce.training.engine.TrainingData.targets` (one 1 or none per row). Sigmoid methods (BCE, focal) have ``L``
outputs and background is the all-zero target; softmax methods treat background as one more class: ``C = L + 1``
outputs, background index ``L``.

**Scores.** :meth:`ImbalanceLoss.scores` turns outputs into ``(B, L)`` per-event scores for DET/EER: ``sigmoid`` of
the event outputs for sigmoid methods, the softmax probability of each event class (over all C classes, with the
logits the method predicts with: no logit adjustment, no LDAM margin) for softmax methods.

=================  ========================  ===========  ===========================================
method             class                     outputs      reference (defaults)
=================  ========================  ===========  ===========================================
``bce``            BinaryCrossEntropy        L, sigmoid   the paper's Eq. 1 (unweighted)
``focal``          SigmoidFocalLoss          L, sigmoid   Lin et al. 2017 (gamma 2, alpha 0.25)
``class_balanced`` ClassBalancedLoss         C, softmax   Cui et al. 2019 (beta 0.9999; softmax CE)
``oversampling``   OversampledCrossEntropy   C, softmax   Buda et al. 2018 / Kang et al. 2020 (sampler)
``logit_adjusted`` LogitAdjustedLoss         C, softmax   Menon et al. 2021 (tau 1)
``ldam_drw``       LDAMLoss                  C, cosine    Cao et al. 2019 (max margin 0.5, s 30, DRW)
``softtriple``     SoftTripleLoss            embedding    Qian et al. 2019 (K 10, la 20, gamma 0.1, ...)
=================  ========================  ===========  ===========================================

**Adding a loss** is this module only: its class (``method``, the name of its table and of its method in runs;
``description``, for the legend of tables; ``reference``), its settings beside it (a frozen :class:`LossConfig`
dataclass: ``loss``, one field per key with the reference default, ``validate``, ``build``) and one entry in
:data:`LOSS_CONFIGS`. :mod:`thce.methods` makes it a method (trained by :mod:`thce.training.imbalance` with
``[baseline]``'s stage settings) and :mod:`thce.config` reads its ``[method]`` table into its settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thce.config_reader import read_table
from thce.errors import ConfigError
from thce.sampling import Counts, balanced_sampling_weights

__all__ = [
    "BCEConfig",
    "BinaryCrossEntropy",
    "CB_KINDS",
    "ClassBalancedConfig",
    "ClassBalancedLoss",
    "FOCAL_REDUCTIONS",
    "FocalConfig",
    "ImbalanceLoss",
    "LDAMConfig",
    "LDAMLoss",
    "LOSS_CONFIGS",
    "LogitAdjustedConfig",
    "LogitAdjustedLoss",
    "LossConfig",
    "NormedLinear",
    "OversampledCrossEntropy",
    "OversamplingConfig",
    "SigmoidFocalLoss",
    "SoftTripleConfig",
    "SoftTripleLoss",
    "loss_config",
    "check_counts",
    "class_balanced_weights",
    "class_index_targets",
    "sigmoid_focal_terms",
]


# ---------------------------------------------------------------------------------------------- helpers


def check_counts(class_counts: Counts, *, who: str, positive: bool) -> Tensor:
    """Class counts (C,) as a float64 tensor, checked: C >= 2 (at least one event and background), non-negative
    integers, and with ``positive`` at least one sample per class. ``who`` names the caller in the error."""
    counts = torch.as_tensor(np.asarray(class_counts), dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() < 2:
        raise ValueError(
            f"{who}: class_counts must be a 1-D list of C >= 2 counts (L events, then background), "
            f"got shape {tuple(counts.shape)}"
        )
    if bool((counts != counts.round()).any()) or bool((counts < 0).any()):
        raise ValueError(f"{who}: class_counts must be non-negative integers, got {counts.tolist()}")
    if positive and bool((counts < 1).any()):
        raise ValueError(f"{who}: every class needs at least one training sample, got counts {counts.long().tolist()}")
    return counts


def class_index_targets(targets: Tensor, num_events: int) -> Tensor:
    """Targets as class indices ``(B,)`` in ``[0, L]`` (``L`` = background).

    Accepts class indices ``(B,)`` (integer dtype) or multi-hot rows ``(B, L)`` with one 1 or none per row.

    >>> class_index_targets(torch.tensor([[0., 1.], [0., 0.]]), 2).tolist()
    [1, 2]
    """
    if targets.ndim == 1:
        if targets.dtype.is_floating_point or targets.dtype == torch.bool:
            raise ValueError(f"class-index targets must be an integer tensor, got dtype {targets.dtype}")
        index = targets.long()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) > num_events):
            raise ValueError(
                f"class-index targets must lie in [0, {num_events}] ({num_events} = background), "
                f"got values in [{int(index.min())}, {int(index.max())}]"
            )
        return index
    if targets.ndim == 2:
        if targets.shape[1] != num_events:
            raise ValueError(f"multi-hot targets must be (B, L={num_events}), got {tuple(targets.shape)}")
        t = targets.float()
        if bool(((t != 0) & (t != 1)).any()) or bool((t.sum(dim=1) > 1).any()):
            raise ValueError("multi-hot targets must hold 0/1 with at most one 1 per row (one event or none per clip)")
        background = torch.full((t.shape[0],), num_events, dtype=torch.long, device=t.device)
        return torch.where(t.sum(dim=1) > 0, t.argmax(dim=1), background)
    raise ValueError(f"targets must be (B,) class indices or (B, L) multi-hot rows, got shape {tuple(targets.shape)}")


def class_balanced_weights(class_counts: Counts, beta: float = 0.9999) -> Tensor:
    """Cui et al. 2019, Eq. 1 and Sec. 4: ``w_c = (1 - beta) / (1 - beta^{n_c})``, normalised to sum to C.

    ``(1 - beta^n) / (1 - beta)`` is the *effective number* of samples of a class with n samples; beta = 0 gives
    equal weights, beta -> 1 inverse class frequency. Returns a float32 (C,) tensor.

    >>> class_balanced_weights([1, 1, 4], beta=0.0).tolist()
    [1.0, 1.0, 1.0]
    """
    counts = check_counts(class_counts, who="class_balanced_weights", positive=True)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"class_balanced_weights: beta must be in [0, 1), got {beta}")
    weights = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return (weights / weights.sum() * counts.numel()).to(torch.float32)


class NormedLinear(nn.Module):
    """Cosine classifier ``(B, D) -> (B, C)``: ``normalise(x) @ normalise(W)`` (Cao et al. 2019's reference
    ``NormedLinear``, used under LDAM): outputs are cosines in [-1, 1]; LDAM scales them by ``s``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        # The reference initialisation: uniform, each column renormalised to unit length.
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)


# ----------------------------------------------------------------------------------------------- base


class ImbalanceLoss(nn.Module):
    """Common interface: ``forward(outputs, targets) -> scalar``, ``scores(outputs) -> (B, L)``, ``make_head``,
    ``set_epoch`` and ``sampling_weights`` (both no-ops unless the method needs them).

    Attributes:
        method: registry name (``LOSS_CONFIGS`` key), its config table and its method in runs.
        description: what it is, for the legend under the EER table.
        reference: the paper the method follows.
        num_events: L.
        num_outputs: width of the outputs the loss expects (L for sigmoid methods, C = L + 1 for softmax ones).
    """

    method: ClassVar[str] = ""
    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""

    def __init__(self, num_events: int) -> None:
        super().__init__()
        if num_events < 1:
            raise ValueError(f"{type(self).__name__}: need at least one event class, got {num_events}")
        self.num_events = num_events

    @property
    def num_classes(self) -> int:
        """C = L + 1: the events and background."""
        return self.num_events + 1

    @property
    def num_outputs(self) -> int:
        return self.num_classes

    def make_head(self, in_features: int) -> nn.Module:
        """The output layer this loss expects on a ``(B, in_features)`` embedding."""
        return nn.Linear(in_features, self.num_outputs)

    def set_epoch(self, epoch: int) -> None:
        """Tell the loss which epoch (0-based) is about to be trained; only schedules (LDAM-DRW) use it."""

    def sampling_weights(self, class_index: Counts) -> Tensor | None:
        """Per-sample weights for a ``WeightedRandomSampler``, or ``None`` for plain shuffling."""
        return None

    def batch_weight(self, class_index: Tensor) -> float:
        """The denominator of this loss's batch mean for clips of classes ``class_index`` (B,): the number of
        clips unless the loss normalises otherwise. Data-parallel training uses it to combine the ranks' shares of
        a batch exactly (:func:`thce.training.engine.fit_stage`)."""
        return float(len(class_index))

    def scores(self, outputs: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Validate shapes; return class indices (B,)."""
        if outputs.ndim != 2 or outputs.shape[1] != self.num_outputs:
            raise ValueError(
                f"{type(self).__name__}: outputs must be (B, {self.num_outputs}), got {tuple(outputs.shape)}"
            )
        index = class_index_targets(targets, self.num_events).to(outputs.device)
        if index.shape[0] != outputs.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: {outputs.shape[0]} outputs but {index.shape[0]} targets"
            )
        return index

    def _check_scores_input(self, outputs: Tensor) -> None:
        if outputs.ndim != 2 or outputs.shape[1] != self.num_outputs:
            raise ValueError(
                f"{type(self).__name__}.scores: outputs must be (B, {self.num_outputs}), got {tuple(outputs.shape)}"
            )

    def extra_repr(self) -> str:
        return f"num_events={self.num_events}"


def _multi_hot(index: Tensor, num_events: int, dtype: torch.dtype) -> Tensor:
    """(B,) class indices -> (B, L) multi-hot; background (index L) is the all-zero row."""
    return F.one_hot(index, num_events + 1)[:, :num_events].to(dtype)


def _softmax_event_scores(logits: Tensor, num_events: int) -> Tensor:
    return torch.softmax(logits, dim=1)[:, :num_events]


class LossConfig:
    """Base of each loss's settings, a frozen dataclass beside its loss whose fields are the keys of the loss's
    ``[method]`` table: ``loss`` (the class it builds), ``validate``, ``build``, ``to_dict``."""

    loss: ClassVar[type[ImbalanceLoss]]

    def __post_init__(self) -> None:
        self.validate()

    @property
    def method(self) -> str:
        """The registry name of its loss (``focal``, ``ldam_drw``, ...): its table and its method in runs."""
        return self.loss.method

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a bad value (the loss constructors repeat the checks as ValueError)."""

    def build(self, class_counts: Counts, *, embedding_dim: int | None = None) -> ImbalanceLoss:
        raise NotImplementedError  # pragma: no cover

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        return {"method": self.method, **values}


def _num_events(class_counts: Counts, who: str) -> int:
    return len(check_counts(class_counts, who=who, positive=False)) - 1


# ----------------------------------------------------------------------------------------- sigmoid methods


class BinaryCrossEntropy(ImbalanceLoss):
    """The paper's Eq. 1, unweighted binary cross-entropy over L sigmoid outputs:
    ``-mean_{i,l} [t_il log y_il + (1 - t_il) log(1 - y_il)]``, ``y = sigmoid(logits)``.

    Outputs (B, L); background clips are the all-zero target. Scores: ``sigmoid(logits)``.
    """

    method = "bce"
    description = "unweighted BCE, Eq. 1"
    reference = "Eq. 1 of the paper (binary cross-entropy, no class weights)"

    @property
    def num_outputs(self) -> int:
        return self.num_events

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        index = self._check(logits, targets)
        return F.binary_cross_entropy_with_logits(logits, _multi_hot(index, self.num_events, logits.dtype))

    def scores(self, logits: Tensor) -> Tensor:
        self._check_scores_input(logits)
        return torch.sigmoid(logits)


@dataclass(frozen=True)
class BCEConfig(LossConfig):
    """Unweighted BCE (the paper's Eq. 1); no parameters."""

    loss: ClassVar[type[ImbalanceLoss]] = BinaryCrossEntropy

    def build(self, class_counts: Counts, *, embedding_dim: int | None = None) -> BinaryCrossEntropy:
        return BinaryCrossEntropy(_num_events(class_counts, "BCEConfig"))


FOCAL_REDUCTIONS = ("positives", "mean", "sum", "none")


def sigmoid_focal_terms(logits: Tensor, targets: Tensor, *, gamma: float, alpha: Tensor | float | None) -> Tensor:
    """Element-wise focal loss (Lin et al. 2017, Eq. 5): ``-alpha_t (1 - p_t)^gamma log p_t``.

    ``p = sigmoid(x)``, ``p_t = p`` for ``t = 1`` else ``1 - p``. The modulator is computed as
    ``exp(-gamma * softplus((2t - 1) x))`` (equal to ``(1 - p_t)^gamma`` for t in {0, 1}), stable in both
    value and gradient. ``alpha`` is a scalar (``alpha_t = alpha`` for positives, ``1 - alpha`` for negatives), a
    tensor broadcast against the terms (used as is), or ``None`` (no alpha).
    """
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    terms = ce if gamma == 0 else torch.exp(-gamma * F.softplus((2 * targets - 1) * logits)) * ce
    if alpha is None:
        return terms
    if isinstance(alpha, Tensor):
        return alpha * terms
    return (alpha * targets + (1 - alpha) * (1 - targets)) * terms


class SigmoidFocalLoss(ImbalanceLoss):
    """Focal loss, sigmoid form (Lin et al., "Focal loss for dense object detection", ICCV 2017, Eq. 5):
    ``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)`` on each of L sigmoid outputs (reference: gamma = 2,
    alpha = 0.25, which weights *positives* by 0.25 and negatives by 0.75).

    Reduction (reference): the sum over all B x L terms divided by the number of positive targets in the batch
    (Lin et al. normalise by the anchors assigned to an object), clamped at 1 so an all-background batch is just
    the sum. ``"mean"`` (over B x L, torchvision's option), ``"sum"`` and ``"none"`` are available.
    Outputs (B, L); scores ``sigmoid(logits)``.
    """

    method = "focal"
    description = "focal loss"
    reference = "Lin et al. 2017, Focal loss for dense object detection, Eq. 5"

    def __init__(
        self, num_events: int, *, gamma: float = 2.0, alpha: float | None = 0.25, reduction: str = "positives"
    ) -> None:
        super().__init__(num_events)
        if gamma < 0:
            raise ValueError(f"SigmoidFocalLoss: gamma must be >= 0, got {gamma}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"SigmoidFocalLoss: alpha must be in [0, 1] or None, got {alpha}")
        if reduction not in FOCAL_REDUCTIONS:
            raise ValueError(f"SigmoidFocalLoss: reduction must be one of {FOCAL_REDUCTIONS}, got {reduction!r}")
        self.gamma, self.alpha, self.reduction = gamma, alpha, reduction

    @property
    def num_outputs(self) -> int:
        return self.num_events

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        index = self._check(logits, targets)
        t = _multi_hot(index, self.num_events, logits.dtype)
        terms = sigmoid_focal_terms(logits, t, gamma=self.gamma, alpha=self.alpha)
        if self.reduction == "none":
            return terms
        if self.reduction == "mean":
            return terms.mean()
        if self.reduction == "sum":
            return terms.sum()
        return terms.sum() / t.sum().clamp_min(1.0)

    def batch_weight(self, class_index: Tensor) -> float:
        if self.reduction == "positives":  # per rank share the clamp at 1 makes it approximate
            return float(max(int((class_index < self.num_events).sum()), 1))
        if self.reduction == "sum":
            return 1.0  # a sum over the batch: the ranks' sums add up
        return super().batch_weight(class_index)

    def scores(self, logits: Tensor) -> Tensor:
        self._check_scores_input(logits)
        return torch.sigmoid(logits)

    def extra_repr(self) -> str:
        return f"num_events={self.num_events}, gamma={self.gamma}, alpha={self.alpha}, reduction={self.reduction!r}"


@dataclass(frozen=True)
class FocalConfig(LossConfig):
    """Sigmoid focal loss (Lin et al. 2017): ``gamma`` 2, ``alpha`` 0.25 (None: no alpha), ``reduction``
    ``"positives"`` (sum / number of positives, the reference), ``"mean"`` or ``"sum"``."""

    loss: ClassVar[type[ImbalanceLoss]] = SigmoidFocalLoss
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


# ----------------------------------------------------------------------------------------- softmax methods

CB_KINDS = ("softmax", "sigmoid", "focal")


class ClassBalancedLoss(ImbalanceLoss):
    """Class-balanced loss by the effective number of samples (Cui et al., CVPR 2019, Eqs. 1-2 and Sec. 4):
    the loss of a sample of class y is weighted by ``w_y = (1 - beta) / (1 - beta^{n_y})``, normalised so the C
    weights sum to C (:func:`class_balanced_weights`; reference beta = 0.9999 for CIFAR).

    ``kind`` picks the base loss, as in the reference code (``cifar_main.py``):

    - ``"softmax"`` (default): ``mean_i w_{y_i} CE(softmax(z_i), y_i)`` (TF's SUM_BY_NONZERO_WEIGHTS: divided by
      B, not by ``sum w``). Scores: softmax probability of each event class.
    - ``"sigmoid"``: ``sum_{i,j} w_{y_i} BCE(z_ij, onehot_ij) / B`` over all C outputs (background included).
    - ``"focal"``: the sigmoid focal loss with ``alpha_t`` replaced by ``w_{y_i}`` on all C outputs,
      ``/ B`` (reference gamma default 1.0). Scores (both sigmoid kinds): ``sigmoid`` of the L event outputs.

    Outputs (B, C = L + 1), background index L.
    """

    method = "class_balanced"
    description = "class-balanced loss (effective number of samples)"
    reference = "Cui et al. 2019, Class-balanced loss based on effective number of samples, Eq. 2"

    def __init__(
        self, class_counts: Counts, *, beta: float = 0.9999, kind: str = "softmax", gamma: float = 1.0
    ) -> None:
        counts = check_counts(class_counts, who="ClassBalancedLoss", positive=True)
        super().__init__(len(counts) - 1)
        if kind not in CB_KINDS:
            raise ValueError(f"ClassBalancedLoss: kind must be one of {CB_KINDS}, got {kind!r}")
        if gamma < 0:
            raise ValueError(f"ClassBalancedLoss: gamma must be >= 0, got {gamma}")
        self.beta, self.kind, self.gamma = beta, kind, gamma
        self.register_buffer("class_weights", class_balanced_weights(counts, beta))

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        index = self._check(logits, targets)
        w = self.class_weights.to(logits.dtype)[index]  # (B,) w_{y_i}
        if self.kind == "softmax":
            return (w * F.cross_entropy(logits, index, reduction="none")).mean()
        onehot = F.one_hot(index, self.num_classes).to(logits.dtype)
        gamma = self.gamma if self.kind == "focal" else 0.0
        terms = sigmoid_focal_terms(logits, onehot, gamma=gamma, alpha=w.unsqueeze(1))
        return terms.sum() / logits.shape[0]

    def scores(self, logits: Tensor) -> Tensor:
        self._check_scores_input(logits)
        if self.kind == "softmax":
            return _softmax_event_scores(logits, self.num_events)
        return torch.sigmoid(logits[:, : self.num_events])

    def extra_repr(self) -> str:
        return f"num_events={self.num_events}, beta={self.beta}, kind={self.kind!r}, gamma={self.gamma}"


@dataclass(frozen=True)
class ClassBalancedConfig(LossConfig):
    """Class-balanced loss (Cui et al. 2019): ``beta`` 0.9999, ``kind`` softmax / sigmoid / focal, ``gamma`` (focal
    only; reference code default 1.0)."""

    loss: ClassVar[type[ImbalanceLoss]] = ClassBalancedLoss
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


class OversampledCrossEntropy(ImbalanceLoss):
    """Class-balanced oversampling with plain softmax cross-entropy over C = L + 1 classes.

    Not a re-weighted loss but a sampler: every class is drawn with equal probability (Buda et al. 2018, "A
    systematic study of the class imbalance problem in CNNs", oversampling; Kang et al. 2020, "Decoupling
    representation and classifier", class-balanced sampling, ``p_j = n_j^q / sum n^q`` with q = 0).
    :meth:`sampling_weights` returns :func:`balanced_sampling_weights` for a ``WeightedRandomSampler`` with
    replacement; the loss is ``mean_i CE(softmax(z_i), y_i)``. Scores: softmax probability of each event class.
    """

    method = "oversampling"
    description = "class-balanced oversampling, softmax CE"
    reference = "Buda et al. 2018 / Kang et al. 2020, class-balanced sampling (q = 0) with cross-entropy"

    def __init__(self, class_counts: Counts) -> None:
        counts = check_counts(class_counts, who="OversampledCrossEntropy", positive=True)
        super().__init__(len(counts) - 1)

    def sampling_weights(self, class_index: Counts) -> Tensor:
        return balanced_sampling_weights(class_index, self.num_classes)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits, self._check(logits, targets))

    def scores(self, logits: Tensor) -> Tensor:
        self._check_scores_input(logits)
        return _softmax_event_scores(logits, self.num_events)


@dataclass(frozen=True)
class OversamplingConfig(LossConfig):
    """Class-balanced oversampling with plain cross-entropy; no parameters (use ``loss.sampling_weights``)."""

    loss: ClassVar[type[ImbalanceLoss]] = OversampledCrossEntropy

    def build(self, class_counts: Counts, *, embedding_dim: int | None = None) -> OversampledCrossEntropy:
        return OversampledCrossEntropy(class_counts)


class LogitAdjustedLoss(ImbalanceLoss):
    """Logit-adjusted softmax cross-entropy (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021,
    Eq. 10): ``CE(softmax(z + tau * log pi), y)`` with ``pi`` the training-split class priors (reference tau = 1).

    The adjustment is applied in training only; :meth:`scores` uses the raw logits ``z`` (softmax probability of
    each event class), which is what makes the learned classifier balanced. Outputs (B, C = L + 1).
    """

    method = "logit_adjusted"
    description = "logit-adjusted softmax CE"
    reference = "Menon et al. 2021, Long-tail learning via logit adjustment, Eq. 10"

    def __init__(self, class_counts: Counts, *, tau: float = 1.0) -> None:
        counts = check_counts(class_counts, who="LogitAdjustedLoss", positive=True)
        super().__init__(len(counts) - 1)
        self.tau = tau
        self.register_buffer("log_prior", torch.log(counts / counts.sum()).to(torch.float32))

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        index = self._check(logits, targets)
        return F.cross_entropy(logits + self.tau * self.log_prior.to(logits.dtype), index)

    def scores(self, logits: Tensor) -> Tensor:
        self._check_scores_input(logits)
        return _softmax_event_scores(logits, self.num_events)

    def extra_repr(self) -> str:
        return f"num_events={self.num_events}, tau={self.tau}"


@dataclass(frozen=True)
class LogitAdjustedConfig(LossConfig):
    """Logit-adjusted loss (Menon et al. 2021): ``tau`` 1."""

    loss: ClassVar[type[ImbalanceLoss]] = LogitAdjustedLoss
    tau: float = 1.0

    def validate(self) -> None:
        if self.tau < 0:
            raise ConfigError(f"logit_adjusted.tau: must be >= 0, got {self.tau}")

    def build(self, class_counts: Counts, *, embedding_dim: int | None = None) -> LogitAdjustedLoss:
        self.validate()
        return LogitAdjustedLoss(class_counts, tau=self.tau)


class LDAMLoss(ImbalanceLoss):
    """Label-distribution-aware margin loss with deferred re-weighting (Cao et al., NeurIPS 2019, Eq. 13 and
    Algorithm 1).

    ``L = CE(s * (z - m_y e_y), y, weight)`` with per-class margins ``m_j = C' / n_j^{1/4}``, ``C'`` chosen so the
    largest margin is ``max_margin`` (reference 0.5), scale ``s = 30``. As in the reference implementation
    (kaidic/LDAM-DRW), the logits ``z`` are *cosines*: the last layer is a :class:`NormedLinear` (normalised
    features times normalised weights), which :meth:`make_head` returns; the loss checks that ``|z| <= 1``.

    DRW: before ``drw_epoch`` (0-based, reference 160 of 200 epochs) no class weights; from then on the
    class-balanced weights of Cui et al. with ``drw_beta = 0.9999`` (normalised to sum to C), applied like
    ``F.cross_entropy(weight=...)`` (weighted mean, divided by ``sum_i w_{y_i}``). Call :meth:`set_epoch` before
    each epoch. Scores: softmax of ``s * z`` (no margin) for each event class. Outputs (B, C = L + 1).
    """

    method = "ldam_drw"
    description = "label-distribution-aware margin loss, deferred re-weighting"
    reference = "Cao et al. 2019, Learning imbalanced datasets with label-distribution-aware margin loss, Eq. 13, DRW"

    def __init__(
        self,
        class_counts: Counts,
        *,
        max_margin: float = 0.5,
        s: float = 30.0,
        drw_epoch: int | None = 160,
        drw_beta: float = 0.9999,
    ) -> None:
        counts = check_counts(class_counts, who="LDAMLoss", positive=True)
        super().__init__(len(counts) - 1)
        if max_margin <= 0 or s <= 0:
            raise ValueError(f"LDAMLoss: max_margin and s must be > 0, got {max_margin}, {s}")
        if drw_epoch is not None and drw_epoch < 0:
            raise ValueError(f"LDAMLoss: drw_epoch must be >= 0 or None, got {drw_epoch}")
        self.max_margin, self.s, self.drw_epoch, self.drw_beta = max_margin, s, drw_epoch, drw_beta
        margins = counts.pow(-0.25)
        self.register_buffer("margins", (margins * (max_margin / margins.max())).to(torch.float32))
        self.register_buffer("drw_weights", class_balanced_weights(counts, drw_beta))
        self.epoch = 0

    @property
    def reweighting(self) -> bool:
        """Whether the deferred re-weighting is active at the current epoch."""
        return self.drw_epoch is not None and self.epoch >= self.drw_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def make_head(self, in_features: int) -> nn.Module:
        return NormedLinear(in_features, self.num_outputs)

    def forward(self, cosines: Tensor, targets: Tensor) -> Tensor:
        index = self._check(cosines, targets)
        if cosines.numel() and float(cosines.detach().abs().max()) > 1.0 + 1e-3:
            raise ValueError("LDAMLoss expects cosine logits in [-1, 1]; use its make_head() (a NormedLinear)")
        margin = self.margins.to(cosines.dtype)[index]  # (B,) m_{y_i}
        adjusted = cosines - F.one_hot(index, self.num_classes).to(cosines.dtype) * margin.unsqueeze(1)
        weight = self.drw_weights.to(cosines.dtype) if self.reweighting else None
        return F.cross_entropy(self.s * adjusted, index, weight=weight)

    def batch_weight(self, class_index: Tensor) -> float:
        if self.reweighting:  # F.cross_entropy(weight=...) divides by sum_i w_{y_i}
            return float(self.drw_weights[class_index.to(self.drw_weights.device)].sum())
        return super().batch_weight(class_index)

    def scores(self, cosines: Tensor) -> Tensor:
        self._check_scores_input(cosines)
        return _softmax_event_scores(self.s * cosines, self.num_events)

    def extra_repr(self) -> str:
        return (
            f"num_events={self.num_events}, max_margin={self.max_margin}, s={self.s}, "
            f"drw_epoch={self.drw_epoch}, drw_beta={self.drw_beta}, epoch={self.epoch}"
        )


@dataclass(frozen=True)
class LDAMConfig(LossConfig):
    """LDAM-DRW (Cao et al. 2019): ``max_margin`` 0.5, ``s`` 30, ``drw_epoch`` 160 (0-based; reference: of 200
    epochs, i.e. the last 20%; set it to ~0.8 x your epochs; None: never re-weight), ``drw_beta`` 0.9999."""

    loss: ClassVar[type[ImbalanceLoss]] = LDAMLoss
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


# ----------------------------------------------------------------------------------------- embedding method


class SoftTripleLoss(ImbalanceLoss):
    """SoftTriple loss (Qian et al., "SoftTriple loss: deep metric learning without triplet sampling", ICCV 2019,
    Eqs. 5-8), a multi-centre cosine loss for embedding methods; owns its K centres per class.

    For an L2-normalised embedding x (normalised here too) and unit centres ``w_c^k``:

    - relaxed class similarity ``S_c = sum_k softmax_k(x.w_c^k / gamma) x.w_c^k`` (Eq. 5-6),
    - ``loss = CE(la * (S - delta e_y), y) + tau * R`` (Eq. 8), where the regulariser (Eq. 7 as in the reference
      code) is ``R = sum_c sum_{k<k'} sqrt(2 + 1e-5 - 2 w_c^k.w_c^k') / (C K (K - 1))``.

    Reference defaults: K = 10, la = 20, gamma = 0.1, tau = 0.2, delta (margin) = 0.01; centres initialised with
    ``kaiming_uniform_(a=sqrt(5))`` as in the reference. The "outputs" this loss takes are embeddings (B, D):
    :meth:`make_head` is the identity. Scores: ``softmax(la * S)`` for each event class.
    """

    method = "softtriple"
    description = "SoftTriple loss"
    reference = "Qian et al. 2019, SoftTriple loss: deep metric learning without triplet sampling, Eq. 8"

    def __init__(
        self,
        class_counts: Counts,
        embedding_dim: int,
        *,
        centers_per_class: int = 10,
        la: float = 20.0,
        gamma: float = 0.1,
        tau: float = 0.2,
        margin: float = 0.01,
    ) -> None:
        counts = check_counts(class_counts, who="SoftTripleLoss", positive=False)
        super().__init__(len(counts) - 1)
        if embedding_dim < 1 or centers_per_class < 1:
            raise ValueError(
                "SoftTripleLoss: embedding_dim and centers_per_class must be >= 1, "
                f"got {embedding_dim}, {centers_per_class}"
            )
        if la <= 0 or gamma <= 0 or tau < 0:
            raise ValueError(f"SoftTripleLoss: need la > 0, gamma > 0, tau >= 0; got {la}, {gamma}, {tau}")
        self.embedding_dim, self.K = embedding_dim, centers_per_class
        self.la, self.gamma, self.tau, self.margin = la, gamma, tau, margin
        # Column c * K + k is centre k of class c (the reference layout).
        self.centers = nn.Parameter(torch.empty(embedding_dim, self.num_classes * centers_per_class))
        nn.init.kaiming_uniform_(self.centers, a=math.sqrt(5))

    @property
    def num_outputs(self) -> int:
        return self.embedding_dim

    def make_head(self, in_features: int) -> nn.Module:
        if in_features != self.embedding_dim:
            raise ValueError(f"SoftTripleLoss was built for embedding_dim={self.embedding_dim}, got {in_features}")
        return nn.Identity()

    def class_similarity(self, embedding: Tensor) -> Tensor:
        """``(B, D)`` embeddings -> ``(B, C)`` relaxed similarities ``S_c`` (Eq. 6), each in [-1, 1]."""
        centers = F.normalize(self.centers, dim=0)
        sim = (F.normalize(embedding, dim=1) @ centers).reshape(-1, self.num_classes, self.K)
        prob = torch.softmax(sim / self.gamma, dim=2)
        return (prob * sim).sum(dim=2)

    def regulariser(self) -> Tensor:
        """Eq. 7 (reference form): mean distance between centres of the same class."""
        centers = F.normalize(self.centers, dim=0)
        sim = centers.t() @ centers
        owner = torch.arange(self.num_classes * self.K, device=sim.device) // self.K
        pairs = torch.triu(owner.unsqueeze(0) == owner.unsqueeze(1), diagonal=1)  # same class, k < k'
        return torch.sqrt(2.0 + 1e-5 - 2.0 * sim[pairs]).sum() / (self.num_classes * self.K * (self.K - 1.0))

    def forward(self, embedding: Tensor, targets: Tensor) -> Tensor:
        index = self._check(embedding, targets)
        similarity = self.class_similarity(embedding)
        margin = F.one_hot(index, self.num_classes).to(similarity.dtype) * self.margin
        loss = F.cross_entropy(self.la * (similarity - margin), index)
        if self.tau > 0 and self.K > 1:
            loss = loss + self.tau * self.regulariser()
        return loss

    def scores(self, embedding: Tensor) -> Tensor:
        self._check_scores_input(embedding)
        return _softmax_event_scores(self.la * self.class_similarity(embedding), self.num_events)

    def extra_repr(self) -> str:
        return (
            f"num_events={self.num_events}, embedding_dim={self.embedding_dim}, K={self.K}, la={self.la}, "
            f"gamma={self.gamma}, tau={self.tau}, margin={self.margin}"
        )


@dataclass(frozen=True)
class SoftTripleConfig(LossConfig):
    """SoftTriple (Qian et al. 2019): ``centers_per_class`` 10, ``la`` 20, ``gamma`` 0.1, ``tau`` 0.2,
    ``margin`` 0.01. ``build`` needs ``embedding_dim``."""

    loss: ClassVar[type[ImbalanceLoss]] = SoftTripleLoss
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


# ----------------------------------------------------------------------------------------------- registry

#: The registry of imbalance losses, one entry each: name -> its settings (whose ``loss`` is the class). Runs train
#: them in this order; each is a method of :data:`thce.methods.METHODS` and its ``[name]`` table is read into its
#: settings by :func:`thce.config.load_config`.
LOSS_CONFIGS: dict[str, type[LossConfig]] = {
    settings.loss.method: settings
    for settings in (
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
    """The settings of ``method`` (a ``LOSS_CONFIGS`` key) from ``values`` (its table; missing keys: the defaults),
    validated; errors name ``method.key``.

    >>> loss_config("ldam_drw", drw_epoch=40)
    LDAMConfig(max_margin=0.5, s=30.0, drw_epoch=40, drw_beta=0.9999)
    """
    if method not in LOSS_CONFIGS:
        raise ConfigError(f"unknown imbalance method {method!r}; known: {', '.join(LOSS_CONFIGS)}")
    return read_table(LOSS_CONFIGS[method], values, method)
