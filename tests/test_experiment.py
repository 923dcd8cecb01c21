"""Whole pipeline on tiny synthetic data: the run directory the CLI leaves behind."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from thce.cli import main
from thce.config import load_config
from thce.run_data import prepare_data
from thce.checkpoint import load_run
from thce.errors import DataError
from thce.training.data import predict_scores
from thce.training.engine import RunContext

from tests.conftest import TINY, load_benchmark, tiny_toml, write_config



@pytest.fixture(scope="module")
def run_dir(tiny_run):
    """The run of TINY the CLI left behind (shared with other test files: read only)."""
    return tiny_run


def test_run_directory_contents(run_dir):
    for name in ("config.toml", "metrics.csv", "results.json", "report.md", "det.png"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["classes"] == ["dog", "baby", "gun"]
    assert set(results["methods"]) == {"baseline", "proposed1", "proposed2"}
    for method in results["methods"].values():
        eer = method["eer"]
        assert set(eer) == {"dog", "baby", "gun", "overall"}
        assert all(0.0 <= v <= 1.0 for v in eer.values())
        assert eer["overall"] == pytest.approx(np.mean([eer["dog"], eer["baby"], eer["gun"]]))
        assert set(method["det"]) == {"dog", "baby", "gun"}
    counts = results["data"]["counts"]
    assert sum(counts["train"].values()) + sum(counts["val"].values()) + sum(counts["test"].values()) == 49
    assert results["provenance"]["thce"] and results["provenance"]["machine"]["cpu"]  # versions, commit, machine
    assert "- **software and machine**: thce " in (run_dir / "report.md").read_text()
    diagnostics = results["embedding_diagnostics"]
    assert [d["iteration"] for d in diagnostics] == [1, 2]
    assert diagnostics[0]["clusters"] >= 4  # K_c >= 1 for the four classes
    for record in diagnostics:  # Eq. 3's three cosines: own centroid closest on average
        assert record["mean_cos_own_centroid"] >= record["mean_cos_nearest_other_class"]
        assert 0.0 <= record["eq3_at_clustering"]["eq3"] <= 1.0
    assert (run_dir / "embedding.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "embedding.png" in (run_dir / "report.md").read_text()
    report = (run_dir / "report.md").read_text()
    assert "| Overall |" in report and "det.png" in report
    selection = results["selection"]  # every early-stopped stage, with the validation figures of what it kept
    assert set(selection) == set(results["selected_epochs"]) == {
        "baseline/end-to-end", "proposed1/detector-head", "proposed2/end-to-end"
    }  # fmt: skip
    for stage, entry in selection.items():
        assert entry["kept_epoch"] == results["selected_epochs"][stage] <= entry["epochs_run"]
        assert entry["criterion"] == "val_loss" and 0.0 <= entry["best"]["val_auc"]["value"] <= 1.0
        assert f"| {stage} | val_loss | {entry['kept_epoch']} ({entry['epochs_run']}) |" in report


def test_metrics_csv_has_every_stage(run_dir):
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    stages = {(r["method"], r["stage"]) for r in rows}
    assert {
        ("baseline", "end-to-end"),
        ("proposed", "embedding-head"),
        ("proposed", "embedding"),
        ("proposed1", "detector-head"),
    } <= stages
    embedding_rows = [r for r in rows if r["stage"] == "embedding"]
    assert len(embedding_rows) == 1 + 2  # epochs=1, last_epochs=2
    assert all(r["eq3_val"] != "" and 0.0 <= float(r["eq3_val"]) <= 1.0 for r in embedding_rows)
    assert all(math.isfinite(float(r["val_loss"])) for r in rows)


def test_config_round_trip_and_checkpoints_reproduce_scores(run_dir):
    config = load_config(run_dir / "config.toml")
    assert config.embedding.n_iter == 2 and config.model.cnn_channels == (8, 16)
    raw = torch.load(run_dir / "checkpoints" / "proposed2.pt", weights_only=True)
    assert raw["meta"]["classes"] == ["dog", "baby", "gun"]
    prepared = prepare_data(config, run_dir)
    for method in ("baseline", "proposed1", "proposed2"):
        loaded = load_run(run_dir, method)
        assert loaded.method == method and loaded.classes == ("dog", "baby", "gun")
        np.testing.assert_allclose(loaded.normaliser.mean, prepared.normaliser.mean, rtol=1e-6)
        # the checkpoint's validation scores are what the saved model gives on the validation split
        val = prepared.data.splits["val"]
        scores = predict_scores(loaded.model, prepared.data, val, RunContext())
        np.testing.assert_allclose(scores, loaded.val_scores, atol=1e-5)
        np.testing.assert_array_equal(loaded.val_class_index, prepared.data.class_index[val])
    with pytest.raises(DataError, match="no checkpoint for method 'lmle'"):
        load_run(run_dir, "lmle")


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[embedding]\nalpah = 3\n")
    assert main(["experiment", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "unknown config key 'embedding.alpah'; did you mean 'alpha'?" in capsys.readouterr().err
    assert main(["experiment", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "x")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_repeats_over_seeds_with_bootstrap(tmp_path):
    config_path = tmp_path / "tiny.toml"
    config_path.write_text(TINY.replace("n_iter = 2", "n_iter = 1").replace("last_epochs = 2", "last_epochs = 1"))
    alone = tmp_path / "alone"  # seed 4 first in the process; in the --seeds run it follows seed 3
    assert main(["-q", "experiment", str(config_path), "--out", str(alone), "--set", "seed=4"]) == 0
    out = tmp_path / "seeds"
    assert main(["-q", "experiment", str(config_path), "--out", str(out), "--seeds", "2"]) == 0
    for name in ("scores.npz", "val_scores.npz"):  # a run's results do not depend on what ran before it
        with np.load(alone / name) as first, np.load(out / "seed_4" / name) as second:
            assert sorted(first.files) == sorted(second.files)
            for key in first.files:
                np.testing.assert_array_equal(first[key], second[key], err_msg=f"{name}: {key}")
    summary = json.loads((out / "results.json").read_text())
    assert summary["seeds"]["seeds"] == [3, 4]
    per_seed = [json.loads((out / f"seed_{s}" / "results.json").read_text()) for s in (3, 4)]
    for method in ("baseline", "proposed1", "proposed2"):
        values = [run["methods"][method]["eer"]["overall"] for run in per_seed]
        stats = summary["seeds"]["eer"][method]["overall"]
        assert stats["mean"] == pytest.approx(np.mean(values))
        assert stats["std"] == pytest.approx(np.std(values, ddof=1))
    report = (out / "report.md").read_text()
    for method in ("proposed1", "proposed2"):
        ci, both = summary["seeds"]["bootstrap"][method], summary["seeds"]["bootstrap_seeds"][method]
        assert ci["low"] <= ci["high"] and -1.0 <= ci["difference"] <= 1.0
        assert both["difference"] == ci["difference"] and both["low"] <= both["high"]
        cells = [f"[{100 * c['low']:+.1f}, {100 * c['high']:+.1f}] (95 %)" for c in (ci, both)]
        assert f"| {100 * ci['difference']:+.1f} | {cells[0]} | {cells[1]} |" in report
    assert "Repeats over seeds" in report and "| over test clips | over seeds and test clips |" in report
    for method, entry in summary["methods"].items():  # the figure draws what its legend says: pooled + each seed
        assert entry["det"] == summary["seeds"]["det_pooled"][method]
        assert summary["seeds"]["det_per_seed"][method] == [run["methods"][method]["det"] for run in per_seed]
    assert "Thin lines: each of the 2 seeds' curves" in (out / "report.md").read_text()
    # whether Algorithm 1's embedding learned, per seed: the first clustering and the last iteration of its records
    for run, learned in zip(per_seed, summary["seeds"]["embedding_learning"], strict=True):
        records = run["embedding_diagnostics"]
        for name in ("class_centroid_accuracy", "one_nn_accuracy"):
            assert learned[name] == {"start": records[0]["at_clustering"][name], "end": records[-1]["after_training"][name]}
    assert "class-centroid accuracy" in (out / "report.md").read_text()


def test_imbalance_methods_run_in_the_harness(tmp_path):
    """Every alternative method trains on the same features and splits; checkpoints reload and score alike."""
    from thce.losses.imbalance import LOSS_CONFIGS

    config_path = tmp_path / "tiny.toml"
    methods = ["baseline", "lmle", *LOSS_CONFIGS]
    text = tiny_toml(methods)
    config_path.write_text(
        text + "\n[ldam_drw]\ndrw_epoch = 1\n[softtriple]\ncenters_per_class = 2\n[lmle]\nepochs = 2\nrebuild_every = 1\n"
    )
    out = tmp_path / "all"
    assert main(["-q", "experiment", str(config_path), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == methods
    config = load_config(out / "config.toml")
    prepared = prepare_data(config, out)
    val = prepared.data.splits["val"]
    for method in methods:
        assert 0.0 <= results["methods"][method]["eer"]["overall"] <= 1.0
        loaded = load_run(out, method)
        scores = predict_scores(loaded.model, prepared.data, val, RunContext())
        np.testing.assert_allclose(scores, loaded.val_scores, atol=1e-5)
    assert "ldam_drw" in (out / "report.md").read_text()

    # benchmarks/lmle_detector.py on this run: both detectors on LMLE's embedding train and score
    bench = load_benchmark("lmle_detector")
    report = bench.main([str(out), "--out", str(tmp_path / "lmle_detector.json")])
    assert report["lmle_state"] == "lmle-embedding-2.pt"  # the last of epochs 2 / rebuild_every 1
    assert json.loads((tmp_path / "lmle_detector.json").read_text())["overall_eer"] == report["overall_eer"]
    for variant in ("sigmoid_on_embedding", "cluster_layer_then_sigmoid"):
        assert set(report["eer"][variant]) == {"head_only", "end_to_end"}
        assert all(0.0 <= eer["overall"] <= 1.0 for eer in report["eer"][variant].values())


def test_report_command_rewrites_readme_section(run_dir, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- results:start -->\nSTALE TABLE\n<!-- results:end -->\n\ntail\n")
    assert main(["report", str(run_dir), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "STALE TABLE" not in text and "| Overall |" in text and text.endswith("tail\n")
    assert f"thce report {run_dir} --readme {readme}" in text  # the command that rewrites this very file
    readme.write_text("no markers")
    assert main(["report", str(run_dir), "--readme", str(readme)]) == 2
    assert "no '<!-- results:start -->'" in capsys.readouterr().err


def test_bad_rows_and_files_are_skipped_and_listed(tmp_path):
    from thce.data.manifest import ManifestRow, read_manifest, write_manifest
    from thce.data.synth import SynthConfig, generate_scenes

    synth = SynthConfig(counts={"dog": 8, "baby": 8, "gun": 8, "background": 25}, duration_s=2.0, seed=3)
    rows = read_manifest(generate_scenes(synth, tmp_path / "data"))
    (tmp_path / "data" / "notes.wav").write_text("not audio")
    rows += [ManifestRow(tmp_path / "data" / "missing.wav", "dog"), ManifestRow(tmp_path / "data" / "notes.wav", "")]
    manifest = write_manifest(rows, tmp_path / "data" / "with_bad.csv")
    config_path = tmp_path / "tiny.toml"
    config_path.write_text(
        TINY.replace("seed = 3", f'seed = 3\nmethods = ["baseline"]\n[data]\nsource = "manifest"\nmanifest = "{manifest}"')
    )
    out = tmp_path / "out"
    assert main(["-q", "experiment", str(config_path), "--out", str(out)]) == 0
    skipped = (out / "skipped.csv").read_text()
    assert "missing.wav" in skipped and "notes.wav" in skipped
    assert json.loads((out / "results.json").read_text())["methods"]["baseline"]["eer"]["overall"] <= 1.0
    # strict: the run stops with a message naming the file
    assert main(["-q", "experiment", str(config_path), "--out", str(tmp_path / "strict"), "--set", "data.strict=true"]) == 2


def test_final_summary_line_lists_only_what_the_run_directory_holds(tmp_path):
    # issue 14 item 16: a --seeds run keeps metrics.csv and checkpoints/ in seed_N/, not at the top level
    from thce.cli.experiment import _listing

    for name in ("results.json", "report.md", "det.png", "config.toml"):
        (tmp_path / name).write_text("x")
    for seed in (0, 1, 2):
        (tmp_path / f"seed_{seed}" / "checkpoints").mkdir(parents=True)
    listing = _listing(tmp_path)
    assert listing == "results.json, report.md, det.png, config.toml, seed_0/ .. seed_2/ (one run each)"
    assert "metrics.csv" not in listing and "checkpoints" not in listing


def test_each_stage_trains_at_its_own_learning_rate(tmp_path, monkeypatch):
    """[embedding], [detector] (end to end, head only) and [baseline] rates reach their stages' optimisers;
    the imbalance methods train with [baseline]'s; a stage without one uses train.learning_rate. Likewise Proposed1's
    head-only stage selects on detector.head_only_selection, Proposed2 on detector.selection."""
    import thce.training.algorithm1 as algorithm1
    import thce.training.imbalance as imbalance

    rates: dict[tuple[str, str], float | None] = {}
    selections: dict[tuple[str, str], str] = {}

    def wrap(fit):
        def recording(stage, ctx):
            rates[stage.method, stage.name] = stage.schedule.learning_rate
            selections[stage.method, stage.name] = stage.selection.criterion
            return fit(stage, ctx)

        return recording

    monkeypatch.setattr(algorithm1, "fit_stage", wrap(algorithm1.fit_stage))
    monkeypatch.setattr(imbalance, "fit_stage", wrap(imbalance.fit_stage))
    stages = """[embedding]
