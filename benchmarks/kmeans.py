"""Speed of Algorithm 1's balanced spherical k-means at frame scale, against two named baselines measured in the
same run: ``rounds_copying``, the capacity-constrained assignment as thce had it before (every round copies the
unassigned rows' similarities, and the empty-cluster check counts the clusters once per cluster), on the same
similarities, with equal assignments checked; and ``plain_product``, the similarity product as ``x @ centroids.t()``
into a fresh tensor, against thce's ``_Cosines`` (one buffer for every iteration, centroids padded to a multiple of
16), with equal values checked.

Data: ``--points`` unit vectors of ``--dim`` dimensions around ``--k`` random directions (a class's frame embeddings
after training are tight groups; the DCASE-style config's background class is 781,844 frames, K_c = 193, 64-d).
Per Lloyd iteration of ``thce.cluster.spherical_kmeans`` (balanced, 1 torch thread by default), for ``--iters``
iterations: seconds of the similarity product (thce's and the plain one), of thce's assignment + empty-cluster fill,
and of the baseline's.
Then ``spherical_kmeans`` itself for ``--iters`` iterations (k-means++ seeding included; seeding alone:
``kmeans_pp_init_s``).

    python benchmarks/kmeans.py [--points 781844] [--k 193] [--iters 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from thce.cluster import SINGLE, _balanced_assign, _Cosines, _fill_empty, _kmeans_pp_init, spherical_kmeans
from thce.io import write_json
from thce.machine import describe_machine


def rounds_copying(similarity: Tensor, capacity: int) -> Tensor:
    """The baseline: balanced assignment and empty-cluster fill as before (same rules, same result)."""
    n, k = similarity.shape
    assignment = torch.full((n,), -1, dtype=torch.long)
    room = torch.full((k,), capacity, dtype=torch.long)
    unassigned = torch.arange(n)
    while len(unassigned):
        candidate = similarity[unassigned].masked_fill((room <= 0).unsqueeze(0), float("-inf"))
        best, choice = candidate.max(dim=1)
        order = torch.argsort(best, descending=True, stable=True)
        order = order[torch.argsort(choice[order], stable=True)]
        counts = torch.bincount(choice, minlength=k)
        first = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order)) - first[choice[order]]
        accepted = rank < room[choice]
        assignment[unassigned[accepted]] = choice[accepted]
        room -= torch.bincount(choice[accepted], minlength=k)
        unassigned = unassigned[~accepted]
    for cluster in range(k):
        sizes = torch.bincount(assignment, minlength=k)
        if sizes[cluster] > 0:
            continue
        donor = int(torch.argmax(sizes))
        members = torch.nonzero(assignment == donor).flatten()
        assignment[members[torch.argmin(similarity[members, donor])]] = cluster
    return assignment


def grouped_points(n: int, k: int, dim: int, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(k, dim, generator=gen), dim=1)
    group = torch.randint(k, (n,), generator=gen)
    return torch.nn.functional.normalize(directions[group] + 0.15 * torch.randn(n, dim, generator=gen), dim=1)


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=781_844)
    parser.add_argument("--k", type=int, default=193)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--iters", type=int, default=5, help="Lloyd iterations timed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = grouped_points(args.points, args.k, args.dim)
    capacity = math.ceil(args.points / args.k)
    centroids, init_s = timed(
        lambda: _kmeans_pp_init(x, args.k, torch.Generator().manual_seed(0), SINGLE, 0, args.points)
    )
    product, plain_product, thce_s, baseline_s, equal, equal_products = [], [], [], [], True, True
    cosines = _Cosines(x, args.k)
    for _ in range(args.iters):
        plain, seconds = timed(lambda: x @ centroids.t())  # noqa: B023 (called at once)
        plain_product.append(seconds)
        similarity, seconds = timed(lambda: cosines(centroids))  # noqa: B023
        product.append(seconds)
        equal_products &= torch.equal(similarity, plain)
        del plain
        ours, seconds = timed(lambda: _fill_empty(similarity, _balanced_assign(similarity, capacity)))  # noqa: B023
        thce_s.append(seconds)
        theirs, seconds = timed(lambda: rounds_copying(similarity, capacity))  # noqa: B023
        baseline_s.append(seconds)
        equal &= torch.equal(ours, theirs)
        centroids = torch.nn.functional.normalize(torch.zeros_like(centroids).index_add_(0, ours, x), dim=1)
    _, whole = timed(lambda: spherical_kmeans(x, args.k, seed=0, balanced=True, max_iter=args.iters))
    result = {
        "benchmark": "kmeans",
        "baseline": "rounds_copying: the balanced assignment and empty-cluster fill before (copies per round); "
                    "plain_product: x @ centroids.t() into a fresh tensor, k columns",
        "points": args.points, "k": args.k, "dim": args.dim, "threads": args.threads, "iters": args.iters,
        "similarity_product_s": {"thce": round(statistics.median(product), 3),
                                 "plain_product": round(statistics.median(plain_product), 3)},
        "product_speedup": round(statistics.median(plain_product) / statistics.median(product), 2),
        "equal_products": equal_products,
        "assign_s": {"thce": round(statistics.median(thce_s), 3), "rounds_copying": round(statistics.median(baseline_s), 3)},
        "speedup": round(statistics.median(baseline_s) / statistics.median(thce_s), 2),
        "equal_assignments": equal,
        "kmeans_pp_init_s": round(init_s, 3),
        "spherical_kmeans_s": round(whole, 3),  # its k-means++ seeding and --iters Lloyd iterations
        "machine": describe_machine(),
    }  # fmt: skip
    if args.out:
        write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
