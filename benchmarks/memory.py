"""Peak memory of a training epoch at two data set sizes: memory-mapped features keep it flat.

    python benchmarks/memory.py [--sizes 500 2000] [--encoder lstm]

Writes N noise WAVs (10 s, 16 kHz), caches their log-mel features (float16 shards), then, in a fresh process per
size, trains the baseline for one epoch over all N clips and reports the process's peak RSS. Prints JSON with
``peak_rss_mb`` per size and ``rss_ratio`` (largest / smallest size; goal: about 1, i.e. flat).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def _epoch(cache_parent: str, wav_list: str, encoder: str) -> None:
    """One baseline epoch over every clip (runs in its own process); prints its peak RSS in MB."""
    import torch

    from thce.audio import LogMelConfig
    from thce.config import ExperimentConfig
    from thce.data.features import compute_features
    from thce.data.normaliser import Normaliser
    from thce.methods import build_detector, build_method_encoder
    from thce.encoders import ModelConfig
    from thce.training.algorithm1 import BaselineConfig, train_baseline
    from thce.training.data import TrainingData
    from thce.training.engine import RunContext, TrainConfig

    paths = Path(wav_list).read_text().split()
    store = compute_features(paths, config=LogMelConfig(), cache_dir=cache_parent, workers=1)
    n = len(store)
    class_index = np.arange(n) % 4  # 3 events + background, balanced enough for the weights
    splits = {"train": np.arange(n), "val": np.arange(min(n, 64)), "test": np.arange(0)}
    data = TrainingData(store, class_index, splits, ("a", "b", "c"), Normaliser.fit(store, np.arange(min(n, 256))))
    torch.manual_seed(0)
    config = ExperimentConfig(model=ModelConfig(encoder=encoder))  # 10 s clips: 1000 frames x 64 mels
    model = build_detector(config, "baseline", build_method_encoder(config, "baseline"), num_events=data.num_events,
                           train_class_counts=data.class_counts("train"))  # fmt: skip
    train_baseline(model, data, BaselineConfig(max_epochs=1, patience=1), RunContext(train=TrainConfig(batch_size=32)))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--encoder", choices=["cnn", "lstm"], default="lstm")
    parser.add_argument("--epoch-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epoch_child:
        _epoch(*args.epoch_child)
        return {}
    import soundfile as sf

    peaks = {}
    with tempfile.TemporaryDirectory(prefix="thce-memory-") as tmp:
        rng = np.random.default_rng(0)
        wavs = []
        for i in range(max(args.sizes)):
            path = Path(tmp) / f"clip_{i:05d}.wav"
            sf.write(path, (0.1 * rng.standard_normal(160_000)).astype(np.float32), 16_000, subtype="PCM_16")
            wavs.append(str(path))
        for size in sorted(args.sizes):
            listing = Path(tmp) / f"list_{size}.txt"
            listing.write_text("\n".join(wavs[:size]))
            out = subprocess.run(
                [sys.executable, __file__, "--epoch-child", str(Path(tmp) / "cache"), str(listing), args.encoder],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            peaks[size] = round(float(out.stdout.strip().splitlines()[-1]), 1)
    result = {
        "benchmark": "memory",
        "what": f"peak RSS of one baseline training epoch ({args.encoder}, batch 32) over N ten-second clips",
        "peak_rss_mb": peaks,
        "feature_cache_mb": {n: round(n * 1000 * 64 * 2 / 2**20, 1) for n in peaks},
        "rss_ratio": round(peaks[max(peaks)] / peaks[min(peaks)], 3),
        "goal": "rss_ratio close to 1 (flat in data set size)",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": sys.version.split()[0]},
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
