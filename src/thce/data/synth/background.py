"""The background bed under every synthetic clip: coloured noise with a slowly varying gain, band noise, babble,
mains hum, and tonal and impulsive confusers (see :mod:`thce.data.synth` for the recipe and why each is there).
Also the room and hit models the gun events reuse (:func:`reverb`, :func:`resonant_hit`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import signal

from thce.data.synth.signals import (
    NO_SOURCE,
    Trait,
    add_at,
    bandpass_sos,
    db_to_gain,
    envelope_fn,
    fade_envelope,
    fit_to,
    harmonic_sum,
    pad_to,
    rms,
    smooth_walk,
    source_trait,
    trim_tail,
    unit_rms,
)


# Background recipe: probabilities per clip, rates per 10 s, levels in dB (tonal: RMS, impulsive: peak, both re the
# coloured noise's RMS). These set how hard the data is; see benchmarks/synth_difficulty.py.
_P_BAND_NOISE = 0.5
_P_BABBLE = 0.25
_P_HUM = 0.2
_TONAL_PER_10S = 1.4
_IMPULSIVE_PER_10S = 1.2
_TONAL_DB = (-8.0, 6.0)
_IMPULSIVE_DB = (6.0, 26.0)


def _coloured_noise(rng: np.random.Generator, n: int, sr: int, beta: float) -> np.ndarray:
    """Unit-RMS noise with power spectrum ``1 / f**beta`` (0 white, 1 pink, 2 brown), shape ``(n,)``."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spec *= np.maximum(freqs, 30.0) ** (-beta / 2.0)
    return unit_rms(np.fft.irfft(spec, n))


# The character of a recording's bed. Without a source each is drawn per clip at its place in make_background;
# the "source only" ones exist only for sources (without one: the constants above, every confuser kind).
BED_TRAITS: dict[str, Trait] = {
    "beta": lambda r, sr: r.uniform(0.0, 2.0),
    "walk_step_s": lambda r, sr: r.uniform(0.5, 2.5),
    "walk_depth_db": lambda r, sr: r.uniform(1.0, 6.0),
    "band": lambda r, sr: bool(r.random() < _P_BAND_NOISE),
    "band_centre_hz": lambda r, sr: float(np.exp(r.uniform(np.log(100.0), np.log(4000.0)))),
    "band_width_oct": lambda r, sr: r.uniform(0.3, 1.5),
    "band_step_s": lambda r, sr: r.uniform(0.3, 3.0),
    "band_depth_db": lambda r, sr: r.uniform(2.0, 10.0),
    "band_db": lambda r, sr: r.uniform(-10.0, 4.0),
    "babble": lambda r, sr: bool(r.random() < _P_BABBLE),
    "babble_db": lambda r, sr: r.uniform(-12.0, 6.0),
    "hum": lambda r, sr: bool(r.random() < _P_HUM),
    "hum_db": lambda r, sr: r.uniform(-15.0, 0.0),
    "hum_hz": lambda r, sr: float(r.choice([50.0, 60.0]) * r.uniform(0.995, 1.005)),
    "hum_tilt": lambda r, sr: r.uniform(-9.0, -2.0),
    "hum_f_max": lambda r, sr: r.uniform(200.0, 500.0),
    "level_db": lambda r, sr: r.uniform(-38.0, -24.0),
    # source only: how often confusers come, and which few kinds this place has
    "tonal_per_10s": lambda r, sr: _TONAL_PER_10S * r.uniform(0.5, 1.5),
    "impulsive_per_10s": lambda r, sr: _IMPULSIVE_PER_10S * r.uniform(0.5, 1.5),
    "tonal_kinds": lambda r, sr: sorted(int(k) for k in r.choice(len(_TONAL), 3, replace=False)),
    "impulsive_kinds": lambda r, sr: sorted(int(k) for k in r.choice(len(_IMPULSIVE), 2, replace=False)),
}


