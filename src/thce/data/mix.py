"""DCASE 2017 Task 2-style mixtures: isolated events mixed into background recordings at given EBRs.

Recipe (as the DCASE 2017 Task 2 "rare sound events" generator, one event class per mixture):

- every mixture is ``duration_s`` long (10 s) and cut from a background recording at a uniform random offset;
- with probability ``event_probability`` it holds one event: a class drawn uniformly from those with events, an
  event file of that class drawn uniformly, placed at an onset drawn uniformly so that it lies fully inside the
  mixture (an event longer than the mixture is cropped to it, onset 0);
- with ``events_per_mixture = k > 1`` such a mixture holds k events of its one class (files drawn independently,
  repeats possible), placed without overlap: the free time (duration minus the events' lengths) is cut at k uniform
  points, so the events keep their drawn order with random gaps; events that do not fit together are dropped from
  the end (DCASE 2017 Task 2 has k = 1, the default);
- each event is scaled to an event-to-background ratio (EBR) drawn from ``ebr_db`` (default -6, 0, 6 dB), defined
  as ``20 log10(RMS(event) / RMS(background under the event))``, both over the event's extent;
- anti-clipping: a mixture whose peak exceeds ``max_peak`` is scaled down as a whole (which keeps the EBR);
- everything is drawn from a generator seeded by ``(seed, mixture index)``: same seed, same mixtures.

Sources are split before mixing (``split_fractions``, default 70/20/10 by seed): each background recording and each
event file is used by one split only, so no source straddles splits; a mixture's ``group`` is its background
recording. Output: ``out_dir/audio/mix_00000.wav`` ... (16-bit PCM), ``out_dir/manifest.csv`` with the columns
``path,label,split,group`` and ``onset_s,offset_s,ebr_db,event_file,background_file,background_offset_s`` (those of
the mixture's first event; empty for background-only mixtures), and ``out_dir/events.tsv``, every event's onset and
offset (the strong labels, :mod:`thce.data.strong`). A rerun with the same inputs and config renders only missing
files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import soundfile as sf

from thce.audio.read import AUDIO_EXTENSIONS, audio_info, load_audio
from thce.data.manifest import SPLITS, ManifestRow, Skipped, write_manifest
from thce.data.readers import index_audio_files, read_folder
from thce.data.splits import largest_remainder
from thce.data.strong import EVENTS_FILE, StrongEvent, StrongLabels, write_strong_labels
from thce.errors import AudioError, ConfigError, DataError
from thce.io import atomic_write, ensure_dir, write_json
from thce.progress import ProgressFn

log = logging.getLogger(__name__)

_FINGERPRINT = "mix.json"


@dataclass(frozen=True)
class MixConfig:
    """How mixtures are made (defaults: DCASE 2017 Task 2).

    Attributes:
        num_mixtures: mixtures to make (over all splits).
        duration_s: mixture length.
        sample_rate_hz: output rate (sources are resampled).
        ebr_db: event-to-background ratios to draw from, in dB.
        event_probability: probability that a mixture holds an event (else it is background only).
        max_peak: anti-clipping: mixtures whose absolute peak exceeds this are scaled down to it.
        split_fractions: (train, val, test) fractions of the sources and mixtures; ``None``: no split (the
            manifest's split column is left empty).
        seed: random seed.
        events_per_mixture: events in a mixture that has any, all of its class, without overlap (module docstring).
    """

    num_mixtures: int = 100
    duration_s: float = 10.0
    sample_rate_hz: int = 16000
    ebr_db: tuple[float, ...] = (-6.0, 0.0, 6.0)
    event_probability: float = 0.5
    max_peak: float = 0.99
    split_fractions: tuple[float, float, float] | None = (0.7, 0.2, 0.1)
    seed: int = 0
    events_per_mixture: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.num_mixtures, int) or self.num_mixtures < 1:
            raise ConfigError(f"MixConfig.num_mixtures: expected a positive integer, got {self.num_mixtures!r}")
        if not self.duration_s > 0 or not math.isfinite(self.duration_s):
            raise ConfigError(f"MixConfig.duration_s: expected a positive number, got {self.duration_s!r}")
        if not isinstance(self.sample_rate_hz, int) or self.sample_rate_hz <= 0:
            raise ConfigError(f"MixConfig.sample_rate_hz: expected a positive integer, got {self.sample_rate_hz!r}")
        if not self.ebr_db or not all(math.isfinite(x) for x in self.ebr_db):
            raise ConfigError(f"MixConfig.ebr_db: expected one or more finite values in dB, got {self.ebr_db!r}")
        if not isinstance(self.events_per_mixture, int) or self.events_per_mixture < 1:
            raise ConfigError(
                f"MixConfig.events_per_mixture: expected a positive integer, got {self.events_per_mixture!r}"
            )
        if not 0.0 <= self.event_probability <= 1.0:
            raise ConfigError(f"MixConfig.event_probability: expected a value in [0, 1], got {self.event_probability}")
        if not 0.0 < self.max_peak <= 1.0:
            raise ConfigError(f"MixConfig.max_peak: expected a value in (0, 1], got {self.max_peak}")
        if self.split_fractions is not None:
            f = self.split_fractions
            if len(f) != 3 or min(f) < 0 or not math.isclose(sum(f), 1.0, abs_tol=1e-6):
                raise ConfigError(f"MixConfig.split_fractions: expected 3 non-negative values summing to 1, got {f}")

    @property
    def num_samples(self) -> int:
        return round(self.duration_s * self.sample_rate_hz)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class MixedClip(NamedTuple):
    """A mixture and its two scaled components (``mixture == background + event``, up to float rounding)."""

    mixture: np.ndarray
    background: np.ndarray
    event: np.ndarray


def rms(x: np.ndarray) -> float:
    """Root mean square (float64)."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def mix_event(
    background: np.ndarray, event: np.ndarray | None, *, onset: int = 0, ebr_db: float = 0.0, max_peak: float = 0.99
) -> MixedClip:
    """Add ``event`` to ``background`` at sample ``onset`` with ``20 log10(RMS(event) / RMS(background under the
    event)) = ebr_db``; scale the sum down to ``max_peak`` if it would clip (:func:`mix_events` with one event).

    If the background under the event is silent, the RMS of the whole background is used instead.

    Raises:
        DataError: the event is silent, or the background is silent where it matters.
        ValueError: the event does not fit at ``onset``.

    >>> bg = np.full(100, 0.1, dtype=np.float32); ev = np.ones(10, dtype=np.float32)
    >>> out = mix_event(bg, ev, onset=20, ebr_db=6.0)
    >>> round(float(20 * np.log10(rms(out.event[20:30]) / rms(out.background[20:30]))), 6)
    6.0
    """
    return mix_events(background, [] if event is None else [(event, onset, ebr_db)], max_peak=max_peak)


