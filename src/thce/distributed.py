"""Data-parallel training under ``torchrun``: who am I, what is my share, and the few collectives we need.

One process per device. ``torchrun --nproc_per_node N -m thce experiment CONFIG --out DIR`` sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_distributed` joins the process group (NCCL on GPUs, gloo on CPU).
Without ``torchrun`` everything here is the identity and the code paths are those of a single process.

How the library uses it (see :mod:`thce.training.engine`):

- stages that run the encoder train with ``DistributedDataParallel``: every rank draws the same global order,
  takes its contiguous share of each global batch (``batch_size`` per rank), and its loss is rescaled so that the
  averaged gradient is the gradient of the global batch's loss, class and cluster weights included;
- embedding passes (clustering, validation, scoring) are split over the ranks and gathered, so every rank holds
  the same embeddings;
- spherical k-means works on each rank's share and all-reduces centroid sums and counts
  (:func:`thce.cluster.spherical_kmeans`): identical centroids on every rank;
- head-only stages are cheap and run identically on every rank; decisions (early stopping) use rank 0's value;
- only rank 0 writes files.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import Tensor, nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job. ``world_size == 1`` (the default) is a plain single process.

    ``device`` is where collectives run: CPU tensors for gloo, this rank's GPU for NCCL."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and reports progress."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` items (sizes differ by at most one; rank order = item order)."""
        return slice(n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size)

    def split(self, positions: np.ndarray) -> np.ndarray:
        """This rank's part of one global batch of ``positions``."""
        return positions[self.share(len(positions))]

    # ----------------------------------------------------------------------------------------- collectives

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """Sum of ``tensor`` over ranks (a new tensor on ``tensor``'s device; the input is not modified)."""
        if not self.enabled:
            return tensor
        buffer = tensor.detach().to(self.device, copy=True)
        torch_dist.all_reduce(buffer, op=torch_dist.ReduceOp.SUM)
        return buffer.to(tensor.device)

    def gather_rows(self, tensor: Tensor) -> Tensor:
        """Concatenation over ranks, in rank order, of every rank's ``(n_r, ...)`` rows (``n_r`` may differ)."""
        if not self.enabled:
            return tensor
        local = tensor.detach().to(self.device).contiguous()
        sizes = [torch.zeros(1, dtype=torch.long, device=self.device) for _ in range(self.world_size)]
        torch_dist.all_gather(sizes, torch.tensor([local.shape[0]], dtype=torch.long, device=self.device))
        counts = [int(s) for s in sizes]
        padded = local.new_zeros((max(counts), *local.shape[1:]))
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        torch_dist.all_gather(parts, padded)
        return torch.cat([part[:count] for part, count in zip(parts, counts)]).to(tensor.device)

    def broadcast_float(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (decisions such as early stopping must agree)."""
        if not self.enabled:
            return value
        buffer = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch_dist.broadcast(buffer, src=0)
        return float(buffer.item())

    def broadcast_module(self, module: nn.Module, *, buffers_only: bool = False) -> None:
        """Copy rank 0's parameters and buffers (or buffers only) of ``module`` to every rank, in place."""
        if not self.enabled:
            return
        tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
        with torch.no_grad():
            for tensor in tensors:
                buffer = tensor.detach().to(self.device, copy=True)
                torch_dist.broadcast(buffer, src=0)
                tensor.copy_(buffer.to(tensor.device))

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def data_parallel(self, module: nn.Module) -> nn.Module:
        """``module`` wrapped for :class:`~torch.nn.parallel.DistributedDataParallel` training.

        The wrapper's forward takes a closure (``wrapped(lambda: loss_of(module))``), so that stages whose loss
        runs several sub-modules (encoder, cluster layer, head) train through one DDP module."""
        wrapped = _ClosureModule(module)
        if not self.enabled:
            return wrapped
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(wrapped, device_ids=device_ids)


class _ClosureModule(nn.Module):
    """Holds a module for DDP; ``forward(fn)`` returns ``fn()`` (which uses the module's parameters)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, fn):  # noqa: ANN001, ANN201 - a closure in, its tensor out
        return fn()


SINGLE = Distributed()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "auto") -> Distributed:
    """Join the ``torchrun`` process group if there is one; otherwise :data:`SINGLE`.

    ``device`` is ``train.device``: ``cuda`` (or ``auto`` with CUDA available) uses NCCL and this rank's GPU
    (``LOCAL_RANK``); ``cpu`` uses gloo."""
    if not launched_by_torchrun():
        return SINGLE
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        comm_device = torch.device("cuda", local_rank)
    else:
        comm_device = torch.device("cpu")
    if not torch_dist.is_initialized():
        # Imported now, before the group exists: its functions take ``group=group.WORLD`` as a default argument,
        # evaluated at import. Imported later (DistributedDataParallel pulls it in), those defaults would hold the
        # default group for good, so that destroy_process_group could not free it (see shutdown).
        importlib.import_module("torch.distributed.nn.functional")
        torch_dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    logger.info("rank %d of %d (%s)", rank, world_size, comm_device)
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank, device=comm_device)


def shutdown(dist: Distributed) -> None:
    """Leave the process group (after a final barrier, so that no rank exits while others still talk), and free it
    here, while the interpreter is alive: its worker threads are joined before the process exits.

    Why freeing it here matters: every gloo work object keeps the thread-local state of the call that made it,
    which holds Python objects, and the group's worker threads drop finished works themselves, taking the GIL to
    do so. A group still alive at exit is freed during interpreter finalisation, where a thread that asks for the
    GIL is ended with pthread_exit; its unwinding through a C++ destructor calls std::terminate ("terminate called
    without an active exception", SIGABRT), and torchrun reports a finished job as failed. So nothing may still
    hold the group when it is destroyed: DDP reducers (collected first, while the GIL is free to be taken: a
    reducer freed after the group would free it with the GIL held and deadlock) and the default arguments of
    torch.distributed.nn.functional (imported before the group exists, see init_distributed)."""
    if dist.enabled and torch_dist.is_initialized():
        torch_dist.barrier()
        gc.collect()  # DDP wrappers of finished stages, whose reducers hold the group
        torch_dist.destroy_process_group()  # the last reference: its threads are joined here, not at exit
