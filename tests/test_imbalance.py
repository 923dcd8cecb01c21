"""The imbalance baselines against hand-computed values and straightforward reference formulas (loops, math)."""

import math

import numpy as np
import pytest
import torch

from thce.errors import ConfigError
from thce.losses.imbalance import (
    LOSS_CONFIGS,
    BinaryCrossEntropy,
    ClassBalancedLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    NormedLinear,
    OversampledCrossEntropy,
    SigmoidFocalLoss,
    SoftTripleLoss,
    class_balanced_weights,
    class_index_targets,
    loss_config,
)
from thce.sampling import balanced_sampling_order, balanced_sampling_weights

COUNTS = [4, 1, 20]  # two events (the second with a single sample) and background
DTYPES = [torch.float32, torch.float64]


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def log_softmax_row(row, j):
    m = max(row)
    return row[j] - m - math.log(sum(math.exp(v - m) for v in row))


def effective_number_weights(counts, beta):
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    return [w / sum(raw) * len(counts) for w in raw]


# ------------------------------------------------------------------------------------------ targets


def test_class_index_targets_accepts_indices_and_multi_hot():
    assert class_index_targets(torch.tensor([0, 2, 1]), 2).tolist() == [0, 2, 1]
    multi_hot = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    assert class_index_targets(multi_hot, 2).tolist() == [0, 2, 1]


@pytest.mark.parametrize(
    "targets, match",
    [
        (torch.tensor([0, 3]), r"\[0, 2\]"),
        (torch.tensor([0.0, 1.0]), "integer"),
        (torch.tensor([[1.0, 1.0]]), "at most one 1"),
        (torch.tensor([[0.5, 0.0]]), "0/1"),
        (torch.tensor([[1.0, 0.0, 0.0]]), r"\(B, L=2\)"),
        (torch.zeros(1, 2, 1), "shape"),
    ],
)
def test_class_index_targets_rejects_bad_targets(targets, match):
    with pytest.raises(ValueError, match=match):
        class_index_targets(targets, 2)


# ---------------------------------------------------------------------------------------------- BCE


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_hand_value_and_multi_hot_targets(dtype):
    loss_fn = BinaryCrossEntropy(2)
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5]], dtype=dtype)
    # Sample 0 is event 1, sample 1 is background: mean of the four -log terms.
    expected = -(math.log(0.5) + math.log(sigmoid(2.0)) + math.log(1 - sigmoid(-1.0)) + math.log(1 - sigmoid(0.5))) / 4
    assert loss_fn(logits, torch.tensor([1, 2])).item() == pytest.approx(expected, rel=1e-6)
    assert loss_fn(logits, torch.tensor([[0.0, 1.0], [0.0, 0.0]])).item() == pytest.approx(expected, rel=1e-6)
    assert loss_fn(logits, torch.tensor([1, 2])).dtype == dtype
    assert torch.allclose(loss_fn.scores(logits), torch.sigmoid(logits))


# -------------------------------------------------------------------------------------------- focal


