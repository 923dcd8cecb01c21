"""Built-in synthetic scenes: the data of the demo and of the tests.

Deterministic 10 s scenes at 16 kHz, written as 16-bit PCM WAV files plus a manifest CSV
(``path,label,split,group,offset_s,onset_s``; see :mod:`thce.data.manifest`) and its event list ``events.tsv`` (the
strong labels, see :mod:`thce.data.strong`).

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

This package: the scenes on disk and the per-clip random streams here; the settings and records in
:mod:`~thce.data.synth.config`; the sounds in :mod:`~thce.data.synth.background` (bed and confusers) and
:mod:`~thce.data.synth.events` (barks, cries, shots), both built from :mod:`~thce.data.synth.signals`.

>>> cfg = SynthConfig(counts={"dog": 1, "background": 1}, duration_s=1.0)
>>> clip = synthesise_clip("dog", clip_rng(cfg.seed, "dog", 0), cfg)
>>> clip.mixture.shape, bool(abs(clip.mixture).max() <= 0.99)
((16000,), True)
"""

from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from thce.data.feature_pool import available_cpus, run_shards, start_method
from thce.data.manifest import ManifestRow, write_manifest
from thce.data.strong import EVENTS_FILE, StrongEvent, StrongLabels, write_strong_labels
from thce.data.synth.background import BED_TRAITS, make_background
from thce.data.synth.config import (
    BACKGROUND,
    EVENT_LABELS,
    LABEL_CODES,
    LABELS,
    Source,
    SynthClip,
    SynthConfig,
    check_label,
)
from thce.data.synth.events import EVENT_TRAITS, clip_timing, event_placement
from thce.data.synth.signals import NO_SOURCE, rms
from thce.io import atomic_write, write_json
from thce.progress import ProgressFn

__all__ = [
    "BACKGROUND", "EVENT_LABELS", "LABELS", "Source", "SynthClip", "SynthConfig",
    "clip_id", "clip_rng", "generate_scenes", "source_group", "source_of", "synthesise_clip",
]  # fmt: skip

log = logging.getLogger(__name__)

_DOMAIN = 0x7468_6365  # "thce": keeps synth streams apart from other users of the same seed
_SOURCE_DOMAIN = 0x7372_6373  # "srcs": source recordings' traits, apart from every clip's stream
_WAV_HEADER_BYTES = 44
_FINGERPRINT = "synth.json"

# ----------------------------------------------------------------------------------------------------- public API


def clip_id(label: str, index: int) -> str:
    """``<label>_<index>`` with a zero-padded index, e.g. ``dog_00012``: the file stem and the manifest group."""
    return f"{label}_{index:05d}"


def clip_rng(seed: int, label: str, index: int, *, test: bool = False) -> np.random.Generator:
    """The random generator of one clip, derived from ``(seed, label, index)`` only; test-set clips
    (``test=True``) have streams of their own."""
    check_label(label)
    key = (LABEL_CODES[label], int(index), 1) if test else (LABEL_CODES[label], int(index))
    sequence = np.random.SeedSequence(entropy=(_DOMAIN, int(seed)), spawn_key=key)
    return np.random.default_rng(sequence)


