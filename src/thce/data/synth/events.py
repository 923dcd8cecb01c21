"""The synthetic events, dog barks, baby cries and gun shots, with the traits a source recording fixes for each
(:data:`EVENT_TRAITS`), and where an event lies in its clip (:func:`event_placement`, :func:`clip_timing`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy import signal

from thce.data.synth.background import resonant_hit, reverb
from thce.data.synth.config import BACKGROUND, Source, SynthConfig, check_label
from thce.data.synth.signals import (
    NO_SOURCE,
    Trait,
    add_at,
    around_source,
    bandpass_sos,
    db_to_gain,
    envelope_fn,
    fade_envelope,
    fit_to,
    harmonic_sum,
    pad_to,
    smooth_walk,
    source_trait,
    trim_tail,
    unit_rms,
)


def event_placement(
    label: str,
    ev_rng: np.random.Generator,
    mix_rng: np.random.Generator,
    config: SynthConfig,
    source: Source | None = None,
) -> tuple[np.ndarray, int, float]:
    """The event (shape ``(m,)``, ``m <= n_samples``), its start sample and its EBR in dB."""
    sr, n = config.sample_rate_hz, config.n_samples
    short = fit_to(_EVENTS[label](ev_rng, sr, n, source.event if source is not None else NO_SOURCE), n, sr)
    start = int(mix_rng.integers(0, n - short.size + 1))
    ebr_db = float(mix_rng.uniform(*config.ebr_db_range))
    return short, start, ebr_db


def clip_timing(
    label: str, rng: np.random.Generator, config: SynthConfig, source: Source | None = None
) -> tuple[float | None, float | None]:
    """Onset and offset of a clip's event (seconds), without synthesising its background."""
    check_label(label)
    if label == BACKGROUND:
        return None, None
    _, ev_rng, mix_rng = rng.spawn(3)
    short, start, _ = event_placement(label, ev_rng, mix_rng, config, source)
    sr = config.sample_rate_hz
    return start / sr, (start + short.size) / sr


_DOG_TRAITS: dict[str, Trait] = {
    "f0": lambda r, sr: r.uniform(300.0, 800.0),
    "formants": lambda r, sr: [
        (r.uniform(700.0, 1500.0), r.uniform(150.0, 400.0), r.uniform(1.0, 3.0)),
        (r.uniform(1800.0, 3500.0), r.uniform(200.0, 600.0), r.uniform(0.5, 2.0)),
    ],
    "tilt": lambda r, sr: r.uniform(-6.0, -2.0),
    "noise_db": lambda r, sr: r.uniform(-14.0, -4.0),
    "bark_s": lambda r, sr: r.uniform(0.1, 0.3),  # rhythm: per bark, around the source's value
    "gap_s": lambda r, sr: r.uniform(0.08, 0.4),
}