def mix_events(
    background: np.ndarray, events: Sequence[tuple[np.ndarray, int, float]], *, max_peak: float = 0.99
) -> MixedClip:
    """Add each ``(event, onset sample, ebr_db)`` of ``events`` to ``background``, each at its EBR against the
    background under it (as :func:`mix_event`); ``MixedClip.event`` is their sum. Then scale down to ``max_peak``.

    Raises:
        DataError: an event is silent, or the background is silent where it matters.
        ValueError: an event does not fit at its onset.
    """
    background = np.asarray(background, dtype=np.float64)
    scaled = np.zeros_like(background)
    for event, onset, ebr_db in events:
        if not event.size:
            continue
        event = np.asarray(event, dtype=np.float64)
        end = onset + event.size
        if onset < 0 or end > background.size:
            raise ValueError(f"event of {event.size} samples does not fit at {onset} in {background.size}")
        e_rms = rms(event)
        if e_rms == 0.0:
            raise DataError("event is digital silence")
        b_rms = rms(background[onset:end]) or rms(background)
        if b_rms == 0.0:
            raise DataError("background is digital silence")
        scaled[onset:end] += event * (10.0 ** (ebr_db / 20.0) * b_rms / e_rms)
    mixture = background + scaled
    peak = float(np.abs(mixture).max()) if mixture.size else 0.0
    scale = max_peak / peak if peak > max_peak else 1.0
    f32 = np.float32
    return MixedClip((mixture * scale).astype(f32), (background * scale).astype(f32), (scaled * scale).astype(f32))


