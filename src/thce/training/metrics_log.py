"""The per-epoch records of a run: ``metrics.csv`` (appended and flushed row by row, so a killed run keeps what it
logged), the epoch each early-stopped stage kept, model-selection warnings, and the per-epoch log lines (logger
``thce.training.metrics_log``, under ``thce.training``, whose lines the CLI shows unless ``-q``)."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

from thce.io import atomic_write

logger = logging.getLogger(__name__)


class MetricsLog:
    """Per-epoch records appended to a CSV (flushed each row, so a killed run keeps what it logged)."""

    COLUMNS = (
        "method", "stage", "iteration", "epoch", "train_loss", "val_loss", "val_eer", "val_auc",
        "eq3_train", "eq3_val", "own_over_other_val", "seconds",
    )  # fmt: skip

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        #: ``"method/stage[/iteration]" -> epoch`` whose weights an early-stopped stage kept (0: its starting state)
        self.selected_epochs: dict[str, int] = {}
        #: model-selection warnings (a stage whose starting state beat every trained epoch on validation)
        self.warnings: list[dict[str, str]] = []
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
            with self.path.open("a", newline="") as handle:
                csv.writer(handle).writerow([_fmt(row.get(c)) for c in self.COLUMNS])

    def select(self, method: str, stage: str, iteration: int | str, epoch: int) -> None:
        """Record that a stage kept the weights of ``epoch`` (Algorithm 1: the least validation loss)."""
        key = "/".join(str(part) for part in (method, stage, iteration) if str(part) != "")
        self.selected_epochs[key] = int(epoch)

    def warn(self, method: str, stage: str, iteration: int | str, message: str) -> None:
        """Record and log a warning about a stage's model selection (once per stage)."""
        key = "/".join(str(part) for part in (method, stage, iteration) if str(part) != "")
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
            with self.path.open(newline="") as handle:
                kept = [row for row in csv.DictReader(handle) if not later(row)]
            with atomic_write(self.path, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.COLUMNS)
                writer.writeheader()
                writer.writerows(kept)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)
