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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from thce.metrics import per_class_eer


def _percentile_interval(observed: float, replicates: np.ndarray, confidence: float) -> dict[str, float]:
    """``{"difference", "low", "high", "draws", "confidence"}``: the percentile interval of ``replicates``."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return {"difference": observed, "low": float(low), "high": float(high), "draws": len(replicates),
            "confidence": confidence}  # fmt: skip


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

    def difference(ts: ScoredTestSet, index: np.ndarray) -> float:
        labels = ts.class_index[index]
        a = per_class_eer(scores=ts.scores[method][index], class_index=labels, classes=ts.classes)["overall"]
        b = per_class_eer(scores=ts.scores[reference][index], class_index=labels, classes=ts.classes)["overall"]
        return a - b

    return _bootstrap_difference(
        test_sets, difference, lambda ts: len(ts.class_index), lambda ts, rng: _stratified_draw(ts.class_index, rng),
        draws=draws, confidence=confidence, seed=seed, resample_seeds=resample_seeds,
    )  # fmt: skip


def _bootstrap_difference(
    sets: Sequence[Any],
    difference: Callable[[Any, np.ndarray], float],
    size: Callable[[Any], int],
    draw: Callable[[Any, np.random.Generator], np.ndarray],
    *,
    draws: int,
    confidence: float,
    seed: int,
    resample_seeds: bool,
) -> dict[str, float]:
    """The percentile interval of the mean over ``sets`` (one per seed) of ``difference(set, index)``: observed on
    every item (``arange(size(set))``), then per draw on ``draw(set, rng)``'s resample of every set, or with
    ``resample_seeds`` of ``len(sets)`` sets drawn with replacement first (NaN differences left out of a mean)."""
    if not 0 < confidence < 1:
        raise ValueError(f"bootstrap: confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    observed = float(np.mean([difference(one, np.arange(size(one))) for one in sets]))

    def replicate() -> float:
        n = len(sets)
        drawn = [sets[i] for i in rng.integers(n, size=n)] if resample_seeds else sets
        return float(np.nanmean([difference(one, draw(one, rng)) for one in drawn]))

    return _percentile_interval(observed, np.array([replicate() for _ in range(draws)]), confidence)


def class_average_f(counts: np.ndarray) -> float:
    """DCASE 2017 Task 2's ranking figure from summed counts ``(L, 3)`` (or ``(n, L, 3)``, summed over clips):
    the mean over classes with reference events of ``2 tp / (n_ref + n_sys)``; NaN when no class has any.

    >>> class_average_f(np.array([[3, 4, 4], [1, 2, 0], [0, 0, 1]]))
    0.875
    """
    totals = counts.sum(axis=0) if counts.ndim == 3 else counts
    tp, n_ref, n_sys = totals[:, 0], totals[:, 1], totals[:, 2]
    scored = n_ref > 0
    if not scored.any():
        return float("nan")
    return float(np.mean(2.0 * tp[scored] / (n_ref[scored] + n_sys[scored])))


def bootstrap_event_f_difference(
    counts: Sequence[Mapping[str, np.ndarray]],
    *,
    method: str,
    reference: str = "baseline",
    draws: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = False,
) -> dict[str, float]:
    """Percentile bootstrap interval of ``class-average event F(method) - (reference)`` (fractions; DCASE 2017
    Task 2's ranking figure), resampling test clips with replacement (events are counted per clip, so a clip is
    the unit) and, with ``resample_seeds``, the seeds first, as :func:`bootstrap_eer_difference` does.

    Args:
        counts: one per seed: method -> per-clip counts ``(n_clips, L, 3)`` (true positives, reference events,
            detected events; :func:`thce.detection.frame_events.clip_counts`), the clips in the same order for
            every method.
    """
    if not counts:
        raise ValueError("bootstrap_event_f_difference: need the counts of at least one seed")

    def difference(run: Mapping[str, np.ndarray], index: np.ndarray) -> float:
        return class_average_f(run[method][index]) - class_average_f(run[reference][index])

    return _bootstrap_difference(
        counts, difference, lambda run: len(run[method]),
        lambda run, rng: rng.integers(len(run[method]), size=len(run[method])),
        draws=draws, confidence=confidence, seed=seed, resample_seeds=resample_seeds,
    )  # fmt: skip


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
