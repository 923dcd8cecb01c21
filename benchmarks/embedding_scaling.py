"""Cost of one embedding-learning epoch against the training-set size I: LMLE against the triple-header CE.

The paper's efficiency claim (Sec. 3.1): LMLE's quintuplet table costs O(I^2) (every anchor against every sample),
the triple-header CE O(IK). Measured here end to end with the library code of both methods, in the same run, with
the same encoder, data, batch size, clustering code and settings:

- THCE: ``thce.train.learn_embedding`` with one iteration of one end-to-end epoch (no head-only epochs): embed the
  training set, per-class spherical k-means (K_c rule), one epoch of the weighted triple-header CE (Eqs. 4-9),
  validation loss.
- LMLE: ``thce.lmle.learn_embedding_lmle`` with one epoch and one rebuild: embed the training set, the same
  clustering, the quintuplet table (chunked, members among a random half as in LMLE), one epoch of I anchors
  (batches of ``--batch`` anchors plus their members, class-balanced), validation loss.

The training clips come in the paper's 2:2:1:26 ratio (dog:baby:gun:background), so K = 31 clusters at every I.
Inputs are small so that the whole sweep runs in minutes on a 2-core CPU: the default encoder is an MLP over one
64-d frame (64 -> 128 -> 128, ReLU, L2-normalised: the paper's 128-d embedding size); ``--encoder lstm`` uses thce's
LSTMEncoder (128 units) over 10 frames x 16 mels. The paper's CNN over 1000 x 64 frames would make the linear part
(the encoder) far dearer and the ratio between the methods far smaller at these I.

Clustering uses plain nearest-centroid assignment by default (``--balanced-clusters`` for the pipeline's
size-capped assignment, which is far slower at large I); it is identical for both methods and is reported apart,
so ``ratio_at_max_without_clustering`` shows the ratio of what differs between them.

Runs on one torch thread by default (``--threads``): on a shared 2-core machine several threads make the small
encoder's steps erratic. Each size runs ``--repeats`` times per method, alternating which goes first, and keeps the
fastest; process CPU seconds are reported alongside wall seconds.

Prints one JSON object: wall seconds per size for each method and per phase, fitted log-log slopes
(``slope_thce`` ~ 1, ``slope_lmle`` -> 2 where the table dominates), ``ratio_at_max`` = LMLE / THCE at the largest
I, ``extrapolated_size_for_goal`` (the I at which per-method cost models fitted at the largest I reach the 50x
goal), and the machine. Saves a log-log plot (``--out``, default next to this script).

    .venv/bin/python benchmarks/embedding_scaling.py [--sizes 1000 2000 ...] [--repeats 3] [--encoder mlp|lstm]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import thce.train
from thce.config import EmbeddingConfig, TrainConfig
from thce.lmle import LMLEConfig, learn_embedding_lmle
from thce.models import LSTMEncoder, l2_normalise
from thce.train import MetricsLog, RunContext, TrainingData, learn_embedding

RATIO = (2, 2, 1, 26)  # dog, baby, gun, background: the paper's Table 2 setting
DEFAULT_SIZES = (1000, 2000, 4000, 8000, 16000, 32000)
GOAL = 50.0


class MLPEncoder(nn.Module):
    """(B, frames, mels) -> flatten -> Linear -> ReLU -> Linear -> L2-normalised (B, embedding_dim)."""

    def __init__(self, in_features: int, hidden: int = 128, embedding_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, embedding_dim)
        )
        self.embedding_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2_normalise(self.net(x))


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
    }


def class_counts(size: int) -> list[int]:
    """Training clips per class in the 2:2:1:26 ratio, every class >= 1, summing to ``size``."""
    counts = [max(1, size * r // sum(RATIO)) for r in RATIO[:-1]]
    return counts + [size - sum(counts)]


def make_data(size: int, val_size: int, frames: int, mels: int, seed: int) -> TrainingData:
    """Random clips with a class-dependent mean: ``size`` training clips (2:2:1:26) and ``val_size`` validation."""
    rng = np.random.default_rng(seed)
    train_class = np.repeat(np.arange(4), class_counts(size))
    val_class = np.repeat(np.arange(4), class_counts(max(val_size, 31)))[:val_size]
    class_index = np.concatenate([train_class, val_class])
    means = rng.normal(size=(4, 1, mels)).astype(np.float32)
    features = means[class_index] + rng.normal(size=(len(class_index), frames, mels)).astype(np.float32)
    return TrainingData(
        features=features, class_index=class_index,
        splits={"train": np.arange(size), "val": np.arange(size, size + len(val_class))},
        classes=("dog", "baby", "gun"),
    )  # fmt: skip


def make_encoder(kind: str, frames: int, mels: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return LSTMEncoder(mels, 128) if kind == "lstm" else MLPEncoder(frames * mels)


class _Timed:
    """Wraps a function and adds its wall time to ``seconds``."""

    def __init__(self, function):
        self.function, self.seconds = function, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def run_thce(data: TrainingData, args: argparse.Namespace, frames: int, mels: int) -> dict[str, float]:
    encoder = make_encoder(args.encoder, frames, mels, args.seed)
    config = EmbeddingConfig(
        n_iter=1, epochs=1, last_epochs=1, head_only_epochs=0,
        balanced_clusters=args.balanced_clusters, kmeans_max_iter=args.kmeans_max_iter,
    )  # fmt: skip
    log = MetricsLog()
    ctx = RunContext(train=TrainConfig(batch_size=args.batch, device="cpu"), seed=args.seed, log=log)
    timed = _Timed(thce.train.cluster_per_class)
    original, thce.train.cluster_per_class = thce.train.cluster_per_class, timed
    try:
        start, cpu_start = time.perf_counter(), time.process_time()
        learn_embedding(encoder, data, config, ctx, method="thce")
        total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        thce.train.cluster_per_class = original
    epoch = sum(r["seconds"] for r in log.rows if r["stage"] == "embedding")
    return {"total": total, "cpu": cpu, "cluster": timed.seconds, "train_epoch": epoch,
            "other": total - timed.seconds - epoch}  # fmt: skip


def run_lmle(data: TrainingData, args: argparse.Namespace, frames: int, mels: int) -> dict[str, float]:
    encoder = make_encoder(args.encoder, frames, mels, args.seed)
    config = LMLEConfig(
        epochs=1, rebuild_every=1, balanced_clusters=args.balanced_clusters, kmeans_max_iter=args.kmeans_max_iter,
        candidate_fraction=args.candidate_fraction, chunk_size=args.chunk_size,
    )  # fmt: skip
    ctx = RunContext(train=TrainConfig(batch_size=args.batch, device="cpu"), seed=args.seed, log=MetricsLog())
    start, cpu_start = time.perf_counter(), time.process_time()
    result = learn_embedding_lmle(encoder, data, config, ctx, method="lmle")
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    d = result.diagnostics[0]
    return {"total": total, "cpu": cpu, "cluster": d["seconds_cluster"], "quintuplets": d["seconds_quintuplets"],
            "train_epoch": d["seconds_train"], "other": total - d["seconds_cluster"] - d["seconds_quintuplets"]
            - d["seconds_train"]}  # fmt: skip


def slope(sizes: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) against log(I)."""
    if len(sizes) < 2:
        return float("nan")
    return float(np.polyfit(np.log(sizes), np.log(np.maximum(seconds, 1e-9)), 1)[0])


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = np.array(result["sizes"], dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    ax.loglog(sizes, result["thce_s"], "o-", label=f"THCE epoch (slope {result['slope_thce']:.2f})")
    ax.loglog(sizes, result["lmle_s"], "s-", label=f"LMLE epoch (slope {result['slope_lmle']:.2f})")
    ax.loglog(sizes, result["phases"]["lmle"]["quintuplets"], "s--", alpha=0.7,
              label=f"LMLE quintuplet table (slope {result['slopes']['lmle_quintuplets']:.2f})")  # fmt: skip
    ax.loglog(sizes, result["phases"]["thce"]["cluster"], "^:", alpha=0.7, label="clustering (both)")
    for power, style in ((1, "k:"), (2, "k--")):
        ref = result["thce_s"][0] * (sizes / sizes[0]) ** power
        ax.loglog(sizes, ref, style, linewidth=0.8, label=f"~ I^{power}")
    ax.set_xlabel("training clips I")
    ax.set_ylabel("seconds per embedding-learning epoch")
    ax.set_title(f"Embedding learning cost, {result['encoder']['kind']} encoder, batch {result['batch']}")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Both methods at every size of ``args.sizes``; returns the result object (see the module docstring)."""
    logging.getLogger("thce").setLevel(logging.WARNING)
    sizes = sorted(set(args.sizes))
    frames, mels = (10, 16) if args.encoder == "lstm" else (1, 64)

    if not args.tiny:  # warm-up (first calls load kernels and modules), not measured
        warm = make_data(sizes[0], args.val, frames, mels, args.seed)
        run_thce(warm, args, frames, mels)
        run_lmle(warm, args, frames, mels)

    load_before = os.getloadavg()
    best: dict[str, list[dict[str, float]]] = {"thce": [], "lmle": []}
    runs_all: dict[str, list[list[dict[str, float]]]] = {"thce": [], "lmle": []}
    sweep_start = time.perf_counter()
    for size in sizes:
        data = make_data(size, args.val, frames, mels, args.seed)
        runs: dict[str, list[dict[str, float]]] = {"thce": [], "lmle": []}
        for repeat in range(args.repeats):
            order = ("thce", "lmle") if repeat % 2 == 0 else ("lmle", "thce")  # alternate: drift hits both alike
            for name in order:
                runner = run_thce if name == "thce" else run_lmle
                runs[name].append(runner(data, args, frames, mels))
        for name in runs:
            best[name].append(min(runs[name], key=lambda r: r["total"]))
            runs_all[name].append(runs[name])

    thce_s = [r["total"] for r in best["thce"]]
    lmle_s = [r["total"] for r in best["lmle"]]
    phases = {
        name: {key: [round(r[key], 4) for r in best[name]] for key in best[name][0] if key != "cpu"} for name in best
    }
    ratio = [b / a for a, b in zip(thce_s, lmle_s)]
    thce_cpu = [min(r["cpu"] for r in runs_all["thce"][i]) for i in range(len(sizes))]
    lmle_cpu = [min(r["cpu"] for r in runs_all["lmle"][i]) for i in range(len(sizes))]
    # Cost models fitted at the largest I: THCE ~ a I, LMLE ~ b I + c I^2 (c from the quintuplet table alone);
    # their ratio b/a + (c/a) I reaches GOAL at I = (GOAL - b/a) a / c.
    top, top_thce, top_lmle = sizes[-1], best["thce"][-1], best["lmle"][-1]
    a = top_thce["total"] / top
    b = (top_lmle["total"] - top_lmle["quintuplets"]) / top
    c = top_lmle["quintuplets"] / top**2
    size_for_goal = (GOAL - b / a) * a / c if c > 0 else float("inf")
    without_clustering = [
        (lm["total"] - lm["cluster"]) / (th["total"] - th["cluster"]) for th, lm in zip(best["thce"], best["lmle"])
    ]
    result: dict[str, Any] = {
        "benchmark": "embedding_scaling",
        "question": "seconds of one embedding-learning epoch vs training-set size I: LMLE (O(I^2)) vs THCE (O(IK))",
        "sizes": sizes,
        "thce_s": [round(t, 4) for t in thce_s],
        "lmle_s": [round(t, 4) for t in lmle_s],
        "ratio": [round(r, 3) for r in ratio],
        "slope_thce": round(slope(sizes, thce_s), 3),
        "slope_lmle": round(slope(sizes, lmle_s), 3),
        "ratio_at_max": round(ratio[-1], 3),
        "ratio_at_max_without_clustering": round(without_clustering[-1], 3),
        "cpu": {
            "note": "process CPU seconds (all threads) of the same runs: the work done, whatever the machine's load",
            "thce_cpu_s": [round(t, 4) for t in thce_cpu],
            "lmle_cpu_s": [round(t, 4) for t in lmle_cpu],
            "slope_thce": round(slope(sizes, thce_cpu), 3),
            "slope_lmle": round(slope(sizes, lmle_cpu), 3),
            "ratio_at_max": round(lmle_cpu[-1] / thce_cpu[-1], 3),
        },
        "slopes": {
            "lmle_quintuplets": round(slope(sizes, [r["quintuplets"] for r in best["lmle"]]), 3),
            "clustering": round(slope(sizes, [r["cluster"] for r in best["thce"]]), 3),
            "thce_train_epoch": round(slope(sizes, [r["train_epoch"] for r in best["thce"]]), 3),
            "lmle_train_epoch": round(slope(sizes, [r["train_epoch"] for r in best["lmle"]]), 3),
        },
        "phases": phases,
        "goal": f"THCE at least {GOAL:g}x cheaper than LMLE at I = {sizes[-1]} (ratio_at_max >= {GOAL:g})",
        "goal_met": bool(ratio[-1] >= GOAL),
        "extrapolated_size_for_goal": round(size_for_goal, -2) if math.isfinite(size_for_goal) else None,
        "extrapolation": "THCE ~ a I and LMLE ~ b I + c I^2 fitted at the largest I (c: the quintuplet table): "
        "I at which LMLE / THCE = goal",
        "encoder": {
            "kind": args.encoder,
            "description": "MLP 64 -> 128 -> 128 (ReLU), L2-normalised, over one 64-d frame" if args.encoder == "mlp"
            else "thce LSTMEncoder, 128 units, last hidden state L2-normalised, over 10 frames x 16 mels",
            "note": "small encoder over small inputs so the sweep runs in minutes on a 2-core CPU; the paper's CNN "
            "over 1000x64 frames makes the linear (encoder) part far dearer and the ratio far smaller",
        },  # fmt: skip
        "batch": args.batch,
        "settings": {
            "class_ratio": "2:2:1:26 (K = 31 clusters)",
            "val_clips": args.val,
            "thce": "learn_embedding: n_iter 1, 1 end-to-end epoch, no head-only epochs",
            "lmle": f"learn_embedding_lmle: 1 epoch of I anchors (each with up to 4 members: up to 5 encoder "
            f"inputs per anchor), table rebuilt once, candidate_fraction {args.candidate_fraction}, chunk_size "
            f"{args.chunk_size}, class-balanced anchors",
            "clustering": f"cluster_per_class, balanced={args.balanced_clusters}, max_iter={args.kmeans_max_iter}",
            "threads": "one torch thread for both methods unless --threads says otherwise; more threads on a "
            "quiet machine speed up LMLE's table (a matrix product) more than THCE's small operations, which "
            "would lower the ratio",
            "repeats": args.repeats,
            "statistic": "fastest of the repeats, per size and method",
            "tiny": args.tiny,
        },
        "machine": {**machine(), "loadavg_before": [round(v, 2) for v in load_before],
                    "loadavg_after": [round(v, 2) for v in os.getloadavg()]},  # fmt: skip
        "sweep_seconds": round(time.perf_counter() - sweep_start, 1),
        "plot": str(args.out),
    }
    plot(result, args.out)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="training-set sizes I")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size and method; the fastest is kept")
    parser.add_argument("--batch", type=int, default=64, help="batch size (LMLE: anchors per batch)")
    parser.add_argument("--encoder", choices=["mlp", "lstm"], default="mlp")
    parser.add_argument("--val", type=int, default=256, help="validation clips (the same at every I)")
    parser.add_argument("--kmeans-max-iter", type=int, default=100)
    parser.add_argument("--balanced-clusters", action="store_true", help="the size-capped assignment (slow)")
    parser.add_argument("--candidate-fraction", type=float, default=LMLEConfig.candidate_fraction)
    parser.add_argument("--chunk-size", type=int, default=LMLEConfig.chunk_size)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads for the sweep (0: torch's default); restored afterwards. Default 1: the small "
        "encoder's steps are dominated by per-operation overhead, and on a shared 2-core machine several "
        "threads make them erratic (OpenMP synchronisation); one thread treats both methods alike",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (tests)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("embedding_scaling.png"))
    args = parser.parse_args(argv)
    if args.tiny:
        args.repeats, args.val, args.kmeans_max_iter = 1, 32, 10
    if min(args.sizes) < len(RATIO) * 8:
        parser.error(f"--sizes: every size must be >= {len(RATIO) * 8}")
    previous_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = sweep(args)
    finally:
        torch.set_num_threads(previous_threads)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
