"""The toy example of Sec. 3.1 / Fig. 1: data as specified, outputs' structure, and separation at a small scale."""

import csv
import json

import numpy as np
import pytest
import torch

from thce.cli import main
from thce.cluster import clusters_per_class
from thce.toy import TOY_CLASSES, ToyConfig, class_counts_1_1_4, make_toy_data, run_toy
from thce.training.algorithm1 import EmbeddingConfig

# Small enough for a few seconds, large enough that the classes separate (10/10 seeds when tuned).
SMALL = dict(train_samples=600, val_samples=120, test_samples=240,
             embedding=EmbeddingConfig(n_iter=3, epochs=10, last_epochs=30))  # fmt: skip


def test_toy_data_follows_the_paper():
    toy = make_toy_data(ToyConfig())
    data = toy.data
    assert data.features.shape == (1000 + 300 + 600, 20, 1) and data.features.dtype == np.float32
    counts = data.class_counts("train")
    assert counts.tolist() == [166, 166, 668]  # 1:1:4 of 1000
    assert clusters_per_class(counts.tolist()).tolist() == [1, 1, 4]  # K_red = 4
    train_modes = toy.modes[data.splits["train"]]
    assert np.bincount(train_modes).tolist() == [166, 166, 167, 167, 167, 167]  # red's four modes, equal
    assert data.class_counts("test").tolist() == [100, 100, 400]
    assert class_counts_1_1_4(300) == (50, 50, 200)
    again = make_toy_data(ToyConfig())
    assert np.array_equal(again.data.features, data.features)
    assert not np.array_equal(make_toy_data(ToyConfig(seed=1)).data.features, data.features)


def test_config_validation():
    with pytest.raises(ValueError, match="train_samples"):
        ToyConfig(train_samples=5).validate()
    with pytest.raises(ValueError, match="beta_other"):
        ToyConfig(embedding=EmbeddingConfig(beta_other=6.0)).validate()


def test_tiny_cli_run_writes_figure_json_and_metrics(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["-q", "toy", "--out", str(out), "--tiny", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "acceptance:" in printed and "toy.png" in printed

    assert (out / "toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "toy.json").read_text())
    assert result["classes"] == list(TOY_CLASSES)
    assert result["config"]["seed"] == 3 and result["config"]["embedding"]["n_iter"] == 2
    assert result["counts"]["train"] == {"blue": 50, "green": 50, "red": 200}
    assert result["clusters_per_class_rule"] == {"blue": 1, "green": 1, "red": 4}
    iterations = result["iterations"]
    assert [it["iteration"] for it in iterations] == [0, 1, 2]
    for it in iterations:
        assert 0.0 <= it["nearest_centroid_accuracy"] <= 1.0
        assert set(it["eq3_train"]) == {"own_over_other", "own_over_same", "eq3"}
        assert set(it["mean_cosine_train"]) == {"own", "nearest_same_class", "nearest_other_class"}
        assert sum(it["cluster_sizes"]["red"]) == 200 and len(it["cluster_sizes"]["red"]) == 4
        assert it["cluster_sizes"]["blue"] == [50]
    assert "algorithm1" not in iterations[0]
    algorithm1 = iterations[2]["algorithm1"]
    assert set(algorithm1["after_training"]) >= {"eq3_train", "eq3_val"}
    assert len(algorithm1["epochs"]) == 2 + 10  # head-only epochs + last_epochs of the tiny config
    assert result["final"] == {k: v for k, v in iterations[-1].items() if k != "algorithm1"}
    assert set(result["acceptance"]) >= {"separated", "red_clusters", "red_forms_4_clusters", "passed"}

    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["iteration"] for row in rows} == {"1", "2"}
    assert len(rows) == (2 + 5) + (2 + 10)


def test_cli_rejects_bad_values(tmp_path, capsys):
    assert main(["-q", "toy", "--out", str(tmp_path), "--tiny", "--samples", "3"]) == 2
    assert "train_samples" in capsys.readouterr().err


def test_small_run_separates_classes_and_red_forms_its_4_clusters():
    rng_state = torch.get_rng_state()
    threads = torch.get_num_threads()
    result = run_toy(ToyConfig(**SMALL))
    assert torch.equal(torch.get_rng_state(), rng_state)  # the global RNG is left alone
    assert torch.get_num_threads() == threads
    final = result.final
    assert final["nearest_centroid_accuracy"] >= 0.95
    assert final["balanced_accuracy"] >= 0.95
    assert final["clusters_per_class"] == {"blue": 1, "green": 1, "red": 4}
    assert final["red_mode_purity"] >= 0.9  # the 4 red clusters are red's 4 generative modes
    assert result.acceptance()["passed"]
    # Learning did the separating: the random LSTM does not separate the classes.
    assert result.snapshots[0].measures["nearest_centroid_accuracy"] < 0.9
    assert result.snapshots[-1].train_embedding.shape == (600, 3)
    assert np.allclose(np.linalg.norm(result.snapshots[-1].train_embedding, axis=1), 1.0, atol=1e-5)


def test_cli_leaves_files_it_did_not_write_alone(tmp_path, capsys):
    run = tmp_path / "run"  # a thce experiment run: the toy's metrics.csv would replace the run's
    run.mkdir()
    (run / "config.toml").write_text("seed = 0\n")
    (run / "metrics.csv").write_text("method,stage\nbaseline,end-to-end\n")
    assert main(["-q", "toy", "--out", str(run), "--tiny", "--overwrite"]) == 2
    assert "holds a thce run (config.toml)" in capsys.readouterr().err
    assert (run / "metrics.csv").read_text() == "method,stage\nbaseline,end-to-end\n"

    mine = tmp_path / "mine"
    mine.mkdir()
    for name, text in (("metrics.csv", "a,b\n1,2\n"), ("toy.json", '{"mine": 1}'), ("toy.png", "not a picture")):
        (mine / name).write_text(text)
        assert main(["-q", "toy", "--out", str(mine), "--tiny"]) == 2
        assert f"{mine / name}: exists and is not" in capsys.readouterr().err
        assert (mine / name).read_text() == text
        (mine / name).unlink()

    (mine / "metrics.csv").write_text("a,b\n1,2\n")
    assert main(["-q", "toy", "--out", str(mine), "--tiny", "--overwrite"]) == 0
    assert main(["-q", "toy", "--out", str(mine), "--tiny", "--seed", "1"]) == 0  # its own outputs: replaced
    assert json.loads((mine / "toy.json").read_text())["config"]["seed"] == 1
