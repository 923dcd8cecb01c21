"""Training speed at the paper's input shape (10 s clips: 1000 frames x 64 mels, batch 64) on this machine.

Measures, in the same run and interleaved step by step so that machine load affects both alike:
- baseline step: encoder + sigmoid head, class-weighted BCE (Eq. 2), Adam update;
- THCE step: encoder + cluster layer (31 clusters, the 2:2:1:26 setting), triple-header CE (Eqs. 5-9), Adam update.

Prints JSON: samples/s of each and ``thce_overhead`` = median THCE step time / median baseline step time.

    python benchmarks/train_step.py [--steps 10] [--encoders cnn lstm] [--device cuda] [--precision fp32 bf16]

On a GPU each step is timed to its end (``torch.cuda.synchronize``); ``--precision bf16`` runs the forward passes
under bfloat16 autocast as ``train.precision = "bf16"`` does, and one run measures each precision named.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from thce.cluster import clusters_per_class
from thce.losses import TripleHeaderCrossEntropy, weighted_bce
from thce.machine import describe_machine
from thce.encoders import ModelConfig, build_encoder
from thce.models import DetectorHead


def bench_encoder(
    name: str, *, steps: int, batch: int, frames: int, n_mels: int, device: str = "cpu", precision: str = "fp32"
) -> dict:
    torch.manual_seed(0)
    dev = torch.device(device)
    x = torch.randn(batch, frames, n_mels, device=dev)
    events = torch.randint(0, 4, (batch,), device=dev)  # 3 events + background
    targets = torch.nn.functional.one_hot(events, 4)[:, :3].float()
    class_weights = torch.tensor([13.0, 13.0, 26.0], device=dev)
    autocast = lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")  # noqa: E731
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    k_per_class = clusters_per_class([2, 2, 1, 26])
    cluster_class = torch.repeat_interleave(torch.arange(4), k_per_class)
    cluster_index = torch.randint(0, len(cluster_class), (batch,), device=dev)

    base_encoder = build_encoder(ModelConfig(encoder=name), frames=frames, n_mels=n_mels).to(dev)
    head = DetectorHead(base_encoder.embedding_dim, 3).to(dev)
    base_opt = torch.optim.Adam([*base_encoder.parameters(), *head.parameters()], lr=1e-3)

    thce_encoder = build_encoder(ModelConfig(encoder=name), frames=frames, n_mels=n_mels).to(dev)
    centroids = torch.nn.functional.normalize(torch.randn(len(cluster_class), thce_encoder.embedding_dim), dim=1)
    loss_fn = TripleHeaderCrossEntropy.from_centroids(centroids, cluster_class, alpha=16.0).to(dev)
    thce_opt = torch.optim.Adam([*thce_encoder.parameters(), *loss_fn.parameters()], lr=1e-3)

    def baseline_step() -> None:
        with autocast():
            loss = weighted_bce(head(base_encoder(x)).float(), targets, class_weights)
        base_opt.zero_grad(set_to_none=True)
        loss.backward()
        base_opt.step()

    def thce_step() -> None:
        with autocast():
            loss = loss_fn(thce_encoder(x).float(), cluster_index)
        thce_opt.zero_grad(set_to_none=True)
        loss.backward()
        thce_opt.step()

    for _ in range(2):  # warm-up
        baseline_step()
        thce_step()
    sync()
    times: dict[str, list[float]] = {"baseline": [], "thce": []}
    for _ in range(steps):
        for key, step in (("baseline", baseline_step), ("thce", thce_step)):
            start = time.perf_counter()
            step()
            sync()
            times[key].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in times.items()}
    return {
        "baseline_samples_per_s": round(batch / median["baseline"], 2),
        "thce_samples_per_s": round(batch / median["thce"], 2),
        "baseline_step_s": round(median["baseline"], 4),
        "thce_step_s": round(median["thce"], 4),
        "thce_overhead": round(median["thce"] / median["baseline"], 4),
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--mels", type=int, default=64)
    parser.add_argument("--encoders", nargs="+", default=["cnn", "lstm"], choices=["cnn", "lstm"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    args = parser.parse_args(argv)
    shape = {"steps": args.steps, "batch": args.batch, "frames": args.frames, "n_mels": args.mels}
    result = {
        "benchmark": "train_step",
        "machine": describe_machine(),
        "input": {"batch": args.batch, "frames": args.frames, "mels": args.mels},
        "device": args.device,
        "baseline": "encoder + sigmoid head, class-weighted BCE (Eq. 2)",
        "goal": "thce_overhead <= 1.10",
        "encoders": {
            name if args.precision == ["fp32"] else f"{name}-{precision}": bench_encoder(
                name, **shape, device=args.device, precision=precision
            )
            for name in args.encoders
            for precision in args.precision
        },
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
