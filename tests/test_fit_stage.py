"""fit_stage's early stopping: which epoch is kept, that it is recorded, resumed, and reported."""

from pathlib import Path

import pytest
import torch
from torch import nn

from thce.config import TrainConfig
from thce.report import untuned_notes
from thce.train import MetricsLog, RunContext, fit_stage


def _fit(val_losses: list[float], *, patience: int, epochs: int = 10, resume_dir: Path | None = None,
         log: MetricsLog | None = None) -> tuple[nn.Linear, float, MetricsLog, list[float]]:
    """A 1-weight module whose weight counts the optimiser steps; val loss read from ``val_losses`` in turn."""
    module = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(module.weight)
    ctx = RunContext(train=TrainConfig(batch_size=4, learning_rate=1.0), seed=0, log=log or MetricsLog(),
                     resume_dir=resume_dir)
    remaining = list(val_losses)
    weights_at_val: list[float] = []

    def val_loss() -> float:
        weights_at_val.append(float(module.weight.detach()))
        return remaining.pop(0)

    def step(positions) -> torch.Tensor:
        return -module.weight.sum()  # Adam's first steps move the weight by ~lr: +1 per step

    result = fit_stage(
        stage="end-to-end", method="proposed2", module=module, parameters=list(module.parameters()),
        train_step=step, num_train=4, val_loss=val_loss, epochs=epochs, patience=patience, ctx=ctx,
    )
    return module, result, ctx.log, weights_at_val


def test_keeps_the_epoch_with_the_least_validation_loss_and_records_it():
    # starting state 1.0, then epochs 1..4: best at epoch 2, patience 2 stops after epoch 4
    module, result, log, weights = _fit([1.0, 1.2, 0.9, 1.1, 1.3], patience=2)
    assert result == 0.9
    assert log.selected_epochs == {"proposed2/end-to-end": 2}
    assert float(module.weight.detach()) == pytest.approx(weights[2])  # the weights validated at epoch 2
    assert [row["epoch"] for row in log.rows] == [1, 2, 3, 4]


def test_no_better_epoch_keeps_the_starting_state_and_the_report_says_so():
    module, result, log, weights = _fit([0.5, 0.6, 0.7, 0.8], patience=3)
    assert result == 0.5 and float(module.weight.detach()) == 0.0 == weights[0]
    assert log.selected_epochs == {"proposed2/end-to-end": 0}
    notes = untuned_notes({"selected_epochs": log.selected_epochs})
    assert len(notes) == 2 and "P2" in notes[0] and "Proposed1's model" in notes[0]
    assert untuned_notes({"selected_epochs": {"proposed2/end-to-end": 3}}) == []
    assert untuned_notes({}) == []


def test_a_finished_stage_reloaded_from_its_state_records_the_same_epoch(tmp_path):
    _, first, log, _ = _fit([1.0, 1.2, 0.9, 1.1, 1.3], patience=2, resume_dir=tmp_path)
    # the stage's file says it is done: no validation runs, the kept epoch comes from the file
    _, again, log_again, weights = _fit([], patience=2, resume_dir=tmp_path)
    assert again == first and weights == []
    assert log_again.selected_epochs == log.selected_epochs == {"proposed2/end-to-end": 2}
