"""Long recordings -> timestamped events (data flow: model -> detect -> events).

Detection, one file at a time, in constant memory (the audio is never read whole)::

    file blocks (``block_s`` each) -> mono -> resampled to the model's rate    (thce.audio.read.stream_audio)
      -> windows of the training clip length (``features.duration_s``) every ``hop_s``
      -> log-mel -> training normalisation -> model -> scores in [0, 1] (windows, L)
                                                                    (thce.detection.inference.ModelScorer)
      -> score over time (frames one hop long) -> median filter -> per-class threshold (chosen on the validation
         split) -> runs of frames -> merge gaps < min_gap_s, drop events < min_event_s -> events

The file is checked first (readable audio, at least one window long). Memory does not grow with the file: one
block, one window and one batch of windows are held, plus ``L`` floats per window for the scores.

- **Chunking.** :class:`thce.audio.read.StreamResampler` runs :func:`scipy.signal.resample_poly` on overlapping
  segments whose starts lie on the polyphase grid, so the concatenated output equals whole-file resampling (to float
  rounding); the tests check that the window scores do not depend on the block size. The last window is zero-padded
  past the end of the file (as training clips shorter than ``duration_s`` were); a file shorter than one window is
  an :class:`~thce.errors.AudioError` (not padded: a model's scores on mostly-padding windows are not calibrated).
- **Thresholds** (:mod:`thce.detection.thresholds`): ``"eer"`` (default) is each class's EER threshold on the
  checkpoint's validation scores (one-vs-all, :func:`thce.metrics.eer_threshold`); ``"far:0.01"`` is the lowest
  threshold whose false-alarm rate on the validation negatives is at most 1 %; a number is used for every class.
- **Localisation** (:func:`scores_to_events`, the rule in :mod:`thce.detection.localise`). Window scores become a
  score over time at hop resolution (each frame's score is the lowest of the windows whose support hears it), optionally
  median-filtered, then runs of frames at or above the class threshold are events; events of a class closer than
  ``min_gap_s`` are merged and events shorter than ``min_event_s`` dropped. Every event is at least one hop long
  and a longer run of detecting windows never gives a shorter event. Localisation error is under one hop plus
  the model's own blur: use a hop well below the 0.5 s DCASE collar for onset-accurate lists.

Events are :class:`thce.detection.events.Event` in a :class:`thce.detection.events.DetectionResult`;
:mod:`thce.detection.events` writes and reads them, :mod:`thce.detection.metrics` evaluates them (DCASE 2017 task 2).
The settings are :class:`thce.detection.config.DetectConfig`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thce.allocator import release_free_memory
from thce.audio.read import SILENCE_PEAK, AudioInfo, audio_info, resampled_length, stream_audio
from thce.detection.config import DetectConfig
from thce.detection.events import DetectionResult, Event
from thce.detection.frame_events import PostProcessing
from thce.detection.inference import ModelScorer, WindowScorer
from thce.detection.localise import (
    EventRules,
    curve_to_events,
    median_filter_curve,
    median_filter_frames,
    score_curve,
    stitch_frames,
)
from thce.detection.thresholds import class_thresholds, parse_threshold_rule, resolve_threshold_rule
from thce.errors import AudioError, ConfigError
from thce.progress import ProgressFn

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------- windows


def num_windows(samples: int, window: int, hop: int) -> int:
    """Windows of ``window`` samples every ``hop`` covering ``samples`` (the last zero-padded); 0 if too short."""
    if samples < window:
        return 0
    return 1 + -(-(samples - window) // hop)


def sliding_windows(blocks: Iterable[np.ndarray], *, window: int, hop: int) -> Iterator[np.ndarray]:
    """Windows ``(window,)`` starting at ``0, hop, 2 hop, ...`` over the concatenated ``blocks``; the last window,
    if the previous ones leave a tail uncovered, is zero-padded. Yields nothing for a signal shorter than
    ``window``.

    Each window is a read-only view into one reused buffer (one window plus one block long), valid until the next
    window is requested: copy it to keep it. Reusing the buffer keeps the process's memory flat over hours of
    audio (fresh arrays of varying sizes fragment the C heap).
    """
    if not 0 < hop <= window:
        raise ConfigError(f"hop ({hop} samples) must be in [1, window = {window}]")
    buf = np.zeros(2 * window, dtype=np.float32)
    n = 0  # valid samples: buf[:n]
    buf_start = 0  # sample index of buf[0]
    next_start = 0

    def view(lo: int, hi: int) -> np.ndarray:
        out = buf[lo:hi]
        out.flags.writeable = False
        return out

    for block in blocks:
        block = np.asarray(block, dtype=np.float32)
        if n + block.size > buf.size:  # rare: a block longer than the spare room
            grown = np.zeros(max(n + block.size, 2 * buf.size), dtype=np.float32)
            grown[:n] = buf[:n]
            buf = grown
        buf[n : n + block.size] = block
        n += block.size
        while next_start + window <= buf_start + n:
            yield view(next_start - buf_start, next_start - buf_start + window)
            next_start += hop
        drop = min(next_start - buf_start, n)
        if drop > 0:
            for lo in range(0, n - drop, drop):  # shift left in non-overlapping pieces (no temporary copy)
                hi = min(lo + drop, n - drop)
                buf[lo:hi] = buf[lo + drop : hi + drop]
            n -= drop
            buf_start += drop
    total = buf_start + n
    if total >= window and next_start - hop + window < total:  # a tail after the last full window
        offset = next_start - buf_start
        if buf.size < offset + window:
            grown = np.zeros(offset + window, dtype=np.float32)
            grown[:n] = buf[:n]
            buf = grown
        buf[n : offset + window] = 0.0
        yield view(offset, offset + window)


@dataclass
class FileScores:
    """Window scores of one file.

    Attributes:
        path: the file as given.
        scores: ``(K, L)`` float32, row ``k`` for the window starting at ``k * hop_s``; a frame-level model's
            ``(K, T', L)``: the scores of each window's output frames, ``frame_hop_s`` apart.
        classes: the L class names.
        hop_s, window_s: window spacing and length, seconds (at the model's rate: ``hop_samples / rate``).
        support_s: ``(start, stop)`` part of a window the model sees, seconds from the window's start.
        duration_s: length of the file, seconds.
        silent: ``(K,)`` bool, the windows that are digital silence (peak below :data:`thce.audio.SILENCE_PEAK`),
            which training rejects as clips (:class:`thce.audio.ClipChecks`): they detect nothing. None: unknown.
    """

    path: str
    scores: np.ndarray
    classes: tuple[str, ...]
    hop_s: float
    window_s: float
    support_s: tuple[float, float]
    duration_s: float
    silent: np.ndarray | None = None
    frame_hop_s: float | None = None

    @property
    def starts_s(self) -> np.ndarray:
        """``(K,)`` window start times, seconds."""
        return np.arange(self.scores.shape[0]) * self.hop_s


def check_audio(path: str | os.PathLike, scorer: WindowScorer) -> AudioInfo:
    """Open ``path`` (:func:`thce.audio.read.audio_info`) and check the model can take it (at least one window long).

    Raises:
        AudioError: naming the file and the problem.
    """
    info = audio_info(path)
    samples = resampled_length(info.frames, info.sample_rate_hz, scorer.sample_rate_hz)
    window_s = scorer.window_samples / scorer.sample_rate_hz
    if samples < scorer.window_samples:
        raise AudioError(
            info.path,
            f"{info.duration_s:.2f} s of audio is shorter than one detection window ({window_s:g} s, the length of the "
            "model's training clips); pad the file or use a model trained on shorter clips",
        )
    if info.sample_rate_hz < scorer.sample_rate_hz:
        log.warning(
            "%s: sampled at %d Hz, below the model's %d Hz: upsampled, nothing above %d Hz",
            info.path, info.sample_rate_hz, scorer.sample_rate_hz, info.sample_rate_hz // 2,
        )
    return info


def hop_samples_for(scorer: WindowScorer, hop_s: float | None) -> int:
    """Hop in samples at the model's rate; ``None`` = half the window. Raises ConfigError outside (0, window]."""
    window = scorer.window_samples
    hop = window // 2 if hop_s is None else round(hop_s * scorer.sample_rate_hz)
    if not 1 <= hop <= window:
        raise ConfigError(
            f"hop_s={hop_s}: expected a positive hop of at most one window ({window / scorer.sample_rate_hz:g} s)"
        )
    return max(1, hop)


#: Free heap memory kept between batches: more is given back to the OS (:func:`thce.allocator.release_free_memory`),
#: so the resident size stays flat however long the recording (benchmarks/detect.py's ``peak_rss_mb``).
KEEP_FREE_BYTES = 64 << 20


def score_file(
    path: str | os.PathLike,
    scorer: WindowScorer,
    *,
    hop_s: float | None = None,
    batch_size: int = 16,
    block_s: float = 10.0,
    progress: ProgressFn | None = None,
    info: AudioInfo | None = None,
) -> FileScores:
    """Score every window of ``path`` (see the module docstring), reading it in blocks of ``block_s`` seconds.

    ``progress(f"detect {name}", windows_done, windows_total)`` is called after each batch. ``info``: the file's
    :func:`check_audio` result when the caller has it (the file is then not opened and diagnosed again).

    Raises:
        AudioError: the file is missing, unreadable, holds NaN samples or is shorter than one window.
    """
    info = info if info is not None else check_audio(path, scorer)
    window, hop = scorer.window_samples, hop_samples_for(scorer, hop_s)
    total = num_windows(resampled_length(info.frames, info.sample_rate_hz, scorer.sample_rate_hz), window, hop)
    desc = f"detect {Path(info.path).name}"
    out: list[np.ndarray] = []
    silent: list[bool] = []
    batch = np.empty((batch_size, window), dtype=np.float32)  # reused: steady allocations keep memory flat
    filled = done = 0

    def flush() -> None:
        nonlocal done, filled
        scores = np.asarray(scorer(batch[:filled]), dtype=np.float32)
        if scores.shape[0] != filled or scores.shape[-1] != len(scorer.classes) or scores.ndim not in (2, 3):
            raise ValueError(f"scorer returned shape {scores.shape}, expected ({filled}, [frames,] {len(scorer.classes)})")
        out.append(scores)
        done += filled
        filled = 0
        release_free_memory(above_bytes=KEEP_FREE_BYTES)
        if progress is not None:
            progress(desc, done, max(total, done))

    blocks = stream_audio(info.path, sample_rate_hz=scorer.sample_rate_hz, block_s=block_s, info=info)
    for win in sliding_windows(blocks, window=window, hop=hop):
        silent.append(bool(np.abs(win).max(initial=0.0) < SILENCE_PEAK))  # training's check (ClipChecks)
        batch[filled] = win
        filled += 1
        if filled == batch_size:
            flush()
    if filled:
        flush()
    if not out:  # libsndfile's frame count was optimistic (e.g. a truncated file)
        raise AudioError(info.path, f"shorter than one detection window ({window / scorer.sample_rate_hz:g} s)")
    return FileScores(
        path=os.fspath(path),
        scores=np.concatenate(out),
        classes=tuple(scorer.classes),
        hop_s=hop / scorer.sample_rate_hz,
        window_s=window / scorer.sample_rate_hz,
        support_s=tuple(scorer.support_s),
        duration_s=info.duration_s,
        silent=np.array(silent, dtype=bool),
        frame_hop_s=getattr(scorer, "frame_hop_s", None),
    )


# ------------------------------------------------------------------------------------------- scores -> events


@dataclass
class FileDetection:
    """What detection found in one file: its window scores, the score over time and the events.

    Attributes:
        scores: the window scores (:class:`FileScores`).
        edges: ``(F + 1,)`` frame boundaries, seconds (frames one hop long,
            :func:`thce.detection.localise.frame_edges`).
        curve: ``(F, L)`` the score over time after the median filter: what is thresholded and saved.
        events: the file's events.
        thresholds: ``(L,)`` the class thresholds applied.
    """

    scores: FileScores
    edges: np.ndarray
    curve: np.ndarray
    events: list[Event]
    thresholds: np.ndarray


def scores_to_events(
    file_scores: FileScores,
    thresholds: np.ndarray,
    *,
    median_filter_s: float | None = None,
    events: EventRules = EventRules(),
    agreement: float = 0.5,
) -> list[Event]:
    """Window scores -> score over time -> events (the rule in :mod:`thce.detection.localise`).

    Args:
        file_scores: from :func:`score_file`.
        thresholds: ``(L,)``, a frame is active for class ``l`` iff its score ``>= thresholds[l]``.
        median_filter_s, events, agreement: see :class:`DetectConfig`.

    Returns:
        Events sorted by onset, then label; times rounded to milliseconds; each at least one hop long (or the file).
    """
    return detect_in_scores(
        file_scores, thresholds, median_filter_s=median_filter_s, events=events, agreement=agreement
    ).events


def detect_in_scores(
    file_scores: FileScores,
    thresholds: np.ndarray,
    *,
    median_filter_s: float | Sequence[float] | None = None,
    events: EventRules | Sequence[EventRules] = EventRules(),
    agreement: float = 0.5,
) -> FileDetection:
    """:func:`scores_to_events` keeping the score over time (for saving and plotting).

    A frame-level model's scores (``file_scores.frame_hop_s`` set) give the score over time directly: each frame of
    the file scores the mean of the windows covering it (:func:`thce.detection.localise.stitch_frames`); digital
    silence windows veto their frames, as for window scores. ``median_filter_s`` and ``events`` may then be one per
    class (those chosen on validation); ``agreement`` is for window scores only."""
    fs = file_scores
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thresholds.shape != (len(fs.classes),):
        raise ValueError(f"thresholds: expected shape ({len(fs.classes)},), got {thresholds.shape}")
    if fs.frame_hop_s is None:
        edges, curve = score_curve(
            fs.scores, hop_s=fs.hop_s, support_s=fs.support_s, duration_s=fs.duration_s, silent=fs.silent,
            agreement=agreement,
        )
        curve = median_filter_curve(curve, median_filter_frames(median_filter_s, hop_s=fs.hop_s, support_s=fs.support_s))
    else:
        edges, curve = _frame_curve(fs, median_filter_s)
    found = [Event(fs.path, *event) for event in curve_to_events(edges, curve, thresholds, fs.classes, events)]
    return FileDetection(fs, edges, curve, found, thresholds)


def _frame_curve(fs: FileScores, median_filter_s: float | Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    """A frame-level model's window scores -> the file's frame curve, silent windows' frames at -inf, median-filtered
    per class (``None``: off; one number: every class)."""
    assert fs.frame_hop_s is not None
    scores = fs.scores
    if fs.silent is not None and fs.silent.any():
        scores = scores.copy()
        scores[fs.silent] = -np.inf
    edges, curve = stitch_frames(scores, hop_s=fs.hop_s, frame_hop_s=fs.frame_hop_s, duration_s=fs.duration_s)
    lengths = [0.0] * len(fs.classes) if median_filter_s is None else median_filter_s
    if isinstance(lengths, (int, float)):
        lengths = [float(lengths)] * len(fs.classes)
    for column, seconds in enumerate(lengths):
        kernel = median_filter_frames(seconds, hop_s=fs.frame_hop_s, support_s=(0.0, 0.0))
        curve[:, column] = median_filter_curve(curve[:, column : column + 1], kernel)[:, 0]
    return edges, curve


# ---------------------------------------------------------------------------------------------------- detect

FileFn = Callable[[FileDetection], None]


def detect_files(
    paths: Sequence[str | os.PathLike],
    scorer: WindowScorer,
    thresholds: np.ndarray,
    *,
    config: DetectConfig | None = None,
    progress: ProgressFn | None = None,
    skip_bad: bool = False,
    on_file: FileFn | None = None,
    frame_post: PostProcessing | None = None,
) -> DetectionResult:
    """Detect events in each file.

    ``frame_post``: a frame-level model's post-processing chosen on validation; its per-class median filters are
    used where ``config.median_filter_s`` is ``None``, its per-class gap and length rules where ``config.events``
    is ``None``.

    Every file is checked (readable, one window long) before any is scored. Without ``skip_bad`` the first bad
    file stops everything; with it, bad files (at the check or while being read) are left out and listed in
    ``result.skipped`` with the reason. ``on_file(FileDetection)`` is called after each file (to save its scores
    or draw it while the next is scored). ``progress(desc, seconds_done, seconds_total)`` counts audio seconds
    over all files; ``desc`` names the file and its place in the list.

    Raises:
        AudioError: naming the first file the model cannot take (without ``skip_bad``).
    """
    config = config or DetectConfig()
    config.validate()
    skipped: list[dict[str, str]] = []
    good: list[tuple[str | os.PathLike, AudioInfo]] = []
    for path in paths:
        try:
            good.append((path, check_audio(path, scorer)))
        except AudioError as error:
            if not skip_bad:
                raise
            skipped.append({"file": os.fspath(path), "reason": error.problem})
            log.warning("skipped %s", error)
    hop = hop_samples_for(scorer, config.hop_s)
    total_s = sum(info.duration_s for _, info in good)
    files: list[dict[str, Any]] = []
    events: list[Event] = []
    kernel = 1
    rules: EventRules | list[EventRules] = config.events or EventRules()
    done_s = 0.0
    for i, (path, info) in enumerate(good, start=1):
        desc, duration_s = f"detect [{i}/{len(good)}] {Path(path).name}", info.duration_s

        def file_progress(_desc: str, done: int, total: int, base: float = done_s, dur: float = duration_s) -> None:
            if progress is not None:
                progress(desc, int(round(base + dur * done / max(total, 1))), int(round(total_s)))

        try:
            fs = score_file(
                path, scorer, hop_s=config.hop_s, batch_size=config.batch_size, block_s=config.block_s,
                progress=file_progress, info=info,
            )
        except AudioError as error:  # e.g. a file truncated after its header
            if not skip_bad:
                raise
            skipped.append({"file": os.fspath(path), "reason": error.problem})
            log.warning("skipped %s", error)
            done_s += duration_s
            continue
        done_s += duration_s
        median: float | Sequence[float] | None = config.median_filter_s
        rules = config.events or EventRules()
        if fs.frame_hop_s is not None:
            if median is None and frame_post is not None:
                median = [frame_post.median_filter_s[c] for c in fs.classes]
            if config.events is None and frame_post is not None:
                rules = [frame_post.rules(c) for c in fs.classes]
            kernel = [median_filter_frames(m, hop_s=fs.frame_hop_s, support_s=(0.0, 0.0))
                      for m in (median if isinstance(median, Sequence) else [median or 0.0] * len(fs.classes))]  # fmt: skip
        else:
            kernel = median_filter_frames(config.median_filter_s, hop_s=fs.hop_s, support_s=fs.support_s)
        found = detect_in_scores(fs, thresholds, median_filter_s=median, events=rules, agreement=config.agreement)
        files.append({"file": fs.path, "duration_s": round(fs.duration_s, 6), "windows": int(fs.scores.shape[0])})
        quiet = int(fs.silent.sum()) if fs.silent is not None else 0
        if quiet:
            files[-1]["silent_windows"] = quiet
            where = "throughout" if quiet == fs.scores.shape[0] else f"in {quiet} of {fs.scores.shape[0]} windows"
            log.warning(
                "%s: digital silence %s (peak below %.1e, which training rejects as a clip): no events there",
                fs.path, where, SILENCE_PEAK,
            )  # fmt: skip
        events.extend(found.events)
        if on_file is not None:
            on_file(found)
        log.info("%s: %.1f s, %d windows, %d events", fs.path, fs.duration_s, fs.scores.shape[0], len(found.events))
    settings = {
        "window_s": scorer.window_samples / scorer.sample_rate_hz,
        "hop_s": hop / scorer.sample_rate_hz,
        "support_s": [round(float(v), 6) for v in scorer.support_s],
        "median_filter_frames": kernel,
        **_rules_settings(rules, scorer.classes),
        "agreement": config.agreement,
        "threshold_rule": str(config.threshold),
        "sample_rate_hz": scorer.sample_rate_hz,
    }
    return DetectionResult(
        files=files,
        events=events,
        thresholds={name: float(t) for name, t in zip(scorer.classes, np.asarray(thresholds).tolist())},
        settings=settings,
        skipped=skipped,
    )


def run_thresholds(loaded: Any, rule: str | float) -> tuple[np.ndarray, PostProcessing | None]:
    """A checkpoint's per-class thresholds for ``rule`` (``"auto"``: the post-processing chosen on validation event F
    for a frame-level run, the EER threshold otherwise) and, for a frame-level run, its whole post-processing."""
    frames = loaded.frames
    rule = resolve_threshold_rule(rule, frame_level=frames is not None)
    post = None if frames is None else PostProcessing.from_dict(frames["post_processing"], loaded.classes)
    if parse_threshold_rule(rule)[0] == "events":
        assert post is not None  # resolve_threshold_rule refuses "events" for a clip-level run
        return np.array([post.thresholds[c] for c in loaded.classes], dtype=np.float64), post
    thresholds = class_thresholds(
        val_scores=loaded.val_scores, val_class_index=loaded.val_class_index, classes=loaded.classes, rule=rule
    )
    return thresholds, post


def _rules_settings(rules: EventRules | Sequence[EventRules], classes: Sequence[str]) -> dict[str, Any]:
    """``min_event_s`` and ``min_gap_s`` as detect's settings record them: one number, or one per class."""
    if isinstance(rules, EventRules):
        return dataclasses.asdict(rules)
    return {key: {c: getattr(r, key) for c, r in zip(classes, rules)} for key in ("min_event_s", "min_gap_s")}


def detect_run(
    run_dir: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    *,
    method: str = "proposed2",
    config: DetectConfig | None = None,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    skip_bad: bool = False,
    on_file: FileFn | None = None,
) -> DetectionResult:
    """:func:`detect_files` with the ``method`` checkpoint of a run directory and thresholds from its validation
    scores (``config.threshold``)."""
    from thce.checkpoint import load_run

    config = config or DetectConfig()
    config.validate()
    loaded = load_run(run_dir, method)
    scorer = ModelScorer(loaded, device=device)
    thresholds, post = run_thresholds(loaded, config.threshold)
    result = detect_files(
        paths, scorer, thresholds, config=config, progress=progress, skip_bad=skip_bad, on_file=on_file,
        frame_post=post,
    )
    rule = resolve_threshold_rule(config.threshold, frame_level=loaded.frames is not None)  # what "auto" became
    result.settings = {"run_dir": os.fspath(run_dir), "method": method, **result.settings, "threshold_rule": str(rule)}
    return result
