"""thce sweep: variants on identical data, the table's numbers, the paired bootstrap, choosing on validation."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import thce.sweep
import thce.sweep.running
from thce.cli import main
from thce.config import config_from_dict, load_config, save_config
from thce.errors import ConfigError
from thce.run_data import load_rows
from thce.metrics import per_class_eer
from thce.stats import ScoredTestSet, bootstrap_eer_difference
from thce.rundir import experiment_settings, same_clips
from thce.sweep import ci_cell, run_sweep, summarise, sweep_table_markdown, variant_config
from thce.variants import Variant, parse_vary, product_variants

from tests.conftest import tiny_toml

TINY = tiny_toml(["baseline"], stages="[baseline]\nmax_epochs = 1\npatience = 1\n")
VARY = "baseline.l2_normalise=false,true"
SLUGS = ("baseline.l2_normalise=false", "baseline.l2_normalise=true")
SEEDS = (3, 4)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """2 variants x 2 seeds of a one-epoch baseline, the second variant as reference."""
    root = tmp_path_factory.mktemp("sweep")
    (root / "tiny.toml").write_text(TINY)
    out = root / "out"
    argv = ["-q", "sweep", str(root / "tiny.toml"), "--vary", VARY, "--seeds", "2", "--out", str(out)]
    assert main([*argv, "--draws", "200", "--reference", "baseline.l2_normalise=true"]) == 0
    return out


def _results(out: Path, slug: str, seed: int) -> dict:
    return json.loads((out / slug / f"seed_{seed}" / "results.json").read_text())


def test_sweep_directory_and_shared_features(sweep_dir):
    for name in ("sweep.json", "sweep.md", "config.toml"):
        assert (sweep_dir / name).is_file(), name
    for slug in SLUGS:
        for seed in SEEDS:
            run = sweep_dir / slug / f"seed_{seed}"
            assert (run / "val_scores.npz").is_file() and (run / "results.json").is_file()
            assert load_config(run / "config.toml").data.cache_dir == str(sweep_dir / "cache")
    # features computed once per seed, not once per variant: one cache per seed, one clip folder per seed
    assert len([p for p in (sweep_dir / "cache").iterdir() if p.is_dir()]) == len(SEEDS)
    assert len(list((sweep_dir / "data").iterdir())) == len(SEEDS)


def test_each_variant_folder_is_a_seeds_run_that_report_reads(sweep_dir, capsys):
    for slug in SLUGS:
        summary = json.loads((sweep_dir / slug / "results.json").read_text())
        assert summary["seeds"]["seeds"] == list(SEEDS)
        for method, entry in summary["methods"].items():  # the mean over the seeds' own results
            per_seed = [_results(sweep_dir, slug, seed)["methods"][method]["eer"]["overall"] for seed in SEEDS]
            assert entry["eer"]["overall"] == pytest.approx(np.mean(per_seed))
        assert main(["-q", "report", str(sweep_dir / slug)]) == 0
        assert "Overall" in capsys.readouterr().out


def test_variants_get_identical_splits(sweep_dir):
    for seed in SEEDS:
        splits = []
        for slug in SLUGS:
            run = sweep_dir / slug / f"seed_{seed}"
            rows = load_rows(load_config(run / "config.toml"), run)
            splits.append([(str(row.path.resolve()), row.split) for row in rows])
        assert splits[0] == splits[1]
        clips = [json.loads((sweep_dir / slug / f"seed_{seed}" / "clips.json").read_text()) for slug in SLUGS]
        assert clips[0] == clips[1]
        assert {c: s for c, s in splits[0] if s in ("val", "test")} == {c: s for s in clips[0] for c in clips[0][s]}
        for name in ("scores.npz", "val_scores.npz"):
            a, b = (np.load(sweep_dir / slug / f"seed_{seed}" / name)["class_index"] for slug in SLUGS)
            np.testing.assert_array_equal(a, b)
    # different seeds: different data
    seed_clips = [(sweep_dir / SLUGS[0] / f"seed_{seed}" / "clips.json").read_text() for seed in SEEDS]
    assert seed_clips[0] != seed_clips[1]


def test_val_eer_is_the_validation_scores_eer(sweep_dir):
    run = sweep_dir / SLUGS[0] / "seed_3"
    results = json.loads((run / "results.json").read_text())
    classes = results["classes"]
    for name, key in (("val_scores.npz", "val_eer"), ("scores.npz", "eer")):
        archive = np.load(run / name)
        expected = per_class_eer(scores=archive["baseline"], class_index=archive["class_index"], classes=classes)
        assert results["methods"]["baseline"][key] == pytest.approx(expected)


def test_table_numbers_are_the_runs_numbers(sweep_dir):
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    assert summary["seeds"] == list(SEEDS) and summary["reference"] == "baseline.l2_normalise=true"
    assert [v["slug"] for v in summary["variants"]] == list(SLUGS)
    for entry in summary["variants"]:
        stats = entry["methods"]["baseline"]
        for key, column in (("val_eer", "val_eer"), ("eer", "test_eer")):
            values = [_results(sweep_dir, entry["slug"], s)["methods"]["baseline"][key]["overall"] for s in SEEDS]
            assert stats[column]["overall"]["mean"] == pytest.approx(np.mean(values))
            assert stats[column]["overall"]["std"] == pytest.approx(np.std(values, ddof=1))
    # the paired bootstrap is thce.stats' on the two variants' scores of each seed, clip by clip
    other = summary["variants"][0]["methods"]["baseline"]["vs_reference"]
    assert "vs_reference" not in summary["variants"][1]["methods"]["baseline"]
    classes = tuple(summary["classes"])
    for split, name in (("val", "val_scores.npz"), ("test", "scores.npz")):
        sets = []
        for seed in SEEDS:
            a, b = (np.load(sweep_dir / slug / f"seed_{seed}" / name) for slug in SLUGS)
            sets.append(ScoredTestSet(a["class_index"], {"v": a["baseline"], "r": b["baseline"]}, classes))
        expected = bootstrap_eer_difference(sets, method="v", reference="r", draws=200, seed=3)
        assert other[split] == pytest.approx(expected)
        over_seeds = bootstrap_eer_difference(sets, method="v", reference="r", draws=200, seed=3, resample_seeds=True)
        assert summary["variants"][0]["methods"]["baseline"]["vs_reference_over_seeds"][split] == pytest.approx(
            over_seeds
        )
    val_means = [v["methods"]["baseline"]["val_eer"]["overall"]["mean"] for v in summary["variants"]]
    assert summary["best"]["baseline"]["variant"] == summary["variants"][int(np.argmin(val_means))]["name"]
    table = (sweep_dir / "sweep.md").read_text()
    assert "chosen by mean overall EER on validation" in table
    assert "baseline.l2_normalise=true (reference)" in table
    over = summary["variants"][0]["methods"]["baseline"]["vs_reference_over_seeds"]["val"]
    assert f"| {ci_cell(other['val'])} | {ci_cell(over)} | {ci_cell(other['test'])} |" in table


def test_finished_runs_are_not_redone(sweep_dir, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(sweep_dir, copy, symlinks=True)
    calls = []
    real = thce.sweep.running.run_experiment

    def counting(config, out_dir, **kwargs):
        calls.append((Path(out_dir).relative_to(copy).as_posix(), kwargs["resume"]))
        return real(config, out_dir, **kwargs)

    monkeypatch.setattr(thce.sweep.running, "run_experiment", counting)
    config = load_config(sweep_dir / "config.toml")  # the base config, its cache_dir the original's
    variants = product_variants([parse_vary(VARY)])
    before = json.loads((sweep_dir / "sweep.json").read_text())
    again = run_sweep(config, variants, 2, copy, reference={"baseline.l2_normalise": True}, draws=200)
    assert calls == []
    assert again == before
    # a run without results.json is not finished: redone (from scratch, or continued with resume)
    (copy / SLUGS[1] / "seed_4" / "results.json").unlink()
    run_sweep(config, variants, 2, copy, draws=10, resume=True)
    assert calls == [(f"{SLUGS[1]}/seed_4", True)]
    # a finished run of another configuration is an error, not silently reused
    other = config_from_dict({**config.to_dict(), "train": {**config.to_dict()["train"], "batch_size": 8}})
    with pytest.raises(ConfigError, match="another configuration"):
        run_sweep(other, variants, 1, copy)


def _edit_config(run: Path, section: str, **values) -> None:
    table = load_config(run / "config.toml").to_dict()
    table[section] = {**table[section], **values}
    save_config(config_from_dict(table), run / "config.toml")


def _move_reference_runs(sweep_copy: Path) -> Path:
    """The copy's reference runs moved to a folder of their own, as if made before the sweep: their synthetic clips
    (and clips.json) in another folder, another torch thread count, the rest of the config the reference's."""
    runs = sweep_copy.parent / "made-before"
    shutil.move(sweep_copy / SLUGS[1], runs)
    for seed in SEEDS:
        run = runs / f"seed_{seed}"
        clips = (run / "clips.json").read_text()
        clip_root = json.loads(clips)["val"][0].split("/data/")[0] + "/data/"
        (run / "clips.json").write_text(clips.replace(clip_root, "/elsewhere/runs/data/"))
        _edit_config(run, "train", num_threads=2)
    return runs


