"""Cost of embedding learning against the training-set size I: LMLE against the triple-header CE (THCE).

The paper's efficiency claim (Sec. 3.1): LMLE's quintuplet table costs O(I^2) (every anchor against every sample),
the triple-header CE O(IK), K << I. Measured here with the library code of both methods, in the same run, with the
same encoder, data, batch size, clustering code and settings, three ways:

1. **Whole epoch** (the issue's measure): one embedding-learning epoch with its sampling structure built afresh.

   - THCE: ``thce.training.algorithm1.learn_embedding`` with one iteration of one end-to-end epoch (no head-only
     epochs): embed the training set, per-class spherical k-means (K_c rule, timed through the ``on_iteration``
     hook), one epoch of the weighted triple-header CE (Eqs. 4-9), validation loss.
   - LMLE: ``thce.training.lmle.learn_embedding_lmle`` with one epoch and one rebuild: embed the training set, the same
     clustering, the quintuplet table (chunked, members among a random half as in LMLE), one epoch of I anchors
     (batches of ``--batch`` anchors plus their members, class-balanced), validation loss.

   Phases: ``cluster`` (shared), ``quintuplets`` (LMLE's table), ``train_epoch`` (the optimiser steps, their loss
   and the validation loss), ``other`` (embedding the training set for the clustering, diagnostics).
2. **Amortised epoch**: each method rebuilds its sampling structure at its paper's frequency, not every epoch.
   THCE re-clusters once per Algorithm 1 iteration (``--recluster-every``, 30 epochs in the paper); LMLE rebuilds
   clustering and table every ``--rebuild-every`` epochs (default ``LMLEConfig.rebuild_every`` = 30, the same
   period), and, as a second variant, every 5000 iterations of ``--batch`` anchors (Huang et al.'s schedule: a
   period of 5000 * batch / I epochs, shorter as I grows). Per epoch: ``train_epoch + (cluster [+ quintuplets]
   + other) / period``, from the whole-epoch phases.
3. **Loss side**: only what differs between the losses, on fixed embeddings (the fresh encoder's, with the
   clustering and table of the LMLE run at that size), no encoder: THCE's cluster-layer cosines and
   triple-header CE, forward and backward, over an epoch of batches (O(IKD)); LMLE's quintuplet table (O(I^2 D),
   the ``quintuplets`` phase above) plus, over an epoch of anchor batches, gathering members and the
   triple-header hinge forward and backward (O(ID)). Ratios with the table every epoch and amortised.

Slopes (log-log least squares) are fitted over all sizes (``slope_thce``, ``slope_lmle``, ``slopes``) and over
the upper sizes, ``I >= max(I) / 8`` (``slopes_upper``), where constant per-call overheads weigh least. The I at
which each ratio reaches the goal (50) is found where measured (with the log-log interpolated crossing), else
extrapolated from per-phase power laws fitted on the upper sizes (``extrapolated_sizes``), and, for the whole
epoch, also from the theory-shaped model of the old version (THCE ~ a I, LMLE ~ b I + c I^2 with c from the table,
fitted at the largest I). They differ mainly in the shared k-means: the power laws let its iteration count keep
growing with I as it did over the upper sizes, the theory model holds it at its value at the largest I.

The training clips come in the paper's 2:2:1:26 ratio (dog:baby:gun:background), so K = 31 clusters at every I.
Inputs are small so that the sweep runs in minutes on a 2-core CPU: the default encoder is an MLP over one 64-d
frame (64 -> 128 -> 128, ReLU, L2-normalised: the paper's 128-d embedding size); ``--encoder lstm`` uses thce's
LSTMEncoder (128 units) over 10 frames x 16 mels. The paper's CNN over 1000 x 64 frames would make the linear part
(the encoder) far dearer and every ratio but the loss side's far smaller at these I.

Clustering uses plain nearest-centroid assignment by default (``--balanced-clusters`` for the pipeline's
size-capped assignment, which is far slower at large I); it is identical for both methods and is reported apart.
Runs on one torch thread by default (``--threads``). Each size runs ``--repeats`` times per method, alternating
which goes first, and keeps the fastest; process CPU seconds are reported alongside wall seconds, and
``machine.cpu_over_wall`` (CPU over wall seconds of the measured runs; near 1 on one thread: the sweep was not kept
waiting by other processes) qualifies the load averages.

Prints one JSON object (also written to ``--json`` if given) and saves a two-panel log-log plot (``--out``);
``--readme docs/benchmarks.md`` writes the summary and a table per I between the embedding-scaling markers of that page
(``--from-json PATH --readme docs/benchmarks.md`` does that from an earlier result, without measuring).

    .venv/bin/python benchmarks/embedding_scaling.py [--sizes 1000 2000 ...] [--repeats 3] [--json PATH]
                                                     [--readme docs/benchmarks.md] [--from-json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from thce.cluster import Clustering
from thce.losses import TripleHeaderCrossEntropy
from thce.losses.lmle import TripleHeaderHinge
from thce.machine import describe_machine
from thce.models import LSTMEncoder, l2_normalise
from thce.sampling import balanced_sampling_order
from thce.training.algorithm1 import EmbeddingConfig, EmbeddingIteration, learn_embedding
from thce.training.data import TrainingData, embed
from thce.training.engine import MetricsLog, RunContext, TrainConfig
from thce.training.lmle import LMLEConfig, learn_embedding_lmle

RATIO = (2, 2, 1, 26)  # dog, baby, gun, background: the paper's Table 2 setting
DEFAULT_SIZES = (1000, 2000, 4000, 8000, 16000, 32000)
GOAL = 50.0
GOAL_SIZE = 32000  # the "at I = 32k"
LMLE_PAPER_ITERATIONS = 5000  # Huang et al.: quintuplets refreshed every 5000 iterations
UPPER_FRACTION = 8  # upper sizes: I >= max(I) / 8
MAX_EXTRAPOLATION = 1e10


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


def make_ctx(args: argparse.Namespace) -> RunContext:
    return RunContext(train=TrainConfig(batch_size=args.batch, device="cpu"), seed=args.seed, log=MetricsLog())


# ------------------------------------------------------------------------------------- whole-epoch runs


def run_thce(data: TrainingData, args: argparse.Namespace, frames: int, mels: int) -> dict[str, float]:
    """One THCE epoch with its clustering; seconds per phase."""
    encoder = make_encoder(args.encoder, frames, mels, args.seed)
    config = EmbeddingConfig(
        n_iter=1, epochs=1, last_epochs=1, head_only_epochs=0,
        balanced_clusters=args.balanced_clusters, kmeans_max_iter=args.kmeans_max_iter,
    )  # fmt: skip
    ctx = make_ctx(args)
    iterations: list[EmbeddingIteration] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    learn_embedding(encoder, data, config, ctx, method="thce", on_iteration=iterations.append)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    cluster = sum(step.cluster_seconds for step in iterations)
    epoch = sum(r["seconds"] for r in ctx.log.rows if r["stage"] == "embedding")
    return {"total": total, "cpu": cpu, "cluster": cluster, "train_epoch": epoch,
            "other": total - cluster - epoch}  # fmt: skip


def run_lmle(
    data: TrainingData, args: argparse.Namespace, frames: int, mels: int
) -> tuple[dict[str, float], Clustering, torch.Tensor]:
    """One LMLE epoch with its clustering and quintuplet table; seconds per phase, the clustering, the table."""
    encoder = make_encoder(args.encoder, frames, mels, args.seed)
    config = LMLEConfig(
        epochs=1, rebuild_every=1, balanced_clusters=args.balanced_clusters, kmeans_max_iter=args.kmeans_max_iter,
        candidate_fraction=args.candidate_fraction, chunk_size=args.chunk_size,
    )  # fmt: skip
    ctx = make_ctx(args)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = learn_embedding_lmle(encoder, data, config, ctx, method="lmle")
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    d = result.diagnostics[0]
    seconds = {"total": total, "cpu": cpu, "cluster": d["seconds_cluster"], "quintuplets": d["seconds_quintuplets"],
               "train_epoch": d["seconds_train"], "other": total - d["seconds_cluster"] - d["seconds_quintuplets"]
               - d["seconds_train"]}  # fmt: skip
    return seconds, result.clustering, result.table


# ---------------------------------------------------------------------------------------- loss side


def _batches(order: torch.Tensor, batch: int) -> list[torch.Tensor]:
    """Consecutive batches of ``order``; a last batch of one joins the previous one (as in ``fit_stage``)."""
    batches = list(order.split(batch))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def thce_loss_epoch(emb: torch.Tensor, clustering: Clustering, batch: int, seed: int) -> float:
    """Seconds for an epoch of THCE's loss side on fixed (I, D) embeddings: per batch, the cluster layer
    ``h = W^T e`` (B x D x K), the weighted triple-header CE (Eqs. 5-9) and its backward pass (to W and e)."""
    config = EmbeddingConfig()
    loss_fn = TripleHeaderCrossEntropy.from_centroids(
        clustering.centroids, clustering.cluster_class, alpha=config.alpha, beta_same=config.beta_same,
        beta_other=config.beta_other, weighted=config.cluster_weights,
    )  # fmt: skip
    assignment = clustering.assignment
    batches = _batches(torch.randperm(len(emb), generator=torch.Generator().manual_seed(seed)), batch)
    start = time.perf_counter()
    for positions in batches:
        z = emb[positions].requires_grad_()
        loss_fn(z, assignment[positions]).backward()
    return time.perf_counter() - start


def lmle_hinge_epoch(emb: torch.Tensor, class_index: torch.Tensor, table: torch.Tensor, batch: int, seed: int) -> float:
    """Seconds for an epoch of LMLE's per-batch loss side on fixed (I, D) embeddings, table given: draw I anchors
    class-balanced, gather each batch's distinct members (as ``learn_embedding_lmle``'s train step does), the
    triple-header hinge (Eq. 2) and its backward pass (to the embeddings)."""
    loss_fn = TripleHeaderHinge(LMLEConfig.margins)
    start = time.perf_counter()
    anchors = balanced_sampling_order(class_index, generator=torch.Generator().manual_seed(seed))
    for chosen in _batches(anchors, batch):
        rows = torch.cat([chosen.unsqueeze(1), table[chosen]], dim=1)
        needed, inverse = torch.unique(rows[rows >= 0], return_inverse=True)
        local = torch.full_like(rows, -1)
        local[rows >= 0] = inverse
        e = emb[needed].requires_grad_()
        loss_fn(e, local).backward()
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------- fitting


def slope(sizes: Sequence[float], seconds: Sequence[float]) -> float:
    """Least-squares slope of log(seconds) against log(I)."""
    if len(sizes) < 2:
        return float("nan")
    return float(np.polyfit(np.log(sizes), np.log(np.maximum(seconds, 1e-9)), 1)[0])


def power_law(sizes: Sequence[float], seconds: Sequence[float]) -> Callable[[float], float]:
    """``I -> A I^s`` fitted by least squares in log-log (needs >= 2 sizes)."""
    s, log_a = np.polyfit(np.log(sizes), np.log(np.maximum(seconds, 1e-9)), 1)
    return lambda size: float(math.exp(log_a) * size**s)


def first_size_reaching(ratio: Callable[[float], float], goal: float, start: float) -> float | None:
    """Smallest I in [start, MAX_EXTRAPOLATION] (log grid, then bisection) with ``ratio(I) >= goal``; None if none."""
    grid = np.geomspace(start, MAX_EXTRAPOLATION, 2000)
    hits = [i for i, size in enumerate(grid) if ratio(float(size)) >= goal]
    if not hits:
        return None
    if hits[0] == 0:
        return float(start)
    low, high = float(grid[hits[0] - 1]), float(grid[hits[0]])
    for _ in range(60):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if ratio(middle) < goal else (low, middle)
    return high


def _round_size(size: float | None) -> int | None:
    return None if size is None else int(round(size, -2 if size >= 1000 else 0))


# --------------------------------------------------------------------------------------------- sweep


def amortised(phases: dict[str, float], period: float, rebuilt: Sequence[str]) -> float:
    """Seconds per epoch when the ``rebuilt`` phases (and ``other``) run once every ``period`` epochs."""
    return phases["train_epoch"] + (phases["other"] + sum(phases[p] for p in rebuilt)) / period


def paper_period(size: float, batch: int) -> float:
    """LMLE's rebuild period in epochs under Huang et al.'s schedule: 5000 iterations of ``batch`` anchors."""
    return LMLE_PAPER_ITERATIONS * batch / size


def ratios_for(
    thce: dict[str, float], lmle: dict[str, float], size: float, args: argparse.Namespace
) -> dict[str, float]:
    """Every LMLE / THCE ratio at one size, from per-phase seconds (measured or modelled)."""

    def over(numerator: float, denominator: float) -> float:
        return numerator / max(denominator, 1e-12)  # modelled phases can underflow far from the measured sizes

    thce_amortised = amortised(thce, args.recluster_every, ("cluster",))
    return {
        "whole_epoch": over(lmle["total"], thce["total"]),
        "whole_epoch_without_clustering": over(lmle["total"] - lmle["cluster"], thce["total"] - thce["cluster"]),
        "amortised": over(amortised(lmle, args.rebuild_every, ("cluster", "quintuplets")), thce_amortised),
        "amortised_lmle_paper_schedule": over(
            amortised(lmle, paper_period(size, args.batch), ("cluster", "quintuplets")), thce_amortised
        ),
        "loss_side": over(lmle["quintuplets"] + lmle["hinge"], thce["loss"]),
        "loss_side_amortised": over(lmle["quintuplets"] / args.rebuild_every + lmle["hinge"], thce["loss"]),
    }


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
    cpu: dict[str, list[float]] = {"thce": [], "lmle": []}
    sweep_start = time.perf_counter()
    loss_cpu, loss_wall = 0.0, 0.0
    for size in sizes:
        data = make_data(size, args.val, frames, mels, args.seed)
        # Loss side on the fresh encoder's embeddings, with the clustering and table the LMLE run built from them.
        encoder = make_encoder(args.encoder, frames, mels, args.seed)
        train_idx = data.splits["train"]
        emb = embed(encoder, data, train_idx, make_ctx(args)).detach()
        train_class = torch.as_tensor(data.class_index[train_idx], dtype=torch.long)
        runs: dict[str, list[dict[str, float]]] = {"thce": [], "lmle": []}
        loss_runs: dict[str, list[float]] = {"thce": [], "lmle": []}
        for repeat in range(args.repeats):
            order = ("thce", "lmle") if repeat % 2 == 0 else ("lmle", "thce")  # alternate: drift hits both alike
            for name in order:
                if name == "thce":
                    runs["thce"].append(run_thce(data, args, frames, mels))
                else:
                    seconds, clustering, table = run_lmle(data, args, frames, mels)
                    runs["lmle"].append(seconds)
            # The loss-side loops right after, within the repeat: a burst of load cannot hit all their repeats.
            cpu_start = time.process_time()
            loss_runs["thce"].append(thce_loss_epoch(emb, clustering, args.batch, args.seed + repeat))
            loss_runs["lmle"].append(lmle_hinge_epoch(emb, train_class, table, args.batch, args.seed + repeat))
            loss_cpu += time.process_time() - cpu_start
            loss_wall += loss_runs["thce"][-1] + loss_runs["lmle"][-1]
        for name in runs:
            fastest = dict(min(runs[name], key=lambda r: r["total"]))
            fastest["loss" if name == "thce" else "hinge"] = min(loss_runs[name])
            best[name].append(fastest)
            cpu[name].append(min(r["cpu"] for r in runs[name]))

    phases = {
        name: {key: [round(r[key], 4) for r in best[name]] for key in best[name][0] if key != "cpu"} for name in best
    }
    thce_s, lmle_s = phases["thce"]["total"], phases["lmle"]["total"]
    measured = [ratios_for(th, lm, size, args) for th, lm, size in zip(best["thce"], best["lmle"], sizes)]
    ratios = {key: [round(r[key], 3) for r in measured] for key in measured[0]}

    # Slopes over all sizes and over the upper sizes; per-phase power laws on the upper sizes for extrapolation.
    upper = [i for i, size in enumerate(sizes) if size >= sizes[-1] / UPPER_FRACTION]
    if len(upper) < 3:
        upper = list(range(max(0, len(sizes) - 3), len(sizes)))
    fit_sizes = [sizes[i] for i in upper]

    def slopes_over(indices: list[int]) -> dict[str, float]:
        at = [sizes[i] for i in indices]
        out = {f"{name}_{key}": round(slope(at, [phases[name][key][i] for i in indices]), 3)
               for name in phases for key in phases[name] if key != "other"}  # fmt: skip
        out["lmle_loss_side"] = round(slope(at, [lm["quintuplets"] + lm["hinge"] for lm in
                                                 (best["lmle"][i] for i in indices)]), 3)  # fmt: skip
        return out

    models = {
        name: {key: power_law(fit_sizes, [best[name][i][key] for i in upper]) for key in best[name][0] if key != "cpu"}
        for name in best
    }  # fmt: skip

    def modelled_ratios(size: float) -> dict[str, float]:
        th = {key: f(size) for key, f in models["thce"].items()}
        lm = {key: f(size) for key, f in models["lmle"].items()}
        th["total"] = th["cluster"] + th["train_epoch"] + th["other"]  # the phases' sum, each with its own slope
        lm["total"] = lm["cluster"] + lm["quintuplets"] + lm["train_epoch"] + lm["other"]
        return ratios_for(th, lm, size, args)

    extrapolated: dict[str, Any] = {}
    for key in ratios:
        hit = next((i for i, value in enumerate(ratios[key]) if value >= GOAL), None)
        if hit is not None:
            extrapolated[key] = {"size": sizes[hit], "how": "measured"}
            if hit > 0:  # where the measured curve crosses the goal, log-log between the two sizes around it
                (i0, r0), (i1, r1) = (sizes[hit - 1], ratios[key][hit - 1]), (sizes[hit], ratios[key][hit])
                fraction = math.log(GOAL / r0) / math.log(r1 / r0)
                extrapolated[key]["crossing_interpolated"] = _round_size(i0 * (i1 / i0) ** fraction)
        else:
            size = first_size_reaching(lambda i, k=key: modelled_ratios(i)[k], GOAL, sizes[-1])
            extrapolated[key] = {"size": _round_size(size), "how": "per-phase power laws fitted on the upper sizes"
                                 if size is not None else f"not reached below I = {MAX_EXTRAPOLATION:.0e}"}  # fmt: skip
    # The old theory-shaped model: THCE ~ a I, LMLE ~ b I + c I^2 (c: the table) fitted at the largest I.
    top, top_thce, top_lmle = sizes[-1], best["thce"][-1], best["lmle"][-1]
    a = top_thce["total"] / top
    b = (top_lmle["total"] - top_lmle["quintuplets"]) / top
    c = top_lmle["quintuplets"] / top**2
    theory_size = (GOAL - b / a) * a / c if c > 0 else float("inf")
    extrapolated["whole_epoch_theory_model"] = {
        "size": _round_size(theory_size) if math.isfinite(theory_size) else None,
        "how": "THCE ~ a I, LMLE ~ b I + c I^2 (c: the quintuplet table), fitted at the largest I",
    }
    at_goal_size = GOAL_SIZE in sizes

    result: dict[str, Any] = {
        "benchmark": "embedding_scaling",
        "question": "seconds of one embedding-learning epoch vs training-set size I: LMLE (O(I^2)) vs THCE (O(IK))",
        "sizes": sizes,
        "thce_s": thce_s,
        "lmle_s": lmle_s,
        "ratio": ratios["whole_epoch"],
        "slope_thce": round(slope(sizes, thce_s), 3),
        "slope_lmle": round(slope(sizes, lmle_s), 3),
        "ratio_at_max": ratios["whole_epoch"][-1],
        "ratio_at_max_without_clustering": ratios["whole_epoch_without_clustering"][-1],
        "ratio_at_32k": ratios["whole_epoch"][sizes.index(GOAL_SIZE)] if at_goal_size else None,
        "ratios": ratios,
        "ratios_note": {
            "whole_epoch": "LMLE / THCE, one epoch each with clustering (and LMLE's table) built for it",
            "whole_epoch_without_clustering": "the same without the clustering both share",
            "amortised": f"per epoch with THCE re-clustering every {args.recluster_every} epochs (Algorithm 1) and "
            f"LMLE rebuilding clustering + table every {args.rebuild_every} epochs",
            "amortised_lmle_paper_schedule": f"as amortised, LMLE rebuilding every {LMLE_PAPER_ITERATIONS} "
            f"iterations of {args.batch} anchors (Huang et al.): every {LMLE_PAPER_ITERATIONS} * {args.batch} / I "
            "epochs",
            "loss_side": "(quintuplet table + one epoch of hinge batches) / one epoch of THCE loss batches, on fixed "
            "embeddings, no encoder",
            "loss_side_amortised": f"the same with the table built every {args.rebuild_every} epochs",
        },
        "cpu": {
            "note": "process CPU seconds (all threads) of the whole-epoch runs: the work done, whatever the load",
            "thce_cpu_s": [round(t, 4) for t in cpu["thce"]],
            "lmle_cpu_s": [round(t, 4) for t in cpu["lmle"]],
            "slope_thce": round(slope(sizes, cpu["thce"]), 3),
            "slope_lmle": round(slope(sizes, cpu["lmle"]), 3),
            "ratio_at_max": round(cpu["lmle"][-1] / cpu["thce"][-1], 3),
        },
        "slopes": slopes_over(list(range(len(sizes)))),
        "slopes_upper": {"sizes": fit_sizes, **slopes_over(upper)},
        "phases": phases,
        "phases_note": "seconds, fastest of the repeats; total = cluster + [quintuplets +] train_epoch + other; "
        "loss (THCE) and hinge (LMLE) are the separate loss-side measurements on fixed embeddings (not in total)",
        "goal": f"THCE at least {GOAL:g}x cheaper than LMLE at I = {GOAL_SIZE} (whole epoch)",
        "goal_met": bool(ratios["whole_epoch"][sizes.index(GOAL_SIZE)] >= GOAL) if at_goal_size else None,
        "extrapolated_size_for_goal": extrapolated["whole_epoch"]["size"],
        "extrapolation": "the I at which the whole-epoch ratio reaches the goal: measured if reached, else per-phase "
        "power laws fitted on the upper sizes; extrapolated_sizes has every ratio and the theory model",
        "extrapolated_sizes": extrapolated,
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
            "thce": "learn_embedding: n_iter 1, 1 end-to-end epoch, no head-only epochs (its epoch also tallies "
            "the Eq. 3 fractions per batch, a diagnostic LMLE's epoch does not pay)",
            "lmle": f"learn_embedding_lmle: 1 epoch of I anchors (each with up to 4 members: up to 5 encoder "
            f"inputs per anchor), table rebuilt once, candidate_fraction {args.candidate_fraction}, chunk_size "
            f"{args.chunk_size}, class-balanced anchors",
            "clustering": f"cluster_per_class, balanced={args.balanced_clusters}, max_iter={args.kmeans_max_iter}",
            "periods": {"thce_recluster_every": args.recluster_every, "lmle_rebuild_every": args.rebuild_every,
                        "lmle_paper_iterations": LMLE_PAPER_ITERATIONS},  # fmt: skip
            "threads": "one torch thread for both methods unless --threads says otherwise; more threads on a "
            "quiet machine speed up LMLE's table (a matrix product) more than THCE's small operations, which "
            "would lower the whole-epoch ratio",
            "repeats": args.repeats,
            "statistic": "fastest of the repeats, per size, method and phase group",
            "tiny": args.tiny,
        },
        "machine": {**describe_machine(torch.get_num_threads()), "loadavg_before": [round(v, 2) for v in load_before],
                    "loadavg_after": [round(v, 2) for v in os.getloadavg()]},  # fmt: skip
        "sweep_seconds": round(time.perf_counter() - sweep_start, 1),
        "plot": str(args.out),
    }
    cores = result["machine"]["usable_cores"] or 1
    busy = max(load_before[0], result["machine"]["loadavg_after"][0]) > 0.5 * cores
    # CPU seconds over wall seconds of the measured runs: near 1 on one thread means the sweep was not kept waiting.
    share = (sum(cpu["thce"]) + sum(cpu["lmle"])) / (sum(thce_s) + sum(lmle_s))
    result["machine"]["cpu_over_wall"] = round(share, 3)
    result["machine"]["cpu_over_wall_loss_side"] = round(loss_cpu / max(loss_wall, 1e-9), 3)  # all its repeats
    result["machine"]["load_note"] = (
        (f"busy: 1-minute load average above half the {cores} usable cores before or after the sweep"
         if busy else f"quiet: 1-minute load average at most half the {cores} usable cores before and after")
        + f"; the measured runs got {share:.0%} of their wall time as CPU time on {torch.get_num_threads()} "
        "thread(s), so waiting for the CPU inflated the wall times by about "
        f"{max(0.0, 1 / max(share, 1e-9) - 1):.0%} at most"
    )  # fmt: skip
    result["summary"] = summary(result)
    plot(result, args.out, modelled_ratios)
    return result


def summary(result: dict[str, Any]) -> list[str]:
    """A few sentences with the figures that answer the question."""
    sizes, ratios, ext = result["sizes"], result["ratios"], result["extrapolated_sizes"]
    top = sizes[-1]

    def where(key: str) -> str:
        entry = ext[key]
        if entry["size"] is None:
            return "not within the extrapolation range"
        if entry["how"] != "measured":
            return f"at I = {entry['size']:,} (extrapolated)"
        crossing = entry.get("crossing_interpolated")
        return f"at I = {entry['size']:,} (measured" + (f"; crossing near {crossing:,})" if crossing else ")")

    lines = [
        f"whole epoch: LMLE / THCE = {ratios['whole_epoch'][0]:.2f} at I = {sizes[0]:,} and "
        f"{ratios['whole_epoch'][-1]:.2f} at I = {top:,}; the {GOAL:g}x goal is reached {where('whole_epoch')}",
        f"slopes on I >= {result['slopes_upper']['sizes'][0]:,}: THCE epoch {result['slopes_upper']['thce_total']}, "
        f"LMLE epoch {result['slopes_upper']['lmle_total']}, LMLE table {result['slopes_upper']['lmle_quintuplets']}, "
        f"THCE loss side {result['slopes_upper']['thce_loss']}, clustering {result['slopes_upper']['thce_cluster']}",
        f"loss side (table + hinge vs cluster layer + THCE loss): {ratios['loss_side'][-1]:.1f}x at I = {top:,}; "
        f"{GOAL:g}x {where('loss_side')}",
        f"amortised (rebuilds every {result['settings']['periods']['thce_recluster_every']} / "
        f"{result['settings']['periods']['lmle_rebuild_every']} epochs): {ratios['amortised'][-1]:.2f}x at "
        f"I = {top:,}; {GOAL:g}x {where('amortised')}",
    ]
    return lines


README_START, README_END = "<!-- embedding-scaling:start -->", "<!-- embedding-scaling:end -->"


def readme_section(result: dict[str, Any], source: Path) -> str:
    """Markdown for docs/benchmarks.md: where the figures come from, the summary sentences and a table per I."""
    sizes, ratios, phases = result["sizes"], result["ratios"], result["phases"]
    machine = result.get("machine", {})
    lines = [
        f"Written by `python benchmarks/embedding_scaling.py ... --readme docs/benchmarks.md` from `{source}` "
        f"({result['encoder']['description']}; batch {result['batch']}; {machine.get('torch_threads', '?')} torch "
        f"thread(s); load average at start {machine.get('loadavg_before', ['?'])[0]}):",
        "",
        *(f"- {line}" for line in result["summary"]),
        f"- goal: {result['goal']}; met: {'yes' if result['goal_met'] else 'no'}",
        "",
        "| I | THCE epoch s | LMLE epoch s | LMLE table s | whole-epoch ratio | without clustering | loss-side ratio |",
        "| --: | --: | --: | --: | --: | --: | --: |",
    ]
    for i, size in enumerate(sizes):
        lines.append(
            f"| {size:,} | {result['thce_s'][i]:.3g} | {result['lmle_s'][i]:.3g} | "
            f"{phases['lmle']['quintuplets'][i]:.3g} | {ratios['whole_epoch'][i]:.2f} | "
            f"{ratios['whole_epoch_without_clustering'][i]:.2f} | {ratios['loss_side'][i]:.1f} |"
        )
    return "\n".join(lines) + "\n"


def write_readme(readme: Path, result: dict[str, Any], source: Path) -> None:
    """Replace the section between the embedding-scaling markers of ``readme`` (atomically)."""
    from thce.io import rewrite_section

    rewrite_section(readme, readme_section(result, source), start=README_START, end=README_END)


def plot(result: dict[str, Any], path: Path, modelled_ratios: Callable[[float], dict[str, float]]) -> None:
    """Left: seconds per phase against I; right: the LMLE / THCE ratios, measured and extrapolated, and the goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = np.array(result["sizes"], dtype=float)
    ph, slopes = result["phases"], result["slopes_upper"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.8, 4.8))
    left.loglog(sizes, result["thce_s"], "o-", label=f"THCE epoch (slope {slopes['thce_total']:.2f})")
    left.loglog(sizes, result["lmle_s"], "s-", label=f"LMLE epoch (slope {slopes['lmle_total']:.2f})")
    left.loglog(sizes, ph["lmle"]["quintuplets"], "s--", alpha=0.7,
                label=f"LMLE quintuplet table (slope {slopes['lmle_quintuplets']:.2f})")  # fmt: skip
    left.loglog(sizes, ph["thce"]["cluster"], "^:", alpha=0.7,
                label=f"clustering, both (slope {slopes['thce_cluster']:.2f})")  # fmt: skip
    left.loglog(sizes, ph["thce"]["loss"], "o--", alpha=0.7,
                label=f"THCE loss side (slope {slopes['thce_loss']:.2f})")  # fmt: skip
    left.loglog(sizes, ph["lmle"]["hinge"], "x:", alpha=0.7,
                label=f"LMLE hinge batches (slope {slopes['lmle_hinge']:.2f})")  # fmt: skip
    for power, style in ((1, "k:"), (2, "k--")):
        left.loglog(sizes, result["thce_s"][0] * (sizes / sizes[0]) ** power, style, linewidth=0.8,
                    label=f"~ I^{power}")  # fmt: skip
    left.set_xlabel("training clips I")
    left.set_ylabel("seconds")
    left.set_title(f"Cost per epoch, {result['encoder']['kind']} encoder, batch {result['batch']} "
                   f"(slopes on I >= {slopes['sizes'][0]:,})", fontsize=10)  # fmt: skip
    left.legend(fontsize=7)
    left.grid(True, which="both", alpha=0.3)

    goal_sizes = [e["size"] for e in result["extrapolated_sizes"].values() if e["size"]]
    far = min(max([sizes[-1] * 4, *goal_sizes]) * 1.5, sizes[-1] * 1000, MAX_EXTRAPOLATION)
    grid = np.geomspace(sizes[-1], far, 60)
    names = {"whole_epoch": "whole epoch", "whole_epoch_without_clustering": "whole epoch, no clustering",
             "amortised": "amortised (rebuilds every {thce_recluster_every:g} / {lmle_rebuild_every:g} epochs)"
             .format(**result["settings"]["periods"]), "loss_side": "loss side"}  # fmt: skip
    for key, label in names.items():
        (line,) = right.loglog(sizes, result["ratios"][key], "o-", markersize=3, label=label)
        right.loglog(grid, [modelled_ratios(float(i))[key] for i in grid], "--", color=line.get_color(), alpha=0.6)
    right.axhline(GOAL, color="k", linewidth=0.8)
    right.text(sizes[0], GOAL * 1.08, f"goal {GOAL:g}x", fontsize=8)
    right.axvline(GOAL_SIZE, color="grey", linewidth=0.6, linestyle=":")
    right.set_xlabel("training clips I (dashed: per-phase power laws fitted on the upper sizes)")
    right.set_ylabel("LMLE / THCE")
    right.set_title("How many times THCE is cheaper")
    right.legend(fontsize=7)
    right.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                        help="training-set sizes I (e.g. add 64000 128000 to see the asymptotics)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="runs per size and method; the fastest is kept")
    parser.add_argument("--batch", type=int, default=64, help="batch size (LMLE: anchors per batch)")
    parser.add_argument("--encoder", choices=["mlp", "lstm"], default="mlp")
    parser.add_argument("--val", type=int, default=256, help="validation clips (the same at every I)")
    parser.add_argument("--kmeans-max-iter", type=int, default=100)
    parser.add_argument("--balanced-clusters", action="store_true", help="the size-capped assignment (slow)")
    parser.add_argument("--candidate-fraction", type=float, default=LMLEConfig.candidate_fraction)
    parser.add_argument("--chunk-size", type=int, default=LMLEConfig.chunk_size)
    parser.add_argument("--recluster-every", type=float, default=float(EmbeddingConfig.epochs),
                        help="THCE's epochs per re-clustering for the amortised ratio (Algorithm 1: 30)")  # fmt: skip
    parser.add_argument("--rebuild-every", type=float, default=float(LMLEConfig.rebuild_every),
                        help="LMLE's epochs per clustering + table rebuild for the amortised ratio")  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads for the sweep (0: torch's default); restored afterwards. Default 1: the small "
        "encoder's steps are dominated by per-operation overhead, and on a shared 2-core machine several "
        "threads make them erratic (OpenMP synchronisation); one thread treats both methods alike",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (tests)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("embedding_scaling.png"))
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON to this file")
    parser.add_argument("--readme", type=Path, default=None,
                        help="write the figures between the embedding-scaling markers of this page (docs/benchmarks.md)")  # fmt: skip
    parser.add_argument("--from-json", type=Path, default=None,
                        help="do not measure: read this earlier result (with --readme: only rewrite that page)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text())
        if args.readme is not None:
            write_readme(args.readme, result, args.from_json)
        return result
    if args.tiny:
        args.repeats, args.val, args.kmeans_max_iter = 1, 32, 10
    if min(args.sizes) < len(RATIO) * 8:
        parser.error(f"--sizes: every size must be >= {len(RATIO) * 8}")
    if args.recluster_every <= 0 or args.rebuild_every <= 0:
        parser.error("--recluster-every and --rebuild-every must be > 0")
    previous_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = sweep(args)
    finally:
        torch.set_num_threads(previous_threads)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    if args.readme is not None:
        write_readme(args.readme, result, args.json or Path("stdout"))
    return result


if __name__ == "__main__":
    main()
