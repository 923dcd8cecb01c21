"""Speed of the CNN encoders' channels-last weights (thce's layout) against the contiguous NCHW layout they had
before, measured in the same run: the named baseline is ``nchw``, the same encoder with the same weights.

Encoders: the paper's clip CNN (``[model]`` defaults, 10 s clips: 1000 x 64) and the frame CRNN of
``configs/synth-dcase2017-crnn.toml`` (30 s clips: 3000 x 64). For each torch thread count and encoder, layouts
interleaved round by round (so that a shared machine's load falls on both alike):

- training step: encoder + sigmoid head, class-weighted BCE (Eq. 2, over frames for the CRNN), backward, Adam, on
  ``--batch`` clips (default: 32 clips of 10 s, 16 of 30 s: the configs' batch for the CRNN);
- inference: eval mode, ``torch.inference_mode``, the same batch in one pass.

Prints JSON (and writes ``--out``): median seconds per layout and ``speedup`` = nchw / channels_last, plus
``max_abs_diff``: the largest difference of the two layouts' eval outputs (float rounding only).

    python benchmarks/channels_last.py [--threads 1 2] [--steps 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from thce.config import load_config
from thce.encoders import ModelConfig, build_encoder
from thce.io import write_json
from thce.losses import weighted_bce
from thce.machine import describe_machine
from thce.models import DetectorHead

ROOT = Path(__file__).resolve().parents[1]
MELS, EVENTS = 64, 3


def encoders() -> dict[str, tuple[nn.Module, int, int]]:
    """name -> (encoder as thce builds it, frames per clip, training batch)."""
    torch.manual_seed(0)
    clip = build_encoder(ModelConfig(), frames=1000, n_mels=MELS)
    frame_config = load_config(ROOT / "configs" / "synth-dcase2017-crnn.toml").frame_model
    crnn = build_encoder(frame_config, n_mels=MELS)
    return {"clip_cnn": (clip, 1000, 32), "dcase_crnn": (crnn, 3000, 16)}


def as_nchw(encoder: nn.Module) -> nn.Module:
    """A copy of ``encoder`` with every 4-D weight contiguous (NCHW): the layout before channels-last."""
    return copy.deepcopy(encoder).to(memory_format=torch.contiguous_format)


def train_step_fn(encoder: nn.Module, x: torch.Tensor) -> Any:
    head = DetectorHead(encoder.embedding_dim, EVENTS)
    with torch.no_grad():
        shape = head(encoder.eval()(x[:1])).shape[1:]
    targets = (torch.rand(len(x), *shape, generator=torch.Generator().manual_seed(1)) < 0.1).float()
    weights = torch.full((EVENTS,), 9.0)
    optimiser = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-3)

    def step() -> None:
        encoder.train()
        loss = weighted_bce(head(encoder(x)), targets, weights)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(encoder: nn.Module, frames: int, batch: int, steps: int) -> dict[str, Any]:
    layouts = {"channels_last": copy.deepcopy(encoder), "nchw": as_nchw(encoder)}
    x = torch.randn(batch, frames, MELS, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        outputs = [layout.eval()(x) for layout in layouts.values()]
    max_abs_diff = float((outputs[0] - outputs[1]).abs().max())
    steps_fn = {layout: train_step_fn(model, x) for layout, model in layouts.items()}
    train: dict[str, list[float]] = {layout: [] for layout in layouts}
    infer: dict[str, list[float]] = {layout: [] for layout in layouts}
    for round_ in range(steps + 1):  # the first round warms up
        for layout, model in layouts.items():
            elapsed = timed(steps_fn[layout])
            model.eval()
            with torch.inference_mode():
                inferred = timed(lambda: model(x))  # noqa: B023 (called at once)
            if round_:
                train[layout].append(elapsed)
                infer[layout].append(inferred)
    result: dict[str, Any] = {"frames": frames, "batch": batch, "max_abs_diff": max_abs_diff}
    for kind, times in (("train_step_s", train), ("inference_s", infer)):
        medians = {layout: statistics.median(values) for layout, values in times.items()}
        result[kind] = {layout: round(value, 3) for layout, value in medians.items()}
        result[kind]["speedup"] = round(medians["nchw"] / medians["channels_last"], 2)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=3, help="timed rounds per encoder (after 1 warm-up)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "benchmark": "channels_last",
        "baseline": "nchw: the same encoder and weights with contiguous (NCHW) 4-D weights, as before",
        "machine": describe_machine(),
        "by_threads": {},
    }
    built = encoders()
    for threads in args.threads:
        torch.set_num_threads(threads)
        result["by_threads"][str(threads)] = {
            name: measure(encoder, frames, batch, args.steps) for name, (encoder, frames, batch) in built.items()
        }
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
