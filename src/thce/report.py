"""Reports of a run: EER and data tables (Markdown), DET curves on normal-deviate axes (PNG), ``report.md``.

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
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.stats import norm

from thce.io import atomic_write
from thce.methods import METHODS, method_short_name

__all__ = [
    "DET_TICKS_PERCENT",
    "eer_table_markdown",
    "counts_table_markdown",
    "plot_det",
    "write_report",
]

logger = logging.getLogger(__name__)

#: Tick positions of the DET axes, in percent; rates of exactly 0 and 100 % are drawn beyond them, at ticks
#: labelled "0" and "100" (:data:`_RATE_EDGE`).
DET_TICKS_PERCENT: tuple[float, ...] = (0.1, 0.5, 1, 2, 5, 10, 20, 40, 60, 80, 95, 99, 99.9)

_RATE_CLIP = 1e-4  # other rates are clipped to [_RATE_CLIP, 1 - _RATE_CLIP] before the probit (0.01 %)
_RATE_EDGE = 1e-5  # where 0 and 100 % are drawn: beyond every clipped rate, so never mistaken for 0.1 / 99.9 %
_RESERVED_KEYS = ("classes", "methods", "data", "seeds", "embedding_diagnostics", "provenance")


def results_classes_and_methods(results: Any) -> tuple[list[str], dict[str, Any]]:
    """Return ``(classes, methods)`` of a results dictionary, or raise a ValueError saying what is wrong."""
    if not isinstance(results, Mapping):
        raise ValueError(f"results: expected a dict shaped like results.json, got {type(results).__name__}")
    classes = results.get("classes")
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"results['classes']: expected a non-empty list of class names, got {classes!r}")
    methods = results.get("methods")
    if not isinstance(methods, Mapping) or not methods:
        raise ValueError(
            "results['methods']: expected a non-empty dict {method: {'eer': {...}, 'det': {...}}}, "
            f"got {type(methods).__name__ if methods is not None else 'nothing'}"
        )
    for name, entry in methods.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("eer"), Mapping):
            raise ValueError(
                f"results['methods'][{name!r}]: expected a dict with an 'eer' dict {{class: fraction, ..., "
                f"'overall': fraction}}, got {entry!r:.120}"
            )
    return list(classes), dict(methods)


def _eer_value(eer: Mapping[str, Any], key: str) -> float | None:
    """The EER fraction under ``key``, or None if missing or not a finite number."""
    value = eer.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _percent(value: float) -> str:
    """A fraction as percent with one decimal: 0.0867 -> '8.7'."""
    return f"{100.0 * value:.1f}"


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
        values = [_eer_value(methods[m]["eer"], key) for m in names]
        shown = [_percent(v) if v is not None else "–" for v in values]
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


def _probit(rates: Any) -> np.ndarray:
    """Normal deviate of rates (fractions): 0 and 1 at the axis ends (:data:`_RATE_EDGE`), others clipped to
    ``[1e-4, 1 - 1e-4]``."""
    r = np.asarray(rates, dtype=np.float64)
    out = norm.ppf(np.clip(r, _RATE_CLIP, 1.0 - _RATE_CLIP))
    return np.where(r <= 0.0, norm.ppf(_RATE_EDGE), np.where(r >= 1.0, norm.ppf(1.0 - _RATE_EDGE), out))


def _panel_counts(results: Mapping[str, Any], name: str) -> tuple[int, int] | None:
    """(positive, negative) test clips a class's DET curves rest on: the pooled test sets of a ``--seeds`` summary
    (``seeds.test_counts``), else ``data.counts.test``; None when the results do not say."""
    seeds = results.get("seeds")
    pooled = seeds.get("test_counts") if isinstance(seeds, Mapping) else None
    if isinstance(pooled, Mapping) and name in pooled.get("positives", {}):
        return int(pooled["positives"][name]), int(pooled["negatives"][name])
    data = results.get("data")
    counts = data.get("counts") if isinstance(data, Mapping) else None
    test = counts.get("test") if isinstance(counts, Mapping) else None
    if not isinstance(test, Mapping) or name not in test:
        return None
    values = {k: v for k, v in test.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    positives = int(values.get(name, 0))
    return positives, int(sum(values.values())) - positives


def seeds_det_summary(runs: Sequence[Mapping[str, Any]], test_sets: Sequence[Any]) -> dict[str, Any]:
    """What the DET figure of a ``--seeds`` summary draws: every seed's curve (``det_per_seed``, from its results)
    and the curve of all seeds' test scores pooled (``det_pooled``, with its EER ``eer_pooled``), per method, and
    the pooled clip counts per class (``test_counts``: positives, negatives).

    Args:
        runs: each seed's results.json dictionary.
        test_sets: each seed's :class:`thce.stats.ScoredTestSet` (its saved ``scores.npz``).
    """
    from thce.metrics import per_class_det_points, per_class_eer

    classes = list(test_sets[0].classes)
    index = np.concatenate([np.asarray(ts.class_index) for ts in test_sets])
    methods = [m for m in runs[0]["methods"] if all(m in ts.scores for ts in test_sets)]
    pooled = {m: np.concatenate([np.asarray(ts.scores[m]) for ts in test_sets]) for m in methods}
    return {
        "det_per_seed": {m: [run["methods"][m]["det"] for run in runs] for m in methods},
        "det_pooled": {m: per_class_det_points(scores=pooled[m], class_index=index, classes=classes) for m in methods},
        "eer_pooled": {m: per_class_eer(scores=pooled[m], class_index=index, classes=classes) for m in methods},
        "test_counts": {
            "positives": {c: int((index == k).sum()) for k, c in enumerate(classes)},
            "negatives": {c: int((index != k).sum()) for k, c in enumerate(classes)},
        },
    }


def _tick_label(percent: float) -> str:
    return f"{percent:g}"


def plot_det(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """DET curves on normal-deviate axes: a panel per class, every method overlaid, saved as PNG atomically.

    Rates are mapped through the standard normal quantile function, ticks labelled in percent (0.1 ... 99.9 %);
    rates of exactly 0 and 100 % are drawn at the axis ends, labelled "0" and "100", other rates clipped to
    [0.01, 99.99] %. Each legend entry gives the method's EER for that class; the dashed diagonal is FAR = MR, where
    the EER is read. Each panel says how many positive and negative test clips its curves rest on. Methods without
    a DET entry for a class are left out of its panel.

    A ``--seeds`` summary (``results["seeds"]`` with ``det_per_seed``, see :func:`seeds_det_summary`) draws every
    seed's curve thin and the curve of all seeds' scores pooled thick; the legend gives the mean of the seeds' EERs
    (the table's number) and the pooled curve's EER.

    Args:
        results: the results.json dictionary (``methods.<m>.det.<class> = {"far": [...], "mr": [...]}``).
        path: where to write the PNG.

    Returns:
        ``path`` as a Path.
    """
    classes, methods = results_classes_and_methods(results)
    path = Path(path)
    fig = det_figure(results)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120, bbox_inches="tight", pad_inches=0.15)
    logger.info("wrote DET curves of %d method(s) x %d class(es) to %s", len(methods), len(classes), path)
    return path


def det_figure(results: Mapping[str, Any]) -> Figure:
    """The figure :func:`plot_det` saves."""
    classes, methods = results_classes_and_methods(results)
    n = len(classes)
    ncols = n if n <= 4 else 3
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.4 * ncols, 4.6 * nrows), layout="compressed")  # compressed: fixed-aspect panels
    FigureCanvasAgg(fig)
    lo, hi = _probit(0.0)[()], _probit(1.0)[()]
    margin = 0.04 * (hi - lo)
    ticks = [lo, *_probit(np.array(DET_TICKS_PERCENT) / 100.0), hi]
    labels = ["0", *(_tick_label(p) for p in DET_TICKS_PERCENT), "100"]
    seeds = results.get("seeds") if isinstance(results.get("seeds"), Mapping) else {}
    per_seed, pooled_eer = seeds.get("det_per_seed") or {}, seeds.get("eer_pooled") or {}
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    for index, name in enumerate(classes):
        ax = fig.add_subplot(nrows, ncols, index + 1)
        ax.plot([lo, hi], [lo, hi], linestyle="--", color="0.6", linewidth=0.8)
        for method, entry in methods.items():
            for det in per_seed.get(method, []):  # each seed thin, under the pooled curve
                curve = det.get(name) if isinstance(det, Mapping) else None
                if isinstance(curve, Mapping) and curve.get("far"):
                    far, mr = _det_arrays(curve, method, name)
                    ax.plot(_probit(far), _probit(mr), color=colours[method], linewidth=0.7, alpha=0.35)
            det = entry.get("det")
            curve = det.get(name) if isinstance(det, Mapping) else None
            if not isinstance(curve, Mapping) or not curve.get("far"):
                continue
            far, mr = _det_arrays(curve, method, name)
            eer = _eer_value(entry["eer"], name)
            if method in per_seed:
                pooled = _eer_value(pooled_eer.get(method, {}), name)
                label = method_short_name(method) + (f" (mean EER {_percent(eer)}%" if eer is not None else " (")
                label += f", pooled {_percent(pooled)}%)" if pooled is not None else ")"
            else:
                label = method_short_name(method) + (f" (EER {_percent(eer)}%)" if eer is not None else "")
            style = {"marker": "o", "markersize": 3} if far.size == 1 else {}
            ax.plot(_probit(far), _probit(mr), label=label, linewidth=1.6, color=colours[method], **style)
        ax.set_xlim(lo - margin, hi + margin)
        ax.set_ylim(lo - margin, hi + margin)
        ax.set_xticks(ticks, labels, rotation=90, fontsize="small")
        ax.set_yticks(ticks, labels, fontsize="small")
        ax.set_aspect("equal")
        ax.grid(True, color="0.9", linewidth=0.6)
        counts = _panel_counts(results, name)
        pooled_note = f", {len(seeds.get('seeds', []))} seeds pooled" if per_seed else ""
        ax.set_title(name if counts is None else f"{name}  (n+ = {counts[0]}, n- = {counts[1]}{pooled_note})")
        ax.set_xlabel("False alarm rate (%)")
        ax.set_ylabel("Miss rate (%)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize="small")
    return fig


def _det_arrays(curve: Mapping[str, Any], method: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(far, mr)`` of a DET entry; ValueError naming it when their lengths differ."""
    far, mr = np.asarray(curve["far"], dtype=float), np.asarray(curve.get("mr", []), dtype=float)
    if far.shape != mr.shape:
        raise ValueError(
            f"results['methods'][{method!r}]['det'][{name!r}]: expected 'far' and 'mr' of equal length, "
            f"got {far.size} and {mr.size}"
        )
    return far, mr


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
    bootstrap = repeats.get("bootstrap", {})
    if bootstrap:
        lines += ["", "Overall EER difference to the baseline (percentage points), bootstrap over test clips:", ""]
        lines += ["| Method | difference | interval |", "| :-- | --: | --: |"]
        for method, ci in bootstrap.items():
            lines.append(
                f"| {method_short_name(method)} | {100 * ci['difference']:+.1f} | "
                f"[{100 * ci['low']:+.1f}, {100 * ci['high']:+.1f}] ({100 * ci['confidence']:g} %) |"
            )
    return "\n".join(lines) + "\n"


def plot_embedding_diagnostics(diagnostics: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Algorithm 1's embedding per iteration: the three cosines of Eq. 3 at clustering (own centroid, nearest
    same-class, nearest other-class centroid) and the fraction of samples for which Eq. 3 holds, at clustering
    (training split) and after the iteration's training (validation split). Saved as PNG atomically."""
    path = Path(path)
    iterations = [int(d["iteration"]) for d in diagnostics]

    def series(getter: Any) -> list[float]:
        values = []
        for d in diagnostics:
            try:
                value = getter(d)
            except (KeyError, TypeError):
                value = None
            values.append(float("nan") if value is None else float(value))
        return values

    fig = Figure(figsize=(13.5, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    left, right, third = fig.add_subplot(1, 3, 1), fig.add_subplot(1, 3, 2), fig.add_subplot(1, 3, 3)
    for key, label in (
        ("mean_cos_own_centroid", "own centroid"),
        ("mean_cos_nearest_same_class", "nearest same-class centroid"),
        ("mean_cos_nearest_other_class", "nearest other-class centroid"),
    ):
        left.plot(iterations, series(lambda d, k=key: d[k]), marker="o", label=label)
    left.set_title("Mean cosine at clustering (train)")
    left.set_xlabel("Algorithm 1 iteration")
    left.legend(fontsize="small")
    right.plot(iterations, series(lambda d: d["eq3_at_clustering"]["eq3"]), marker="o", label="at clustering (train)")
    right.plot(iterations, series(lambda d: d["after_training"]["eq3_val"]), marker="s", label="after training (val)")
    right.set_ylim(0.0, 1.0)
    right.set_title("Fraction of samples satisfying Eq. 3")
    right.set_xlabel("Algorithm 1 iteration")
    right.legend(fontsize="small")
    for key, label, color in (
        ("class_centroid_accuracy", "class-centroid acc. (val, eval)", "C0"),
        ("one_nn_accuracy", "1-NN acc. (val, eval)", "C1"),
        ("same_clip_cosine", "same clip, 2 dropout masks (train)", "C2"),
    ):
        third.plot(iterations, series(lambda d, k=key: d["at_clustering"][k]), marker="o", linestyle="--",
                   color=color, alpha=0.6, label=f"{label}, before")
        third.plot(iterations, series(lambda d, k=key: d["after_training"][k]), marker="s", color=color,
                   label=f"{label}, after")
    third.set_ylim(0.0, 1.0)
    third.set_title("Class separation (balanced; before / after training)")
    third.set_xlabel("Algorithm 1 iteration")
    third.legend(fontsize="x-small")
    for ax in (left, right, third):
        ax.set_xticks(iterations)
        ax.grid(True, color="0.9", linewidth=0.6)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    return path


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
        for method, starting in (("proposed2", "Proposed1's"), ("lmle", "its head-only")):
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
    det_path = plot_det(results, run_dir / "det.png")
    parts = [
        f"# thce report: {run_dir.name}",
        "",
        f"Classes: {', '.join(classes)}. Methods: {', '.join(methods)}.",
        "",
        "## Equal error rate",
        "",
        eer_table_markdown(results),
    ]
    parts += untuned_notes(results)
    if isinstance(results.get("seeds"), Mapping):
        parts += ["## Repeats over seeds", "", seeds_table_markdown(results)]
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
        embedding_path = plot_embedding_diagnostics(diagnostics, run_dir / "embedding.png")
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
    report_path = run_dir / "report.md"
    with atomic_write(report_path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(parts))
    logger.info("wrote %s", report_path)
    return {"report": report_path, "det": det_path}
