"""Feature throughput and memory: ten-second WAV clips -> normalised 64-band log-mel, ours against librosa.

Prints one JSON object. What is timed, for ``--clips`` (1000) clips:

- ours: :func:`thce.data.features.compute_features` (decode, log-mel, float16 cache written atomically) +
  :meth:`Normaliser.fit` on all clips + one normalised pass over them in batches of 32;
- librosa: ``librosa.load`` + ``librosa.feature.melspectrogram`` with the same parameters (n_fft 512, win 400,
  hop 160, 64 mels, Slaney scale and norm, power 2, centred with zero padding) + natural log, kept in memory as
  float16, + the same normalisation.

Both run single-threaded (``OMP_NUM_THREADS=1`` ..., torch threads 1) in fresh subprocesses, alternating, best of
``--repeats``. Keys:

- ``speedup_vs_librosa``: ratio of clips per CPU-second (per-core throughput; CPU time is robust to other work on a
  shared machine; goal >= 3); ``speedup_vs_librosa_wall``: the same from wall-clock time;
- ``ours_clips_per_s`` / ``librosa_clips_per_s`` (wall), ``..._per_cpu_s`` (CPU);
- workers, on ``max(--rss-clips)`` clips with each ``--workers`` count (processes computing shards, the calling one
  included), alternating, best of ``--repeats``: ``workers_end_to_end_clips_per_s`` (the whole
  :func:`compute_features` call: worker start-up, computing, writing the shards) and its ratio to 1 worker,
  ``end_to_end_speedup_vs_1_worker`` (goal: near-linear where the cores are free); ``workers_clips_per_s`` and
  ``scaling_vs_1_worker`` the same for the whole pipeline timed above (the fit and the normalised pass run in one
  process whatever the workers); ``workers_steady_clips_per_s`` (from the first finished shard on);
  ``workers_compute_cpu_s`` (CPU time of all its processes: near-equal counts mean the workers add no work, so
  the scaling on free cores is limited only by balance); ``workers_identical_output`` (every run wrote the same
  shard bytes); ``workers_runs`` (each run, with the load average before it);
- ``peak_rss_mb``: peak resident memory of one process computing, fitting and normalising each ``--rss-clips`` count
  (1k and 4k; the 4k list repeats the 1k files, every clip is still decoded and computed; goal: flat),
  ``rss_ratio_4000_vs_1000``;
- ``max_abs_diff_log_mel_vs_librosa``: the two log-mels on one clip (same parameters: ~1e-5);
- ``machine``: CPU, cores, versions, load average before, the benchmark's ``nice`` value; ``load_average_after``
  (other work on the machine skews wall times: a 1-minute load average near the number of cores means other
  processes were busy). Where Linux groups processes by session (``autogroup``), each busy session gets an equal
  share of the CPUs whatever its nice value, so on a shared machine run the benchmark in a session of its own with
  a raised share (as root): ``setsid sh -c 'echo -10 > /proc/$$/autogroup; exec nice -n -10 python
  benchmarks/features.py'``.

librosa is a benchmark-only dependency: ``pip install -e '.[bench]'``. Without it the librosa keys are ``null``,
``librosa`` says so, and a line on stderr too.

Usage: ``python benchmarks/features.py [--clips 1000] [--rss-clips 1000,4000] [--workers 1,2] [--repeats 3]``
(about three minutes; the WAVs are generated in a temporary folder).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
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
    """``count`` distinct 10 s clips: one of 8 coloured noises, circularly shifted and scaled, plus a tone."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    n = int(CLIP_S * SR)
    t = np.arange(n, dtype=np.float32) / SR
    rng = np.random.default_rng(0)
    bases = []
    for _ in range(8):
        white = rng.standard_normal(n).astype(np.float32)
        brown = np.cumsum(white) / 300
        bases.append(0.03 * white + 0.05 * (brown - brown.mean()) / (brown.std() + 1e-9))
    paths = []
    for i in range(count):
        x = np.roll(bases[i % 8], int(rng.integers(n))) * rng.uniform(0.3, 1.5)
        x += 0.05 * np.sin(2 * np.pi * rng.uniform(100, 6000) * t) * (t % 2 < rng.uniform(0.2, 1.5))
        path = folder / f"clip_{i:05d}.wav"
        sf.write(path, np.clip(x, -1, 1), SR, subtype="PCM_16")
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

    from thce.audio import LogMel, LogMelConfig
    from thce.data.feature_pool import start_method
    from thce.data.features import compute_features
    from thce.data.normaliser import Normaliser

    torch.set_num_threads(1)
    config = LogMelConfig()  # the paper's: 64 mels, 25 ms / 10 ms, n_fft 512, 10 s at 16 kHz
    LogMel(config).compute(np.zeros(config.clip_samples, np.float32))  # warm-up (lazy scipy.fft import), as librosa's
    marks: list[tuple[float, int]] = []
    cpu_start = time.process_time()
    start = time.perf_counter()
    store = compute_features(
        paths, config=config, cache_dir=cache, workers=workers, strict=True,
        progress=lambda _desc, done, total: marks.append((time.perf_counter() - start, done)),
    )  # fmt: skip
    computed = time.perf_counter()
    compute_cpu = time.process_time() - cpu_start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker processes, joined by now
    index = np.arange(len(store))
    normaliser = Normaliser.fit(store, index)
    checksum = 0.0
    for lo in range(0, len(store), 32):  # a training batch at a time
        checksum += float(normaliser(store[index[lo : lo + 32]])[:, :, 0].sum())
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start  # this process only: worker processes are not counted
    digest = hashlib.sha256()  # of every shard file, after the timing
    for shard in sorted(store.directory.glob("shard_*")):
        digest.update(shard.name.encode())
        digest.update(shard.read_bytes())
    # steady state: from the first finished shard to the last (worker start-up excluded)
    done_marks = [m for m in marks if m[1] > marks[0][1]]
    steady = None
    if len(done_marks) >= 2 and done_marks[-1][0] > done_marks[0][0]:
        steady = (done_marks[-1][1] - done_marks[0][1]) / (done_marks[-1][0] - done_marks[0][0])
    return {
        "clips": len(paths), "seconds": elapsed, "cpu_seconds": cpu, "compute_seconds": computed - start,
        "compute_cpu_seconds": compute_cpu + children.ru_utime + children.ru_stime,
        "peak_rss_mb": peak_rss_mb(), "steady_clips_per_s": steady, "checksum": checksum, "sha256": digest.hexdigest(),
        "cache_mb": sum(p.stat().st_size for p in store.directory.iterdir()) / 2**20, "start_method": start_method(),
    }  # fmt: skip


