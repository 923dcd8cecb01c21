"""Data-parallel training throughput: one process against ``torchrun`` ranks, the same global batch, same run.

Each configuration trains the paper's baseline (encoder + sigmoid layer, Eq. 2) end to end for ``--epochs`` epochs
on ``--clips`` random 1000 x 64 log-mel inputs, with one PyTorch thread per process, in a fresh ``torchrun`` job
(``--nproc_per_node`` 1, then 2, ...); global batch ``--batch`` (per rank: batch / ranks). Prints JSON:

- ``clips_per_s``: training clips per second (wall time of the epochs after the first, which warms up) per
  number of ranks; ``speedup``: against 1 rank; ``efficiency``: speedup / ranks (1.0 = linear);
- ``load_average_*`` and ``machine``: on a shared machine other processes take cores and lower the speedup.

With 2 cores, 2 ranks can at best double 1 rank's throughput; what is lost is DDP's gradient all-reduce, the
gather of validation embeddings and the per-epoch buffer broadcast.

Usage: ``python benchmarks/data_parallel.py [--encoder lstm|cnn] [--ranks 1 2] [--clips 256] [--epochs 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def child(encoder: str, clips: int, epochs: int, batch: int) -> None:
    """One torchrun rank: train, and (rank 0) print the timing as JSON."""
    import torch

    from thce.config import ExperimentConfig
    from thce.distributed import init_distributed, shutdown
    from thce.methods import build_detector, build_method_encoder
    from thce.encoders import ModelConfig
    from thce.training.algorithm1 import train_baseline
    from thce.training.data import TrainingData
    from thce.training.engine import MetricsLog, RunContext, StageConfig, TrainConfig

    torch.set_num_threads(1)
    dist = init_distributed("cpu")
    rng = np.random.default_rng(0)
    n_val = 32
    features = rng.standard_normal((clips + n_val, 1000, 64), dtype=np.float32)
    class_index = rng.integers(0, 4, clips + n_val)
    splits = {"train": np.arange(clips), "val": np.arange(clips, clips + n_val), "test": np.arange(0)}
    data = TrainingData(features, class_index, splits, ("dog", "baby", "gun"))
    train = TrainConfig(batch_size=batch // dist.world_size)
    log = MetricsLog()
    ctx = RunContext(train=train, log=log, dist=dist)
    torch.manual_seed(0)
    config = ExperimentConfig(model=ModelConfig(encoder=encoder))  # 10 s clips: 1000 frames x 64 mels
    model = build_detector(config, "baseline", build_method_encoder(config, "baseline"), num_events=data.num_events,
                           train_class_counts=data.class_counts("train"))  # fmt: skip
    start = time.perf_counter()
    train_baseline(model, data, StageConfig(max_epochs=epochs, patience=epochs + 1), ctx)
    wall = time.perf_counter() - start
    seconds = [float(row["seconds"]) for row in log.rows]
    if dist.is_main:
        print(json.dumps({"ranks": dist.world_size, "epoch_seconds": seconds, "wall_s": wall}))
    shutdown(dist)


def run(ranks: int, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", __file__,
        "--child", args.encoder, str(args.clips), str(args.epochs), str(args.batch),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{ranks} ranks failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", choices=("lstm", "cnn"), default="lstm")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="global batch (split over the ranks)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        encoder, clips, epochs, batch = args.child
        child(encoder, int(clips), int(epochs), int(batch))
        return
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is warm-up)")
    from thce.machine import describe_machine

    report: dict = {"encoder": args.encoder, "clips": args.clips, "global_batch": args.batch,
                    "load_average_at_start": list(os.getloadavg())}  # fmt: skip
    throughput = {}
    for ranks in args.ranks:
        result = run(ranks, args)
        timed = result["epoch_seconds"][1:]
        throughput[ranks] = args.clips * len(timed) / sum(timed)
    base = throughput[args.ranks[0]]
    report["clips_per_s"] = {str(r): round(v, 1) for r, v in throughput.items()}
    report["speedup"] = {str(r): round(v / base, 3) for r, v in throughput.items()}
    report["efficiency"] = {str(r): round(v / base / (r / args.ranks[0]), 3) for r, v in throughput.items()}
    report["load_average_at_end"] = list(os.getloadavg())
    report["machine"] = describe_machine(threads=1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
