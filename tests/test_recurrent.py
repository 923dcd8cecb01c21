"""thce.recurrent: the CPU training pass of a bidirectional GRU with its own backward is nn.GRU's function."""

import pytest
import torch
from torch import nn

from thce.encoders import FrameModelConfig, build_encoder
from thce.recurrent import bidirectional_gru, run_gru


def _gru_and_input(batch: int, steps: int, inputs: int, hidden: int, seed: int = 0) -> tuple[nn.GRU, torch.Tensor]:
    torch.manual_seed(seed)
    gru = nn.GRU(inputs, hidden, batch_first=True, bidirectional=True)
    return gru, torch.randn(batch, steps, inputs, requires_grad=True)


def _weights(gru: nn.GRU) -> list[torch.Tensor]:
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    return [getattr(gru, name + suffix) for suffix in ("", "_reverse") for name in names]


@pytest.mark.parametrize("shape", [(3, 7, 5, 4), (16, 120, 128, 32), (1, 1, 3, 2), (2, 2, 1, 1)])
def test_outputs_and_gradients_equal_nn_gru(shape):
    gru, x = _gru_and_input(*shape)
    reference = gru(x)[0]
    upstream = torch.randn_like(reference)
    expected = torch.autograd.grad(reference, [x, *_weights(gru)], upstream)
    out = run_gru(gru, x)
    assert out.grad_fn is not None and "BidirectionalGRU" in type(out.grad_fn).__name__  # the fast path ran
    got = torch.autograd.grad(out, [x, *_weights(gru)], upstream)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    for name, a, b in zip(["x", *(n for n, _ in gru.named_parameters())], got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()), msg=f"gradient of {name}")


def test_gradients_against_finite_differences():
    """Independent of nn.GRU: torch.autograd.gradcheck in float64 on the function itself."""
    torch.manual_seed(1)
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    gru = nn.GRU(3, 2, batch_first=True, bidirectional=True).double()
    weights = [w.detach().clone().requires_grad_() for w in _weights(gru)]
    assert torch.autograd.gradcheck(lambda *a: bidirectional_gru(*a), (x, *weights))


def test_hand_computed_single_step():
    """One step from a zero state, one unit, by hand: h = (1 - z) * n with z = sigmoid(w_iz x + b_iz + b_hz) and
    n = tanh(w_in x + b_in + r * b_hn), r = sigmoid(w_ir x + b_ir + b_hr) (the state's own terms vanish at h = 0)."""
    gru = nn.GRU(1, 1, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for suffix in ("", "_reverse"):
            getattr(gru, "weight_ih_l0" + suffix).copy_(torch.tensor([[0.5], [-1.0], [2.0]]))
            getattr(gru, "weight_hh_l0" + suffix).copy_(torch.tensor([[3.0], [3.0], [3.0]]))
            getattr(gru, "bias_ih_l0" + suffix).copy_(torch.tensor([0.1, 0.2, 0.3]))
            getattr(gru, "bias_hh_l0" + suffix).copy_(torch.tensor([-0.1, 0.4, 0.5]))
    x = torch.tensor([[[0.8]]], requires_grad=True)
    r = torch.sigmoid(torch.tensor(0.5 * 0.8 + 0.1 - 0.1))
    z = torch.sigmoid(torch.tensor(-1.0 * 0.8 + 0.2 + 0.4))
    n = torch.tanh(2.0 * 0.8 + 0.3 + r * 0.5)
    h = (1 - z) * n
    torch.testing.assert_close(run_gru(gru, x).detach(), torch.stack([h, h]).view(1, 1, 2))


def test_inference_keeps_nn_gru():
    gru, x = _gru_and_input(4, 9, 6, 3)
    with torch.no_grad():
        assert torch.equal(run_gru(gru, x), gru(x)[0])


@pytest.mark.parametrize("options", [{"bidirectional": False}, {"num_layers": 2}, {"batch_first": False}])
def test_other_grus_run_as_they_are(options):
    torch.manual_seed(0)
    gru = nn.GRU(4, 3, **{"batch_first": True, "bidirectional": True, **options})
    x = torch.randn(2, 5, 4, requires_grad=True)
    assert torch.equal(run_gru(gru, x), gru(x)[0])


def test_bf16_autocast_keeps_the_recurrence_in_float32():
    gru, x = _gru_and_input(2, 30, 8, 4)
    reference = gru(x)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run_gru(gru, x.to(torch.bfloat16))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference, rtol=0, atol=2e-2)  # only the input's rounding to bf16 differs


def test_crnn_training_step_matches_nn_gru(monkeypatch):
    """A small CRNN as the DCASE config builds it: a training pass's encoder gradients are those of the nn.GRU path."""
    config = FrameModelConfig(encoder="crnn", rnn_hidden_size=8, cnn_channels=(4, 8), cnn_kernel=3,
                              cnn_block_order="pool_first", remove_clip_mean=True)  # fmt: skip
    torch.manual_seed(0)
    encoder = build_encoder(config, n_mels=64).train()
    x = torch.randn(3, 200, 64)

    def gradients() -> list[torch.Tensor]:
        torch.manual_seed(5)  # the same dropout masks
        encoder.zero_grad()
        encoder(x).pow(2).sum().backward()
        return [p.grad.clone() for p in encoder.parameters()]

    fast = gradients()
    monkeypatch.setattr("thce.frame_models.run_gru", lambda gru, v: gru(v)[0])
    slow = gradients()
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
