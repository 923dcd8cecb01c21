"""Ablation sweeps: variants of one config on identical features and splits, one table, chosen on validation.

A :class:`~thce.variants.Variant` is a set of config assignments (``{"embedding.alpha": 8}``), made by
:mod:`thce.variants` from ``thce sweep --vary``. :func:`run_sweep` runs every variant with seeds
``seed .. seed+N-1`` (:func:`thce.experiment.run_experiment`) in ``out_dir/<variant slug>/seed_<s>/`` and writes
``out_dir/sweep.json`` and ``out_dir/sweep.md``; with more than one seed, each variant's folder also gets the
summary a ``--seeds`` run writes (results.json, report.md, det.png), so ``thce report out_dir/<variant slug>``
works on it as on ``thce experiment --seeds``.

The package in three parts, each with one reason to change: :mod:`thce.sweep.running` runs the variants and keeps
their folders (what a sweep trains), :mod:`thce.sweep.summary` reads the finished runs into the table's numbers with
the paired bootstraps (what a sweep concludes), :mod:`thce.sweep.markdown` renders ``sweep.md`` (how it reads).
"""

from thce.sweep.markdown import ci_cell, sweep_table_markdown
from thce.sweep.running import pick_reference, run_sweep, variant_config
from thce.sweep.summary import best_on_validation, summarise

__all__ = [
    "best_on_validation", "ci_cell", "pick_reference", "run_sweep", "summarise", "sweep_table_markdown",
    "variant_config",
]  # fmt: skip
