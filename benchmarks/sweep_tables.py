"""docs/results.md's summary of the committed multi-seed tables in ``benchmarks/results/sweeps/``.

Two kinds of file there, told apart by their keys:

- a seeds summary (``NAME-3seeds.json``: one config, every method over seeds; written from the runs'
  ``thce.repeats.summarise_seeds`` summary): test EER mean per method, the bootstrap interval of each
  method's overall EER minus the baseline's, and whether Algorithm 1's embedding separated the validation clips'
  classes (class-centroid accuracy at the first clustering and at the end, range over seeds);
- a sweep (``thce sweep``'s ``sweep.json``: variants of one config): per variant other than the reference and per
  method it changes, the paired bootstrap difference to the reference on validation and on test, and the variant
  chosen on validation.

Writes both tables between the sweeps markers of ``--readme`` (nothing else of the file changes):

    python benchmarks/sweep_tables.py --readme docs/results.md
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from thce.io import rewrite_section
from thce.methods import method_short_name
from thce.report import learning_span
from thce.sweep import ci_cell

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "benchmarks" / "results" / "sweeps"
README_START, README_END = "<!-- sweeps:start -->", "<!-- sweeps:end -->"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.1f}"


def _unchanged(ci: Mapping[str, Any] | None) -> bool:
    """A method the variant does not touch (e.g. logreg_stats under an encoder setting): identical scores."""
    return bool(ci) and "unpaired" not in ci and ci["difference"] == ci["low"] == ci["high"] == 0.0


def _learning_cell(per_seed: list[dict[str, Any] | None]) -> str:
    """Range over seeds of the validation clips' class-centroid accuracy at Algorithm 1's first clustering and at
    its end (``thce.training.diagnostics.embedding_learning``), e.g. ``0.37-0.50 → 0.50-0.57 (chance 0.25)``."""
    name = "class_centroid_accuracy"
    if not any(r and name in r for r in per_seed):
        return "–"
    chance = next((r["chance"] for r in per_seed if r and r.get("chance")), None)
    spans = f"{learning_span(per_seed, name, 'start')} → {learning_span(per_seed, name, 'end')}"
    return spans + (f" (chance {chance:.2f})" if chance else "")


def seeds_table(files: list[tuple[str, dict[str, Any]]]) -> str:
    """One row per seeds summary: test EER (%) mean per method, and each method minus B with its interval."""
    lines = [
        "| table | seeds | B | P1 | P2 | logreg_stats | P2 − B [95 % CI] | P2 − B [CI, seeds too] | P1 − B [95 % CI] | "
        "logreg_stats − B [95 % CI] | embedding: class-centroid accuracy, start → end |",
        "| :-- | :-- | --: | --: | --: | --: | --: | --: | --: | --: | :-- |",
    ]
    for name, doc in files:
        eer, boot = doc["seeds"]["eer"], doc["seeds"].get("bootstrap", {})
        over_seeds = doc["seeds"].get("bootstrap_seeds", {})
        cells = [_pct(eer[m]["overall"]["mean"]) if m in eer else "–" for m in ("baseline", "proposed1", "proposed2", "logreg_stats")]
        seeds = ", ".join(str(s) for s in doc["seeds"]["seeds"])
        lines.append(
            f"| `{name}` | {seeds} | {' | '.join(cells)} | {ci_cell(boot.get('proposed2'))} | "
            f"{ci_cell(over_seeds.get('proposed2'))} | {ci_cell(boot.get('proposed1'))} | "
            f"{ci_cell(boot.get('logreg_stats'))} | {_learning_cell(doc['seeds'].get('embedding_learning', []))} |"
        )
    return "\n".join(lines)


FRAME_METHODS = ("baseline", "proposed1", "proposed2", "dcase2017_baseline")


def events_table(files: list[tuple[str, dict[str, Any]]], suffix: str = "") -> str:
    """One row per frame-level seeds summary: DCASE 2017 Task 2's class-average event F (%, mean ± std) and error
    rate (mean) per method on the test clips, and P2 − B in F with its intervals; ``suffix="_sets"``: each class on
    its own clips (summaries written before thce computed it are left out)."""
    lines = [
        "| table | seeds | F: B | P1 | P2 | DCASE17 | ER: B | P1 | P2 | DCASE17 | P2 − B in F [95 % CI] | "
        "P2 − B [CI, seeds too] |",
        "| :-- | :-- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    f_key, er_key = f"f_class_average{suffix}", f"er_class_average{suffix}"
    for name, doc in files:
        events = doc["seeds"]["events"]
        figures = events["figures"]
        if not any(f_key in entry for entry in figures.values()):
            continue
        f = [f"{_pct(figures[m][f_key]['mean'])} ± {_pct(figures[m][f_key]['std'])}"
             if m in figures else "–" for m in FRAME_METHODS]  # fmt: skip
        er = [f"{figures[m][er_key]['mean']:.2f}" if m in figures else "–" for m in FRAME_METHODS]
        seeds = ", ".join(str(s) for s in doc["seeds"]["seeds"])
        lines.append(
            f"| `{name}` | {seeds} | {' | '.join(f)} | {' | '.join(er)} | "
            f"{ci_cell(events.get(f'bootstrap_f{suffix}', {}).get('proposed2'))} | "
            f"{ci_cell(events.get(f'bootstrap_f{suffix}_seeds', {}).get('proposed2'))} |"
        )
    return "\n".join(lines)


def sweep_table(files: list[tuple[str, dict[str, Any]]]) -> str:
    """One row per sweep, variant and method it changes: differences to the reference, the validation choice."""
    lines = [
        "| sweep | seeds | variant (vs reference) | method | Δ val [95 % CI] | Δ val [CI, seeds too] | Δ test [95 % CI] | "
        "chosen on validation |",
        "| :-- | :-- | :-- | :-- | --: | --: | --: | :-- |",
    ]
    for name, doc in files:
        best, seeds = doc["best"], ", ".join(str(s) for s in doc["seeds"])
        for variant in doc["variants"]:
            if variant["name"] == doc["reference"]:
                continue
            for method, entry in variant["methods"].items():
                vs, over_seeds = entry.get("vs_reference", {}), entry.get("vs_reference_over_seeds", {})
                if not vs or (_unchanged(vs.get("val")) and _unchanged(vs.get("test"))):
                    continue
                chosen = "variant" if best.get(method, {}).get("variant") == variant["name"] else "reference"
                lines.append(
                    f"| `{name}` | {seeds} | {variant['name']} (vs {doc['reference']}) | {method_short_name(method)} | "
                    f"{ci_cell(vs.get('val'))} | {ci_cell(over_seeds.get('val'))} | {ci_cell(vs.get('test'))} | {chosen} |"
                )
    return "\n".join(lines)


def section(directory: Path, page: Path = ROOT / "docs" / "results.md") -> str:
    """The section of ``page`` (quoted in the command that rewrites it): the seeds table, then the sweep table, from
    every JSON file of ``directory``."""
    seeds, sweeps = [], []
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text())
        (sweeps if "variants" in doc else seeds).append((path.stem, doc))
    frames = [(name, doc) for name, doc in seeds if "events" in doc["seeds"]]
    source = directory.relative_to(ROOT) if directory.is_relative_to(ROOT) else directory
    page = page.relative_to(ROOT) if page.is_relative_to(ROOT) else page
    return "\n".join([
        f"Written by `python benchmarks/sweep_tables.py --readme {page}` from `{source}/*.json` (overall EER in %, "
        "unweighted mean over the classes; test clips unless marked val; each file's .md has the per-class tables "
        "and the commands).",
        "",
        "Configs over seeds (test EER, mean over seeds; differences with a stratified bootstrap interval over test clips; "
        "\"seeds too\": each draw also resamples the seeds, so the interval holds how much other training runs would "
        "move the difference; – where the table was written before thce computed it):",
        "",
        seeds_table(seeds),
        "",
        *([
            "Frame-level configs over seeds (DCASE 2017 Task 2's event-based metrics on the test clips, onset within "
            "500 ms: class-average F in %, mean ± std over seeds, and error rate, mean; each method's post-processing "
            "chosen on validation event F; P2 − B in percentage points with the intervals as above):",
            "",
            events_table(frames),
            "",
            "The same with each class scored on its own clips (its event clips and the clips without events), as "
            "DCASE 2017 Task 2 scores each class on its own mixtures (a detection of one class in another's clip "
            "costs nothing here; above, it is an insertion):",
            "",
            events_table(frames, "_sets"),
            "",
        ] if frames else []),
        "Ablations (Δ = variant − reference, percentage points, paired by seed and clip; \"seeds too\" as above; the "
        "setting is chosen on validation, test is for reporting; methods a variant does not change are left out):",
        "",
        sweep_table(sweeps),
        "",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=Path, default=SWEEPS, help="folder of the committed tables")
    parser.add_argument("--readme", type=Path, default=None, help="write between the sweeps markers of this file (docs/results.md)")
    args = parser.parse_args(argv)
    text = section(args.sweeps.resolve(), *([args.readme.resolve()] if args.readme is not None else []))
    if args.readme is not None:
        rewrite_section(args.readme, text, start=README_START, end=README_END)
    else:
        print(text)
    return text


if __name__ == "__main__":
    main()