def _dog(rng: np.random.Generator, sr: int, max_len: int, src: Mapping[str, Any] = NO_SOURCE) -> np.ndarray:
    """1-4 barks (0.1-0.3 s): harmonic, f0 300-800 Hz rising then falling, sharp attack, noisy part, formants.
    ``src``: a source's traits (:data:`_DOG_TRAITS`); empty: all drawn from ``rng``."""
    f0_dog = source_trait(src, "f0", _DOG_TRAITS, rng, sr)
    formants = source_trait(src, "formants", _DOG_TRAITS, rng, sr)
    weights = envelope_fn(source_trait(src, "tilt", _DOG_TRAITS, rng, sr), formants, 0.3)
    noise_sos = bandpass_sos(formants[0][0] * 0.6, formants[1][0] * 1.3, sr)
    noise_db = source_trait(src, "noise_db", _DOG_TRAITS, rng, sr)
    pieces: list[tuple[int, np.ndarray]] = []
    pos = 0
    for _ in range(int(rng.integers(1, 5))):
        dur = around_source(src, "bark_s", _DOG_TRAITS, rng, sr)
        m = int(dur * sr)
        if pieces and pos + m > max_len:
            break
        u = np.arange(m) / m
        peak_at = rng.uniform(0.1, 0.4)
        contour = np.interp(u, [0.0, peak_at, 1.0], [1.0, rng.uniform(1.05, 1.35), rng.uniform(0.7, 0.95)])
        track = f0_dog * rng.uniform(0.9, 1.1) * contour * (1.0 + smooth_walk(rng, m, sr, 0.01, 0.02))
        harm = unit_rms(harmonic_sum(rng, track, sr, weights, 5000.0))
        noise = unit_rms(signal.sosfilt(noise_sos, rng.standard_normal(m)))
        attack = rng.uniform(0.003, 0.012)
        tau = rng.uniform(0.25, 0.6) * dur
        env = np.minimum(1.0, u * dur / attack) * np.exp(-np.maximum(0.0, u * dur - attack) / tau)
        env *= fade_envelope(m, sr, 0.0, 0.01)
        pieces.append((pos, (harm + db_to_gain(noise_db) * noise) * env * rng.uniform(0.6, 1.0)))
        pos += m + int(around_source(src, "gap_s", _DOG_TRAITS, rng, sr) * sr)
    out = np.zeros(pieces[-1][0] + pieces[-1][1].size)
    for start, piece in pieces:
        add_at(out, piece, start)
    return out


_BABY_TRAITS: dict[str, Trait] = {
    "f0": lambda r, sr: r.uniform(300.0, 600.0),
    "formants": lambda r, sr: [
        (r.uniform(900.0, 1500.0), r.uniform(200.0, 500.0), r.uniform(1.0, 3.0)),
        (r.uniform(2500.0, 3600.0), r.uniform(300.0, 700.0), r.uniform(0.5, 2.0)),
    ],
    "tilt": lambda r, sr: r.uniform(-3.0, 0.0),
    "cry_s": lambda r, sr: r.uniform(0.5, 3.0),  # rhythm: per cry, around the source's value
    "vibrato_hz": lambda r, sr: r.uniform(4.0, 8.0),
    "f_max": lambda r, sr: r.uniform(3500.0, 5000.0),
    "breath_s": lambda r, sr: r.uniform(0.2, 0.6),
}


def _baby(rng: np.random.Generator, sr: int, max_len: int, src: Mapping[str, Any] = NO_SOURCE) -> np.ndarray:
    """1-3 cry segments (0.5-3 s) with breaths between: f0 300-600 Hz with glides and vibrato, harmonics to ~4 kHz.
    ``src``: a source's traits (:data:`_BABY_TRAITS`); empty: all drawn from ``rng``."""
    f0_baby = source_trait(src, "f0", _BABY_TRAITS, rng, sr)
    formants = source_trait(src, "formants", _BABY_TRAITS, rng, sr)
    weights = envelope_fn(source_trait(src, "tilt", _BABY_TRAITS, rng, sr), formants, 0.5)
    pieces: list[tuple[int, np.ndarray]] = []
    pos = 0
    for _ in range(int(rng.integers(1, 4))):
        room = max_len - pos
        if pieces and room < int(0.5 * sr):
            break
        dur = min(around_source(src, "cry_s", _BABY_TRAITS, rng, sr), room / sr)
        m = int(dur * sr)
        t = np.arange(m) / sr
        u = t / dur
        knots = [rng.uniform(-0.15, 0.0), rng.uniform(0.1, 0.35), rng.uniform(0.0, 0.3), rng.uniform(-0.3, 0.0)]
        shape = np.interp(u, np.linspace(0.0, 1.0, 4), knots)  # glide: up, then down
        depth = rng.uniform(0.01, 0.04)
        rate = around_source(src, "vibrato_hz", _BABY_TRAITS, rng, sr)
        vibrato = depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6.3))
        track = f0_baby * rng.uniform(0.9, 1.1) * (1.0 + shape + vibrato + smooth_walk(rng, m, sr, 0.03, 0.015))
        cry = unit_rms(harmonic_sum(rng, track, sr, weights, source_trait(src, "f_max", _BABY_TRAITS, rng, sr)))
        fade = fade_envelope(m, sr, rng.uniform(0.03, 0.1), rng.uniform(0.05, 0.2))
        cry *= fade * (1.0 + 0.15 * smooth_walk(rng, m, sr, 0.05, 1.0))  # with a slight tremolo
        pieces.append((pos, cry))
        pos += m
        breath = int(around_source(src, "breath_s", _BABY_TRAITS, rng, sr) * sr)
        if pos + breath < max_len:  # an inhale: soft high-passed noise
            inhale = signal.sosfilt(bandpass_sos(1000.0, 4000.0, sr), rng.standard_normal(breath)) * np.hanning(breath)
            pieces.append((pos, db_to_gain(rng.uniform(-26.0, -16.0)) * unit_rms(inhale)))
        pos += breath
    out = np.zeros(max(start + piece.size for start, piece in pieces))
    for start, piece in pieces:
        add_at(out, piece, start)
    return trim_tail(out)


