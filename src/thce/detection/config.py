"""How ``thce detect`` slides over recordings and turns scores into events (:class:`DetectConfig`).

Kept apart from :mod:`thce.detection.detect` so that a caller can build and check the settings before torch is
imported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from thce.detection.localise import EventRules
from thce.detection.thresholds import parse_threshold_rule
from thce.errors import ConfigError


@dataclass(frozen=True)
class DetectConfig:
    """How to slide over recordings and turn scores into events.

    Attributes:
        hop_s: seconds between window starts; ``None`` = half the window (50 % overlap). At most one window.
        threshold: ``"auto"`` (a frame-level run's thresholds chosen on validation event F, else ``"eer"``),
            ``"eer"``, ``"events"``, ``"far:<rate>"`` (e.g. ``"far:0.01"``) or a number, see
            :mod:`thce.detection.thresholds`.
        median_filter_s: median filter length over per-window decisions, seconds; ``None`` = a quarter of the
            window's support, ``0`` = off.
        batch_size: windows handed to the scorer at once (memory ~ batch_size x window); the model itself runs
            in cache-sized passes (:class:`thce.detection.inference.ModelScorer`).
        block_s: seconds of the file read per block (memory ~ block_s x channels).
        events: how runs of detecting frames become events (shortest event, gap merged; :class:`EventRules`);
            ``None``: a frame-level run's per-class rules chosen on validation, else none (0, 0).
        agreement: fraction of the windows hearing a frame that must detect
            (:func:`thce.detection.localise.score_curve`).
    """

    hop_s: float | None = None
    threshold: str = "auto"
    median_filter_s: float | None = None
    batch_size: int = 16
    block_s: float = 10.0
    events: EventRules | None = None
    agreement: float = 0.5

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad value."""
        for name in ("hop_s", "median_filter_s"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0):
                raise ConfigError(f"detect {name}: expected a non-negative number or None, got {value!r}")
        if self.hop_s is not None and self.hop_s <= 0:
            raise ConfigError(f"detect hop_s: expected a positive number of seconds, got {self.hop_s!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"detect batch_size: expected a positive integer, got {self.batch_size!r}")
        if not isinstance(self.block_s, (int, float)) or not self.block_s > 0:
            raise ConfigError(f"detect block_s: expected a positive number of seconds, got {self.block_s!r}")
        parse_threshold_rule(self.threshold)
        if self.events is not None:
            self.events.validate()
        if not isinstance(self.agreement, (int, float)) or not 0.0 < self.agreement <= 1.0:
            raise ConfigError(f"detect agreement: expected a fraction in (0, 1], got {self.agreement!r}")
