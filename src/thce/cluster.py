"""Spherical k-means and the paper's per-class clustering (Sec. 3, Algorithm 1 step "Cluster E(x_i)").

Every class c (background included) is split into ``K_c = floor(I_c / min_c' I_c')`` clusters, so clusters are
roughly the size of the smallest class. Clustering is spherical k-means [17]: k-means with cosine similarity on
unit vectors, centroids renormalised to the sphere after each update.

Plain k-means can return very uneven clusters (1 point and 90 points for a target of 30), which defeats the
"roughly equal size" requirement. With ``balanced=True`` the assignment step is capacity-constrained: each cluster
takes at most ``ceil(I_c / K_c)`` points: points propose to their most similar cluster with room, clusters keep
their most similar proposers (vectorised rounds, see :func:`_balanced_assign`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from thce.distributed import SINGLE, Distributed
from thce.errors import DataError
from thce.seeds import derive_seed


def clusters_per_class(counts: Tensor | list[int], max_per_class: int = 0) -> Tensor:
    """The K_c rule: ``floor(I_c / min_c' I_c')`` for every class with ``I_c > 0``, at most ``max_per_class``
    when that is > 0 (a departure from the paper: fewer, larger clusters of the large classes).

    >>> clusters_per_class([20, 20, 10, 260]).tolist()
    [2, 2, 1, 26]
    >>> clusters_per_class([20, 20, 10, 260], max_per_class=4).tolist()
    [2, 2, 1, 4]
    """
    if max_per_class < 0:
        raise ValueError(f"max_per_class must be >= 0 (0: no cap), got {max_per_class}")
    counts = torch.as_tensor(counts, dtype=torch.long)
    if counts.numel() == 0 or int(counts.min()) < 1:
        raise DataError(f"every class needs at least one training clip for clustering; counts per class: {counts.tolist()}")
    k_per_class = counts // counts.min()
    return k_per_class.clamp(max=max_per_class) if max_per_class else k_per_class


def _kmeans_pp_init(x: Tensor, k: int, generator: torch.Generator, dist: Distributed, offset: int, n: int) -> Tensor:
    """k-means++ seeding with cosine distance ``1 - cos``; returns (k, D) unit centroids.

    ``x`` is this rank's rows ``offset .. offset + len(x)`` of the ``n`` points: every rank sees the gathered
    distances and draws the same point; its owner contributes the row through a sum over ranks."""

    def point(index: int) -> Tensor:
        row = x.new_zeros(x.shape[1])
        if offset <= index < offset + len(x):
            row = x[index - offset].clone()
        return dist.all_reduce_sum(row)

    first = int(torch.randint(n, (1,), generator=generator))
    centroids = [point(first)]
    closest_local = (1.0 - x @ centroids[0]).clamp_min(0.0)
    for _ in range(1, k):
        closest = dist.gather_rows(closest_local)
        total = float(closest.sum())
        if total <= 0.0:  # all remaining points coincide with a centroid: pick any
            index = int(torch.randint(n, (1,), generator=generator))
        else:
            index = int(torch.multinomial(closest / total, 1, generator=generator))
        centroids.append(point(index))
        closest_local = torch.minimum(closest_local, (1.0 - x @ centroids[-1]).clamp_min(0.0))
    return torch.stack(centroids)


class _Cosines:
    """Cosines of the ``(N, D)`` unit rows of ``x`` to ``k`` centroids, ``(k, D) -> (N, k)``, for Lloyd iterations.

    Every call writes into one ``(N, k')`` buffer (the previous result is overwritten), ``k'`` being ``k`` rounded
    up to a multiple of 16 with zero centroids: BLAS kernels fill output rows in blocks of 16 floats, and at the
    DCASE-style config's background scale (782k frames, K = 193, 64-d, one thread) the product took 2.5x less time
    as 208 columns than as 193, with the same values (``benchmarks/kmeans.py``). Narrow products (``k < 16``) are
    cheap and kept as they are: for ``k <= 11`` the library takes another kernel, whose last bits differ."""

    def __init__(self, x: Tensor, k: int) -> None:
        self.x = x
        self.k = k
        padded = -(-k // 16) * 16 if k >= 16 else k
        self.centroids = x.new_zeros(padded, x.shape[1])
        self.products = x.new_empty(x.shape[0], padded)

    def __call__(self, centroids: Tensor) -> Tensor:
        self.centroids[: self.k] = centroids
        return torch.mm(self.x, self.centroids.t(), out=self.products)[:, : self.k]


def _by_cluster_then_similarity(choice: Tensor, best: Tensor) -> Tensor:
    """The permutation of proposers sorting them by ``choice`` (ascending), then ``best`` (descending), ties by
    position: one stable sort of an int64 key, each float32 similarity mapped to an integer of the same order (its
    IEEE bits, the magnitude bits flipped for negatives), instead of a sort by similarity and then a stable sort by
    cluster. ``choice`` (n,) in [0, K), ``best`` (n,) float32 without NaN."""
    bits = (best.to(torch.float32) + 0.0).view(torch.int32).to(torch.int64)  # + 0.0: -0.0 becomes 0.0 (they are equal)
    ascending = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return torch.argsort(choice * (1 << 33) + ((1 << 31) - ascending), stable=True)


def _balanced_assign(similarity: Tensor, capacity: int) -> Tensor:
    """Capacity-constrained assignment, vectorised in rounds: every unassigned point proposes to its most similar
    cluster that still has room; each cluster accepts its most similar proposers up to its remaining capacity; the
    rest propose again. ``similarity`` (N, K), ``capacity * K >= N`` -> assignment (N,), each cluster at most
    ``capacity`` points. At most K rounds (every round fills at least one cluster or assigns every proposer)."""
    n, k = similarity.shape
    assignment = torch.full((n,), -1, dtype=torch.long)
    room = torch.full((k,), capacity, dtype=torch.long)
    unassigned = torch.arange(n)
    candidate: Tensor | None = similarity  # the first round: every point, every cluster open, so no (N, K) copy
    while len(unassigned):
        if candidate is None:
            candidate = similarity[unassigned]
            candidate.masked_fill_((room <= 0).unsqueeze(0), float("-inf"))
        best, choice = candidate.max(dim=1)
        candidate = None
        order = _by_cluster_then_similarity(choice, best)
        counts = torch.bincount(choice, minlength=k)
        first = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order)) - first[choice[order]]
        accepted = rank < room[choice]
        assignment[unassigned[accepted]] = choice[accepted]
        room -= torch.bincount(choice[accepted], minlength=k)
        unassigned = unassigned[~accepted]
    return assignment


def _fill_empty(similarity: Tensor, assignment: Tensor) -> Tensor:
    """Give every empty cluster the point of the largest cluster that fits its own centroid worst.

    ``similarity`` (N, K) cosines of every point to every centroid; ``assignment`` (N,) is changed in place."""
    k = similarity.shape[1]
    if bool((torch.bincount(assignment, minlength=k) > 0).all()):
        return assignment  # the usual case: one count, not one per cluster
    for cluster in range(k):
        sizes = torch.bincount(assignment, minlength=k)
        if sizes[cluster] > 0:
            continue
        donor = int(torch.argmax(sizes))
        members = torch.nonzero(assignment == donor).flatten()
        worst = members[torch.argmin(similarity[members, donor])]
        assignment[worst] = cluster
    return assignment


def spherical_kmeans(
    x: Tensor,
    k: int,
    *,
    seed: int = 0,
    max_iter: int = 100,
    balanced: bool = False,
    dist: Distributed = SINGLE,
) -> tuple[Tensor, Tensor]:
    """Spherical k-means of unit vectors, optionally spread over the ranks of a distributed job.

    Args:
        x: (n, D) embeddings; rows are L2-normalised here (they normally already are). In a distributed job, this
            rank's consecutive share of the N points (ranks in order); every rank must call with the same ``k``.
        k: number of clusters, 1 <= k <= N.
        seed: seeds the k-means++ initialisation.
        max_iter: upper bound on Lloyd iterations; stops earlier when assignments no longer change.
        balanced: cap cluster sizes at ``ceil(N / k)`` (roughly equal sizes) instead of nearest-centroid.
        dist: the job; each Lloyd step gathers the (N, k) cosines (the assignment, balanced or not, is then
            global and the same everywhere) and all-reduces the (k, D) centroid sums, so every rank ends with
            identical centroids. Only the similarities, never the embeddings, travel.

    Returns:
        centroids (k, D) unit vectors and assignment (N,) of all N points in ``[0, k)``; no cluster is empty.
    """
    if x.ndim != 2:
        raise ValueError(f"spherical_kmeans expects x of shape (N, D), got {tuple(x.shape)}")
    sizes = dist.gather_rows(torch.tensor([x.shape[0]], dtype=torch.long))
    n, offset = int(sizes.sum()), int(sizes[: dist.rank].sum())
    if not 1 <= k <= n:
        raise ValueError(f"spherical_kmeans: k must be in [1, N={n}], got {k}")
    x = torch.nn.functional.normalize(x.detach().to(torch.float32), dim=1)
    generator = torch.Generator().manual_seed(seed)
    centroids = _kmeans_pp_init(x, k, generator, dist, offset, n)
    capacity = math.ceil(n / k)
    assignment = torch.full((n,), -1, dtype=torch.long)
    cosines = _Cosines(x, k)
    for _ in range(max_iter):
        similarity = dist.gather_rows(cosines(centroids))
        new_assignment = _balanced_assign(similarity, capacity) if balanced else similarity.argmax(dim=1)
        new_assignment = _fill_empty(similarity, new_assignment)
        converged = bool(torch.equal(new_assignment, assignment))
        assignment = new_assignment
        local = assignment[offset : offset + x.shape[0]]
        centroids = torch.nn.functional.normalize(
            dist.all_reduce_sum(torch.zeros_like(centroids).index_add_(0, local, x)), dim=1
        )
        if converged:
            break
    return centroids, assignment


@dataclass
class Clustering:
    """Per-class clustering of a data set.

    Attributes:
        centroids: (K, D) unit vectors, clusters of class 0 first, then class 1, ...
        cluster_class: (K,) class index of each cluster.
        assignment: (N,) global cluster index of each sample (its cluster belongs to its own class).
        clusters_per_class: (C,) K_c.
    """

    centroids: Tensor
    cluster_class: Tensor
    assignment: Tensor
    clusters_per_class: Tensor

    def sizes(self) -> Tensor:
        """(K,) number of samples per cluster."""
        return torch.bincount(self.assignment, minlength=len(self.cluster_class))


def cluster_per_class(
    embeddings: Tensor,
    class_index: Tensor,
    *,
    num_classes: int,
    seed: int = 0,
    balanced: bool = False,
    max_iter: int = 100,
    max_clusters_per_class: int = 0,
    dist: Distributed = SINGLE,
) -> Clustering:
    """Split every class into ``K_c`` clusters with spherical k-means (the paper's clustering step).

    Args:
        embeddings: (N, D) L2-normalised embeddings of the training set.
        class_index: (N,) class of each sample in ``[0, num_classes)`` (background is a class here).
        num_classes: C, number of classes including background.
        max_clusters_per_class: cap on K_c (0: none, the paper's rule; see :func:`clusters_per_class`).
        dist: in a distributed job every rank passes the same full arrays and clusters its share of each class
            (see :func:`spherical_kmeans`); the result is the same on every rank.
    """
    class_index = torch.as_tensor(class_index, dtype=torch.long)
    counts = torch.bincount(class_index, minlength=num_classes)
    k_per_class = clusters_per_class(counts, max_clusters_per_class)
    centroids, cluster_class = [], []
    assignment = torch.empty(len(class_index), dtype=torch.long)
    offset = 0
    for c in range(num_classes):
        members = torch.nonzero(class_index == c).flatten()
        k_c = int(k_per_class[c])
        class_centroids, local = spherical_kmeans(
            embeddings[members[dist.share(len(members))]], k_c, seed=derive_seed(seed, "class", c), balanced=balanced,
            max_iter=max_iter, dist=dist,
        )  # fmt: skip
        centroids.append(class_centroids)
        cluster_class += [c] * k_c
        assignment[members] = local + offset
        offset += k_c
    return Clustering(
        centroids=torch.cat(centroids),
        cluster_class=torch.tensor(cluster_class, dtype=torch.long),
        assignment=assignment,
        clusters_per_class=k_per_class,
    )


def assign_to_own_class(similarity: Tensor, class_index: Tensor, cluster_class: Tensor) -> Tensor:
    """For samples without a k-means assignment (validation, test): the most similar cluster of their own class.

    ``similarity`` (n, K): cosines to the centroids, or the cluster layer's outputs ``h``; ``class_index`` (n,);
    ``cluster_class`` (K,) -> (n,) cluster indices.
    """
    same = cluster_class.unsqueeze(0) == class_index.unsqueeze(1)
    return similarity.masked_fill(~same, float("-inf")).argmax(dim=1)
