"""Built-in synthetic scenes: the data of the demo and of the tests.

Deterministic 10 s scenes at 16 kHz, written as 16-bit PCM WAV files plus a manifest CSV
(``path,label,split,group,offset_s,onset_s``; see :mod:`thce.data.manifest`).

Every clip has a *background*, a random mix of

- coloured noise (spectral slope between white and brown, slowly varying gain), sometimes a band-limited noise
  (traffic, wind, rain);
- tonal confusers: mains hum, beeps, sustained harmonic tones at random pitches and short horn honks (some in the
  pitch range of barks and cries, so that pitch alone does not identify an event), bird chirps, slow sirens;
- impulsive confusers: door knocks, clicks, broadband taps and slams with fast decay (so that a gun shot is not
  "the only impulse");
- occasionally speech-like babble (formant-filtered band-limited pulse trains with syllable structure).

An *event* clip has exactly one event on top of its background (the paper's setting), placed so that it lies fully
inside the clip, mixed at an event-to-background ratio (EBR, DCASE 2017 task 2 style: RMS of the event against RMS
of the background under it, over the event's extent) drawn uniformly from ``ebr_db_range``:

- ``dog``: 1-4 barks of 0.1-0.3 s, harmonic (f0 300-800 Hz, rising then falling), sharp attack, noisy component,
  formant-like band emphasis;
- ``baby``: 1-3 cry segments of 0.5-3 s with breaths between, f0 300-600 Hz with glides and vibrato, strong
  harmonics up to about 4 kHz;
- ``gun``: 1-3 shots (attack of a few ms, exponential decay, a low boom) convolved with a synthetic exponentially
  decaying noise impulse response (RT60 0.2-1.0 s).

Each clip draws from its own random generator, derived from ``(seed, label, index)`` with
:class:`numpy.random.SeedSequence`: a clip does not change when the counts change, and the same seed gives
byte-identical files.

*Few source recordings* (``sources_per_class``, ``test_sources_per_class``; 0, the default: every clip is its own
source, as above). Real scarce data is a few dozen clips cut from a handful of recordings: clips of one recording
share the event's voice and the place's background. With ``S`` sources for a label, clip ``i`` of that label comes
from source ``i % S``. A source is a fixed set of generator parameters, drawn from its own stream
``(seed, label, source, test)``: for the event its timbre and pitch (f0, formants, spectral tilt, noise part, or a
gun's brightness, decay and room) and its rhythm (bark, cry, breath and shot spacing, which each clip varies by at
most +-15 %); for the background bed of every clip of the source, event clips included, its noise colour, level and
fluctuation, band noise, babble and hum (present or not, and how), and which few kinds of confusers occur, how
often. Each clip still draws its own noise, confuser sounds and times, event count, onset and EBR. The manifest's
``group`` is then the source (``dog_src003``, ``test_dog_src003``), so that the grouped split never puts one
source in two splits; the test set's sources are drawn from other streams than the training pool's, so test clips
come from sources unseen in training and validation.

>>> cfg = SynthConfig(counts={"dog": 1, "background": 1}, duration_s=1.0)
>>> clip = synthesise_clip("dog", clip_rng(cfg.seed, "dog", 0), cfg)
>>> clip.mixture.shape, bool(abs(clip.mixture).max() <= 0.99)
((16000,), True)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import signal

from thce.data.manifest import ManifestRow, write_manifest
from thce.config_reader import read_table
from thce.errors import ConfigError
from thce.io import atomic_write, write_json
from thce.progress import ProgressFn

log = logging.getLogger(__name__)

EVENT_LABELS: tuple[str, ...] = ("dog", "baby", "gun")
BACKGROUND = "background"
LABELS: tuple[str, ...] = (*EVENT_LABELS, BACKGROUND)

_LABEL_CODES = {BACKGROUND: 0, "dog": 1, "baby": 2, "gun": 3}  # stable: part of every clip's seed
_DOMAIN = 0x7468_6365  # "thce": keeps synth streams apart from other users of the same seed
_SOURCE_DOMAIN = 0x7372_6373  # "srcs": source recordings' traits, apart from every clip's stream
_WAV_HEADER_BYTES = 44
_FINGERPRINT = "synth.json"
_MIN_DURATION_S = 0.5

# Background recipe: probabilities per clip, rates per 10 s, levels in dB (tonal: RMS, impulsive: peak, both re the
# coloured noise's RMS). These set how hard the data is; see benchmarks/synth_difficulty.py.
_P_BAND_NOISE = 0.5
_P_BABBLE = 0.25
_P_HUM = 0.2
_TONAL_PER_10S = 1.4
_IMPULSIVE_PER_10S = 1.2
_TONAL_DB = (-8.0, 6.0)
_IMPULSIVE_DB = (6.0, 26.0)


@dataclass(frozen=True)
class SynthConfig:
    """What to synthesise.

    Attributes:
        counts: clips per label; keys among ``dog``, ``baby``, ``gun`` and ``background``.
        duration_s: length of every clip in seconds.
        sample_rate_hz: sample rate of the WAV files.
        ebr_db_range: ``(low, high)`` event-to-background ratio in dB, drawn uniformly per event clip.
        seed: drives every random draw.
        sources_per_class: source recordings per label of the ``counts`` pool, one number for every label or
            ``{label: number}`` (a label left out: 0); 0 means every clip is its own source (see the module docstring).
        test_sources_per_class: the same for the test set (``test_counts``); always sources other than the pool's.
        test_counts: clips per label of a separate test set (manifest split ``test``, file names ``test_...``),
            drawn from their own random streams. A test set with enough positives of every class makes EERs
            meaningful when the training counts are as imbalanced as the paper's 2:2:1:26; EER does not depend on
            the test set's class ratio (false-alarm and miss rates are rates).
    """

    counts: Mapping[str, int]
    duration_s: float = 10.0
    sample_rate_hz: int = 16000
    ebr_db_range: tuple[float, float] = (-6.0, 6.0)
    seed: int = 0
    test_counts: Mapping[str, int] = dataclasses.field(default_factory=dict)
    sources_per_class: int | Mapping[str, int] = 0
    test_sources_per_class: int | Mapping[str, int] = 0

    def __post_init__(self) -> None:
        if isinstance(self.counts, Mapping):
            object.__setattr__(self, "counts", dict(self.counts))
        if isinstance(self.test_counts, Mapping):
            object.__setattr__(self, "test_counts", dict(self.test_counts))
        for name in ("sources_per_class", "test_sources_per_class"):
            if isinstance(getattr(self, name), Mapping):
                object.__setattr__(self, name, dict(getattr(self, name)))
        if isinstance(self.ebr_db_range, (list, tuple)):
            object.__setattr__(self, "ebr_db_range", tuple(self.ebr_db_range))
        self.validate()

    @classmethod
    def from_ratio(cls, ratio: Mapping[str, int], unit: int, **kwargs: Any) -> SynthConfig:
        """Counts ``ratio[label] * unit``, e.g. ``from_ratio({"dog": 2, "baby": 2, "gun": 1, "background": 26}, 4)``.

        Other keyword arguments go to the constructor.
        """
        if isinstance(unit, bool) or not isinstance(unit, int) or unit < 1:
            raise ConfigError(f"synth unit: expected a positive integer, got {unit!r}")
        if not isinstance(ratio, Mapping):
            raise ConfigError(f"synth ratio: expected a mapping label -> integer, got {type(ratio).__name__}")
        for label, part in ratio.items():
            if isinstance(part, bool) or not isinstance(part, int) or part < 0:
                raise ConfigError(f"synth ratio[{label!r}]: expected a non-negative integer, got {part!r}")
        return cls(counts={label: part * unit for label, part in ratio.items()}, **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SynthConfig:
        """Build from a plain mapping (e.g. a TOML table); unknown or missing keys and bad values are a
        :class:`ConfigError` naming ``synth.key`` (:func:`thce.config_reader.read_table`)."""
        return read_table(cls, data, "synth")

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python view (TOML/JSON friendly)."""
        return {
            "counts": dict(self.counts),
            "duration_s": self.duration_s,
            "sample_rate_hz": self.sample_rate_hz,
            "ebr_db_range": list(self.ebr_db_range),
            "seed": self.seed,
            "test_counts": dict(self.test_counts),
            "sources_per_class": _plain_sources(self.sources_per_class),
            "test_sources_per_class": _plain_sources(self.test_sources_per_class),
        }

    def sources(self, label: str, *, test: bool = False) -> int:
        """Source recordings of ``label`` in the pool (``test=False``) or the test set; 0: one per clip."""
        value = self.test_sources_per_class if test else self.sources_per_class
        return int(value.get(label, 0)) if isinstance(value, Mapping) else int(value)

    @property
    def n_samples(self) -> int:
        """Samples per clip."""
        return int(round(self.duration_s * self.sample_rate_hz))

    @property
    def total(self) -> int:
        """Number of clips over all labels."""
        return sum(self.counts.values()) + sum(self.test_counts.values())

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first wrong value."""
        if not isinstance(self.counts, Mapping):
            raise ConfigError(f"synth counts: expected a mapping label -> integer, got {type(self.counts).__name__}")
        if not isinstance(self.test_counts, Mapping):
            raise ConfigError(f"synth test_counts: expected a mapping label -> integer, got {type(self.test_counts).__name__}")
        for name, table in (("counts", self.counts), ("test_counts", self.test_counts)):
            for label, count in table.items():
                if label not in LABELS:
                    raise ConfigError(f"synth {name}: unknown label {label!r}; expected one of {', '.join(LABELS)}")
                if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
                    raise ConfigError(f"synth {name}[{label!r}]: expected a non-negative integer, got {count!r}")
        if sum(self.counts.values()) == 0:
            raise ConfigError("synth counts: all zero, nothing to generate")
        if (
            isinstance(self.duration_s, bool)
            or not isinstance(self.duration_s, (int, float))
            or not math.isfinite(self.duration_s)
            or not _MIN_DURATION_S <= self.duration_s <= 3600
        ):
            raise ConfigError(
                f"synth duration_s: expected a number in [{_MIN_DURATION_S}, 3600], got {self.duration_s!r}"
            )
        if (
            isinstance(self.sample_rate_hz, bool)
            or not isinstance(self.sample_rate_hz, (int, np.integer))
            or not 8000 <= self.sample_rate_hz <= 192000
        ):
            raise ConfigError(
                f"synth sample_rate_hz: expected an integer in [8000, 192000], got {self.sample_rate_hz!r}"
            )
        rng_ = self.ebr_db_range
        if (
            not isinstance(rng_, tuple)
            or len(rng_) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in rng_)
            or rng_[0] > rng_[1]
            or min(rng_) < -60
            or max(rng_) > 60
        ):
            raise ConfigError(
                f"synth ebr_db_range: expected (low, high) in dB with -60 <= low <= high <= 60, got {rng_!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"synth seed: expected a non-negative integer, got {self.seed!r}")
        for name in ("sources_per_class", "test_sources_per_class"):
            value = getattr(self, name)
            table = value if isinstance(value, Mapping) else {"": value}
            for label, count in table.items():
                where = f"synth {name}" + (f"[{label!r}]" if label else "")
                if label and label not in LABELS:
                    raise ConfigError(f"synth {name}: unknown label {label!r}; expected one of {', '.join(LABELS)}")
                if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
                    raise ConfigError(
                        f"{where}: expected a non-negative integer (0: every clip its own source), got {count!r}"
                    )


class Source(NamedTuple):
    """The traits one source recording fixes for all its clips: ``event`` those of its label's event generator
    (empty for background), ``bed`` those of the background bed under every clip."""

    event: dict[str, Any]
    bed: dict[str, Any]


class SynthClip(NamedTuple):
    """One synthesised clip; arrays of shape ``(n_samples,)``, float64, full scale 1.0.

    ``mixture == background + event``; ``event`` is zero outside ``[onset_s, offset_s)``; onset and offset
    (seconds) are ``None`` for a background clip.
    """

    mixture: np.ndarray
    event: np.ndarray
    background: np.ndarray
    onset_s: float | None
    offset_s: float | None


# ----------------------------------------------------------------------------------------------------- public API


def clip_id(label: str, index: int) -> str:
    """``<label>_<index>`` with a zero-padded index, e.g. ``dog_00012``: the file stem and the manifest group."""
    return f"{label}_{index:05d}"


def clip_rng(seed: int, label: str, index: int, *, test: bool = False) -> np.random.Generator:
    """The random generator of one clip, derived from ``(seed, label, index)`` only; test-set clips
    (``test=True``) have streams of their own."""
    _check_label(label)
    key = (_LABEL_CODES[label], int(index), 1) if test else (_LABEL_CODES[label], int(index))
    sequence = np.random.SeedSequence(entropy=(_DOMAIN, int(seed)), spawn_key=key)
    return np.random.default_rng(sequence)


def source_of(config: SynthConfig, label: str, index: int, *, test: bool = False) -> tuple[int, Source] | None:
    """``(source number, its traits)`` of clip ``index`` of ``label``, or ``None`` when clips are their own sources.

    Clip ``i`` comes from source ``i % S`` (``S = config.sources(label, test=test)``); a source depends only on
    ``(seed, label, source number, test)``, so pool and test sources never coincide.
    """
    _check_label(label)
    count = config.sources(label, test=test)
    if count == 0:
        return None
    number = int(index) % count
    sequence = np.random.SeedSequence(
        entropy=(_SOURCE_DOMAIN, int(config.seed)), spawn_key=(_LABEL_CODES[label], number, int(test))
    )
    ev_rng, bed_rng = np.random.default_rng(sequence).spawn(2)
    sr = config.sample_rate_hz
    event = {} if label == BACKGROUND else {k: draw(ev_rng, sr) for k, draw in _EVENT_TRAITS[label].items()}
    return number, Source(event=event, bed={k: draw(bed_rng, sr) for k, draw in _BED_TRAITS.items()})


def source_group(label: str, number: int, *, test: bool = False) -> str:
    """The manifest ``group`` of a source, e.g. ``dog_src003`` (``test_dog_src003`` in the test set)."""
    return ("test_" if test else "") + f"{label}_src{number:03d}"


def synthesise_clip(
    label: str, rng: np.random.Generator, config: SynthConfig, source: Source | None = None
) -> SynthClip:
    """Synthesise one clip of ``config.duration_s`` seconds: background, plus one event unless ``label`` is background.

    The event is scaled to an EBR drawn from ``config.ebr_db_range``, then the whole clip (mixture, event and
    background alike, so the EBR is kept) is scaled down if needed so that the mixture peaks at most at 0.99.
    ``rng`` is split into independent streams for background, event and placement. ``source`` (see
    :func:`source_of`): the traits the clip shares with the other clips of its source recording; ``None``: all
    drawn from ``rng``.
    """
    _check_label(label)
    sr, n = config.sample_rate_hz, config.n_samples
    bg_rng, ev_rng, mix_rng = rng.spawn(3)
    background = _background(bg_rng, n, sr, source.bed if source is not None else _NO_SOURCE)
    event = np.zeros(n)
    onset_s = offset_s = None
    if label != BACKGROUND:
        short, start, ebr_db = _event_placement(label, ev_rng, mix_rng, config, source)
        stop = start + short.size
        gain = _rms(background[start:stop]) / max(_rms(short), 1e-12) * 10.0 ** (ebr_db / 20.0)
        event[start:stop] = gain * short
        onset_s, offset_s = start / sr, stop / sr
    mixture = background + event
    peak = float(np.max(np.abs(mixture)))
    if peak > 0.99:
        scale = 0.99 / peak
        mixture *= scale
        event *= scale
        background = background * scale
    return SynthClip(mixture, event, background, onset_s, offset_s)


def generate_scenes(
    config: SynthConfig,
    out_dir: str | os.PathLike,
    *,
    progress: ProgressFn | None = None,
) -> Path:
    """Write ``out_dir/audio/<label>/<label>_<idx>.wav`` (16-bit PCM) and ``out_dir/manifest.csv``.

    Resumable: a WAV that already exists with the right size is kept (its onset and offset are recomputed from the
    seed, cheaply). ``out_dir/synth.json`` records the duration, rate, EBR range and seed; if they differ from
    ``config`` (counts may differ), existing clips are deleted and regenerated. Each WAV is written atomically.

    Args:
        config: what to generate.
        out_dir: output folder (created).
        progress: called as ``progress("synthesise scenes", done, total)`` after each clip.

    Returns:
        The manifest path. Manifest columns: ``path,label,split,group,offset_s,onset_s``; ``label`` empty for
        background, ``split`` empty (``test`` for the clips of ``test_counts``), ``group`` the clip id (with
        sources: the source, see :func:`source_group`), onset/offset in seconds (empty for background).
    """
    config.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = {k: v for k, v in config.to_dict().items() if k not in ("counts", "test_counts")}
    for key in ("sources_per_class", "test_sources_per_class"):
        if not fingerprint[key]:  # 0: the clips of before sources existed, whose folders stay valid
            del fingerprint[key]
    fingerprint_path = out_dir / _FINGERPRINT
    if _read_fingerprint(fingerprint_path) != fingerprint:
        # Clips from other settings (or of unknown origin) are removed before the new fingerprint is written, so
        # that whatever a later run finds beside the fingerprint was made with it, even after a kill.
        stale = [
            p
            for folder in ("", "test")
            for label in LABELS
            for p in sorted((out_dir / "audio" / folder / label).glob(f"*{label}_*.wav"))
        ]
        if stale:
            log.warning("%s: %d clips made with other settings; regenerating them", out_dir, len(stale))
        for old in stale:
            old.unlink()
        write_json(fingerprint_path, fingerprint)

    sr = config.sample_rate_hz
    expected_bytes = _WAV_HEADER_BYTES + 2 * config.n_samples
    plan = [(False, label, index) for label in LABELS for index in range(config.counts.get(label, 0))]
    plan += [(True, label, index) for label in LABELS for index in range(config.test_counts.get(label, 0))]
    rows: list[ManifestRow] = []
    written = 0
    for done, (test, label, index) in enumerate(plan, start=1):
        cid = ("test_" if test else "") + clip_id(label, index)
        path = out_dir / "audio" / ("test" if test else "") / label / f"{cid}.wav"
        rng = clip_rng(config.seed, label, index, test=test)
        found = source_of(config, label, index, test=test)
        source = found[1] if found is not None else None
        if path.is_file() and path.stat().st_size == expected_bytes:
            onset_s, offset_s = _clip_timing(label, rng, config, source)
        else:
            clip = synthesise_clip(label, rng, config, source)
            _write_wav(path, clip.mixture, sr)
            onset_s, offset_s = clip.onset_s, clip.offset_s
            written += 1
        rows.append(
            ManifestRow(
                path=path,
                label="" if label == BACKGROUND else label,
                split="test" if test else "",
                group=cid if found is None else source_group(label, found[0], test=test),
                extra={"onset_s": _fmt_time(onset_s), "offset_s": _fmt_time(offset_s)},
            )
        )
        if progress is not None:
            progress("synthesise scenes", done, len(plan))
    manifest = write_manifest(rows, out_dir / "manifest.csv")
    log.info("synthetic scenes in %s: %d clips, %d written, %d kept", out_dir, len(plan), written, len(plan) - written)
    return manifest


# ------------------------------------------------------------------------------------------------------ internals


_Trait = Callable[[np.random.Generator, int], Any]  # (rng, sample rate) -> one trait's value
_NO_SOURCE: Mapping[str, Any] = {}
_SPREAD = 0.15  # a per-clip value around its source's: x U(1 - _SPREAD, 1 + _SPREAD)


def _trait(src: Mapping[str, Any], key: str, table: Mapping[str, _Trait], rng: np.random.Generator, sr: int) -> Any:
    """The source's value of trait ``key``; without a source (``key`` not in ``src``) a draw from ``rng``."""
    return src[key] if key in src else table[key](rng, sr)


