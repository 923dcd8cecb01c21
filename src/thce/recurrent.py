"""A faster training pass of a one-layer bidirectional GRU on the CPU (the DCASE-style CRNN's recurrent layer).

``nn.GRU`` on the CPU runs each time step as a dozen small autograd operations per direction, and its backward walks
them one by one: on a batch of 16 clips of 600 frames (the DCASE config's CRNN: 128 inputs, 32 units per direction)
its backward, walking them one by one, costs several times its forward (the LSTM escapes this through oneDNN's
fused cell). :func:`bidirectional_gru` is the
same function with its own backward: both directions advance together (one batched matrix product per step), the
input projections of all steps are one matrix product, and the backward is written out by hand (the gate values are
kept from the forward), so the weight gradients are again one product each over all steps. Same equations as
``nn.GRU`` (PyTorch's gate order r, z, n and its ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``), same
parameters: only the order of floating-point operations differs (outputs and gradients agree to ~1e-6;
tests/test_recurrent.py). The DCASE config's CRNN trains 1.16x faster per step on one thread and 1.35x on two
(``python benchmarks/frame_models.py --threads 1 2 --variants crnn_dcase crnn_dcase_nn_gru crnn_dcase_bf16``:
benchmarks/results/frame_models_gru_backward.json, a 2-core AMD EPYC).

:func:`run_gru` uses it where it pays and is safe (a CPU pass that records gradients, of a one-layer bidirectional
``batch_first`` GRU with float32 weights and a zero initial state; under bf16 autocast the recurrence still runs in
float32) and ``nn.GRU`` itself everywhere else (inference, CUDA's cuDNN, export).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def _fast_path_applies(gru: nn.GRU, x: Tensor) -> bool:
    return (
        torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and gru.num_layers == 1
        and gru.bidirectional
        and gru.batch_first
        and gru.bias
        and getattr(gru, "proj_size", 0) == 0
        and all(p.dtype == torch.float32 for p in gru.parameters())
        and x.dim() == 3
        and x.shape[1] > 0
    )


def run_gru(gru: nn.GRU, x: Tensor) -> Tensor:
    """The states of ``gru`` over ``x``: ``(B, T, I) -> (B, T, 2 * H)`` (forward direction's states first), as
    ``gru(x)[0]`` with a zero initial state; through :func:`bidirectional_gru` where that is faster."""
    if not _fast_path_applies(gru, x):
        return gru(x)[0]
    with torch.autocast("cpu", enabled=False):  # under bf16 autocast the recurrence still runs in float32
        return bidirectional_gru(
            x.float(),
            gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0,
            gru.weight_ih_l0_reverse, gru.weight_hh_l0_reverse, gru.bias_ih_l0_reverse, gru.bias_hh_l0_reverse,
        )  # fmt: skip


def bidirectional_gru(x: Tensor, *weights: Tensor) -> Tensor:
    """One bidirectional GRU layer, zero initial state: ``x (B, T, I)`` -> ``(B, T, 2H)``. ``weights``: ``nn.GRU``'s
    ``weight_ih_l0 (3H, I)``, ``weight_hh_l0 (3H, H)``, ``bias_ih_l0 (3H)``, ``bias_hh_l0 (3H)``, then the same four
    ``_reverse``."""
    return _BidirectionalGRU.apply(x, *weights)


def _stack_directions(forward: Tensor, backward: Tensor) -> Tensor:
    """Two directions' ``(B, T, K)`` in processing order: ``(T, 2, B, K)``, the backward direction's time reversed."""
    return torch.stack((forward.transpose(0, 1), backward.flip(1).transpose(0, 1)), dim=1)


def _unstack_directions(stacked: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`_stack_directions`: ``(T, 2, B, K)`` -> two ``(B, T, K)`` in clip time."""
    return stacked[:, 0].transpose(0, 1), stacked[:, 1].flip(0).transpose(0, 1)


class _BidirectionalGRU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, *weights: Tensor) -> Tensor:  # type: ignore[override]
        w_ih_f, w_hh_f, b_ih_f, b_hh_f, w_ih_b, w_hh_b, b_ih_b, b_hh_b = weights
        hidden = w_hh_f.shape[1]
        batch, steps, _ = x.shape
        # input projections of every step at once, both directions: (T, 2, B, 3H)
        w_ih = torch.cat((w_ih_f, w_ih_b))  # (6H, I)
        b_ih = torch.cat((b_ih_f, b_ih_b))
        gi_both = torch.addmm(b_ih, x.reshape(-1, x.shape[2]), w_ih.t()).view(batch, steps, 6 * hidden)
        gi = _stack_directions(gi_both[..., : 3 * hidden], gi_both[..., 3 * hidden :])
        w_hh_t = torch.stack((w_hh_f.t(), w_hh_b.t()))  # (2, H, 3H)
        b_hh = torch.stack((b_hh_f, b_hh_b)).unsqueeze(1)  # (2, 1, 3H)
        h = x.new_zeros(2, batch, hidden)
        states, gates_rz, gates_n, gh_n = [], [], [], []
        for t in range(steps):
            gh = torch.baddbmm(b_hh, h, w_hh_t)  # (2, B, 3H)
            rz = torch.sigmoid(gi[t, :, :, : 2 * hidden] + gh[..., : 2 * hidden])
            r, z = rz[..., :hidden], rz[..., hidden:]
            ghn = gh[..., 2 * hidden :]
            n = torch.tanh(torch.addcmul(gi[t, :, :, 2 * hidden :], r, ghn))
            h = torch.addcmul(n, z, h - n)  # (1 - z) * n + z * h
            states.append(h)
            gates_rz.append(rz)
            gates_n.append(n)
            gh_n.append(ghn)
        out = torch.stack(states)  # (T, 2, B, H)
        ctx.save_for_backward(x, w_ih, w_hh_t, out, torch.stack(gates_rz), torch.stack(gates_n), torch.stack(gh_n))
        forward_states, backward_states = _unstack_directions(out)
        return torch.cat((forward_states, backward_states), dim=2)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, w_ih, w_hh_t, out, gates_rz, gates_n, gh_n = ctx.saved_tensors
        steps, _, batch, hidden = out.shape
        grad_states = _stack_directions(grad_out[..., :hidden], grad_out[..., hidden:])  # (T, 2, B, H)
        w_hh = w_hh_t.transpose(1, 2)  # (2, 3H, H)
        zeros = out.new_zeros(2, batch, hidden)
        h_prev_all = torch.cat((zeros.unsqueeze(0), out[:-1]))  # (T, 2, B, H)
        r, z = gates_rz[..., :hidden], gates_rz[..., hidden:]
        # the factors of the chain rule that do not depend on the incoming gradient, for all steps at once
        to_n = (1 - z) * (1 - gates_n * gates_n)  # dh -> n's pre-activation
        to_r = gh_n * r * (1 - r)  # n's pre-activation -> r's
        to_z = (h_prev_all - gates_n) * z * (1 - z)  # dh -> z's pre-activation
        grads_gh, grads_n = [], []  # d/d(hidden projection W_hh h + b_hh), d/d(n's input projection), last step first
        dh = zeros
        for t in range(steps - 1, -1, -1):
            dh = dh + grad_states[t]
            dn = dh * to_n[t]
            grad_gh = torch.cat((dn * to_r[t], dh * to_z[t], dn * r[t]), dim=2)  # (2, B, 3H)
            dh = torch.baddbmm(dh * z[t], grad_gh, w_hh)
            grads_gh.append(grad_gh)
            grads_n.append(dn)
        grad_gh_all = torch.stack(grads_gh[::-1])  # (T, 2, B, 3H)
        grad_gi = torch.cat((grad_gh_all[..., : 2 * hidden], torch.stack(grads_n[::-1])), dim=3)
        # weight gradients over all steps at once
        gh_flat = grad_gh_all.permute(1, 3, 0, 2).reshape(2, 3 * hidden, steps * batch)
        grad_w_hh = torch.bmm(gh_flat, h_prev_all.permute(1, 0, 2, 3).reshape(2, steps * batch, hidden))
        grad_b_hh = grad_gh_all.sum(dim=(0, 2))  # (2, 3H)
        gi_forward, gi_backward = _unstack_directions(grad_gi)  # (B, T, 3H) each
        grad_gi_flat = torch.cat((gi_forward, gi_backward), dim=2).reshape(batch * steps, 6 * hidden)
        x_flat = x.reshape(batch * steps, -1)
        grad_x = (grad_gi_flat @ w_ih).view_as(x) if ctx.needs_input_grad[0] else None
        grad_w_ih = grad_gi_flat.t() @ x_flat  # (6H, I)
        grad_b_ih = grad_gi_flat.sum(0)
        three = 3 * hidden
        return (
            grad_x,
            grad_w_ih[:three], grad_w_hh[0], grad_b_ih[:three], grad_b_hh[0],
            grad_w_ih[three:], grad_w_hh[1], grad_b_ih[three:], grad_b_hh[1],
        )  # fmt: skip
