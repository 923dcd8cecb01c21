"""Unweighted binary cross-entropy, the paper's Eq. 1 (``bce``): :class:`BinaryCrossEntropy` and its settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from thce.losses.imbalance.base import ImbalanceLoss, LossConfig, multi_hot, num_events_of
from thce.sampling import Counts


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
        return F.binary_cross_entropy_with_logits(logits, multi_hot(index, self.num_events, logits.dtype))

    def scores(self, logits: Tensor) -> Tensor:
        self._check_scores_input(logits)
        return torch.sigmoid(logits)


@dataclass(frozen=True)
class BCEConfig(LossConfig):
    """Unweighted BCE (the paper's Eq. 1); no parameters."""

    loss: ClassVar[type[ImbalanceLoss]] = BinaryCrossEntropy

    def build(self, class_counts: Counts, *, embedding_dim: int | None = None) -> BinaryCrossEntropy:
        return BinaryCrossEntropy(num_events_of(class_counts, "BCEConfig"))