def make_background(rng: np.random.Generator, n: int, sr: int, src: Mapping[str, Any] = NO_SOURCE) -> np.ndarray:
    """A random background scene of shape ``(n,)``; its coloured noise at -38 to -24 dBFS RMS, the rest relative.
    ``src``: a source's bed traits (:data:`BED_TRAITS`); empty: all drawn from ``rng``."""

    def trait(key: str) -> Any:
        return source_trait(src, key, BED_TRAITS, rng, sr)

    tens = n / sr / 10.0  # confuser rates are per 10 s
    noise = _coloured_noise(rng, n, sr, trait("beta"))
    noise *= 10.0 ** (smooth_walk(rng, n, sr, trait("walk_step_s"), trait("walk_depth_db")) / 20.0)
    noise_rms = rms(noise)
    scene = noise.copy()
    if trait("band"):  # band-limited noise: traffic, wind, rain, ventilation
        centre = trait("band_centre_hz")
        width = trait("band_width_oct")
        band = signal.sosfilt(bandpass_sos(centre * 2 ** -width, centre * 2**width, sr), rng.standard_normal(n))
        step_s, depth_db = trait("band_step_s"), trait("band_depth_db")
        band = unit_rms(band) * 10.0 ** (smooth_walk(rng, n, sr, step_s, depth_db) / 20.0)
        scene = scene + db_to_gain(trait("band_db")) * band
    if trait("babble"):
        scene = scene + db_to_gain(trait("babble_db")) * _babble(rng, n, sr)
    if trait("hum"):
        scene = scene + db_to_gain(trait("hum_db")) * _hum(rng, n, sr, src)

    tonal_kinds = src.get("tonal_kinds", range(len(_TONAL)))
    impulsive_kinds = src.get("impulsive_kinds", range(len(_IMPULSIVE)))
    n_tonal = rng.poisson(src.get("tonal_per_10s", _TONAL_PER_10S) * tens)
    n_impulsive = rng.poisson(src.get("impulsive_per_10s", _IMPULSIVE_PER_10S) * tens)
    for kind in [_TONAL[tonal_kinds[i]] for i in rng.integers(0, len(tonal_kinds), n_tonal)]:
        x = fit_to(kind(rng, sr), n, sr)
        add_at(scene, db_to_gain(rng.uniform(*_TONAL_DB)) * unit_rms(x), int(rng.integers(0, max(1, n - x.size + 1))))
    for kind in [_IMPULSIVE[impulsive_kinds[i]] for i in rng.integers(0, len(impulsive_kinds), n_impulsive)]:
        x = fit_to(kind(rng, sr), n, sr)
        x = x / max(float(np.max(np.abs(x))), 1e-12)
        add_at(scene, db_to_gain(rng.uniform(*_IMPULSIVE_DB)) * x, int(rng.integers(0, max(1, n - x.size + 1))))
    return scene * (db_to_gain(trait("level_db")) / noise_rms)


def _hum(rng: np.random.Generator, n: int, sr: int, src: Mapping[str, Any] = NO_SOURCE) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and a few harmonics, slowly wavering level; shape ``(n,)``."""
    f0 = source_trait(src, "hum_hz", BED_TRAITS, rng, sr)
    weights = envelope_fn(source_trait(src, "hum_tilt", BED_TRAITS, rng, sr), [], 1.0)
    x = harmonic_sum(rng, np.full(n, f0), sr, weights, source_trait(src, "hum_f_max", BED_TRAITS, rng, sr))
    return unit_rms(x) * 10.0 ** (smooth_walk(rng, n, sr, 1.0, 2.0) / 20.0)


def _beeps(rng: np.random.Generator, sr: int) -> np.ndarray:
    """1-5 equal electronic beeps (pure or slightly harmonic tone, 400-4000 Hz, 50-400 ms)."""
    freq = np.exp(rng.uniform(np.log(400.0), np.log(4000.0)))
    dur = rng.uniform(0.05, 0.4)
    gap = rng.uniform(0.05, 0.5)
    m = int(dur * sr)
    beep = harmonic_sum(rng, np.full(m, freq), sr, envelope_fn(rng.uniform(-30.0, -8.0), [], 1.0), 6000.0)
    beep *= fade_envelope(m, sr, 0.004, 0.004)
    count = int(rng.integers(1, 6))
    out = np.zeros(int((count * (dur + gap)) * sr) + m)
    for i in range(count):
        add_at(out, beep, int(i * (dur + gap) * sr))
    return trim_tail(out)


def _harmonic_tone(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A sustained harmonic tone (instrument, engine whine, hooter): f0 150-1000 Hz, 0.15-3 s, steady pitch with at
    most a slight drift or vibrato; random brightness and resonances. Some are in the pitch range of barks and cries."""
    dur = rng.uniform(0.15, 3.0)
    m = int(dur * sr)
    f0 = np.exp(rng.uniform(np.log(150.0), np.log(1000.0)))
    t = np.arange(m) / sr
    track = f0 * (1.0 + rng.uniform(-0.03, 0.03) * t / dur)
    if rng.random() < 0.5:
        track *= 1.0 + rng.uniform(0.002, 0.012) * np.sin(2 * np.pi * rng.uniform(3.0, 7.0) * t)
    formants = [(rng.uniform(500.0, 4000.0), rng.uniform(150.0, 800.0), rng.uniform(0.0, 3.0)) for _ in range(2)]
    x = harmonic_sum(rng, track, sr, envelope_fn(rng.uniform(-12.0, -1.0), formants, 0.5), rng.uniform(1500.0, 6000.0))
    return x * fade_envelope(m, sr, rng.uniform(0.005, 0.2), rng.uniform(0.02, 0.4))