def child_librosa(paths: list[Path]) -> dict:
    import librosa

    def logmel(path: Path) -> np.ndarray:
        y, _ = librosa.load(path, sr=SR, mono=True)
        mel = librosa.feature.melspectrogram(y=y, **LIBROSA_PARAMS)
        return np.log(np.maximum(mel, 1e-10)).T  # (frames, mels)

    logmel(paths[0])  # warm-up: lazy imports and filterbank cache, not counted
    cpu_start = time.process_time()
    start = time.perf_counter()
    feats = np.stack([logmel(p)[:1000] for p in paths]).astype(np.float16)
    flat = feats.reshape(-1, feats.shape[-1]).astype(np.float64)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    del flat
    checksum = 0.0
    for lo in range(0, len(feats), 32):
        checksum += float(((feats[lo : lo + 32].astype(np.float32) - mean) / std)[:, :, 0].sum())
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    return {"clips": len(paths), "seconds": elapsed, "cpu_seconds": cpu, "peak_rss_mb": peak_rss_mb(),
            "version": librosa.__version__}  # fmt: skip


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


def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine() -> dict:
    from thce.machine import describe_machine

    try:
        import librosa

        librosa_version: str | None = librosa.__version__
    except ImportError:
        librosa_version = None
    return {**describe_machine(), "librosa": librosa_version}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=1000, help="clips for the throughput runs (default 1000)")
    parser.add_argument("--rss-clips", default="1000,4000", help="clip counts for peak memory (default 1000,4000)")
    parser.add_argument("--workers", default="1,2", help="worker counts for ours (default 1,2)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs of ours and librosa (default 3)")
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
        if hasattr(os, "sync"):
            os.sync()  # written WAVs flushed before timing, so that writeback does not compete with the runs
        speed_paths = wavs[: args.clips]
        out["clips"] = len(speed_paths)

        # 1. Throughput against librosa: ours (1 worker) and librosa alternate, best of --repeats each (the machine
        #    may be shared with other work), on the same --clips files.
        ours_runs: list[dict] = []
        lib_runs: list[dict] = []
        for rep in range(args.repeats):
            ours_runs.append(run_child("ours", speed_paths, tmp, n_workers=1, cache=tmp / f"cache_speed_{rep}"))
            if have_librosa:
                lib_runs.append(run_child("librosa", speed_paths, tmp))
        ours1 = min(ours_runs, key=lambda r: r["cpu_seconds"])
        ours_wall = min(ours_runs, key=lambda r: r["seconds"])
        ours_rate = ours1["clips"] / ours1["cpu_seconds"]
        out["ours_clips_per_cpu_s"] = round(ours_rate, 1)
        out["ours_clips_per_s"] = round(ours_wall["clips"] / ours_wall["seconds"], 1)
        out["ours_runs"] = [{"wall_s": round(r["seconds"], 2), "cpu_s": round(r["cpu_seconds"], 2)} for r in ours_runs]
        if have_librosa:
            lib = min(lib_runs, key=lambda r: r["cpu_seconds"])
            lib_wall = min(lib_runs, key=lambda r: r["seconds"])
            lib_rate = lib["clips"] / lib["cpu_seconds"]
            out["librosa"] = lib["version"]
            out["librosa_clips_per_cpu_s"] = round(lib_rate, 1)
            out["librosa_clips_per_s"] = round(lib_wall["clips"] / lib_wall["seconds"], 1)
            out["librosa_runs"] = [{"wall_s": round(r["seconds"], 2), "cpu_s": round(r["cpu_seconds"], 2)}
                                   for r in lib_runs]  # fmt: skip
            out["speedup_vs_librosa"] = round(ours_rate / lib_rate, 2)
            out["speedup_vs_librosa_wall"] = round(
                (ours_wall["clips"] / ours_wall["seconds"]) / (lib_wall["clips"] / lib_wall["seconds"]), 2
            )
            out["max_abs_diff_log_mel_vs_librosa"] = round(run_child("agree", wavs[:1], tmp)["max_abs_diff"], 6)
        else:
            lib_rate = None
            out["librosa"] = "missing: pip install -e '.[bench]'"
            out["librosa_clips_per_s"] = out["speedup_vs_librosa"] = None

        # 2. Workers and memory: the largest --rss-clips list (files repeated) with each worker count, alternating,
        #    best of --repeats; peak RSS of one process (1 worker) at each --rss-clips count.
        big = max(rss_counts)
        big_paths = [wavs[i % len(wavs)] for i in range(big)]
        runs: dict[int, list[dict]] = {w: [] for w in workers}
        for rep in range(args.repeats):
            for w in workers:
                before = load_average()
                result = run_child("ours", big_paths, tmp, n_workers=w, cache=tmp / "cache_w")
                shutil.rmtree(tmp / "cache_w")  # half a gigabyte each
                runs[w].append(result | {"load_average_before": before})
        by_workers = {w: min(rs, key=lambda r: r["seconds"]) for w, rs in runs.items()}
        e2e = {w: min(rs, key=lambda r: r["compute_seconds"]) for w, rs in runs.items()}
        out["workers_clips"] = big
        out["workers_start_method"] = runs[workers[0]][0]["start_method"]
        out["workers_end_to_end_clips_per_s"] = {str(w): round(r["clips"] / r["compute_seconds"], 1)
                                                 for w, r in e2e.items()}  # fmt: skip
        base = e2e.get(1) or e2e[workers[0]]
        out["end_to_end_speedup_vs_1_worker"] = {
            str(w): round(base["compute_seconds"] / r["compute_seconds"], 2) for w, r in e2e.items()
        }
        out["workers_compute_cpu_s"] = {str(w): round(r["compute_cpu_seconds"], 2) for w, r in e2e.items()}
        out["workers_identical_output"] = len({r["sha256"] for rs in runs.values() for r in rs}) == 1
        out["workers_runs"] = [
            {"workers": w, "compute_s": round(r["compute_seconds"], 2), "pipeline_s": round(r["seconds"], 2),
             "compute_cpu_s": round(r["compute_cpu_seconds"], 2), "load_average_before": r["load_average_before"]}
            for rep in range(args.repeats) for w in workers for r in [runs[w][rep]]
        ]  # fmt: skip
        out["workers_clips_per_s"] = {str(w): round(r["clips"] / r["seconds"], 1) for w, r in by_workers.items()}
        out["workers_steady_clips_per_s"] = {
            str(w): None if r["steady_clips_per_s"] is None else round(r["steady_clips_per_s"], 1)
            for w, r in by_workers.items()
        }
        one = by_workers.get(1) or by_workers[workers[0]]
        out["scaling_vs_1_worker"] = {
            str(w): round(r["clips"] / r["seconds"] / (one["clips"] / one["seconds"]), 2) for w, r in by_workers.items()
        }
        if have_librosa:
            lib_wall_rate = lib_wall["clips"] / lib_wall["seconds"]
            out["speedup_vs_librosa_by_workers_wall"] = {
                str(w): round(r["clips"] / r["seconds"] / lib_wall_rate, 2) for w, r in by_workers.items()
            }
        rss = {n: by_workers[1] for n in rss_counts if n == big and 1 in by_workers}
        for n in rss_counts:
            if n not in rss:
                paths = [wavs[i % len(wavs)] for i in range(n)]
                rss[n] = run_child("ours", paths, tmp, n_workers=1, cache=tmp / f"cache_rss_{n}")
        out["peak_rss_mb"] = {str(n): round(rss[n]["peak_rss_mb"], 1) for n in rss_counts}
        out["cache_mb"] = {str(n): round(rss[n]["cache_mb"], 1) for n in rss_counts}
        if len(rss_counts) >= 2:
            lo, hi = min(rss_counts), max(rss_counts)
            out[f"rss_ratio_{hi}_vs_{lo}"] = round(rss[hi]["peak_rss_mb"] / rss[lo]["peak_rss_mb"], 3)
    out["load_average_after"] = load_average()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
