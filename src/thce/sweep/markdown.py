"""``sweep.md``: a sweep's summary (:func:`thce.sweep.summary.summarise`) as Markdown, and its interval cells."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from thce.methods import method_short_name
from thce.report import embedding_learning_line


def ci_cell(ci: Mapping[str, Any] | None) -> str:
    """A table cell for a bootstrap interval: ``-1.2 [-3.4, +0.5]`` (percentage points), ``unpaired`` or ``–``."""
    if ci is None:
        return "–"
    if "unpaired" in ci:
        return "unpaired"
    return f"{100 * ci['difference']:+.1f} [{100 * ci['low']:+.1f}, {100 * ci['high']:+.1f}]"


def sweep_table_markdown(summary: Mapping[str, Any]) -> str:
    """``sweep.md``: which variant is best per method (on validation), then one row per method and variant."""
    seeds = summary["seeds"]
    confidence = summary["bootstrap"]["confidence"]
    lines = [
        f"# Sweep over {', '.join(summary['varied']) or 'nothing'}: {len(summary['variants'])} variants x "
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))})",
        "",
        "**Best variant per method, chosen by mean overall EER on validation** (the test columns are for reporting;",
        "never choose a setting on them):",
        "",
    ]
    for method, best in summary["best"].items():
        lines.append(
            f"- {method_short_name(method)}: {best['variant']} (validation {100 * best['val_eer']:.1f} %, "
            f"test {100 * best['test_eer']:.1f} %)"
        )
    lines += [
        "",
        "Overall EER (%), mean ± std over seeds. Δ = variant − reference (percentage points) with its paired "
        f"bootstrap {100 * confidence:g} % interval ({summary['bootstrap']['draws']} draws over clips, stratified by "
        f"class, paired by seed and clip); 'seeds too': each draw also resamples the seeds, so the interval holds "
        f"how much other training runs would move Δ (coarse with few seeds). Reference: {summary['reference']}.",
        "",
        "| Method | Variant | Val EER | Test EER | Δ val [CI] | Δ val [CI, seeds too] | Δ test [CI] |",
        "| :-- | :-- | --: | --: | --: | --: | --: |",
    ]
    methods = list(dict.fromkeys(m for entry in summary["variants"] for m in entry["methods"]))
    for method in methods:
        best = summary["best"].get(method, {}).get("variant")
        for entry in summary["variants"]:
            stats = entry["methods"].get(method)
            if stats is None:
                continue
            marks = [("reference", entry["name"] == summary["reference"]), ("best on val", entry["name"] == best)]
            name = entry["name"] + "".join(f" ({mark})" for mark, on in marks if on)
            val, test = stats["val_eer"]["overall"], stats["test_eer"]["overall"]
            vs, over_seeds = stats.get("vs_reference", {}), stats.get("vs_reference_over_seeds", {})
            lines.append(
                f"| {method_short_name(method)} | {name} | {100 * val['mean']:.1f} ± {100 * val['std']:.1f} | "
                f"{100 * test['mean']:.1f} ± {100 * test['std']:.1f} | {ci_cell(vs.get('val'))} | "
                f"{ci_cell(over_seeds.get('val'))} | {ci_cell(vs.get('test'))} |"
            )
    learning = [(e["name"], embedding_learning_line(e.get("embedding_learning", []))) for e in summary["variants"]]
    if any(line for _, line in learning):
        lines += ["", "Algorithm 1's embedding per variant:", ""]
        lines += [f"- {name}: {line}" for name, line in learning if line]
    lines += ["", "Runs: `<variant folder>/seed_<s>/` beside this file; sweep.json has these numbers and per class."]
    return "\n".join(lines) + "\n"
