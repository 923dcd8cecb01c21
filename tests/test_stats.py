"""Bootstrap intervals and seed summaries."""

import numpy as np
import pytest

from thce.stats import ScoredTestSet, bootstrap_eer_difference, mean_std_eer


def _test_set(seed: int, gap: float) -> ScoredTestSet:
    rng = np.random.default_rng(seed)
    class_index = np.repeat([0, 1, 2], [40, 40, 120])
    truth = np.stack([class_index == c for c in (0, 1)], axis=1).astype(float)
    good = truth * gap + rng.normal(size=truth.shape)
    bad = rng.normal(size=truth.shape)
    return ScoredTestSet(class_index=class_index, scores={"baseline": bad, "better": good}, classes=("a", "b"))


def test_clear_improvement_excludes_zero():
    ci = bootstrap_eer_difference([_test_set(0, 3.0)], method="better", draws=200)
    assert ci["high"] < 0 and ci["low"] <= ci["difference"] <= ci["high"]


def test_no_difference_covers_zero():
    ts = _test_set(1, 0.0)
    same = ScoredTestSet(ts.class_index, {"baseline": ts.scores["baseline"], "better": ts.scores["baseline"]}, ts.classes)
    ci = bootstrap_eer_difference([same], method="better", draws=50)
    assert ci == pytest.approx({"difference": 0.0, "low": 0.0, "high": 0.0, "draws": 50, "confidence": 0.95})


def test_several_seeds_average_differences():
    sets = [_test_set(s, 2.0) for s in range(3)]
    ci = bootstrap_eer_difference(sets, method="better", draws=100)
    singles = [bootstrap_eer_difference([t], method="better", draws=10)["difference"] for t in sets]
    assert ci["difference"] == pytest.approx(np.mean(singles))


def test_mean_std():
    out = mean_std_eer([{"m": {"overall": 0.1}}, {"m": {"overall": 0.3}}])
    assert out["m"]["overall"]["mean"] == pytest.approx(0.2)
    assert out["m"]["overall"]["std"] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert mean_std_eer([{"m": {"overall": 0.1}}])["m"]["overall"]["std"] == 0.0


def test_resampling_seeds_widens_the_interval_when_training_runs_disagree():
    """Two runs where the method wins clearly and one where it loses clearly: over test clips alone the mean
    difference looks settled; a draw that also resamples the runs can pick the losing run two or three times."""
    wins = [_test_set(s, 3.0) for s in range(2)]
    lose = _test_set(2, 3.0)
    loses = ScoredTestSet(lose.class_index, {"baseline": lose.scores["better"], "better": lose.scores["baseline"]},
                          lose.classes)  # fmt: skip
    per_run = [bootstrap_eer_difference([t], method="better", draws=1)["difference"] for t in [*wins, loses]]
    assert per_run[0] < -0.3 and per_run[1] < -0.3 and per_run[2] > 0.3
    clips = bootstrap_eer_difference([*wins, loses], method="better", draws=150)
    both = bootstrap_eer_difference([*wins, loses], method="better", draws=150, resample_seeds=True)
    assert both["difference"] == clips["difference"] == pytest.approx(np.mean(per_run))
    assert clips["high"] < 0  # the clips alone: "better" wins
    assert both["low"] < clips["low"] and both["high"] > 0  # the runs too: not settled
    assert both["low"] >= min(per_run) - 0.1 and both["high"] <= max(per_run) + 0.1  # inside the runs' range


def test_resampling_seeds_changes_nothing_when_the_runs_agree():
    same = [_test_set(0, 2.0)] * 3
    clips = bootstrap_eer_difference(same, method="better", draws=200)
    both = bootstrap_eer_difference(same, method="better", draws=200, resample_seeds=True)
    assert both["low"] == pytest.approx(clips["low"], abs=0.01) and both["high"] == pytest.approx(clips["high"], abs=0.01)
