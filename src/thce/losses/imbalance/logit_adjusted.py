"""Logit-adjusted softmax cross-entropy (Menon et al. 2021; ``logit_adjusted``): :class:`LogitAdjustedLoss` and
its settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from thce.errors import ConfigError
from thce.losses.imbalance.base import ImbalanceLoss, LossConfig, check_counts, softmax_event_scores
from thce.sampling import Counts


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
        return softmax_event_scores(logits, self.num_events)

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