def reference_focal(logits, index, num_events, gamma=2.0, alpha=0.25):
    """Lin et al. Eq. 5 term by term, summed and divided by the number of positives (at least 1)."""
    total, positives = 0.0, 0
    for row, y in zip(logits.tolist(), index.tolist()):
        for l, x in enumerate(row):
            p = sigmoid(x)
            if l == y:
                total += -alpha * (1 - p) ** gamma * math.log(p)
                positives += 1
            else:
                total += -(1 - alpha) * p**gamma * math.log(1 - p)
    return total / max(positives, 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_focal_matches_reference_formula(dtype):
    torch.manual_seed(0)
    logits = torch.randn(7, 3, dtype=dtype) * 2
    index = torch.tensor([0, 3, 1, 3, 2, 3, 3])
    loss = SigmoidFocalLoss(3)(logits, index)
    assert loss.item() == pytest.approx(reference_focal(logits, index, 3), rel=1e-5)


def test_focal_hand_value_and_reductions():
    logits = torch.zeros(1, 1)
    # p = 0.5 for a positive: -0.25 * 0.5^2 * log 0.5.
    hand = 0.25 * 0.25 * math.log(2)
    assert SigmoidFocalLoss(1)(logits, torch.tensor([0])).item() == pytest.approx(hand, rel=1e-6)
    # A negative: -(0.75) * 0.5^2 * log 0.5; all-background batch: divided by max(0, 1) = 1.
    assert SigmoidFocalLoss(1)(logits, torch.tensor([1])).item() == pytest.approx(3 * hand, rel=1e-6)
    x = torch.tensor([[0.3, -2.0]])
    terms = SigmoidFocalLoss(2, reduction="none")(x, torch.tensor([0]))
    assert SigmoidFocalLoss(2, reduction="mean")(x, torch.tensor([0])).item() == pytest.approx(terms.mean().item())
    assert SigmoidFocalLoss(2, reduction="sum")(x, torch.tensor([0])).item() == pytest.approx(terms.sum().item())


def test_focal_with_gamma_0_and_no_alpha_is_bce():
    logits = torch.randn(5, 2)
    index = torch.tensor([0, 1, 2, 2, 2])
    focal = SigmoidFocalLoss(2, gamma=0.0, alpha=None, reduction="mean")(logits, index)
    assert focal.item() == pytest.approx(BinaryCrossEntropy(2)(logits, index).item(), rel=1e-6)


def test_focal_gradient_is_finite_for_confident_logits():
    logits = torch.tensor([[60.0, -60.0], [-60.0, 60.0]], requires_grad=True)
    SigmoidFocalLoss(2)(logits, torch.tensor([0, 2])).backward()
    assert torch.isfinite(logits.grad).all()


# ----------------------------------------------------------------------------------- class-balanced


def test_class_balanced_weights_by_hand():
    # beta = 0.5: raw weights 0.5 / (1 - 0.5) = 1 and 0.5 / (1 - 0.25) = 2/3; normalised to sum 2: 1.2, 0.8.
    assert class_balanced_weights([1, 2], beta=0.5).tolist() == pytest.approx([1.2, 0.8])
    w = class_balanced_weights(COUNTS)
    assert w.sum().item() == pytest.approx(3.0)
    assert w.tolist() == pytest.approx(effective_number_weights(COUNTS, 0.9999), rel=1e-6)
    # With beta -> 1 the weights approach inverse frequency.
    assert (w[1] / w[2]).item() == pytest.approx(20.0, rel=1e-2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_class_balanced_softmax_matches_reference(dtype):
    torch.manual_seed(1)
    logits = torch.randn(6, 3, dtype=dtype)
    index = torch.tensor([0, 1, 2, 2, 2, 0])
    w = effective_number_weights(COUNTS, 0.9999)
    expected = sum(-w[y] * log_softmax_row(row, y) for row, y in zip(logits.tolist(), index.tolist())) / 6
    assert ClassBalancedLoss(COUNTS)(logits, index).item() == pytest.approx(expected, rel=1e-5)


def test_class_balanced_focal_and_sigmoid_match_reference():
    torch.manual_seed(2)
    logits = torch.randn(5, 3)
    index = torch.tensor([2, 0, 1, 2, 2])
    w = effective_number_weights(COUNTS, 0.9999)
    for kind, gamma in (("focal", 1.0), ("sigmoid", 0.0)):
        total = 0.0
        for row, y in zip(logits.tolist(), index.tolist()):
            for j, x in enumerate(row):
                p = sigmoid(x)
                p_t = p if j == y else 1 - p
                total += -w[y] * (1 - p_t) ** gamma * math.log(p_t)
        loss = ClassBalancedLoss(COUNTS, kind=kind)(logits, index)
        assert loss.item() == pytest.approx(total / 5, rel=1e-5), kind
    scores = ClassBalancedLoss(COUNTS, kind="focal").scores(logits)
    assert torch.allclose(scores, torch.sigmoid(logits[:, :2]))


# ------------------------------------------------------------------------------------- oversampling


def test_balanced_sampling_weights_and_draws():
    index = np.array([0] * 2 + [1] * 8 + [2] * 90)
    weights = balanced_sampling_weights(index)
    assert weights[:2].tolist() == [0.5, 0.5] and weights[2].item() == pytest.approx(1 / 8)
    for c in range(3):
        assert weights[index == c].sum().item() == pytest.approx(1.0)
    draws = balanced_sampling_order(index, generator=torch.Generator().manual_seed(0), num_samples=30000)
    fractions = np.bincount(index[draws.numpy()], minlength=3) / 30000
    assert fractions == pytest.approx([1 / 3] * 3, abs=0.02)
    sampler = torch.utils.data.WeightedRandomSampler(weights, num_samples=len(weights), replacement=True)
    assert len(list(sampler)) == 100
    with pytest.raises(ValueError, match="needs a sample"):
        balanced_sampling_weights([0, 0, 2], num_classes=3)


def test_oversampled_cross_entropy_is_plain_ce_with_weights():
    loss_fn = OversampledCrossEntropy(COUNTS)
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    expected = -(log_softmax_row([1.0, 0.0, -1.0], 0) + math.log(1 / 3)) / 2
    assert loss_fn(logits, torch.tensor([0, 2])).item() == pytest.approx(expected, rel=1e-6)
    assert loss_fn.sampling_weights([0, 1, 2, 2]).tolist() == [1.0, 1.0, 0.5, 0.5]
    assert BinaryCrossEntropy(2).sampling_weights([0, 1, 2]) is None


# ----------------------------------------------------------------------------------- logit-adjusted


def test_logit_adjusted_hand_value_and_unadjusted_scores():
    loss_fn = LogitAdjustedLoss([1, 3])  # priors 0.25, 0.75
    logits = torch.zeros(2, 2)
    # Adjusted logits are log priors, so the loss is -log(prior of the target).
    expected = (-math.log(0.25) - math.log(0.75)) / 2
    assert loss_fn(logits, torch.tensor([0, 1])).item() == pytest.approx(expected, rel=1e-6)
    assert loss_fn.scores(logits).tolist() == [[0.5], [0.5]]  # prediction uses the raw logits
    tau2 = LogitAdjustedLoss([1, 3], tau=2.0)(logits[:1], torch.tensor([0]))
    assert tau2.item() == pytest.approx(-log_softmax_row([2 * math.log(0.25), 2 * math.log(0.75)], 0), rel=1e-6)


# ---------------------------------------------------------------------------------------------- LDAM


def reference_ldam(cosines, index, counts, *, max_margin=0.5, s=30.0, weights=None):
    """Cao et al. Eq. 13 with margins C / n^(1/4), loop form; weighted mean like F.cross_entropy(weight=...)."""
    raw = [n**-0.25 for n in counts]
    margins = [m * max_margin / max(raw) for m in raw]
    num, den = 0.0, 0.0
    for row, y in zip(cosines.tolist(), index.tolist()):
        z = [s * (v - (margins[y] if j == y else 0.0)) for j, v in enumerate(row)]
        w = 1.0 if weights is None else weights[y]
        num += -w * log_softmax_row(z, y)
        den += w
    return num / den


@pytest.mark.parametrize("dtype", DTYPES)
def test_ldam_margins_loss_and_drw(dtype):
    counts = [1, 16, 81]
    loss_fn = LDAMLoss(counts, drw_epoch=2)
    assert loss_fn.margins.tolist() == pytest.approx([0.5, 0.25, 0.5 / 3])
    torch.manual_seed(3)
    cosines = torch.rand(6, 3, dtype=dtype) * 2 - 1
    index = torch.tensor([0, 1, 2, 2, 1, 2])
    for epoch in (0, 1):
        loss_fn.set_epoch(epoch)
        assert not loss_fn.reweighting
        assert loss_fn(cosines, index).item() == pytest.approx(reference_ldam(cosines, index, counts), rel=1e-5)
    loss_fn.set_epoch(2)
    assert loss_fn.reweighting
    expected = reference_ldam(cosines, index, counts, weights=effective_number_weights(counts, 0.9999))
    assert loss_fn(cosines, index).item() == pytest.approx(expected, rel=1e-5)
    # Scores: softmax of s * cos, without margins.
    assert torch.allclose(loss_fn.scores(cosines), torch.softmax(30 * cosines, dim=1)[:, :2])


def test_ldam_head_is_cosine_and_rejects_raw_logits():
    loss_fn = LDAMLoss(COUNTS)
    head = loss_fn.make_head(5)
    assert isinstance(head, NormedLinear)
    out = head(torch.randn(4, 5) * 10)
    assert out.abs().max() <= 1.0 + 1e-6
    assert torch.allclose(head.weight.norm(dim=0), torch.ones(3))
    with pytest.raises(ValueError, match="cosine"):
        loss_fn(torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([0]))


# ----------------------------------------------------------------------------------------- SoftTriple


def reference_softtriple(embedding, index, centers, num_classes, K, la=20.0, gamma=0.1, tau=0.2, margin=0.01):
    """Qian et al. Eqs. 5-8 with explicit loops in float64 (centres column c * K + k)."""
    x = torch.nn.functional.normalize(embedding.double(), dim=1).tolist()
    w = torch.nn.functional.normalize(centers.double(), dim=0).t().tolist()
    total = 0.0
    for row, y in zip(x, index.tolist()):
        logits = []
        for c in range(num_classes):
            sims = [sum(a * b for a, b in zip(row, w[c * K + k])) for k in range(K)]
            exps = [math.exp(s / gamma) for s in sims]
            s_c = sum(e * s for e, s in zip(exps, sims)) / sum(exps)
            logits.append(la * (s_c - (margin if c == y else 0.0)))
        total += -log_softmax_row(logits, y)
    loss = total / len(x)
    if tau > 0 and K > 1:
        reg = 0.0
        for c in range(num_classes):
            for k in range(K):
                for k2 in range(k + 1, K):
                    cos = sum(a * b for a, b in zip(w[c * K + k], w[c * K + k2]))
                    reg += math.sqrt(2.0 + 1e-5 - 2.0 * cos)
        loss += tau * reg / (num_classes * K * (K - 1.0))
    return loss


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", [1, 3])
def test_softtriple_matches_reference(dtype, K):
    torch.manual_seed(4)
    loss_fn = SoftTripleLoss(COUNTS, 4, centers_per_class=K).to(dtype)
    embedding = torch.randn(5, 4, dtype=dtype)
    index = torch.tensor([0, 1, 2, 2, 0])
    expected = reference_softtriple(embedding, index, loss_fn.centers.detach(), 3, K)
    assert loss_fn(embedding, index).item() == pytest.approx(expected, rel=1e-5)
    assert isinstance(loss_fn.make_head(4), torch.nn.Identity)
    scores = loss_fn.scores(embedding)
    assert scores.shape == (5, 2) and bool(((scores >= 0) & (scores <= 1)).all())


def test_softtriple_default_reference_settings():
    loss_fn = loss_config("softtriple").build(COUNTS, embedding_dim=8)
    assert (loss_fn.K, loss_fn.la, loss_fn.gamma, loss_fn.tau, loss_fn.margin) == (10, 20.0, 0.1, 0.2, 0.01)
    assert loss_fn.centers.shape == (8, 30)
    with pytest.raises(ValueError, match="embedding_dim"):
        loss_config("softtriple").build(COUNTS)


# ---------------------------------------------------------------------------------- shared behaviour


def _outputs(loss_fn, batch, dim=6):
    head = loss_fn.make_head(dim)
    x = torch.randn(batch, dim, requires_grad=True)
    return x, head, head(x)


@pytest.mark.parametrize("method", list(LOSS_CONFIGS))
def test_every_method_single_sample_class_all_background_and_finite_gradients(method):
    torch.manual_seed(5)
    counts = [1, 50, 500]  # event 0 has a single training sample
    loss_fn = loss_config(method).build(counts, embedding_dim=6)
    loss_fn.set_epoch(10**6)  # LDAM: re-weighting on
    for index in (torch.tensor([0, 1, 2, 2]), torch.full((4,), 2)):  # mixed and all-background batches
        x, head, out = _outputs(loss_fn, 4)
        loss = loss_fn(out, index)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        grads = [x.grad, *(p.grad for p in head.parameters()), *(p.grad for p in loss_fn.parameters())]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        scores = loss_fn.scores(out)
    assert scores.shape == (4, 2) and bool(((scores >= 0) & (scores <= 1)).all())


@pytest.mark.parametrize("method", list(LOSS_CONFIGS))
def test_every_method_rejects_bad_shapes(method):
    loss_fn = loss_config(method).build(COUNTS, embedding_dim=6)
    _, _, out = _outputs(loss_fn, 3)
    with pytest.raises(ValueError, match="outputs must be"):
        loss_fn(torch.zeros(3, loss_fn.num_outputs + 1), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="targets"):
        loss_fn(out, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        loss_fn(out, torch.tensor([0, 1, 5]))
    with pytest.raises(ValueError, match="outputs must be"):
        loss_fn.scores(torch.zeros(3))


@pytest.mark.parametrize("method", ["class_balanced", "oversampling", "logit_adjusted", "ldam_drw"])
def test_counts_are_validated(method):
    with pytest.raises(ValueError, match="at least one training sample"):
        loss_config(method).build([3, 0, 10])
    with pytest.raises(ValueError, match="C >= 2"):
        loss_config(method).build([10])
    with pytest.raises(ValueError, match="non-negative integers"):
        loss_config(method).build([1.5, 2, 10])


def test_loss_config_registry_and_errors():
    assert list(LOSS_CONFIGS) == [
        "bce", "focal", "class_balanced", "oversampling", "logit_adjusted", "ldam_drw", "softtriple",
    ]  # fmt: skip
    assert loss_config("focal").to_dict() == {"method": "focal", "gamma": 2.0, "alpha": 0.25, "reduction": "positives"}
    assert loss_config("class_balanced").beta == 0.9999
    with pytest.raises(ConfigError, match="unknown imbalance method"):
        loss_config("smote")
    with pytest.raises(ConfigError, match="unknown config key 'focal.gama'; did you mean 'gamma'"):
        loss_config("focal", gama=2.0)
    with pytest.raises(ConfigError, match="beta"):
        loss_config("class_balanced", beta=1.0)
    with pytest.raises(ConfigError, match="drw_epoch"):
        loss_config("ldam_drw", drw_epoch=-1)
    with pytest.raises(ValueError):
        SigmoidFocalLoss(2, alpha=1.5)
