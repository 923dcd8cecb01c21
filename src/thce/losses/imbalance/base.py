"""What every imbalance loss shares: the contract of a loss (:class:`ImbalanceLoss`: its head, scores, epoch hook,
sampler and batch weight) and of its settings (:class:`LossConfig`), the checks of class counts and targets, and
the small pieces several losses use. Each loss of :mod:`thce.losses.imbalance` is a module of its own on this one.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thce.sampling import Counts


def check_counts(class_counts: Counts, *, who: str, positive: bool) -> Tensor:
    """Class counts (C,) as a float64 tensor, checked: C >= 2 (at least one event and background), non-negative
    integers, and with ``positive`` at least one sample per class. ``who`` names the caller in the error."""
    counts = torch.as_tensor(np.asarray(class_counts), dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() < 2:
        raise ValueError(
            f"{who}: class_counts must be a 1-D list of C >= 2 counts (L events, then background), "
            f"got shape {tuple(counts.shape)}"
        )
    if bool((counts != counts.round()).any()) or bool((counts < 0).any()):
        raise ValueError(f"{who}: class_counts must be non-negative integers, got {counts.tolist()}")
    if positive and bool((counts < 1).any()):
        raise ValueError(f"{who}: every class needs at least one training sample, got counts {counts.long().tolist()}")
    return counts


def class_index_targets(targets: Tensor, num_events: int) -> Tensor:
    """Targets as class indices ``(B,)`` in ``[0, L]`` (``L`` = background).

    Accepts class indices ``(B,)`` (integer dtype) or multi-hot rows ``(B, L)`` with one 1 or none per row.

    >>> class_index_targets(torch.tensor([[0., 1.], [0., 0.]]), 2).tolist()
    [1, 2]
    """
    if targets.ndim == 1:
        if targets.dtype.is_floating_point or targets.dtype == torch.bool:
            raise ValueError(f"class-index targets must be an integer tensor, got dtype {targets.dtype}")
        index = targets.long()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) > num_events):
            raise ValueError(
                f"class-index targets must lie in [0, {num_events}] ({num_events} = background), "
                f"got values in [{int(index.min())}, {int(index.max())}]"
            )
        return index
    if targets.ndim == 2:
        if targets.shape[1] != num_events:
            raise ValueError(f"multi-hot targets must be (B, L={num_events}), got {tuple(targets.shape)}")
        t = targets.float()
        if bool(((t != 0) & (t != 1)).any()) or bool((t.sum(dim=1) > 1).any()):
            raise ValueError("multi-hot targets must hold 0/1 with at most one 1 per row (one event or none per clip)")
        background = torch.full((t.shape[0],), num_events, dtype=torch.long, device=t.device)
        return torch.where(t.sum(dim=1) > 0, t.argmax(dim=1), background)
    raise ValueError(f"targets must be (B,) class indices or (B, L) multi-hot rows, got shape {tuple(targets.shape)}")


class ImbalanceLoss(nn.Module):
    """Common interface: ``forward(outputs, targets) -> scalar``, ``scores(outputs) -> (B, L)``, ``make_head``,
    ``set_epoch`` and ``sampling_weights`` (both no-ops unless the method needs them).

    Attributes:
        method: registry name (``LOSS_CONFIGS`` key), its config table and its method in runs.
        description: what it is, for the legend under the EER table.
        reference: the paper the method follows.
        num_events: L.
        num_outputs: width of the outputs the loss expects (L for sigmoid methods, C = L + 1 for softmax ones).
    """

    method: ClassVar[str] = ""
    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""

    def __init__(self, num_events: int) -> None:
        super().__init__()
        if num_events < 1:
            raise ValueError(f"{type(self).__name__}: need at least one event class, got {num_events}")
        self.num_events = num_events

    @property
    def num_classes(self) -> int:
        """C = L + 1: the events and background."""
        return self.num_events + 1

    @property
    def num_outputs(self) -> int:
        return self.num_classes

    def make_head(self, in_features: int) -> nn.Module:
        """The output layer this loss expects on a ``(B, in_features)`` embedding."""
        return nn.Linear(in_features, self.num_outputs)

    def set_epoch(self, epoch: int) -> None:
        """Tell the loss which epoch (0-based) is about to be trained; only schedules (LDAM-DRW) use it."""

    def sampling_weights(self, class_index: Counts) -> Tensor | None:
        """Per-sample weights for a ``WeightedRandomSampler``, or ``None`` for plain shuffling."""
        return None

    def batch_weight(self, class_index: Tensor) -> float:
        """The denominator of this loss's batch mean for clips of classes ``class_index`` (B,): the number of
        clips unless the loss normalises otherwise. Data-parallel training uses it to combine the ranks' shares of
        a batch exactly (:func:`thce.training.engine.fit_stage`)."""
        return float(len(class_index))

    def scores(self, outputs: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Validate shapes; return class indices (B,)."""
        if outputs.ndim != 2 or outputs.shape[1] != self.num_outputs:
            raise ValueError(
                f"{type(self).__name__}: outputs must be (B, {self.num_outputs}), got {tuple(outputs.shape)}"
            )
        index = class_index_targets(targets, self.num_events).to(outputs.device)
        if index.shape[0] != outputs.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: {outputs.shape[0]} outputs but {index.shape[0]} targets"
            )
        return index

    def _check_scores_input(self, outputs: Tensor) -> None:
        if outputs.ndim != 2 or outputs.shape[1] != self.num_outputs:
            raise ValueError(
                f"{type(self).__name__}.scores: outputs must be (B, {self.num_outputs}), got {tuple(outputs.shape)}"
            )

    def extra_repr(self) -> str:
        return f"num_events={self.num_events}"


class LossConfig:
    """Base of each loss's settings, a frozen dataclass beside its loss whose fields are the keys of the loss's
    ``[method]`` table: ``loss`` (the class it builds), ``validate``, ``build``, ``to_dict``."""

    loss: ClassVar[type[ImbalanceLoss]]

    def __post_init__(self) -> None:
        self.validate()

    @property
    def method(self) -> str:
        """The registry name of its loss (``focal``, ``ldam_drw``, ...): its table and its method in runs."""
        return self.loss.method

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a bad value (the loss constructors repeat the checks as ValueError)."""

    def build(self, class_counts: Counts, *, embedding_dim: int | None = None) -> ImbalanceLoss:
        raise NotImplementedError  # pragma: no cover

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        return {"method": self.method, **values}


def multi_hot(index: Tensor, num_events: int, dtype: torch.dtype) -> Tensor:
    """(B,) class indices -> (B, L) multi-hot; background (index L) is the all-zero row."""
    return F.one_hot(index, num_events + 1)[:, :num_events].to(dtype)


def softmax_event_scores(logits: Tensor, num_events: int) -> Tensor:
    """(B, C) logits -> (B, L): the softmax probability of each event class (over all C classes)."""
    return torch.softmax(logits, dim=1)[:, :num_events]


def num_events_of(class_counts: Counts, who: str) -> int:
    """L, from the (L + 1,) class counts, checked (:func:`check_counts`; ``who`` names the caller)."""
    return len(check_counts(class_counts, who=who, positive=False)) - 1
