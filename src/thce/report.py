"""Reports of a run: EER and data tables (Markdown) and ``report.md``, which links the figures of
:mod:`thce.figures` (DET curves, embedding diagnostics).

Everything here reads the ``results.json`` dictionary of a run directory::

    {"classes": ["dog", "baby", "gun"],
     "methods": {"baseline": {"eer": {"dog": 0.12, ..., "overall": 0.0867},
                              "det": {"dog": {"far": [...], "mr": [...]}, ...}},
                 "proposed1": {...}, "proposed2": {...}},
     "data": {"counts": {"train": {"dog": 20, ..., "background": 260}, "val": {...}, "test": {...}}},
     ...}

EERs and DET rates are fractions; tables and plots show percent. Any number of methods and classes works; methods
appear in the dictionary's order, each under its short name of :mod:`thce.methods` (B, P1, P2 for the paper's
three, the key for the others) and described by the registry in the legend.
Other top-level keys (``config``, ``timing_s``, ``encoder``, ...) are listed in ``report.md`` as they are.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from thce.figures import plot_det, plot_embedding_diagnostics
from thce.io import atomic_write
from thce.methods import METHODS, method_short_name
from thce.results import eer_value, percent, results_classes_and_methods
from thce.rundir import DET_FIGURE, EMBEDDING_FIGURE, REPORT

__all__ = ["counts_table_markdown", "eer_table_markdown", "event_table_markdown", "write_report"]

logger = logging.getLogger(__name__)


_RESERVED_KEYS = ("classes", "methods", "data", "seeds", "embedding_diagnostics", "provenance", "selection")


def eer_table_markdown(results: Mapping[str, Any]) -> str:
    """EER table shaped like the paper's tables: a row per class plus "Overall", a column per method.

    EERs are shown in percent with one decimal; the lowest of each row (as displayed) is in bold, ties all bold; a
    missing value shows as "–". A legend line under the table spells out the methods' short names.

    Args:
        results: the results.json dictionary (see the module docstring).

    Returns:
        The Markdown text: caption line, table, legend line; ends with a newline.

    >>> results = {"classes": ["dog"], "methods": {"baseline": {"eer": {"dog": 0.12, "overall": 0.12}},
    ...                                          "proposed2": {"eer": {"dog": 0.1, "overall": 0.1}}}}
    >>> print(eer_table_markdown(results))  # doctest: +NORMALIZE_WHITESPACE
    EER (%) per class; overall = unweighted mean over classes. Best of each row in bold.
    <BLANKLINE>
    | Class | B | P2 |
    | :-- | --: | --: |
    | dog | 12.0 | **10.0** |
    | Overall | 12.0 | **10.0** |
    <BLANKLINE>
    B: baseline (class-weighted BCE, Eq. 2); P2: proposed2 (THCE embedding, Alg. 1; detector tuned end-to-end)
    """
    classes, methods = results_classes_and_methods(results)
    names = list(methods)
    lines = [
        "EER (%) per class; overall = unweighted mean over classes. Best of each row in bold.",
        "",
        "| Class | " + " | ".join(method_short_name(m) for m in names) + " |",
        "| :-- | " + " | ".join("--:" for _ in names) + " |",
    ]
    for key, label in [(c, c) for c in classes] + [("overall", "Overall")]:
        values = [eer_value(methods[m]["eer"], key) for m in names]
        shown = [percent(v) if v is not None else "–" for v in values]
        finite = [float(s) for s, v in zip(shown, values) if v is not None]
        best = min(finite) if finite else None
        cells = [
            f"**{s}**" if v is not None and best is not None and float(s) == best else s
            for s, v in zip(shown, values)
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    legend = []
    for m in names:
        description = METHODS[m].description if m in METHODS else None
        short = method_short_name(m)
        if short != m:
            legend.append(f"{short}: {m} ({description})" if description else f"{short}: {m}")
        elif description:
            legend.append(f"{m}: {description}")
    if legend:
        lines += ["", "; ".join(legend)]
    return "\n".join(lines) + "\n"


def event_table_markdown(results: Mapping[str, Any]) -> str:
    """Event-based F-score and error rate of a frame-level run's methods (DCASE 2017 Task 2: onset within the
    collar, the post-processing of each method chosen on validation): a row per class, the class average (Task 2's
    ranking metric) and the overall counts. ``""`` when no method has event results (a clip-level run).

    >>> ev = {"collar_s": 0.5, "class_wise": {"dog": {"f_score": 0.9, "error_rate": 0.2}},
    ...       "class_average": {"f_score": 0.9, "error_rate": 0.2}, "overall": {"f_score": 0.9, "error_rate": 0.2}}
    >>> print(event_table_markdown({"classes": ["dog"], "methods": {"proposed2": {"eer": {}, "events": ev}}}))
    Event-based F-score (%) / error rate on the test clips (DCASE 2017 Task 2: onset within 0.5 s), thresholds and median filter chosen per class on validation event F.
    <BLANKLINE>
    | Class | P2 |
    | :-- | --: |
    | dog | 90.0 / 0.20 |
    | Class average | 90.0 / 0.20 |
    | Overall | 90.0 / 0.20 |
    <BLANKLINE>
    """
    classes, methods = results_classes_and_methods(results)
    names = [m for m in methods if isinstance(methods[m].get("events"), Mapping)]
    if not names:
        return ""
    collar = methods[names[0]]["events"].get("collar_s", 0.5)

    def cell(entry: Any) -> str:
        if not isinstance(entry, Mapping) or entry.get("f_score") is None or entry.get("error_rate") is None:
            return "–"
        return f"{100 * entry['f_score']:.1f} / {entry['error_rate']:.2f}"

    lines = [
        f"Event-based F-score (%) / error rate on the test clips (DCASE 2017 Task 2: onset within {collar:g} s), "
        "thresholds and median filter chosen per class on validation event F.",
        "",
        "| Class | " + " | ".join(method_short_name(m) for m in names) + " |",
        "| :-- | " + " | ".join("--:" for _ in names) + " |",
    ]
    rows = [(c, lambda ev, c=c: ev["class_wise"].get(c)) for c in classes]
    rows += [("Class average", lambda ev: ev.get("class_average")), ("Overall", lambda ev: ev.get("overall"))]
    for label, pick in rows:
        lines.append(f"| {label} | " + " | ".join(cell(pick(methods[m]["events"])) for m in names) + " |")
    if all(isinstance(methods[m].get("events_class_sets"), Mapping) for m in names):
        for label, pick in rows:
            sets = " | ".join(cell(pick(methods[m]["events_class_sets"])) for m in names)
            lines.append(f"| {label}, own clips | {sets} |")
        lines += ["", "Own clips: each class scored on its own clips (its event clips and the clips without events), "
                  "as DCASE 2017 Task 2 scores each class on its own mixtures."]  # fmt: skip
    return "\n".join(lines) + "\n"


def counts_table_markdown(results: Mapping[str, Any]) -> str:
    """Clips per class (rows, events then background and any other label) and split (columns), with totals.

    Args:
        results: the results.json dictionary; needs ``results["data"]["counts"] = {split: {class: int}}``.

    Returns:
        The Markdown table; ends with a newline.

    Raises:
        ValueError: ``data.counts`` is missing or not a dict of dicts.

    >>> results = {"classes": ["dog"], "data": {"counts": {"train": {"dog": 2, "background": 5},
    ...                                                    "test": {"dog": 1, "background": 3}}}}
    >>> print(counts_table_markdown(results))
    | Class | train | test | total |
    | :-- | --: | --: | --: |
    | dog | 2 | 1 | 3 |
    | background | 5 | 3 | 8 |
    | Total | 7 | 4 | 11 |
    <BLANKLINE>
    """
    data = results.get("data") if isinstance(results, Mapping) else None
    counts = data.get("counts") if isinstance(data, Mapping) else None
    if not isinstance(counts, Mapping) or not counts or not all(isinstance(v, Mapping) for v in counts.values()):
        raise ValueError(
            "results['data']['counts']: expected a dict {split: {class: number of clips}}, "
            f"got {counts!r:.120}"
        )
    splits = list(counts)
    rows: list[str] = [c for c in results.get("classes", []) if isinstance(c, str)]
    for per_split in counts.values():
        rows += [label for label in per_split if label not in rows]

    def number(value: Any) -> int:
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0

    lines = [
        "| Class | " + " | ".join(splits) + " | total |",
        "| :-- | " + " | ".join("--:" for _ in splits) + " | --: |",
    ]
    for label in rows:
        cells = [number(counts[s].get(label, 0)) for s in splits]
        lines.append(f"| {label} | " + " | ".join(str(c) for c in cells) + f" | {sum(cells)} |")
    totals = [sum(number(counts[s].get(label, 0)) for label in rows) for s in splits]
    lines.append("| Total | " + " | ".join(str(t) for t in totals) + f" | {sum(totals)} |")
    return "\n".join(lines) + "\n"


def provenance_line(provenance: Any) -> str | None:
    """One Markdown bullet: thce's and torch's versions, the git commit and the machine of a run (the
    ``provenance`` entry of results.json, :func:`thce.machine.run_provenance`); None when absent."""
    if not isinstance(provenance, Mapping):
        return None
    machine = provenance.get("machine") if isinstance(provenance.get("machine"), Mapping) else {}
    commit = provenance.get("git_commit")
    parts = [f"thce {provenance.get('thce', '?')}" + (f" (git {commit})" if commit else " (not a git checkout)"),
             f"torch {provenance.get('torch', '?')}"]  # fmt: skip
    if machine:
        cores = machine.get("usable_cores") or machine.get("cores")
        parts.append(
            f"on {machine.get('cpu', '?')}, {cores} cores" + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")
            + (f", {machine['memory_gb']} GB" if machine.get("memory_gb") else "")
            + (f", Python {machine['python']}" if machine.get("python") else "")
            + (f", {machine['platform']}" if machine.get("platform") else "")
        )  # fmt: skip
    return "- **software and machine**: " + ", ".join(parts)


def _extra_line(key: str, value: Any, limit: int = 300) -> str:
    """One Markdown bullet for an extra top-level key of results.json."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = str(value)
    else:
        text = json.dumps(value, sort_keys=False, default=str, separators=(", ", ": "))
        if len(text) > limit:
            text = text[: limit - 1] + "…"
        text = f"`{text}`"
    return f"- **{key}**: {text}"


