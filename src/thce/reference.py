"""A non-deep reference method, ``logreg_stats``: logistic regression on pooled log-mel statistics.

What a practitioner tries first on a few dozen clips, so that every report shows what ten lines of scikit-learn do on
the same split (issue 12): each clip becomes the per-band mean and standard deviation over time of its *normalised*
log-mel (training-split statistics, as every method sees it), ``2 x n_mels`` numbers; each event class gets a
one-vs-rest, class-weighted (``class_weight="balanced"``) L2 logistic regression (positives: that class's clips;
negatives: every other clip, background included); its inverse regularisation ``C`` is the one of ``c_grid`` with the
least mean validation EER over the classes (ties: the smaller C). Scores are the positive-class probabilities.

No torch model: the fitted coefficients are saved as JSON (``checkpoints/logreg_stats.json``).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thce.errors import ConfigError
from thce.io import write_json
from thce.metrics import per_class_det_points, per_class_eer
from thce.training.data import TrainingData


logger = logging.getLogger(__name__)

METHOD = "logreg_stats"
FEATURES = "per-band mean then per-band standard deviation over frames of the normalised log-mel"


@dataclass(frozen=True)
class LogRegStatsConfig:
    """``[logreg_stats]``: the C values tried on validation (positive, distinct) and lbfgs' iteration cap."""

    c_grid: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
    max_iter: int = 1000

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        grid = self.c_grid
        if not grid or any(not (isinstance(c, (int, float)) and math.isfinite(c) and c > 0) for c in grid):
            raise ConfigError(f"logreg_stats.c_grid: need one or more finite positive numbers, got {list(grid)}")
        if len(set(grid)) != len(grid):
            raise ConfigError(f"logreg_stats.c_grid: values listed twice in {list(grid)}")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ConfigError(f"logreg_stats.max_iter: must be an integer >= 1, got {self.max_iter!r}")


@dataclass
class LogRegStats:
    """Fitted one-vs-rest models: ``coef`` (L, F) and ``intercept`` (L,) in float64, F = 2 x n_mels; ``c`` chosen."""

    c: float
    coef: np.ndarray
    intercept: np.ndarray

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(n, L) probabilities of each class (its logistic sigmoid), from (n, F) pooled statistics."""
        z = np.asarray(features, dtype=np.float64) @ self.coef.T + self.intercept
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # the sigmoid, without overflow for large |z|

    def to_dict(self) -> dict[str, Any]:
        return {"c": self.c, "coef": self.coef.tolist(), "intercept": self.intercept.tolist()}


def pooled_stats(data: TrainingData, indices: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """(n, 2 x n_mels) float64 features of clips ``indices``: mean over frames of each band of the normalised
    log-mel, then standard deviation (population) over frames. Reads ``batch_size`` clips at a time, so memory stays
    at about ``batch_size`` x 0.25 MB for 10 s clips whatever the split's size."""
    indices = np.asarray(indices, dtype=np.int64)
    parts = []
    for start in range(0, len(indices), batch_size):
        x = data.load(indices[start : start + batch_size]).numpy().astype(np.float64)  # (b, frames, mels)
        parts.append(np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1))
    if not parts:
        return np.zeros((0, 2 * int(data.features.shape[-1])))
    return np.concatenate(parts, axis=0)


def fit_one_vs_rest(
    features: np.ndarray, class_index: np.ndarray, num_events: int, c: float, max_iter: int
) -> LogRegStats:
    """One class-weighted binary logistic regression per event class ``0..num_events-1`` (index ``num_events`` is
    background, a negative for every class) on (n, F) ``features``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    coef, intercept = [], []
    for label in range(num_events):
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=max_iter)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(features, (class_index == label).astype(np.int64))
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            logger.warning("logreg_stats: C=%g, class %d did not converge in max_iter=%d", c, label, max_iter)
        coef.append(model.coef_[0])
        intercept.append(model.intercept_[0])
    return LogRegStats(c=float(c), coef=np.array(coef, dtype=np.float64), intercept=np.array(intercept, np.float64))


def select_and_fit(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    classes: tuple[str, ...],
    config: LogRegStatsConfig,
) -> tuple[LogRegStats, dict[str, float]]:
    """Fit on ``train = (features, class_index)`` for every C of the grid; keep the one with the least overall
    (class-mean) EER on ``val``, the smaller C on ties. Returns the kept models and ``{str(C): val overall EER}``."""
    best: LogRegStats | None = None
    best_eer = math.inf
    search: dict[str, float] = {}
    for c in sorted(config.c_grid):
        models = fit_one_vs_rest(*train, len(classes), c, config.max_iter)
        eer = per_class_eer(scores=models.predict(val[0]), class_index=val[1], classes=classes)["overall"]
        search[repr(float(c))] = float(eer)
        if eer < best_eer:
            best, best_eer = models, eer
    assert best is not None  # the grid is not empty (validated)
    return best, search


def run_logreg_stats(
    data: TrainingData, config: LogRegStatsConfig, checkpoint_dir: Path | None = None, *, batch_size: int = 64
) -> dict[str, Any]:
    """The harness entry: features of every split, C on validation, scores and EERs on test.

    Writes ``checkpoint_dir/logreg_stats.json`` (classes, C, coefficients, the normaliser) unless ``None``.
    Returns the method's results entry: ``eer`` and ``det`` (test), ``val_eer`` (same shape as ``eer``, at the
    chosen C), ``c``, ``val_eer_by_c`` and ``test_scores`` (n_test, L).
    """
    config.validate()
    feats = {s: pooled_stats(data, data.splits[s], batch_size=batch_size) for s in ("train", "val", "test")}
    labels = {s: data.class_index[data.splits[s]] for s in ("train", "val", "test")}
    models, search = select_and_fit(
        (feats["train"], labels["train"]), (feats["val"], labels["val"]), data.classes, config
    )
    logger.info("logreg_stats: C=%g chosen on validation (overall EER by C: %s)", models.c, search)
    val_scores = models.predict(feats["val"])
    test_scores = models.predict(feats["test"])
    if checkpoint_dir is not None:
        normaliser = data.normalise.to_dict() if hasattr(data.normalise, "to_dict") else None
        write_json(
            Path(checkpoint_dir) / f"{METHOD}.json",
            {"method": METHOD, "classes": list(data.classes), "features": FEATURES, "normaliser": normaliser,
             "val_eer_by_c": search, **models.to_dict()},
        )  # fmt: skip
    return {
        "eer": per_class_eer(scores=test_scores, class_index=labels["test"], classes=data.classes),
        "det": per_class_det_points(scores=test_scores, class_index=labels["test"], classes=data.classes),
        "val_eer": per_class_eer(scores=val_scores, class_index=labels["val"], classes=data.classes),
        "c": models.c,
        "val_eer_by_c": search,
        "test_scores": test_scores,
        "val_scores": val_scores,
    }
