"""Figures of a run: DET curves on normal-deviate axes (``det.png``, one panel per class, every method overlaid;
every seed's curve and the pooled one for a ``--seeds`` summary) and Algorithm 1's embedding diagnostics per
iteration (``embedding.png``). Each PNG is written atomically; :mod:`thce.report` links them from ``report.md``.
"""

from __future__ import annotations

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

from thce.io import PNG_METADATA, atomic_write
from thce.methods import method_short_name
from thce.results import eer_value, percent, results_classes_and_methods

__all__ = ["DET_TICKS_PERCENT", "det_figure", "plot_det", "plot_embedding_diagnostics", "seeds_det_summary"]

logger = logging.getLogger(__name__)

#: Labelled ticks of the DET axes, in percent, spaced so that their labels do not touch; rates of exactly 0 and
#: 100 % are drawn beyond them, at ticks labelled "0" and "100" (:data:`_RATE_EDGE`).
DET_TICKS_PERCENT: tuple[float, ...] = (0.1, 1, 5, 20, 50, 80, 95, 99, 99.9)
#: Unlabelled ticks between them (a lighter grid).
DET_MINOR_TICKS_PERCENT: tuple[float, ...] = (0.5, 2, 10, 30, 40, 60, 70, 90, 98, 99.5)
#: How the methods' curves differ besides colour, in the order of the results: (line style, width, marker). Wider
#: lines are drawn first, so two identical curves (P1 == P2) show as a thin line inside a wide one, their markers
#: at different places along it (and concentric where a curve is a single point).
_METHOD_STYLES: tuple[tuple[str, float, str], ...] = (
    ("-", 3.4, "o"), ("--", 2.4, "s"), (":", 1.8, "^"), ("-.", 1.4, "D"), ("-", 1.0, "v"), ("--", 1.0, "P"),
)

_RATE_CLIP = 1e-4  # other rates are clipped to [_RATE_CLIP, 1 - _RATE_CLIP] before the probit (0.01 %)
_RATE_EDGE = 1e-5  # where 0 and 100 % are drawn: beyond every clipped rate, so never mistaken for 0.1 / 99.9 %


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
    [0.01, 99.99] %. Each method has its own colour, line style, width and marker (:data:`_METHOD_STYLES`), so
    that identical curves stay visible. Each panel's legend, under it, gives the method's EER for that class; the
    dashed diagonal is FAR = MR, where the EER is read. Each panel says how many positive and negative test clips its curves rest on. Methods without
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
        fig.savefig(handle, format="png", dpi=120, bbox_inches="tight", pad_inches=0.15,
                    metadata=PNG_METADATA)  # fmt: skip
    logger.info("wrote DET curves of %d method(s) x %d class(es) to %s", len(methods), len(classes), path)
    return path


def det_figure(results: Mapping[str, Any]) -> Figure:
    """The figure :func:`plot_det` saves."""
    classes, methods = results_classes_and_methods(results)
    n = len(classes)
    ncols = n if n <= 4 else 3
    nrows = math.ceil(n / ncols)
    legend_in = 0.35 + 0.21 * len(methods)  # the legends go under the panels, off the curves
    fig = Figure(figsize=(4.4 * ncols, (4.7 + legend_in) * nrows), layout="compressed")  # compressed: fixed aspect
    FigureCanvasAgg(fig)
    lo, hi = _probit(0.0)[()], _probit(1.0)[()]
    margin = 0.04 * (hi - lo)
    ticks = [lo, *_probit(np.array(DET_TICKS_PERCENT) / 100.0), hi]
    labels = ["0", *(_tick_label(p) for p in DET_TICKS_PERCENT), "100"]
    minor = _probit(np.array(DET_MINOR_TICKS_PERCENT) / 100.0)
    seeds = results.get("seeds") if isinstance(results.get("seeds"), Mapping) else {}
    per_seed, pooled_eer = seeds.get("det_per_seed") or {}, seeds.get("eer_pooled") or {}
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    styles = {m: _METHOD_STYLES[i % len(_METHOD_STYLES)] for i, m in enumerate(methods)}
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
            eer = eer_value(entry["eer"], name)
            if method in per_seed:
                pooled = eer_value(pooled_eer.get(method, {}), name)
                label = method_short_name(method) + (f" (mean EER {percent(eer)}%" if eer is not None else " (")
                label += f", pooled {percent(pooled)}%)" if pooled is not None else ")"
            else:
                label = method_short_name(method) + (f" (EER {percent(eer)}%)" if eer is not None else "")
            ax.plot(_probit(far), _probit(mr), label=label, color=colours[method], **_curve_style(styles[method], far.size))
        ax.set_xlim(lo - margin, hi + margin)
        ax.set_ylim(lo - margin, hi + margin)
        ax.set_xticks(ticks, labels, fontsize="small")
        ax.set_yticks(ticks, labels, fontsize="small")
        ax.set_xticks(minor, minor=True)
        ax.set_yticks(minor, minor=True)
        ax.set_aspect("equal")
        ax.grid(True, which="major", color="0.85", linewidth=0.6)
        ax.grid(True, which="minor", color="0.94", linewidth=0.5)
        counts = _panel_counts(results, name)
        pooled_note = f", {len(seeds.get('seeds', []))} seeds pooled" if per_seed else ""
        ax.set_title(name if counts is None else f"{name}  (n+ = {counts[0]}, n- = {counts[1]}{pooled_note})")
        ax.set_xlabel("False alarm rate (%)")
        ax.set_ylabel("Miss rate (%)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize="small", frameon=False,
                      handlelength=3.0)  # fmt: skip
    return fig


def _curve_style(style: tuple[str, float, str], points: int) -> dict[str, Any]:
    """Matplotlib keywords of a method's curve of ``points`` points: its line style and width, hollow markers
    spaced along the line (offset per style, so that identical curves' markers do not cover each other; on every
    point of a curve of a few), larger under thinner lines."""
    linestyle, width, marker = style
    rank = [s[0:2] for s in _METHOD_STYLES].index((linestyle, width))
    return {
        "linestyle": linestyle, "linewidth": width, "zorder": 2 + rank * 0.1, "marker": marker,
        "markersize": max(4.0, 9.0 - 1.5 * rank), "markerfacecolor": "none", "markeredgewidth": 1.4,
        "markevery": (0.04 + 0.05 * rank, 0.22) if points > 6 else None,
    }  # fmt: skip


def _det_arrays(curve: Mapping[str, Any], method: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(far, mr)`` of a DET entry; ValueError naming it when their lengths differ."""
    far, mr = np.asarray(curve["far"], dtype=float), np.asarray(curve.get("mr", []), dtype=float)
    if far.shape != mr.shape:
        raise ValueError(
            f"results['methods'][{method!r}]['det'][{name!r}]: expected 'far' and 'mr' of equal length, "
            f"got {far.size} and {mr.size}"
        )
    return far, mr


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
        fig.savefig(handle, format="png", dpi=110, metadata=PNG_METADATA)
    return path
