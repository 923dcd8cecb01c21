"""Long recordings -> timestamped events, and their DCASE-style evaluation (data flow: model -> detect -> events).

Detection, one file at a time, in constant memory (the audio is never read whole)::

    file blocks (``block_s`` each) -> mono -> resampled to the model's rate    (thce.audio.read.stream_audio)
      -> windows of the training clip length (``features.duration_s``) every ``hop_s``
      -> log-mel (thce.audio.LogMel) -> training normalisation -> model -> scores in [0, 1] (windows, L)
      -> per-class threshold (chosen on the validation split) -> median filter over windows -> runs -> events

The file is checked first (readable audio, at least one window long). Memory does not grow with the file: one
block, one window and one batch of windows are held, plus ``L`` floats per window for the scores.

- **Chunking.** :class:`thce.audio.read.StreamResampler` runs :func:`scipy.signal.resample_poly` on overlapping
  segments whose starts lie on the polyphase grid, so the concatenated output equals whole-file resampling (to float
  rounding); the tests check that the window scores do not depend on the block size. The last window is zero-padded
  past the end of the file (as training clips shorter than ``duration_s`` were); a file shorter than one window is
  an :class:`~thce.errors.AudioError` (not padded: a model's scores on mostly-padding windows are not calibrated).
- **Thresholds** (:func:`class_thresholds`): ``"eer"`` (default) is each class's EER threshold on the checkpoint's
  validation scores (one-vs-all, :func:`thce.metrics.eer_threshold`); ``"far:0.01"`` is the lowest threshold whose
  false-alarm rate on the validation negatives is at most 1 %; a number is used for every class.
- **Localisation** (:func:`scores_to_events`). A window "sees" only its *support*, the span of frames that can
  change the model's output (:func:`receptive_field`; the paper's CNN pools away the end of the clip). A run of
  consecutive detecting windows ``k1..k2`` becomes one event between ``p = end of window k1's support - hop/2`` and
  ``q = start of window k2's support + hop/2`` (whichever comes first is the onset). Whether the model fires on any
  part of an event (then the first detecting window ends just after the onset and the last starts just before the
  offset) or only on whole events (then the first ends at the offset and the last starts at the onset), the event
  lies between those two edges; the ``hop/2`` puts each edge in the middle of the hop that brackets it. A run that
  touches the start (end) of the file starts at 0 (ends at the file's end). Localisation error is about ``hop``
  plus the model's own blur: use a hop well below the 0.5 s DCASE collar for onset-accurate lists.
- **Median filter** over the per-window decisions of each class, ``median_filter_s / hop`` windows (made odd;
  default a quarter of the window's support); it removes detections shorter than half the kernel and fills gaps.

Event lists (:func:`write_events`, :func:`read_event_list`) follow the DCASE convention: tab-separated, one event
per line, ``filename<TAB>onset<TAB>offset<TAB>event_label`` in seconds, here with a header line and a ``score``
column (DCASE 2018+ task 4 style), and a line with the file name alone for a file without events (DCASE 2017
task 2 style), so that evaluation knows the file was processed. JSON output uses the project's names
(``file, onset_s, offset_s, label, score``).

Evaluation (:func:`evaluate_events`) is the DCASE 2017 task 2 metric: event-based error rate and F-score, onset
only, with a 500 ms collar, computed as ``sed_eval.sound_event.EventBasedMetrics(t_collar=0.5,
evaluate_onset=True, evaluate_offset=False)`` does (maximum bipartite matching of same-label events whose onsets
are within the collar; left-over pairs within the collar are substitutions). sed_eval itself is not a dependency:
its dcase_util no longer imports on current setuptools (``pkg_resources``); the tests pin our numbers to
sed_eval's on fixed examples.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from thce.audio.logmel import LogMel
from thce.audio.read import SILENCE_PEAK, AudioInfo, audio_info, resampled_length, stream_audio
from thce.errors import AudioError, ConfigError, DataError
from thce.io import atomic_write, write_json

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]

#: DCASE 2017 task 2: onsets within 500 ms of the reference count as correct.
DCASE_COLLAR_S = 0.5
#: Columns of the tab-separated event list (DCASE names) and of JSON events (project names).
TSV_COLUMNS = ("filename", "onset", "offset", "event_label", "score")


class Event(NamedTuple):
    """One detected (or reference) event; times in seconds from the start of the file; ``score`` is the highest
    window score of the run (NaN in reference lists)."""

    file: str
    onset_s: float
    offset_s: float
    label: str
    score: float = math.nan


# ---------------------------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class DetectConfig:
    """How to slide over recordings and turn scores into events.

    Attributes:
        hop_s: seconds between window starts; ``None`` = half the window (50 % overlap). At most one window.
        threshold: ``"eer"``, ``"far:<rate>"`` (e.g. ``"far:0.01"``) or a number, see :func:`class_thresholds`.
        median_filter_s: median filter length over per-window decisions, seconds; ``None`` = a quarter of the
            window's support, ``0`` = off.
        batch_size: windows handed to the scorer at once (memory ~ batch_size x window); the model itself runs
            in cache-sized passes (:class:`ModelScorer`).
        block_s: seconds of the file read per block (memory ~ block_s x channels).
    """

    hop_s: float | None = None
    threshold: str = "eer"
    median_filter_s: float | None = None
    batch_size: int = 16
    block_s: float = 10.0

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad value."""
        for name in ("hop_s", "median_filter_s"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0):
                raise ConfigError(f"detect {name}: expected a non-negative number or None, got {value!r}")
        if self.hop_s is not None and self.hop_s <= 0:
            raise ConfigError(f"detect hop_s: expected a positive number of seconds, got {self.hop_s!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"detect batch_size: expected a positive integer, got {self.batch_size!r}")
        if not isinstance(self.block_s, (int, float)) or not self.block_s > 0:
            raise ConfigError(f"detect block_s: expected a positive number of seconds, got {self.block_s!r}")
        parse_threshold_rule(self.threshold)


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


# --------------------------------------------------------------------------------------------------- scoring


class WindowScorer(Protocol):
    """Anything that scores windows of raw audio: ``(B, window_samples)`` float32 at ``sample_rate_hz`` ->
    ``(B, L)`` scores in [0, 1], one column per name in ``classes``. ``support_s = (start, stop)`` is the part of a
    window (seconds from its start) that can change the scores."""

    classes: tuple[str, ...]
    sample_rate_hz: int
    window_samples: int
    support_s: tuple[float, float]

    def __call__(self, windows: np.ndarray) -> np.ndarray: ...


def receptive_field(model: torch.nn.Module, *, frames: int, n_mels: int) -> tuple[int, int]:
    """Frames ``[start, stop)`` of a ``(frames, n_mels)`` input that can change ``model``'s output.

    Found structurally: frames set to NaN poison every output that depends on them (convolution, ReLU, max-pooling
    and LSTM steps all propagate NaN), and a frame that does not reach the output leaves it finite. A binary
    search over prefixes and suffixes needs about ``2 log2(frames)`` forward passes of one window. The paper's CNN
    with Keras "valid" pooling ignores the end of the clip (for 1000 frames it sees about the first 505).
    """

    def finite_when_nan(sl: slice) -> bool:
        x = torch.zeros(1, frames, n_mels)
        x[:, sl] = math.nan
        with torch.inference_mode():
            return bool(torch.isfinite(model(x)).all())

    lo, hi = 0, frames  # stop: smallest s such that frames [s:] do not matter
    while lo < hi:
        mid = (lo + hi) // 2
        if finite_when_nan(slice(mid, frames)):
            hi = mid
        else:
            lo = mid + 1
    stop = lo
    lo, hi = 0, stop  # start: largest s such that frames [:s] do not matter
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if finite_when_nan(slice(0, mid)):
            lo = mid
        else:
            hi = mid - 1
    start = lo
    if start >= stop:  # nothing reaches the output (a constant model): treat the whole window as seen
        return 0, frames
    return start, stop


def detection_scores(model: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
    """``(B, frames, n_mels)`` normalised log-mel -> ``(B, L)`` scores in [0, 1]: the model's own
    ``detection_scores`` (sigmoid, or the score of an imbalance loss) when it has one, else the sigmoid."""
    outputs = model(features)
    to_scores = getattr(model, "detection_scores", None)
    return torch.sigmoid(outputs) if to_scores is None else to_scores(outputs)


#: Activation memory per forward pass that keeps the network's intermediate maps in the CPU caches (see
#: :func:`cache_friendly_batch`).
CACHE_BUDGET_BYTES = 8 << 20


def largest_activation_bytes(model: torch.nn.Module, *, frames: int, n_mels: int) -> int:
    """Bytes of the largest intermediate output of ``model`` for one ``(frames, n_mels)`` window (float32)."""
    largest = 0

    def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal largest
        tensors = output if isinstance(output, (tuple, list)) else (output,)
        for t in tensors:
            if isinstance(t, torch.Tensor):
                largest = max(largest, t.numel() * 4)

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, frames, n_mels))
    finally:
        for handle in handles:
            handle.remove()
    return largest


