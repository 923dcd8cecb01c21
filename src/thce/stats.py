"""Repeats over seeds and bootstrap confidence intervals for EER differences between methods.

A method beats the baseline on *this* test set only if the difference survives resampling the test clips:
:func:`bootstrap_eer_difference` resamples clips with replacement (stratified by class, so every class keeps its
positives) and reports the percentile interval of ``overall EER(method) - overall EER(baseline)``. With several
seeds (each its own data, split and initialisation), every bootstrap draw averages the per-seed differences.

That interval holds the trained models fixed: it says nothing of how much another training run (another seed,
or the same seed on another machine, whose rounding sends training elsewhere) would move the difference. With
``resample_seeds`` each draw also resamples the seeds with replacement (then the clips of each drawn seed): the
interval of a new set of training runs as well as of new test clips, wider and, with few seeds, coarse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from thce.metrics import per_class_eer


@dataclass(frozen=True)
class ScoredTestSet:
    """Scores of every method on one test set.

    Attributes:
        class_index: (N,) class of each test clip (L = background).
        scores: method -> (N, L) detection scores.
        classes: the L event names.
    """

    class_index: np.ndarray
    scores: Mapping[str, np.ndarray]
    classes: tuple[str, ...]


def _stratified_draw(class_index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of a bootstrap sample drawn with replacement within each class (class sizes kept)."""
    parts = []
    for c in np.unique(class_index):
        members = np.flatnonzero(class_index == c)
        parts.append(rng.choice(members, size=len(members), replace=True))
    return np.concatenate(parts)


def bootstrap_eer_difference(
    test_sets: Sequence[ScoredTestSet],
    *,
    method: str,
    reference: str = "baseline",
    draws: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = False,
) -> dict[str, float]:
    """Percentile bootstrap interval of ``overall EER(method) - overall EER(reference)`` (fractions).

    Args:
        test_sets: one per seed; each draw resamples every test set and averages the per-set differences.
        resample_seeds: each draw first draws ``len(test_sets)`` sets with replacement (two-stage bootstrap: the
            spread between training runs enters the interval).
        method, reference: keys of ``ScoredTestSet.scores``.
        draws: bootstrap replicates.
        confidence: coverage of the interval.
        seed: seeds the resampling.

    Returns:
        ``{"difference": observed mean difference, "low": ..., "high": ..., "draws": n}``; an interval that excludes
        0 means the difference is unlikely to be an accident of this test set.
    """
    if not test_sets:
        raise ValueError("bootstrap_eer_difference: need at least one test set")
    if not 0 < confidence < 1:
        raise ValueError(f"bootstrap_eer_difference: confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)

    def difference(ts: ScoredTestSet, index: np.ndarray) -> float:
        labels = ts.class_index[index]
        a = per_class_eer(scores=ts.scores[method][index], class_index=labels, classes=ts.classes)["overall"]
        b = per_class_eer(scores=ts.scores[reference][index], class_index=labels, classes=ts.classes)["overall"]
        return a - b

    observed = float(np.mean([difference(ts, np.arange(len(ts.class_index))) for ts in test_sets]))

    def replicate() -> float:
        n = len(test_sets)
        drawn = [test_sets[i] for i in rng.integers(n, size=n)] if resample_seeds else test_sets
        return float(np.mean([difference(ts, _stratified_draw(ts.class_index, rng)) for ts in drawn]))

    replicates = np.array([replicate() for _ in range(draws)])
    tail = (1 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return {"difference": observed, "low": float(low), "high": float(high), "draws": draws, "confidence": confidence}


def mean_std_eer(per_seed: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and sample standard deviation of each EER over seeds.

    ``per_seed[s][method][class]`` -> ``{method: {class: {"mean": m, "std": s}}}`` (std 0 for a single seed).
    """
    methods = per_seed[0].keys()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method in methods:
        out[method] = {}
        for name in per_seed[0][method]:
            values = np.array([run[method][name] for run in per_seed], dtype=float)
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            out[method][name] = {"mean": float(values.mean()), "std": std}
    return out