def _around(src: Mapping[str, Any], key: str, table: Mapping[str, _Trait], rng: np.random.Generator, sr: int) -> float:
    """A per-clip value: near the source's (times a uniform factor in ``1 +- _SPREAD``), else a draw from ``table``."""
    if key in src:
        return float(src[key]) * rng.uniform(1.0 - _SPREAD, 1.0 + _SPREAD)
    return table[key](rng, sr)


def _check_label(label: str) -> None:
    if label not in LABELS:
        raise ConfigError(f"synth label {label!r}: expected one of {', '.join(LABELS)}")


def _plain_sources(value: int | Mapping[str, int]) -> int | dict[str, int]:
    return {k: int(v) for k, v in value.items()} if isinstance(value, Mapping) else int(value)


def _fmt_time(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _read_fingerprint(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_wav(path: Path, x: np.ndarray, sample_rate_hz: int) -> None:
    """Write mono float ``x`` (full scale 1.0) as a canonical 44-byte-header 16-bit PCM WAV, atomically."""
    pcm = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        *(b"RIFF", 36 + len(pcm), b"WAVE"),
        *(b"fmt ", 16, 1, 1, sample_rate_hz, 2 * sample_rate_hz, 2, 16),  # PCM, mono, rate, byte rate, align, bits
        *(b"data", len(pcm)),
    )
    with atomic_write(path, "wb") as handle:
        handle.write(header)
        handle.write(pcm)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / max(_rms(x), 1e-12)


def _db(value: float) -> float:
    return 10.0 ** (value / 20.0)


def _add(buffer: np.ndarray, x: np.ndarray, start: int) -> None:
    """Add ``x`` into ``buffer`` at ``start``, cut to the buffer."""
    stop = min(buffer.size, start + x.size)
    if stop > start >= 0:
        buffer[start:stop] += x[: stop - start]


def _fade(n: int, sr: int, attack_s: float, release_s: float) -> np.ndarray:
    """Envelope of length ``n``: raised-cosine attack and release (seconds), flat between."""
    env = np.ones(n)
    a = min(n, max(1, int(attack_s * sr)))
    r = min(n - 1, max(1, int(release_s * sr)))
    env[:a] = 0.5 - 0.5 * np.cos(np.pi * np.arange(a) / a)
    env[n - r :] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(1, r + 1) / r)
    return env