@dataclass
class MixResult:
    """What :func:`make_mixtures` produced: the manifest rows (paths absolute), the manifest path and the sources or
    mixtures left out, with the problem."""

    rows: list[ManifestRow]
    manifest: Path
    skipped: list[Skipped] = field(default_factory=list)
    events: Path | None = None  # events.tsv


class _Placed(NamedTuple):
    """An event of a mixture: the file, its onset and length in the mixture (samples) and its EBR."""

    file: Path
    onset: int
    samples: int
    ebr_db: float


@dataclass(frozen=True)
class _Plan:
    index: int
    split: str
    background: Path
    background_offset_s: float
    label: str = ""
    events: tuple[_Placed, ...] = ()  # by onset


def _partition(items: list[Any], fractions: Sequence[float] | None, rng: np.random.Generator) -> dict[str, list[Any]]:
    """Shuffle ``items`` and cut them into train/val/test by ``fractions`` (all in ``""`` when None); a split with a
    positive fraction gets at least one item when another split can spare one."""
    if fractions is None:
        return {"": list(items)}
    order = [items[i] for i in rng.permutation(len(items))]
    counts = largest_remainder(len(order), fractions)
    for s in range(len(counts)):  # every split that gets mixtures gets a source, while others have more than one
        if fractions[s] > 0 and counts[s] == 0:
            donor = max(range(len(counts)), key=lambda k: counts[k])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[s] += 1
    out, start = {}, 0
    for split, n in zip(SPLITS, counts):
        out[split] = order[start : start + n]
        start += n
    return out


