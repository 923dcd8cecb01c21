"""The C heap under PyTorch's CPU tensors (glibc's malloc): keep large freed blocks for reuse, give memory back on
request.

A training or scoring step allocates and frees the same activation maps every batch: the paper's CNN makes a
32 x 1000 x 64 map per 10 s clip (8 MB; 131 MB for a batch of 16). glibc serves blocks above its mmap threshold
(128 KiB, adapting up to 32 MiB) with fresh ``mmap`` calls and unmaps them when freed, so every batch faults its
maps in again, 4 KiB at a time, and the CPU spends much of a step in the kernel. :func:`reuse_freed_memory` raises
the mmap and trim thresholds so such blocks come from the heap and stay there for the next batch: with the paper's
CNN on 2 cores that doubles training throughput and speeds up eval passes ~1.8x (``benchmarks/allocator.py``
measures it against the default in the same run). Results do not change: only where tensors live does.

The CLI applies it at start-up; library users call it themselves (it changes the whole process's allocator).
Elsewhere than glibc (macOS, musl) both functions do nothing.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

#: Blocks up to this size come from the heap, and up to this much free memory stays at the heap's top.
KEEP_BYTES = 1 << 30

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3

_libc: Any = None
_kept_bytes: int | None = None  # what reuse_freed_memory set, None before


def _glibc() -> Any:
    """glibc's handle (cached), or None elsewhere."""
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim"):
                    _libc = libc
            except OSError:
                pass
    return _libc or None


def reuse_freed_memory(keep_bytes: int = KEEP_BYTES) -> bool:
    """Serve blocks up to ``keep_bytes`` from the heap and keep up to ``keep_bytes`` of freed memory at its top
    (glibc ``mallopt``: ``M_MMAP_THRESHOLD``, ``M_TRIM_THRESHOLD``). Returns whether it applied (False off glibc)."""
    global _kept_bytes
    libc = _glibc()
    if libc is None:
        return False
    if not (libc.mallopt(_M_MMAP_THRESHOLD, keep_bytes) and libc.mallopt(_M_TRIM_THRESHOLD, keep_bytes)):
        return False
    _kept_bytes = keep_bytes
    return True


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (malloc.h, glibc >= 2.33)."""

    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip


def heap_free_bytes() -> int | None:
    """Bytes of free memory held in the heap (glibc ``mallinfo2().fordblks``), or None where unknown."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    return int(libc.mallinfo2().fordblks)


def release_free_memory(above_bytes: int = 0) -> bool:
    """Return the heap's free memory to the OS (glibc ``malloc_trim``) if more than ``above_bytes`` of it is free
    (always when that is unknown); a no-op off glibc. Returns whether it trimmed.

    A long loop that frees blocks of varying sizes (an LSTM's batches of windows) fragments the heap, which then
    grows however much is free; trimming when the free part passes a bound keeps the resident size flat, while a
    loop that reuses its blocks (the CNN's maps) stays under the bound and keeps them."""
    libc = _glibc()
    if libc is None:
        return False
    free = heap_free_bytes() if above_bytes > 0 else None
    if free is not None and free <= above_bytes:
        return False
    libc.malloc_trim(0)
    return True


def kept_bytes() -> int | None:
    """What :func:`reuse_freed_memory` set in this process (``None``: never called, or not glibc): worker processes
    apply the same (:mod:`thce.workers`)."""
    return _kept_bytes


def allocator_setting() -> str:
    """How the C heap is set, for benchmark and run records."""
    if _glibc() is None:
        return "system default (not glibc)"
    if _kept_bytes is None:
        return "glibc default"
    return f"glibc, blocks up to {_kept_bytes >> 20} MiB from the heap, freed ones kept for reuse"
