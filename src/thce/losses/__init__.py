"""Every loss thce trains with, one module per family:

- :mod:`thce.losses.paper`: the paper's class-weighted BCE (Eq. 2) and triple-header cross-entropy (Eqs. 3, 5-9);
  its public names are re-exported here (``from thce.losses import TripleHeaderCrossEntropy``);
- :mod:`thce.losses.lmle`: LMLE's quintuplets and triple-header hinge (Huang et al. 2016);
- :mod:`thce.losses.imbalance`: the field's imbalance losses (focal, class-balanced, LDAM, SoftTriple, ...), one module
  per loss, and their registry.
"""

from thce.losses.paper import (
    TripleHeaderCrossEntropy,
    bce_class_weights,
    cluster_weights,
    eq3_ordering,
    eq3_terms,
    mean_cluster_weight,
    triple_header_ce,
    weighted_bce,
)

__all__ = [
    "TripleHeaderCrossEntropy",
    "bce_class_weights",
    "cluster_weights",
    "eq3_ordering",
    "eq3_terms",
    "mean_cluster_weight",
    "triple_header_ce",
    "weighted_bce",
]