def _honks(rng: np.random.Generator, sr: int) -> np.ndarray:
    """1-3 short horn honks / squeaks: bright harmonic bursts (f0 250-700 Hz, 0.08-0.5 s, flat pitch, sharp attack),
    bark-like in pitch and length but without a pitch arch or noise."""
    f0 = rng.uniform(250.0, 700.0)
    tilt = rng.uniform(-6.0, -1.0)
    formant = (rng.uniform(800.0, 3000.0), rng.uniform(200.0, 800.0), rng.uniform(0.0, 2.0))
    weights = envelope_fn(tilt, [formant], 0.5)
    count = int(rng.integers(1, 4))
    dur = rng.uniform(0.08, 0.5)
    gap = rng.uniform(0.05, 0.4)
    m = int(dur * sr)
    out = np.zeros(int(count * (dur + gap) * sr) + m)
    for i in range(count):
        track = np.full(m, f0 * rng.uniform(0.98, 1.02))
        honk = harmonic_sum(rng, track, sr, weights, 6000.0)
        honk *= fade_envelope(m, sr, rng.uniform(0.002, 0.02), rng.uniform(0.01, 0.06))
        add_at(out, honk, int(i * (dur + gap) * sr))
    return trim_tail(out)


def _chirps(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A bird: 2-8 fast frequency sweeps (2-6 kHz, 20-150 ms), nearly pure tones."""
    count = int(rng.integers(2, 9))
    pace = rng.uniform(0.08, 0.3)
    lo, hi = sorted(rng.uniform(2000.0, min(6000.0, 0.4 * sr), 2))
    dur = rng.uniform(0.02, 0.15)
    m = int(dur * sr)
    out = np.zeros(int(count * pace * sr) + m)
    for i in range(count):
        sweep = np.linspace(hi, lo, m) if rng.random() < 0.5 else np.linspace(lo, hi, m)
        chirp = np.sin(2.0 * np.pi * np.cumsum(sweep) / sr) * np.hanning(m)
        add_at(out, chirp * rng.uniform(0.5, 1.0), int((i * pace + rng.uniform(0.0, 0.03)) * sr))
    return trim_tail(out)


def _siren(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A slow periodic pitch sweep (alarm, siren), 1-4 s."""
    m = int(rng.uniform(1.0, 4.0) * sr)
    t = np.arange(m) / sr
    centre = rng.uniform(500.0, 1500.0)
    track = centre * (1.0 + rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(0.3, 2.0) * t + rng.uniform(0, 6.3)))
    x = harmonic_sum(rng, track, sr, envelope_fn(rng.uniform(-15.0, -4.0), [], 1.0), 5000.0)
    return x * fade_envelope(m, sr, 0.1, 0.2)


