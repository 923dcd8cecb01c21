"""Seconds per epoch of Algorithm 1 on a frozen PANNs Cnn14_16k (cached embeddings) against the paper CNN end to end.

Issue 17's acceptance: "on CPU, seconds per epoch of Algorithm 1 on a frozen Cnn14_16k over 10k cached clips against
the paper CNN end to end, same run". Both sides are measured in one run, on the same split of ``--clips`` clips in
the 2:2:1:26 ratio (``--train-fraction`` for training, the rest validation, as ``configs/panns-synth-2-2-1-26.toml``
splits its pool), with the same batch (``--batch``, the paper's 64) and the same number of clusters.

- **Frozen Cnn14_16k** (``configs/panns-synth-2-2-1-26.toml`` with ``model.pretrained = ""``: random initialisation,
  no weights can be downloaded here). The one-time cost: :func:`thce.pretrained.frozen.compute_frozen_embeddings`
  (the code the experiment runs to fill the cache) on ``--encode-clips`` random 10 s log-mel clips, seconds per clip
  measured and extrapolated to every clip. Those embeddings are tiled to ``--clips`` rows, each row scaled by
  ``exp(0.1 N(0, 1))`` per dimension so that no two rows are equal (the rows are what the cache holds: 2048-d
  float32 per clip; their values do not change what an epoch costs, only how many Lloyd iterations k-means makes).
  Then the training code itself on them: every method's encoder is
  ``thce.methods.build_method_encoder(config, "proposed1", cached=True)`` (a ``CachedPannsEncoder``), Algorithm 1's
  step 1 is ``thce.training.algorithm1.learn_embedding`` (one iteration: clustering, ``--epochs`` epochs of the
  cluster layer alone, ``--epochs`` epochs of cluster layer + encoder output + triple-header CE), step 2 is
  ``train_detector`` (``--epochs`` head-only epochs = Proposed1, ``--epochs`` end-to-end epochs = Proposed2).
  Per-epoch seconds are the median of the ``seconds`` the stages log (training steps and that epoch's validation).
- **Paper CNN end to end** (``configs/paper-2-2-1-26-cnn.toml``'s model, 1000 x 64 log-mel): an epoch of 10k clips
  of 10 s does not fit in memory here, so the seconds per epoch are extrapolated: the median of ``--steps`` timed
  training steps (after 2 warm-up steps), with the modules and losses the stages use
  (``build_method_encoder``, ``TripleHeaderCrossEntropy.from_centroids`` with the embedding config and the frozen
  run's cluster count, ``build_detector`` + ``weighted_bce`` with Eq. 2's class weights, Adam), the two step kinds
  interleaved, times the steps of an epoch, plus that epoch's eval-mode passes (centring calibration on 256 training
  clips and validation embeddings), timed on ``--eval-batches`` batches. Random inputs: the cost does not depend
  on the values.

Ratios ``cnn / frozen`` are per stage: Algorithm 1's end-to-end embedding epoch and Proposed2's end-to-end detector
epoch. Prints JSON (``--json`` also writes it).

    nice -n 5 .venv/bin/python benchmarks/panns_frozen.py --json benchmarks/results/panns_frozen.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thce.config import load_config
from thce.losses import TripleHeaderCrossEntropy, weighted_bce
from thce.losses.paper import bce_class_weights
from thce.machine import describe_machine, git_commit
from thce.methods import build_detector, build_method_encoder
from thce.pretrained.frozen import compute_frozen_embeddings
from thce.training.algorithm1 import EmbeddingIteration, learn_embedding, train_detector
from thce.training.data import TrainingData
from thce.training.engine import MetricsLog, RunContext

ROOT = Path(__file__).resolve().parents[1]
FROZEN_CONFIG = ROOT / "configs" / "panns-synth-2-2-1-26.toml"
CNN_CONFIG = ROOT / "configs" / "paper-2-2-1-26-cnn.toml"
RATIO = (2, 2, 1, 26)  # dog, baby, gun, background
CLASSES = ("dog", "baby", "gun")
CALIBRATION_CLIPS = 256  # thce.training.data.calibration_indices' limit


def class_index_for(size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` class indices in the 2:2:1:26 ratio (background last), shuffled."""
    counts = [size * r // sum(RATIO) for r in RATIO[:-1]]
    labels = np.repeat(np.arange(len(RATIO)), counts + [size - sum(counts)])
    return rng.permutation(labels)


def split_for(class_index: np.ndarray, train_fraction: float) -> dict[str, np.ndarray]:
    """Stratified train / val split of the clips."""
    train: list[np.ndarray] = []
    for c in np.unique(class_index):
        members = np.flatnonzero(class_index == c)
        train.append(members[: round(len(members) * train_fraction)])
    train_idx = np.sort(np.concatenate(train))
    return {"train": train_idx, "val": np.setdiff1d(np.arange(len(class_index)), train_idx)}


def cached_embeddings(config: Any, args: argparse.Namespace, ctx: RunContext) -> tuple[np.ndarray, dict[str, Any]]:
    """(clips, 2048) float32: the frozen encoder's embeddings of ``--encode-clips`` random log-mel clips, computed by
    the experiment's caching code, tiled with jitter; and the measured one-time cost."""
    frames, mels = config.features.num_frames, config.features.n_mels
    rng = np.random.default_rng(args.seed)
    logmel = (rng.normal(-40.0, 15.0, size=(args.encode_clips, frames, mels))).astype(np.float32)  # dB-like values
    few = TrainingData(logmel, np.zeros(args.encode_clips, dtype=int), {"train": np.arange(args.encode_clips)}, CLASSES)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        computed = compute_frozen_embeddings(
            few, np.arange(args.encode_clips), model=config.model, seed=args.seed,
            path=Path(folder) / "embeddings.npy", ctx=ctx,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        base = np.array(computed)
    rows = base[np.arange(args.clips) % len(base)]
    jitter = np.exp(0.1 * rng.standard_normal(rows.shape, dtype=np.float32))
    embeddings = np.ascontiguousarray(rows * jitter, dtype=np.float32)
    cost = {
        "clips_encoded": args.encode_clips,
        "input": {"frames": frames, "mels": mels},
        "seconds": round(seconds, 3),
        "seconds_per_clip": round(seconds / args.encode_clips, 4),
        "extrapolated_cache_seconds": round(seconds / args.encode_clips * args.clips, 1),
        "note": "compute_frozen_embeddings (build + eval-mode Cnn14_16k forward at batch <= 32, memmap write), once "
        "per clip; includes building the network",
    }
    return embeddings, cost


def median_seconds(log: MetricsLog, stage: str) -> tuple[float, int]:
    values = [float(r["seconds"]) for r in log.rows if r["stage"] == stage]
    return statistics.median(values), len(values)


def bench_frozen(args: argparse.Namespace) -> tuple[dict[str, Any], Any, TrainingData]:
    overrides = ['model.pretrained=""', f"train.batch_size={args.batch}", 'train.device="cpu"', f"seed={args.seed}"]
    config = load_config(FROZEN_CONFIG, overrides)
    ctx = RunContext(train=config.train, seed=args.seed, log=MetricsLog())
    embeddings, cost = cached_embeddings(config, args, ctx)
    class_index = class_index_for(args.clips, np.random.default_rng(args.seed + 1))
    splits = split_for(class_index, args.train_fraction)
    data = TrainingData(embeddings, class_index, splits, CLASSES, normalise=None)  # as frozen_training_data builds it

    torch.manual_seed(args.seed)
    encoder = build_method_encoder(config, "proposed1", cached=True)
    embedding_config = dataclasses.replace(
        config.embedding, n_iter=1, epochs=args.epochs, last_epochs=args.epochs, head_only_epochs=args.epochs
    )
    iterations: list[EmbeddingIteration] = []
    start = time.perf_counter()
    result = learn_embedding(encoder, data, embedding_config, ctx, method="proposed1", on_iteration=iterations.append)
    step1 = time.perf_counter() - start
    model = build_detector(
        config, "proposed1", result.encoder, num_events=data.num_events,
        train_class_counts=data.class_counts("train"), cluster_layer=result.cluster_layer,
    )  # fmt: skip
    detector_config = dataclasses.replace(
        config.detector, head_only_max_epochs=args.epochs, max_epochs=args.epochs, patience=args.epochs + 1
    )
    start = time.perf_counter()
    train_detector(model, data, detector_config, ctx, end_to_end=True)
    step2 = time.perf_counter() - start

    stages = {}
    for stage, what in (
        ("embedding-head", "Algorithm 1 step 1: cluster layer W alone, THCE loss (Eqs. 5-9)"),
        ("embedding", "Algorithm 1 step 1 end to end: encoder output (centring, L2) + W + THCE loss"),
        ("detector-head", "Algorithm 1 step 2, Proposed1: sigmoid layer on W's outputs, Eq. 2"),
        ("end-to-end", "Algorithm 1 step 2, Proposed2: encoder output + W + sigmoid layer, Eq. 2"),
    ):
        seconds, epochs = median_seconds(ctx.log, stage)
        stages[stage] = {"seconds_per_epoch": round(seconds, 4), "epochs_timed": epochs, "what": what}
    clustering = iterations[0].clustering
    frozen = {
        "config": f"{FROZEN_CONFIG.relative_to(ROOT)} with model.pretrained=\"\" (random init), train.batch_size={args.batch}",
        "encoder": f"{type(encoder).__name__} ({config.model.encoder}, freeze = \"{config.model.freeze}\")",
        "embeddings": f"{args.encode_clips} clips embedded by a randomly initialised Cnn14_16k, tiled to {args.clips} rows "
        "with per-dimension jitter exp(0.1 N(0,1))",
        "embedding_dim": int(embeddings.shape[1]),
        "cache_bytes": int(embeddings.nbytes),
        "one_time_cache": cost,
        "clusters": int(len(clustering.cluster_class)),
        "clusters_per_class": [int(k) for k in clustering.clusters_per_class],
        "clustering_seconds": round(iterations[0].cluster_seconds, 3),
        "stages": stages,
        "step1_wall_seconds": round(step1, 2),
        "step2_wall_seconds": round(step2, 2),
    }
    return frozen, clustering, data


def bench_cnn(args: argparse.Namespace, clustering: Any, data: TrainingData) -> dict[str, Any]:
    config = load_config(CNN_CONFIG, [f"train.batch_size={args.batch}", 'train.device="cpu"', f"seed={args.seed}"])
    frames, mels = config.features.num_frames, config.features.n_mels
    batch = args.batch
    torch.manual_seed(args.seed)
    x = torch.randn(batch, frames, mels)
    train_idx = data.splits["train"]
    positions = torch.randperm(len(train_idx))[:batch]
    assignment = clustering.assignment
    cluster_index = assignment[positions]
    targets = data.targets(train_idx[positions.numpy()])
    counts = data.class_counts("train")

    # Algorithm 1 step 1, end to end: encoder + cluster layer + THCE loss (learn_embedding's "embedding" stage)
    encoder = build_method_encoder(config, "proposed1")
    emb = config.embedding
    centroids = torch.nn.functional.normalize(torch.randn(len(clustering.cluster_class), encoder.embedding_dim), dim=1)
    loss_fn = TripleHeaderCrossEntropy.from_centroids(
        centroids, clustering.cluster_class, alpha=emb.alpha, beta_same=emb.beta_same, beta_other=emb.beta_other,
        weighted=emb.cluster_weights, normalise_w=emb.normalise_w,
        assignment=assignment if emb.loss_normaliser == "fixed" else None,
    )  # fmt: skip
    thce_opt = torch.optim.Adam([*encoder.parameters(), *loss_fn.parameters()], lr=config.train.learning_rate)

    # Algorithm 1 step 2, Proposed2: encoder + cluster layer + sigmoid layer, Eq. 2 (train_end_to_end)
    det_encoder = build_method_encoder(config, "proposed2")
    detector = build_detector(
        config, "proposed1", det_encoder, num_events=data.num_events, train_class_counts=counts,
        cluster_layer=TripleHeaderCrossEntropy.from_centroids(
            centroids, clustering.cluster_class, alpha=emb.alpha).cluster_layer,
    )  # fmt: skip
    weights = bce_class_weights(counts[: data.num_events].tolist(), int(counts.sum()))
    det_opt = torch.optim.Adam(detector.parameters(), lr=config.train.learning_rate)

    def thce_step() -> None:
        encoder.train()
        loss = loss_fn.loss_from_h(loss_fn.cluster_layer(encoder(x)), cluster_index)
        thce_opt.zero_grad(set_to_none=True)
        loss.backward()
        thce_opt.step()

    def detector_step() -> None:
        detector.train()
        loss = weighted_bce(detector(x), targets, weights)
        det_opt.zero_grad(set_to_none=True)
        loss.backward()
        det_opt.step()

    @torch.no_grad()
    def eval_batch() -> None:
        encoder.eval()
        encoder(x)

    for _ in range(2):  # warm-up
        thce_step()
        detector_step()
    times: dict[str, list[float]] = {"embedding": [], "end-to-end": [], "eval": []}
    for _ in range(args.steps):
        for key, step in (("embedding", thce_step), ("end-to-end", detector_step)):
            start = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - start)
    eval_batch()
    for _ in range(args.eval_batches):
        start = time.perf_counter()
        eval_batch()
        times["eval"].append(time.perf_counter() - start)
    median = {k: statistics.median(v) for k, v in times.items()}

    n_train, n_val = len(train_idx), len(data.splits["val"])
    steps_per_epoch = math.ceil(n_train / batch)
    eval_clips = min(CALIBRATION_CLIPS, n_train) + n_val  # centring calibration + validation embeddings per epoch
    eval_seconds = median["eval"] / batch * eval_clips
    stages = {
        stage: {
            "step_seconds": round(median[stage], 4),
            "steps_timed": args.steps,
            "steps_per_epoch": steps_per_epoch,
            "eval_seconds_per_epoch": round(eval_seconds, 2),
            "seconds_per_epoch": round(median[stage] * steps_per_epoch + eval_seconds, 1),
        }
        for stage in ("embedding", "end-to-end")
    }
    return {
        "config": f"{CNN_CONFIG.relative_to(ROOT)} (model.encoder = \"{config.model.encoder}\"), train.batch_size={batch}",
        "input": {"batch": batch, "frames": frames, "mels": mels},
        "parameters": sum(p.numel() for p in encoder.parameters()),
        "eval_batch_seconds": round(median["eval"], 4),
        "eval_clips_per_epoch": eval_clips,
        "stages": stages,
        "extrapolation": f"median step time x {steps_per_epoch} steps (ceil({n_train} / {batch})) + eval-mode passes "
        f"over {eval_clips} clips at the median eval batch time; 2 warm-up steps, THCE and detector steps interleaved",
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=10_000, help="cached clips (train + val)")
    parser.add_argument("--train-fraction", type=float, default=0.75, help="as configs/panns-synth-2-2-1-26.toml")
    parser.add_argument("--encode-clips", type=int, default=8, help="clips actually run through Cnn14_16k")
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed per frozen stage (median kept)")
    parser.add_argument("--steps", type=int, default=5, help="timed CNN steps per kind, after 2 warm-up steps")
    parser.add_argument("--eval-batches", type=int, default=2, help="timed CNN eval-mode batches, after 1 warm-up")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)

    machine = describe_machine()
    start = time.perf_counter()
    frozen, clustering, data = bench_frozen(args)
    cnn = bench_cnn(args, clustering, data)
    ratios = {
        stage: round(cnn["stages"][stage]["seconds_per_epoch"] / frozen["stages"][stage]["seconds_per_epoch"], 1)
        for stage in ("embedding", "end-to-end")
    }
    n_train, n_val = len(data.splits["train"]), len(data.splits["val"])
    result = {
        "benchmark": "panns_frozen",
        "commit": git_commit(),
        "machine": machine,
        "clips": {"total": args.clips, "train": n_train, "val": n_val, "ratio": "2:2:1:26", "batch": args.batch},
        "baseline": "the paper CNN (configs/paper-2-2-1-26-cnn.toml) trained end to end on 1000 x 64 log-mel, "
        "seconds per epoch extrapolated from timed steps",
        "frozen_cnn14_16k": frozen,
        "paper_cnn_end_to_end": cnn,
        "cnn_over_frozen": ratios,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "summary": (
            f"{n_train} train + {n_val} val clips, batch {args.batch}: an Algorithm 1 end-to-end embedding epoch "
            f"takes {frozen['stages']['embedding']['seconds_per_epoch']:.3g} s on frozen Cnn14_16k embeddings "
            f"against {cnn['stages']['embedding']['seconds_per_epoch']:.0f} s for the paper CNN "
            f"({ratios['embedding']:g}x); a Proposed2 detector epoch {frozen['stages']['end-to-end']['seconds_per_epoch']:.3g} s "
            f"against {cnn['stages']['end-to-end']['seconds_per_epoch']:.0f} s ({ratios['end-to-end']:g}x); "
            f"the one-time cache costs {frozen['one_time_cache']['seconds_per_clip']:.2f} s per clip "
            f"(~{frozen['one_time_cache']['extrapolated_cache_seconds'] / 60:.0f} min for {args.clips})"
        ),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
