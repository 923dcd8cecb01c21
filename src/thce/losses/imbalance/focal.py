"""Focal loss, sigmoid form (Lin et al. 2017; ``focal``): :class:`SigmoidFocalLoss`, its settings, and its
element-wise terms (:func:`sigmoid_focal_terms`), which the class-balanced loss's focal kind uses too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from thce.errors import ConfigError
from thce.losses.imbalance.base import ImbalanceLoss, LossConfig, multi_hot, num_events_of
from thce.sampling import Counts


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
        t = multi_hot(index, self.num_events, logits.dtype)
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
            num_events_of(class_counts, "FocalConfig"), gamma=self.gamma, alpha=self.alpha, reduction=self.reduction
        )
