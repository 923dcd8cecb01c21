"""The non-deep reference method logreg_stats: features, scikit-learn parity, C on validation, in the harness."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from thce.cli import main
from thce.config import load_config
from thce.data.normaliser import Normaliser
from thce.errors import ConfigError
from thce.run_data import prepare_data
from thce.metrics import per_class_eer
from thce.reference import LogRegStats, LogRegStatsConfig, fit_one_vs_rest, pooled_stats, run_logreg_stats
from thce.training.data import TrainingData
from tests.conftest import TINY

CLASSES = ("dog", "baby", "gun")


def toy_data(seed: int = 0, n: int = 120, frames: int = 20, mels: int = 6) -> TrainingData:
    """Features whose band means and spreads depend a little on the class; 60/30/30 clips in train/val/test."""
    rng = np.random.default_rng(seed)
    class_index = rng.integers(0, 4, n)
    shift = rng.normal(0.0, 0.6, (4, mels))
    scale = np.exp(rng.normal(0.0, 0.3, (4, mels)))
    features = (rng.normal(size=(n, frames, mels)) * scale[class_index, None] + shift[class_index, None] + 3.0).astype(
        np.float32
    )
    splits = {"train": np.arange(0, 60), "val": np.arange(60, 90), "test": np.arange(90, n)}
    normaliser = Normaliser.fit(features, splits["train"])
    return TrainingData(features, class_index, splits, CLASSES, normaliser)


def test_pooled_stats_are_band_mean_and_std_of_the_normalised_log_mel():
    data = toy_data()
    idx = data.splits["val"]
    x = (data.features[idx].astype(np.float64) - data.normalise.mean) / data.normalise.std
    got = pooled_stats(data, idx, batch_size=7)  # batches that do not divide the split
    assert got.shape == (30, 12)
    np.testing.assert_allclose(got, np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1), atol=1e-5)


def test_probabilities_match_scikit_learn_directly():
    data = toy_data()
    train, test = data.splits["train"], data.splits["test"]
    x_train, x_test = pooled_stats(data, train), pooled_stats(data, test)
    models = fit_one_vs_rest(x_train, data.class_index[train], 3, 0.3, 1000)
    got = models.predict(x_test)
    assert got.shape == (30, 3)
    for label in range(3):  # one-vs-rest: positives that class, negatives all others, background included
        reference = LogisticRegression(C=0.3, class_weight="balanced", max_iter=1000)
        reference.fit(x_train, data.class_index[train] == label)
        np.testing.assert_allclose(got[:, label], reference.predict_proba(x_test)[:, 1], rtol=0, atol=1e-6)


def test_c_is_chosen_on_validation_only(tmp_path):
    data = toy_data(seed=1)
    config = LogRegStatsConfig(c_grid=(100.0, 0.01, 1.0), max_iter=500)
    entry = run_logreg_stats(data, config, tmp_path)
    # every C scored on validation exactly as by hand; the least overall EER kept, the smaller C on ties
    train, val = data.splits["train"], data.splits["val"]
    x_train, x_val = pooled_stats(data, train), pooled_stats(data, val)
    by_hand = {}
    for c in (0.01, 1.0, 100.0):
        scores = fit_one_vs_rest(x_train, data.class_index[train], 3, c, 500).predict(x_val)
        by_hand[repr(c)] = per_class_eer(scores=scores, class_index=data.class_index[val], classes=CLASSES)["overall"]
    assert entry["val_eer_by_c"] == pytest.approx(by_hand)
    best = min(sorted(by_hand, key=float), key=lambda c: by_hand[c])
    assert entry["c"] == float(best) and entry["val_eer"]["overall"] == pytest.approx(by_hand[best])
    assert set(entry["val_eer"]) == set(entry["eer"]) == {*CLASSES, "overall"}
    # the test split cannot move the choice: scramble its features and labels, same C, same models
    scrambled = toy_data(seed=1)
    test = scrambled.splits["test"]
    scrambled.features[test] = np.random.default_rng(5).normal(size=scrambled.features[test].shape) * 9.0
    scrambled.class_index[test] = scrambled.class_index[test][::-1]
    again = run_logreg_stats(scrambled, config, tmp_path / "again")
    assert again["c"] == entry["c"] and again["val_eer_by_c"] == entry["val_eer_by_c"]
    first = json.loads((tmp_path / "logreg_stats.json").read_text())
    second = json.loads((tmp_path / "again" / "logreg_stats.json").read_text())
    assert first["coef"] == second["coef"] and first["intercept"] == second["intercept"]
    assert first["c"] == entry["c"] and first["classes"] == list(CLASSES)
    # what was saved scores the test split as reported
    saved = LogRegStats(first["c"], np.array(first["coef"]), np.array(first["intercept"]))
    np.testing.assert_allclose(saved.predict(pooled_stats(data, data.splits["test"])), entry["test_scores"], atol=1e-12)


@pytest.mark.parametrize(
    "table, message",
    [
        ("c_grid = []", "logreg_stats.c_grid: need one or more"),
        ("c_grid = [1.0, -1.0]", "logreg_stats.c_grid: need one or more finite positive"),
        ("c_grid = [1.0, 1.0]", "listed twice"),
        ("max_iter = 0", "logreg_stats.max_iter"),
        ("C = 1.0", "unknown config key 'logreg_stats.C'"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, table, message):
    path = tmp_path / "bad.toml"
    path.write_text(f"[logreg_stats]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


@pytest.mark.slow
def test_runs_in_a_tiny_experiment_with_seeds_and_bootstrap(tmp_path):
    config_path = tmp_path / "tiny.toml"
    text = TINY.replace("n_iter = 2", "n_iter = 1").replace("last_epochs = 2", "last_epochs = 1")
    config_path.write_text(text.replace("seed = 3", 'seed = 3\nmethods = ["baseline", "logreg_stats"]'))
    out = tmp_path / "run"
    assert main(["-q", "experiment", str(config_path), "--out", str(out), "--seeds", "2"]) == 0
    run = out / "seed_3"
    results = json.loads((run / "results.json").read_text())
    entry = results["methods"]["logreg_stats"]
    assert set(entry["eer"]) == set(entry["val_eer"]) == {*CLASSES, "overall"} and set(entry["det"]) == set(CLASSES)
    assert entry["c"] in LogRegStatsConfig().c_grid and len(entry["val_eer_by_c"]) == len(LogRegStatsConfig().c_grid)
    assert "logreg_stats" in results["timing_s"]
    with np.load(run / "scores.npz") as scores:
        assert set(scores.files) == {"class_index", "baseline", "logreg_stats"}
        test_scores = scores["logreg_stats"]
    # the saved coefficients give the saved scores on the run's own features
    saved = json.loads((run / "checkpoints" / "logreg_stats.json").read_text())
    prepared = prepare_data(load_config(run / "config.toml"), run)
    assert saved["normaliser"] == prepared.normaliser.to_dict()
    models = LogRegStats(saved["c"], np.array(saved["coef"]), np.array(saved["intercept"]))
    x_test = pooled_stats(prepared.data, prepared.data.splits["test"])
    np.testing.assert_allclose(models.predict(x_test), test_scores, atol=1e-9)
    report = (run / "report.md").read_text()
    assert "logreg_stats" in report and "balanced logistic regression" in report
    summary = json.loads((out / "results.json").read_text())
    ci = summary["seeds"]["bootstrap"]["logreg_stats"]  # against the baseline, from scores.npz
    assert ci["low"] <= ci["difference"] <= ci["high"]
