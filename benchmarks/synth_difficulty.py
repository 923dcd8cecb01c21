"""How hard are the built-in synthetic scenes? And how fast are they generated?

Difficulty: clip-level summary features (mean and standard deviation over time of a 64-band log-mel, 25 ms / 10 ms,
and the same plus the maximum over time) and a one-vs-rest logistic regression, trained on 70 % and scored on
30 % of the clips, over several random splits.
Per-class EER (positives: that class's clips, negatives: all other clips, background included). The synthetic data is
meant to be learnable but not trivial for such a summary model: per-class EER roughly 5-25 % (a sequence model on the
log-mel frames should do better). The "chance" baseline alongside is 0.5.

Speed: ``generate_scenes`` of ``--speed-clips`` ten-second clips (WAV + manifest) into a temporary folder, in one
process (``seconds``) and with one process per CPU (``speedup_one_process_per_cpu``), in the same run.

Usage::

    .venv/bin/python benchmarks/synth_difficulty.py [--per-class 60] [--splits 5] [--seed 0] [--speed-clips 500]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_curve
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.preprocessing import StandardScaler

from thce.data.synth import EVENT_LABELS, LABELS, SynthConfig, clip_rng, generate_scenes, synthesise_clip


def mel_filterbank(n_mels: int, n_fft: int, sr: int) -> np.ndarray:
    """HTK-mel triangular filters, shape ``(n_mels, n_fft // 2 + 1)``."""
    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    mels = np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(sr / 2)), n_mels + 2)
    edges = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((freqs - lower) / (centre - lower), (upper - freqs) / (upper - centre)))


def log_mel(x: np.ndarray, sr: int, fb: np.ndarray, win_ms: float = 25.0, hop_ms: float = 10.0) -> np.ndarray:
    """Log-mel energies, shape ``(frames, n_mels)``."""
    win, hop = int(sr * win_ms / 1000), int(sr * hop_ms / 1000)
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop] * np.hanning(win)
    power = np.abs(np.fft.rfft(frames, n=(fb.shape[1] - 1) * 2, axis=1)) ** 2
    return np.log(power @ fb.T + 1e-10)


def eer(labels: np.ndarray, scores: np.ndarray) -> float:
    """Equal error rate, interpolated at the crossing of miss and false-alarm rates."""
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    i = int(np.flatnonzero(fnr <= fpr)[0])
    if i == 0:
        return float(fpr[0])
    d0, d1 = fpr[i - 1] - fnr[i - 1], fpr[i] - fnr[i]
    w = d0 / (d0 - d1)
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


FEATURE_SETS = {
    "mean_std": lambda lm: np.concatenate([lm.mean(0), lm.std(0)]),
    "mean_std_max": lambda lm: np.concatenate([lm.mean(0), lm.std(0), lm.max(0)]),
}


def difficulty(per_class: int, n_splits: int, seed: int, ebr_db_range: tuple[float, float]) -> dict:
    """Per-class EER of one-vs-rest logistic regression on clip-level summaries, for each feature set."""
    config = SynthConfig(counts={label: per_class for label in LABELS}, seed=seed, ebr_db_range=ebr_db_range)
    sr = config.sample_rate_hz
    fb = mel_filterbank(64, 512, sr)
    feats: dict[str, list[np.ndarray]] = {name: [] for name in FEATURE_SETS}
    labels = []
    for label in LABELS:
        for index in range(per_class):
            clip = synthesise_clip(label, clip_rng(seed, label, index), config)
            lm = log_mel(clip.mixture, sr, fb)
            for name, summarise in FEATURE_SETS.items():
                feats[name].append(summarise(lm))
            labels.append(label)
    y = np.asarray(labels)
    splits = list(StratifiedShuffleSplit(n_splits=n_splits, test_size=0.3, random_state=seed).split(y, y))
    results = {}
    for name, rows in feats.items():
        x = np.asarray(rows)
        per_split: dict[str, list[float]] = {label: [] for label in EVENT_LABELS}
        for train, test in splits:
            scaler = StandardScaler().fit(x[train])
            xtr, xte = scaler.transform(x[train]), scaler.transform(x[test])
            for label in EVENT_LABELS:
                model = LogisticRegression(C=0.1, max_iter=5000).fit(xtr, y[train] == label)
                per_split[label].append(eer(y[test] == label, model.decision_function(xte)))
        results[name] = {
            "eer_mean": {label: round(float(np.mean(v)), 4) for label, v in per_split.items()},
            "eer_std_over_splits": {label: round(float(np.std(v)), 4) for label, v in per_split.items()},
            "eer_overall": round(float(np.mean([np.mean(v) for v in per_split.values()])), 4),
        }
    return {
        "features": "summaries over time of a 64-band log-mel (25 ms / 10 ms): mean_std (128-d), mean_std_max (192-d)",
        "model": "one-vs-rest logistic regression (C=0.1) on standardised features; EER: class vs all other clips",
        "clips_per_class": per_class,
        "splits": n_splits,
        "test_fraction": 0.3,
        "ebr_db_range": list(ebr_db_range),
        "eer_chance": 0.5,
        **results,
    }


def speed(n_clips: int, seed: int) -> dict:
    """Generation in one process (the baseline) and with one process per CPU (``workers=0``), in the same run."""
    ratio = {"dog": 2, "baby": 2, "gun": 1, "background": 26}
    unit = max(1, n_clips // sum(ratio.values()))
    config = SynthConfig.from_ratio(ratio, unit, seed=seed)
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 0):
            start = time.perf_counter()
            generate_scenes(config, Path(tmp) / str(workers), workers=workers)
            seconds[workers] = time.perf_counter() - start
        start = time.perf_counter()
        generate_scenes(config, Path(tmp) / "0")  # everything exists: the resumable path
        resumed = time.perf_counter() - start
    first = seconds[1]
    return {
        "clips": config.total,
        "duration_s": config.duration_s,
        "seconds": round(first, 2),
        "ms_per_clip": round(1000 * first / config.total, 2),
        "x_realtime": round(config.total * config.duration_s / first, 1),
        "seconds_one_process_per_cpu": round(seconds[0], 2),
        "speedup_one_process_per_cpu": round(first / seconds[0], 2),
        "resume_seconds_all_present": round(resumed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ebr-db", type=float, nargs=2, default=(-6.0, 6.0))
    parser.add_argument("--speed-clips", type=int, default=500, help="0 skips the speed measurement")
    args = parser.parse_args()
    result = {"difficulty": difficulty(args.per_class, args.splits, args.seed, tuple(args.ebr_db))}
    if args.speed_clips > 0:
        result["speed"] = speed(args.speed_clips, args.seed)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