_GUN_TRAITS: dict[str, Trait] = {
    "cutoff": lambda r, sr: r.uniform(2500.0, 0.45 * sr),
    "spacing_s": lambda r, sr: r.uniform(0.08, 0.6),  # rhythm: per clip, around the source's value
    "tau": lambda r, sr: r.uniform(0.008, 0.04),
    "boom_gain": lambda r, sr: r.uniform(0.3, 1.5),  # per shot, around the source's value
    "rt60_s": lambda r, sr: r.uniform(0.2, 1.0),  # the space: one room per source
    "wet_db": lambda r, sr: r.uniform(-6.0, 6.0),
}


def _gun(rng: np.random.Generator, sr: int, max_len: int, src: Mapping[str, Any] = NO_SOURCE) -> np.ndarray:
    """1-3 shots: broadband burst (1-4 ms attack, exponential decay) with a low boom, in a reverberant space
    (noise impulse response, RT60 0.2-1.0 s). ``src``: a source's traits (:data:`_GUN_TRAITS`); empty: all drawn
    from ``rng``."""
    cutoff = source_trait(src, "cutoff", _GUN_TRAITS, rng, sr)
    sos = signal.butter(2, cutoff, btype="lowpass", fs=sr, output="sos")
    count = int(rng.integers(1, 4))
    spacing = around_source(src, "spacing_s", _GUN_TRAITS, rng, sr)
    starts = [int((i * spacing + rng.uniform(0.0, 0.05)) * sr) for i in range(count)]
    tau = source_trait(src, "tau", _GUN_TRAITS, rng, sr)
    m = int(6 * tau * sr) + 1
    dry = np.zeros(starts[-1] + m)
    for start in starts:
        attack = int(rng.uniform(0.001, 0.004) * sr)
        burst = signal.sosfilt(sos, rng.standard_normal(m)) * np.exp(-np.arange(m) / (tau * sr))
        boom_gain = around_source(src, "boom_gain", _GUN_TRAITS, rng, sr)
        boom = unit_rms(pad_to(resonant_hit(rng, sr, 1, (40.0, 150.0), (0.02, 0.06)), m))
        burst = unit_rms(burst) + boom_gain * boom
        burst[:attack] *= np.linspace(0.0, 1.0, attack)
        add_at(dry, burst * rng.uniform(0.7, 1.0), start)
    rt60_s = source_trait(src, "rt60_s", _GUN_TRAITS, rng, sr)
    wet_db = source_trait(src, "wet_db", _GUN_TRAITS, rng, sr)
    return trim_tail(reverb(rng, dry, sr, rt60_s, wet_db))


_EVENTS: dict[str, Callable[..., np.ndarray]] = {"dog": _dog, "baby": _baby, "gun": _gun}
EVENT_TRAITS: dict[str, dict[str, Trait]] = {"dog": _DOG_TRAITS, "baby": _BABY_TRAITS, "gun": _GUN_TRAITS}
