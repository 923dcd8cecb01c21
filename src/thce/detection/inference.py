"""Scores of a trained detector, one path for every use: raw log-mel -> training normalisation -> network -> class
scores in [0, 1] (:class:`LogMelScores`).

:func:`thce.detection.detect.detect_files` scores windows of audio through :class:`ModelScorer` (log-mel, then
:class:`LogMelScores`), and :mod:`thce.detection.export` exports :class:`LogMelScores` (or :class:`AudioScores`, the
log-mel in front): what is exported is by construction what detection runs. :func:`receptive_field` finds the frames of a
window the network can see; :class:`ModelScorer` feeds it only those, in cache-sized batches.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from thce.audio.logmel import LogMel

log = logging.getLogger(__name__)


def detection_scores(model: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
    """``(B, frames, n_mels)`` normalised log-mel -> ``(B, L)`` scores in [0, 1]: the model's own
    ``detection_scores`` (sigmoid, or the score of an imbalance loss) when it has one, else the sigmoid."""
    outputs = model(features)
    to_scores = getattr(model, "detection_scores", None)
    return torch.sigmoid(outputs) if to_scores is None else to_scores(outputs)


class LogMelScores(nn.Module):
    """Raw log-mel windows ``(B, frames, n_mels)`` -> class scores ``(B, L)`` in [0, 1] (:func:`detection_scores`);
    the training normalisation inside (``mean``, ``inv_std``: float32 ``(n_mels,)`` buffers)."""

    def __init__(self, model: nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean), dtype=torch.float32).clone())
        self.register_buffer("inv_std", torch.as_tensor(1.0 / np.asarray(std), dtype=torch.float32).clone())

    def normalise(self, logmel: Tensor) -> Tensor:
        """``(..., n_mels)`` raw log-mel -> the same shape, standardised per band as the training split was."""
        return (logmel - self.mean) * self.inv_std

    def forward(self, logmel: Tensor) -> Tensor:
        return detection_scores(self.model, self.normalise(logmel))


def logmel_scores(loaded: Any) -> LogMelScores:
    """The eval-mode :class:`LogMelScores` of a :class:`thce.checkpoint.LoadedDetector` (its model and normaliser)."""
    return LogMelScores(loaded.model, loaded.normaliser.mean, loaded.normaliser.std).eval()


class AudioScores(nn.Module):
    """Raw audio windows ``(B, samples)`` at the model's rate -> :class:`LogMel` -> :class:`LogMelScores` ->
    class scores ``(B, L)``."""

    def __init__(self, logmel: LogMel, scores: LogMelScores) -> None:
        super().__init__()
        self.logmel = logmel
        self.scores = scores

    def forward(self, audio: Tensor) -> Tensor:
        return self.scores(self.logmel(audio))


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


#: Activation memory per forward pass that keeps the network's intermediate maps in the CPU caches (see
#: :func:`cache_friendly_batch`).
CACHE_BUDGET_BYTES = 8 << 20


def largest_activation_bytes(model: torch.nn.Module, *, frames: int, n_mels: int) -> int:
    """Bytes of the largest tensor a leaf module of ``model`` receives or returns for one ``(frames, n_mels)``
    window (float32). Inputs count too: a model may compute its largest map outside a module call (the CNN's
    eval path, :func:`thce.models._pooled_first`) and hand it to the next module."""
    largest = 0

    def hook(_module: torch.nn.Module, inputs: Any, output: Any) -> None:
        nonlocal largest
        tensors = (*inputs, *(output if isinstance(output, (tuple, list)) else (output,)))
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
    """A trained detector as a :class:`WindowScorer`: raw windows -> log-mel -> :class:`LogMelScores` (the module
    :mod:`thce.detection.export` exports), in ``torch.inference_mode``.

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
        self.scores = logmel_scores(loaded).to(self.device)
        frames = getattr(loaded, "frames", None)
        #: a frame-level model's seconds per output frame (its scores are ``(B, T', L)``), else None
        self.frame_hop_s: float | None = None if frames is None else float(frames["hop_s"])
        self.logmel = LogMel(cfg).to(self.device)
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
        """``(B, window_samples)`` -> ``(B, L)`` scores, ``batch`` windows per pass, cut to the support if ``crop``."""
        out = []
        with torch.inference_mode():
            for start in range(0, audio.shape[0], batch):
                x = audio[start : start + batch].to(self.device)
                if crop and self.crop_samples is not None:
                    feats = self.logmel(x[:, : self.crop_samples])[:, : self.crop_frames]
                else:
                    feats = self.logmel(x)
                out.append(self.scores(feats).float().cpu())
        return torch.cat(out).numpy()

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """``(B, window_samples)`` float32 -> ``(B, L)`` float32 scores in [0, 1] (a frame-level model: ``(B, T', L)``)."""
        audio = torch.as_tensor(np.asarray(windows, dtype=np.float32))
        return self._score(audio, crop=True, batch=self.model_batch)
