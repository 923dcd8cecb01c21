"""thce.allocator: large blocks from the heap, freed memory kept (the CLI's start-up setting)."""

import subprocess
import sys

import pytest

import thce.allocator as allocator

_CHILD = """
import ctypes, sys
from thce.allocator import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
import numpy as np

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
block = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, what a batch of activation maps is
mapped = libc.mallinfo2().hblkhd  # bytes in mmapped blocks
del block
print(mapped >= 64 << 20, libc.mallinfo2().arena >= 64 << 20)  # block mmapped?; freed block kept in the heap?
"""


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc only")
def test_reuse_serves_large_blocks_from_the_heap_and_keeps_them():
    def run(setting):
        done = subprocess.run([sys.executable, "-c", _CHILD, setting], capture_output=True, text=True, check=True)
        return done.stdout.split()

    assert run("default") == ["True", "False"]  # glibc's default: a fresh mmap, unmapped when freed
    assert run("reuse") == ["False", "True"]


def test_without_glibc_nothing_happens(monkeypatch):
    monkeypatch.setattr(allocator, "_libc", False)  # as on macOS or musl
    monkeypatch.setattr(allocator, "_kept_bytes", None)
    assert allocator.reuse_freed_memory() is False
    allocator.release_free_memory()  # a no-op, no error
    assert allocator.allocator_setting() == "system default (not glibc)"


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc only")
def test_release_trims_only_above_the_bound():
    free = allocator.heap_free_bytes()
    assert free is not None and free >= 0
    assert allocator.release_free_memory(above_bytes=free + (1 << 40)) is False  # less free than the bound: kept
    assert allocator.release_free_memory() is True  # no bound: always trims
