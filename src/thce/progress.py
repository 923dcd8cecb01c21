"""The one progress callback: library code reports ``progress(description, done, total)``; it never prints.

The command line draws these calls as bars (:class:`thce.cli.progress.ProgressBars`); tests record them. Each
stage names itself in ``description`` (e.g. ``"log-mel features"``, ``"synthesise scenes"``), and ``done`` counts
up to ``total`` in that stage's own unit (clips, mixtures, batches, windows).
"""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[str, int, int], None]
"""``progress(description, done, total)``: ``done`` of ``total`` units of the stage ``description`` are finished."""