def make_mixtures(
    events_dir: str | os.PathLike,
    backgrounds_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    config: MixConfig = MixConfig(),
    classes: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
    strict: bool = False,
) -> MixResult:
    """Make ``config.num_mixtures`` mixtures (see the module docstring) and their manifest.

    Args:
        events_dir: isolated events, one folder per class (``events_dir/<label>/**/*.wav|flac|ogg|mp3``).
        backgrounds_dir: background recordings (any audio files below it), each at least ``duration_s`` long.
        out_dir: output folder (``audio/`` and ``manifest.csv``).
        config: the recipe.
        classes: event classes to use (default: every class folder of ``events_dir``).
        progress: ``progress("mix", done, total)`` after each mixture.
        strict: raise on an unusable source file instead of skipping it.

    Returns:
        :class:`MixResult`.

    Raises:
        DataError: no usable background or event files, or (``strict``) an unusable one.
    """
    out_dir = Path(out_dir)
    skipped: list[Skipped] = []

    def bad(path: Path | str, problem: str) -> None:
        if strict:
            raise DataError(f"{path}: {problem}")
        skipped.append(Skipped(str(path), problem, "mix"))

    found = read_folder(events_dir, classes=classes, strict=strict)
    skipped += found.skipped
    events: dict[str, list[tuple[Path, int]]] = {}
    for row in found.rows:
        if not row.label:
            bad(row.path, "a background folder among the events (put backgrounds in the backgrounds folder)")
            continue
        try:
            samples = load_audio(row.path, sample_rate_hz=config.sample_rate_hz, duration_s=None)
        except AudioError as exc:
            bad(row.path, exc.problem)
            continue
        if rms(samples) == 0.0:
            bad(row.path, "event is digital silence")
            continue
        events.setdefault(row.label, []).append((Path(row.path), min(samples.size, config.num_samples)))
    if not events:
        raise DataError(f"{events_dir}: no usable event files (expected EVENTS/<label>/*.wav|flac|ogg|mp3)")

    backgrounds: list[tuple[Path, float]] = []
    for stem_path in sorted(index_audio_files(backgrounds_dir).values()):
        try:
            seconds = audio_info(stem_path).duration_s
        except AudioError as exc:
            bad(stem_path, exc.problem)
            continue
        if seconds < config.duration_s:
            bad(stem_path, f"background shorter than the mixture ({seconds:.2f} s < {config.duration_s:g} s)")
            continue
        backgrounds.append((stem_path, seconds))
    if not backgrounds:
        raise DataError(
            f"{backgrounds_dir}: no usable background recordings (need files of at least {config.duration_s:g} s, "
            f"extensions {', '.join(AUDIO_EXTENSIONS)})"
        )

    plans = _plan(events, backgrounds, config)
    audio_dir = out_dir / "audio"
    ensure_dir(audio_dir)
    fingerprint = _fingerprint(config, events, backgrounds)
    reuse = _read_fingerprint(out_dir) == fingerprint
    write_json(out_dir / _FINGERPRINT, {"fingerprint": fingerprint, "config": config.to_dict()})
    rows: list[ManifestRow] = []
    strong: StrongLabels = {}
    for done, plan in enumerate(plans, start=1):
        path = audio_dir / f"mix_{plan.index:05d}.wav"
        if not (reuse and _complete_wav(path, config)):
            try:
                _render(plan, path, config)
            except DataError as exc:
                if strict:
                    raise
                skipped.append(Skipped(str(path), f"not made: {exc}", "mix"))
                continue
        rows.append(_row(plan, path, config, Path(backgrounds_dir)))
        rate = config.sample_rate_hz
        strong[rows[-1].path] = tuple(
            StrongEvent(e.onset / rate, (e.onset + e.samples) / rate, plan.label) for e in plan.events
        )
        if progress is not None:
            progress("mix", done, len(plans))
    manifest = write_manifest(rows, out_dir / "manifest.csv")
    events_file = write_strong_labels(out_dir / EVENTS_FILE, rows, strong)
    log.info("mix: %d mixtures in %s (%d with an event)", len(rows), out_dir, sum(bool(r.label) for r in rows))
    return MixResult(rows=rows, manifest=manifest, skipped=skipped, events=events_file)


def _plan(
    events: dict[str, list[tuple[Path, int]]], backgrounds: list[tuple[Path, float]], config: MixConfig
) -> list[_Plan]:
    """Every random choice, made up front: mixture -> split, background and offset, event, onset, EBR."""
    rng = np.random.default_rng([config.seed, 0x6D6978])  # "mix": apart from other users of the seed
    fractions = config.split_fractions
    bg_split = _partition(backgrounds, fractions, rng)
    ev_split = {label: _partition(files, fractions, rng) for label, files in sorted(events.items())}
    splits = list(bg_split)
    counts = largest_remainder(config.num_mixtures, fractions) if fractions is not None else [config.num_mixtures]
    plans: list[_Plan] = []
    index = 0
    for split, count in zip(splits, counts):
        pool = bg_split[split]
        if count and not pool:
            raise DataError(f"mix: no background recording left for the {split} split; add background recordings")
        labels = [label for label in sorted(ev_split) if ev_split[label][split]]
        missing = sorted(set(ev_split) - set(labels))
        if count and missing:
            log.warning("mix: no event files of %s for the %s split (too few files to split)", missing, split)
        for _ in range(count):
            r = np.random.default_rng([config.seed, index])
            bg_path, bg_seconds = pool[int(r.integers(len(pool)))]
            bg_offset = round(float(r.uniform(0.0, bg_seconds - config.duration_s)), 3)
            if labels and r.random() < config.event_probability:
                label = labels[int(r.integers(len(labels)))]
                files = ev_split[label][split]
                drawn = []
                for _ in range(config.events_per_mixture):
                    ev_path, ev_samples = files[int(r.integers(len(files)))]
                    drawn.append((ev_path, ev_samples, float(config.ebr_db[int(r.integers(len(config.ebr_db)))])))
                while len(drawn) > 1 and sum(samples for _, samples, _ in drawn) > config.num_samples:
                    drawn.pop()  # too long together: the last drawn go
                placed = _place([samples for _, samples, _ in drawn], config.num_samples, r)
                events = tuple(_Placed(p, onset, n, ebr) for (p, n, ebr), onset in zip(drawn, placed))
                plans.append(_Plan(index, split, bg_path, bg_offset, label, events))
            else:
                plans.append(_Plan(index, split, bg_path, bg_offset))
            index += 1
    return plans


