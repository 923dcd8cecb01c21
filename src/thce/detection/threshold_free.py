"""Threshold-independent evaluation of saved scores through sed_scores_eval (the optional ``eval`` extra).

From ``thce detect``'s score tables (:mod:`thce.detection.tables`) and a reference event list:

- **PSDS** (Ebbers et al. 2022's intersection-based PSD-ROC, as in DCASE 2021-2023 task 4) in its two usual
  scenarios: 1 (DTC = GTC = 0.7, alpha_st = 1: localisation matters) and 2 (DTC = GTC = 0.1, cross-trigger
  tolerance 0.3, alpha_ct = 0.5, alpha_st = 1: classification matters); both up to 100 false positives per hour;
- **collar-based best F-score** over all thresholds (onset collar 0.5 s as in DCASE 2017 task 2; offset collar
  max(0.5 s, 20 % of the event) as sed_eval's default), with the threshold that reaches it per class.

sed_scores_eval is imported only here, only when asked (``thce evaluate-events --scores``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from thce.errors import ConfigError, DataError

PSDS_SCENARIOS = {
    "psds1": {"dtc_threshold": 0.7, "gtc_threshold": 0.7, "cttc_threshold": None, "alpha_ct": 0.0, "alpha_st": 1.0},
    "psds2": {"dtc_threshold": 0.1, "gtc_threshold": 0.1, "cttc_threshold": 0.3, "alpha_ct": 0.5, "alpha_st": 1.0},
}


def _require() -> Any:
    try:
        import sed_scores_eval
    except ImportError as error:
        raise ConfigError(
            f"threshold-independent metrics need sed_scores_eval ({error}): pip install 'thce[eval]'"
        ) from None
    return sed_scores_eval


def load_scores(scores: str | os.PathLike) -> tuple[dict[str, Any], dict[str, float], tuple[str, ...]]:
    """``({audio id: score DataFrame}, {audio id: duration_s}, classes)`` from a folder of tables (ids: stems)."""
    sse = _require()
    from sed_scores_eval.base_modules.scores import create_score_dataframe

    from thce.detection.tables import read_table, table_paths

    frames, durations, classes = {}, {}, ()
    for path in table_paths(scores):
        edges, curve, table_classes = read_table(path)
        classes = classes or table_classes
        if table_classes != classes:
            raise DataError(f"{path}: classes {', '.join(table_classes)} differ from {', '.join(classes)}")
        finite = np.where(np.isfinite(curve), curve, np.float32(-1.0))  # silence: below every score
        frames[path.stem] = create_score_dataframe(finite.astype(np.float64), edges, list(classes))
        durations[path.stem] = float(edges[-1])
    del sse
    return frames, durations, classes


def threshold_free(scores: str | os.PathLike, reference: str | os.PathLike) -> dict[str, Any]:
    """PSDS 1 and 2 and the collar-based best F-score of saved ``scores`` against a ``reference`` event list.

    Files of the reference are matched to tables by stem (``rec.wav`` -> ``rec.tsv``); tables without reference
    events are files with none. Classes without any reference event are left out (listed in the result).
    """
    _require()
    from sed_scores_eval import collar_based, intersection_based

    from thce.detection.events import read_event_list

    frames, durations, classes = load_scores(scores)
    listed = read_event_list(reference)
    truth: dict[str, list[tuple[float, float, str]]] = {audio_id: [] for audio_id in frames}
    unknown = set()
    for e in listed.events:
        audio_id = Path(e.file).stem
        if audio_id not in truth:
            unknown.add(audio_id)
            continue
        if e.label in classes:
            truth[audio_id].append((e.onset_s, e.offset_s, e.label))
    if unknown and len(unknown) == len({Path(e.file).stem for e in listed.events}):
        raise DataError(f"{reference}: none of its files has a score table in {scores}")
    present = [c for c in classes if any(label == c for events in truth.values() for _, _, label in events)]
    if not present:
        raise DataError(f"{reference}: no reference events of the classes {', '.join(classes)}")
    if len(present) < len(classes):  # PSDS needs reference events of every class it scores
        frames = {k: v[["onset", "offset", *present]] for k, v in frames.items()}
    out: dict[str, Any] = {"files": len(frames), "classes": present,
                           "classes_without_reference": [c for c in classes if c not in present]}
    for name, scenario in PSDS_SCENARIOS.items():
        result = intersection_based.psds(
            scores=frames, ground_truth=truth, audio_durations=durations, max_efpr=100.0, **scenario
        )
        out[name] = float(result[0])
    f_best, p_best, r_best, thr_best, _ = collar_based.best_fscore(
        scores=frames, ground_truth=truth, onset_collar=0.5, offset_collar=0.5, offset_collar_rate=0.2
    )
    out["collar_best_f"] = {k: float(v) for k, v in f_best.items()}
    out["collar_best_threshold"] = {k: float(v) if np.isfinite(v) else None for k, v in thr_best.items()}
    macro = out["collar_best_f"].get("macro_average", float(np.mean([out["collar_best_f"][c] for c in present])))
    out["summary"] = (
        f"Threshold-independent (sed_scores_eval, {len(frames)} file(s)): PSDS1 {out['psds1']:.3f}, "
        f"PSDS2 {out['psds2']:.3f}, best collar-based F (macro) {100 * macro:.1f} %"
    )
    return out
