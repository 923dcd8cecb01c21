"""The detection product: a trained run used on recordings of any length.

Recordings (:mod:`~thce.detection.inputs`) -> window scores (:mod:`~thce.detection.inference`, the one scoring path
that detection and export share) -> a score over time and events (:mod:`~thce.detection.detect`,
:mod:`~thce.detection.localise`, per-class thresholds from :mod:`~thce.detection.thresholds`) -> event lists
(:mod:`~thce.detection.events`), score tables (:mod:`~thce.detection.tables`) and review pages
(:mod:`~thce.detection.pages`); their evaluation (:mod:`~thce.detection.metrics`,
:mod:`~thce.detection.threshold_free`); the trained detector exported for deployment (:mod:`~thce.detection.export`);
the checks on output paths made before any work (:mod:`~thce.detection.outputs`).

Importing this package imports no submodule (and so not torch): the command line checks its arguments first.
"""