def test_reference_runs_made_before_the_sweep_are_read_not_run(sweep_dir, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(sweep_dir, copy, symlinks=True)
    runs = _move_reference_runs(copy)
    before_files = sorted(p.relative_to(runs).as_posix() for p in runs.rglob("*"))
    calls = []
    monkeypatch.setattr(thce.sweep.running, "run_experiment", lambda config, out_dir, **kw: calls.append(out_dir))
    config = load_config(sweep_dir / "config.toml")
    variants = product_variants([parse_vary(VARY)])
    summary = run_sweep(config, variants, 2, copy, reference={"baseline.l2_normalise": True}, reference_runs=runs,
                        draws=200)  # fmt: skip
    assert calls == [] and not (copy / SLUGS[1]).exists()
    assert sorted(p.relative_to(runs).as_posix() for p in runs.rglob("*")) == before_files  # nothing written there
    # the same numbers as the sweep that ran its reference: clips paired by name under the same synthetic data
    before = json.loads((sweep_dir / "sweep.json").read_text())
    assert summary["variants"][0]["methods"] == before["variants"][0]["methods"]
    assert summary["variants"][1]["runs"] == [str(runs / f"seed_{s}") for s in SEEDS]
    with pytest.raises(ConfigError, match="no finished run seed_5"):
        run_sweep(config, variants, 3, copy, reference={"baseline.l2_normalise": True}, reference_runs=runs)
    more = config_from_dict({**config.to_dict(), "methods": ["baseline", "logreg_stats"]})
    with pytest.raises(ConfigError, match="did not run logreg_stats"):
        run_sweep(more, variants, 2, copy, reference={"baseline.l2_normalise": True}, reference_runs=runs)
    # a table the sweep's methods do not read may differ (a baseline sweep reusing runs of another embedding),
    # and the table shows only the sweep's methods, not what else the reference runs trained
    for seed in SEEDS:
        _edit_config(runs / f"seed_{seed}", "embedding", alpha=4.0)
        results = json.loads((runs / f"seed_{seed}" / "results.json").read_text())
        results["methods"]["focal"] = results["methods"]["baseline"]
        (runs / f"seed_{seed}" / "results.json").write_text(json.dumps(results))
    summary = run_sweep(config, variants, 2, copy, reference={"baseline.l2_normalise": True}, reference_runs=runs,
                        draws=200)  # fmt: skip
    assert summary["variants"][1]["runs"] == [str(runs / f"seed_{s}") for s in SEEDS]
    assert [list(v["methods"]) for v in summary["variants"]] == [["baseline"], ["baseline"]]
    # synthetic data of other settings under the same names are other clips: unpaired
    for seed in SEEDS:
        _edit_config(runs / f"seed_{seed}", "synth", ebr_db_range=[-1.0, 1.0])
    assert same_clips([copy / SLUGS[0] / "seed_3", runs / "seed_3"], "val") is not None
    with pytest.raises(ConfigError, match="is not the reference variant's for baseline"):
        run_sweep(config, variants, 2, copy, reference={"baseline.l2_normalise": True}, reference_runs=runs)


def _fake_run(root: Path, slug: str, seed: int, *, val: float, test: float, scores: dict, data: str = "d") -> None:
    """A finished run directory with made-up EERs and score files (one class "a"), its clips named after ``data``."""
    run = root / slug / f"seed_{seed}"
    run.mkdir(parents=True)
    eer = {"baseline": {"eer": {"a": test, "overall": test}, "val_eer": {"a": val, "overall": val}}}
    (run / "results.json").write_text(json.dumps({"classes": ["a"], "methods": eer, "data": {}}))
    clips = {split: [f"{data}/{split}/{i}.wav" for i in range(10)] for split in ("val", "test")}
    (run / "clips.json").write_text(json.dumps(clips))
    for name in ("scores.npz", "val_scores.npz"):
        class_index, s = scores[name]
        np.savez(run / name, class_index=class_index, baseline=s)


# 4 positives (class 0) and 6 negatives (background, index 1): a perfect scorer and an inverted one
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
PERFECT = (LABELS == 0).astype(float)[:, None] * 0.8 + 0.1
INVERTED = 1.0 - PERFECT
RNG_SCORES = np.random.default_rng(0).random((10, 1))


def test_best_is_chosen_on_validation_even_when_test_disagrees(tmp_path):
    scores = {"scores.npz": (LABELS, RNG_SCORES), "val_scores.npz": (LABELS, RNG_SCORES)}
    variants = product_variants([("embedding.alpha", [4, 16])])
    # alpha=4: best on validation, worst on test; alpha=16 the other way round
    for seed, (v4, t4, v16, t16) in zip((0, 1), ((0.10, 0.40, 0.30, 0.05), (0.12, 0.50, 0.28, 0.07))):
        _fake_run(tmp_path, variants[0].slug, seed, val=v4, test=t4, scores=scores)
        _fake_run(tmp_path, variants[1].slug, seed, val=v16, test=t16, scores=scores)
    summary = summarise(tmp_path, variants, [0, 1], reference=variants[1], draws=20)
    best = summary["best"]["baseline"]
    assert best["variant"] == "embedding.alpha=4"
    assert best["val_eer"] == pytest.approx(0.11) and best["test_eer"] == pytest.approx(0.45)
    stats = summary["variants"][0]["methods"]["baseline"]
    assert stats["val_eer"]["overall"] == pytest.approx({"mean": 0.11, "std": np.std([0.10, 0.12], ddof=1)})
    assert stats["test_eer"]["overall"]["mean"] == pytest.approx(0.45)
    table = sweep_table_markdown(summary)
    assert "- B: embedding.alpha=4 (validation 11.0 %, test 45.0 %)" in table
    assert "| B | embedding.alpha=4 (best on val) | 11.0 ± 1.4 | 45.0 ± 7.1 |" in table
    assert "never choose a setting on them" in table


def test_paired_bootstrap_hand_cases(tmp_path):
    variants = product_variants([("train.learning_rate", [0.001, 0.01, 0.1, 1.0])])
    ref, shifted, better, elsewhere = variants
    for seed in (0, 1):
        ref_scores = RNG_SCORES + seed
        both = {"scores.npz": (LABELS, ref_scores), "val_scores.npz": (LABELS, ref_scores)}
        _fake_run(tmp_path, ref.slug, seed, val=0.3, test=0.3, scores=both)
        # a monotone transform of the reference's scores: the same EER on every resample of the same clips, so a
        # paired bootstrap gives exactly 0 (an unpaired one would not)
        moved = {k: (LABELS, 3.0 * ref_scores - 1.0) for k in both}
        _fake_run(tmp_path, shifted.slug, seed, val=0.3, test=0.3, scores=moved)
    perfect = {k: (LABELS, PERFECT) for k in ("scores.npz", "val_scores.npz")}
    for seed in (0, 1):
        _fake_run(tmp_path, better.slug, seed, val=0.0, test=0.0, scores=perfect)
        _fake_run(tmp_path, elsewhere.slug, seed, val=0.0, test=0.0, scores=perfect, data="other")
    summary = summarise(tmp_path, variants, [0, 1], reference=ref, draws=100)
    by_name = {v["name"]: v["methods"]["baseline"].get("vs_reference") for v in summary["variants"]}
    assert by_name.pop(ref.name) is None
    for split in ("val", "test"):
        ci = by_name[shifted.name][split]
        assert (ci["difference"], ci["low"], ci["high"]) == (0.0, 0.0, 0.0)
        # perfect scores (EER 0) against the reference's EER on each seed: the difference is minus the reference's
        ref_eer = per_class_eer(scores=RNG_SCORES, class_index=LABELS, classes=["a"])["overall"]
        ci = by_name[better.name][split]
        assert ci["difference"] == pytest.approx(-ref_eer) and ci["low"] <= -ref_eer <= ci["high"] <= 0.0
        assert "unpaired" in by_name[elsewhere.name][split]
    assert "| unpaired | unpaired |" in sweep_table_markdown(summary)


def test_paired_bootstrap_of_perfect_against_inverted_is_minus_one(tmp_path):
    variants = product_variants([("embedding.alpha", [4, 16])])
    for slug, s in ((variants[0].slug, INVERTED), (variants[1].slug, PERFECT)):
        _fake_run(tmp_path, slug, 0, val=0, test=0, scores={k: (LABELS, s) for k in ("scores.npz", "val_scores.npz")})
    summary = summarise(tmp_path, variants, [0], reference=variants[0], draws=50)
    ci = summary["variants"][1]["methods"]["baseline"]["vs_reference"]["test"]
    assert (ci["difference"], ci["low"], ci["high"]) == (-1.0, -1.0, -1.0)  # every resample: EER 0 against 1


def test_parse_vary():
    assert parse_vary("embedding.alpha=4,8,16") == ("embedding.alpha", [4, 8, 16])
    assert parse_vary("model.cnn_channels=[8,16],[16, 32]") == ("model.cnn_channels", [[8, 16], [16, 32]])
    assert parse_vary('data.ratio="2:2:1:26","6:1:2:16"') == ("data.ratio", ["2:2:1:26", "6:1:2:16"])
    assert parse_vary("data.ratio=2:2:1:26,6:1:2:16") == ("data.ratio", ["2:2:1:26", "6:1:2:16"])  # bare strings
    assert parse_vary('x.y="a,b",c') == ("x.y", ["a,b", "c"])
    assert parse_vary("model.cnn_pools=[[5,2],[20,2]]") == ("model.cnn_pools", [[[5, 2], [20, 2]]])
    assert parse_vary(" baseline.l2_normalise = true,false ") == ("baseline.l2_normalise", [True, False])
    for text, message in (
        ("embedding.alpha", "expected KEY=VALUE1,VALUE2"),
        ("=1,2", "empty key"),
        ("a..b=1", "empty key"),
        ("embedding.alpha=1,,2", "empty value"),
        ("embedding.alpha=4,", "empty value"),
        ("model.cnn_channels=[8,16", "missing ']'"),
        ("model.cnn_channels=8,16]", "unmatched ']'"),
        ('data.ratio="2:2', 'unterminated " quote'),
        ("embedding.alpha=8,8.0", "value 8.0 listed twice"),
        ("seed=1,2", "use --seeds"),
    ):
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_vary(text)
    with pytest.raises(ConfigError, match="given twice"):
        product_variants([parse_vary("a.b=1,2"), parse_vary("a.b=3")])


def test_parse_variant_and_the_cli_adds_joint_variants_to_the_product(tmp_path, monkeypatch):
    from thce.variants import parse_variant

    variant = parse_variant(' baseline.selection = "val;auc" ; model.cnn_channels=[8, 16];train.balanced_sampling=true')
    assert variant.assignments == (
        ("baseline.selection", "val;auc"), ("model.cnn_channels", [8, 16]), ("train.balanced_sampling", True),
    )  # fmt: skip
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    seen = {}
    monkeypatch.setattr(thce.sweep, "run_sweep", lambda config, variants, seeds, out, **kw: seen.update(
        names=[v.name for v in variants], reference=kw["reference"]))  # fmt: skip
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: "")
    argv = ["sweep", str(config), "--out", str(tmp_path / "out"), "--vary", "train.balanced_sampling=false,true",
            "--variant", 'train.balanced_sampling=true; baseline.selection="val_auc"',
            "--reference", "train.balanced_sampling=false"]  # fmt: skip
    assert main(argv) == 0
    assert seen["names"] == [
        "train.balanced_sampling=false", "train.balanced_sampling=true",
        'train.balanced_sampling=true, baseline.selection="val_auc"',
    ]  # fmt: skip
    assert seen["reference"] == {"train.balanced_sampling": False}


