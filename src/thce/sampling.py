"""Class-balanced sampling, the one sampler of every stage that draws clips class-balanced: the BCE stages under
``train.balanced_sampling``, the ``oversampling`` method and LMLE's anchors. An epoch is N draws with replacement,
each class equally likely; minority clips repeat, majority clips are skipped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
from torch import Tensor

Counts = Union[Sequence[int], np.ndarray, Tensor]
"""Per-class counts (C,) or per-sample class indices (N,): a list, ndarray or tensor."""


def balanced_sampling_weights(class_index: Counts, num_classes: int | None = None) -> Tensor:
    """Per-sample weights ``1 / n_{c_i}`` for class-balanced oversampling: every class is drawn equally often.

    Use them with replacement, e.g. (one epoch = N draws, minority samples repeat, majority samples are skipped)::

        sampler = torch.utils.data.WeightedRandomSampler(weights, num_samples=len(weights), replacement=True,
                                                         generator=torch.Generator().manual_seed(seed))

    or :func:`balanced_sampling_order`, which draws the same way without a DataLoader.

    Args:
        class_index: (N,) class of each training sample, ``0..L`` (background ``L`` is a class here).
        num_classes: C, for the error message when a listed class is absent; inferred when ``None``.

    Returns:
        (N,) float64 weights; each class's weights sum to 1.

    >>> balanced_sampling_weights([0, 1, 1, 1]).tolist()
    [1.0, 0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
    """
    index = torch.as_tensor(np.asarray(class_index), dtype=torch.long)
    if index.ndim != 1 or index.numel() == 0:
        raise ValueError(
            f"balanced_sampling_weights: class_index must be a non-empty (N,) array, got {tuple(index.shape)}"
        )
    if int(index.min()) < 0:
        raise ValueError("balanced_sampling_weights: class indices must be >= 0")
    counts = torch.bincount(index, minlength=num_classes or 0)
    if num_classes is not None and (len(counts) > num_classes or bool((counts == 0).any())):
        raise ValueError(
            f"balanced_sampling_weights: every class in [0, {num_classes}) needs a sample, counts {counts.tolist()}"
        )
    return 1.0 / counts[index].to(torch.float64)


def balanced_sampling_order(
    class_index: Counts, *, generator: torch.Generator, num_samples: int | None = None
) -> Tensor:
    """One epoch of class-balanced oversampling: ``num_samples`` (default N) indices drawn with replacement with
    probability proportional to :func:`balanced_sampling_weights` (what ``WeightedRandomSampler`` does)."""
    return weighted_sampling_order(balanced_sampling_weights(class_index), generator=generator, num_samples=num_samples)


def weighted_sampling_order(weights: Tensor, *, generator: torch.Generator, num_samples: int | None = None) -> Tensor:
    """``num_samples`` (default N) indices into the (N,) ``weights``, drawn with replacement with probability
    proportional to them (what ``WeightedRandomSampler`` does), from ``generator`` alone."""
    return torch.multinomial(weights, num_samples or len(weights), replacement=True, generator=generator)
