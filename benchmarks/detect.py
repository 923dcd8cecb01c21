"""Speed and memory of ``thce detect`` on long recordings (CPU).

Prints JSON:

- ``rtf_<encoder>``: real-time factor (audio seconds per wall second) of the whole detection path (block reading,
  log-mel, normalisation, model, thresholds, events) on a one-hour 16 kHz file at 50 % overlap, for the paper-size
  CNN and LSTM on the paper's 10 s clips (hop 5 s) and the frame-level ``frame_cnn`` (the paper's CNN keeping time,
  its sizes) and ``frame_crnn`` (configs/synth-dcase2017-crnn.toml's) on 30 s windows (hop 15 s, frame scores
  averaged where windows overlap, the checkpoint's post-processing), all untrained (speed does not depend on the
  weights), each run in a fresh process; the best of ``--repeats`` runs (all are listed: on a shared machine
  other processes slow some runs down), with the process's CPU time and the load average alongside;
- ``model_only_rtf_*``: the model alone on the log-mel of the same file's first windows, computed beforehand
  (at most 200; in the batches detection uses, ``model_batch_*``), and ``model_only_rtf_*_random_input`` the same
  on standard-normal input (does the input change the model's speed?);
  ``overhead_ratio_*`` = model-only RTF / whole-path RTF. Detection computes only the frames a window's output
  depends on (``thce.detection.inference.receptive_field``), so for a model that sees the whole window the ratio is
  at most ~1 and for one that sees part of it it can exceed 1;
- ``peak_rss_mb``: peak resident memory of the detecting process on 10 and 60 minutes of audio (goal: flat), and
  of a process that only loads the model (what detection adds is the difference);
- ``machine``: CPU, cores, torch threads, versions.

Usage: ``python benchmarks/detect.py [--minutes 60] [--short-minutes 10] [--encoders cnn frame_cnn ...] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_long_wav(path: Path, minutes: float, sample_rate_hz: int = 16000, seed: int = 0) -> Path:
    """A mono 16-bit WAV of ``minutes`` of quiet noise with a tone burst every 30 s, written in 10 s blocks."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    block = 10 * sample_rate_hz
    total = int(minutes * 60 * sample_rate_hz)
    t = np.arange(block) / sample_rate_hz
    with sf.SoundFile(path, "w", samplerate=sample_rate_hz, channels=1, subtype="PCM_16") as handle:
        for start in range(0, total, block):
            n = min(block, total - start)
            x = 0.02 * rng.standard_normal(n)
            if (start // block) % 3 == 1:
                x[: sample_rate_hz] += 0.3 * np.sin(2 * np.pi * 800.0 * t[:sample_rate_hz])
            handle.write(x.astype(np.float32))
    return path


#: The runs measured: clip-level encoders (the paper's sizes, 10 s windows) and frame-level ones (``frame_cnn``: the
#: paper's CNN keeping time, its sizes; ``frame_crnn``: configs/synth-dcase2017-crnn.toml's CRNN; 30 s windows, a
#: score every 50 ms, the post-processing a frame-level run carries).
ENCODERS = ("cnn", "lstm", "frame_cnn", "frame_crnn")


def make_run(run_dir: Path, encoder: str) -> Path:
    """A run directory with an untrained baseline checkpoint: for ``cnn``/``lstm`` configs/paper-<encoder>.toml's
    model; for ``frame_*`` a frame-level run's (``[frame_model]``, 30 s clips, the frame hop and a per-class
    post-processing in the checkpoint as training writes them)."""
    import torch

    from thce.checkpoint import save_checkpoint
    from thce.config import config_from_dict, load_config
    from thce.data.normaliser import Normaliser
    from thce.methods import build_detector, build_method_encoder

    frames = None
    if encoder == "frame_crnn":
        config = load_config(ROOT / "configs" / "synth-dcase2017-crnn.toml", ['methods=["baseline"]'])
    elif encoder == "frame_cnn":
        config = config_from_dict({"methods": ["baseline"], "data": {"strong_labels": True},
                                   "features": {"duration_s": 30.0}, "frame_model": {"encoder": "cnn"}})  # fmt: skip
    else:
        config = config_from_dict({"methods": ["baseline"], "model": {"encoder": encoder}})  # paper sizes by default
    classes = tuple(config.data.classes)
    if encoder.startswith("frame_"):
        hop_s = config.frame_model.stride * config.features.hop_ms / 1000.0
        frames = {"hop_s": hop_s, "post_processing": {
            "thresholds": {c: 0.5 for c in classes}, "median_filter_s": {c: 0.25 for c in classes},
            "min_event_s": {c: 0.1 for c in classes}, "min_gap_s": {c: 0.5 for c in classes}}}  # fmt: skip
    torch.manual_seed(0)
    counts = np.array([40, 40, 20, 520])
    model = build_detector(config, "baseline", build_method_encoder(config, "baseline"),
                           num_events=len(classes), train_class_counts=counts).eval()  # fmt: skip
    rng = np.random.default_rng(0)
    n_val = 64
    save_checkpoint(
        run_dir / "checkpoints" / "baseline.pt",
        model,
        config=config,
        method="baseline",
        classes=classes,
        normaliser=Normaliser(mean=np.full(config.features.n_mels, -8.0), std=np.full(config.features.n_mels, 3.0)),
        val_scores=rng.random((n_val, len(classes))),
        val_class_index=np.arange(n_val) % (len(classes) + 1),
        train_class_counts=counts,
        frames=frames,
    )
    return run_dir


def child(run_dir: str, audio: str, mode: str, *, set_allocator: bool = True) -> None:
    """One measurement in a fresh process; prints JSON. ``set_allocator=False``: leave the process's malloc settings
    as they are (a test calling this in its own process)."""
    import torch

    from thce.allocator import reuse_freed_memory
    from thce.checkpoint import load_run
    from thce.detection.config import DetectConfig
    from thce.detection.detect import detect_files, run_thresholds

    if set_allocator:
        reuse_freed_memory()  # as `thce detect` sets the allocator at start-up
    from thce.detection.inference import ModelScorer

    loaded = load_run(run_dir, "baseline")
    scorer = ModelScorer(loaded)
    out: dict = {"threads": torch.get_num_threads(), "window_s": scorer.window_samples / scorer.sample_rate_hz}
    if mode == "load":
        pass
    elif mode == "model":
        # The model alone on the very windows detection scores (log-mel computed beforehand, outside the timing),
        # like for like; the same timing on standard-normal input of the same shape is reported beside it
        # (``model_only_rtf_*_random_input``) to show whether the input matters.
        import soundfile as sf

        batch = scorer.model_batch  # the batch detection itself uses
        audio, _ = sf.read(audio, dtype="float32", frames=scorer.window_samples * 101)
        hop = scorer.window_samples // 2
        n_windows = min(200, (len(audio) - scorer.window_samples) // hop + 1)
        windows = np.stack([audio[i * hop : i * hop + scorer.window_samples] for i in range(n_windows)])
        with torch.inference_mode():
            feats = scorer.scores.normalise(scorer.logmel(torch.from_numpy(windows)))
            loaded.model(feats[:batch])  # warm up
            rates = {}
            for name, inputs in (("clips_per_s", feats), ("clips_per_s_random_input", torch.randn_like(feats))):
                start = time.perf_counter()
                for first in range(0, len(inputs), batch):
                    torch.sigmoid(loaded.model(inputs[first : first + batch]))
                rates[name] = len(inputs) / (time.perf_counter() - start)
        out.update(rates)
        out["model_batch"] = batch
    else:
        thresholds, post = run_thresholds(loaded, "auto")  # as thce detect: EER, or a frame-level run's choice
        start, cpu = time.perf_counter(), time.process_time()
        result = detect_files([audio], scorer, thresholds, config=DetectConfig(hop_s=out["window_s"] / 2),
                              frame_post=post)  # 50 % overlap, detect's default
        out["wall_s"] = time.perf_counter() - start
        out["cpu_s"] = time.process_time() - cpu
        out["audio_s"] = result.files[0]["duration_s"]
        out["windows"] = result.files[0]["windows"]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps(out))


def run_child(run_dir: Path, audio: Path, mode: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(run_dir), str(audio), mode],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--short-minutes", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the long file per model (best is reported)")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    parser.add_argument("--encoders", nargs="+", choices=ENCODERS, default=list(ENCODERS))
    parser.add_argument("--child", nargs=3, metavar=("RUN_DIR", "AUDIO", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from thce.machine import describe_machine

    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        long_wav = write_long_wav(work / "long.wav", args.minutes)
        short_wav = write_long_wav(work / "short.wav", args.short_minutes)
        report: dict = {"audio_minutes": args.minutes, "overlap": 0.5, "load_average_at_start": list(os.getloadavg())}
        peak: dict = {}
        for encoder in args.encoders:
            run_dir = make_run(work / f"run-{encoder}", encoder)
            fulls = [run_child(run_dir, long_wav, "detect") for _ in range(args.repeats)]
            short = run_child(run_dir, short_wav, "detect")
            loaded_only = run_child(run_dir, short_wav, "load")
            # best of the same number of fresh processes as the whole path: like for like
            models = [run_child(run_dir, long_wav, "model") for _ in range(args.repeats)]
            model = max(models, key=lambda m: m["clips_per_s"])
            rtfs = sorted(f["audio_s"] / f["wall_s"] for f in fulls)
            best = max(fulls, key=lambda f: f["audio_s"] / f["wall_s"])
            hop_s = model["window_s"] / 2
            model_rtf = model["clips_per_s"] * hop_s  # one new window per hop
            report[f"window_s_{encoder}"] = model["window_s"]
            report[f"rtf_{encoder}"] = round(rtfs[-1], 1)  # best of the repeats: the least disturbed run
            report[f"rtf_{encoder}_all_runs"] = [round(v, 1) for v in rtfs]
            report[f"model_only_rtf_{encoder}"] = round(model_rtf, 1)
            report[f"model_only_rtf_{encoder}_all_runs"] = sorted(round(m["clips_per_s"] * hop_s, 1) for m in models)
            report[f"model_only_rtf_{encoder}_random_input"] = round(model["clips_per_s_random_input"] * hop_s, 1)
            report[f"model_batch_{encoder}"] = model["model_batch"]
            report[f"overhead_ratio_{encoder}"] = round(model_rtf / rtfs[-1], 3)
            report[f"windows_per_s_{encoder}"] = round(best["windows"] / best["wall_s"], 1)
            report[f"cpu_s_{encoder}"] = round(best["cpu_s"], 1)  # process CPU time of the best run
            peak[encoder] = {
                f"{args.short_minutes:g}_min": round(short["peak_rss_mb"], 1),
                f"{args.minutes:g}_min": round(max(f["peak_rss_mb"] for f in fulls), 1),
                "model_loaded_only": round(loaded_only["peak_rss_mb"], 1),
            }
        report["peak_rss_mb"] = peak
        report["load_average_at_end"] = list(os.getloadavg())
        report["goal"] = ("rtf_cnn >= 100 on 2 cores at 50% overlap; rtf_frame_cnn >= 300 (issue 30); peak RSS flat in "
                          "file length")
        report["machine"] = describe_machine()
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
