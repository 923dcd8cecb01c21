"""The field's imbalance losses, each a loss on ``(outputs, targets)`` usable in one training step; one module per
loss (named after its method), on the shared contract of :mod:`~thce.losses.imbalance.base`, and here their
registry :data:`LOSS_CONFIGS` and every public name (``from thce.losses.imbalance import LDAMLoss``).

Every method is a small :class:`torch.nn.Module` (learnable weights inside when it has them) built from the
training split's class counts, directly or by its settings, the frozen dataclass beside it whose fields are the keys
of its ``[method]`` config table::

    counts = data.class_counts("train")                 # (L + 1,), background last
    loss_fn = LDAMLoss(counts, drw_epoch=40)             # or loss_config("ldam_drw", drw_epoch=40).build(counts)
    head = loss_fn.make_head(encoder.embedding_dim)      # nn.Linear, or the NormedLinear LDAM needs
    for epoch in range(epochs):
        loss_fn.set_epoch(epoch)                         # only LDAM-DRW uses it
        for x, class_index in batches:                   # class_index (B,) in [0, L]; L = background
            loss = loss_fn(head(encoder(x)), class_index)
    scores = loss_fn.scores(head(encoder(x_test)))       # (B, L) per-event detection scores in [0, 1]

**Targets.** A clip holds one event or none (the paper's setting), so targets are either class indices ``(B,)`` in
``[0, L]`` with ``L`` = background, or the ``(B, L)`` multi-hot rows of
:meth:`thce.training.engine.TrainingData.targets` (one 1 or none per row). Sigmoid methods (BCE, focal) have ``L``
outputs and background is the all-zero target; softmax methods treat background as one more class: ``C = L + 1``
outputs, background index ``L``.

**Scores.** :meth:`ImbalanceLoss.scores` turns outputs into ``(B, L)`` per-event scores for DET/EER: ``sigmoid`` of
the event outputs for sigmoid methods, the softmax probability of each event class (over all C classes, with the
logits the method predicts with: no logit adjustment, no LDAM margin) for softmax methods.

=================  ========================  ===========  ===========================================
method             class                     outputs      reference (defaults)
=================  ========================  ===========  ===========================================
``bce``            BinaryCrossEntropy        L, sigmoid   the paper's Eq. 1 (unweighted)
``focal``          SigmoidFocalLoss          L, sigmoid   Lin et al. 2017 (gamma 2, alpha 0.25)
``class_balanced`` ClassBalancedLoss         C, softmax   Cui et al. 2019 (beta 0.9999; softmax CE)
``oversampling``   OversampledCrossEntropy   C, softmax   Buda et al. 2018 / Kang et al. 2020 (sampler)
``logit_adjusted`` LogitAdjustedLoss         C, softmax   Menon et al. 2021 (tau 1)
``ldam_drw``       LDAMLoss                  C, cosine    Cao et al. 2019 (max margin 0.5, s 30, DRW)
``softtriple``     SoftTripleLoss            embedding    Qian et al. 2019 (K 10, la 20, gamma 0.1, ...)
=================  ========================  ===========  ===========================================

**Adding a loss** is one module of this package, its class (``method``, the name of its table and of its method
in runs; ``description``, for the legend of tables; ``reference``) and its settings beside it (a frozen
:class:`LossConfig` dataclass: ``loss``, one field per key with the reference default, ``validate``, ``build``), and
here one entry in :data:`LOSS_CONFIGS` (with its import, its row in the table above and its names in ``__all__``). :mod:`thce.methods` makes it a method (trained by :mod:`thce.training.imbalance` with
``[baseline]``'s stage settings) and :mod:`thce.config` reads its ``[method]`` table into its settings.
"""

from __future__ import annotations

from typing import Any

from thce.config_reader import read_table
from thce.errors import ConfigError
from thce.losses.imbalance.base import ImbalanceLoss, LossConfig, check_counts, class_index_targets
from thce.losses.imbalance.bce import BCEConfig, BinaryCrossEntropy
from thce.losses.imbalance.class_balanced import (
    CB_KINDS,
    ClassBalancedConfig,
    ClassBalancedLoss,
    class_balanced_weights,
)
from thce.losses.imbalance.focal import FOCAL_REDUCTIONS, FocalConfig, SigmoidFocalLoss, sigmoid_focal_terms
from thce.losses.imbalance.ldam_drw import LDAMConfig, LDAMLoss, NormedLinear
from thce.losses.imbalance.logit_adjusted import LogitAdjustedConfig, LogitAdjustedLoss
from thce.losses.imbalance.oversampling import OversampledCrossEntropy, OversamplingConfig
from thce.losses.imbalance.softtriple import SoftTripleConfig, SoftTripleLoss

__all__ = [
    "BCEConfig",
    "BinaryCrossEntropy",
    "CB_KINDS",
    "ClassBalancedConfig",
    "ClassBalancedLoss",
    "FOCAL_REDUCTIONS",
    "FocalConfig",
    "ImbalanceLoss",
    "LDAMConfig",
    "LDAMLoss",
    "LOSS_CONFIGS",
    "LogitAdjustedConfig",
    "LogitAdjustedLoss",
    "LossConfig",
    "NormedLinear",
    "OversampledCrossEntropy",
    "OversamplingConfig",
    "SigmoidFocalLoss",
    "SoftTripleConfig",
    "SoftTripleLoss",
    "loss_config",
    "check_counts",
    "class_balanced_weights",
    "class_index_targets",
    "sigmoid_focal_terms",
]


#: The registry of imbalance losses, one entry each: name -> its settings (whose ``loss`` is the class). Runs train
#: them in this order; each is a method of :data:`thce.methods.METHODS` and its ``[name]`` table is read into its
#: settings by :func:`thce.config.load_config`.
LOSS_CONFIGS: dict[str, type[LossConfig]] = {
    settings.loss.method: settings
    for settings in (
        BCEConfig,
        FocalConfig,
        ClassBalancedConfig,
        OversamplingConfig,
        LogitAdjustedConfig,
        LDAMConfig,
        SoftTripleConfig,
    )
}


def loss_config(method: str, **values: Any) -> LossConfig:
    """The settings of ``method`` (a ``LOSS_CONFIGS`` key) from ``values`` (its table; missing keys: the defaults),
    validated; errors name ``method.key``.

    >>> loss_config("ldam_drw", drw_epoch=40)
    LDAMConfig(max_margin=0.5, s=30.0, drw_epoch=40, drw_beta=0.9999)
    """
    if method not in LOSS_CONFIGS:
        raise ConfigError(f"unknown imbalance method {method!r}; known: {', '.join(LOSS_CONFIGS)}")
    return read_table(LOSS_CONFIGS[method], values, method)
