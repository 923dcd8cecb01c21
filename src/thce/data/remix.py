"""Event re-mixing for scarce recordings, in the log-mel domain: events cut from training clips (:class:`EventBank`)
pasted into other training clips at random onsets and event-to-background ratios (:func:`remix`).

Features are raw (unnormalised) natural-log mel energies ``ln(max(mel, floor))`` (:mod:`thce.audio.logmel`), so
adding a sound is adding energies: ``ln(exp(host) + g * exp(event))``, computed as ``logaddexp(host, event + ln g)``.
The gain ``g`` gives the drawn EBR as DCASE 2017 Task 2 defines it, energy of the event against the energy of the
background under it, here summed over the pasted frames and all mel bands::

    EBR_dB = 10 log10( sum g * exp(event) / sum exp(host under the event) )

(mel energies are powers, so this is the waveforms' ``20 log10(RMS ratio)`` up to the filterbank's weighting). A
cut event still carries the background of the clip it came from, as any cut from a recording does.

Time resolution. Targets have ``T'`` output frames of ``frame_stride`` input frames each (the encoder's pooling;
:func:`thce.data.strong.frame_targets`). Events are cut and pasted on whole output frames: a run of positive target
frames ``[a, b)`` of a class is the input frames ``[a * s, b * s)``, and an event is pasted at an output frame, so
its target frames are exactly where it was pasted. Pasted events never overlap the host's events or each other: an
event is placed at a start drawn uniformly among the free positions (none free: it is left out).

Determinism: everything is drawn from the generator passed in, in a fixed order (per clip and event: class,
segment, EBR, start); the caller seeds it, e.g. ``np.random.default_rng([seed, epoch, batch])``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp


@dataclass(frozen=True)
class EventSegment:
    """An event cut from a clip: its raw log-mel frames ``(frames, F)`` (whole output frames: ``frames`` is a
    multiple of the bank's ``frame_stride``), its class index and where it came from."""

    features: np.ndarray
    label: int
    clip: int
    start: int  # output frame in the source clip

    @property
    def frames(self) -> int:
        """Its length in input frames."""
        return int(self.features.shape[0])


@dataclass
class EventBank:
    """Event segments by class (class index -> segments), cut from training clips by :meth:`from_clips`."""

    num_classes: int
    frame_stride: int
    by_class: dict[int, list[EventSegment]] = field(default_factory=dict)

    @classmethod
    def from_clips(
        cls, features: Sequence[np.ndarray] | np.ndarray, targets: Sequence[np.ndarray] | np.ndarray, *,
        frame_stride: int = 1, min_frames: int = 1,
    ) -> EventBank:  # fmt: skip
        """Cut every run of consecutive positive target frames of each class out of each clip.

        Args:
            features: per clip raw log-mel ``(T, F)`` (an ``(n, T, F)`` array or a list; lengths may differ).
            targets: per clip ``(T', L)`` frame targets at ``frame_stride`` input frames per target frame.
            frame_stride: input frames per target frame.
            min_frames: shortest run (target frames) kept.

        Raises:
            ValueError: clip counts or shapes that do not match.
        """
        _check_stride(frame_stride)
        if len(features) != len(targets):
            raise ValueError(f"EventBank: {len(features)} feature clips but {len(targets)} target clips")
        num_classes = int(np.shape(targets[0])[-1]) if len(targets) else 0
        bank = cls(num_classes=num_classes, frame_stride=frame_stride)
        for i, (x, y) in enumerate(zip(features, targets)):
            x, y = np.asarray(x), np.asarray(y)
            usable = _check_clip(x, y, frame_stride, num_classes, f"clip {i}")
            for c in range(num_classes):
                for a, b in _runs(y[:usable, c] > 0):
                    if b - a >= min_frames:
                        segment = np.array(x[a * frame_stride : b * frame_stride], copy=True)
                        bank.by_class.setdefault(c, []).append(EventSegment(segment, c, i, a))
        return bank

    @property
    def classes(self) -> list[int]:
        """Class indices that have at least one segment, ascending."""
        return sorted(c for c, segments in self.by_class.items() if segments)

    def __len__(self) -> int:
        return sum(len(segments) for segments in self.by_class.values())


def _check_stride(frame_stride: int) -> None:
    if not isinstance(frame_stride, int) or frame_stride < 1:
        raise ValueError(f"frame_stride: expected a positive integer, got {frame_stride!r}")


def _check_clip(x: np.ndarray, y: np.ndarray, stride: int, num_classes: int, what: str) -> int:
    """The number of whole output frames of a clip (those whose input frames all exist)."""
    if x.ndim != 2 or y.ndim != 2 or y.shape[1] != num_classes:
        raise ValueError(f"{what}: expected features (T, F) and targets (T', {num_classes}), got {x.shape}, {y.shape}")
    if (y.shape[0] - 1) * stride >= x.shape[0] and y.shape[0]:
        raise ValueError(f"{what}: {y.shape[0]} target frames of {stride} input frames do not fit {x.shape[0]} frames")
    return min(y.shape[0], x.shape[0] // stride)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True in a 1-D mask."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def remix(
    features: np.ndarray,
    targets: np.ndarray,
    bank: EventBank,
    rng: np.random.Generator | int,
    *,
    ebr_db_range: tuple[float, float] = (-6.0, 6.0),
    frame_stride: int = 1,
    events_per_clip: int = 1,
    band_shift: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste ``events_per_clip`` events from ``bank`` into each clip (module docstring); inputs are not changed.

    Per event: a class drawn uniformly among the bank's classes (rare classes as often as common ones), a segment of
    it uniformly, an EBR uniformly in ``ebr_db_range``, a start uniformly among the output frames where it overlaps
    no event (host's or pasted), and with ``band_shift`` a shift along the mel axis (:func:`shift_bands`); a
    segment longer than the clip is cut to it.

    Args:
        features: ``(n, T, F)`` raw log-mel (natural log) energies.
        targets: ``(n, T', L)`` frame targets (0/1), ``T'`` frames of ``frame_stride`` input frames.
        bank: the events to paste (its ``frame_stride`` must be ``frame_stride``).
        rng: a numpy Generator, or a seed for one.
        ebr_db_range: ``(low, high)`` dB; ``(x, x)`` for exactly ``x``.
        frame_stride: input frames per target frame.
        events_per_clip: events pasted into each clip (fewer where no free place is left).
        band_shift: each pasted event moves up or down by ``s ~ U{-band_shift, ..., band_shift}`` mel bands (0: off;
            drawn after the start, so that runs without it draw as before).

    Returns:
        ``(features, targets)``: new arrays of the inputs' shapes and dtypes.

    Raises:
        ValueError: mismatched shapes, strides or class counts, or a bad range.
    """
    _check_stride(frame_stride)
    features, targets = np.array(features, copy=True), np.array(targets, copy=True)
    if features.ndim != 3 or targets.ndim != 3 or features.shape[0] != targets.shape[0]:
        raise ValueError(f"remix: expected features (n, T, F) and targets (n, T', L), got {features.shape}, "
                         f"{targets.shape}")  # fmt: skip
    if bank.frame_stride != frame_stride or (len(bank) and bank.num_classes != targets.shape[2]):
        raise ValueError(f"remix: the bank has frame_stride {bank.frame_stride} and {bank.num_classes} classes; "
                         f"the batch {frame_stride} and {targets.shape[2]}")  # fmt: skip
    low, high = (float(v) for v in ebr_db_range)
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"remix: ebr_db_range must be finite (low, high) with low <= high, got {ebr_db_range!r}")
    if events_per_clip < 0:
        raise ValueError(f"remix: events_per_clip must be >= 0, got {events_per_clip}")
    if band_shift < 0 or band_shift >= features.shape[2]:
        raise ValueError(f"remix: band_shift must be in [0, {features.shape[2]}) bands, got {band_shift}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    classes = bank.classes
    if not classes:
        return features, targets
    for i in range(features.shape[0]):
        usable = _check_clip(features[i], targets[i], frame_stride, targets.shape[2], f"remix: clip {i}")
        busy = targets[i, :usable].any(axis=-1)
        for _ in range(events_per_clip):
            label = classes[int(rng.integers(len(classes)))]
            segments = bank.by_class[label]
            segment = segments[int(rng.integers(len(segments)))]
            ebr_db = float(rng.uniform(low, high)) if high > low else low
            length = min(segment.frames // frame_stride, usable)
            starts = _free_starts(busy, length)
            if not starts.size:
                continue
            start = int(starts[int(rng.integers(starts.size))])
            a, b = start * frame_stride, (start + length) * frame_stride
            event = segment.features[: b - a]
            if band_shift:
                event = shift_bands(event, int(rng.integers(-band_shift, band_shift + 1)))
            features[i, a:b] = add_event(features[i, a:b], event, ebr_db)
            targets[i, start : start + length, label] = 1
            busy[start : start + length] = True
    return features, targets


def _free_starts(busy: np.ndarray, length: int) -> np.ndarray:
    """Starts ``s`` with ``busy[s:s + length]`` all False."""
    if length < 1 or length > busy.size:
        return np.zeros(0, dtype=np.int64)
    taken = np.concatenate([[0], np.cumsum(busy, dtype=np.int64)])
    return np.flatnonzero(taken[length:] - taken[:-length] == 0)


def shift_bands(event: np.ndarray, shift: int) -> np.ndarray:
    """``event`` ``(frames, F)`` moved ``shift`` mel bands up (> 0) or down (< 0); the bands it leaves take the
    nearest remaining band's values (edge padding), so the event keeps its level.

    A rough pitch change of the source: above ~1 kHz mel bands are about equally spaced in log frequency, so a
    shift of one of 64 bands (to 8 kHz) scales frequencies there by ~4-6 %; below, it is nearer a constant offset.
    It varies the few sources a training set has (a dog's f0 and formants are traits of the dog).

    >>> shift_bands(np.array([[1.0, 2.0, 3.0, 4.0]]), 1).tolist()
    [[1.0, 1.0, 2.0, 3.0]]
    >>> shift_bands(np.array([[1.0, 2.0, 3.0, 4.0]]), -2).tolist()
    [[3.0, 4.0, 4.0, 4.0]]
    """
    bands = event.shape[-1]
    if not -bands < shift < bands:
        raise ValueError(f"shift_bands: shift must be within +-{bands - 1} bands, got {shift}")
    source = np.clip(np.arange(bands) - shift, 0, bands - 1)
    return event[..., source]


def add_event(host: np.ndarray, event: np.ndarray, ebr_db: float) -> np.ndarray:
    """``ln(exp(host) + g exp(event))`` with ``g`` such that the summed energies' ratio is ``ebr_db`` (module
    docstring); ``host`` and ``event`` are raw log-mel frames of one shape. Returns the host's dtype.

    >>> host = np.log(np.full((2, 3), 2.0)); event = np.log(np.full((2, 3), 5.0))
    >>> np.exp(add_event(host, event, 0.0)).round(6).tolist()  # 0 dB: as much event energy as host energy
    [[4.0, 4.0, 4.0], [4.0, 4.0, 4.0]]
    """
    host64, event64 = np.asarray(host, dtype=np.float64), np.asarray(event, dtype=np.float64)
    if host64.shape != event64.shape:
        raise ValueError(f"add_event: host {host64.shape} and event {event64.shape} differ")
    # ln g = ebr ln(10)/10 + ln sum exp(host) - ln sum exp(event), with the sums taken stably
    log_gain = ebr_db * math.log(10.0) / 10.0 + float(logsumexp(host64)) - float(logsumexp(event64))
    return np.logaddexp(host64, event64 + log_gain).astype(np.asarray(host).dtype)

