"""Eqs. 2 and 5-9 against values worked out by hand, an independent loop implementation, and gradcheck."""

import math

import pytest
import torch

from thce.losses import (
    mean_cluster_weight,
    TripleHeaderCrossEntropy,
    bce_class_weights,
    cluster_weights,
    eq3_ordering,
    triple_header_ce,
    weighted_bce,
)
from thce.models import ClusterLayer

# Clusters 0 and 1 belong to class 0; class 1 and class 2 have a single cluster each.
CLUSTER_CLASS = torch.tensor([0, 0, 1, 2])


def reference_thce(h, cluster_index, cluster_class, beta_same=5.0, beta_other=0.0):
    """Straightforward per-sample loops over Eqs. 5-7 (no masking tricks), in float64 Python math."""
    losses = []
    for row, k in zip(h.tolist(), cluster_index.tolist()):
        c = int(cluster_class[k])
        same = [row[j] for j in range(len(row)) if j != k and int(cluster_class[j]) == c]
        other = [row[j] for j in range(len(row)) if int(cluster_class[j]) != c]
        denominator = math.exp(row[k])
        if same:
            denominator += math.exp(max(same) - beta_same)
        if other:
            denominator += math.exp(max(other) - beta_other)
        losses.append(-math.log(math.exp(row[k]) / denominator))
    return torch.tensor(losses, dtype=torch.float64)


def test_hand_computed_values_with_single_cluster_class():
    h = torch.tensor([[2.0, 1.0, 0.5, -1.0], [0.3, 0.9, 1.5, 0.0]])
    k = torch.tensor([0, 2])
    per_sample = triple_header_ce(h, k, CLUSTER_CLASS, reduction="none")
    # Sample 0: k' = cluster 1 (h=1.0), k'' = cluster 2 (h=0.5): log(e^2 + e^(1-5) + e^0.5) - 2.
    # Sample 1: class 1 has one cluster, so the same-class term is dropped; k'' = cluster 1 (h=0.9).
    assert per_sample.tolist() == pytest.approx([0.20343779178347488, 0.4374879504858855], rel=1e-6)


def test_cluster_weights_eq8_9():
    # w_k = clusters of k's class = [2, 2, 1, 1]; weight = max_k' w_k' / w_k.
    assert cluster_weights(CLUSTER_CLASS).tolist() == [1.0, 1.0, 2.0, 2.0]
    assert cluster_weights(torch.tensor([0, 1, 1, 1, 2, 2])).tolist() == [3.0, 1.0, 1.0, 1.0, 1.5, 1.5]


def test_weighted_mean_and_sum_reductions():
    h = torch.tensor([[2.0, 1.0, 0.5, -1.0], [0.3, 0.9, 1.5, 0.0]])
    k = torch.tensor([0, 2])
    w = cluster_weights(CLUSTER_CLASS)
    l0, l1 = 0.20343779178347488, 0.4374879504858855
    mean = triple_header_ce(h, k, CLUSTER_CLASS, weights=w)
    total = triple_header_ce(h, k, CLUSTER_CLASS, weights=w, reduction="sum")
    assert mean.item() == pytest.approx((1 * l0 + 2 * l1) / 3, rel=1e-6)
    assert total.item() == pytest.approx(1 * l0 + 2 * l1, rel=1e-6)


def test_large_alpha_stays_finite():
    h = torch.tensor([[1000.0, 999.0, 0.0, 0.0]])
    loss = triple_header_ce(h, torch.tensor([0]), torch.tensor([0, 0, 1, 1]))
    # log(e^1000 + e^(999-5) + e^0) - 1000 = log(1 + e^-6 + e^-1000)
    assert loss.item() == pytest.approx(0.0024756851377304495, rel=1e-4)  # float32 log near 1
    h.requires_grad_(True)
    triple_header_ce(h * 30, torch.tensor([0]), torch.tensor([0, 0, 1, 1])).backward()
    assert torch.isfinite(h.grad).all()


def test_betas_change_the_terms():
    h = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    k = torch.tensor([0])
    value = triple_header_ce(h, k, CLUSTER_CLASS, beta_same=2.0, beta_other=1.0)
    assert value.item() == pytest.approx(math.log(1 + math.exp(-2) + math.exp(-1)), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_loop_reference_on_random_inputs(dtype):
    generator = torch.Generator().manual_seed(0)
    cluster_class = torch.tensor([0, 0, 0, 1, 2, 2, 3])
    h = (torch.randn(50, 7, generator=generator) * 8).to(dtype)
    k = torch.randint(0, 7, (50,), generator=generator)
    ours = triple_header_ce(h, k, cluster_class, reduction="none")
    assert ours.dtype == dtype
    reference = reference_thce(h.double(), k, cluster_class)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours.double(), reference, rtol=tolerance, atol=tolerance)


