"""The training loop every stage shares, and what it runs in.

- :class:`TrainConfig` (optimisation, device, precision, loaders) and :class:`StageConfig` (early stopping and
  model selection) configure it; :class:`RunContext` carries them with the run's seed, metrics log, progress
  callback, resume folder and place in a torchrun job.
- :func:`fit_stage` trains one :class:`Stage`, described in four parts: what it trains (:class:`Learner`), what
  an epoch reads (:class:`EpochData`), the optimiser's settings (:class:`Schedule`) and how the kept state is
  chosen (:class:`Selection`). Adam/AdamW over the learner's parameters, batches read ahead by loader workers,
  bf16 autocast, training-batch augmentation, data-parallel shares under torchrun, per-epoch resume state, early
  stopping and model selection with warnings.
- the per-epoch records go to a :class:`~thce.training.metrics_log.MetricsLog` (``metrics.csv``).

It knows no method and no data set: a stage hands it a ``train_step`` and, for stages that read features, a
``load(positions)`` (:func:`thce.training.data.training_clips` gives the training split's). Library code does not
print: per-batch progress goes to an optional ``progress(description, done, total)`` callback.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from thce import seeds
from thce.augment import AugmentConfig, BatchAugmenter
from thce.distributed import SINGLE, Distributed
from thce.errors import ConfigError
from thce.io import atomic_write
from thce.progress import ProgressFn
from thce.training.metrics_log import MetricsLog

logger = logging.getLogger(__name__)


PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every stage (paper: Adam, lr 0.001, batch 64 per GPU)."""

    batch_size: int = 64  # per process (per GPU under torchrun)
    learning_rate: float = 1e-3
    device: str = "cpu"
    num_threads: int = 0  # 0: PyTorch's default
    precision: str = "fp32"  # "bf16": autocast the training forward passes to bfloat16
    loader_workers: int = 0  # processes reading feature batches ahead of training (0: read in the loop)
    pin_memory: bool = True  # page-locked batches for faster host-to-GPU copies (CUDA only)
    weight_decay: float = 0.0  # > 0: AdamW with this decoupled weight decay (paper: Adam, none)
    balanced_sampling: bool = False  # class-balanced draws with replacement in BCE stages (then Eq. 1, unweighted)
    bce_weight_power: float = 1.0  # Eq. 2's w_l ** this: 1 the paper's, 0.5 their square root, 0 unweighted (Eq. 1)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size: must be >= 1, got {self.batch_size}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision: must be one of {PRECISIONS}, got {self.precision!r}")
        if self.loader_workers < 0:
            raise ConfigError(f"train.loader_workers: must be >= 0, got {self.loader_workers}")
        if not self.learning_rate > 0:
            raise ConfigError(f"train.learning_rate: must be > 0, got {self.learning_rate}")
        if self.num_threads < 0:
            raise ConfigError(f"train.num_threads: must be >= 0, got {self.num_threads}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay: must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.bce_weight_power <= 1.0:
            raise ConfigError(f"train.bce_weight_power: must be in [0, 1], got {self.bce_weight_power}")


SELECTIONS = ("val_loss", "val_eer", "val_auc")
DECAYS = ("none", "cosine")


@dataclass(frozen=True)
class StageConfig:
    """A training stage stopped early (paper: patience 10) on ``selection``: the validation loss (the paper's
    "least validation loss"), or the mean over classes of the validation EER or ROC AUC; the best model is kept.
    Patience counts from the first trained epoch."""

    section: ClassVar[str] = "stage"  # the config section its errors name
    max_epochs: int = 200
    patience: int = 10
    selection: str = "val_loss"
    learning_rate: float | None = None  # Adam's rate for this stage; None: train.learning_rate (the paper: one rate)
    learning_rate_decay: str = "none"  # "cosine": each step's rate half a cosine from the rate to 0 at max_epochs

    def __post_init__(self) -> None:
        self.validate(self.section)

    def validate(self, section: str) -> None:
        if self.selection not in SELECTIONS:
            raise ConfigError(f"{section}.selection: {self.selection!r} is not one of {', '.join(SELECTIONS)}")
        if self.max_epochs < 0:
            raise ConfigError(f"{section}.max_epochs: must be >= 0, got {self.max_epochs}")
        if self.patience < 1:
            raise ConfigError(f"{section}.patience: must be >= 1, got {self.patience}")
        check_learning_rate(self.learning_rate, f"{section}.learning_rate")
        if self.learning_rate_decay not in DECAYS:
            raise ConfigError(
                f"{section}.learning_rate_decay: {self.learning_rate_decay!r} is not one of {', '.join(DECAYS)}"
            )

    def schedule(self) -> Schedule:
        """The optimiser's settings of this stage: ``max_epochs`` at its ``learning_rate`` (decayed as set), early
        stopped."""
        return Schedule(self.max_epochs, self.learning_rate, self.patience, self.learning_rate_decay)


def check_learning_rate(rate: float | None, key: str) -> None:
    """A stage's own learning rate must be positive when set (``None``: the run's ``train.learning_rate``)."""
    if rate is not None and not rate > 0:
        raise ConfigError(f"{key}: must be > 0, got {rate}")


@dataclass
class RunContext:
    """What every stage needs besides its data: settings, seed, where to log, whom to tell about progress."""

    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    log: MetricsLog = field(default_factory=MetricsLog)
    progress: ProgressFn | None = None
    resume_dir: Path | None = None  # where fit_stage keeps per-stage state; None: no checkpoints
    dist: Distributed = SINGLE  # this process's place in a torchrun job (see thce.distributed)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training-batch augmentation (off by default)

    @property
    def device(self) -> torch.device:
        if self.dist.device.type == "cuda":
            return self.dist.device  # this rank's GPU
        if self.train.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.train.device)

    @property
    def global_batch_size(self) -> int:
        """Clips per optimisation step over all ranks (``train.batch_size`` per rank)."""
        return self.train.batch_size * self.dist.world_size

    def autocast(self) -> torch.autocast:
        """bfloat16 autocast of a training forward pass when ``train.precision = "bf16"`` (else a no-op)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.train.precision == "bf16")

    def generator(self, *names: str | int) -> torch.Generator:
        """The random stream ``names`` of this run (:func:`thce.seeds.generator`)."""
        return seeds.generator(self.seed, *names)


def _stage_path(ctx: RunContext, method: str, stage: str, iteration: int | str) -> Path | None:
    if ctx.resume_dir is None:
        return None
    name = "-".join(str(part) for part in (method, stage, iteration) if part != "")
    return ctx.resume_dir / f"{name}.pt"


def _save_stage(path: Path, payload: dict[str, Any]) -> None:
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)


def stage_finished(ctx: RunContext, method: str, name: str, iteration: int | str = "") -> bool:
    """Whether an earlier process of this run finished the stage (its resume file says so): :func:`fit_stage` will
    restore its result without training."""
    path = _stage_path(ctx, method, name, iteration)
    if path is None or not path.exists():
        return False
    return bool(torch.load(path, map_location="cpu", weights_only=True)["done"])


def resume_file(ctx: RunContext, name: str) -> Path | None:
    """``<resume_dir>/<name>.pt`` (state kept beside the stages' for a resume), or ``None`` without a resume
    folder."""
    return None if ctx.resume_dir is None else ctx.resume_dir / f"{name}.pt"


def save_resume_file(ctx: RunContext, path: Path | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically to ``path`` (from :func:`resume_file`), by rank 0 only; nothing for ``None``."""
    if path is not None and ctx.dist.is_main:
        _save_stage(path, payload)


class _Batches(torch.utils.data.Dataset):
    """Feature batches for a :class:`~torch.utils.data.DataLoader` with workers: item ``i`` = ``load(batches[i])``."""

    def __init__(self, batches: list[np.ndarray], load: Callable[[np.ndarray], Tensor]) -> None:
        self.batches, self.load = batches, load

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Tensor:
        return self.load(self.batches[i])


def _batch_inputs(
    batches: list[np.ndarray], load: Callable[[np.ndarray], Tensor] | None, ctx: RunContext
) -> Iterator[Tensor | None]:
    """The inputs of each batch on ``ctx.device``: ``None`` without ``load``; read in the loop, or ahead of it by
    ``train.loader_workers`` processes into page-locked memory (copied to the GPU without blocking)."""
    if load is None:
        yield from (None for _ in batches)
        return
    cuda = ctx.device.type == "cuda"
    pin = cuda and ctx.train.pin_memory
    if ctx.train.loader_workers == 0:
        for positions in batches:
            x = load(positions)
            yield (x.pin_memory() if pin else x).to(ctx.device, non_blocking=pin)
        return
    loader = torch.utils.data.DataLoader(
        _Batches(batches, load), batch_size=None, shuffle=False, num_workers=ctx.train.loader_workers,
        pin_memory=pin, multiprocessing_context="fork", prefetch_factor=2,
        generator=torch.Generator(),  # its worker seeds must not consume the global random state (dropout's)
    )  # fmt: skip
    for x in loader:
        yield x.to(ctx.device, non_blocking=pin)


def _rank_local_randomness(ctx: RunContext, *step: str | int) -> Any:
    """A context in which dropout draws differ between ranks, seeded from (seed, rank, ``step``) and leaving the
    global random state as it was, so that it advances the same way on every rank (replicated stages, resumption
    and the initialisation of later models stay in step)."""
    if not ctx.dist.enabled:
        return contextlib.nullcontext()
    seed = seeds.derive_seed(ctx.seed, "dropout", ctx.dist.rank, *step)
    devices = [ctx.device.index or 0] if ctx.device.type == "cuda" else []

    @contextlib.contextmanager
    def scope() -> Iterator[None]:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    return scope()


Validation = Callable[[], "float | dict[str, float]"]


def _criterion(values: dict[str, float], selection: str) -> float:
    """The number a stage minimises for model selection: validation loss, mean EER, or 1 - mean AUC."""
    if selection == "val_auc":
        return 1.0 - values["val_auc"]
    return values[selection]


def _warn_if_start_won(
    ctx: RunContext, method: str, stage: str, iteration: int | str, state: dict[str, Any], selection: str
) -> None:
    """Make it loud when a stage's starting state scored better on validation than every trained epoch."""
    best_epoch, best, initial = state.get("best_epoch"), state.get("best_loss"), state.get("initial")
    if best_epoch is None or initial is None or not math.isfinite(initial):
        return
    name = "/".join(str(part) for part in (method, stage, iteration) if str(part) != "")
    if best_epoch == 0:
        message = (
            f"{name} kept its starting state (epoch 0): no trained epoch improved {selection} "
            f"({initial:.4g} at the start)"
        )
    elif not state.get("start_trained") and initial <= best:
        message = (
            f"{name}: no trained epoch beat the UNTRAINED initialisation on {selection} (untrained {initial:.4g}, "
            f"best trained {best:.4g} at epoch {best_epoch}); epoch {best_epoch} is kept, but the model may not "
            "have learned anything"
        )
    else:
        return
    ctx.log.warn(method, stage, iteration, message)


def learning_rate_groups(module: nn.Module, parameters: list[nn.Parameter], lr: float) -> list[dict[str, Any]]:
    """Optimiser parameter groups: the parameters of a submodule of ``module`` with a ``learning_rate`` attribute
    that is not ``None`` (a fine-tuned PANNs encoder, ``model.encoder_learning_rate``) at that rate, the rest at
    ``lr``. One group (the usual case) when no submodule sets one."""
    own: dict[int, float] = {}
    for sub in module.modules():
        rate = getattr(sub, "learning_rate", None)
        if isinstance(rate, float):
            own.update({id(p): rate for p in sub.parameters()})
    rest = [p for p in parameters if id(p) not in own]
    groups = [{"params": rest, "lr": lr}] if rest or not own else []
    for rate in sorted(set(own.values())):
        mine = [p for p in parameters if own.get(id(p)) == rate]
        if mine:
            groups.append({"params": mine, "lr": rate})
    return groups


@dataclass(frozen=True)
class Learner:
    """What a stage trains: ``module`` (its state is what the stage saves, resumes and keeps at the selected
    epoch), the ``parameters`` the optimiser moves (``None``: all of ``module``'s) and ``train_step``, one batch's
    loss: ``train_step(positions)``, ``(positions, x)`` with the batch's features ``x`` when the stage reads them,
    ``(positions, x, (lam, perm))`` under mixup so that it can mix its targets.

    ``data_parallel`` (stages that run the encoder): under torchrun ``module`` trains under DistributedDataParallel
    on each rank's share of a batch; the loss of a share, a mean weighted by ``batch_weight(positions)`` (default:
    the number of clips), is scaled by its share of the batch's weight, so the averaged gradient is exactly that of
    the global batch's loss. Without it, every rank runs the whole batch (cheap head-only stages).
    """

    module: nn.Module
    train_step: Callable[..., Tensor]
    parameters: Sequence[nn.Parameter] | None = None
    data_parallel: bool = False
    batch_weight: Callable[[np.ndarray], float] | None = None

    def optimised(self) -> list[nn.Parameter]:
        """The parameters the optimiser moves, in order."""
        return list(self.module.parameters() if self.parameters is None else self.parameters)


@dataclass(frozen=True)
class EpochData:
    """What each epoch of a stage reads: positions ``0 .. num_train-1`` in batches of ``train.batch_size`` per rank.

    ``epoch_order(generator)`` gives an epoch's positions (default: a permutation of ``num_train``), e.g. a
    class-balanced draw with replacement; ``on_epoch_start(epoch)`` (0-based) runs before each epoch. With
    ``load(positions) -> (b, frames, mels)`` features, the step receives ``x`` already on the device (read ahead by
    ``train.loader_workers`` processes if set). With an ``augmenter`` (:class:`thce.augment.BatchAugmenter`,
    training batches only, its own generator saved with the stage), ``x`` is augmented and, if ``mixup``, mixed
    within the batch.
    """

    num_train: int
    load: Callable[[np.ndarray], Tensor] | None = None
    epoch_order: Callable[[torch.Generator], np.ndarray] | None = None
    on_epoch_start: Callable[[int], None] | None = None
    augmenter: BatchAugmenter | None = None
    mixup: bool = True


@dataclass(frozen=True)
class Schedule:
    """The optimiser's settings of a stage: up to ``epochs`` epochs of Adam (AdamW with ``train.weight_decay``) at
    ``learning_rate`` (``None``: ``train.learning_rate``); with ``patience``, stopped once the selection criterion
    has not improved for that many epochs, counted from the first trained epoch (``None``: every epoch, the last
    state kept). ``decay``: the rate of each step (:func:`rate_factor`)."""

    epochs: int
    learning_rate: float | None = None
    patience: int | None = None
    decay: str = "none"


def rate_factor(decay: str, epoch: int, step: int, steps: int, epochs: int) -> float:
    """The multiplier of a stage's learning rate at ``step`` (1-based) of the ``steps`` of ``epoch`` (1-based) of
    ``epochs``: 1 for ``"none"``; ``"cosine"``: ``(1 + cos(pi t)) / 2`` with ``t`` the stage's fraction of steps
    before this one (1 at the first step, falling to 0 at the end of ``epochs``; early stopping does not shorten it).
    A function of the position only, so a resumed stage goes on where it was.

    >>> [round(rate_factor("cosine", epoch, 1, 2, 2), 3) for epoch in (1, 2)], rate_factor("cosine", 1, 2, 2, 2)
    ([1.0, 0.5], 0.8535533905932737)
    """
    if decay == "none":
        return 1.0
    if decay == "cosine":
        return (1.0 + math.cos(math.pi * ((epoch - 1) + (step - 1) / steps) / epochs)) / 2.0
    raise ValueError(f"unknown learning-rate decay {decay!r} (one of {', '.join(DECAYS)})")


@dataclass(frozen=True)
class Selection:
    """How a stage is validated and which of its states it keeps.

    ``val_loss()`` returns the validation loss, or a dict with ``"val_loss"`` and optionally ``"val_eer"`` /
    ``"val_auc"`` (logged to metrics.csv). Early stopped, the stage keeps the state with the best ``criterion``
    (validation loss, mean EER, or mean AUC). The starting state (epoch 0) is a candidate only when
    ``start_trained`` (e.g. Proposed2 starting from Proposed1): a stage starting from an untrained model never
    returns it. ``extra()``: more values logged with every epoch and saved with its state, handed to
    ``on_restore`` when a stage resumes.
    """

    val_loss: Validation
    criterion: str = "val_loss"
    start_trained: bool = False
    extra: Callable[[], dict[str, float]] | None = None
    on_restore: Callable[[dict[str, float]], None] | None = None

    def __post_init__(self) -> None:
        if self.criterion not in SELECTIONS:
            raise ValueError(f"Selection: criterion must be one of {SELECTIONS}, got {self.criterion!r}")


@dataclass(frozen=True)
class Stage:
    """One training stage of a method: ``name`` (``end-to-end``, ``embedding``, ...) of ``method``, ``iteration``
    (``""``: none) naming its resume file, its metrics.csv rows and its random streams; what it trains, what its
    epochs read, its optimiser's settings and its selection rule."""

    method: str
    name: str
    learner: Learner
    data: EpochData
    schedule: Schedule
    selection: Selection
    iteration: int | str = ""


def fit_stage(stage: Stage, ctx: RunContext) -> float:
    """Train one stage (:class:`Stage`): the learner's parameters for up to ``schedule.epochs`` epochs of its
    ``train_step`` over the stage's data; returns the selected state's criterion, or without patience the last
    epoch's.

    Forward passes run under :meth:`RunContext.autocast`. With patience, the state of the best criterion is
    restored (which epoch goes to ``ctx.log.select``). Either way, a starting state that scores better than every
    trained epoch is a warning in the log and in ``ctx.log.warnings`` (results.json and report.md).

    Distributed (``ctx.dist``): every rank draws the same order in global batches of ``train.batch_size`` per rank
    (data-parallel shares: :class:`Learner`). Validation values, and so early stopping, are rank 0's.

    With ``ctx.resume_dir``, the state after every epoch (weights, optimiser, best model so far, random generators)
    is saved atomically (by rank 0) to ``<resume_dir>/<method>-<stage>[-<iteration>].pt``; a later call with the
    same file continues after the last completed epoch, or, when the stage had finished, loads its result and
    returns at once, so a killed run ends as an uninterrupted one would. ``selection.on_restore`` receives the
    ``selection.extra()`` values saved with it.
    """
    method, name, iteration = stage.method, stage.name, stage.iteration
    learner, data, rule, module = stage.learner, stage.data, stage.selection, stage.learner.module
    epochs, patience, augmenter = stage.schedule.epochs, stage.schedule.patience, data.augmenter
    selection, start_trained, extra = rule.criterion, rule.start_trained, rule.extra
    dist = ctx.dist
    rate = ctx.train.learning_rate if stage.schedule.learning_rate is None else stage.schedule.learning_rate
    groups = learning_rate_groups(module, learner.optimised(), rate)
    if ctx.train.weight_decay > 0:
        optimiser: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=rate, weight_decay=ctx.train.weight_decay)
    else:
        optimiser = torch.optim.Adam(groups, lr=rate)
    base_rates = [group["lr"] for group in optimiser.param_groups]  # before a resumed state sets its decayed rates
    stream = (method, name, iteration)  # unique per stage, like its resume file
    generator = ctx.generator("order", *stream)
    # its own stream (the batch order is the same with augmentation on or off), one per rank (each augments its share)
    augment_generator = ctx.generator("augment", *stream, dist.rank) if augmenter is not None else None
    path = _stage_path(ctx, method, name, iteration)
    saved = torch.load(path, map_location="cpu", weights_only=True) if path is not None and path.exists() else None
    dist.barrier()  # every rank has read the stage's state before rank 0 overwrites it

    def validate() -> dict[str, float]:
        value = rule.val_loss()
        values = {"val_loss": value} if not isinstance(value, dict) else value
        return {k: dist.broadcast_float(float(v)) for k, v in values.items()}

    if saved is not None:
        module.load_state_dict(saved["module"])
        torch.set_rng_state(saved["torch_rng"])
        if rule.on_restore is not None and saved["extra"]:
            rule.on_restore(saved["extra"])
        ctx.log.drop_after(method, name, iteration, saved["epoch"])
        logger.info("%s: resumed after epoch %d%s", path.name, saved["epoch"], " (finished)" if saved["done"] else "")
        if saved["done"]:
            if patience is not None and saved.get("best_epoch") is not None:  # None: saved before thce recorded it
                ctx.log.select(method, name, iteration, saved["best_epoch"], selection)
                _warn_if_start_won(ctx, method, name, iteration, saved, selection)
            return saved["result"]
        optimiser.load_state_dict(saved["optimiser"])
        generator.set_state(saved["generator"])
        if augment_generator is not None and saved.get("augment_generator") is not None:
            augment_generator.set_state(saved["augment_generator"])
        first_epoch, best_loss, since_best, current = saved["epoch"] + 1, saved["best_loss"], saved["since_best"], saved["current"]
        best_state, best_epoch = saved["best_state"], saved.get("best_epoch")
        initial, best_trained = saved.get("initial", math.nan), saved.get("best_trained", best_loss)
    else:
        first_epoch, since_best, current, best_epoch = 1, 0, math.nan, None
        best_loss, best_state, initial, best_trained = math.inf, None, math.nan, math.inf
        if patience is not None:
            initial = _criterion(validate(), selection)
            if start_trained:
                best_loss, best_state, best_epoch = initial, copy.deepcopy(module.state_dict()), 0

    def checkpoint(epoch: int, done: bool, result: float = math.nan) -> None:
        if path is None or not dist.is_main:
            return
        _save_stage(path, {
            "epoch": epoch, "done": done, "result": result, "module": module.state_dict(),
            "optimiser": optimiser.state_dict(), "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "augment_generator": augment_generator.get_state() if augment_generator is not None else None,
            "best_loss": best_loss, "best_state": best_state, "best_epoch": best_epoch, "since_best": since_best,
            "current": current, "initial": initial, "best_trained": best_trained, "start_trained": start_trained, "extra": extra() if extra else {},
        })  # fmt: skip

    sharded = learner.data_parallel and dist.enabled
    forward = dist.data_parallel(module) if sharded else None
    weigh = learner.batch_weight or (lambda positions: float(len(positions)))
    smallest = 2 * dist.world_size if sharded else 2  # batch norm cannot train on a batch of one

    epoch = first_epoch - 1
    for epoch in range(first_epoch, epochs + 1):
        start = time.perf_counter()
        module.train()
        losses = []
        if data.on_epoch_start is not None:
            data.on_epoch_start(epoch - 1)
        if data.epoch_order is not None:
            order = data.epoch_order(generator)
        else:
            order = torch.randperm(data.num_train, generator=generator).numpy()
        size = ctx.global_batch_size
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        if len(batches) > 1 and len(batches[-1]) < smallest:
            batches[-2:] = [np.concatenate(batches[-2:])]
        steps = [dist.split(positions) for positions in batches] if sharded else batches
        inputs = _batch_inputs(steps, data.load, ctx)
        for done, (positions, local, x) in enumerate(zip(batches, steps, inputs), start=1):
            args: tuple = (local,) if data.load is None else (local, x)
            if augmenter is not None and x is not None:
                augmenter.train()
                x = augmenter(x, augment_generator)
                x, lam, perm = augmenter.mixup(x, augment_generator, enabled=data.mixup)
                args = (local, x, (lam, perm))
            if sharded:
                with _rank_local_randomness(ctx, *stream, epoch, done), ctx.autocast():
                    loss = forward(lambda: learner.train_step(*args))
                loss = loss * (weigh(local) / weigh(positions) * dist.world_size)
            else:
                with ctx.autocast():
                    loss = learner.train_step(*args)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if stage.schedule.decay != "none":
                factor = rate_factor(stage.schedule.decay, epoch, done, len(batches), epochs)
                for group, base in zip(optimiser.param_groups, base_rates):
                    group["lr"] = base * factor
            optimiser.step()
            losses.append(loss.item())
            if ctx.progress:
                ctx.progress(f"{method} {name} {iteration} epoch {epoch}".replace("  ", " "), done, len(batches))
        train_loss = float(np.mean(losses)) if losses else float("nan")
        if sharded:  # the global batches' mean loss; rank 0's batch-norm statistics for evaluation
            train_loss = float(dist.all_reduce_sum(torch.tensor(train_loss, dtype=torch.float64))) / dist.world_size
            dist.broadcast_module(module, buffers_only=True)
        values = validate()
        current = _criterion(values, selection)
        ctx.log.write(
            method=method, stage=name, iteration=iteration, epoch=epoch, train_loss=train_loss, **values,
            seconds=time.perf_counter() - start, **(extra() if extra else {}),
        )  # fmt: skip
        if patience is not None:
            if current < best_loss:
                best_loss, best_state, best_epoch = current, copy.deepcopy(module.state_dict()), epoch
            if current < best_trained:  # patience counts from the first trained epoch, not from the start
                best_trained, since_best = current, 0
            else:
                since_best += 1
        stop = patience is not None and since_best >= patience
        if not stop and epoch < epochs:
            checkpoint(epoch, done=False)
        if stop:
            break
    if best_state is not None:
        module.load_state_dict(best_state)
        if best_epoch is not None:
            ctx.log.select(method, name, iteration, best_epoch, selection)
            _warn_if_start_won(
                ctx, method, name, iteration,
                {"best_epoch": best_epoch, "best_loss": best_loss, "initial": initial, "start_trained": start_trained},
                selection,
            )  # fmt: skip
    dist.broadcast_module(module)  # replicated stages too: rank 0's result is the result
    result = best_loss if patience is not None else current
    checkpoint(epoch, done=True, result=result)
    return result
