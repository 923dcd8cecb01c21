"""Speed of the frame-level encoders (issue 30) on DCASE-style 30 s clips (3000 frames x 64 mels), against the
clip-level CNNEncoder on the same input, measured in the same run.

For each torch thread count (default 2, then 1) and each variant, interleaved round by round so that the load of a
shared machine falls on every variant alike:

- training step: encoder + sigmoid head, frame-wise class-weighted BCE (Eq. 2 over frames; the clip CNN: over
  clips), backward, Adam, on a batch of ``--batch`` clips -> ``train_clips_per_s`` and ``epoch_s_per_1000_clips``;
- inference: eval mode, ``torch.inference_mode``, one 30 s clip per forward pass -> ``rtf`` (audio seconds per
  second, median; ``rtf_best`` from the fastest pass) and, for convolutional variants, ``rtf_10s_pieces``: the clip
  as three 1000-frame passes (a 32 x 3000 x 64 first-block map does not stay in the caches; 1000 frames do).

Variants: ``clip_cnn`` (the named baseline: the paper's clip CNN, thce.models.CNNEncoder), the paper-sized frame CNN
and CRNN, the CNN with its blocks pooling first (``cnn_block_order = "pool_first"``), a smaller CNN (16 / 32
channels, 5x5: ``cnn_small``; pooling first too: ``cnn_fast``, ``crnn_fast`` and ``crnn_fast_lstm``, whose recurrent layer
is an LSTM, not a GRU: ``frame_model.rnn_type``; ``crnn_dcase``: ``crnn_fast`` with the DCASE config's 32 recurrent
units per direction, ``crnn_dcase_nn_gru`` the same trained through torch's ``nn.GRU`` rather than
:mod:`thce.recurrent`'s backward, ``crnn_dcase_bf16`` its training steps under bfloat16 autocast), the LSTM with both strides (``lstm_states``: inference only, its
training step took minutes) and the DCASE 2017 Task 2 baseline MLP. ``uptime`` is recorded before and after: the
machine may be shared, and contention slows multi-threaded runs (and the recurrent ones most) far more than single
ones. The C heap keeps freed blocks for reuse as under the CLI (:func:`thce.allocator.reuse_freed_memory`;
``--allocator default``: glibc's own, as this benchmark ran before 2026-12-07).

    python benchmarks/frame_models.py [--threads 2 1] [--batch 16] [--steps 3] [--reps 5] [--allocator reuse]
        [--variants NAME ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from thce import frame_models
from thce.allocator import reuse_freed_memory
from thce.encoders import FrameModelConfig, ModelConfig, build_encoder
from thce.io import write_json
from thce.losses import weighted_bce
from thce.machine import describe_machine
from thce.models import DetectorHead
from thce.recurrent import run_gru

CLIP_S, FRAMES, MELS, EVENTS = 30.0, 3000, 64, 3
SMALL = {"cnn_channels": (16, 32), "cnn_kernel": 5}
FAST = {**SMALL, "cnn_block_order": "pool_first"}
#: name -> frame_model options (``None``: the clip-level CNN baseline)
VARIANTS: dict[str, dict[str, Any] | None] = {
    "clip_cnn": None,
    "cnn": {},
    "cnn_pool_first": {"cnn_block_order": "pool_first"},
    "cnn_small": SMALL,
    "cnn_fast": FAST,
    "crnn": {"encoder": "crnn"},
    "crnn_fast": {"encoder": "crnn", **FAST},
    "crnn_fast_lstm": {"encoder": "crnn", **FAST, "rnn_type": "lstm"},
    "crnn_dcase": {"encoder": "crnn", **FAST, "rnn_hidden_size": 32},  # configs/synth-dcase2017-crnn.toml's network
    "crnn_dcase_nn_gru": {"encoder": "crnn", **FAST, "rnn_hidden_size": 32},
    "crnn_dcase_bf16": {"encoder": "crnn", **FAST, "rnn_hidden_size": 32},
    "lstm": {"encoder": "lstm"},
    "lstm_states": {"encoder": "lstm", "lstm_stride_by": "states"},
    "dcase2017_mlp": {"encoder": "dcase2017_mlp"},
}
INFERENCE_ONLY = {"lstm_states"}
#: variants whose training steps run torch's nn.GRU, not thce.recurrent's (the same network as ``crnn_dcase``)
NN_GRU = {"crnn_dcase_nn_gru"}
#: variants whose training steps run under bfloat16 autocast (``train.precision = "bf16"``; the recurrence stays fp32)
BF16 = {"crnn_dcase_bf16"}


def build(options: dict[str, Any] | None) -> nn.Module:
    torch.manual_seed(0)
    if options is None:
        return build_encoder(ModelConfig(), frames=FRAMES, n_mels=MELS)
    config = FrameModelConfig(**options)
    return build_encoder(config, n_mels=MELS, normalise=config.encoder != "dcase2017_mlp")


def macs_per_clip(encoder: nn.Module) -> int:
    """Multiply-accumulates of one eval-mode pass over a 30 s clip in the convolutions, dense and recurrent layers
    (the work that does not depend on the machine's load)."""
    total = 0

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += output.numel() * module.in_channels * math.prod(module.kernel_size) // module.groups
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features
        elif isinstance(module, (nn.LSTM, nn.GRU)):
            gates = 4 if isinstance(module, nn.LSTM) else 3
            steps = inputs[0].shape[0] * inputs[0].shape[1]
            directions = 2 if module.bidirectional else 1
            total += steps * directions * gates * module.hidden_size * (module.input_size + module.hidden_size)

    counted = (nn.Conv2d, nn.Linear, nn.LSTM, nn.GRU)
    handles = [m.register_forward_hook(hook) for m in encoder.modules() if isinstance(m, counted)]
    try:
        with torch.inference_mode():
            encoder.eval()(torch.zeros(1, FRAMES, MELS))
    finally:
        for handle in handles:
            handle.remove()
    return total


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def train_step_fn(encoder: nn.Module, batch: int, *, nn_gru: bool = False, bf16: bool = False) -> Callable[[], None]:
    """One training step on random clips with sparse frame targets (a few per cent of frames active); ``nn_gru``:
    the recurrent layer as torch's ``nn.GRU`` runs it, not through :func:`thce.recurrent.run_gru`; ``bf16``: the
    forward pass under bfloat16 autocast, as the training engine runs it with ``train.precision = "bf16"``."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, FRAMES, MELS, generator=gen)
    head = DetectorHead(encoder.embedding_dim, EVENTS)
    with torch.no_grad():
        shape = head(encoder.eval()(x[:1])).shape[1:]
    targets = (torch.rand(batch, *shape, generator=gen) < 0.05).float()
    weights = torch.full((EVENTS,), 19.0)
    optimiser = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-3)
    encoder.train()

    def step() -> None:
        frame_models.run_gru = (lambda gru, v: gru(v)[0]) if nn_gru else run_gru
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = head(encoder(x))
        loss = weighted_bce(outputs.float(), targets, weights)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(threads: int, *, batch: int, steps: int, reps: int, variants: list[str]) -> dict[str, dict[str, Any]]:
    torch.set_num_threads(threads)
    encoders = {name: build(VARIANTS[name]) for name in variants}
    results: dict[str, dict[str, Any]] = {}
    for name, encoder in encoders.items():
        results[name] = {
            "embedding_dim": encoder.embedding_dim,
            "frame_stride": getattr(encoder, "frame_stride", None),
            "parameters": sum(p.numel() for p in encoder.parameters()),
            "mmacs_per_clip": round(macs_per_clip(encoder) / 1e6, 1),
            "options": VARIANTS[name],
        }
    # training: one warm-up step, then ``steps`` rounds over the variants
    trainable = [n for n in variants if n not in INFERENCE_ONLY]
    step_fns = {
        name: train_step_fn(encoders[name], batch, nn_gru=name in NN_GRU, bf16=name in BF16) for name in trainable
    }
    train_times: dict[str, list[float]] = {name: [] for name in trainable}
    for round_ in range(steps + 1):
        for name in trainable:
            elapsed = timed(step_fns[name])
            if round_:
                train_times[name].append(elapsed)
    for name, times in train_times.items():
        median = statistics.median(times)
        results[name].update(
            train_step_s=round(median, 3), train_step_s_all=[round(t, 3) for t in times],
            train_clips_per_s=round(batch / median, 2), epoch_s_per_1000_clips=round(1000 * median / batch, 1),
        )  # fmt: skip
    # inference: one 30 s clip per pass
    clip = torch.randn(1, FRAMES, MELS, generator=torch.Generator().manual_seed(2))
    pieces = clip.reshape(3, 1, FRAMES // 3, MELS)
    whole: dict[str, list[float]] = {name: [] for name in variants}
    split: dict[str, list[float]] = {name: [] for name in variants if name.startswith(("cnn", "crnn"))}
    for encoder in encoders.values():
        encoder.eval()
    with torch.inference_mode():
        for round_ in range(reps + 1):
            for name in variants:
                encoder = encoders[name]
                elapsed = timed(lambda: encoder(clip))  # noqa: B023 (called at once)
                if round_:
                    whole[name].append(elapsed)
                if name in split:
                    elapsed = timed(lambda: [encoder(piece) for piece in pieces])  # noqa: B023
                    if round_:
                        split[name].append(elapsed)
    for name, times in whole.items():
        results[name].update(rtf=round(CLIP_S / statistics.median(times), 1), rtf_best=round(CLIP_S / min(times), 1))
        if name in split:
            results[name]["rtf_10s_pieces"] = round(CLIP_S / statistics.median(split[name]), 1)
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--batch", type=int, default=16, help="clips of 30 s per training step")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per variant (after 1 warm-up)")
    parser.add_argument("--reps", type=int, default=5, help="timed inference passes per variant (after 1 warm-up)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--allocator", choices=["reuse", "default"], default="reuse", help="as the CLI, or glibc's")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.allocator == "reuse":
        reuse_freed_memory()
    result: dict[str, Any] = {
        "benchmark": "frame_models",
        "uptime_at_start": uptime(),
        "input": {"clip_s": CLIP_S, "frames": FRAMES, "mels": MELS, "events": EVENTS, "train_batch": args.batch},
        "baseline": "clip_cnn: the paper's clip-level CNNEncoder on the same 3000 x 64 input",
        "goal": "issue 30: detection >= 300x real time with the CNN on 2 cores; <= 30 min per seed for all methods",
        "allocator": args.allocator,
        "machine": describe_machine(),  # torch_threads: the default; each entry of by_threads sets its own
        "by_threads": {},
    }
    for threads in args.threads:
        started = time.perf_counter()
        result["by_threads"][str(threads)] = run(
            threads, batch=args.batch, steps=args.steps, reps=args.reps, variants=args.variants
        )
        result[f"wall_s_threads_{threads}"] = round(time.perf_counter() - started, 1)
        result[f"uptime_after_threads_{threads}"] = uptime()
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
