"""Feature throughput and memory: ten-second WAV clips -> normalised 64-band log-mel, ours against librosa.

Prints one JSON object:

- ``ours_clips_per_s``: {workers: clips/s} for :func:`thce.data.features.compute_features` (cache written) +
  :meth:`Normaliser.fit` on all clips + one normalised pass over them, with 1 and 2 worker processes;
- ``librosa_clips_per_s``: ``librosa.load`` + ``librosa.feature.melspectrogram`` with the same parameters (n_fft 512,
  win 400, hop 160, 64 mels, Slaney scale and norm, power 2, centred with zero padding) + natural log + the same
  normalisation, in one process;
- ``speedup_vs_librosa`` (ours with 1 worker / librosa, both single-threaded: goal >= 3),
  ``speedup_vs_librosa_by_workers`` and ``scaling_vs_1_worker`` (goal: near-linear);
- ``peak_rss_mb``: peak resident memory of one process computing, fitting and normalising 1k and 4k clips (goal:
  flat), ``rss_ratio_4k_vs_1k``;
- ``max_abs_diff_log_mel_vs_librosa``: agreement of the two log-mels on one clip (same parameters, so ~1e-4);
- ``machine``: CPU, cores, versions.

Every measurement runs in a fresh subprocess with one BLAS/OpenMP thread per process (``OMP_NUM_THREADS=1`` ...), so
the numbers compare per-core work. The WAVs (16 kHz, 16-bit, noise + tones) are generated in a temporary folder; the
4k run lists each of the 1k files four times (every clip is still decoded and computed).

librosa is a benchmark-only dependency: ``pip install -e '.[bench]'``. Without it the librosa keys are ``null`` and
``librosa`` says so.

Usage: ``python benchmarks/features.py [--clips 1000] [--rss-clips 1000,4000] [--workers 1,2]`` (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SR = 16000
CLIP_S = 10.0
THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}
LIBROSA_PARAMS = dict(sr=SR, n_fft=512, win_length=400, hop_length=160, n_mels=64, power=2.0, htk=False,
                      norm="slaney", center=True, pad_mode="constant", window="hann")  # fmt: skip


def make_wavs(folder: Path, count: int) -> list[Path]:
    """``count`` distinct 10 s clips: coloured noise plus a few tones."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(CLIP_S * SR)) / SR
    paths = []
    for i in range(count):
        rng = np.random.default_rng(i)
        x = 0.05 * np.cumsum(rng.standard_normal(t.size)) / 100 + 0.02 * rng.standard_normal(t.size)
        for f in rng.uniform(100, 6000, size=3):
            x += 0.05 * np.sin(2 * np.pi * f * t) * (t % rng.uniform(1, 4) < 0.5)
        path = folder / f"clip_{i:05d}.wav"
        sf.write(path, np.clip(x, -1, 1).astype(np.float32), SR, subtype="PCM_16")
        paths.append(path)
    return paths


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# ----------------------------------------------------------------------------------------------------------------------
# Child processes: each prints one JSON line


def child_ours(paths: list[Path], workers: int, cache: Path) -> dict:
    import torch

    from thce.audio import LogMelConfig
    from thce.data.features import Normaliser, compute_features

    torch.set_num_threads(1)
    config = LogMelConfig()  # the paper's: 64 mels, 25 ms / 10 ms, n_fft 512, 10 s at 16 kHz
    start = time.perf_counter()
    store = compute_features(paths, config=config, cache_dir=cache, workers=workers, strict=True)
    computed = time.perf_counter()
    index = np.arange(len(store))
    normaliser = Normaliser.fit(store, index)
    checksum = 0.0
    for lo in range(0, len(store), 32):  # a training batch at a time
        checksum += float(normaliser(store[index[lo : lo + 32]])[:, :, 0].sum())
    elapsed = time.perf_counter() - start
    return {
        "clips": len(paths), "seconds": elapsed, "compute_seconds": computed - start, "peak_rss_mb": peak_rss_mb(),
        "checksum": checksum, "cache_mb": sum(p.stat().st_size for p in store.directory.iterdir()) / 2**20,
    }  # fmt: skip


def child_librosa(paths: list[Path]) -> dict:
    import librosa

    def logmel(path: Path) -> np.ndarray:
        y, _ = librosa.load(path, sr=SR, mono=True)
        mel = librosa.feature.melspectrogram(y=y, **LIBROSA_PARAMS)
        return np.log(np.maximum(mel, 1e-10)).T  # (frames, mels)

    logmel(paths[0])  # warm-up: lazy imports and filterbank cache, not counted
    start = time.perf_counter()
    feats = np.stack([logmel(p)[:1000] for p in paths]).astype(np.float16)
    flat = feats.reshape(-1, feats.shape[-1]).astype(np.float64)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    del flat
    checksum = 0.0
    for lo in range(0, len(feats), 32):
        checksum += float(((feats[lo : lo + 32].astype(np.float32) - mean) / std)[:, :, 0].sum())
    elapsed = time.perf_counter() - start
    return {"clips": len(paths), "seconds": elapsed, "peak_rss_mb": peak_rss_mb(), "version": librosa.__version__}


