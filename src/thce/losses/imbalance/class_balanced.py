"""Class-balanced loss by the effective number of samples (Cui et al. 2019; ``class_balanced``):
:class:`ClassBalancedLoss`, its settings, and the weights (:func:`class_balanced_weights`), which LDAM-DRW's
deferred re-weighting uses too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from thce.errors import ConfigError
from thce.losses.imbalance.base import ImbalanceLoss, LossConfig, check_counts, softmax_event_scores
from thce.losses.imbalance.focal import sigmoid_focal_terms
from thce.sampling import Counts


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
            return softmax_event_scores(logits, self.num_events)
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