n_iter = 1
epochs = 1
last_epochs = 1
head_only_epochs = 1
learning_rate = 0.002
[detector]
max_epochs = 1
head_only_max_epochs = 1
patience = 1
learning_rate = 0.003
head_only_learning_rate = 0.004
selection = "val_eer"
head_only_selection = "val_auc"
[baseline]
max_epochs = 1
patience = 1
learning_rate = 0.005
"""
    config_path = write_config(tmp_path, tiny_toml(["baseline", "proposed1", "proposed2", "focal"], stages=stages))
    assert main(["-q", "experiment", str(config_path), "--out", str(tmp_path / "out")]) == 0
    assert rates == {
        ("proposed", "embedding-head"): 0.002, ("proposed", "embedding"): 0.002,
        ("proposed1", "detector-head"): 0.004, ("proposed2", "end-to-end"): 0.003,
        ("baseline", "end-to-end"): 0.005, ("focal", "end-to-end"): 0.005,
    }  # fmt: skip
    assert (selections["proposed1", "detector-head"], selections["proposed2", "end-to-end"]) == ("val_auc", "val_eer")
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["selection"]["proposed1/detector-head"]["criterion"] == "val_auc"
    saved = load_config(tmp_path / "out" / "config.toml")
    assert (saved.embedding.learning_rate, saved.detector.head_only_learning_rate) == (0.002, 0.004)


def test_provenance_names_the_code_the_run_started_with(tmp_path, monkeypatch):
    """A commit landing in the checkout while a run trains is not the code the run ran: the recorded commit is read
    when the run starts (it was read when results were written)."""
    import thce.experiment as experiment
    import thce.machine as machine

    head = {"commit": "started-with"}
    monkeypatch.setattr(machine, "git_commit", lambda: head["commit"])
    prepare = experiment.prepare_data

    def prepare_then_commit(*args, **kwargs):
        prepared = prepare(*args, **kwargs)
        head["commit"] = "landed-during-the-run"
        return prepared

    monkeypatch.setattr(experiment, "prepare_data", prepare_then_commit)
    config = tmp_path / "tiny.toml"
    config.write_text(tiny_toml(["baseline"]))
    assert main(["-q", "experiment", str(config), "--out", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["provenance"]["git_commit"] == "started-with"