def child_agreement(path: Path) -> dict:
    import librosa
    import torch

    from thce.audio import LogMel, LogMelConfig, load_audio

    ours = LogMel(LogMelConfig())(torch.from_numpy(load_audio(path))).numpy()
    y, _ = librosa.load(path, sr=SR)
    ref = np.log(np.maximum(librosa.feature.melspectrogram(y=y, **LIBROSA_PARAMS), 1e-10)).T[: ours.shape[0]]
    return {"max_abs_diff": float(np.abs(ours - ref).max()), "frames": list(ours.shape)}


def run_child(kind: str, paths: list[Path], tmp: Path, **kwargs: object) -> dict:
    list_file = tmp / f"paths_{kind}_{len(paths)}.txt"
    list_file.write_text("\n".join(map(str, paths)))
    argv = [sys.executable, __file__, "--child", kind, "--paths", str(list_file), "--tmp", str(tmp)]
    for key, value in kwargs.items():
        argv += [f"--{key}", str(value)]
    env = {**os.environ, **THREAD_ENV}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child {kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> dict:
    import torch

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    try:
        import librosa

        librosa_version: str | None = librosa.__version__
    except ImportError:
        librosa_version = None
    return {
        "cpu": model, "cpus_available": cpus, "platform": platform.platform(), "python": platform.python_version(),
        "numpy": np.__version__, "torch": torch.__version__, "librosa": librosa_version,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        if hasattr(os, "sysconf") else None,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=1000, help="clips for the throughput runs (default 1000)")
    parser.add_argument("--rss-clips", default="1000,4000", help="clip counts for peak memory (default 1000,4000)")
    parser.add_argument("--workers", default="1,2", help="worker counts for ours (default 1,2)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--n_workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        paths = [Path(p) for p in Path(args.paths).read_text().splitlines()]
        if args.child == "ours":
            result = child_ours(paths, args.n_workers, Path(args.cache))
        elif args.child == "librosa":
            result = child_librosa(paths)
        else:
            result = child_agreement(paths[0])
        print(json.dumps(result))
        return

    workers = [int(w) for w in args.workers.split(",")]
    rss_counts = [int(n) for n in args.rss_clips.split(",")]
    try:
        import librosa  # noqa: F401

        have_librosa = True
    except ImportError:
        have_librosa = False
        print("benchmarks/features.py: librosa is not installed (pip install -e '.[bench]'); "
              "reporting ours only", file=sys.stderr)  # fmt: skip

    out: dict = {"machine": machine(), "clip_duration_s": CLIP_S, "sample_rate_hz": SR,
                 "params": {k: v for k, v in LIBROSA_PARAMS.items() if k != "sr"} | {"log": "ln(max(mel, 1e-10))"}}
    with tempfile.TemporaryDirectory(prefix="thce-bench-") as tmp_name:
        tmp = Path(tmp_name)
        unique = max(args.clips, min(rss_counts))
        start = time.perf_counter()
        wavs = make_wavs(tmp / "wav", unique)
        out["wav_generation_s"] = round(time.perf_counter() - start, 1)
        speed_paths = wavs[: args.clips]
        out["clips"] = len(speed_paths)

        ours = {}
        for w in workers:
            ours[w] = run_child("ours", speed_paths, tmp, n_workers=w, cache=tmp / f"cache_w{w}")
        out["ours_clips_per_s"] = {str(w): round(r["clips"] / r["seconds"], 1) for w, r in ours.items()}
        out["ours_seconds"] = {str(w): round(r["seconds"], 2) for w, r in ours.items()}
        base = ours[workers[0]]["clips"] / ours[workers[0]]["seconds"]
        out["scaling_vs_1_worker"] = {str(w): round(r["clips"] / r["seconds"] / base, 2) for w, r in ours.items()}

        if have_librosa:
            lib = run_child("librosa", speed_paths, tmp)
            lib_rate = lib["clips"] / lib["seconds"]
            out["librosa"] = lib["version"]
            out["librosa_clips_per_s"] = round(lib_rate, 1)
            out["speedup_vs_librosa"] = round(ours[1]["clips"] / ours[1]["seconds"] / lib_rate, 2) if 1 in ours else None
            out["speedup_vs_librosa_by_workers"] = {
                str(w): round(r["clips"] / r["seconds"] / lib_rate, 2) for w, r in ours.items()
            }
            out["max_abs_diff_log_mel_vs_librosa"] = round(run_child("agree", wavs[:1], tmp)["max_abs_diff"], 6)
        else:
            out["librosa"] = "missing: pip install -e '.[bench]'"
            out["librosa_clips_per_s"] = out["speedup_vs_librosa"] = None

        rss = {}
        for n in rss_counts:
            paths = [wavs[i % len(wavs)] for i in range(n)]
            r = run_child("ours", paths, tmp, n_workers=1, cache=tmp / f"cache_rss_{n}")
            rss[n] = r
        out["peak_rss_mb"] = {str(n): round(r["peak_rss_mb"], 1) for n, r in rss.items()}
        out["rss_run_clips_per_s"] = {str(n): round(r["clips"] / r["seconds"], 1) for n, r in rss.items()}
        out["cache_mb"] = {str(n): round(r["cache_mb"], 1) for n, r in rss.items()}
        if len(rss_counts) >= 2:
            lo, hi = rss_counts[0], rss_counts[-1]
            out[f"rss_ratio_{hi // 1000}k_vs_{lo // 1000}k"] = round(rss[hi]["peak_rss_mb"] / rss[lo]["peak_rss_mb"], 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
