"""Building blocks of the synthetic sounds: traits drawn per clip or fixed by a source recording, levels, envelopes,
harmonic series, band-pass filters. Used by the background (:mod:`thce.data.synth.background`) and the events
(:mod:`thce.data.synth.events`); every function draws only from the generator it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy import signal


Trait = Callable[[np.random.Generator, int], Any]  # (rng, sample rate) -> one trait's value
NO_SOURCE: Mapping[str, Any] = {}
_SPREAD = 0.15  # a per-clip value around its source's: x U(1 - _SPREAD, 1 + _SPREAD)


def source_trait(
    src: Mapping[str, Any], key: str, table: Mapping[str, Trait], rng: np.random.Generator, sr: int
) -> Any:
    """The source's value of trait ``key``; without a source (``key`` not in ``src``) a draw from ``rng``."""
    return src[key] if key in src else table[key](rng, sr)


def around_source(
    src: Mapping[str, Any], key: str, table: Mapping[str, Trait], rng: np.random.Generator, sr: int
) -> float:
    """A per-clip value: near the source's (times a uniform factor in ``1 +- _SPREAD``), else a draw from ``table``."""
    if key in src:
        return float(src[key]) * rng.uniform(1.0 - _SPREAD, 1.0 + _SPREAD)
    return table[key](rng, sr)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def unit_rms(x: np.ndarray) -> np.ndarray:
    return x / max(rms(x), 1e-12)


def db_to_gain(value: float) -> float:
    return 10.0 ** (value / 20.0)


def add_at(buffer: np.ndarray, x: np.ndarray, start: int) -> None:
    """Add ``x`` into ``buffer`` at ``start``, cut to the buffer."""
    stop = min(buffer.size, start + x.size)
    if stop > start >= 0:
        buffer[start:stop] += x[: stop - start]


def fade_envelope(n: int, sr: int, attack_s: float, release_s: float) -> np.ndarray:
    """Envelope of length ``n``: raised-cosine attack and release (seconds), flat between."""
    env = np.ones(n)
    a = min(n, max(1, int(attack_s * sr)))
    r = min(n - 1, max(1, int(release_s * sr)))
    env[:a] = 0.5 - 0.5 * np.cos(np.pi * np.arange(a) / a)
    env[n - r :] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(1, r + 1) / r)
    return env


def pad_to(x: np.ndarray, m: int) -> np.ndarray:
    """``x`` cut or zero-padded to ``m`` samples."""
    return x[:m] if x.size >= m else np.concatenate([x, np.zeros(m - x.size)])


def fit_to(x: np.ndarray, max_len: int, sr: int) -> np.ndarray:
    """Cut ``x`` to ``max_len`` samples with a short fade-out if it is longer."""
    if x.size <= max_len:
        return x
    x = x[:max_len].copy()
    r = min(max_len, int(0.02 * sr))
    x[max_len - r :] *= np.linspace(1.0, 0.0, r)
    return x


def trim_tail(x: np.ndarray, floor_db: float = -60.0) -> np.ndarray:
    """Drop trailing samples after the last one above ``floor_db`` re the peak."""
    above = np.flatnonzero(np.abs(x) > np.max(np.abs(x)) * db_to_gain(floor_db))
    return x[: above[-1] + 1] if above.size else x


def smooth_walk(rng: np.random.Generator, n: int, sr: int, step_s: float, depth: float) -> np.ndarray:
    """Slowly varying curve of shape ``(n,)``: uniform knots in ``[-depth, depth]`` every ``step_s``, interpolated."""
    step = max(2, int(step_s * sr))
    knots = rng.uniform(-depth, depth, n // step + 2)
    return np.interp(np.arange(n), np.arange(knots.size) * step, knots)


def harmonic_sum(
    rng: np.random.Generator, f0: np.ndarray, sr: int, weights: Callable[[np.ndarray], np.ndarray], f_max: float
) -> np.ndarray:
    """Sum of harmonics of the instantaneous fundamental ``f0`` (Hz, shape ``(n,)``), random start phases.

    ``weights(freqs_hz) -> amplitudes`` is the spectral envelope, evaluated at the harmonics of the mean f0;
    harmonics fade out towards ``f_max`` (and Nyquist).
    """
    f_max = min(f_max, 0.45 * sr)
    n_harm = max(1, int(f_max / max(float(f0.min()), 1.0)))
    k = np.arange(1, n_harm + 1)
    amps = weights(k * float(f0.mean()))
    phase = 2.0 * np.pi * np.cumsum(f0) / sr
    fk = k[:, None] * f0[None, :]
    gate = np.clip((f_max - fk) / (0.15 * f_max), 0.0, 1.0)
    phase0 = rng.uniform(0, 2 * np.pi, (n_harm, 1))
    return np.einsum("h,hn->n", amps, gate * np.sin(k[:, None] * phase[None, :] + phase0))


def envelope_fn(tilt_db_per_oct: float, formants: list[tuple[float, float, float]], floor: float) -> Callable:
    """Spectral envelope: a tilt times (floor + Gaussian bumps ``(centre_hz, width_hz, gain)``)."""

    def weights(freqs: np.ndarray) -> np.ndarray:
        bumps = sum(g * np.exp(-0.5 * ((freqs - fc) / bw) ** 2) for fc, bw, g in formants)
        tilt = 10.0 ** (tilt_db_per_oct * np.log2(freqs / freqs[0]) / 20.0)
        return tilt * (floor + bumps)

    return weights


def bandpass_sos(low_hz: float, high_hz: float, sr: int, order: int = 2) -> np.ndarray:
    nyq = 0.5 * sr
    low = min(max(low_hz, 20.0), 0.9 * nyq)
    high = min(max(high_hz, low * 1.1), 0.95 * nyq)
    return signal.butter(order, [low, high], btype="bandpass", fs=sr, output="sos")