def seeds_table_markdown(results: Mapping[str, Any]) -> str:
    """Mean +- standard deviation of each EER over seeds, and the bootstrap interval of each method's overall EER
    difference to the baseline (``results["seeds"]``, written by ``thce.experiment.run_seeds``)."""
    classes, methods = results_classes_and_methods(results)
    repeats = results["seeds"]
    header = "| Class | " + " | ".join(method_short_name(m) for m in methods) + " |"
    lines = [
        f"EER (%) over {len(repeats['seeds'])} seeds ({', '.join(map(str, repeats['seeds']))}): mean ± std.",
        "",
        header,
        "| :-- |" + " --: |" * len(methods),
    ]
    for name in [*classes, "overall"]:
        cells = []
        for method in methods:
            stats = repeats["eer"].get(method, {}).get(name)
            cells.append(f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}" if stats else "–")
        lines.append(f"| {'Overall' if name == 'overall' else name} | " + " | ".join(cells) + " |")
    bootstrap, over_runs = repeats.get("bootstrap", {}), repeats.get("bootstrap_seeds", {})
    if bootstrap:
        lines += [
            "",
            "Overall EER difference to the baseline (percentage points) with bootstrap intervals: over the test clips "
            "(the trained models held fixed), and over the seeds and test clips (the training runs resampled too, "
            "so it also holds how much other runs would move the difference; coarse with few seeds):",
            "",
            *_interval_table(bootstrap, over_runs),
        ]
    events = repeats.get("events")
    if isinstance(events, Mapping):
        lines += ["", *seeds_events_markdown(classes, methods, events, len(repeats["seeds"]))]
    learning = embedding_learning_line(repeats.get("embedding_learning", []))
    if learning:
        lines += ["", learning]
    return "\n".join(lines) + "\n"