def test_variants_configs_and_slugs():
    base = config_from_dict({})
    assert config_from_dict(base.to_dict()) == base  # the round trip variant_config relies on
    variants = product_variants([parse_vary("embedding.alpha=4,8"), parse_vary("model.cnn_channels=[8,16],[4,4]")])
    assert [v.name for v in variants] == [
        "embedding.alpha=4, model.cnn_channels=[8, 16]",
        "embedding.alpha=4, model.cnn_channels=[4, 4]",
        "embedding.alpha=8, model.cnn_channels=[8, 16]",
        "embedding.alpha=8, model.cnn_channels=[4, 4]",
    ]
    assert variants[0].slug == "embedding.alpha=4__model.cnn_channels=_8__16_"
    config = variant_config(base, variants[3])
    assert config.embedding.alpha == 8.0 and config.model.cnn_channels == (4, 4)
    changed = {k for k, v in config.to_dict().items() if v != base.to_dict()[k]}
    assert changed == {"embedding", "model"}
    with pytest.raises(ConfigError, match=r"variant embedding.alpah=4: unknown config key 'embedding.alpah'"):
        variant_config(base, Variant.of({"embedding.alpah": 4}))
    long = Variant.of({"data.manifest": "x" * 300})
    assert len(long.slug) == 100 and long.slug != Variant.of({"data.manifest": "x" * 299}).slug


