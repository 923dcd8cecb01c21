"""benchmarks/sweep_tables.py: docs/results.md's summary of the committed seeds summaries and sweeps."""

import json

from tests.conftest import load_benchmark

sweep_tables = load_benchmark("sweep_tables")


def _ci(d, lo, hi):
    return {"difference": d, "low": lo, "high": hi, "draws": 1000, "confidence": 0.95}


def _mean(x):
    return {"overall": {"mean": x, "std": 0.01}}


def test_tables_from_a_seeds_summary_and_a_sweep(tmp_path):
    seeds = {"seeds": {"seeds": [0, 1, 2], "eer": {"baseline": _mean(0.30), "proposed1": _mean(0.326),
                                                     "proposed2": _mean(0.255), "logreg_stats": _mean(0.359)},
                       "bootstrap": {"proposed2": _ci(-0.048, -0.068, -0.030), "proposed1": _ci(0.024, 0.001, 0.045)}}}
    (tmp_path / "cfg-3seeds.json").write_text(json.dumps(seeds))
    learned = [{"class_centroid_accuracy": {"start": a, "end": b}, "chance": 0.25} for a, b in ((0.37, 0.5), (0.5, 0.57))]
    later = {**seeds["seeds"], "embedding_learning": [*learned, None], "bootstrap_seeds": {"proposed2": _ci(-0.048, -0.09, 0.01)}}
    (tmp_path / "lstm-3seeds.json").write_text(json.dumps({"seeds": later}))
    def entry(val, vs=None, over_seeds=None):
        return {"val_eer": _mean(val), "test_eer": _mean(val), **({"vs_reference": vs} if vs else {}),
                **({"vs_reference_over_seeds": over_seeds} if over_seeds else {})}

    sweep = {
        "seeds": [0, 1], "reference": "k=0",
        "variants": [
            {"name": "k=0", "methods": {"proposed1": entry(0.30), "logreg_stats": entry(0.35)}},
            {"name": "k=4", "methods": {
                "proposed1": entry(0.28, {"val": _ci(-0.02, -0.05, 0.01), "test": _ci(0.01, -0.01, 0.03)},
                                   {"val": _ci(-0.02, -0.07, 0.02)}),
                "logreg_stats": entry(0.35, {"val": _ci(0.0, 0.0, 0.0), "test": _ci(0.0, 0.0, 0.0)}),
            }},
        ],
        "best": {"proposed1": {"variant": "k=4"}, "logreg_stats": {"variant": "k=0"}},
    }
    (tmp_path / "cap.json").write_text(json.dumps(sweep))
    text = sweep_tables.section(tmp_path)
    # a summary written before the seeds-too interval existed shows "–" there
    assert "| `cfg-3seeds` | 0, 1, 2 | 30.0 | 32.6 | 25.5 | 35.9 | -4.8 [-6.8, -3.0] | – | +2.4 [+0.1, +4.5] | – | – |" in text
    assert "| `lstm-3seeds` | 0, 1, 2 | 30.0 | 32.6 | 25.5 | 35.9 | -4.8 [-6.8, -3.0] | -4.8 [-9.0, +1.0] | " \
        "+2.4 [+0.1, +4.5] | – | 0.37-0.50 → 0.50-0.57 (chance 0.25) |" in text
    assert "| `cap` | 0, 1 | k=4 (vs k=0) | P1 | -2.0 [-5.0, +1.0] | -2.0 [-7.0, +2.0] | +1.0 [-1.0, +3.0] | variant |" in text
    assert "logreg_stats" not in text.split("Ablations")[1].split("| :-- |")[-1]  # unchanged by the variant: left out

    readme = tmp_path / "README.md"
    readme.write_text(f"head\n{sweep_tables.README_START}\nstale table\n{sweep_tables.README_END}\ntail\n")
    sweep_tables.main(["--sweeps", str(tmp_path), "--readme", str(readme)])
    written = readme.read_text()
    assert written.startswith("head\n") and written.endswith("tail\n") and "stale table" not in written
    assert "| `cap` | 0, 1 | k=4 (vs k=0) | P1 |" in written


def test_a_frame_level_summary_adds_its_event_figures(tmp_path):
    def fig(f, f_std, er):
        return {"f_class_average": {"mean": f, "std": f_std}, "er_class_average": {"mean": er, "std": 0.1}}

    events = {"figures": {"baseline": fig(0.65, 0.031, 0.66), "proposed1": fig(0.5, 0.03, 1.2),
                          "proposed2": fig(0.64, 0.04, 0.7), "dcase2017_baseline": fig(0.44, 0.05, 1.37)},
              "bootstrap_f": {"proposed2": _ci(-0.012, -0.05, 0.02)},
              "bootstrap_f_seeds": {"proposed2": _ci(-0.012, -0.09, 0.06)}}  # fmt: skip
    frames = {"seeds": {"seeds": [0, 1, 2], "eer": {"baseline": _mean(0.04), "proposed2": _mean(0.05)},
                        "events": events}}  # fmt: skip
    (tmp_path / "dcase-3seeds.json").write_text(json.dumps(frames))
    sets = json.loads(json.dumps(frames))  # with each class on its own clips too
    for method, figures in sets["seeds"]["events"]["figures"].items():
        figures.update({f"{key}_sets": {"mean": v["mean"] + 0.1, "std": v["std"]} for key, v in list(figures.items())})
    sets["seeds"]["events"]["bootstrap_f_sets"] = {"proposed2": _ci(0.02, -0.01, 0.05)}
    (tmp_path / "dcase-sets-3seeds.json").write_text(json.dumps(sets))
    (tmp_path / "clip-3seeds.json").write_text(json.dumps({"seeds": {"seeds": [0], "eer": {"baseline": _mean(0.3)}}}))
    text = sweep_tables.section(tmp_path)
    assert "| `dcase-3seeds` | 0, 1, 2 | 65.0 ± 3.1 | 50.0 ± 3.0 | 64.0 ± 4.0 | 44.0 ± 5.0 | 0.66 | 1.20 | 0.70 | " \
        "1.37 | -1.2 [-5.0, +2.0] | -1.2 [-9.0, +6.0] |" in text
    assert "`clip-3seeds`" not in text.split("Frame-level configs")[1].split("Ablations")[0]  # clip-level: EER only
    own = text.split("on its own clips")[1].split("Ablations")[0]
    assert "| `dcase-sets-3seeds` | 0, 1, 2 | 75.0 ± 3.1 | 60.0 ± 3.0 | 74.0 ± 4.0 | 54.0 ± 5.0 | 0.76 | 1.30 | " \
        "0.80 | 1.47 | +2.0 [-1.0, +5.0] | – |" in own
    assert "`dcase-3seeds`" not in own  # written before the figure existed: left out of that table
    (tmp_path / "clip-only").mkdir()
    (tmp_path / "clip-only" / "clip-3seeds.json").write_text((tmp_path / "clip-3seeds.json").read_text())
    assert "Frame-level configs" not in sweep_tables.section(tmp_path / "clip-only")  # no frame-level summary: no table