def _pad(x: np.ndarray, m: int) -> np.ndarray:
    """``x`` cut or zero-padded to ``m`` samples."""
    return x[:m] if x.size >= m else np.concatenate([x, np.zeros(m - x.size)])


def _fit(x: np.ndarray, max_len: int, sr: int) -> np.ndarray:
    """Cut ``x`` to ``max_len`` samples with a short fade-out if it is longer."""
    if x.size <= max_len:
        return x
    x = x[:max_len].copy()
    r = min(max_len, int(0.02 * sr))
    x[max_len - r :] *= np.linspace(1.0, 0.0, r)
    return x


def _trim_tail(x: np.ndarray, floor_db: float = -60.0) -> np.ndarray:
    """Drop trailing samples after the last one above ``floor_db`` re the peak."""
    above = np.flatnonzero(np.abs(x) > np.max(np.abs(x)) * _db(floor_db))
    return x[: above[-1] + 1] if above.size else x


def _smooth_walk(rng: np.random.Generator, n: int, sr: int, step_s: float, depth: float) -> np.ndarray:
    """Slowly varying curve of shape ``(n,)``: uniform knots in ``[-depth, depth]`` every ``step_s``, interpolated."""
    step = max(2, int(step_s * sr))
    knots = rng.uniform(-depth, depth, n // step + 2)
    return np.interp(np.arange(n), np.arange(knots.size) * step, knots)


def _harmonics(
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


def _envelope_fn(tilt_db_per_oct: float, formants: list[tuple[float, float, float]], floor: float) -> Callable:
    """Spectral envelope: a tilt times (floor + Gaussian bumps ``(centre_hz, width_hz, gain)``)."""

    def weights(freqs: np.ndarray) -> np.ndarray:
        bumps = sum(g * np.exp(-0.5 * ((freqs - fc) / bw) ** 2) for fc, bw, g in formants)
        tilt = 10.0 ** (tilt_db_per_oct * np.log2(freqs / freqs[0]) / 20.0)
        return tilt * (floor + bumps)

    return weights


def _bandpass(low_hz: float, high_hz: float, sr: int, order: int = 2) -> np.ndarray:
    nyq = 0.5 * sr
    low = min(max(low_hz, 20.0), 0.9 * nyq)
    high = min(max(high_hz, low * 1.1), 0.95 * nyq)
    return signal.butter(order, [low, high], btype="bandpass", fs=sr, output="sos")


# ----------------------------------------------------------------------------------------------------- background


def _coloured_noise(rng: np.random.Generator, n: int, sr: int, beta: float) -> np.ndarray:
    """Unit-RMS noise with power spectrum ``1 / f**beta`` (0 white, 1 pink, 2 brown), shape ``(n,)``."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spec *= np.maximum(freqs, 30.0) ** (-beta / 2.0)
    return _unit_rms(np.fft.irfft(spec, n))


# The character of a recording's bed. Without a source each is drawn per clip at its place in _background;
# the "source only" ones exist only for sources (without one: the constants above, every confuser kind).
_BED_TRAITS: dict[str, _Trait] = {
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


def _background(rng: np.random.Generator, n: int, sr: int, src: Mapping[str, Any] = _NO_SOURCE) -> np.ndarray:
    """A random background scene of shape ``(n,)``; its coloured noise at -38 to -24 dBFS RMS, the rest relative.
    ``src``: a source's bed traits (:data:`_BED_TRAITS`); empty: all drawn from ``rng``."""

    def trait(key: str) -> Any:
        return _trait(src, key, _BED_TRAITS, rng, sr)

    tens = n / sr / 10.0  # confuser rates are per 10 s
    noise = _coloured_noise(rng, n, sr, trait("beta"))
    noise *= 10.0 ** (_smooth_walk(rng, n, sr, trait("walk_step_s"), trait("walk_depth_db")) / 20.0)
    noise_rms = _rms(noise)
    scene = noise.copy()
    if trait("band"):  # band-limited noise: traffic, wind, rain, ventilation
        centre = trait("band_centre_hz")
        width = trait("band_width_oct")
        band = signal.sosfilt(_bandpass(centre * 2 ** -width, centre * 2**width, sr), rng.standard_normal(n))
        step_s, depth_db = trait("band_step_s"), trait("band_depth_db")
        band = _unit_rms(band) * 10.0 ** (_smooth_walk(rng, n, sr, step_s, depth_db) / 20.0)
        scene = scene + _db(trait("band_db")) * band
    if trait("babble"):
        scene = scene + _db(trait("babble_db")) * _babble(rng, n, sr)
    if trait("hum"):
        scene = scene + _db(trait("hum_db")) * _hum(rng, n, sr, src)

    tonal_kinds = src.get("tonal_kinds", range(len(_TONAL)))
    impulsive_kinds = src.get("impulsive_kinds", range(len(_IMPULSIVE)))
    n_tonal = rng.poisson(src.get("tonal_per_10s", _TONAL_PER_10S) * tens)
    n_impulsive = rng.poisson(src.get("impulsive_per_10s", _IMPULSIVE_PER_10S) * tens)
    for kind in [_TONAL[tonal_kinds[i]] for i in rng.integers(0, len(tonal_kinds), n_tonal)]:
        x = _fit(kind(rng, sr), n, sr)
        _add(scene, _db(rng.uniform(*_TONAL_DB)) * _unit_rms(x), int(rng.integers(0, max(1, n - x.size + 1))))
    for kind in [_IMPULSIVE[impulsive_kinds[i]] for i in rng.integers(0, len(impulsive_kinds), n_impulsive)]:
        x = _fit(kind(rng, sr), n, sr)
        x = x / max(float(np.max(np.abs(x))), 1e-12)
        _add(scene, _db(rng.uniform(*_IMPULSIVE_DB)) * x, int(rng.integers(0, max(1, n - x.size + 1))))
    return scene * (_db(trait("level_db")) / noise_rms)


def _hum(rng: np.random.Generator, n: int, sr: int, src: Mapping[str, Any] = _NO_SOURCE) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and a few harmonics, slowly wavering level; shape ``(n,)``."""
    f0 = _trait(src, "hum_hz", _BED_TRAITS, rng, sr)
    weights = _envelope_fn(_trait(src, "hum_tilt", _BED_TRAITS, rng, sr), [], 1.0)
    x = _harmonics(rng, np.full(n, f0), sr, weights, _trait(src, "hum_f_max", _BED_TRAITS, rng, sr))
    return _unit_rms(x) * 10.0 ** (_smooth_walk(rng, n, sr, 1.0, 2.0) / 20.0)


def _beeps(rng: np.random.Generator, sr: int) -> np.ndarray:
    """1-5 equal electronic beeps (pure or slightly harmonic tone, 400-4000 Hz, 50-400 ms)."""
    freq = np.exp(rng.uniform(np.log(400.0), np.log(4000.0)))
    dur = rng.uniform(0.05, 0.4)
    gap = rng.uniform(0.05, 0.5)
    m = int(dur * sr)
    beep = _harmonics(rng, np.full(m, freq), sr, _envelope_fn(rng.uniform(-30.0, -8.0), [], 1.0), 6000.0)
    beep *= _fade(m, sr, 0.004, 0.004)
    count = int(rng.integers(1, 6))
    out = np.zeros(int((count * (dur + gap)) * sr) + m)
    for i in range(count):
        _add(out, beep, int(i * (dur + gap) * sr))
    return _trim_tail(out)


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
    x = _harmonics(rng, track, sr, _envelope_fn(rng.uniform(-12.0, -1.0), formants, 0.5), rng.uniform(1500.0, 6000.0))
    return x * _fade(m, sr, rng.uniform(0.005, 0.2), rng.uniform(0.02, 0.4))


def _honks(rng: np.random.Generator, sr: int) -> np.ndarray:
    """1-3 short horn honks / squeaks: bright harmonic bursts (f0 250-700 Hz, 0.08-0.5 s, flat pitch, sharp attack),
    bark-like in pitch and length but without a pitch arch or noise."""
    f0 = rng.uniform(250.0, 700.0)
    tilt = rng.uniform(-6.0, -1.0)
    formant = (rng.uniform(800.0, 3000.0), rng.uniform(200.0, 800.0), rng.uniform(0.0, 2.0))
    weights = _envelope_fn(tilt, [formant], 0.5)
    count = int(rng.integers(1, 4))
    dur = rng.uniform(0.08, 0.5)
    gap = rng.uniform(0.05, 0.4)
    m = int(dur * sr)
    out = np.zeros(int(count * (dur + gap) * sr) + m)
    for i in range(count):
        track = np.full(m, f0 * rng.uniform(0.98, 1.02))
        honk = _harmonics(rng, track, sr, weights, 6000.0)
        honk *= _fade(m, sr, rng.uniform(0.002, 0.02), rng.uniform(0.01, 0.06))
        _add(out, honk, int(i * (dur + gap) * sr))
    return _trim_tail(out)


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
        _add(out, chirp * rng.uniform(0.5, 1.0), int((i * pace + rng.uniform(0.0, 0.03)) * sr))
    return _trim_tail(out)


def _siren(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A slow periodic pitch sweep (alarm, siren), 1-4 s."""
    m = int(rng.uniform(1.0, 4.0) * sr)
    t = np.arange(m) / sr
    centre = rng.uniform(500.0, 1500.0)
    track = centre * (1.0 + rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(0.3, 2.0) * t + rng.uniform(0, 6.3)))
    x = _harmonics(rng, track, sr, _envelope_fn(rng.uniform(-15.0, -4.0), [], 1.0), 5000.0)
    return x * _fade(m, sr, 0.1, 0.2)


def _resonant_hit(
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
    hits = [_resonant_hit(rng, sr, 3, (80.0, 900.0), (0.005, 0.04)) for _ in range(count)]
    starts = [int((i * pace + rng.uniform(0.0, 0.03)) * sr) for i in range(count)]
    out = np.zeros(starts[-1] + max(h.size for h in hits))
    for start, hit in zip(starts, hits):
        _add(out, hit * rng.uniform(0.6, 1.0), start)
    return out


def _clicks(rng: np.random.Generator, sr: int) -> np.ndarray:
    """1-6 very short broadband clicks (switches, keys, cracks)."""
    count = int(rng.integers(1, 7))
    starts = np.sort(rng.uniform(0.0, rng.uniform(0.05, 1.5), count))
    out = np.zeros(int((starts[-1] + 0.02) * sr) + 1)
    for start in starts:
        m = int(rng.uniform(0.0005, 0.003) * sr) + 2
        click = rng.standard_normal(m) * np.exp(-np.arange(m) / (0.3 * m))
        _add(out, click * rng.uniform(0.3, 1.0), int(start * sr))
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
        _add(out, tap * rng.uniform(0.5, 1.0), int((i * rng.uniform(0.1, 0.4)) * sr))
    if rng.random() < 0.4:
        out = _reverb(rng, out, sr, rng.uniform(0.1, 0.4), rng.uniform(-12.0, -3.0))
    return _trim_tail(out)


def _slam(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A door slam / dropped object: a dull thump with a 30-150 ms broadband decay and a short room tail."""
    tau = rng.uniform(0.03, 0.15)
    m = int(5 * tau * sr) + 1
    sos = signal.butter(2, rng.uniform(600.0, 3000.0), btype="lowpass", fs=sr, output="sos")
    body = signal.sosfilt(sos, rng.standard_normal(m)) * np.exp(-np.arange(m) / (tau * sr))
    thump_gain = rng.uniform(0.5, 2.0)
    body = _unit_rms(body) + thump_gain * _unit_rms(_pad(_resonant_hit(rng, sr, 2, (40.0, 200.0), (0.02, 0.08)), m))
    body[: int(0.003 * sr)] *= np.linspace(0.0, 1.0, int(0.003 * sr))
    return _trim_tail(_reverb(rng, body, sr, rng.uniform(0.1, 0.5), rng.uniform(-15.0, -6.0)))


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
        intonation = 1.0 + _smooth_walk(rng, n, sr, rng.uniform(0.2, 0.6), 0.15)
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
                    _add(fricative, hiss, max(0, start - f_len // 2))
                pos += m + rng.uniform(0.02, 0.1) * sr
            pos += rng.uniform(0.2, 0.8) * sr
    out = np.zeros(n)
    for (f1, f2), exc in zip(chosen, excitation):
        out += signal.sosfilt(_bandpass(f1 * 0.8, f1 * 1.25, sr), exc)
        out += 0.5 * signal.sosfilt(_bandpass(f2 * 0.85, f2 * 1.15, sr), exc)
    out += signal.sosfilt(signal.butter(2, min(2500.0, 0.4 * sr), btype="highpass", fs=sr, output="sos"), fricative)
    return _unit_rms(out)


def _reverb(rng: np.random.Generator, dry: np.ndarray, sr: int, rt60_s: float, wet_db: float) -> np.ndarray:
    """Convolve with a synthetic exponentially decaying noise impulse response (-60 dB at ``rt60_s``) and add it,
    ``wet_db`` re the dry energy. Output is ``dry.size + len(ir) - 1`` long."""
    m = int(rt60_s * sr)
    t = np.arange(m) / sr
    ir = rng.standard_normal(m) * np.exp(-6.908 * t / rt60_s)
    ir = signal.sosfilt(signal.butter(1, rng.uniform(2000.0, 0.45 * sr), fs=sr, output="sos"), ir)  # air absorption
    wet = signal.fftconvolve(dry, ir)
    wet *= _db(wet_db) * math.sqrt(float(np.sum(dry**2)) / max(float(np.sum(wet**2)), 1e-24))
    out = wet
    out[: dry.size] += dry
    return out


_TONAL = (_beeps, _harmonic_tone, _harmonic_tone, _honks, _honks, _chirps, _siren)
_IMPULSIVE = (_knocks, _clicks, _taps, _taps, _slam)


# --------------------------------------------------------------------------------------------------------- events


def _event_placement(
    label: str,
    ev_rng: np.random.Generator,
    mix_rng: np.random.Generator,
    config: SynthConfig,
    source: Source | None = None,
) -> tuple[np.ndarray, int, float]:
    """The event (shape ``(m,)``, ``m <= n_samples``), its start sample and its EBR in dB."""
    sr, n = config.sample_rate_hz, config.n_samples
    short = _fit(_EVENTS[label](ev_rng, sr, n, source.event if source is not None else _NO_SOURCE), n, sr)
    start = int(mix_rng.integers(0, n - short.size + 1))
    ebr_db = float(mix_rng.uniform(*config.ebr_db_range))
    return short, start, ebr_db


def _clip_timing(
    label: str, rng: np.random.Generator, config: SynthConfig, source: Source | None = None
) -> tuple[float | None, float | None]:
    """Onset and offset of a clip's event (seconds), without synthesising its background."""
    _check_label(label)
    if label == BACKGROUND:
        return None, None
    _, ev_rng, mix_rng = rng.spawn(3)
    short, start, _ = _event_placement(label, ev_rng, mix_rng, config, source)
    sr = config.sample_rate_hz
    return start / sr, (start + short.size) / sr


_DOG_TRAITS: dict[str, _Trait] = {
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


def _dog(rng: np.random.Generator, sr: int, max_len: int, src: Mapping[str, Any] = _NO_SOURCE) -> np.ndarray:
    """1-4 barks (0.1-0.3 s): harmonic, f0 300-800 Hz rising then falling, sharp attack, noisy part, formants.
    ``src``: a source's traits (:data:`_DOG_TRAITS`); empty: all drawn from ``rng``."""
    f0_dog = _trait(src, "f0", _DOG_TRAITS, rng, sr)
    formants = _trait(src, "formants", _DOG_TRAITS, rng, sr)
    weights = _envelope_fn(_trait(src, "tilt", _DOG_TRAITS, rng, sr), formants, 0.3)
    noise_sos = _bandpass(formants[0][0] * 0.6, formants[1][0] * 1.3, sr)
    noise_db = _trait(src, "noise_db", _DOG_TRAITS, rng, sr)
    pieces: list[tuple[int, np.ndarray]] = []
    pos = 0
    for _ in range(int(rng.integers(1, 5))):
        dur = _around(src, "bark_s", _DOG_TRAITS, rng, sr)
        m = int(dur * sr)
        if pieces and pos + m > max_len:
            break
        u = np.arange(m) / m
        peak_at = rng.uniform(0.1, 0.4)
        contour = np.interp(u, [0.0, peak_at, 1.0], [1.0, rng.uniform(1.05, 1.35), rng.uniform(0.7, 0.95)])
        track = f0_dog * rng.uniform(0.9, 1.1) * contour * (1.0 + _smooth_walk(rng, m, sr, 0.01, 0.02))
        harm = _unit_rms(_harmonics(rng, track, sr, weights, 5000.0))
        noise = _unit_rms(signal.sosfilt(noise_sos, rng.standard_normal(m)))
        attack = rng.uniform(0.003, 0.012)
        tau = rng.uniform(0.25, 0.6) * dur
        env = np.minimum(1.0, u * dur / attack) * np.exp(-np.maximum(0.0, u * dur - attack) / tau)
        env *= _fade(m, sr, 0.0, 0.01)
        pieces.append((pos, (harm + _db(noise_db) * noise) * env * rng.uniform(0.6, 1.0)))
        pos += m + int(_around(src, "gap_s", _DOG_TRAITS, rng, sr) * sr)
    out = np.zeros(pieces[-1][0] + pieces[-1][1].size)
    for start, piece in pieces:
        _add(out, piece, start)
    return out


_BABY_TRAITS: dict[str, _Trait] = {
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


def _baby(rng: np.random.Generator, sr: int, max_len: int, src: Mapping[str, Any] = _NO_SOURCE) -> np.ndarray:
    """1-3 cry segments (0.5-3 s) with breaths between: f0 300-600 Hz with glides and vibrato, harmonics to ~4 kHz.
    ``src``: a source's traits (:data:`_BABY_TRAITS`); empty: all drawn from ``rng``."""
    f0_baby = _trait(src, "f0", _BABY_TRAITS, rng, sr)
    formants = _trait(src, "formants", _BABY_TRAITS, rng, sr)
    weights = _envelope_fn(_trait(src, "tilt", _BABY_TRAITS, rng, sr), formants, 0.5)
    pieces: list[tuple[int, np.ndarray]] = []
    pos = 0
    for _ in range(int(rng.integers(1, 4))):
        room = max_len - pos
        if pieces and room < int(0.5 * sr):
            break
        dur = min(_around(src, "cry_s", _BABY_TRAITS, rng, sr), room / sr)
        m = int(dur * sr)
        t = np.arange(m) / sr
        u = t / dur
        knots = [rng.uniform(-0.15, 0.0), rng.uniform(0.1, 0.35), rng.uniform(0.0, 0.3), rng.uniform(-0.3, 0.0)]
        shape = np.interp(u, np.linspace(0.0, 1.0, 4), knots)  # glide: up, then down
        depth = rng.uniform(0.01, 0.04)
        rate = _around(src, "vibrato_hz", _BABY_TRAITS, rng, sr)
        vibrato = depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6.3))
        track = f0_baby * rng.uniform(0.9, 1.1) * (1.0 + shape + vibrato + _smooth_walk(rng, m, sr, 0.03, 0.015))
        cry = _unit_rms(_harmonics(rng, track, sr, weights, _trait(src, "f_max", _BABY_TRAITS, rng, sr)))
        fade = _fade(m, sr, rng.uniform(0.03, 0.1), rng.uniform(0.05, 0.2))
        cry *= fade * (1.0 + 0.15 * _smooth_walk(rng, m, sr, 0.05, 1.0))  # with a slight tremolo
        pieces.append((pos, cry))
        pos += m
        breath = int(_around(src, "breath_s", _BABY_TRAITS, rng, sr) * sr)
        if pos + breath < max_len:  # an inhale: soft high-passed noise
            inhale = signal.sosfilt(_bandpass(1000.0, 4000.0, sr), rng.standard_normal(breath)) * np.hanning(breath)
            pieces.append((pos, _db(rng.uniform(-26.0, -16.0)) * _unit_rms(inhale)))
        pos += breath
    out = np.zeros(max(start + piece.size for start, piece in pieces))
    for start, piece in pieces:
        _add(out, piece, start)
    return _trim_tail(out)


_GUN_TRAITS: dict[str, _Trait] = {
    "cutoff": lambda r, sr: r.uniform(2500.0, 0.45 * sr),
    "spacing_s": lambda r, sr: r.uniform(0.08, 0.6),  # rhythm: per clip, around the source's value
    "tau": lambda r, sr: r.uniform(0.008, 0.04),
    "boom_gain": lambda r, sr: r.uniform(0.3, 1.5),  # per shot, around the source's value
    "rt60_s": lambda r, sr: r.uniform(0.2, 1.0),  # the space: one room per source
    "wet_db": lambda r, sr: r.uniform(-6.0, 6.0),
}


def _gun(rng: np.random.Generator, sr: int, max_len: int, src: Mapping[str, Any] = _NO_SOURCE) -> np.ndarray:
    """1-3 shots: broadband burst (1-4 ms attack, exponential decay) with a low boom, in a reverberant space
    (noise impulse response, RT60 0.2-1.0 s). ``src``: a source's traits (:data:`_GUN_TRAITS`); empty: all drawn
    from ``rng``."""
    cutoff = _trait(src, "cutoff", _GUN_TRAITS, rng, sr)
    sos = signal.butter(2, cutoff, btype="lowpass", fs=sr, output="sos")
    count = int(rng.integers(1, 4))
    spacing = _around(src, "spacing_s", _GUN_TRAITS, rng, sr)
    starts = [int((i * spacing + rng.uniform(0.0, 0.05)) * sr) for i in range(count)]
    tau = _trait(src, "tau", _GUN_TRAITS, rng, sr)
    m = int(6 * tau * sr) + 1
    dry = np.zeros(starts[-1] + m)
    for start in starts:
        attack = int(rng.uniform(0.001, 0.004) * sr)
        burst = signal.sosfilt(sos, rng.standard_normal(m)) * np.exp(-np.arange(m) / (tau * sr))
        boom_gain = _around(src, "boom_gain", _GUN_TRAITS, rng, sr)
        boom = _unit_rms(_pad(_resonant_hit(rng, sr, 1, (40.0, 150.0), (0.02, 0.06)), m))
        burst = _unit_rms(burst) + boom_gain * boom
        burst[:attack] *= np.linspace(0.0, 1.0, attack)
        _add(dry, burst * rng.uniform(0.7, 1.0), start)
    rt60_s = _trait(src, "rt60_s", _GUN_TRAITS, rng, sr)
    wet_db = _trait(src, "wet_db", _GUN_TRAITS, rng, sr)
    return _trim_tail(_reverb(rng, dry, sr, rt60_s, wet_db))


_EVENTS: dict[str, Callable[..., np.ndarray]] = {"dog": _dog, "baby": _baby, "gun": _gun}
_EVENT_TRAITS: dict[str, dict[str, _Trait]] = {"dog": _DOG_TRAITS, "baby": _BABY_TRAITS, "gun": _GUN_TRAITS}
