"""fit_stage's early stopping: which epoch is kept, that it is recorded, resumed, and reported."""

from pathlib import Path

import pytest
import torch
from torch import nn

from thce.report import untuned_notes
from thce.training.engine import EpochData, Learner, RunContext, Schedule, Selection, Stage, TrainConfig, fit_stage
from thce.training.metrics_log import MetricsLog


def _fit(val_losses: list, *, patience: int, epochs: int = 10, resume_dir: Path | None = None,
         log: MetricsLog | None = None, start_trained: bool = True, selection: str = "val_loss",
         method: str = "proposed2", learning_rate: float | None = None, decay: str = "none",
         ) -> tuple[nn.Linear, float, MetricsLog, list[float]]:
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

    result = fit_stage(Stage(
        method=method, name="end-to-end", learner=Learner(module, step), data=EpochData(4),
        schedule=Schedule(epochs, learning_rate, patience, decay),
        selection=Selection(val_loss, selection, start_trained=start_trained),
    ), ctx)  # fmt: skip
    return module, result, ctx.log, weights_at_val


@pytest.mark.parametrize("learning_rate, step", [(None, 1.0), (0.25, 0.25)])
def test_a_stage_learning_rate_replaces_the_runs(learning_rate, step):
    # train.learning_rate is 1.0; Adam's first step on a constant gradient moves the weight by the rate
    _, _, _, weights = _fit([1.0, 0.9], patience=5, epochs=1, learning_rate=learning_rate)
    assert weights == [0.0, pytest.approx(step, rel=1e-3)]


def test_cosine_decay_sets_each_steps_rate_and_a_resumed_stage_goes_on_with_it(tmp_path):
    # one step per epoch at rate 1: cosine factors 1, cos^2(pi/8) = 0.854, 0.5, 0.146 over 4 epochs; Adam's steps
    # on a constant gradient move the weight by the step's rate
    _, _, _, weights = _fit([1.0, 0.9, 0.8, 0.7, 0.6], patience=10, epochs=4, decay="cosine")
    assert weights == pytest.approx([0.0, 1.0, 1.853553, 2.353553, 2.5], abs=1e-3)

    killed = tmp_path / "killed"  # validation fails after epoch 3's steps: the state after epoch 2 is on disk
    with pytest.raises(IndexError):
        _fit([1.0, 0.9, 0.8], patience=10, epochs=4, decay="cosine", resume_dir=killed)
    _, _, _, resumed = _fit([0.7, 0.6], patience=10, epochs=4, decay="cosine", resume_dir=killed)
    assert resumed == pytest.approx(weights[3:], abs=1e-3)  # epochs 3 and 4 again, at their own rates


def test_keeps_the_epoch_with_the_least_validation_loss_and_records_it():
    # starting state 1.0, then epochs 1..4: best at epoch 2, patience 2 stops after epoch 4
    module, result, log, weights = _fit([1.0, 1.2, 0.9, 1.1, 1.3], patience=2)
    assert result == 0.9
    assert log.selected_epochs == {"proposed2/end-to-end": 2}
    assert float(module.weight.detach()) == pytest.approx(weights[2])  # the weights validated at epoch 2
    assert [row["epoch"] for row in log.rows] == [1, 2, 3, 4]


def test_no_better_epoch_keeps_the_starting_state_and_the_report_says_so():
    # patience counts from the first trained epoch: epochs 1..4 run although the start was best from epoch 1 on
    module, result, log, weights = _fit([0.5, 0.6, 0.7, 0.8, 0.9], patience=3)
    assert result == 0.5 and float(module.weight.detach()) == 0.0 == weights[0]
    assert log.selected_epochs == {"proposed2/end-to-end": 0}
    assert [row["epoch"] for row in log.rows] == [1, 2, 3, 4]
    assert len(log.warnings) == 1 and "kept its starting state" in log.warnings[0]["message"]
    notes = untuned_notes({"selected_epochs": log.selected_epochs, "warnings": log.warnings})
    assert len(notes) == 2 and "P2" in notes[0] and "Proposed1's model" in notes[0] and "Warning" in notes[0]
    assert untuned_notes({"selected_epochs": {"proposed2/end-to-end": 3}}) == []
    assert untuned_notes({}) == []


def test_a_finished_stage_reloaded_from_its_state_records_the_same_epoch(tmp_path):
    _, first, log, _ = _fit([1.0, 1.2, 0.9, 1.1, 1.3], patience=2, resume_dir=tmp_path)
    # the stage's file says it is done: no validation runs, the kept epoch comes from the file
    _, again, log_again, weights = _fit([], patience=2, resume_dir=tmp_path)
    assert again == first and weights == []
    assert log_again.selected_epochs == log.selected_epochs == {"proposed2/end-to-end": 2}


