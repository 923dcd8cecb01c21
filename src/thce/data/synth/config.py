"""The synthetic scenes' settings and the records a clip is made of: the labels, :class:`SynthConfig` (the
``[synth]`` table), :class:`Source` (the traits a source recording fixes) and :class:`SynthClip` (one clip's
signals). The generators are in :mod:`thce.data.synth.background` and :mod:`thce.data.synth.events`; the scenes
on disk in :mod:`thce.data.synth`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from thce.config_reader import read_table
from thce.errors import ConfigError

EVENT_LABELS: tuple[str, ...] = ("dog", "baby", "gun")
BACKGROUND = "background"
LABELS: tuple[str, ...] = (*EVENT_LABELS, BACKGROUND)

LABEL_CODES = {BACKGROUND: 0, "dog": 1, "baby": 2, "gun": 3}  # stable: part of every clip's seed
MIN_DURATION_S = 0.5


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
            or not MIN_DURATION_S <= self.duration_s <= 3600
        ):
            raise ConfigError(
                f"synth duration_s: expected a number in [{MIN_DURATION_S}, 3600], got {self.duration_s!r}"
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


def check_label(label: str) -> None:
    if label not in LABELS:
        raise ConfigError(f"synth label {label!r}: expected one of {', '.join(LABELS)}")


def _plain_sources(value: int | Mapping[str, int]) -> int | dict[str, int]:
    return {k: int(v) for k, v in value.items()} if isinstance(value, Mapping) else int(value)