def test_gradcheck_float64():
    generator = torch.Generator().manual_seed(1)
    h = torch.randn(6, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    k = torch.tensor([0, 1, 2, 3, 0, 2])
    weights = cluster_weights(CLUSTER_CLASS).double()
    assert torch.autograd.gradcheck(
        lambda x: triple_header_ce(x, k, CLUSTER_CLASS, weights=weights), (h,), eps=1e-6, atol=1e-6
    )


def test_module_owns_cluster_layer_and_trains():
    torch.manual_seed(0)
    centroids = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    loss_fn = TripleHeaderCrossEntropy.from_centroids(centroids, CLUSTER_CLASS, alpha=10.0)
    torch.testing.assert_close(loss_fn.cluster_layer.weight.norm(dim=1), torch.full((4,), 10.0))
    assert [n for n, _ in loss_fn.named_parameters()] == ["cluster_layer.weight"]
    embedding = torch.nn.functional.normalize(centroids[torch.tensor([0, 1, 2, 3])] + 0.3 * torch.randn(4, 8), dim=1)
    k = torch.tensor([0, 1, 2, 3])
    expected = triple_header_ce(loss_fn.cluster_layer(embedding), k, CLUSTER_CLASS, weights=cluster_weights(CLUSTER_CLASS))
    torch.testing.assert_close(loss_fn(embedding, k), expected)
    with pytest.raises(ValueError, match="beta''"):
        TripleHeaderCrossEntropy(ClusterLayer(8, CLUSTER_CLASS), beta_same=0.0, beta_other=1.0)


def test_eq3_ordering_fractions():
    h = torch.tensor([[3.0, 2.0, 1.0, 0.0], [1.0, 2.0, 3.0, 0.0], [0.0, 0.0, 5.0, 1.0]])
    fractions = eq3_ordering(h, torch.tensor([0, 0, 2]), CLUSTER_CLASS)
    # Row 0 satisfies Eq. 3; row 1 violates both; row 2 (single-cluster class) has own > other.
    assert fractions["eq3"] == pytest.approx(2 / 3)
    assert fractions["own_over_same"] == pytest.approx(1 / 2)
    assert fractions["own_over_other"] == pytest.approx(2 / 3)


def test_bce_class_weights_inverse_to_counts():
    weights = bce_class_weights([10, 30, 5], 100)
    # C = mean(90, 70, 95) = 85; w_l = C / I_l
    assert weights.tolist() == pytest.approx([8.5, 85 / 30, 17.0])
    assert (weights * torch.tensor([10.0, 30.0, 5.0])).tolist() == pytest.approx([85.0] * 3)
    with pytest.raises(ValueError, match="positive"):
        bce_class_weights([0, 3], 10)


def test_weighted_bce_eq2_by_hand():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    w = torch.tensor([3.0, 0.5])
    sig = torch.sigmoid
    expected = -(
        3.0 * math.log(sig(torch.tensor(0.0)))
        + math.log(1 - sig(torch.tensor(2.0)))
        + math.log(1 - sig(torch.tensor(-1.0)))
        + 0.5 * math.log(sig(torch.tensor(0.5)))
    ) / 4
    assert weighted_bce(logits, targets, w).item() == pytest.approx(expected, rel=1e-6)


def test_eq8_fixed_normaliser_by_hand_over_two_batches_of_different_composition():
    # Issue 13: clusters [class 0 | class 1, class 1] -> Eq. 9 w_k = [1, 2, 2], Eq. 8 weights [2, 1, 1].
    cluster_class = torch.tensor([0, 1, 1])
    weights = cluster_weights(cluster_class)
    assert weights.tolist() == [2.0, 1.0, 1.0]
    training_assignment = torch.tensor([0, 1, 2, 1, 2, 0])
    mean_w = mean_cluster_weight(weights, training_assignment)
    assert mean_w == pytest.approx(8 / 6)
    l0 = math.log(1 + math.exp(-1))  # cluster 0, h = [2, 1, 0]: only the other-class term (h 1 - beta'' 0 - 2)
    l1 = math.log(1 + math.exp(1 - 5 - 3) + math.exp(0 - 0 - 3))  # cluster 1, h = [0, 3, 1]
    h0, h1 = [2.0, 1.0, 0.0], [0.0, 3.0, 1.0]
    batch_a = triple_header_ce(torch.tensor([h0, h1]), torch.tensor([0, 1]), cluster_class, weights=weights,
                               reduction="fixed", mean_weight=mean_w)
    batch_b = triple_header_ce(torch.tensor([h1, h1]), torch.tensor([1, 1]), cluster_class, weights=weights,
                               reduction="fixed", mean_weight=mean_w)
    assert batch_a.item() == pytest.approx((2 * l0 + l1) / (2 * 8 / 6), rel=1e-5)
    assert batch_b.item() == pytest.approx((l1 + l1) / (2 * 8 / 6), rel=1e-5)
    # a cluster-1 sample weighs 1 / (B * mean_w) in both batches; the batch-sum normaliser gave 1/3 and 1/2
    old_a = triple_header_ce(torch.tensor([h0, h1]), torch.tensor([0, 1]), cluster_class, weights=weights)
    assert old_a.item() == pytest.approx((2 * l0 + l1) / 3, rel=1e-5)
    with pytest.raises(ValueError, match="mean_weight"):
        triple_header_ce(torch.tensor([h0]), torch.tensor([0]), cluster_class, weights=weights, reduction="fixed")


def test_module_uses_the_fixed_normaliser_given_the_training_assignment():
    layer = ClusterLayer.from_centroids(torch.eye(3), torch.tensor([0, 1, 1]), alpha=4.0)
    assignment = torch.tensor([0, 1, 2, 1, 2, 0])
    loss_fn = TripleHeaderCrossEntropy(layer, assignment=assignment)
    assert loss_fn.reduction == "fixed" and loss_fn.mean_weight == pytest.approx(8 / 6)
    e = torch.nn.functional.normalize(torch.randn(4, 3), dim=1)
    k = torch.tensor([0, 1, 2, 2])
    expected = triple_header_ce(layer(e), k, layer.cluster_class, weights=loss_fn.weights, reduction="sum") / (4 * 8 / 6)
    torch.testing.assert_close(loss_fn(e, k), expected)
    assert TripleHeaderCrossEntropy(layer).reduction == "mean"
