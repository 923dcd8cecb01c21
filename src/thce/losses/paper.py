"""The paper's losses: class-weighted BCE (Eq. 2) and the triple-header cross-entropy (Eqs. 3, 5-9).

Both are usable on their own with any network. Every equation lives in one function named after it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thce.augment import mixed_loss
from thce.models import ClusterLayer


def bce_class_weights(positives_per_class: Tensor | list[int], num_samples: int) -> Tensor:
    """Eq. 2's ``w_l``, inversely proportional to ``I_l``: ``w_l = C / I_l``.

    The constant is ``C = mean_l (I - I_l)``, the average number of negatives per class, so that for a typical
    class the weighted positives balance the negatives, and every class contributes the same positive mass
    ``sum_i w_l t_il = C`` (the paper's "contribution of each class ... is balanced").

    >>> bce_class_weights([10, 30], 100).tolist()
    [8.0, 2.6666667461395264]
    """
    counts = torch.as_tensor(positives_per_class, dtype=torch.float32)
    if counts.numel() == 0 or bool((counts < 1).any()):
        raise ValueError(f"bce_class_weights: every event class needs >= 1 positive clip, got {counts.tolist()}")
    if num_samples <= int(counts.max()):
        raise ValueError(f"bce_class_weights: num_samples={num_samples} must exceed every class count")
    return (num_samples - counts).mean() / counts


def weighted_bce(logits: Tensor, targets: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """Eq. 2: ``-sum_{i,l} [w_l t_il log y_il + (1 - t_il) log(1 - y_il)]``, averaged over the B x L terms.

    Args:
        logits: (B, L) pre-sigmoid outputs; ``y = sigmoid(logits)`` (computed stably inside).
        targets: (B, L) in {0, 1}; background clips are all-zero rows.
        class_weights: (L,) ``w_l``; ``None`` gives the unweighted Eq. 1.
    """
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=class_weights)


def cluster_weights(cluster_class: Tensor) -> Tensor:
    """Eqs. 8-9: the weight of cluster k is ``max_k' w_k' / w_k`` with ``w_k`` the number of clusters of k's class.

    Classes split into few clusters get large weights, so sampling is even over classes as well as clusters.

    >>> cluster_weights(torch.tensor([0, 0, 1, 2, 2, 2, 2])).tolist()
    [2.0, 2.0, 4.0, 1.0, 1.0, 1.0, 1.0]
    """
    cluster_class = torch.as_tensor(cluster_class, dtype=torch.long)
    clusters_of_class = torch.bincount(cluster_class)  # Eq. 9 per class
    w = clusters_of_class[cluster_class].to(torch.float32)  # w_k
    return w.max() / w


def _masked_max(h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Row-wise max of ``h`` over ``mask``; returns (values, row has at least one candidate)."""
    values = h.masked_fill(~mask, float("-inf")).max(dim=1).values
    return values, mask.any(dim=1)


def eq3_terms(h: Tensor, cluster_index: Tensor, cluster_class: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The three terms of Eq. 3 for each sample: ``h_own`` (its cluster k_i), ``h_same`` (Eq. 6's k': the most
    similar other cluster of its class), ``h_other`` (Eq. 7's k'': the most similar cluster of another class),
    plus masks ``has_same`` / ``has_other`` (False where the set is empty, the value then -inf). All (B,)."""
    cluster_index = cluster_index.to(device=h.device, dtype=torch.long)
    cluster_class = cluster_class.to(h.device)
    own_class = cluster_class[cluster_index]  # (B,)
    same_class = cluster_class.unsqueeze(0) == own_class.unsqueeze(1)  # (B, K)
    not_own = torch.ones_like(same_class).scatter_(1, cluster_index.unsqueeze(1), False)
    h_own = h.gather(1, cluster_index.unsqueeze(1)).squeeze(1)
    h_same, has_same = _masked_max(h, same_class & not_own)  # Eq. 6
    h_other, has_other = _masked_max(h, ~same_class)  # Eq. 7
    return h_own, h_same, has_same, h_other, has_other


def triple_header_ce(
    h: Tensor,
    cluster_index: Tensor,
    cluster_class: Tensor,
    *,
    beta_same: float = 5.0,
    beta_other: float = 0.0,
    weights: Tensor | None = None,
    reduction: str = "mean",
    mean_weight: float | None = None,
) -> Tensor:
    """The triple-header cross-entropy, Eqs. 5-8.

    For sample i in cluster k = k_i of class c_i, with cluster-layer outputs h_i (alpha folded into W):

    - Eq. 6: ``k'  = argmax_{k' != k, c_k' == c_i} h_ik'`` (nearest other cluster of the same class),
    - Eq. 7: ``k'' = argmax_{c_k'' != c_i} h_ik''`` (nearest cluster of another class),
    - Eq. 5: ``v_ik = e^{h_ik} / (e^{h_ik} + e^{h_ik' - beta'} + e^{h_ik'' - beta''})``,
    - Eq. 8: ``loss = -sum_i weight_{k_i} log v_{i k_i}``.

    A term whose set is empty (a class with a single cluster, or a single class) is dropped. ``-log v`` is
    computed as ``log(1 + e^{h_ik' - beta' - h_ik} + e^{h_ik'' - beta'' - h_ik})`` with logsumexp, so large
    alpha neither overflows nor loses precision. Gradients flow through the selected
    k' and k'' (the max is piecewise linear).

    Args:
        h: (B, K) cluster-layer outputs ``W^T E(x)`` (Eq. 4).
        cluster_index: (B,) k_i in [0, K).
        cluster_class: (K,) class of each cluster.
        beta_same: beta', subtracted from the same-class term (paper: 5).
        beta_other: beta'', subtracted from the other-class term (paper: 0); beta'' < beta' penalises
            other-class clusters more.
        weights: (K,) per-cluster weights (Eqs. 8-9, see :func:`cluster_weights`); ``None`` = unweighted.
        reduction: ``"fixed"`` (Eq. 8 over a fixed normaliser: ``sum_i w_i l_i / (B * mean_weight)``, so a
            sample's weight does not depend on its batch-mates), ``"mean"`` (the batch's weighted mean,
            ``sum w_i l_i / sum w_i`` as in ``nn.CrossEntropyLoss``: the denominator varies with the batch's
            composition, ~21 % between batches of 64 at 2:2:1:26), ``"sum"`` (Eq. 8 literally) or ``"none"``
            (per-sample ``-log v``, unweighted).
        mean_weight: for ``"fixed"``: the mean of ``weights[k_i]`` over the training set (see
            :func:`mean_cluster_weight`), which puts the loss on the scale of an unweighted mean.

    Returns:
        Scalar loss, or (B,) for ``reduction="none"``.
    """
    if h.ndim != 2:
        raise ValueError(f"triple_header_ce: h must be (B, K), got {tuple(h.shape)}")
    h_own, h_same, has_same, h_other, has_other = eq3_terms(h, cluster_index, cluster_class)
    # -log v = log(1 + e^{h_k' - beta' - h_k} + e^{h_k'' - beta'' - h_k}): differences first, so that the result
    # keeps full precision when h is large (alpha ~ 1000). A dropped term is -inf, which logsumexp ignores.
    neg_inf = torch.full_like(h_own, float("-inf"))
    terms = torch.stack(
        [
            torch.zeros_like(h_own),
            torch.where(has_same, h_same - beta_same - h_own, neg_inf),
            torch.where(has_other, h_other - beta_other - h_own, neg_inf),
        ],
        dim=1,
    )
    per_sample = torch.logsumexp(terms, dim=1)  # -log v_{i k_i}, Eq. 5
    if reduction == "none":
        return per_sample
    w = torch.ones_like(per_sample) if weights is None else weights.to(h.device, h.dtype)[cluster_index]
    if reduction == "sum":
        return (w * per_sample).sum()
    if reduction == "mean":
        return (w * per_sample).sum() / w.sum()
    if reduction == "fixed":
        if mean_weight is None or not mean_weight > 0:
            raise ValueError(f"triple_header_ce: reduction='fixed' needs mean_weight > 0, got {mean_weight}")
        return (w * per_sample).sum() / (len(per_sample) * mean_weight)
    raise ValueError(f"triple_header_ce: reduction must be 'fixed', 'mean', 'sum' or 'none', got {reduction!r}")


def mean_cluster_weight(weights: Tensor | None, assignment: Tensor) -> float:
    """The mean Eq. 8 weight ``weights[k_i]`` over the samples of ``assignment`` (N,); 1 when unweighted.

    >>> mean_cluster_weight(torch.tensor([2.0, 2.0, 4.0, 1.0]), torch.tensor([0, 1, 2, 3, 3, 3]))
    1.8333333730697632
    """
    if weights is None:
        return 1.0
    return float(weights[assignment.to(weights.device, torch.long)].float().mean())


def eq3_ordering(h: Tensor, cluster_index: Tensor, cluster_class: Tensor) -> dict[str, float]:
    """How often Eq. 3 holds: own cluster > nearest same-class cluster > nearest other-class cluster.

    Returns fractions over the batch: ``own_over_other`` (h_k > h_k''), ``own_over_same`` (h_k > h_k', samples
    of classes with >= 2 clusters), ``eq3`` (the full chain; for single-cluster classes just h_k > h_k'').
    """
    with torch.no_grad():
        h_own, h_same, has_same, h_other, _ = eq3_terms(h, cluster_index, cluster_class)
        own_over_other = h_own > h_other
        own_over_same = h_own > h_same
        chain = torch.where(has_same, own_over_same & (h_same > h_other), own_over_other)
        return {
            "own_over_other": own_over_other.float().mean().item(),
            "own_over_same": own_over_same[has_same].float().mean().item() if has_same.any() else float("nan"),
            "eq3": chain.float().mean().item(),
        }


class TripleHeaderCrossEntropy(nn.Module):
    """The triple-header cross-entropy as a module that owns its cluster layer W (Eq. 4), like SoftTriple.

    Use it with any embedding network producing L2-normalised (B, D) embeddings::

        loss_fn = TripleHeaderCrossEntropy.from_centroids(centroids, cluster_class, alpha=16.0)
        loss = loss_fn(encoder(x), cluster_index)          # Eqs. 4-9
        optimiser = torch.optim.Adam([*encoder.parameters(), *loss_fn.parameters()])

    Args:
        cluster_layer: the dense layer W whose outputs are h; its ``cluster_class`` buffer gives c_k.
        beta_same, beta_other: beta' and beta'' of Eq. 5.
        weighted: apply the cluster weights of Eqs. 8-9.
        assignment: (N,) the training samples' clusters; with it the batch loss is Eq. 8 over the fixed
            normaliser ``B * mean_weight`` (``reduction="fixed"``), without it the batch's weighted mean.
    """

    def __init__(
        self,
        cluster_layer: ClusterLayer,
        *,
        beta_same: float = 5.0,
        beta_other: float = 0.0,
        weighted: bool = True,
        assignment: Tensor | None = None,
    ) -> None:
        super().__init__()
        if beta_other >= beta_same:
            raise ValueError(f"beta'' ({beta_other}) must be smaller than beta' ({beta_same}) (paper, Eq. 5)")
        self.cluster_layer = cluster_layer
        self.beta_same = beta_same
        self.beta_other = beta_other
        self.register_buffer("weights", cluster_weights(cluster_layer.cluster_class) if weighted else None)
        self.reduction = "mean" if assignment is None else "fixed"
        self.mean_weight = None if assignment is None else mean_cluster_weight(self.weights, assignment)

    @classmethod
    def from_centroids(
        cls, centroids: Tensor, cluster_class: Tensor, *, alpha: float, normalise_w: bool = False, **kwargs: Any
    ) -> TripleHeaderCrossEntropy:
        """W initialised to ``alpha * centroids`` (Algorithm 1: "initialised with cluster centroids");
        ``normalise_w``: unit columns at the fixed scale alpha (:class:`~thce.models.ClusterLayer`)."""
        return cls(ClusterLayer.from_centroids(centroids, cluster_class, alpha, normalised=normalise_w), **kwargs)

    @property
    def cluster_class(self) -> Tensor:
        return self.cluster_layer.cluster_class

    def loss_from_h(self, h: Tensor, cluster_index: Tensor) -> Tensor:
        """Eqs. 5-8 on cluster-layer outputs ``h`` (B, K) already computed."""
        return triple_header_ce(
            h, cluster_index, self.cluster_class, beta_same=self.beta_same, beta_other=self.beta_other,
            weights=self.weights, reduction=self.reduction, mean_weight=self.mean_weight,
        )  # fmt: skip

    def mixed_loss_from_h(self, h: Tensor, cluster_index: Tensor, lam: Tensor, perm: Tensor) -> Tensor:
        """Eqs. 5-8 on a mixup batch (:meth:`thce.augment.BatchAugmenter.mixup`): outputs ``h`` (B, K) of mixed clips,
        each counting as its two clips' clusters ``cluster_index`` (B,) and ``cluster_index[perm]`` with weights
        ``lam`` and ``1 - lam`` (B,) times their cluster weights; reduced as :meth:`loss_from_h` reduces."""

        def per_sample(k: Tensor) -> Tensor:
            return triple_header_ce(
                h, k, self.cluster_class, beta_same=self.beta_same, beta_other=self.beta_other, reduction="none"
            )

        weights = None if self.weights is None else self.weights[cluster_index]
        if self.reduction == "fixed":
            total = mixed_loss(per_sample, cluster_index, lam, perm, weights=weights, reduction="sum")
            return total / (len(cluster_index) * self.mean_weight)
        return mixed_loss(per_sample, cluster_index, lam, perm, weights=weights, reduction="mean")

    def forward(self, embedding: Tensor, cluster_index: Tensor) -> Tensor:
        """``embedding`` (B, D) L2-normalised, ``cluster_index`` (B,) -> scalar loss (Eqs. 4-8)."""
        return self.loss_from_h(self.cluster_layer(embedding), cluster_index)