def cache_friendly_batch(model: torch.nn.Module, *, frames: int, n_mels: int, limit: int) -> int:
    """Windows per forward pass on the CPU: as many as keep the largest activation within ``CACHE_BUDGET_BYTES``
    (at most ``limit``, at least 1).

    The paper's CNN makes a 32 x 994 x 58 map (7.4 MB) per 10 s window: one window at a time it stays in cache and
    runs about 3x faster per window than in batches of 16 (measured on 2 cores); the LSTM's maps are small and it
    gains from batching.
    """
    per_window = largest_activation_bytes(model, frames=frames, n_mels=n_mels)
    return int(max(1, min(limit, CACHE_BUDGET_BYTES // max(per_window, 1))))


class ModelScorer:
    """A trained detector as a :class:`WindowScorer`: raw windows -> log-mel -> training normalisation -> model ->
    scores (:func:`detection_scores`), in ``torch.inference_mode``.

    Two exact shortcuts, both checked against the plain path on random audio when the scorer is built (and dropped
    if the scores differ by more than 1e-6):

    - forward passes of ``model_batch`` windows, on the CPU chosen by :func:`cache_friendly_batch`;
    - when the model's receptive field ends before the window does (the paper's CNN with ``cnn_padding = "valid"``
      sees frames 0-535 of 1000; with the default ``"same"`` it sees all), only the audio those frames need is
      analysed and only those frames are fed to the network, which then computes the same outputs for half the work.

    Args:
        loaded: from :func:`thce.checkpoint.load_run`.
        device: torch device for the model and the log-mel.
        max_batch: most windows per forward pass.
    """

    def __init__(self, loaded: Any, *, device: str | torch.device = "cpu", max_batch: int = 16) -> None:
        self.loaded = loaded
        cfg = loaded.config.features
        self.features = cfg
        self.classes: tuple[str, ...] = tuple(loaded.classes)
        self.sample_rate_hz = int(cfg.sample_rate_hz)
        self.window_samples = int(cfg.clip_samples)
        self.device = torch.device(device)
        model = loaded.model.cpu().eval()
        first, stop = receptive_field(model, frames=cfg.num_frames, n_mels=cfg.n_mels)
        self.support_frames = (first, stop)
        hop_s, half_win_s = cfg.hop_ms / 1000.0, cfg.frame_length_ms / 2000.0
        start_s = 0.0 if first == 0 else max(0.0, first * hop_s - half_win_s)
        stop_s = cfg.duration_s if stop == cfg.num_frames else min(cfg.duration_s, (stop - 1) * hop_s + half_win_s)
        self.support_s = (start_s, stop_s)
        if self.device.type == "cpu":
            self.model_batch = cache_friendly_batch(model, frames=cfg.num_frames, n_mels=cfg.n_mels, limit=max_batch)
        else:
            self.model_batch = max_batch
        self.model = model.to(self.device)
        self.logmel = LogMel(cfg).to(self.device)
        self.mean = torch.as_tensor(loaded.normaliser.mean, dtype=torch.float32, device=self.device)
        self.inv_std = torch.as_tensor(1.0 / loaded.normaliser.std, dtype=torch.float32, device=self.device)
        # frames [0, stop) are computed from samples before (stop - 1) * hop + n_fft / 2 (centred frames)
        self.crop_frames: int | None = None
        self.crop_samples: int | None = None
        if stop < cfg.num_frames:
            self.crop_frames = stop
            self.crop_samples = min(self.window_samples, (stop - 1) * cfg.hop_samples + cfg.n_fft // 2 + 1)
            probe = np.random.default_rng(0).standard_normal((3, self.window_samples)).astype(np.float32) * 0.1
            plain = self._score(torch.from_numpy(probe), crop=False, batch=1)
            fast = self._score(torch.from_numpy(probe), crop=True, batch=self.model_batch)
            if not np.allclose(plain, fast, rtol=0.0, atol=1e-6):
                log.warning("model outputs change when frames beyond its receptive field are cut; not cutting")
                self.crop_frames = self.crop_samples = None

    def _score(self, audio: torch.Tensor, *, crop: bool, batch: int) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, audio.shape[0], batch):
                x = audio[start : start + batch].to(self.device)
                if crop and self.crop_samples is not None:
                    feats = self.logmel(x[:, : self.crop_samples])[:, : self.crop_frames]
                else:
                    feats = self.logmel(x)
                feats = (feats - self.mean) * self.inv_std
                out.append(detection_scores(self.model, feats).float().cpu())
        return torch.cat(out).numpy()

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """``(B, window_samples)`` float32 -> ``(B, L)`` float32 scores in [0, 1]."""
        audio = torch.as_tensor(np.asarray(windows, dtype=np.float32))
        return self._score(audio, crop=True, batch=self.model_batch)


@dataclass
class FileScores:
    """Window scores of one file.

    Attributes:
        path: the file as given.
        scores: ``(K, L)`` float32, row ``k`` for the window starting at ``k * hop_s``.
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


_LIBC: Any = None


def release_free_memory() -> None:
    """Return freed C-heap memory to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Tensors of a few MB are allocated and freed for every batch; glibc then keeps growing its heap (its mmap
    threshold adapts upwards) and the resident size creeps up for the first half hour of audio. Trimming after
    each batch keeps it flat (measured in benchmarks/detect.py); it costs well under a millisecond.
    """
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            _LIBC = libc if hasattr(libc, "malloc_trim") else False
        except OSError:
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


def score_file(
    path: str | os.PathLike,
    scorer: WindowScorer,
    *,
    hop_s: float | None = None,
    batch_size: int = 16,
    block_s: float = 10.0,
    progress: ProgressFn | None = None,
) -> FileScores:
    """Score every window of ``path`` (see the module docstring), reading it in blocks of ``block_s`` seconds.

    ``progress(f"detect {name}", windows_done, windows_total)`` is called after each batch.

    Raises:
        AudioError: the file is missing, unreadable, holds NaN samples or is shorter than one window.
    """
    info = check_audio(path, scorer)
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
        if scores.shape != (filled, len(scorer.classes)):
            raise ValueError(f"scorer returned shape {scores.shape}, expected {(filled, len(scorer.classes))}")
        out.append(scores)
        done += filled
        filled = 0
        release_free_memory()
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
    )


# ------------------------------------------------------------------------------------------------ thresholds


def parse_threshold_rule(rule: str | float) -> tuple[str, float]:
    """``"eer"`` -> ("eer", nan); ``"far:0.01"`` -> ("far", 0.01); ``"0.5"`` or 0.5 -> ("fixed", 0.5)."""
    if isinstance(rule, (int, float)) and not isinstance(rule, bool):
        text = str(rule)
    elif isinstance(rule, str):
        text = rule.strip().lower()
    else:
        raise ConfigError(f"threshold: expected 'eer', 'far:RATE' or a number, got {rule!r}")
    if text == "eer":
        return "eer", math.nan
    if text.startswith("far:"):
        try:
            rate = float(text[4:])
        except ValueError:
            rate = math.nan
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"threshold {rule!r}: expected far:RATE with RATE in [0, 1), e.g. far:0.01")
        return "far", rate
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"threshold {rule!r}: expected 'eer', 'far:RATE' (e.g. far:0.01) or a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"threshold {rule!r}: expected a finite number")
    return "fixed", value


def far_threshold(negative_scores: np.ndarray, target_far: float) -> float:
    """Lowest threshold ``t`` (detect iff ``score >= t``) with at most ``floor(target_far * n)`` of the ``n``
    negative scores detected, i.e. false-alarm rate <= ``target_far``.

    >>> far_threshold(np.array([0.1, 0.2, 0.3, 0.9]), 0.25)  # one false alarm allowed: just above 0.3
    0.30000000000000004
    """
    neg = np.sort(np.asarray(negative_scores, dtype=np.float64))[::-1]
    if neg.size == 0:
        raise ValueError("far_threshold: no negative scores")
    allowed = math.floor(target_far * neg.size + 1e-9)
    if allowed >= neg.size:
        return float(neg[-1])
    return float(np.nextafter(neg[allowed], np.inf))


def class_thresholds(
    *, val_scores: np.ndarray, val_class_index: np.ndarray, classes: Sequence[str], rule: str | float = "eer"
) -> np.ndarray:
    """Per-class detection thresholds ``(L,)`` from validation scores (one-vs-all: negatives are all other clips).

    Args:
        val_scores: ``(n, L)`` sigmoid scores of the validation clips.
        val_class_index: ``(n,)`` class of each clip, ``L`` for background.
        classes: the L names (for messages).
        rule: ``"eer"``, ``"far:RATE"`` or a number (see :func:`parse_threshold_rule`).

    Raises:
        DataError: a class lacks the validation positives or negatives the rule needs (named).
    """
    from thce.metrics import eer_threshold

    kind, value = parse_threshold_rule(rule)
    scores = np.asarray(val_scores, dtype=np.float64)
    index = np.asarray(val_class_index)
    out = np.empty(len(classes), dtype=np.float64)
    for column, name in enumerate(classes):
        if kind == "fixed":
            out[column] = value
            continue
        positive = index == column
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_neg == 0 or (kind == "eer" and n_pos == 0):
            raise DataError(
                f"class {name!r}: the validation split has {n_pos} positive and {n_neg} negative clips, too few for "
                f"a {kind.upper()} threshold; use --threshold far:RATE or a number"
            )
        if kind == "eer":
            out[column] = eer_threshold(scores=scores[:, column], is_positive=positive)
        else:
            out[column] = far_threshold(scores[~positive, column], value)
    return out


# ------------------------------------------------------------------------------------------- scores -> events


def median_filter_windows(median_filter_s: float | None, *, hop_s: float, support_s: tuple[float, float]) -> int:
    """Median filter length in windows (odd, >= 1) for ``median_filter_s`` seconds (None: a quarter of the support)."""
    seconds = (support_s[1] - support_s[0]) / 4.0 if median_filter_s is None else median_filter_s
    n = max(1, int(round(seconds / hop_s)))
    return n if n % 2 else n + 1 if n > 1 else 1


def median_filter_decisions(active: np.ndarray, kernel: int) -> np.ndarray:
    """Majority vote of ``kernel`` (odd) neighbouring windows per class; ``active`` ``(K, L)`` bool -> same shape.
    The edges repeat the first and last decision."""
    if kernel <= 1 or active.shape[0] == 0:
        return active.copy()
    from scipy.ndimage import median_filter

    return median_filter(active.astype(np.uint8), size=(kernel, 1), mode="nearest").astype(bool)


def _runs(active: np.ndarray) -> list[tuple[int, int]]:
    """``(first, last)`` window indices of each run of True in a 1-D bool array."""
    padded = np.r_[False, active, False].astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def scores_to_events(
    file_scores: FileScores, thresholds: np.ndarray, *, median_filter_s: float | None = None
) -> list[Event]:
    """Threshold, median-filter and merge window scores into events (localisation rule in the module docstring).

    Args:
        file_scores: from :func:`score_file`.
        thresholds: ``(L,)``, a window detects class ``l`` iff ``score >= thresholds[l]``.
        median_filter_s: see :class:`DetectConfig`.

    Returns:
        Events sorted by onset, then label; times rounded to milliseconds.
    """
    fs = file_scores
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thresholds.shape != (len(fs.classes),):
        raise ValueError(f"thresholds: expected shape ({len(fs.classes)},), got {thresholds.shape}")
    kernel = median_filter_windows(median_filter_s, hop_s=fs.hop_s, support_s=fs.support_s)
    active = fs.scores.astype(np.float64) >= thresholds[None, :]
    silent = fs.silent if fs.silent is not None and fs.silent.shape == (active.shape[0],) else None
    if silent is not None:  # digital silence detects nothing (training rejects such clips), not even by the filter
        active[silent] = False
    active = median_filter_decisions(active, kernel)
    if silent is not None:
        active[silent] = False
    last_window = fs.scores.shape[0] - 1
    a, b = fs.support_s
    events: list[Event] = []
    for column, label in enumerate(fs.classes):
        for first, last in _runs(active[:, column]):
            p = first * fs.hop_s + b - fs.hop_s / 2.0  # end of the first detecting window's support
            q = last * fs.hop_s + a + fs.hop_s / 2.0  # start of the last one's
            onset, offset = min(p, q), max(p, q)
            if first == 0:
                onset = 0.0
            if last == last_window:
                offset = fs.duration_s
            onset = min(max(onset, 0.0), fs.duration_s)
            offset = min(max(offset, onset), fs.duration_s)
            score = float(fs.scores[first : last + 1, column].max())
            events.append(Event(fs.path, round(onset, 3), round(offset, 3), label, round(score, 6)))
    events.sort(key=lambda e: (e.onset_s, e.label))
    return events


# ---------------------------------------------------------------------------------------------------- detect


@dataclass
class DetectionResult:
    """Events of several files and how they were found.

    Attributes:
        files: ``[{"file": path, "duration_s": float, "windows": int}, ...]`` in input order.
        events: all events, grouped by file in input order, by onset within a file.
        thresholds: ``{class: threshold}``.
        settings: hop, window, support, median filter, threshold rule (for the JSON output).
    """

    files: list[dict[str, Any]]
    events: list[Event]
    thresholds: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)


def detect_files(
    paths: Sequence[str | os.PathLike],
    scorer: WindowScorer,
    thresholds: np.ndarray,
    *,
    config: DetectConfig | None = None,
    progress: ProgressFn | None = None,
) -> DetectionResult:
    """Detect events in each file. Every file is checked (readable, one window long) before any is scored.

    Raises:
        AudioError: naming the first file the model cannot take.
    """
    config = config or DetectConfig()
    config.validate()
    for path in paths:
        check_audio(path, scorer)
    hop = hop_samples_for(scorer, config.hop_s)
    files: list[dict[str, Any]] = []
    events: list[Event] = []
    kernel = 1
    for path in paths:
        fs = score_file(
            path, scorer, hop_s=config.hop_s, batch_size=config.batch_size, block_s=config.block_s, progress=progress
        )
        kernel = median_filter_windows(config.median_filter_s, hop_s=fs.hop_s, support_s=fs.support_s)
        found = scores_to_events(fs, thresholds, median_filter_s=config.median_filter_s)
        files.append({"file": fs.path, "duration_s": round(fs.duration_s, 6), "windows": int(fs.scores.shape[0])})
        quiet = int(fs.silent.sum()) if fs.silent is not None else 0
        if quiet:
            files[-1]["silent_windows"] = quiet
            where = "throughout" if quiet == fs.scores.shape[0] else f"in {quiet} of {fs.scores.shape[0]} windows"
            log.warning(
                "%s: digital silence %s (peak below %.1e, which training rejects as a clip): no events there",
                fs.path, where, SILENCE_PEAK,
            )  # fmt: skip
        events.extend(found)
        log.info("%s: %.1f s, %d windows, %d events", fs.path, fs.duration_s, fs.scores.shape[0], len(found))
    settings = {
        "window_s": scorer.window_samples / scorer.sample_rate_hz,
        "hop_s": hop / scorer.sample_rate_hz,
        "support_s": [round(float(v), 6) for v in scorer.support_s],
        "median_filter_windows": kernel,
        "threshold_rule": str(config.threshold),
        "sample_rate_hz": scorer.sample_rate_hz,
    }
    return DetectionResult(
        files=files,
        events=events,
        thresholds={name: float(t) for name, t in zip(scorer.classes, np.asarray(thresholds).tolist())},
        settings=settings,
    )


def detect_run(
    run_dir: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    *,
    method: str = "proposed2",
    config: DetectConfig | None = None,
    device: str = "cpu",
    progress: ProgressFn | None = None,
) -> DetectionResult:
    """:func:`detect_files` with the ``method`` checkpoint of a run directory and thresholds from its validation
    scores (``config.threshold``)."""
    from thce.checkpoint import load_run

    config = config or DetectConfig()
    config.validate()
    loaded = load_run(run_dir, method)
    scorer = ModelScorer(loaded, device=device)
    thresholds = class_thresholds(
        val_scores=loaded.val_scores, val_class_index=loaded.val_class_index, classes=loaded.classes,
        rule=config.threshold,
    )
    result = detect_files(paths, scorer, thresholds, config=config, progress=progress)
    result.settings = {"run_dir": os.fspath(run_dir), "method": method, **result.settings}
    return result


# ------------------------------------------------------------------------------------------------ event lists


def write_events(path: str | os.PathLike, result: DetectionResult) -> Path:
    """Write ``result`` atomically: JSON for ``*.json``, otherwise the tab-separated DCASE event list (module
    docstring). Returns the path."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return write_json(
            path,
            {
                "settings": result.settings,
                "thresholds": result.thresholds,
                "files": result.files,
                "events": [e._asdict() for e in result.events],
            },
        )
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        write_event_tsv(handle, result)
    return path


def write_event_tsv(handle: Any, result: DetectionResult) -> None:
    """The tab-separated event list of ``result`` to an open text ``handle``."""
    writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
    writer.writerow(TSV_COLUMNS)
    by_file: dict[str, list[Event]] = {}
    for event in result.events:
        by_file.setdefault(event.file, []).append(event)
    for entry in result.files:
        found = by_file.get(entry["file"], [])
        if not found:
            writer.writerow([entry["file"]])
        for e in found:
            writer.writerow([e.file, f"{e.onset_s:.3f}", f"{e.offset_s:.3f}", e.label, f"{e.score:.6f}"])


@dataclass(frozen=True)
class EventList:
    """Events and the files they were looked for in (a file may have none). Files are keyed by base name;
    ``source`` is where the list was read from (for messages)."""

    files: tuple[str, ...]
    events: tuple[Event, ...]
    source: str = ""

    @property
    def all_files(self) -> list[str]:
        """The listed files and the files of the events, in first-seen order."""
        return list(dict.fromkeys([*self.files, *(e.file for e in self.events)]))


#: Extensions a file name alone on a line of a DCASE event list may have (a line holding anything else is an error:
#: a config or a space-separated list is not read as a list of files without events).
EVENT_LIST_AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_event_list(path: str | os.PathLike) -> EventList:
    """Read events from any of:

    - a thce detection JSON (``{"files": [...], "events": [...]}``);
    - a DCASE event list: tab-separated ``filename, onset, offset, event_label[, ...]`` with or without a header
      line; a line with only a file name lists a file without events;
    - a manifest CSV with ``path,label`` and ``onset_s,offset_s`` columns (e.g. from the synthetic scenes): a row
      with a label is an event, a background row (empty label) a file without events.

    File names are reduced to their base name (as DCASE does) and must then be unique.

    Raises:
        DataError: the file is missing or malformed (with the line number).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: event list not found" if not path.exists() else f"{path}: not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not an event list (not UTF-8 text)") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
    if path.suffix.lower() == ".json":
        listed = _read_json_events(path, text)
    else:
        first = next((line for line in text.splitlines() if line.strip()), "")
        columns = {c.strip() for c in first.split(",")}
        if "\t" not in first and "," in first and {"path", "onset_s", "offset_s"} <= columns:
            listed = _read_manifest_events(path)
        else:
            listed = _read_tsv_events(path, text)
    if not listed.files and not listed.events:
        raise DataError(f"{path}: no events and no files: not an event list (expected {_TSV_FORM})")
    return EventList(listed.files, listed.events, str(path))


_TSV_FORM = "filename<TAB>onset<TAB>offset<TAB>event_label lines, or a file name alone for a file without events"


class _FileKeys:
    """Base names of the files of one list, in first-seen order; two different paths may not share one."""

    def __init__(self) -> None:
        self.full: dict[str, str] = {}

    def key(self, name: str, where: str) -> str:
        base = Path(name.replace("\\", "/")).name
        if not base:
            raise DataError(f"{where}: empty file name")
        seen = self.full.setdefault(base, name)
        if seen != name:
            raise DataError(
                f"{where}: files {seen!r} and {name!r} share the base name {base!r}; event lists key files by base name"
            )
        return base

    @property
    def order(self) -> list[str]:
        return list(self.full)


def _event(keys: _FileKeys, where: str, name: str, onset: Any, offset: Any, label: str, score: Any = math.nan) -> Event:
    try:
        on, off = float(onset), float(offset)
        sc = math.nan if score in (None, "") else float(score)
    except (TypeError, ValueError):
        raise DataError(f"{where}: onset/offset must be numbers of seconds, got {onset!r}, {offset!r}") from None
    if not (math.isfinite(on) and math.isfinite(off)) or on < 0 or off < on:
        raise DataError(f"{where}: expected 0 <= onset <= offset, got onset {on}, offset {off}")
    if not label:
        raise DataError(f"{where}: empty event label")
    return Event(keys.key(name, where), on, off, label, sc)


def _read_tsv_events(path: Path, text: str) -> EventList:
    keys = _FileKeys()
    events: list[Event] = []
    first = True
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.rstrip("\n").split("\t")]
        where = f"{path}:{line_no}"
        while len(fields) > 1 and fields[-1] == "":
            fields.pop()
        is_audio = Path(fields[0]).suffix.lower() in EVENT_LIST_AUDIO_EXTENSIONS
        header, first = first and len(fields) >= 2 and not _is_number(fields[1]) and not is_audio, False
        if header:
            continue  # header line (filename, onset, ...)
        if len(fields) == 1:
            if not is_audio:
                raise DataError(f"{where}: not an event list line (expected {_TSV_FORM}; got {line.strip()!r:.80})")
            keys.key(fields[0], where)
            continue
        if len(fields) < 4:
            raise DataError(f"{where}: expected filename<TAB>onset<TAB>offset<TAB>event_label, got {line!r:.80}")
        score = fields[4] if len(fields) > 4 and _is_number(fields[4]) else math.nan
        events.append(_event(keys, where, fields[0], fields[1], fields[2], fields[3], score))
    return EventList(tuple(keys.order), tuple(events))


def _read_manifest_events(path: Path) -> EventList:
    from thce.data.manifest import read_manifest

    keys = _FileKeys()
    events: list[Event] = []
    for line_no, row in enumerate(read_manifest(path), start=2):
        where = f"{path}:{line_no}"
        name = str(row.path)
        keys.key(name, where)
        if not row.label:
            continue
        onset, offset = row.extra.get("onset_s", ""), row.extra.get("offset_s", "")
        if onset in ("", None) or offset in ("", None):
            raise DataError(f"{where}: event {row.label!r} has no onset_s/offset_s; a reference needs event times")
        events.append(_event(keys, where, name, onset, offset, row.label))
    return EventList(tuple(keys.order), tuple(events))


def _read_json_events(path: Path, text: str) -> EventList:
    try:
        payload = json.loads(text)
        files = [f["file"] if isinstance(f, dict) else str(f) for f in payload.get("files", [])]
        raw_events = payload["events"]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(f"{path}: not a thce event list (expected JSON with 'events'; {error})") from None
    keys = _FileKeys()
    for name in files:
        keys.key(name, str(path))
    events = []
    for i, item in enumerate(raw_events):
        where = f"{path} (event {i})"
        try:
            events.append(_event(keys, where, item["file"], item["onset_s"], item["offset_s"], item["label"], item.get("score")))
        except (KeyError, TypeError):
            raise DataError(f"{where}: expected keys file, onset_s, offset_s, label") from None
    return EventList(tuple(keys.order), tuple(events))


# ------------------------------------------------------------------------------------------------ evaluation


def _max_matching(hit: np.ndarray) -> list[tuple[int, int]]:
    """Maximum-cardinality matching ``[(ref, est), ...]`` in the bipartite graph ``hit`` (n_ref, n_est) bool."""
    if hit.size == 0 or not hit.any():
        return []
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    match = maximum_bipartite_matching(csr_matrix(hit.astype(np.int8)), perm_type="column")
    return [(r, int(e)) for r, e in enumerate(match) if e >= 0]


def _rates(n_ref: float, n_sys: float, tp: float, subs: float, fn: float, fp: float) -> dict[str, float | None]:
    def ratio(a: float, b: float) -> float | None:
        return None if b == 0 else a / b

    return {
        "error_rate": ratio(subs + fn + fp, n_ref),
        "f_score": ratio(2.0 * tp, n_ref + n_sys),
        "precision": ratio(tp, n_sys),
        "recall": ratio(tp, n_ref),
    }


def evaluate_events(
    reference: EventList,
    estimated: EventList,
    *,
    collar_s: float = DCASE_COLLAR_S,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Event-based error rate and F-score, onset only, with an onset collar (DCASE 2017 task 2: 0.5 s).

    Per file, a reference and an estimated event *match* when they have the same label and
    ``|onset_ref - onset_est| <= collar_s``; a maximum matching gives the true positives. Overall, left-over
    reference/estimate pairs within the collar (other labels) are substitutions ``S``; the other left-overs are
    deletions ``D`` and insertions ``I``: ``ER = (S + D + I) / N_ref``, ``F = 2 TP / (N_ref + N_sys)``. Class-wise
    there are no substitutions (``ER_c = (D_c + I_c) / N_ref,c``). Files are the union of both lists' files (an
    estimated file missing from the reference has no reference events). Rates are fractions; ``None`` where
    undefined (no reference events).

    Returns:
        ``{"collar_s", "files", "overall": {counts..., error_rate, f_score, precision, recall,
        substitution_rate, deletion_rate, insertion_rate}, "class_wise": {label: {...}},
        "class_average": {"error_rate", "f_score"}}`` (class average over classes with reference events, the
        DCASE 2017 task 2 ranking metric).
    """
    if not collar_s >= 0:
        raise ValueError(f"collar_s: expected a non-negative number of seconds, got {collar_s!r}")
    ref_name, est_name = reference.source or "the reference", estimated.source or "the estimated list"
    ref_files, est_files = reference.all_files, estimated.all_files
    files = list(dict.fromkeys([*ref_files, *est_files]))
    only_ref = [f for f in ref_files if f not in set(est_files)]
    only_est = [f for f in est_files if f not in set(ref_files)]
    if est_files and ref_files and len(only_est) == len(est_files):
        theirs = f"its file {est_files[0]} is" if len(est_files) == 1 else f"none of its {len(est_files)} files is"
        raise DataError(
            f"{est_name}: {theirs} in {ref_name} ({_names(ref_files)}); files are matched by base name: is it the "
            "reference of these recordings?"
        )
    if only_ref:
        log.warning("%s only in %s (not in %s; their events count as missed): %s", _count(len(only_ref), "file"),
                    ref_name, est_name, _names(only_ref))  # fmt: skip
    if only_est:
        log.warning("%s only in %s (not in %s; their events count as insertions): %s", _count(len(only_est), "file"),
                    est_name, ref_name, _names(only_est))  # fmt: skip
    ref_labels = list(dict.fromkeys(e.label for e in reference.events))
    est_labels = list(dict.fromkeys(e.label for e in estimated.events))
    labels = list(classes) if classes is not None else list(dict.fromkeys([*ref_labels, *est_labels]))
    notes = _label_notes(ref_labels, est_labels, classes, ref_name, est_name)
    for note in notes:
        log.warning("%s", note)
    ref_by_file: dict[str, list[Event]] = {}
    est_by_file: dict[str, list[Event]] = {}
    for e in reference.events:
        ref_by_file.setdefault(e.file, []).append(e)
    for e in estimated.events:
        est_by_file.setdefault(e.file, []).append(e)
    eps = 1e-9  # onsets read back from millisecond text
    overall = {"n_ref": 0, "n_sys": 0, "tp": 0, "substitutions": 0, "deletions": 0, "insertions": 0}
    per_class = {label: {"n_ref": 0, "n_sys": 0, "tp": 0, "deletions": 0, "insertions": 0} for label in labels}
    for name in files:
        ref = [e for e in ref_by_file.get(name, []) if e.label in per_class]
        est = [e for e in est_by_file.get(name, []) if e.label in per_class]
        ref_on = np.array([e.onset_s for e in ref], dtype=np.float64)
        est_on = np.array([e.onset_s for e in est], dtype=np.float64)
        near = np.abs(ref_on[:, None] - est_on[None, :]) <= collar_s + eps
        same = np.array([[r.label == s.label for s in est] for r in ref], dtype=bool).reshape(near.shape)
        matched = _max_matching(near & same)
        ref_done = np.zeros(len(ref), dtype=bool)
        est_done = np.zeros(len(est), dtype=bool)
        for r, s in matched:
            ref_done[r] = est_done[s] = True
        subs = 0
        for r in np.flatnonzero(~ref_done):  # sed_eval: greedy over left-overs, reference order
            for s in np.flatnonzero(~est_done):
                if near[r, s]:
                    est_done[s] = True
                    subs += 1
                    break
        tp = len(matched)
        overall["n_ref"] += len(ref)
        overall["n_sys"] += len(est)
        overall["tp"] += tp
        overall["substitutions"] += subs
        overall["deletions"] += len(ref) - tp - subs
        overall["insertions"] += len(est) - tp - subs
        for label, counts in per_class.items():
            r_idx = [i for i, e in enumerate(ref) if e.label == label]
            s_idx = [i for i, e in enumerate(est) if e.label == label]
            tp_c = len(_max_matching(near[np.ix_(r_idx, s_idx)])) if r_idx and s_idx else 0
            counts["n_ref"] += len(r_idx)
            counts["n_sys"] += len(s_idx)
            counts["tp"] += tp_c
            counts["deletions"] += len(r_idx) - tp_c
            counts["insertions"] += len(s_idx) - tp_c
    o = overall
    result_overall: dict[str, Any] = dict(o)
    result_overall.update(_rates(o["n_ref"], o["n_sys"], o["tp"], o["substitutions"], o["deletions"], o["insertions"]))
    for part in ("substitution", "deletion", "insertion"):
        count = o["substitutions" if part == "substitution" else part + "s"]
        result_overall[f"{part}_rate"] = None if o["n_ref"] == 0 else count / o["n_ref"]
    class_wise: dict[str, Any] = {}
    for label, c in per_class.items():
        class_wise[label] = {**c, **_rates(c["n_ref"], c["n_sys"], c["tp"], 0, c["deletions"], c["insertions"])}
    scored = [v for v in class_wise.values() if v["n_ref"] > 0]
    average = {
        "error_rate": float(np.mean([v["error_rate"] for v in scored])) if scored else None,
        "f_score": float(np.mean([v["f_score"] for v in scored])) if scored else None,
    }
    return {
        "metric": "event-based, onset only (DCASE 2017 task 2)",
        "collar_s": collar_s,
        "files": len(files),
        "files_only_in_reference": only_ref,
        "files_only_in_estimated": only_est,
        "label_notes": notes,
        "overall": result_overall,
        "class_wise": class_wise,
        "class_average": average,
    }


def _count(n: int, noun: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _names(names: Sequence[str], limit: int = 8) -> str:
    """The first ``limit`` names, comma-separated, and how many more."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _label_notes(
    ref_labels: list[str], est_labels: list[str], classes: Sequence[str] | None, ref_name: str, est_name: str
) -> list[str]:
    """Sentences about labels that cannot match: only in the estimated list (every such event is an insertion),
    left out by ``classes``, or listed in ``classes`` but in neither list."""
    notes = []
    if classes is None:
        unmatched = [label for label in est_labels if label not in ref_labels]
        if unmatched and ref_labels:
            notes.append(
                f"labels only in {est_name}, never in {ref_name} ({', '.join(ref_labels)}): {', '.join(unmatched)}; "
                "their events all count as insertions (do the label names match?)"
            )
        return notes
    ignored = [label for label in dict.fromkeys([*ref_labels, *est_labels]) if label not in classes]
    if ignored:
        notes.append(f"labels not evaluated (not among --classes {','.join(classes)}): {', '.join(ignored)}")
    absent = [c for c in classes if c not in ref_labels and c not in est_labels]
    if absent:
        notes.append(f"--classes {', '.join(absent)}: in neither {ref_name} nor {est_name} (a misspelt label?)")
    return notes


def evaluation_markdown(result: dict[str, Any]) -> str:
    """A Markdown table of :func:`evaluate_events`'s result (rates in percent)."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100.0 * value:.1f}"

    lines = [
        f"Event-based metrics, onset only, collar {1000 * result['collar_s']:.0f} ms, "
        f"{_count(result['files'], 'file')}",
        "",
        "| Class | Nref | Nsys | TP | ER % | F % |",
        "| :-- | --: | --: | --: | --: | --: |",
    ]
    for label, c in result["class_wise"].items():
        lines.append(f"| {label} | {c['n_ref']} | {c['n_sys']} | {c['tp']} | {pct(c['error_rate'])} | {pct(c['f_score'])} |")
    o = result["overall"]
    lines.append(f"| Overall | {o['n_ref']} | {o['n_sys']} | {o['tp']} | {pct(o['error_rate'])} | {pct(o['f_score'])} |")
    avg = result["class_average"]
    lines += [
        "",
        f"Overall: S={o['substitutions']} D={o['deletions']} I={o['insertions']}. "
        f"Class average: ER {pct(avg['error_rate'])} %, F {pct(avg['f_score'])} %.",
    ]
    for key, where, counted in (("files_only_in_reference", "the reference", "missed"),
                                ("files_only_in_estimated", "the estimated list", "insertions")):  # fmt: skip
        names = result.get(key) or []
        if names:
            lines.append(f"{_count(len(names), 'file')} only in {where} (events there count as {counted}): "
                         f"{_names(names, 20)}.")
    lines += [f"Note: {note}." for note in result.get("label_notes") or []]
    return "\n".join(lines)
