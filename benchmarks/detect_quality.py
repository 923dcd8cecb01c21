"""How well ``thce detect`` finds events in long recordings it never saw (issue 16, item 6).

1. A trained run: ``--run DIR``, or trained here from ``--config`` (default ``configs/synth-2-2-1-26-cnn.toml``,
   methods proposed1 + proposed2) into ``WORK/run``.
2. Two recordings from sources the model never saw: synthetic isolated events (one folder per class) and
   backgrounds, from :mod:`thce.data.synth` with seeds of their own (test ``--seed``, default 1616; validation
   ``--seed`` + 1; the runs use seed 0; ``--events-per-class`` 12 and ``--backgrounds`` 10 of 70 s by default), each
   mixed by ``thce data mix`` into ``--minutes`` one-minute mixtures
   (DCASE 2017 task 2 style: one event with probability 0.8, EBR drawn from -6/0/6 dB) concatenated into one long
   recording with its reference list.
3. ``thce detect`` (library call, the run's proposed2, ``--hop-s``) on both (window scores kept in WORK, so a rerun
   skips the model), then the post-processing grid (threshold rule eer/far:0.05/far:0.01 from the run's validation
   clips x agreement 0.25/0.5/0.75/1 x median filter default/off) on the window scores: the setting with the best
   event-based F on the **validation** recording is reported on the test recording beside detect's default (EER
   thresholds, agreement 0.5, default median filter). Per setting: event-based ER/F (onset, 0.5 s
   collar), segment-based ER/F (1 s), onset and offset errors of the detected events matched to references (same
   label, onset within the collar; greedy, nearest first), recall per EBR.
   A frame-level run (``data.strong_labels``) scores frames directly: its grid is the threshold rule (``events``,
   the per-class thresholds the run chose on validation event F, and eer/far:0.05/far:0.01 on its validation
   frames) x median filter (the run's per-class choice, or off); detect's default is ``events`` with the run's
   median filters, and ``--hop-s`` defaults to detect's (half a window).
4. PSDS 1/2 and the best collar-based F of the test recording's saved score table at detect's default (when
   sed_scores_eval is installed: the ``eval`` extra; or afterwards with ``--add-threshold-free``).
5. How sure the test figure is: at detect's default, the counts of every one-minute mixture (``minute_counts``:
   true positives, reference and detected events per class) and 95 % bootstrap intervals of the event-based F
   (overall and class average) from resampling the mixtures (``interval``): a 30-minute recording has about 22
   events, a handful per class. Mixtures that share a background or event source are not independent (30 mixtures
   from 10 backgrounds), so the interval, if anything, is too narrow.

``--combine A.json B.json ...`` only summarises reports (e.g. one per seed's run) at detect's defaults, with means;
when every report has ``minute_counts`` of one recording, the mean F over the runs gets a paired interval too.

Writes JSON (``--out``, default ``benchmarks/results/detect_quality.json``).
Usage: ``python benchmarks/detect_quality.py [--run DIR | --config TOML] [--minutes 30] [--work DIR]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def make_sources(
    folder: Path, classes: list[str], seed: int, *, events_per_class: int = 12, backgrounds: int = 10
) -> None:
    """``folder/events/<class>/*.wav`` (the event part of synthetic clips) and ``folder/backgrounds/*.wav`` (70 s)."""
    from thce.data.synth import SynthConfig, clip_rng, synthesise_clip

    short = SynthConfig(counts={c: 1 for c in classes}, duration_s=4.0, seed=seed)
    for label in classes:
        (folder / "events" / label).mkdir(parents=True, exist_ok=True)
        for i in range(events_per_class):
            clip = synthesise_clip(label, clip_rng(seed, label, 5000 + i), short)
            event = clip.event[round(clip.onset_s * SR) : round(clip.offset_s * SR)]
            sf.write(folder / "events" / label / f"{label}_{i:02d}.wav", event.astype(np.float32), SR, subtype="FLOAT")
    (folder / "backgrounds").mkdir(parents=True, exist_ok=True)
    long = SynthConfig(counts={"background": 1}, duration_s=70.0, seed=seed)
    for i in range(backgrounds):
        clip = synthesise_clip("background", clip_rng(seed, "background", 5000 + i), long)
        sf.write(folder / "backgrounds" / f"bg_{i:02d}.wav", clip.background.astype(np.float32), SR, subtype="FLOAT")


def thce(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "thce", "-q", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"thce {' '.join(args)} failed:\n{done.stderr}")


def long_recording(mix_dir: Path, out: Path) -> tuple[list[tuple[float, float, str, float]], float]:
    """Concatenate the mixtures (manifest order) into ``out``; returns the events ``(onset, offset, label, EBR)``
    in the long recording's time and its length in seconds."""
    rows = list(csv.DictReader(open(mix_dir / "manifest.csv", encoding="utf-8")))
    events, offset = [], 0.0
    with sf.SoundFile(out, "w", samplerate=SR, channels=1, subtype="PCM_16") as handle:
        for row in rows:
            x, rate = sf.read(mix_dir / row["path"], dtype="float32")
            assert rate == SR
            handle.write(x)
            if row["label"]:
                events.append((offset + float(row["onset_s"]), offset + float(row["offset_s"]), row["label"],
                               float(row["ebr_db"])))  # fmt: skip
            offset += x.size / SR
    return events, offset


def boundary_errors(truth, found, collar_s=0.5):
    """Onset and offset errors (estimated - reference, s) of greedy nearest same-label matches within the collar."""
    used, pairs = set(), []
    for on, off, label, ebr in truth:
        best = None
        for j, e in enumerate(found):
            if j not in used and e.label == label and abs(e.onset_s - on) <= collar_s:
                if best is None or abs(e.onset_s - on) < abs(found[best].onset_s - on):
                    best = j
        if best is not None:
            used.add(best)
            pairs.append((found[best].onset_s - on, found[best].offset_s - off, ebr))
    return pairs


def stats(values):
    if not values:
        return None
    a = np.abs(np.asarray(values))
    return {"n": len(values), "mean_signed_s": round(float(np.mean(values)), 3),
            "median_abs_s": round(float(np.median(a)), 3), "p90_abs_s": round(float(np.percentile(a, 90)), 3),
            "max_abs_s": round(float(a.max()), 3)}  # fmt: skip


def threshold_free_figures(work: Path) -> dict | str:
    """PSDS 1/2 and the best collar-based F of ``work/scores`` against ``work/reference.tsv`` (the eval extra)."""
    try:
        from thce.detection.threshold_free import threshold_free

        free = threshold_free(work / "scores", work / "reference.tsv")
    except Exception as error:  # the eval extra is optional
        return f"not computed: {error}"
    return {k: free[k] for k in ("psds1", "psds2", "collar_best_f", "collar_best_threshold")}


THRESHOLD_RULES = ("eer", "far:0.05", "far:0.01")  # per-class thresholds from the run's validation clips
AGREEMENTS = (0.25, 0.5, 0.75, 1.0)
MEDIAN_FILTERS_S = (None, 0.0)  # detect's default (a quarter of the support) and off


def recording(
    work: Path, name: str, classes: list[str], seed: int, minutes: int, *, events_per_class: int = 12,
    backgrounds: int = 10,
) -> tuple[Path, list, float]:  # fmt: skip
    """Sources (seed ``seed``: ``events_per_class`` events per class, ``backgrounds`` backgrounds of 70 s) -> ``thce
    data mix`` -> one long recording ``work/<name>.wav``; returns its path, reference events ``(onset, offset, label,
    EBR)`` and length in seconds."""
    sources = work / f"{name}-sources"
    if not (work / f"{name}-mix" / "manifest.csv").is_file():  # made by an earlier run in this WORK: kept
        make_sources(sources, classes, seed, events_per_class=events_per_class, backgrounds=backgrounds)
        thce("data", "mix", "--events", str(sources / "events"), "--backgrounds", str(sources / "backgrounds"),
             "--out", str(work / f"{name}-mix"), "--count", str(minutes), "--duration-s", "60",
             "--event-probability", "0.8", "--ebr-db=-6,0,6", "--no-split", "--seed", str(seed))  # fmt: skip
    audio = work / f"{name}.wav"
    truth, duration = long_recording(work / f"{name}-mix", audio)
    return audio, truth, duration


def quality(truth: list, duration: float, events: list, name: str) -> dict:
    """Event-based (0.5 s onset collar) and segment-based (1 s) figures, boundary errors and recall per EBR."""
    from thce.detection.metrics import evaluate_events, evaluate_segments
    from thce.detection.events import Event, EventList

    reference = EventList((name,), tuple(Event(name, on, off, label) for on, off, label, _ in truth))
    estimated = EventList((name,), tuple(e._replace(file=name) for e in events))
    event_based = evaluate_events(reference, estimated)
    segment_based = evaluate_segments(reference, estimated, durations_s={name: duration})
    pairs = boundary_errors(truth, list(estimated.events))
    by_ebr = {}
    for ebr in sorted({t[3] for t in truth}):
        n = sum(1 for t in truth if t[3] == ebr)
        by_ebr[f"{ebr:g}"] = {"n_ref": n, "matched": sum(1 for p in pairs if p[2] == ebr)}
    return {
        "detected_events": len(events),
        "event_based": {k: event_based["overall"][k] for k in ("error_rate", "f_score", "precision", "recall",
                                                                 "substitutions", "deletions", "insertions")},
        "event_based_class_average": event_based["class_average"],
        "event_based_per_class": {label: {k: figures[k] for k in ("f_score", "error_rate", "n_ref", "n_sys",
                                                                    "deletions", "insertions")}
                                  for label, figures in event_based["class_wise"].items()},
        "segment_based": {k: segment_based["overall"][k] for k in ("error_rate", "f_score", "precision", "recall")},
        "onset_error": stats([p[0] for p in pairs]), "offset_error": stats([p[1] for p in pairs]),
        "matched_by_ebr_db": by_ebr,
        "shortest_event_s": min((e.offset_s - e.onset_s for e in events), default=None),
    }  # fmt: skip


MIXTURE_S = 60.0  # the long recordings are one-minute mixtures end to end (``recording``)
BOOTSTRAP_REPLICATES = 2000


def minute_counts(truth: list, events: list, duration: float, classes: list[str]) -> np.ndarray:
    """(mixtures, classes, 3) int: per one-minute mixture and class, the true positives, reference events and
    detected events of the event-based evaluation (0.5 s onset collar), each event in the mixture of its onset
    (each mixture scored as a file of its own: an onset within 0.5 s of a mixture's end could match across the
    edge in the whole recording, not here)."""
    from thce.detection.events import Event, EventList
    from thce.detection.metrics import evaluate_events

    blocks = int(np.ceil(duration / MIXTURE_S - 1e-9))
    counts = np.zeros((blocks, len(classes), 3), dtype=np.int64)
    for block in range(blocks):
        name = f"minute{block:04d}"
        lo, hi = block * MIXTURE_S, (block + 1) * MIXTURE_S
        reference = EventList((name,), tuple(Event(name, on, off, label) for on, off, label, _ in truth if lo <= on < hi))
        estimated = EventList((name,), tuple(e._replace(file=name) for e in events if lo <= e.onset_s < hi))
        class_wise = evaluate_events(reference, estimated)["class_wise"]  # the labels present in this mixture
        for c, label in enumerate(classes):
            if label in class_wise:
                figures = class_wise[label]
                counts[block, c] = (figures["n_ref"] - figures["deletions"], figures["n_ref"], figures["n_sys"])
    return counts


def _event_f(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., classes, 3) summed counts -> overall F (...) and class-average F (...) over classes with references."""
    tp, n_ref, n_sys = counts[..., 0], counts[..., 1], counts[..., 2]
    overall = 2 * tp.sum(-1) / np.maximum(n_ref.sum(-1) + n_sys.sum(-1), 1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate without references: NaN, left out below
        per_class = np.where(n_ref > 0, 2 * tp / (n_ref + n_sys), np.nan)
        return overall, np.nanmean(per_class, axis=-1)


def event_f_interval(counts: np.ndarray, seed: int = 0) -> dict:
    """Event-based F (overall and class average) of ``counts`` (runs, mixtures, classes, 3), mean over runs, with
    95 % percentile intervals from resampling the mixtures with replacement (the same mixtures for every run: one
    recording scored by several runs), ``BOOTSTRAP_REPLICATES`` replicates."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, counts.shape[1], size=(BOOTSTRAP_REPLICATES, counts.shape[1]))
    overall, average = _event_f(counts.sum(axis=1))
    boot_overall, boot_average = _event_f(counts[:, picks].sum(axis=2))  # (runs, replicates)

    def interval(values: np.ndarray) -> list[float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return [round(float(v), 4) for v in np.nanpercentile(values.mean(axis=0), [2.5, 97.5])]

    return {"mixtures": counts.shape[1], "runs": counts.shape[0], "replicates": BOOTSTRAP_REPLICATES,
            "event_f": round(float(overall.mean()), 4), "event_f_95": interval(boot_overall),
            "event_f_class_average": round(float(average.mean()), 4),
            "event_f_class_average_95": interval(boot_average)}  # fmt: skip


def combine_reports(paths: list[Path]) -> dict:
    """Per report (e.g. one per seed's run of a config, on the same recordings): the run, its event-based F / error
    rate (overall and class average), detected events and median onset error at detect's defaults, and the mean of
    each over the reports."""
    rows = {}
    reports = [json.loads(path.read_text()) for path in paths]
    for path, report in zip(paths, reports):
        test = report["test_at_default"]
        rows[str(path)] = {
            "run": report["run"], "reference_events": report["reference_events"],
            "event_f": test["event_based"]["f_score"], "event_error_rate": test["event_based"]["error_rate"],
            "event_f_class_average": test["event_based_class_average"]["f_score"],
            "event_error_rate_class_average": test["event_based_class_average"]["error_rate"],
            "detected_events": test["detected_events"], "insertions": test["event_based"]["insertions"],
            "deletions": test["event_based"]["deletions"],
            "onset_error_median_abs_s": (test["onset_error"] or {}).get("median_abs_s"),
        }  # fmt: skip
    mean = {}
    for key in next(iter(rows.values())):
        values = [row[key] for row in rows.values() if row[key] is not None]
        if key not in ("run", "reference_events"):
            mean[key] = float(np.mean(values)) if values else None
    summary = {"at": "detect's defaults", "reports": rows, "mean": mean}
    counts = [report["test_at_default"].get("minute_counts") for report in reports]
    if all(c is not None for c in counts) and len({np.shape(c) for c in counts}) == 1:  # one recording, every run
        summary["mean_with_interval"] = event_f_interval(np.asarray(counts))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=None, help="a trained run directory (default: train one)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "synth-2-2-1-26-cnn.toml")
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--hop-s", type=float, default=None,
                        help="detect's hop (default: 0.5 s, or half a window for a frame-level run)")
    parser.add_argument("--seed", type=int, default=1616, help="test recording's seed; validation uses seed + 1")
    parser.add_argument("--backgrounds", type=int, default=10, help="background sources (70 s each) per recording")
    parser.add_argument("--events-per-class", type=int, default=12, help="event sources per class per recording")
    parser.add_argument("--work", type=Path, default=None, help="keep the work here, reused by a rerun (default: a temporary folder, removed at the end)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/detect_quality.json "
                        "(with --combine: required)")
    parser.add_argument("--add-threshold-free", action="store_true",
                        help="only add PSDS etc. to --out from --work's saved scores (e.g. from an environment with "
                             "the eval extra but without torch)")
    parser.add_argument("--combine", type=Path, nargs="+", default=None, metavar="JSON",
                        help="only summarise reports of this benchmark (e.g. one per seed's run) into --out: each "
                             "one's figures at detect's defaults and their mean")
    args = parser.parse_args()
    if args.combine and args.out is None:
        parser.error("--combine needs --out (the summary's file)")
    args.out = args.out or ROOT / "benchmarks" / "results" / "detect_quality.json"
    if args.combine:
        summary = combine_reports(args.combine)
        summary["command"] = "python benchmarks/detect_quality.py " + " ".join(sys.argv[1:])
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
        return
    if args.add_threshold_free:
        report = json.loads(args.out.read_text())
        report["threshold_free"] = threshold_free_figures(args.work)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report["threshold_free"], indent=2))
        return
    if args.work is None:  # recordings, scores and perhaps a trained run: gigabytes that nobody asked to keep
        with tempfile.TemporaryDirectory(prefix="detect_quality_") as folder:
            measure(args, Path(folder))
        return
    measure(args, args.work)


def measure(args: argparse.Namespace, work: Path) -> None:
    """The benchmark proper, its recordings, scores and (without ``--run``) trained run in ``work``."""
    from thce.allocator import reuse_freed_memory
    from thce.checkpoint import load_run
    from thce.detection.config import DetectConfig
    from thce.detection.detect import FileScores, detect_in_scores, detect_run, run_thresholds
    from thce.detection.localise import EventRules
    from thce.machine import describe_machine
    from thce.rundir import checkpoint_path
    from thce.detection.tables import write_table
    from thce.detection.thresholds import class_thresholds

    reuse_freed_memory()  # as `thce detect` sets the allocator at start-up
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"command": "python benchmarks/detect_quality.py " + " ".join(sys.argv[1:]),
                    "config": str(args.config.relative_to(ROOT)) if args.run is None else None,
                    "run": str(args.run) if args.run is not None else None}  # fmt: skip
    run = args.run
    if run is None:
        run = work / "run"
        start = time.perf_counter()
        thce("experiment", str(args.config), "--out", str(run), "--set", 'methods=["proposed1","proposed2"]')
        report["train_wall_s"] = round(time.perf_counter() - start, 1)
    loaded = load_run(run, "proposed2")
    classes = list(loaded.classes)
    frame_level = loaded.frames is not None
    hop_s = args.hop_s if args.hop_s is not None else (None if frame_level else 0.5)
    found: dict = {}
    walls: dict = {}
    truths: dict = {}
    model_file = checkpoint_path(run, "proposed2")  # a retrained run in the same folder invalidates cached scores
    for name, seed in (("validation", args.seed + 1), ("test", args.seed)):
        audio, truth, duration = recording(work, name, classes, seed, args.minutes,
                                           events_per_class=args.events_per_class, backgrounds=args.backgrounds)  # fmt: skip
        truths[name] = (truth, duration, audio.name)
        cached = work / f"{name}-window-scores.npz"  # the model's window scores: a rerun skips the model
        cache_key = json.dumps([str(model_file.resolve()), model_file.stat().st_mtime_ns, hop_s, audio.stat().st_size])
        if cached.is_file():
            with np.load(cached) as saved:
                if str(saved["key"]) == cache_key:
                    meta = json.loads(str(saved["meta"]))
                    meta["classes"], meta["support_s"] = tuple(meta["classes"]), tuple(meta["support_s"])
                    found[name] = FileScores(scores=saved["scores"], silent=saved["silent"], **meta)
                    walls[name] = float(saved["wall_s"])
                    continue
        start = time.perf_counter()
        detect_run(run, [audio], config=DetectConfig(hop_s=hop_s),
                   on_file=lambda d, name=name: found.__setitem__(name, d.scores))  # fmt: skip
        walls[name] = time.perf_counter() - start
        fs = found[name]
        meta = {"path": fs.path, "classes": list(fs.classes), "hop_s": fs.hop_s, "window_s": fs.window_s,
                "support_s": list(fs.support_s), "duration_s": fs.duration_s, "frame_hop_s": fs.frame_hop_s}  # fmt: skip
        np.savez(cached, key=cache_key, meta=json.dumps(meta), scores=fs.scores, silent=fs.silent, wall_s=walls[name])
    report["hop_s"], report["window_s"] = found["test"].hop_s, found["test"].window_s
    report["frame_level"] = frame_level
    rules = {rule: class_thresholds(val_scores=loaded.val_scores, val_class_index=loaded.val_class_index,
                                    classes=classes, rule=rule) for rule in THRESHOLD_RULES}  # fmt: skip
    run_post = None
    if frame_level:
        rules["events"], run_post = run_thresholds(loaded, "events")
    report["thresholds"] = {rule: dict(zip(classes, np.round(t, 4).tolist())) for rule, t in rules.items()}

    def post_process(name: str, rule: str, agreement: float, median_filter_s: float | None):
        truth, duration, file = truths[name]
        median, events = median_filter_s, EventRules()
        if run_post is not None and median_filter_s is None:  # the run's own post-processing, chosen on validation
            median = [run_post.median_filter_s[c] for c in classes]
            events = [run_post.rules(c) for c in classes]
        detection = detect_in_scores(found[name], rules[rule], agreement=agreement, median_filter_s=median,
                                     events=events)  # fmt: skip
        return detection, quality(truth, duration, detection.events, file)

    # post-processing chosen on the validation recording (event-based F), reported on the test recording
    grid = {}
    for rule in (("events", *THRESHOLD_RULES) if frame_level else THRESHOLD_RULES):
        for agreement in ((0.5,) if frame_level else AGREEMENTS):  # frame scores: no windows to agree
            for median in MEDIAN_FILTERS_S:
                key = f"threshold={rule},agreement={agreement:g},median_filter_s={'default' if median is None else f'{median:g}'}"
                grid[key] = {name: post_process(name, rule, agreement, median)[1] for name in ("validation", "test")}
    chosen = max(grid, key=lambda k: grid[k]["validation"]["event_based"]["f_score"])  # ties: the first (grid order)
    default = f"threshold={'events' if frame_level else 'eer'},agreement=0.5,median_filter_s=default"
    truth, duration, _ = truths["test"]
    report.update({
        "audio_minutes": round(duration / 60, 2), "reference_events": len(truth),
        "validation_reference_events": len(truths["validation"][0]),
        "detect_wall_s": round(walls["test"], 1), "realtime_factor": round(duration / walls["test"], 1),
        "post_processing_default": default, "post_processing_chosen_on_validation": chosen,
        "test_at_default": grid[default]["test"], "test_at_chosen": grid[chosen]["test"],
        "grid_event_f": {k: {n: v[n]["event_based"]["f_score"] for n in v} for k, v in grid.items()},
        "grid_segment_f": {k: {n: v[n]["segment_based"]["f_score"] for n in v} for k, v in grid.items()},
        "grid_detected_events": {k: {n: v[n]["detected_events"] for n in v} for k, v in grid.items()},
    })  # fmt: skip
    detection, _ = post_process("test", "events" if frame_level else "eer", 0.5, None)  # the default's score table
    counts = minute_counts(truth, list(detection.events), duration, classes)
    report["test_at_default"]["minute_counts"] = counts.tolist()
    report["test_at_default"]["interval"] = event_f_interval(counts[None])
    if report["test_at_default"]["interval"]["event_f"] != round(report["test_at_default"]["event_based"]["f_score"], 4):
        report["test_at_default"]["interval"]["note"] = "mixtures scored apart differ from the whole recording's F"
    (work / "scores").mkdir(exist_ok=True)
    write_table(work / "scores" / "test.tsv", detection.edges, detection.curve, detection.scores.classes)
    lines = [f"test.wav\t{on:.3f}\t{off:.3f}\t{label}\n" for on, off, label, _ in truth]
    (work / "reference.tsv").write_text("".join(lines))
    report["threshold_free"] = threshold_free_figures(work)
    report["machine"] = describe_machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
