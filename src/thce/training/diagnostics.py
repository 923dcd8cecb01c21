"""How well an embedding separates classes: the per-iteration records of Algorithm 1 (``embedding_diagnostics`` in
``results.json``). Measures only; nothing here trains or changes a network's state."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from thce.cluster import Clustering
from thce.losses import eq3_ordering, eq3_terms
from thce.models import l2_normalise
from thce.training.data import TrainingData
from thce.training.engine import RunContext


def same_clip_cosine(encoder: nn.Module, data: TrainingData, indices: np.ndarray, ctx: RunContext) -> float:
    """Mean cosine between two train-mode embeddings of the same clip (two dropout masks, batch statistics where
    the encoder uses them): 1 means training sees what evaluation sees. Parameters, buffers (batch-norm running
    statistics) and the global random state are restored."""
    state = copy.deepcopy(encoder.state_dict())
    rng = torch.get_rng_state()
    was_training = encoder.training
    encoder.train()
    with torch.no_grad():
        x = data.load(indices).to(ctx.device)
        first, second = encoder(x).float(), encoder(x).float()
    encoder.load_state_dict(state)
    encoder.train(was_training)
    torch.set_rng_state(rng)
    return float(nn.functional.cosine_similarity(first, second, dim=-1).mean())  # clips (n, D) or frames (n, T, D)


def _balanced_accuracy(predicted: Tensor, truth: Tensor, num_classes: int) -> float:
    """Mean over the classes present in ``truth`` of the fraction predicted right (chance: 1 / classes)."""
    recalls = [float((predicted[truth == c] == c).float().mean()) for c in range(num_classes) if bool((truth == c).any())]
    return float(np.mean(recalls)) if recalls else float("nan")


def embedding_diagnostics(
    embeddings: Tensor, class_index: Tensor, centroids: Tensor, cluster_class: Tensor, num_classes: int
) -> dict[str, float]:
    """How well eval-mode embeddings (n, D) of clips of ``class_index`` (n,) separate classes, given cluster
    centroids (K, D) of classes ``cluster_class`` (K,). Accuracies are balanced (mean recall over classes), so a
    chance-level embedding scores ``1 / num_classes`` whatever the class ratio:

    - ``nearest_cluster_accuracy``: the clip's most similar centroid belongs to its class;
    - ``class_centroid_accuracy``: the most similar class centroid (normalised mean of the class's cluster
      centroids) is its class's;
    - ``one_nn_accuracy``: leave-one-out nearest neighbour among the clips;
    - ``mean_cos_within_class`` / ``mean_cos_between_classes``: mean cosine of pairs of distinct clips of one
      class / of two classes, each averaged per class first.
    """
    emb = l2_normalise(embeddings.float())
    cen = l2_normalise(centroids.float().to(emb.device))
    truth = class_index.to(emb.device)
    cluster_class = cluster_class.to(emb.device)
    nearest_cluster = cluster_class[(emb @ cen.t()).argmax(dim=1)]
    class_centroids = torch.stack([
        l2_normalise(cen[cluster_class == c].mean(dim=0)) if bool((cluster_class == c).any()) else torch.zeros_like(cen[0])
        for c in range(num_classes)
    ])  # fmt: skip
    nearest_class = (emb @ class_centroids.t()).argmax(dim=1)
    cos = emb @ emb.t()
    eye = torch.eye(len(emb), dtype=torch.bool, device=emb.device)
    nearest_clip = truth[cos.masked_fill(eye, float("-inf")).argmax(dim=1)] if len(emb) > 1 else truth
    same = truth.unsqueeze(0) == truth.unsqueeze(1)
    within, between = [], []
    for c in range(num_classes):
        rows = truth == c
        if not bool(rows.any()):
            continue
        pairs_same = same[rows] & ~eye[rows]
        if bool(pairs_same.any()):
            within.append(float(cos[rows][pairs_same].mean()))
        if bool((~same[rows]).any()):
            between.append(float(cos[rows][~same[rows]].mean()))
    return {
        "nearest_cluster_accuracy": _balanced_accuracy(nearest_cluster, truth, num_classes),
        "class_centroid_accuracy": _balanced_accuracy(nearest_class, truth, num_classes),
        "one_nn_accuracy": _balanced_accuracy(nearest_clip, truth, num_classes),
        "mean_cos_within_class": float(np.mean(within)) if within else float("nan"),
        "mean_cos_between_classes": float(np.mean(between)) if between else float("nan"),
    }



def cluster_diagnostics(clustering: Clustering, embeddings: Tensor) -> dict[str, Any]:
    """Cluster sizes per class and cosine to own centroid / nearest same-class / nearest other-class centroid."""
    sizes = clustering.sizes()
    cos = embeddings @ clustering.centroids.t()
    own = clustering.assignment
    cos_own, cos_same, has_same, cos_other, _ = eq3_terms(cos, own, clustering.cluster_class)
    per_class = {}
    for c in range(len(clustering.clusters_per_class)):
        s = sizes[clustering.cluster_class == c]
        per_class[c] = {"clusters": len(s), "min_size": int(s.min()), "max_size": int(s.max())}
    return {
        "clusters": int(len(sizes)),
        "sizes_per_class": per_class,
        # Eq. 3's three terms as cosines, averaged over the training split (same-class: classes with >= 2 clusters)
        "mean_cos_own_centroid": float(cos_own.mean()),
        "mean_cos_nearest_same_class": float(cos_same[has_same].mean()) if has_same.any() else float("nan"),
        "mean_cos_nearest_other_class": float(cos_other.mean()),
        "eq3_at_clustering": eq3_ordering(cos, own, clustering.cluster_class),
    }


#: The measures :func:`embedding_learning` follows from the first clustering to the end of Algorithm 1's stage.
LEARNING_MEASURES = ("class_centroid_accuracy", "one_nn_accuracy", "nearest_cluster_accuracy")


def embedding_learning(diagnostics: Any) -> dict[str, Any] | None:
    """Did Algorithm 1's embedding stage learn class structure? From a run's ``embedding_diagnostics`` (the JSON
    records of :func:`embedding_diagnostics` per iteration): each of :data:`LEARNING_MEASURES` on the validation
    clips' eval-mode embeddings at the first clustering (the untrained encoder, ``"start"``) and after the last
    iteration's training (``"end"``), the within- minus between-class mean cosine likewise, and ``"chance"``
    (1 / classes). ``None`` for a run without the records (no proposed method, or an older thce).

    >>> record = {"sizes_per_class": {"0": {}, "1": {}}, "at_clustering": {"class_centroid_accuracy": 0.5,
    ...           "mean_cos_within_class": 0.1, "mean_cos_between_classes": 0.1}}
    >>> last = {**record, "after_training": {"class_centroid_accuracy": 0.75, "mean_cos_within_class": 0.3,
    ...         "mean_cos_between_classes": 0.1}}
    >>> embedding_learning([record, last])["class_centroid_accuracy"], embedding_learning([record, last])["chance"]
    ({'start': 0.5, 'end': 0.75}, 0.5)
    """
    if not isinstance(diagnostics, list) or not diagnostics:
        return None
    first, last = diagnostics[0].get("at_clustering"), diagnostics[-1].get("after_training")
    if not isinstance(first, dict) or not isinstance(last, dict):
        return None

    def gap(record: dict[str, Any]) -> float | None:
        if "mean_cos_within_class" not in record or "mean_cos_between_classes" not in record:
            return None
        return float(record["mean_cos_within_class"]) - float(record["mean_cos_between_classes"])

    summary: dict[str, Any] = {
        name: {"start": float(first[name]), "end": float(last[name])}
        for name in LEARNING_MEASURES
        if name in first and name in last
    }
    summary["cos_within_minus_between"] = {"start": gap(first), "end": gap(last)}
    classes = diagnostics[0].get("sizes_per_class")
    summary["chance"] = 1.0 / len(classes) if classes else None
    return summary


def embedding_learning_per_seed(runs: Any) -> list[dict[str, Any] | None] | None:
    """:func:`embedding_learning` of each run's results (``results.json`` dicts); ``None`` when no run has the
    records (no proposed method), so summaries leave the key out."""
    learning = [embedding_learning(run.get("embedding_diagnostics")) for run in runs]
    return learning if any(learning) else None