def test_sweep_usage_errors_are_one_line_exit_2(tmp_path, capsys, monkeypatch):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "out"
    base = ["sweep", str(config), "--out", str(out)]
    for extra, message in (
        (["--vary", "model.cnn_channels=[8,16"], "--vary 'model.cnn_channels=[8,16': missing ']'"),
        (["--vary", "embedding.alpah=8,16"], "unknown config key 'embedding.alpah'; did you mean 'alpha'?"),
        (["--vary", "embedding.alpha=8,16", "--set", "embedding.alpha=4"], "also given with --set"),
        (["--vary", "embedding.alpha=8,16", "--reference", "embedding.alpha=32"], "matches no variant"),
        (["--vary", "embedding.alpha=8,16", "--seeds", "0"], "--seeds: must be >= 1"),
        ([], "give the variants to run"),
        (["--variant", "embedding.alpha=8; embedding.alpha=4"], "embedding.alpha set twice"),
        (["--variant", "embedding.alpha=8;"], "expected KEY=VALUE; KEY=VALUE"),
        (["--vary", "embedding.alpha=8,16", "--variant", "embedding.alpha=8.0"], "listed twice (or also made by"),
        (["--variant", "embedding.alpha=8", "--set", "embedding.alpha=4"], "also given with --set"),
        (["--variant", "seed=3"], "use --seeds"),
        (["--vary", "embedding.alpha=8,16", "--out", str(config)], f"{config}: cannot write there: it is a file"),
        (["--vary", "embedding.alpha=8,16", "--out", str(config / "sweep")], f"{config} is a file, not a directory"),
    ):
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("thce: error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists()  # every error came before the first run
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([*base, "--vary", "embedding.alpha=8,16"]) == 2
    assert "do not use torchrun" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="share the folder"):
        run_sweep(config_from_dict({}), [Variant.of({"data.manifest": "a b"}), Variant.of({"data.manifest": "a_b"})],
                  1, tmp_path / "slugs")


