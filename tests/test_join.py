"""thce.join and benchmarks/seeds_table.py: a multi-seed result joined from runs that trained different methods."""

import json
from pathlib import Path

import numpy as np
import pytest

from thce.cli import main
from thce.config import load_config
from thce.errors import ConfigError
from thce.join import join_runs

from tests.conftest import TINY_STAGES, load_benchmark, tiny_toml, write_config

STAGES = TINY_STAGES.replace("n_iter = 2", "n_iter = 1")  # one Algorithm 1 iteration: last_epochs is its length


def _config(folder: Path, methods: list[str], last: int, name: str) -> Path:
    stages = STAGES.replace("last_epochs = 2", f"last_epochs = {last}")
    return write_config(folder, tiny_toml(methods, stages=stages), name=name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Seed 3 of the baseline alone (last_epochs 1, which it does not read), of P1/P2 with last_epochs 2, and of all
    three with last_epochs 2 in one run: the result the join must reproduce."""
    root = tmp_path_factory.mktemp("join")
    paths = {
        "baseline": _config(root, ["baseline"], 1, "b.toml"),
        "proposed": _config(root, ["proposed1", "proposed2"], 2, "p.toml"),
        "whole": _config(root, ["baseline", "proposed1", "proposed2"], 2, "all.toml"),
    }
    for name in ("baseline", "proposed"):
        assert main(["-q", "experiment", str(paths[name]), "--out", str(root / name / "seed_3")]) == 0  # its seed
    assert main(["-q", "experiment", str(paths["whole"]), "--out", str(root / "whole")]) == 0
    return {**{name: root / name for name in ("baseline", "proposed", "whole")}, "config": paths["whole"]}


def test_joined_runs_equal_one_run_of_every_method(runs, tmp_path):
    config = load_config(runs["config"])
    parts = [(("baseline",), runs["baseline"]), (("proposed1", "proposed2"), runs["proposed"])]
    summary = join_runs(config, parts, [3], tmp_path / "joined")
    assert summary["seeds"]["seeds"] == [3] and set(summary["seeds"]["bootstrap"]) == {"proposed1", "proposed2"}
    joined, whole = (np.load(d / "scores.npz") for d in (tmp_path / "joined" / "seed_3", runs["whole"]))
    for method in ("baseline", "proposed1", "proposed2"):  # methods train independently: the same scores
        np.testing.assert_array_equal(joined[method], whole[method])
    results = json.loads((tmp_path / "joined" / "seed_3" / "results.json").read_text())
    assert list(results["methods"]) == ["baseline", "proposed1", "proposed2"]
    assert results["embedding_diagnostics"] and set(results["selected_epochs"]) == {
        "baseline/end-to-end", "proposed1/detector-head", "proposed2/end-to-end"
    }  # fmt: skip
    assert [p["methods"] for p in results["provenance"]["joined_from"]] == [["baseline"], ["proposed1", "proposed2"]]
    assert load_config(tmp_path / "joined" / "seed_3" / "config.toml").seed == 3


def test_a_part_trained_with_other_settings_or_an_incomplete_set_is_refused(runs, tmp_path):
    config = load_config(runs["config"])
    # the baseline runs had last_epochs 1: fine for the baseline, not for proposed1
    with pytest.raises(ConfigError, match="trains proposed1 with other settings"):
        join_runs(config, [(("baseline", "proposed1", "proposed2"), runs["baseline"])], [3], tmp_path / "a")
    other = load_config(runs["config"], ["baseline.max_epochs=3"])
    with pytest.raises(ConfigError, match=r"seed_3: its config.toml trains baseline with other settings"):
        join_runs(other, [(("baseline",), runs["baseline"]), (("proposed1", "proposed2"), runs["proposed"])], [3],
                  tmp_path / "b")  # fmt: skip
    with pytest.raises(ConfigError, match="must provide each of baseline, proposed1, proposed2 once"):
        join_runs(config, [(("baseline",), runs["baseline"])], [3], tmp_path / "c")
    with pytest.raises(ConfigError, match="take both from the same runs"):
        parts = [(("baseline", "proposed1"), runs["whole"].parent / "proposed"), (("proposed2",), runs["proposed"])]
        join_runs(config, parts, [3], tmp_path / "d")
    with pytest.raises(ConfigError, match="seed_4: not a finished run"):
        join_runs(config, [(("baseline",), runs["baseline"]), (("proposed1", "proposed2"), runs["proposed"])], [4],
                  tmp_path / "e")  # fmt: skip


def test_seeds_table_writes_the_committed_files(runs, tmp_path):
    bench = load_benchmark("seeds_table")
    argv = [str(runs["config"]), "--name", "tiny-seed3", "--out", str(tmp_path / "joined"), "--seeds", "3",
            "--join", f"baseline={runs['baseline']}", "--join", f"proposed1,proposed2={runs['proposed']}",
            "--dest", str(tmp_path / "sweeps")]  # fmt: skip
    doc = bench.main(argv)
    written = json.loads((tmp_path / "sweeps" / "tiny-seed3.json").read_text())
    assert written == json.loads(json.dumps(doc)) and written["command"].startswith("python benchmarks/seeds_table.py")
    assert written["seeds"]["seeds"] == [3] and set(written["per_seed_overall_eer_test_val"]) == {"3"}
    assert set(written["per_seed_overall_eer_test_val"]["3"]["_code"]) == {"baseline", "proposed1, proposed2"}
    assert (tmp_path / "sweeps" / "tiny-seed3.md").read_text().startswith("# thce report: all, seeds 3 (")
    # the table reader of docs/results.md's sweeps section takes it as a seeds summary
    tables = load_benchmark("sweep_tables")
    assert "tiny-seed3" in tables.seeds_table([("tiny-seed3", written)])


def test_frame_level_runs_join_with_their_event_counts(tmp_path):
    """A frame-level run's seeds summary reads each seed's event_counts.npz: the join must carry it per method."""
    from tests.test_frame_training import FRAME_RUN

    config_path = tmp_path / "frames.toml"
    config_path.write_text(FRAME_RUN.replace("[frame_model]\n", '[frame_model]\nencoder = "crnn"\nrnn_hidden_size = 4\n'))
    parts = {"b": ["baseline", "dcase2017_baseline"], "p": ["proposed1", "proposed2"]}
    for name, methods in parts.items():
        listed = ", ".join(f'"{m}"' for m in methods)
        argv = ["-q", "experiment", str(config_path), "--out", str(tmp_path / name / "seed_5"), "--set", f"methods=[{listed}]"]
        assert main(argv) == 0
    summary = join_runs(load_config(config_path), [(tuple(m), tmp_path / n) for n, m in parts.items()], [5],
                        tmp_path / "joined")  # fmt: skip
    counts = np.load(tmp_path / "joined" / "seed_5" / "event_counts.npz")
    assert sorted(counts.files) == sorted(parts["b"] + parts["p"])
    for name, methods in parts.items():
        own = np.load(tmp_path / name / "seed_5" / "event_counts.npz")
        for method in methods:
            np.testing.assert_array_equal(counts[method], own[method])
    assert summary["seeds"]["seeds"] == [5]
    results = json.loads((tmp_path / "joined" / "seed_5" / "results.json").read_text())
    assert results["encoder"] == "crnn"  # the encoder of [frame_model], which a frame-level run trains, not [model]'s
