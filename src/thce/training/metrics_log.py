"""The per-epoch records of a run: ``metrics.csv`` (appended and flushed row by row, so a killed run keeps what it
logged), the epoch each early-stopped stage kept, model-selection warnings, and the per-epoch log lines (logger
``thce.training.metrics_log``, under ``thce.training``, whose lines the CLI shows unless ``-q``)."""

from __future__ import annotations

import csv
import logging
import math
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from thce.io import atomic_write
from thce.locks import taking_turns

logger = logging.getLogger(__name__)


class MetricsLog:
    """Per-epoch records appended to a CSV (flushed each row, so a killed run keeps what it logged)."""

    COLUMNS = (
        "method", "stage", "iteration", "epoch", "train_loss", "val_loss", "val_eer", "val_auc",
        "eq3_train", "eq3_val", "own_over_other_val", "seconds",
    )  # fmt: skip

    def __init__(self, path: Path | None = None, *, lock_path: Path | None = None) -> None:
        """``lock_path``: a file whose lock processes writing the same CSV take in turns (``thce experiment --jobs``:
        appends and the rewrite of :meth:`drop_after` do not cross); ``None``: this process alone writes it."""
        self.path = path
        self.lock_path = lock_path
        self.rows: list[dict[str, Any]] = []
        #: ``"method/stage[/iteration]" -> epoch`` whose weights an early-stopped stage kept (0: its starting state)
        self.selected_epochs: dict[str, int] = {}
        #: model-selection warnings (a stage whose starting state beat every trained epoch on validation)
        self.warnings: list[dict[str, str]] = []
        #: ``key -> criterion`` each early-stopped stage minimised (``val_loss``, ``val_eer`` or ``val_auc``)
        self.criteria: dict[str, str] = {}
        if path is not None and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as handle:
                csv.writer(handle).writerow(self.COLUMNS)

    def write(self, **row: Any) -> None:
        unknown = set(row) - set(self.COLUMNS)
        if unknown:
            raise KeyError(f"MetricsLog: unknown columns {sorted(unknown)}")
        self.rows.append(row)
        logger.info(
            "%s/%s%s epoch=%s train=%.4f val=%s", row.get("method"), row.get("stage"),
            "" if row.get("iteration") in (None, "") else f" it={row['iteration']}", row.get("epoch"),
            row.get("train_loss", float("nan")), _fmt(row.get("val_loss")),
        )  # fmt: skip
        if self.path is not None:
            with self._turn(), self.path.open("a", newline="") as handle:
                csv.writer(handle).writerow([_fmt(row.get(c)) for c in self.COLUMNS])

    def select(self, method: str, stage: str, iteration: int | str, epoch: int, criterion: str = "val_loss") -> None:
        """Record that a stage kept the weights of ``epoch``, chosen on ``criterion`` (Algorithm 1: the least
        validation loss)."""
        key = _stage_key(method, stage, iteration)
        self.selected_epochs[key] = int(epoch)
        self.criteria[key] = criterion

    def selection_summary(self) -> dict[str, dict[str, Any]]:
        """Per early-stopped stage (key as in :attr:`selected_epochs`): the criterion, the kept epoch and how many
        epochs ran, the validation loss / mean EER / mean AUC of the kept epoch (``None`` for the starting state,
        epoch 0, which is not a logged row) and the best of each over the stage's epochs with its epoch, e.g.
        ``{"criterion": "val_loss", "kept_epoch": 2, "epochs_run": 8, "kept": {"val_loss": 0.9, ...},
        "best": {"val_auc": {"value": 0.71, "epoch": 5}, ...}}``. Read from ``metrics.csv`` when there is one, so
        the epochs of a resumed run's earlier processes count too."""
        rows = self.rows
        if self.path is not None and self.path.exists():
            with self.path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
        summary: dict[str, dict[str, Any]] = {}
        for key, kept_epoch in self.selected_epochs.items():
            epochs = {
                int(row["epoch"]): {name: _number(row.get(name)) for name in ("val_loss", "val_eer", "val_auc")}
                for row in rows
                if _stage_key(row.get("method", ""), row.get("stage", ""), row.get("iteration", "")) == key
                and str(row.get("epoch", "")) != ""
            }
            best: dict[str, dict[str, float | int]] = {}
            for name, larger_is_better in (("val_loss", False), ("val_eer", False), ("val_auc", True)):
                scored = [(values[name], epoch) for epoch, values in sorted(epochs.items()) if values[name] is not None]
                if scored:
                    value, epoch = (max if larger_is_better else min)(scored, key=lambda pair: pair[0])
                    best[name] = {"value": value, "epoch": epoch}
            summary[key] = {
                "criterion": self.criteria.get(key, "val_loss"),
                "kept_epoch": kept_epoch,
                "epochs_run": max(epochs, default=0),
                "kept": epochs.get(kept_epoch),
                "best": best,
            }
        return summary

    def warn(self, method: str, stage: str, iteration: int | str, message: str) -> None:
        """Record and log a warning about a stage's model selection (once per stage)."""
        key = _stage_key(method, stage, iteration)
        self.warnings = [w for w in self.warnings if w["stage"] != key]
        self.warnings.append({"stage": key, "message": message})
        logger.warning("WARNING: %s", message)

    def drop_after(self, method: str, stage: str, iteration: int | str, epoch: int) -> None:
        """Forget the rows of one stage after ``epoch`` (a resumed stage logs those epochs again)."""

        def later(row: dict[str, Any]) -> bool:
            return (str(row.get("method")), str(row.get("stage")), str(row.get("iteration", ""))) == (
                method, stage, str(iteration)
            ) and int(row.get("epoch") or 0) > epoch

        self.rows = [row for row in self.rows if not later(row)]
        if self.path is not None and self.path.exists():
            with self._turn():
                with self.path.open(newline="") as handle:
                    kept = [row for row in csv.DictReader(handle) if not later(row)]
                with atomic_write(self.path, "w", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=self.COLUMNS)
                    writer.writeheader()
                    writer.writerows(kept)

    def _turn(self) -> AbstractContextManager[None]:
        """The lock on :attr:`lock_path` while this process writes the CSV (nothing without one)."""
        return nullcontext() if self.lock_path is None else taking_turns(self.lock_path)


def _stage_key(method: Any, stage: Any, iteration: Any) -> str:
    """``"method/stage[/iteration]"``: how selections, warnings and results.json name a stage."""
    return "/".join(str(part) for part in (method, stage, iteration) if part is not None and str(part) != "")


def _number(value: Any) -> float | None:
    """A metrics value (a float, or the CSV's text; ``""``/NaN: not measured) as a float or ``None``."""
    if value is None or value == "":
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)
