"""A frozen PANNs encoder (``model.freeze = "all"``): its embeddings computed once per clip and cached.

With every module frozen, the network from log-mel to PANNs' clip embedding (``relu(fc1)``) is a fixed function,
and its batch norms and dropouts run in eval mode (:class:`thce.pretrained.panns.PannsEncoder` keeps them there).
So the embedding of each clip is computed once, in eval mode, and written to a memory-mapped ``.npy``::

    <feature cache folder>/embeddings/<feature cache key>-<variant>-<weights key>.npy    float32 (clips, D)

beside the feature cache, keyed by the feature cache's key (config, checks, files) and the weights: the first 16 hex
digits of the sha256 of the ``model.pretrained`` file, or ``init<seed>`` for a random initialisation (seeded with
the run's seed, as every method's encoder). Rows of unusable clips stay zero. Written to a temporary file and
renamed into place; a file of the wrong shape is recomputed.

Training then reads these rows instead of log-mel (:func:`frozen_training_data`), and every method's encoder is a
:class:`thce.pretrained.panns.CachedPannsEncoder`: only what follows PANNs' embedding (embedding dropout, centring,
L2 normalisation), so Algorithm 1's clustering, the cluster layer and the detector train on cached vectors, and no
stage saves or copies the frozen network. Checkpoints hold the whole network again
(:func:`thce.experiment.whole_model`), so detect and export run it on log-mel as for any encoder.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch

from thce.data.feature_store import FeatureStore
from thce.errors import DataError
from thce.encoders import ModelConfig
from thce.pretrained.encoder import build_panns_encoder
from thce.pretrained.panns import panns_variant
from thce.training.data import TrainingData
from thce.training.engine import RunContext

log = logging.getLogger(__name__)

_CHUNK = 1 << 22


def weights_key(model: ModelConfig, seed: int) -> str:
    """16 hex digits of the sha256 of the ``model.pretrained`` file, or ``init<seed>`` without one."""
    if not model.pretrained:
        return f"init{seed}"
    digest = hashlib.sha256()
    try:
        with open(model.pretrained, "rb") as handle:
            while block := handle.read(_CHUNK):
                digest.update(block)
    except OSError as exc:
        raise DataError(f"{model.pretrained}: cannot read it ({exc.strerror or exc})") from None
    return digest.hexdigest()[:16]


def embedding_cache_path(store: FeatureStore, model: ModelConfig, seed: int) -> Path:
    """Where the frozen encoder's embeddings of ``store``'s clips are cached (module docstring)."""
    return store.directory.parent / "embeddings" / f"{store.key}-{model.encoder}-{weights_key(model, seed)}.npy"


def _valid(path: Path, shape: tuple[int, int]) -> bool:
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return array.shape == shape and array.dtype == np.float32


@torch.no_grad()
def compute_frozen_embeddings(
    features: TrainingData, indices: np.ndarray, *, model: ModelConfig, seed: int, path: Path, ctx: RunContext
) -> np.ndarray:
    """The frozen encoder's embeddings ``(len(features.features), D)`` float32 of clips ``indices`` (other rows 0),
    from ``path`` if it holds them, else computed (eval mode, ``ctx.device``) and written there atomically."""
    shape = (len(features.features), panns_variant(model.encoder).embedding_dim)
    if _valid(path, shape):
        return np.load(path, mmap_mode="r")
    torch.manual_seed(seed)  # the same random initialisation as every method's encoder (MethodRun.new_encoder)
    encoder = build_panns_encoder(model, normalise=True, sample_rate_hz=None).to(ctx.device).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    out = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=shape)
    batch = max(1, min(ctx.train.batch_size, 32))
    order = np.sort(np.asarray(indices))
    total = math.ceil(len(order) / batch)
    for done, start in enumerate(range(0, len(order), batch), start=1):
        rows = order[start : start + batch]
        x = features.load(rows).to(ctx.device)
        out[rows] = encoder.panns_embedding(x).float().cpu().numpy()
        if ctx.progress:
            ctx.progress("frozen encoder embeddings", done, total)
    out.flush()
    del out
    os.replace(temporary, path)
    log.info("frozen %s: %d embeddings cached in %s", model.encoder, len(order), path)
    return np.load(path, mmap_mode="r")


def frozen_training_data(
    logmel: TrainingData, store: FeatureStore, *, model: ModelConfig, seed: int, ctx: RunContext
) -> TrainingData:
    """``logmel``'s clips, classes and splits with the cached embeddings of the frozen encoder as features
    (rows ``(D,)``, no normalisation). Rank 0 computes the cache; the other ranks of a torchrun job wait, then read."""
    path = embedding_cache_path(store, model, seed)
    indices = np.unique(np.concatenate([np.asarray(v) for v in logmel.splits.values()]))
    if ctx.dist.is_main:
        compute_frozen_embeddings(logmel, indices, model=model, seed=seed, path=path, ctx=ctx)
    ctx.dist.barrier()
    embeddings = np.load(path, mmap_mode="r")
    return TrainingData(embeddings, logmel.class_index, logmel.splits, logmel.classes, normalise=None)
