"""Training, one module per stage family; each stage's config dataclass lives next to its trainer.

- :mod:`thce.training.engine`: the loop every stage shares (:func:`~thce.training.engine.fit_stage` of a
  :class:`~thce.training.engine.Stage`: resume, data-parallel, bf16, augmentation, early stopping),
  :class:`~thce.training.engine.RunContext`;
- :mod:`thce.training.metrics_log`: ``metrics.csv``, the kept epochs and model-selection warnings;
- :mod:`thce.training.data`: the :class:`~thce.training.data.TrainingData` view, embeddings, centring calibration;
- :mod:`thce.training.algorithm1`: the paper's Algorithm 1 (Proposed1, Proposed2) and the baseline;
- :mod:`thce.training.diagnostics`: how well an embedding separates classes, per Algorithm 1 iteration;
- :mod:`thce.training.lmle`: LMLE's embedding stage and detector;
- :mod:`thce.training.imbalance`: the trainer of the field's imbalance losses (:mod:`thce.losses.imbalance`).

Which method trains how, and with which model, is the registry :mod:`thce.methods`.
"""
