"""SoftTriple loss (Qian et al. 2019; ``softtriple``), a multi-centre cosine loss on the embedding:
:class:`SoftTripleLoss` and its settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thce.errors import ConfigError
from thce.losses.imbalance.base import ImbalanceLoss, LossConfig, check_counts, softmax_event_scores
from thce.sampling import Counts


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
        return softmax_event_scores(self.la * self.class_similarity(embedding), self.num_events)

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
