"""Tests of thce.report: Markdown tables, DET plot and report.md on hand-made results dictionaries."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from thce.metrics import det_points
from thce.figures import plot_det
from thce.report import counts_table_markdown, eer_table_markdown, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _det(seed: int, shift: float) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.2
    return det_points(scores=rng.normal(size=300) + shift * labels, is_positive=labels, max_points=50)


@pytest.fixture()
def results() -> dict[str, Any]:
    classes = ["dog", "baby", "gun"]
    eers = {
        "baseline": {"dog": 0.173, "baby": 0.12, "gun": 0.09, "overall": 0.1277},
        "proposed1": {"dog": 0.165, "baby": 0.096, "gun": 0.111, "overall": 0.124},
        "proposed2": {"dog": 0.152, "baby": 0.092, "gun": 0.068, "overall": 0.104},
    }
    methods = {
        name: {"eer": eer, "det": {c: _det(i * 10 + j, 1.0 + i) for j, c in enumerate(classes)}}
        for i, (name, eer) in enumerate(eers.items())
    }
    return {
        "classes": classes,
        "methods": methods,
        "data": {
            "counts": {
                "train": {"dog": 20, "baby": 20, "gun": 10, "background": 260},
                "val": {"dog": 6, "baby": 6, "gun": 3, "background": 74},
                "test": {"dog": 3, "baby": 3, "gun": 2, "background": 37},
            }
        },
        "encoder": "cnn",
        "config": {"seed": 0, "train": {"epochs": 3}},
        "timing_s": {"baseline": 1.5},
    }


def _rows(table: str) -> dict[str, list[str]]:
    """Map the first cell of each table row to the other cells."""
    rows = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| :--"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_eer_table_percent_bold_and_overall(results: dict[str, Any]) -> None:
    table = eer_table_markdown(results)
    rows = _rows(table)
    assert rows["Class"] == ["B", "P1", "P2"]
    assert rows["dog"] == ["17.3", "16.5", "**15.2**"]
    assert rows["baby"] == ["12.0", "9.6", "**9.2**"]
    assert rows["gun"] == ["9.0", "11.1", "**6.8**"]
    assert rows["Overall"] == ["12.8", "12.4", "**10.4**"]
    assert list(rows) == ["Class", "dog", "baby", "gun", "Overall"]
    assert "B: baseline (class-weighted BCE, Eq. 2); P1: proposed1 (" in table
    assert "; P2: proposed2 (" in table


def test_eer_table_ties_bold_and_missing_values(results: dict[str, Any]) -> None:
    results["methods"]["proposed1"]["eer"]["gun"] = 0.0681  # displays as 6.8 like P2: both bold
    del results["methods"]["baseline"]["eer"]["baby"]
    rows = _rows(eer_table_markdown(results))
    assert rows["gun"] == ["9.0", "**6.8**", "**6.8**"]
    assert rows["baby"] == ["–", "9.6", "**9.2**"]


def test_eer_table_extra_methods(results: dict[str, Any]) -> None:
    results["methods"]["focal"] = {"eer": {"dog": 0.1, "baby": 0.3, "gun": 0.2, "overall": 0.2}}
    results["methods"]["my_method"] = {"eer": {"dog": 0.5, "baby": 0.01, "gun": 0.5, "overall": 0.337}}
    table = eer_table_markdown(results)
    rows = _rows(table)
    assert rows["Class"] == ["B", "P1", "P2", "focal", "my_method"]
    assert rows["dog"][3] == "**10.0**"
    assert rows["baby"][4] == "**1.0**"
    assert "focal: focal loss" in table


def test_eer_table_bad_input_messages() -> None:
    with pytest.raises(ValueError, match=r"results\['classes'\]: expected a non-empty list"):
        eer_table_markdown({"methods": {}})
    with pytest.raises(ValueError, match=r"results\['methods'\]: expected a non-empty dict"):
        eer_table_markdown({"classes": ["dog"]})
    with pytest.raises(ValueError, match=r"results\['methods'\]\['baseline'\]: expected a dict with an 'eer'"):
        eer_table_markdown({"classes": ["dog"], "methods": {"baseline": {"det": {}}}})


def test_counts_table(results: dict[str, Any]) -> None:
    rows = _rows(counts_table_markdown(results))
    assert rows["Class"] == ["train", "val", "test", "total"]
    assert rows["dog"] == ["20", "6", "3", "29"]
    assert rows["background"] == ["260", "74", "37", "371"]
    assert rows["Total"] == ["310", "89", "45", "444"]
    with pytest.raises(ValueError, match=r"results\['data'\]\['counts'\]: expected a dict \{split"):
        counts_table_markdown({"classes": ["dog"]})


def test_plot_det_writes_png(results: dict[str, Any], tmp_path: Path) -> None:
    path = plot_det(results, tmp_path / "sub" / "det.png")
    assert path == tmp_path / "sub" / "det.png"
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert [p.name for p in path.parent.iterdir()] == ["det.png"]  # no temporary file left behind


def test_plot_det_tolerates_missing_and_degenerate_curves(results: dict[str, Any], tmp_path: Path) -> None:
    results["methods"]["proposed1"].pop("det")
    results["methods"]["proposed2"]["det"]["dog"] = {"far": [0.0], "mr": [0.0]}  # perfect separation: one point
    results["methods"]["lmle"] = {"eer": {"dog": 0.2, "baby": 0.2, "gun": 0.2, "overall": 0.2},
                                  "det": {"dog": {"far": [1.0, 0.5, 0.0], "mr": [0.0, 0.5, 1.0]}}}
    assert plot_det(results, tmp_path / "det.png").read_bytes().startswith(PNG_MAGIC)
    bad = copy.deepcopy(results)
    bad["methods"]["baseline"]["det"]["dog"] = {"far": [0.1, 0.0], "mr": [0.0]}
    with pytest.raises(ValueError, match=r"expected 'far' and 'mr' of equal length, got 2 and 1"):
        plot_det(bad, tmp_path / "bad.png")


def _colour_pixels(fig: Any, ax: Any, colour: str) -> int:
    """How many pixels inside ``ax`` of the drawn ``fig`` are close to ``colour``."""
    from matplotlib.colors import to_rgb

    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float) / 255.0
    box = ax.get_window_extent()
    height = image.shape[0]
    inside = image[int(height - box.y1) : int(height - box.y0), int(box.x0) : int(box.x1)]
    return int((np.abs(inside - np.array(to_rgb(colour))).max(axis=2) < 0.12).sum())


def test_det_identical_curves_stay_visible_legends_outside(results: dict[str, Any]) -> None:
    from thce.figures import det_figure

    results["methods"]["proposed2"]["det"] = copy.deepcopy(results["methods"]["proposed1"]["det"])  # P1 == P2
    results["methods"]["proposed1"]["det"]["gun"] = {"far": [0.0], "mr": [0.0]}  # one point, the same for both
    results["methods"]["proposed2"]["det"]["gun"] = {"far": [0.0], "mr": [0.0]}
    fig = det_figure(results)
    for ax in fig.axes:
        ax.get_legend().set_visible(False)
    for ax in fig.axes:  # P1 (C1) shows beside P2 (C2) drawn over it, in the curves and at a lone point
        assert _colour_pixels(fig, ax, "C1") > 20 and _colour_pixels(fig, ax, "C2") > 20, ax.get_title()
    for ax in fig.axes:
        ax.get_legend().set_visible(True)
        legend = ax.get_legend().get_window_extent()
        assert legend.y1 < ax.get_window_extent().y0  # under the panel, off the curves
        labels = ax.get_xticklabels()
        boxes = [t.get_window_extent() for t in labels]
        assert all(t.get_rotation() == 0 for t in labels)
        assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:]))  # tick labels do not touch


def test_write_report(results: dict[str, Any], tmp_path: Path) -> None:
    results["methods"]["ldam"] = {"eer": {"dog": 0.3, "baby": 0.3, "gun": 0.3, "overall": 0.3},
                                  "det": {"gun": {"far": [0.5, 0.0], "mr": [0.0, 0.6]}}}
    run_dir = tmp_path / "run"
    paths = write_report(run_dir, results)
    assert paths == {"report": run_dir / "report.md", "det": run_dir / "det.png"}
    assert paths["det"].read_bytes().startswith(PNG_MAGIC)
    text = paths["report"].read_text(encoding="utf-8")
    assert text.startswith("# thce report")
    assert eer_table_markdown(results) in text
    assert counts_table_markdown(results) in text
    assert "| Class | B | P1 | P2 | ldam |" in text
    assert "- **encoder**: cnn" in text
    assert '"seed": 0' in text
    assert "![DET curves](det.png)" in text
    assert sorted(p.name for p in run_dir.iterdir()) == ["det.png", "report.md"]


def test_write_report_without_counts_or_extras(tmp_path: Path) -> None:
    results = {"classes": ["dog"], "methods": {"baseline": {"eer": {"dog": 0.25, "overall": 0.25}}}}
    paths = write_report(tmp_path, results)
    text = paths["report"].read_text(encoding="utf-8")
    assert "| dog | **25.0** |" in text
    assert "## Data" not in text and "## Run" not in text
    assert paths["det"].read_bytes().startswith(PNG_MAGIC)


def test_every_method_has_a_description_under_its_own_key():
    # issue 15: the description of "ldam_drw" was filed under "ldam", so the legend never showed it
    from thce.methods import METHODS

    results = {"classes": ["dog"], "methods": {m: {"eer": {"dog": 0.1, "overall": 0.1}} for m in METHODS}}
    legend = eer_table_markdown(results).splitlines()[-1]
    for name, method in METHODS.items():
        assert method.description, name
        assert f"{name} ({method.description})" in legend or f"{name}: {method.description}" in legend, name
