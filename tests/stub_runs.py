"""Run directories holding an untrained tiny checkpoint, for tests of what consumes runs (detect, export)."""

from pathlib import Path

import numpy as np
import torch

from thce.checkpoint import save_checkpoint
from thce.config import config_from_dict
from thce.data.normaliser import Normaliser
from thce.methods import build_detector, build_method_encoder
from thce.models import ClusterLayer


def stub_run(
    root: Path,
    *,
    encoder: str,
    method: str,
    seed: int = 0,
    duration_s: float,
    n_mels: int = 32,
    second_pool_frames: int,
    cluster_class: tuple[int, ...],
    model: dict | None = None,
) -> Path:
    """``root/checkpoints/<method>.pt`` with random weights, non-trivial batch-norm statistics, a made-up
    normaliser and validation scores; the model is built by the registry (:mod:`thce.methods`), as training and
    :func:`thce.checkpoint.build_detector` build it. ``model``: further ``[model]`` settings."""
    config = config_from_dict(
        {
            "features": {"duration_s": duration_s, "n_mels": n_mels},
            "model": {"encoder": encoder, "cnn_channels": [4, 8], "cnn_pools": [[5, 2], [second_pool_frames, 2]],
                      "lstm_hidden_size": 8, **(model or {})},
        }
    )
    torch.manual_seed(seed)
    counts = np.array([10, 10, 5, 60])
    encoder_module = build_method_encoder(config, method)  # L2-normalised as the registry says for ``method``
    cluster = ClusterLayer(encoder_module.embedding_dim, torch.tensor(cluster_class))  # used by methods on clusters
    model = build_detector(config, method, encoder_module, num_events=3, train_class_counts=counts,
                           cluster_layer=cluster).eval()  # fmt: skip
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    rng = np.random.default_rng(seed)
    save_checkpoint(
        root / "checkpoints" / f"{method}.pt",
        model,
        config=config,
        method=method,
        classes=("dog", "baby", "gun"),
        normaliser=Normaliser(mean=rng.uniform(-12, -6, n_mels), std=rng.uniform(2, 4, n_mels)),
        val_scores=rng.random((40, 3)),
        val_class_index=np.arange(40) % 4,
        train_class_counts=counts,
    )
    return root
