"""Class-balanced oversampling with softmax cross-entropy (Buda et al. 2018, Kang et al. 2020; ``oversampling``):
:class:`OversampledCrossEntropy` and its settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from thce.losses.imbalance.base import ImbalanceLoss, LossConfig, check_counts, softmax_event_scores
from thce.sampling import Counts, balanced_sampling_weights


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
        return softmax_event_scores(logits, self.num_events)


@dataclass(frozen=True)
class OversamplingConfig(LossConfig):
    """Class-balanced oversampling with plain cross-entropy; no parameters (use ``loss.sampling_weights``)."""

    loss: ClassVar[type[ImbalanceLoss]] = OversampledCrossEntropy

    def build(self, class_counts: Counts, *, embedding_dim: int | None = None) -> OversampledCrossEntropy:
        return OversampledCrossEntropy(class_counts)
