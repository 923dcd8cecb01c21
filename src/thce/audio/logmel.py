"""The log-mel front end: the paper's "64 dimensional log mel filter bank energies using a frame length of 25ms and a
hop size of 10ms", computed batched in torch (:class:`LogMel`, configured by :class:`LogMelConfig`).

The definition, in one place::

    frame t      = samples centred on t * hop_samples (zero padding at both ends, torch.stft(center=True)),
                   win_samples long, multiplied by a periodic Hann window, zero-padded (centred) to n_fft
    power        = |rfft(frame)|^2                                    (n_fft // 2 + 1 bins)
    mel energies = power @ mel_filterbank                             (Slaney-style, see :func:`mel_filterbank`)
    log-mel      = ln(max(mel energies, log_floor))                   (natural log)

For a clip of exactly ``duration_s`` the output has exactly ``num_frames = round(duration_s * 1000 / hop_ms)`` frames
(1000 for 10 s at 10 ms; the 1001st centred frame is dropped); any other length gives ``1 + samples // hop_samples``.

``front_end = "panns"`` (set by a PANNs encoder, see :func:`thce.pretrained.panns.logmel_config`) computes PANNs'
features instead (torchlibrosa's ``Spectrogram`` + ``LogmelFilterBank`` as every PANNs model uses them)::

    frame t      = samples centred on t * hop_samples (reflect padding of n_fft // 2 at both ends)
    log-mel      = 10 * log10(max(mel energies, log_floor))           (dB, ref 1.0, no top-dB clipping)

and keeps every centred frame: ``num_frames = 1 + clip_samples // hop_samples`` (1001 for 10 s at 10 ms).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from thce.config_reader import read_table
from thce.errors import ConfigError

log = logging.getLogger(__name__)

#: ``LogMelConfig.front_end``: the paper's features (natural log, zero padding, ``duration_s / hop`` frames) or
#: PANNs' (dB, reflect padding, every centred frame; the encoder's bn0 normalises them).
FRONT_ENDS = ("paper", "panns")
_DB_PER_NEPER = 10.0 / math.log(10.0)  # 10 * log10(x) = ln(x) * 10 / ln(10)

# Mel scale and filterbank (Slaney / Auditory Toolbox, as librosa's default ``librosa.filters.mel(htk=False,
# norm="slaney")``); plain numpy so that there is no librosa dependency.


def hz_to_mel(freq_hz: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above (27 mel per factor 6.4)."""
    freq_hz = np.asarray(freq_hz, dtype=np.float64)
    linear = freq_hz / (200.0 / 3.0)
    log_part = 15.0 + np.log(np.maximum(freq_hz, 1e-12) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(freq_hz >= 1000.0, log_part, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3.0)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


def mel_frequencies(n: int, f_min_hz: float, f_max_hz: float) -> np.ndarray:
    """``n`` frequencies (Hz) equally spaced on the Slaney mel scale from ``f_min_hz`` to ``f_max_hz`` inclusive."""
    return mel_to_hz(np.linspace(hz_to_mel(f_min_hz), hz_to_mel(f_max_hz), n))


def mel_filterbank(
    *, sample_rate_hz: int, n_fft: int, n_mels: int, f_min_hz: float = 0.0, f_max_hz: float | None = None
) -> np.ndarray:
    """Slaney-style triangular mel filters, shape ``(n_fft // 2 + 1, n_mels)`` float64.

    Filter ``m`` rises linearly from edge ``f[m]`` to ``f[m+1]`` and falls to ``f[m+2]``, with ``f`` =
    :func:`mel_frequencies` ``(n_mels + 2, f_min_hz, f_max_hz)``; each triangle is scaled by ``2 / (f[m+2] - f[m])``
    so that its area in Hz is 1 ("slaney" normalisation). Matches ``librosa.filters.mel(htk=False, norm="slaney")``.
    """
    f_max_hz = sample_rate_hz / 2.0 if f_max_hz is None else float(f_max_hz)
    fft_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate_hz)
    edges = mel_frequencies(n_mels + 2, f_min_hz, f_max_hz)
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]  # (n_mels + 2, bins)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return np.ascontiguousarray(weights.T)


# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogMelConfig:
    """Log-mel front end; the defaults are the paper's (64 bands, 25 ms frames, 10 ms hop, 10 s clips at 16 kHz).

    Attributes:
        sample_rate_hz: rate audio is converted to before analysis.
        n_mels: number of mel bands.
        frame_length_ms: analysis window (Hann) length.
        hop_ms: frame shift.
        n_fft: FFT size (>= window length in samples; the window is zero-padded to it).
        f_min_hz: lowest filter edge.
        f_max_hz: highest filter edge; ``None`` means the Nyquist frequency.
        duration_s: clip length; audio is padded/cropped to it and the output has ``num_frames`` frames.
        log_floor: energies are clamped to at least this before the natural log (ln(1e-10) ~ -23).
        front_end: ``"paper"`` or ``"panns"`` (dB, reflect padding, ``1 + clip_samples // hop`` frames; see the
            module docstring). Set by a PANNs ``model.encoder``, not by hand.
    """

    sample_rate_hz: int = 16000
    n_mels: int = 64
    frame_length_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    f_min_hz: float = 0.0
    f_max_hz: float | None = None
    duration_s: float = 10.0
    log_floor: float = 1e-10
    front_end: str = "paper"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def win_samples(self) -> int:
        """Window length in samples (400 at 16 kHz, 25 ms)."""
        return round(self.frame_length_ms * self.sample_rate_hz / 1000.0)

    @property
    def hop_samples(self) -> int:
        """Hop in samples (160 at 16 kHz, 10 ms)."""
        return round(self.hop_ms * self.sample_rate_hz / 1000.0)

    @property
    def clip_samples(self) -> int:
        """Samples in one clip of ``duration_s``."""
        return round(self.duration_s * self.sample_rate_hz)

    @property
    def num_frames(self) -> int:
        """Frames per clip of ``duration_s``: ``round(duration_s * 1000 / hop_ms)`` (1000 for 10 s at 10 ms); with
        ``front_end = "panns"`` every centred frame, ``1 + clip_samples // hop_samples`` (1001)."""
        if self.front_end == "panns":
            return 1 + self.clip_samples // self.hop_samples
        return round(self.duration_s * 1000.0 / self.hop_ms)

    @property
    def log_scale(self) -> float:
        """What multiplies ``ln(max(mel, log_floor))``: 1 (natural log) or ``10 / ln 10`` (dB, PANNs)."""
        return _DB_PER_NEPER if self.front_end == "panns" else 1.0

    @property
    def nyquist_hz(self) -> float:
        return self.sample_rate_hz / 2.0

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad value."""

        def bad(name: str, expected: str) -> ConfigError:
            return ConfigError(f"LogMelConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        if not isinstance(self.sample_rate_hz, numbers.Integral) or self.sample_rate_hz <= 0:
            raise bad("sample_rate_hz", "a positive integer")
        if not isinstance(self.n_mels, numbers.Integral) or self.n_mels <= 0:
            raise bad("n_mels", "a positive integer")
        if not isinstance(self.n_fft, numbers.Integral) or self.n_fft <= 0:
            raise bad("n_fft", "a positive integer")
        for name in ("frame_length_ms", "hop_ms", "duration_s", "log_floor"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
                raise bad(name, "a positive number")
        if self.win_samples < 1:
            raise bad("frame_length_ms", "at least one sample long")
        if self.hop_samples < 1:
            raise bad("hop_ms", "at least one sample long")
        if self.win_samples > self.n_fft:
            raise ConfigError(
                f"LogMelConfig: the window ({self.frame_length_ms} ms = {self.win_samples} samples) is longer than "
                f"n_fft={self.n_fft}; raise n_fft"
            )
        if not isinstance(self.f_min_hz, numbers.Real) or not 0 <= self.f_min_hz < self.nyquist_hz:
            raise bad("f_min_hz", f"a number in [0, {self.nyquist_hz}) (below Nyquist)")
        if self.f_max_hz is not None and (
            not isinstance(self.f_max_hz, numbers.Real) or not self.f_min_hz < self.f_max_hz <= self.nyquist_hz
        ):
            raise bad("f_max_hz", f"None or a number in ({self.f_min_hz}, {self.nyquist_hz}]")
        if self.front_end not in FRONT_ENDS:
            raise bad("front_end", " or ".join(repr(f) for f in FRONT_ENDS))
        if self.num_frames < 1:
            raise bad("duration_s", "at least one hop long")
        if self.front_end == "panns" and self.clip_samples <= self.n_fft // 2:
            raise bad("duration_s", f"longer than n_fft / 2 = {self.n_fft // 2} samples (reflect padding)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], section: str = "features") -> LogMelConfig:
        """Build from a dict (e.g. a TOML table); unknown keys and bad values raise :class:`ConfigError` naming
        ``section.key`` (:func:`thce.config_reader.read_table`)."""
        return read_table(cls, data, section)


class LogMel(torch.nn.Module):
    """Batched log-mel filter bank energies (definition in the module docstring).

    ``forward(waveforms)``: float tensor ``(batch, samples)`` (or ``(samples,)``) at ``config.sample_rate_hz`` ->
    float32 ``(batch, frames, n_mels)`` (or ``(frames, n_mels)``), natural-log mel energies.
    ``frames = config.num_frames`` when ``samples == config.clip_samples``, else ``1 + samples // hop_samples``.
    The filterbank is Slaney-style (librosa's default), see :func:`mel_filterbank`.

    >>> cfg = LogMelConfig(duration_s=1.0, n_mels=16)
    >>> LogMel(cfg)(torch.zeros(2, 16000)).shape
    torch.Size([2, 100, 16])
    """

    def __init__(self, config: LogMelConfig | None = None) -> None:
        super().__init__()
        self.config = config or LogMelConfig()
        cfg = self.config
        filters = mel_filterbank(
            sample_rate_hz=cfg.sample_rate_hz,
            n_fft=cfg.n_fft,
            n_mels=cfg.n_mels,
            f_min_hz=cfg.f_min_hz,
            f_max_hz=cfg.f_max_hz,
        )
        empty = np.flatnonzero(filters.max(axis=0) <= 0)
        if empty.size:
            log.warning(
                "LogMel: %d of %d mel filters cover no FFT bin (bands %s); raise n_fft or lower n_mels",
                empty.size, cfg.n_mels, empty.tolist(),
            )
        # Derived from the config, so not saved in state_dict (checkpoints don't depend on them).
        self.register_buffer("mel_filters", torch.from_numpy(filters).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.win_samples, periodic=True), persistent=False)
        self._np_window: np.ndarray | None = None  # CPU copies and buffers for compute(), made on first use
        self._blocks: list[tuple[int, int, int, int, torch.Tensor]] = []
        self._work: tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None = None

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        squeeze = waveforms.dim() == 1
        if squeeze:
            waveforms = waveforms.unsqueeze(0)
        if waveforms.dim() != 2:
            raise ValueError(f"LogMel expects (batch, samples) or (samples,), got shape {tuple(waveforms.shape)}")
        samples = waveforms.shape[-1]
        spec = torch.stft(
            waveforms.to(torch.float32),
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_samples,
            win_length=cfg.win_samples,
            window=self.window,
            center=True,
            pad_mode="reflect" if cfg.front_end == "panns" else "constant",
            return_complex=True,
        ).transpose(1, 2)  # (batch, frames, bins); contiguous in memory in this order
        real, imag = spec.real, spec.imag
        power = real * real
        power.addcmul_(imag, imag)  # |X|^2 with one allocation (the elementwise step dominates after the FFT)
        mel = torch.matmul(power, self.mel_filters)  # (batch, frames, n_mels)
        out = torch.log(torch.clamp_min(mel, cfg.log_floor))
        if cfg.log_scale != 1.0:
            out = out * cfg.log_scale
        if samples == cfg.clip_samples:
            out = _fit_frames(out, cfg.num_frames, math.log(cfg.log_floor) * cfg.log_scale)
        return out.squeeze(0) if squeeze else out

    def compute(self, waveforms: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        """The same log-mel as :meth:`forward`, computed in numpy/scipy one clip at a time: the fast path on CPU
        (2-3 times the speed of ``torch.stft`` on one core: each clip's frames stay in cache, working buffers are
        reused, and the banded filterbank is applied block by block). Not thread-safe (the buffers are shared).

        Frame ``t`` is the ``win_samples`` samples under the window, transformed with a real FFT zero-padded to
        ``n_fft`` at the end instead of on both sides: a circular shift, which leaves the power spectrum unchanged.

        Args:
            waveforms: float array ``(batch, samples)`` or ``(samples,)``.
            out: optional float32 array of the result's shape to write into.

        Returns:
            float32 ``(batch, frames, n_mels)`` (or ``(frames, n_mels)``), frames as in :meth:`forward`.
        """
        import scipy.fft

        cfg = self.config
        x = np.asarray(waveforms, dtype=np.float32)
        squeeze = x.ndim == 1
        if squeeze:
            x = x[None]
        if x.ndim != 2:
            raise ValueError(f"LogMel.compute expects (batch, samples) or (samples,), got shape {x.shape}")
        samples = x.shape[1]
        frames = cfg.num_frames if samples == cfg.clip_samples else 1 + samples // cfg.hop_samples
        reflect = cfg.front_end == "panns"
        if reflect and samples <= cfg.n_fft // 2:
            raise ValueError(f"LogMel.compute: {samples} samples are too few for reflect padding of {cfg.n_fft // 2}")
        shape = (frames, cfg.n_mels) if squeeze else (x.shape[0], frames, cfg.n_mels)
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32:
            raise ValueError(f"LogMel.compute: out must be float32 {shape}, got {out.dtype} {out.shape}")
        result = out[None] if squeeze else out
        work = self._workspace(samples)
        padded, view, windowed, power = work
        half = cfg.n_fft // 2
        computed = view.shape[0]
        for b in range(x.shape[0]):
            padded[half : half + samples] = x[b]
            if reflect:  # torch.stft(pad_mode="reflect"): x[half], ..., x[1] | x | x[-2], ..., x[-half - 1]
                padded[:half] = x[b, half:0:-1]
                padded[half + samples : 2 * half + samples] = x[b, -2 : -half - 2 : -1]
            np.multiply(view, self._np_window, out=windowed[:, : cfg.win_samples])
            spectrum = scipy.fft.rfft(windowed, axis=-1, workers=1)
            parts = spectrum.view(np.float32)  # re, im interleaved
            np.square(parts, out=parts)
            np.add(parts[:, 0::2], parts[:, 1::2], out=power)
            mel = result[b, :computed]
            self._project(power, mel)
            np.maximum(mel, cfg.log_floor, out=mel)
            np.log(mel, out=mel)
            if cfg.log_scale != 1.0:
                mel *= np.float32(cfg.log_scale)
        if computed < frames:
            result[:, computed:] = math.log(cfg.log_floor) * cfg.log_scale
        return out

    def _workspace(self, samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Buffers of :meth:`compute` for clips of ``samples`` (kept for the last length used)."""
        if self._np_window is None:
            self._np_window = self.window.detach().cpu().numpy().astype(np.float32)
            self._blocks = _filter_blocks(self.mel_filters.detach().to("cpu", torch.float32))
        if self._work is None or self._work[0] != samples:
            cfg = self.config
            frames = cfg.num_frames if samples == cfg.clip_samples else 1 + samples // cfg.hop_samples
            computed = min(frames, 1 + samples // cfg.hop_samples)
            half, left = cfg.n_fft // 2, (cfg.n_fft - cfg.win_samples) // 2
            padded = np.zeros(samples + 2 * half + cfg.n_fft, dtype=np.float32)  # slack: no frame reads past it
            step = padded.strides[0]
            view = np.lib.stride_tricks.as_strided(
                padded[left:], shape=(computed, cfg.win_samples), strides=(cfg.hop_samples * step, step),
                writeable=False,
            )  # fmt: skip
            windowed = np.zeros((computed, cfg.n_fft), dtype=np.float32)  # zero-padded to n_fft once, here
            power = np.empty((computed, cfg.n_fft // 2 + 1), dtype=np.float32)
            self._work = (samples, (padded, view, windowed, power))
        return self._work[1]

    def _project(self, power: np.ndarray, mel: np.ndarray) -> None:
        """``mel[:] = power @ mel_filters``, one product per block of filters over the FFT bins they cover (the
        filterbank is banded: about a quarter of the work of the dense product). torch's sgemm: its thread count is
        torch's, where numpy's BLAS can oversubscribe cores on products this small."""
        power_t, mel_t = torch.from_numpy(power), torch.from_numpy(mel)
        for f0, f1, lo, hi, weights in self._blocks:
            if hi > lo:
                mel_t[:, f0:f1] = torch.mm(power_t[:, lo:hi], weights)
            else:
                mel_t[:, f0:f1] = 0.0

    def extra_repr(self) -> str:
        cfg = self.config
        return (
            f"sample_rate_hz={cfg.sample_rate_hz}, n_mels={cfg.n_mels}, frame_length_ms={cfg.frame_length_ms}, "
            f"hop_ms={cfg.hop_ms}, n_fft={cfg.n_fft}, filters=slaney"
            + (", front_end=panns" if cfg.front_end == "panns" else "")
        )


def _filter_blocks(filters: torch.Tensor, groups: int = 4) -> list[tuple[int, int, int, int, torch.Tensor]]:
    """Split ``filters`` (bins, mels) into ``groups`` runs of adjacent mel filters, each with the range of FFT bins
    where any of them is non-zero: ``(first_mel, end_mel, first_bin, end_bin, weights)``."""
    n_mels = filters.shape[1]
    blocks = []
    for g in range(min(groups, n_mels)):
        f0, f1 = g * n_mels // groups, (g + 1) * n_mels // groups
        if f1 <= f0:
            continue
        rows = torch.nonzero(filters[:, f0:f1].abs().sum(dim=1) > 0).flatten()
        lo, hi = (int(rows[0]), int(rows[-1]) + 1) if rows.numel() else (0, 0)
        blocks.append((f0, f1, lo, hi, filters[lo:hi, f0:f1].contiguous()))
    return blocks


def _fit_frames(features: torch.Tensor, frames: int, fill: float) -> torch.Tensor:
    """Crop or pad (with the log floor, i.e. silence) the frame axis (dim 1) to ``frames``."""
    have = features.shape[1]
    if have >= frames:
        return features[:, :frames]
    pad = features.new_full((features.shape[0], frames - have, features.shape[2]), fill)
    return torch.cat([features, pad], dim=1)