def seeds_events_markdown(
    classes: Sequence[str], methods: Sequence[str], events: Mapping[str, Any], n_seeds: int
) -> list[str]:
    """A frame-level run over seeds: event-based F and ER (mean ± std) and the intervals of each method's
    class-average F minus the baseline's (``results["seeds"]["events"]``, written by ``thce.experiment``)."""
    figures = events["figures"]
    rows = [("f_class_average", "F class average (%)", 100, ".1f"), ("er_class_average", "ER class average", 1, ".2f"),
            ("f_overall", "F overall (%)", 100, ".1f"), ("er_overall", "ER overall", 1, ".2f"),
            *[(f"f_{c}", f"F {c} (%)", 100, ".1f") for c in classes]]  # fmt: skip
    rows += [(f"{key}_sets", label.replace(" (%)", "") + ", own clips" + (" (%)" if "(%)" in label else ""), scale,
              form) for key, label, scale, form in rows]  # fmt: skip
    lines = [
        f"Event-based figures on the test clips over {n_seeds} seeds (DCASE 2017 Task 2, onset collar 0.5 s): "
        "mean ± std. Over all test clips, then \"own clips\": each class scored on its own clips (its event clips "
        "and the clips without events), as Task 2 scores each class on its own mixtures.",
        "",
        "| Figure | " + " | ".join(method_short_name(m) for m in methods) + " |",
        "| :-- |" + " --: |" * len(methods),
    ]
    for key, label, scale, form in rows:
        if not any(key in figures.get(method, {}) for method in methods):
            continue  # a summary written before thce computed the figure
        cells = []
        for method in methods:
            value = figures.get(method, {}).get(key)
            ok = value is not None and value["mean"] == value["mean"]
            cells.append(f"{scale * value['mean']:{form}} ± {scale * value['std']:{form}}" if ok else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for suffix, which in (("", "all test clips"), ("_sets", "each class on its own clips")):
        clips, both = events.get(f"bootstrap_f{suffix}", {}), events.get(f"bootstrap_f{suffix}_seeds", {})
        if clips:
            lines += [
                "",
                f"Class-average event F minus the baseline's ({which}; percentage points), bootstrap intervals over "
                "the test clips and over the seeds and test clips:",
                "",
                *_interval_table(clips, both),
            ]
    return lines


def _interval_table(over_clips: Mapping[str, Any], over_seeds: Mapping[str, Any]) -> list[str]:
    """A row per method: its difference to the baseline (percentage points), its interval over the test clips and,
    where computed, over the seeds and test clips (:mod:`thce.stats`)."""
    lines = ["| Method | difference | over test clips | over seeds and test clips |", "| :-- | --: | --: | --: |"]
    for method, ci in over_clips.items():
        both = over_seeds.get(method)
        lines.append(
            f"| {method_short_name(method)} | {100 * ci['difference']:+.1f} | {_interval_cell(ci)} | "
            f"{_interval_cell(both) if both else '–'} |"
        )
    return lines


def _interval_cell(ci: Mapping[str, Any]) -> str:
    """``[-3.4, +0.5] (95 %)`` from a :func:`thce.stats.bootstrap_eer_difference` dict (fractions -> points)."""
    return f"[{100 * ci['low']:+.1f}, {100 * ci['high']:+.1f}] ({100 * ci['confidence']:g} %)"


def embedding_learning_line(per_seed: Sequence[Mapping[str, Any] | None]) -> str:
    """One sentence on whether Algorithm 1's embedding learned, over seeds (``embedding_learning`` records of
    :func:`thce.training.diagnostics.embedding_learning`): the range over seeds of the validation clips' balanced
    class-centroid and 1-NN accuracies at the first clustering and after the last iteration; ``""`` without records.

    >>> embedding_learning_line([{"class_centroid_accuracy": {"start": 0.37, "end": 0.5}, "chance": 0.25},
    ...                          {"class_centroid_accuracy": {"start": 0.5, "end": 0.57}, "chance": 0.25}])
    'Embedding (validation clips, eval mode; range over 2 seeds; chance 0.25): class-centroid accuracy 0.37-0.50 at the first clustering -> 0.50-0.57 after Algorithm 1.'
    """
    records = [r for r in per_seed if r]
    if not records:
        return ""

    def span(name: str, when: str) -> str:
        return learning_span(records, name, when)

    labels = {"class_centroid_accuracy": "class-centroid accuracy", "one_nn_accuracy": "1-NN accuracy"}
    parts = [
        f"{label} {span(name, 'start')} at the first clustering -> {span(name, 'end')} after Algorithm 1"
        for name, label in labels.items()
        if any(isinstance(r.get(name), Mapping) for r in records)
    ]
    chance = records[0].get("chance")
    where = f"range over {len(records)} seeds" + (f"; chance {chance:.2f}" if chance else "")
    return f"Embedding (validation clips, eval mode; {where}): " + "; ".join(parts) + "."


def learning_span(per_seed: Sequence[Mapping[str, Any] | None], name: str, when: str) -> str:
    """The range over seeds of one ``embedding_learning`` measure at ``when`` (``"start"``/``"end"``):
    ``"0.37-0.50"``, one value when all seeds agree, ``"-"`` when no seed has it.

    >>> learning_span([{"one_nn_accuracy": {"start": 0.4}}, None, {"one_nn_accuracy": {"start": 0.3}}], "one_nn_accuracy", "start")
    '0.30-0.40'
    """
    values = [
        r[name][when] for r in per_seed if r and isinstance(r.get(name), Mapping) and r[name].get(when) is not None
    ]
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:.2f}" if low == high else f"{low:.2f}-{high:.2f}"