def _place(lengths: Sequence[int], total: int, rng: np.random.Generator) -> list[int]:
    """Onsets (samples) of events of ``lengths`` in this order, without overlap, inside ``total`` samples: the free
    time is cut at ``len(lengths)`` uniform points (one event: an onset uniform in ``[0, total - length]``)."""
    free = total - sum(lengths)
    cuts = sorted(int(rng.integers(0, free + 1)) for _ in lengths)
    return [cut + sum(lengths[:j]) for j, cut in enumerate(cuts)]


def _render(plan: _Plan, path: Path, config: MixConfig) -> None:
    """Make one mixture and write it atomically as 16-bit PCM."""
    rate = config.sample_rate_hz
    background = load_audio(plan.background, sample_rate_hz=rate, duration_s=config.duration_s,
                            offset_s=plan.background_offset_s)  # fmt: skip
    events = [
        (load_audio(e.file, sample_rate_hz=rate, duration_s=None)[: e.samples], e.onset, e.ebr_db) for e in plan.events
    ]
    try:
        clip = mix_events(background, events, max_peak=config.max_peak)
    except DataError as exc:
        source = plan.background if "background" in str(exc) or not plan.events else plan.events[0].file
        raise DataError(f"{source}: {exc}") from exc
    with atomic_write(path, "wb") as handle:
        sf.write(handle, clip.mixture, rate, format="WAV", subtype="PCM_16")


def _row(plan: _Plan, path: Path, config: MixConfig, backgrounds_dir: Path) -> ManifestRow:
    rate = config.sample_rate_hz
    try:
        group = plan.background.resolve().relative_to(backgrounds_dir.resolve()).as_posix()
    except ValueError:
        group = plan.background.name
    first = plan.events[0] if plan.events else None
    extra = {
        "onset_s": f"{first.onset / rate:.3f}" if first else "",
        "offset_s": f"{(first.onset + first.samples) / rate:.3f}" if first else "",
        "ebr_db": f"{first.ebr_db:g}" if first else "",
        "event_file": str(first.file) if first else "",
        "background_file": str(plan.background),
        "background_offset_s": f"{plan.background_offset_s:.3f}",
    }
    return ManifestRow(path=path.resolve(), label=plan.label, split=plan.split, group=f"bg:{group}", extra=extra)


def _fingerprint(
    config: MixConfig, events: dict[str, list[tuple[Path, int]]], backgrounds: list[tuple[Path, float]]
) -> str:
    def stat(path: Path) -> list[Any]:
        st = path.stat()
        return [str(path.resolve()), st.st_size, st.st_mtime_ns]

    recipe = config.to_dict()
    if recipe["events_per_mixture"] == 1:
        del recipe["events_per_mixture"]  # the default: mixtures made before it existed are still valid
    payload = {
        "config": recipe,
        "events": {label: [stat(p) for p, _ in files] for label, files in sorted(events.items())},
        "backgrounds": [stat(p) for p, _ in backgrounds],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _read_fingerprint(out_dir: Path) -> str | None:
    try:
        return str(json.loads((out_dir / _FINGERPRINT).read_text(encoding="utf-8"))["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _complete_wav(path: Path, config: MixConfig) -> bool:
    try:
        info = sf.info(str(path))
    except Exception:  # missing or unreadable: render again
        return False
    return info.frames == config.num_samples and info.samplerate == config.sample_rate_hz