def test_a_users_config_toml_in_out_is_not_replaced(tmp_path, capsys):
    folder = tmp_path / "mine"  # the user keeps the config being swept in the folder given as --out
    folder.mkdir()
    config = folder / "config.toml"
    config.write_text("# my notes\n" + TINY)
    assert main(["sweep", str(config), "--out", str(folder), "--vary", "embedding.alpha=8,16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"thce: error: {config}: exists and is not a sweep's; not overwritten") and err.count("\n") == 1
    assert config.read_text() == "# my notes\n" + TINY and sorted(p.name for p in folder.iterdir()) == ["config.toml"]


def test_an_unset_setting_that_falls_back_compares_as_what_it_falls_back_to(sweep_dir):
    config = load_config(sweep_dir / "config.toml")
    table = config.to_dict()
    def with_rate(rate: float):
        return config_from_dict({**table, "embedding": {**table["embedding"], "learning_rate": rate}})

    explicit, other = with_rate(table["train"]["learning_rate"]), with_rate(0.123)
    assert config.embedding.learning_rate is None
    assert experiment_settings(config) == experiment_settings(explicit) != experiment_settings(other)
    assert experiment_settings(config)["baseline"]["learning_rate"] == table["train"]["learning_rate"]
    selection = config_from_dict({**table, "detector": {**table["detector"], "head_only_selection": "val_loss"}})
    assert config.detector.head_only_selection is None and config.detector.selection == "val_loss"
    assert experiment_settings(config) == experiment_settings(selection)
