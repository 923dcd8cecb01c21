"""Training-batch augmentation (thce.augment): determinism, shapes and labels, identity when off or in eval mode,
circular shift, gain and mask limits, mixup's input and label mixing against hand values, lam ~ Beta(a, a)."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from thce.augment import LN_PER_DB, AugmentConfig, BatchAugmenter, band_std_of, mix_targets, mixed_loss
from thce.data.normaliser import Normaliser
from thce.errors import ConfigError
from thce.losses import cluster_weights, triple_header_ce, weighted_bce

B, T, M = 6, 40, 16
STD = torch.linspace(0.5, 2.0, M)

ONE_AT_A_TIME = {
    "gain": AugmentConfig(gain_db=6.0),
    "shift": AugmentConfig(time_shift=True),
    "freq_masks": AugmentConfig(freq_masks=2, freq_mask_bands=4),
    "time_masks": AugmentConfig(time_masks=2, time_mask_frames=8),
    "all": AugmentConfig(
        gain_db=6.0, time_shift=True, freq_masks=2, freq_mask_bands=4, time_masks=2, time_mask_frames=8
    ),
}


def features(seed=0, dtype=torch.float32):
    return torch.randn(B, T, M, generator=torch.Generator().manual_seed(seed)).to(dtype) + 3.0  # no exact zeros


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------- config


def test_defaults_are_all_off():
    config = AugmentConfig()
    config.validate()
    assert not config.enabled and not config.input_enabled and not config.mixup and not config.mixup_in_embedding
    assert config.describe() == "off"


@pytest.mark.parametrize(
    "kwargs, on",
    [
        ({"time_shift": True}, "input"),
        ({"gain_db": 3.0}, "input"),
        ({"freq_masks": 1, "freq_mask_bands": 3}, "input"),
        ({"time_masks": 1, "time_mask_frames": 3}, "input"),
        ({"freq_masks": 2}, None),  # width 0: off
        ({"time_mask_frames": 5}, None),  # no masks: off
        ({"mixup_alpha": 0.2}, "mixup"),
        ({"mixup_embedding": "mix"}, None),  # alpha 0: mixup off everywhere
    ],
)
def test_enabled_follows_the_switches(kwargs, on):
    config = AugmentConfig(**kwargs)
    assert config.enabled == (on is not None)
    assert config.input_enabled == (on == "input")
    assert config.mixup == (on == "mixup")


def test_mixup_in_embedding_needs_mix_and_alpha():
    assert AugmentConfig(mixup_alpha=0.2, mixup_embedding="mix").mixup_in_embedding
    assert not AugmentConfig(mixup_alpha=0.2).mixup_in_embedding


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"gain_db": -1.0}, "augment.gain_db"),
        ({"gain_db": math.inf}, "augment.gain_db"),
        ({"freq_masks": -1}, "augment.freq_masks"),
        ({"freq_mask_bands": -2}, "augment.freq_mask_bands"),
        ({"time_masks": -1}, "augment.time_masks"),
        ({"time_mask_frames": -1}, "augment.time_mask_frames"),
        ({"mixup_alpha": -0.1}, "augment.mixup_alpha"),
        ({"mixup_alpha": math.nan}, "augment.mixup_alpha"),
        ({"mixup_embedding": "yes"}, "augment.mixup_embedding"),
    ],
)
def test_validate_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        AugmentConfig(**kwargs).validate()
    with pytest.raises(ConfigError, match=key):
        BatchAugmenter(AugmentConfig(**kwargs), STD)


def test_gain_needs_band_std():
    with pytest.raises(ValueError, match="band_std"):
        BatchAugmenter(AugmentConfig(gain_db=3.0))
    with pytest.raises(ValueError, match="positive"):
        BatchAugmenter(AugmentConfig(gain_db=3.0), torch.zeros(M))


def test_widths_larger_than_the_features_are_errors():
    with pytest.raises(ValueError, match="augment.freq_mask_bands"):
        BatchAugmenter(AugmentConfig(freq_masks=1, freq_mask_bands=M + 1))(features(), gen(0))
    with pytest.raises(ValueError, match="augment.time_mask_frames"):
        BatchAugmenter(AugmentConfig(time_masks=1, time_mask_frames=T + 1))(features(), gen(0))


def test_band_std_of_a_normaliser():
    normaliser = Normaliser(mean=np.zeros(M), std=np.linspace(0.5, 2.0, M))
    assert torch.allclose(band_std_of(normaliser), STD)
    assert band_std_of(None) is None


def test_band_std_is_not_in_the_state_dict():
    assert BatchAugmenter(ONE_AT_A_TIME["all"], STD).state_dict() == {}


# ------------------------------------------------------------------------------------- identity when off


def test_all_off_is_the_identity():
    augmenter = BatchAugmenter(AugmentConfig())
    x = features()
    assert augmenter(x, gen(0)) is x
    mixed, lam, perm = augmenter.mixup(x, gen(0))
    assert mixed is x and torch.equal(lam, torch.ones(B)) and torch.equal(perm, torch.arange(B))


def test_eval_mode_is_the_identity():
    augmenter = BatchAugmenter(AugmentConfig(**{**ONE_AT_A_TIME["all"].__dict__, "mixup_alpha": 0.4}), STD).eval()
    x = features()
    generator = gen(0)
    state = generator.get_state()
    assert augmenter(x, generator) is x
    mixed, lam, perm = augmenter.mixup(x, generator)
    assert mixed is x and torch.equal(lam, torch.ones(B)) and torch.equal(perm, torch.arange(B))
    assert torch.equal(generator.get_state(), state)  # eval draws nothing
    assert not torch.equal(augmenter.train()(x, generator), x)


def test_unmixed_helpers_give_the_unmixed_values():
    targets = F.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3).float()
    _, lam, perm = BatchAugmenter(AugmentConfig()).mixup(features(), gen(0))
    assert torch.equal(mix_targets(targets, lam, perm), targets)
    per_sample = torch.arange(B, dtype=torch.float32)
    assert torch.equal(mixed_loss(lambda y: per_sample[y], torch.arange(B), lam, perm, reduction="none"), per_sample)


# ------------------------------------------------------------------------ determinism, shapes, no aliasing


@pytest.mark.parametrize("name", ONE_AT_A_TIME)
def test_deterministic_under_the_generator(name):
    augmenter = BatchAugmenter(ONE_AT_A_TIME[name], STD)
    x = features()
    first, again, other = augmenter(x, gen(1)), augmenter(x, gen(1)), augmenter(x, gen(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, x)


def test_mixup_deterministic_under_the_generator():
    augmenter = BatchAugmenter(AugmentConfig(mixup_alpha=0.4))
    x = features()
    a, b, c = augmenter.mixup(x, gen(1)), augmenter.mixup(x, gen(1)), augmenter.mixup(x, gen(2))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[1], c[1])


def test_global_random_state_is_untouched():
    augmenter = BatchAugmenter(AugmentConfig(**{**ONE_AT_A_TIME["all"].__dict__, "mixup_alpha": 0.4}), STD)
    state = torch.get_rng_state()
    augmenter.mixup(augmenter(features(), gen(0)), gen(0))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", ONE_AT_A_TIME)
def test_keeps_shape_dtype_and_the_callers_tensor(name, dtype):
    augmenter = BatchAugmenter(AugmentConfig(**{**ONE_AT_A_TIME[name].__dict__, "mixup_alpha": 0.4}), STD)
    x = features(dtype=dtype)
    before = x.clone()
    out = augmenter(x, gen(0))
    mixed, lam, perm = augmenter.mixup(out, gen(0))
    for y in (out, mixed):
        assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
        assert y.data_ptr() != x.data_ptr()
    assert torch.equal(x, before)
    assert lam.shape == (B,) and perm.shape == (B,) and perm.dtype == torch.long


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_same_draws_on_cuda():
    config = AugmentConfig(**{**ONE_AT_A_TIME["all"].__dict__, "mixup_alpha": 0.4})
    x = features()
    cpu = BatchAugmenter(config, STD)
    gpu = BatchAugmenter(config, STD).to("cuda")
    out_cpu = cpu.mixup(cpu(x, gen(3)), gen(4))
    out_gpu = gpu.mixup(gpu(x.cuda(), gen(3)), gen(4))
    assert out_gpu[0].device.type == "cuda" and out_gpu[1].device.type == "cuda"
    for a, b in zip(out_cpu, out_gpu):
        assert torch.allclose(a.float(), b.cpu().float(), atol=1e-5)


# ---------------------------------------------------------------------------------- each augmentation


def test_time_shift_is_a_circular_roll_per_clip():
    x = features()
    out = BatchAugmenter(AugmentConfig(time_shift=True))(x, gen(0))
    assert torch.allclose(out.sum(dim=1), x.sum(dim=1), atol=1e-4)  # sum over time per band kept
    shifts = []
    for i in range(B):
        match = [s for s in range(T) if torch.equal(out[i], torch.roll(x[i], s, dims=0))]
        assert len(match) == 1
        shifts.append(match[0])
    assert len(set(shifts)) > 1  # drawn per clip


def test_time_shift_covers_all_frames():
    x = torch.arange(T, dtype=torch.float32).reshape(1, T, 1).expand(2000, T, 1)
    out = BatchAugmenter(AugmentConfig(time_shift=True))(x, gen(0))
    shifts = out[:, 0, 0].long()  # out[t] = x[t - s], so out[0] = (-s) mod T
    assert set(((-shifts) % T).tolist()) == set(range(T))


def test_gain_is_a_per_clip_level_offset_within_limits():
    x = features()
    gain_db = 6.0
    out = BatchAugmenter(AugmentConfig(gain_db=gain_db), STD)(x, gen(0))
    offset = out - x
    assert torch.allclose(offset, offset[:, :1, :].expand_as(offset), atol=1e-5)  # same in every frame
    gains = offset[:, 0, :] * STD / LN_PER_DB  # back to dB: the same in every band of a clip
    assert torch.allclose(gains, gains[:, :1].expand_as(gains), atol=1e-4)
    assert bool((gains.abs() <= gain_db + 1e-4).all())
    assert len(set(gains[:, 0].round(decimals=3).tolist())) == B


def test_gain_spreads_over_the_whole_range():
    x = torch.zeros(4000, 1, M)
    gains = BatchAugmenter(AugmentConfig(gain_db=6.0), STD)(x, gen(0))[:, 0, 0] * STD[0] / LN_PER_DB
    assert gains.min() < -5.8 and gains.max() > 5.8 and abs(float(gains.mean())) < 0.2


def _runs(flags):
    """Lengths of the runs of True in a 1-d bool sequence."""
    runs, length = [], 0
    for flag in [*flags.tolist(), False]:
        if flag:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return runs


def test_frequency_masks_zero_whole_bands_within_limits():
    masks, width = 2, 4
    x = features()
    out = BatchAugmenter(AugmentConfig(freq_masks=masks, freq_mask_bands=width))(x, gen(0))
    zero = out == 0
    banded = zero.all(dim=1)  # (B, M)
    assert torch.equal(zero, banded[:, None, :].expand_as(zero))  # whole bands only
    assert torch.equal(out[~zero], x[~zero])  # the rest untouched
    for i in range(B):
        runs = _runs(banded[i])
        assert len(runs) <= masks and sum(runs) <= masks * width and all(r <= masks * width for r in runs)


def test_time_masks_zero_whole_frames_within_limits():
    masks, width = 3, 5
    x = features()
    out = BatchAugmenter(AugmentConfig(time_masks=masks, time_mask_frames=width))(x, gen(0))
    zero = out == 0
    framed = zero.all(dim=2)  # (B, T)
    assert torch.equal(zero, framed[:, :, None].expand_as(zero))
    assert torch.equal(out[~zero], x[~zero])
    for i in range(B):
        runs = _runs(framed[i])
        assert len(runs) <= masks and sum(runs) <= masks * width


def test_mask_widths_are_uniform_up_to_the_maximum():
    x = torch.ones(3000, 1, M)
    out = BatchAugmenter(AugmentConfig(freq_masks=1, freq_mask_bands=5))(x, gen(0))
    widths = (out[:, 0, :] == 0).sum(dim=1)
    counts = torch.bincount(widths, minlength=6)
    assert len(counts) == 6 and bool((counts > 400).all())  # 0..5, each ~500
    first_band = (out[:, 0, :] == 0).float().argmax(dim=1)[widths > 0]
    assert int(first_band.min()) == 0 and int(first_band.max()) == M - 1  # starts reach both edges


# ---------------------------------------------------------------------------------------------- mixup


def test_mixup_mixes_inputs_with_the_returned_lam_and_perm():
    x = features()
    mixed, lam, perm = BatchAugmenter(AugmentConfig(mixup_alpha=0.4)).mixup(x, gen(0))
    assert sorted(perm.tolist()) == list(range(B))
    assert bool(((lam >= 0) & (lam <= 1)).all()) and len(set(lam.tolist())) == B  # drawn per clip
    expected = lam[:, None, None] * x + (1 - lam[:, None, None]) * x[perm]
    assert torch.allclose(mixed, expected)


def test_mixup_works_on_cached_embeddings():
    emb = torch.randn(8, 5, generator=gen(1))
    mixed, lam, perm = BatchAugmenter(AugmentConfig(mixup_alpha=1.0)).mixup(emb, gen(0))
    # lerp rounds differently from the two-product form; near-zero entries need an absolute tolerance
    assert torch.allclose(mixed, lam[:, None] * emb + (1 - lam[:, None]) * emb[perm], atol=1e-6)


def test_mixup_enabled_override_for_the_embedding_stage():
    x = features()
    augmenter = BatchAugmenter(AugmentConfig(mixup_alpha=0.4))  # mixup_embedding = "off"
    assert augmenter.mixup(x, gen(0), enabled=augmenter.config.mixup_in_embedding)[0] is x
    on = BatchAugmenter(AugmentConfig(mixup_alpha=0.4, mixup_embedding="mix"))
    assert not torch.equal(on.mixup(x, gen(0), enabled=on.config.mixup_in_embedding)[0], x)


def test_lam_follows_beta_alpha_alpha():
    alpha, n = 0.4, 20000
    _, lam, _ = BatchAugmenter(AugmentConfig(mixup_alpha=alpha)).mixup(torch.zeros(n, 1), gen(0))
    variance = 1 / (4 * (2 * alpha + 1))  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert abs(float(lam.mean()) - 0.5) < 4 * math.sqrt(variance / n)
    assert abs(float(lam.var()) - variance) < 0.01
    for q in (0.05, 0.1, 0.3, 0.5, 0.9):  # the CDF at a few points (sd of each estimate < 0.004)
        assert abs(float((lam < q).float().mean()) - scipy.stats.beta.cdf(q, alpha, alpha)) < 0.015


def test_mix_targets_hand_values():
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mixed = mix_targets(targets, torch.tensor([0.7, 0.7]), torch.tensor([1, 0]))
    assert torch.allclose(mixed, torch.tensor([[0.7, 0.3], [0.3, 0.7]]))
    background = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # an event clip and a background clip
    mixed = mix_targets(background, torch.tensor([0.25, 0.6]), torch.tensor([1, 0]))
    assert torch.allclose(mixed, torch.tensor([[0.0, 0.25], [0.0, 0.4]]))


def test_mix_targets_makes_weighted_bce_the_mixed_loss():
    logits, weights = torch.randn(B, 3), torch.tensor([8.0, 2.0, 5.0])
    targets = F.one_hot(torch.tensor([0, 1, 2, 3, 3, 0]), 4)[:, :3].float()  # class 3 = background
    lam, perm = torch.rand(B), torch.randperm(B)

    def terms(t):
        return F.binary_cross_entropy_with_logits(logits, t, pos_weight=weights, reduction="none").mean(dim=1)

    expected = (lam * terms(targets) + (1 - lam) * terms(targets[perm])).mean()
    assert torch.allclose(weighted_bce(logits, mix_targets(targets, lam, perm), weights), expected)


CLUSTER_CLASS = torch.tensor([0, 0, 1, 2])


def test_mixed_loss_without_mixing_is_the_weighted_thce():
    h, k = torch.randn(B, 4), torch.tensor([0, 1, 2, 3, 0, 2])
    w = cluster_weights(CLUSTER_CLASS)
    lam, perm = torch.ones(B), torch.randperm(B)

    def per_sample(y):
        return triple_header_ce(h, y, CLUSTER_CLASS, reduction="none")

    got = mixed_loss(per_sample, k, lam, perm, weights=w[k])
    assert torch.allclose(got, triple_header_ce(h, k, CLUSTER_CLASS, weights=w))
    assert torch.allclose(mixed_loss(per_sample, k, lam, perm, weights=w[k], reduction="sum"),
                          triple_header_ce(h, k, CLUSTER_CLASS, weights=w, reduction="sum"))  # fmt: skip


def test_mixed_loss_hand_values():
    table = torch.tensor([[1.0, 3.0], [2.0, 5.0]])  # loss of sample i (row) for target j (column)

    def per_sample(y):
        return table[torch.arange(2), y]

    targets, lam, perm = torch.tensor([0, 1]), torch.tensor([0.7, 0.7]), torch.tensor([1, 0])
    none = mixed_loss(per_sample, targets, lam, perm, reduction="none")
    assert torch.allclose(none, torch.tensor([0.7 * 1.0 + 0.3 * 3.0, 0.7 * 5.0 + 0.3 * 2.0]))
    weights = torch.tensor([1.0, 3.0])  # w of clip 0 and clip 1
    mean = mixed_loss(per_sample, targets, lam, perm, weights=weights)
    numerator = 0.7 * 1 * 1.0 + 0.3 * 3 * 3.0 + 0.7 * 3 * 5.0 + 0.3 * 1 * 2.0
    assert torch.allclose(mean, torch.tensor(numerator / (0.7 * 1 + 0.3 * 3 + 0.7 * 3 + 0.3 * 1)))
    with pytest.raises(ValueError, match="reduction"):
        mixed_loss(per_sample, targets, lam, perm, reduction="max")


def test_mixed_loss_backpropagates():
    h = torch.randn(B, 4, requires_grad=True)
    k = torch.tensor([0, 1, 2, 3, 0, 2])
    _, lam, perm = BatchAugmenter(AugmentConfig(mixup_alpha=0.4)).mixup(torch.zeros(B, 1), gen(0))
    mixed_loss(lambda y: triple_header_ce(h, y, CLUSTER_CLASS, reduction="none"), k, lam, perm).backward()
    assert h.grad is not None and bool(torch.isfinite(h.grad).all())
