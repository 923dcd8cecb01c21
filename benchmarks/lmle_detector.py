"""Which detector to put on LMLE's embedding: the sigmoid layer on the embedding (what the harness does) or the
proposed method's construction (a cluster layer initialised to alpha x the centroids of a per-class clustering of
the LMLE embedding, then the sigmoid layer; Fig. 2 of the paper).

    python benchmarks/lmle_detector.py RUN_DIR [--out benchmarks/results/lmle_detector.json]

``RUN_DIR`` is a finished run (one seed) of ``thce experiment`` with ``lmle`` among its methods, e.g.
``runs/demo-lmle/seed_0``; its feature cache and LMLE's last embedding state (``checkpoints/resume/``) are reused,
so only the detectors are trained: both variants from the same LMLE encoder, each head only (like Proposed1) and
then end to end (like Proposed2), with the run's ``[detector]`` settings. Prints JSON with the test EERs of the four
models and the machine; with ``--out`` also writes it there.

LMLE has no cluster layer; its embedding is trained with distances, so either detector is a reading of ours. The
harness uses the one that measured better for LMLE (this script), so the comparison does not handicap it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from thce.cluster import cluster_per_class
from thce.config import load_config
from thce.experiment import evaluate_and_save
from thce.run_data import prepare_data
from thce.machine import describe_machine
from thce.methods import build_detector, build_method_encoder
from thce.models import ClusterLayer, EventDetector
from thce.training.algorithm1 import train_end_to_end, train_head_only
from thce.training.data import embed
from thce.training.engine import MetricsLog, RunContext


def last_lmle_state(run_dir: Path) -> Path:
    """The LMLE embedding stage's last state file (``lmle-embedding-<last rebuild>.pt``)."""
    states = sorted(
        (run_dir / "checkpoints" / "resume").glob("lmle-embedding-*.pt"), key=lambda p: int(p.stem.split("-")[-1])
    )
    if not states:
        sys.exit(f"{run_dir}: no checkpoints/resume/lmle-embedding-*.pt; run an experiment with lmle among its methods")
    return states[-1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    run_dir = args.run_dir
    config = load_config(run_dir / "config.toml")
    state_path = last_lmle_state(run_dir)
    prepared = prepare_data(config, run_dir)
    data = prepared.data
    work = run_dir / "lmle-detector-benchmark"
    ctx = RunContext(train=config.train, seed=config.seed, log=MetricsLog(work / "metrics.csv"))

    def lmle_encoder() -> torch.nn.Module:
        encoder = build_method_encoder(config, "lmle")
        encoder.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True)["module"])
        return encoder

    def train_and_score(name: str, model: EventDetector) -> dict[str, dict[str, float]]:
        scores = {}
        train_head_only(model, data, config.detector, ctx, method=name)
        scores["head_only"] = evaluate_and_save(model, f"{name}-head", prepared, config, ctx, work)["eer"]
        train_end_to_end(model, data, config.detector, ctx, method=name)
        scores["end_to_end"] = evaluate_and_save(model, f"{name}-e2e", prepared, config, ctx, work)["eer"]
        return scores

    start = time.perf_counter()
    results: dict[str, dict] = {}
    torch.manual_seed(config.seed)
    encoder = lmle_encoder()
    counts = data.class_counts("train")
    results["sigmoid_on_embedding"] = train_and_score(  # LMLE's detector in the harness
        "on-embedding", build_detector(config, "lmle", encoder, num_events=data.num_events, train_class_counts=counts)
    )
    torch.manual_seed(config.seed)
    encoder = lmle_encoder()
    train_idx = data.splits["train"]
    clustering = cluster_per_class(
        embed(encoder, data, train_idx, ctx, "lmle embedding"), torch.as_tensor(data.class_index[train_idx]),
        num_classes=data.num_classes, seed=config.seed, balanced=config.lmle.balanced_clusters,
        max_iter=config.lmle.kmeans_max_iter,
    )  # fmt: skip
    layer = ClusterLayer.from_centroids(clustering.centroids, clustering.cluster_class, config.embedding.alpha)
    results["cluster_layer_then_sigmoid"] = train_and_score(  # Proposed1's detector (Fig. 2) on LMLE's encoder
        "cluster-layer", build_detector(config, "proposed1", encoder, num_events=data.num_events,
                                        train_class_counts=counts, cluster_layer=layer),
    )  # fmt: skip
    report = {
        "benchmark": "lmle_detector",
        "question": "sigmoid layer on LMLE's unit embedding vs the proposed method's cluster layer + sigmoid",
        "run_dir": str(run_dir),
        "lmle_state": state_path.name,
        "overall_eer": {
            variant: {stage: round(eer["overall"], 4) for stage, eer in stages.items()}
            for variant, stages in results.items()
        },
        "eer": results,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": describe_machine(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
