"""Label-distribution-aware margin loss with deferred re-weighting (Cao et al. 2019; ``ldam_drw``):
:class:`LDAMLoss`, its settings and the cosine classifier it trains (:class:`NormedLinear`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thce.errors import ConfigError
from thce.losses.imbalance.base import ImbalanceLoss, LossConfig, check_counts, softmax_event_scores
from thce.losses.imbalance.class_balanced import class_balanced_weights
from thce.sampling import Counts


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
        return softmax_event_scores(self.s * cosines, self.num_events)

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
