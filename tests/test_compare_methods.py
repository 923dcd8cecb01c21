"""benchmarks/compare_methods.py: two methods of the same runs, paired, on validation and test."""

import json
from pathlib import Path

import numpy as np
import pytest

from thce.metrics import per_class_eer
from tests.conftest import load_benchmark

CLASSES = ("dog", "gun")


def _runs(root: Path) -> Path:
    """Two seeds; per split 20 clips of each event and 40 of background; "good" separates the events better than
    "poor" (less noise), on both splits."""
    for seed in (0, 1):
        run = root / f"seed_{seed}"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps({"classes": list(CLASSES)}))
        rng = np.random.default_rng(seed)
        for name in ("val_scores.npz", "scores.npz"):
            class_index = np.repeat([0, 1, 2], [20, 20, 40])
            onehot = np.eye(3)[class_index][:, :2]
            noise = {"good": 0.4, "poor": 1.5}
            scores = {m: onehot + sd * rng.standard_normal(onehot.shape) for m, sd in noise.items()}
            np.savez(run / name, class_index=class_index, **scores)
    return root


def test_differences_are_the_mean_eer_differences_over_seeds(tmp_path):
    runs = _runs(tmp_path / "runs")
    out = tmp_path / "out" / "cmp.json"
    argv = [str(runs), "--method", "good", "--reference", "poor", "--seeds", "0", "1", "--out", str(out)]
    assert load_benchmark("compare_methods").main(argv) == 0
    result = json.loads(out.read_text())
    assert result["command"].startswith("python benchmarks/compare_methods.py ") and result["seeds"] == [0, 1]
    for split, name in (("val", "val_scores.npz"), ("test", "scores.npz")):
        eers = {m: [] for m in ("good", "poor")}
        for seed in (0, 1):
            with np.load(runs / f"seed_{seed}" / name) as archive:
                for m in eers:
                    eer = per_class_eer(scores=archive[m], class_index=archive["class_index"], classes=CLASSES)
                    eers[m].append(eer["overall"])
        entry = result[split]
        assert entry["eer_percent"]["good"] == pytest.approx(100 * np.mean(eers["good"]), abs=0.01)
        difference = 100 * (np.mean(eers["good"]) - np.mean(eers["poor"]))
        assert entry["difference_pp"]["difference"] == pytest.approx(difference, abs=0.01) and difference < 0
        assert entry["difference_pp"]["low"] <= entry["difference_pp"]["difference"] <= entry["difference_pp"]["high"]


def test_a_method_the_runs_did_not_score_is_an_error(tmp_path):
    runs = _runs(tmp_path / "runs")
    with pytest.raises(SystemExit, match="did not score missing"):
        load_benchmark("compare_methods").main([str(runs), "--method", "missing", "--reference", "poor", "--seeds", "0", "1"])