def embedding_table_markdown(diagnostics: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown lines: per Algorithm 1 iteration, class separation of the validation embeddings before -> after
    training (balanced class-centroid and 1-NN accuracies, within/between-class cosine) and the same-clip cosine."""

    def pair(d: Mapping[str, Any], key: str) -> str:
        values = []
        for when in ("at_clustering", "after_training"):
            value = d.get(when, {}).get(key) if isinstance(d.get(when), Mapping) else None
            values.append("-" if value is None else f"{float(value):.2f}")
        return " -> ".join(values)

    if not any(isinstance(d.get("at_clustering"), Mapping) for d in diagnostics):
        return []
    lines = [
        "| iteration | class-centroid acc. | 1-NN acc. | cos within class | cos between classes | same-clip cos (train) |",
        "| --: | --: | --: | --: | --: | --: |",
    ]
    for d in diagnostics:
        keys = ("class_centroid_accuracy", "one_nn_accuracy", "mean_cos_within_class", "mean_cos_between_classes",
                "same_clip_cosine")  # fmt: skip
        lines.append(f"| {d.get('iteration')} | " + " | ".join(pair(d, k) for k in keys) + " |")
    return lines + [""]


def untuned_notes(results: Mapping[str, Any]) -> list[str]:
    """Markdown lines saying which end-to-end tunings kept their starting model (``selected_epochs`` 0).

    Algorithm 1 ends with "select the model with the least validation loss": when no epoch of end-to-end tuning
    beats the head-only model on validation, Proposed2 *is* Proposed1 (and LMLE's tuned detector its head-only one).
    """
    selected = results.get("selected_epochs")
    lines, explained = [], set()
    if isinstance(selected, Mapping):
        starts = {m.name: "Proposed1's" for m in METHODS.values() if m.requires == "proposed1"}
        for method, starting in {**starts, "lmle": "its head-only"}.items():
            if selected.get(f"{method}/end-to-end") == 0:
                explained.add(f"{method}/end-to-end")
                lines.append(
                    f"- **Warning:** {method_short_name(method)}: no epoch of end-to-end tuning improved the "
                    f"validation criterion, so it kept {starting} model (Algorithm 1 selects the best validation model)."
                )
    warnings = results.get("warnings")
    if isinstance(warnings, list):  # model selection that could not beat a stage's starting state
        lines += [
            f"- **Warning:** {w['message']}"
            for w in warnings
            if isinstance(w, Mapping) and "message" in w and w.get("stage") not in explained
        ]
    return lines + [""] if lines else []


def selection_table_markdown(selection: Mapping[str, Any]) -> list[str]:
    """Markdown lines of results.json's ``selection``: per early-stopped stage, the criterion, the kept epoch of
    those run, the kept model's validation loss / mean EER / mean AUC, and the best validation AUC over the epochs
    (a stage kept on the loss whose AUC peaked elsewhere shows it here)."""

    def value(entry: Any, name: str, scale: float = 1.0, digits: int = 3) -> str:
        number = entry.get(name) if isinstance(entry, Mapping) else None
        return "–" if number is None else f"{scale * number:.{digits}f}"

    lines = [
        "| Stage | Selected on | Kept epoch (of) | Val loss | Val EER % | Val AUC | Best val AUC (epoch) |",
        "| :-- | :-- | --: | --: | --: | --: | --: |",
    ]
    for stage, entry in selection.items():
        if not isinstance(entry, Mapping):
            continue
        kept = entry.get("kept")
        best_auc = entry.get("best", {}).get("val_auc") if isinstance(entry.get("best"), Mapping) else None
        best = f"{best_auc['value']:.3f} ({best_auc['epoch']})" if isinstance(best_auc, Mapping) else "–"
        lines.append(
            f"| {stage} | {entry.get('criterion', '')} | {entry.get('kept_epoch')} ({entry.get('epochs_run')}) | "
            f"{value(kept, 'val_loss')} | {value(kept, 'val_eer', 100.0, 1)} | {value(kept, 'val_auc')} | {best} |"
        )
    return lines


def write_report(run_dir: str | os.PathLike, results: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``report.md`` and ``det.png`` into a run directory, each atomically.

    ``report.md`` holds a title, the EER table (:func:`eer_table_markdown`), the data table
    (:func:`counts_table_markdown`, when ``data.counts`` is present), a line per extra top-level key of the results
    (encoder, config, timing, ...) and a link to ``det.png`` (:func:`plot_det`).

    Args:
        run_dir: the run directory (created if missing).
        results: the results.json dictionary.

    Returns:
        ``{"report": <run_dir>/report.md, "det": <run_dir>/det.png}``.
    """
    classes, methods = results_classes_and_methods(results)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    det_path = plot_det(results, run_dir / DET_FIGURE)
    parts = [
        f"# thce report: {run_dir.name}",
        "",
        f"Classes: {', '.join(classes)}. Methods: {', '.join(methods)}.",
        "",
        "## Equal error rate",
        "",
        eer_table_markdown(results),
    ]
    events = event_table_markdown(results)
    if events:  # a frame-level run: its EERs are over frames, its events come first
        parts[-1:] = ["Over every output frame of the test clips (a frame-level run).", "", parts[-1]]
        parts[-5:-5] = ["## Events", "", events]
    parts += untuned_notes(results)
    if isinstance(results.get("seeds"), Mapping):
        parts += ["## Repeats over seeds", "", seeds_table_markdown(results)]
    selection = results.get("selection")
    if isinstance(selection, Mapping) and selection:
        parts += [
            "## Model selection",
            "",
            "Early-stopped stages: the criterion, the kept epoch (0: the stage's starting state) of the epochs run, "
            "the kept model's validation figures (mean over classes), and the best validation AUC of any epoch.",
            "",
            *selection_table_markdown(selection),
            "",
        ]
    data = results.get("data")
    if isinstance(data, Mapping) and data.get("counts"):
        parts += ["## Data (clips per class and split)", "", counts_table_markdown(results)]
    extras = [key for key in results if key not in _RESERVED_KEYS]
    if isinstance(data, Mapping):
        extras_data = {k: v for k, v in data.items() if k != "counts"}
    else:
        extras_data = {}
    provenance = provenance_line(results.get("provenance"))
    if extras or extras_data or provenance:
        parts += ["## Run", ""]
        parts += [provenance] if provenance else []
        parts += [_extra_line(key, results[key]) for key in extras]
        parts += [_extra_line(f"data.{key}", value) for key, value in extras_data.items()]
        parts.append("")
    diagnostics = results.get("embedding_diagnostics")
    if isinstance(diagnostics, Sequence) and diagnostics and not isinstance(diagnostics, str):
        embedding_path = plot_embedding_diagnostics(diagnostics, run_dir / EMBEDDING_FIGURE)
        parts += [
            "## Embedding (Algorithm 1, per iteration)",
            "",
            "Cosines of Eq. 3's three terms and the fraction of samples for which its ordering holds; how well the "
            "validation clips' eval-mode embeddings separate the classes (balanced accuracies, chance = 1 / classes) "
            "and the train-mode cosine of one clip under two dropout masks, at each clustering and after training.",
            "",
            *embedding_table_markdown(diagnostics),
            f"![Embedding diagnostics]({embedding_path.name})",
            "",
        ]
    seeds = results.get("seeds") if isinstance(results.get("seeds"), Mapping) else {}
    drawn = (
        f"Thin lines: each of the {len(seeds.get('seeds', []))} seeds' curves; thick: the curve of all seeds' test "
        "scores pooled. Legend: the mean of the seeds' EERs (the table's number) and the pooled curve's EER. "
        if seeds.get("det_per_seed") else ""
    )  # fmt: skip
    parts += [
        "## DET curves",
        "",
        f"False alarm rate vs miss rate on normal-deviate axes; the dashed diagonal is FAR = MR. {drawn}"
        "n+ and n- are the positive and negative test clips of each panel; rates of 0 and 100 % are drawn at the "
        "axis ends.",
        "",
        f"![DET curves]({det_path.name})",
        "",
    ]
    report_path = run_dir / REPORT
    with atomic_write(report_path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(parts))
    logger.info("wrote %s", report_path)
    return {"report": report_path, "det": det_path}