def test_a_stage_starting_untrained_never_keeps_its_start_and_warns_loudly():
    # Issue 12: the random initialisation scored best on validation; it must not be returned silently
    module, result, log, weights = _fit([0.5, 0.6, 0.55, 0.7, 0.8], patience=2, start_trained=False, method="baseline")
    assert log.selected_epochs == {"baseline/end-to-end": 2} and result == 0.55
    assert float(module.weight.detach()) == pytest.approx(weights[2]) != 0.0
    assert len(log.warnings) == 1 and "UNTRAINED" in log.warnings[0]["message"]
    assert any("UNTRAINED" in line for line in untuned_notes({"warnings": log.warnings}))


def test_a_stage_that_learns_has_no_warning():
    _, _, log, _ = _fit([1.0, 0.9, 0.8, 0.85, 0.9], patience=2, start_trained=False, method="baseline")
    assert log.selected_epochs == {"baseline/end-to-end": 2} and log.warnings == []


@pytest.mark.parametrize("selection, kept", [("val_loss", 1), ("val_eer", 2), ("val_auc", 3)])
def test_selection_criterion_is_configurable(selection, kept):
    values = [
        {"val_loss": 1.0, "val_eer": 0.5, "val_auc": 0.5},
        {"val_loss": 0.5, "val_eer": 0.40, "val_auc": 0.60},  # least loss
        {"val_loss": 0.7, "val_eer": 0.30, "val_auc": 0.65},  # least EER
        {"val_loss": 0.8, "val_eer": 0.35, "val_auc": 0.70},  # largest AUC
        {"val_loss": 0.9, "val_eer": 0.45, "val_auc": 0.55},
        {"val_loss": 0.9, "val_eer": 0.45, "val_auc": 0.55},
        {"val_loss": 0.9, "val_eer": 0.45, "val_auc": 0.55},
    ]
    _, _, log, _ = _fit(values, patience=3, epochs=6, start_trained=False, method="baseline", selection=selection)
    assert log.selected_epochs == {"baseline/end-to-end": kept}
    assert {"val_eer", "val_auc"} <= set(log.rows[0])  # logged to metrics.csv


def test_selection_summary_gives_the_kept_epoch_its_validation_and_the_best_of_each(tmp_path):
    log = MetricsLog(tmp_path / "metrics.csv")
    values = [
        {"val_loss": 1.0, "val_eer": 0.5, "val_auc": 0.5},  # the starting state
        {"val_loss": 0.8, "val_eer": 0.40, "val_auc": 0.60},
        {"val_loss": 0.7, "val_eer": 0.35, "val_auc": 0.65},  # least loss: kept
        {"val_loss": 0.9, "val_eer": 0.30, "val_auc": 0.75},  # best EER and AUC
        {"val_loss": 1.1, "val_eer": 0.32, "val_auc": 0.70},
    ]
    module = nn.Linear(1, 1, bias=False)
    fit_stage(Stage(
        method="baseline", name="end-to-end", learner=Learner(module, lambda p: module.weight.sum()),
        data=EpochData(4), schedule=Schedule(10, patience=2), selection=Selection(lambda: values.pop(0)),
    ), RunContext(train=TrainConfig(batch_size=4), log=log))  # fmt: skip
    summary = MetricsLog(tmp_path / "metrics.csv")  # a resumed process reads the epochs from the file
    summary.select("baseline", "end-to-end", "", 2, "val_loss")
    for entry in (log.selection_summary()["baseline/end-to-end"], summary.selection_summary()["baseline/end-to-end"]):
        assert entry["criterion"] == "val_loss" and (entry["kept_epoch"], entry["epochs_run"]) == (2, 4)
        assert entry["kept"] == pytest.approx({"val_loss": 0.7, "val_eer": 0.35, "val_auc": 0.65})
        assert {k: v["epoch"] for k, v in entry["best"].items()} == {"val_loss": 2, "val_eer": 3, "val_auc": 3}
        assert [entry["best"][k]["value"] for k in ("val_loss", "val_eer", "val_auc")] == pytest.approx([0.7, 0.3, 0.75])


def test_selection_summary_of_a_kept_start_and_its_report_line(tmp_path):
    from thce.report import selection_table_markdown

    module, _, log, _ = _fit([1.0, 1.2, 1.3, 1.4], patience=2, selection="val_loss")
    entry = log.selection_summary()["proposed2/end-to-end"]
    assert (entry["kept_epoch"], entry["epochs_run"], entry["kept"]) == (0, 3, None)  # epoch 0 is not a logged row
    lines = selection_table_markdown({"proposed2/end-to-end": entry})
    assert lines[2] == "| proposed2/end-to-end | val_loss | 0 (3) | – | – | – | – |"


def test_a_selection_criterion_is_checked_and_parameters_default_to_the_modules():
    with pytest.raises(ValueError, match="criterion must be one of"):
        Selection(lambda: 0.0, "val_f1")
    module = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    assert Learner(module, lambda p: module(p)).optimised() == list(module.parameters())
    assert Learner(module, lambda p: module(p), parameters=module[1].parameters()).optimised() == [
        module[1].weight, module[1].bias,
    ]  # fmt: skip