def source_of(config: SynthConfig, label: str, index: int, *, test: bool = False) -> tuple[int, Source] | None:
    """``(source number, its traits)`` of clip ``index`` of ``label``, or ``None`` when clips are their own sources.

    Clip ``i`` comes from source ``i % S`` (``S = config.sources(label, test=test)``); a source depends only on
    ``(seed, label, source number, test)``, so pool and test sources never coincide.
    """
    check_label(label)
    count = config.sources(label, test=test)
    if count == 0:
        return None
    number = int(index) % count
    sequence = np.random.SeedSequence(
        entropy=(_SOURCE_DOMAIN, int(config.seed)), spawn_key=(LABEL_CODES[label], number, int(test))
    )
    ev_rng, bed_rng = np.random.default_rng(sequence).spawn(2)
    sr = config.sample_rate_hz
    event = {} if label == BACKGROUND else {k: draw(ev_rng, sr) for k, draw in EVENT_TRAITS[label].items()}
    return number, Source(event=event, bed={k: draw(bed_rng, sr) for k, draw in BED_TRAITS.items()})


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
    check_label(label)
    sr, n = config.sample_rate_hz, config.n_samples
    bg_rng, ev_rng, mix_rng = rng.spawn(3)
    background = make_background(bg_rng, n, sr, source.bed if source is not None else NO_SOURCE)
    event = np.zeros(n)
    onset_s = offset_s = None
    if label != BACKGROUND:
        short, start, ebr_db = event_placement(label, ev_rng, mix_rng, config, source)
        stop = start + short.size
        gain = rms(background[start:stop]) / max(rms(short), 1e-12) * 10.0 ** (ebr_db / 20.0)
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
    workers: int = 0,
) -> Path:
    """Write ``out_dir/audio/<label>/<label>_<idx>.wav`` (16-bit PCM), ``out_dir/manifest.csv`` and its event list
    ``out_dir/events.tsv`` (one event per event clip, see :mod:`thce.data.strong`).

    Resumable: a WAV that already exists with the right size is kept (its onset and offset are recomputed from the
    seed, cheaply). ``out_dir/synth.json`` records the duration, rate, EBR range and seed; if they differ from
    ``config`` (counts may differ), existing clips are deleted and regenerated. Each WAV is written atomically.

    Args:
        config: what to generate.
        out_dir: output folder (created).
        progress: called as ``progress("synthesise scenes", done, total)`` as clips are written.
        workers: processes synthesising, this one included (0: one per CPU when there are enough clips to write;
            :func:`thce.data.feature_pool.run_shards`). Every clip draws from its own seeded stream, so the files are
            the same, byte for byte, for any number of workers.

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

    expected_bytes = _WAV_HEADER_BYTES + 2 * config.n_samples
    plan = [(False, label, index) for label in LABELS for index in range(config.counts.get(label, 0))]
    plan += [(True, label, index) for label in LABELS for index in range(config.test_counts.get(label, 0))]
    paths = [_clip_path(out_dir, *item) for item in plan]
    todo = [item for item, path in zip(plan, paths) if not (path.is_file() and path.stat().st_size == expected_bytes)]
    kept = len(plan) - len(todo)
    work = _SynthShards(config, out_dir, todo)
    if workers == 0:
        workers = max(1, min(available_cpus(), len(todo) // _MIN_CLIPS_PER_WORKER[start_method()]))
    written = 0

    def shard_done(_index: int) -> None:
        nonlocal written
        written += 1
        if progress is not None:
            progress("synthesise scenes", kept + written, len(plan))

    run_shards(work, workers=workers, on_done=shard_done)
    rows: list[ManifestRow] = []
    strong: StrongLabels = {}
    for (test, label, index), path in zip(plan, paths):
        cid = ("test_" if test else "") + clip_id(label, index)
        found = source_of(config, label, index, test=test)
        onset_s, offset_s = clip_timing(
            label, clip_rng(config.seed, label, index, test=test), config, found[1] if found is not None else None
        )
        rows.append(
            ManifestRow(
                path=path,
                label="" if label == BACKGROUND else label,
                split="test" if test else "",
                group=cid if found is None else source_group(label, found[0], test=test),
                extra={"onset_s": _fmt_time(onset_s), "offset_s": _fmt_time(offset_s)},
            )
        )
        events = () if onset_s is None or offset_s is None else (StrongEvent(onset_s, offset_s, rows[-1].label),)
        strong[path] = events
    manifest = write_manifest(rows, out_dir / "manifest.csv")
    write_strong_labels(out_dir / EVENTS_FILE, rows, strong)
    log.info("synthetic scenes in %s: %d clips, %d written, %d kept", out_dir, len(plan), written, kept)
    return manifest


#: Clips per process below which another synthesis worker does not pay: a 10 s clip takes ~45 ms, a forked worker
#: starts in ~30 ms, a spawned one (:func:`~thce.data.feature_pool.start_method`) imports torch again (seconds).
_MIN_CLIPS_PER_WORKER = {"fork": 32, "spawn": 256}


def _clip_path(out_dir: Path, test: bool, label: str, index: int) -> Path:
    cid = ("test_" if test else "") + clip_id(label, index)
    return out_dir / "audio" / ("test" if test else "") / label / f"{cid}.wav"


class _SynthShards:
    """The clips to write, one per shard (a :class:`~thce.data.feature_pool.ShardWork`: claiming one costs
    microseconds beside a clip's tens of milliseconds, and progress moves clip by clip)."""

    def __init__(self, config: SynthConfig, out_dir: Path, todo: list[tuple[bool, str, int]]) -> None:
        self.config, self.out_dir, self.todo = config, out_dir, todo

    def __len__(self) -> int:
        return len(self.todo)

    def __call__(self, index: int) -> None:
        test, label, number = self.todo[index]
        found = source_of(self.config, label, number, test=test)
        clip = synthesise_clip(
            label, clip_rng(self.config.seed, label, number, test=test), self.config,
            found[1] if found is not None else None,
        )  # fmt: skip
        _write_wav(_clip_path(self.out_dir, test, label, number), clip.mixture, self.config.sample_rate_hz)

    def name(self, index: int) -> str:
        return f"synthetic clip {_clip_path(self.out_dir, *self.todo[index])}"


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


