"""benchmarks/linear_probe.py: logistic-regression probes of a run's trained representations."""

import json

import numpy as np
import pytest

from tests.conftest import load_benchmark
from thce.checkpoint import load_run

CLASSES = ("dog", "gun")


def _features(informative: bool, scale: float = 1.0) -> tuple[dict, dict]:
    """Per split 30 clips of each event and 60 of background, 6 feature columns; ``informative``: column l + 1
    is class l's indicator plus noise (column 0 an offset), otherwise pure noise. ``scale`` multiplies column 1."""
    rng = np.random.default_rng(0)
    features, labels = {}, {}
    for split in ("train", "val", "test"):
        class_index = np.repeat([0, 1, 2], [30, 30, 60])
        x = rng.standard_normal((len(class_index), 6))
        if informative:
            x[:, 1:3] += 4.0 * np.eye(3)[class_index][:, :2]
        x[:, 1] *= scale
        features[split], labels[split] = x + 5.0, class_index
    return features, labels


def test_probe_reads_what_the_features_carry():
    bench = load_benchmark("linear_probe")
    separable = bench.probe(*_features(True), CLASSES)
    noise = bench.probe(*_features(False), CLASSES)
    assert separable["test"] < 0.1 and separable["val"] < 0.1
    assert noise["test"] > 0.3
    # standardised on the training split: the scale of a column does not change what the probe finds
    rescaled = bench.probe(*_features(True, scale=1e4), CLASSES)
    assert rescaled["test"] == pytest.approx(separable["test"], abs=0.02) and rescaled["c"] == separable["c"]


def test_probes_of_a_tiny_run(tiny_run, tmp_path):
    run = tiny_run  # .../runs/seed_3: TINY's seed
    out = tmp_path / "probe.json"
    assert load_benchmark("linear_probe").main([str(run.parent), "--seeds", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["command"].startswith("python benchmarks/linear_probe.py ")
    seed = result["per_seed"]["3"]
    assert set(seed) == {"baseline", "proposed1", "proposed2"}
    own = json.loads((run / "results.json").read_text())["methods"]
    for method, probes in seed.items():
        assert probes["own"]["test"] == pytest.approx(100 * own[method]["eer"]["overall"])
        assert probes["embedding"]["dims"] == load_run(run, method).model.encoder.embedding_dim
        assert 0 <= probes["embedding"]["test"] <= 100
    assert "cluster_outputs" not in seed["baseline"]
    for method in ("proposed1", "proposed2"):  # K = Algorithm 1's clusters
        assert seed[method]["cluster_outputs"]["dims"] == load_run(run, method).model.cluster_layer.num_clusters
    means = result["eer_percent_mean"]
    assert means["proposed1"]["cluster_outputs"]["test"] == pytest.approx(seed["proposed1"]["cluster_outputs"]["test"], abs=0.01)