def resonant_hit(
    rng: np.random.Generator, sr: int, modes: int, f_range: tuple[float, float], tau_range: tuple[float, float]
) -> np.ndarray:
    """An impact: a few exponentially damped sine modes plus a 1-3 ms broadband click."""
    taus = rng.uniform(*tau_range, modes)
    m = int(5 * taus.max() * sr) + 1
    t = np.arange(m) / sr
    freqs = np.exp(rng.uniform(np.log(f_range[0]), np.log(f_range[1]), modes))
    amps = rng.uniform(0.3, 1.0, modes)
    ringing = np.exp(-t[None, :] / taus[:, None]) * np.sin(2 * np.pi * freqs[:, None] * t[None, :])
    x = np.einsum("k,kn->n", amps, ringing)
    click_len = int(rng.uniform(0.001, 0.003) * sr) + 1
    click_gain = rng.uniform(0.2, 1.0)
    x[:click_len] += click_gain * rng.standard_normal(click_len) * np.exp(-np.arange(click_len) / (0.3 * click_len))
    return x


def _knocks(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A door knock: 2-5 wooden hits at a fairly regular pace."""
    count = int(rng.integers(2, 6))
    pace = rng.uniform(0.08, 0.35)
    hits = [resonant_hit(rng, sr, 3, (80.0, 900.0), (0.005, 0.04)) for _ in range(count)]
    starts = [int((i * pace + rng.uniform(0.0, 0.03)) * sr) for i in range(count)]
    out = np.zeros(starts[-1] + max(h.size for h in hits))
    for start, hit in zip(starts, hits):
        add_at(out, hit * rng.uniform(0.6, 1.0), start)
    return out


def _clicks(rng: np.random.Generator, sr: int) -> np.ndarray:
    """1-6 very short broadband clicks (switches, keys, cracks)."""
    count = int(rng.integers(1, 7))
    starts = np.sort(rng.uniform(0.0, rng.uniform(0.05, 1.5), count))
    out = np.zeros(int((starts[-1] + 0.02) * sr) + 1)
    for start in starts:
        m = int(rng.uniform(0.0005, 0.003) * sr) + 2
        click = rng.standard_normal(m) * np.exp(-np.arange(m) / (0.3 * m))
        add_at(out, click * rng.uniform(0.3, 1.0), int(start * sr))
    return out


def _taps(rng: np.random.Generator, sr: int) -> np.ndarray:
    """1-3 broadband taps/bangs: fast attack, 3-40 ms decay, random brightness, sometimes a short room tail."""
    count = int(rng.integers(1, 4))
    cutoff = rng.uniform(1000.0, 0.45 * sr)
    sos = signal.butter(2, cutoff, btype="lowpass", fs=sr, output="sos")
    tau = rng.uniform(0.003, 0.04)
    m = int(6 * tau * sr) + 1
    out = np.zeros(int(count * 0.4 * sr) + m)
    for i in range(count):
        tap = signal.sosfilt(sos, rng.standard_normal(m)) * np.exp(-np.arange(m) / (tau * sr))
        tap[: int(0.001 * sr)] *= np.linspace(0.0, 1.0, int(0.001 * sr))
        add_at(out, tap * rng.uniform(0.5, 1.0), int((i * rng.uniform(0.1, 0.4)) * sr))
    if rng.random() < 0.4:
        out = reverb(rng, out, sr, rng.uniform(0.1, 0.4), rng.uniform(-12.0, -3.0))
    return trim_tail(out)


def _slam(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A door slam / dropped object: a dull thump with a 30-150 ms broadband decay and a short room tail."""
    tau = rng.uniform(0.03, 0.15)
    m = int(5 * tau * sr) + 1
    sos = signal.butter(2, rng.uniform(600.0, 3000.0), btype="lowpass", fs=sr, output="sos")
    body = signal.sosfilt(sos, rng.standard_normal(m)) * np.exp(-np.arange(m) / (tau * sr))
    thump_gain = rng.uniform(0.5, 2.0)
    body = unit_rms(body) + thump_gain * unit_rms(pad_to(resonant_hit(rng, sr, 2, (40.0, 200.0), (0.02, 0.08)), m))
    body[: int(0.003 * sr)] *= np.linspace(0.0, 1.0, int(0.003 * sr))
    return trim_tail(reverb(rng, body, sr, rng.uniform(0.1, 0.5), rng.uniform(-15.0, -6.0)))


def _babble(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Speech-like babble of 1-3 talkers, shape ``(n,)``, unit RMS: band-limited glottal pulse trains with
    intonation, cut into syllables, each filtered by one of a few vowel formant pairs; some fricative noise."""
    vowels = np.array([(730, 1090), (270, 2290), (530, 1840), (570, 840), (300, 870), (660, 1720), (440, 1020)], float)
    chosen = vowels[rng.choice(len(vowels), 3, replace=False)] * rng.uniform(0.9, 1.2)
    excitation = np.zeros((len(chosen), n))
    fricative = np.zeros(n)
    t = np.arange(n) / sr
    for _ in range(int(rng.integers(1, 4))):
        f0_talker = rng.uniform(90.0, 240.0)
        intonation = 1.0 + smooth_walk(rng, n, sr, rng.uniform(0.2, 0.6), 0.15)
        f0 = f0_talker * intonation * (1.0 - 0.05 * t / t[-1])  # declination
        theta = 2.0 * np.pi * np.cumsum(f0) / sr
        harm = np.floor(3500.0 / f0)
        den = 2.0 * np.sin(0.5 * theta)
        safe = np.abs(den) > 1e-6
        pulses = np.where(safe, np.sin((harm + 0.5) * theta) / np.where(safe, den, 1.0) - 0.5, harm) / harm
        gain = rng.uniform(0.5, 1.0)
        pos = rng.uniform(0.0, 0.3) * n
        while pos < n:
            phrase = int(rng.integers(3, 9))
            for _ in range(phrase):
                m = int(rng.uniform(0.1, 0.3) * sr)
                start = int(pos)
                if start >= n:
                    break
                stop = min(n, start + m)
                window = np.sin(np.pi * np.arange(stop - start) / m) ** 2
                excitation[int(rng.integers(0, len(chosen))), start:stop] += gain * pulses[start:stop] * window
                if rng.random() < 0.35:
                    f_len = int(rng.uniform(0.03, 0.08) * sr)
                    hiss = gain * 0.3 * np.hanning(f_len) * rng.standard_normal(f_len)
                    add_at(fricative, hiss, max(0, start - f_len // 2))
                pos += m + rng.uniform(0.02, 0.1) * sr
            pos += rng.uniform(0.2, 0.8) * sr
    out = np.zeros(n)
    for (f1, f2), exc in zip(chosen, excitation):
        out += signal.sosfilt(bandpass_sos(f1 * 0.8, f1 * 1.25, sr), exc)
        out += 0.5 * signal.sosfilt(bandpass_sos(f2 * 0.85, f2 * 1.15, sr), exc)
    out += signal.sosfilt(signal.butter(2, min(2500.0, 0.4 * sr), btype="highpass", fs=sr, output="sos"), fricative)
    return unit_rms(out)


def reverb(rng: np.random.Generator, dry: np.ndarray, sr: int, rt60_s: float, wet_db: float) -> np.ndarray:
    """Convolve with a synthetic exponentially decaying noise impulse response (-60 dB at ``rt60_s``) and add it,
    ``wet_db`` re the dry energy. Output is ``dry.size + len(ir) - 1`` long."""
    m = int(rt60_s * sr)
    t = np.arange(m) / sr
    ir = rng.standard_normal(m) * np.exp(-6.908 * t / rt60_s)
    ir = signal.sosfilt(signal.butter(1, rng.uniform(2000.0, 0.45 * sr), fs=sr, output="sos"), ir)  # air absorption
    wet = signal.fftconvolve(dry, ir)
    wet *= db_to_gain(wet_db) * math.sqrt(float(np.sum(dry**2)) / max(float(np.sum(wet**2)), 1e-24))
    out = wet
    out[: dry.size] += dry
    return out


_TONAL = (_beeps, _harmonic_tone, _harmonic_tone, _honks, _honks, _chirps, _siren)
_IMPULSIVE = (_knocks, _clicks, _taps, _taps, _slam)


