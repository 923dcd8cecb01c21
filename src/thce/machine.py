"""What a measurement ran on: benchmarks print it next to their figures (timings mean little without it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(threads: int | None = None) -> dict[str, Any]:
    """CPU model, cores (all and usable by this process), load average, memory, scheduling (nice, Linux autogroup:
    CPU is shared between sessions first), GPU, versions and torch threads.

    ``threads``: the torch threads the measurement used, when it set them itself (default: the current setting)."""
    import numpy as np
    import torch

    try:  # Linux's autogroup: CPU is shared fairly between sessions first, then by nice within a session
        autogroup: str | None = Path("/proc/self/autogroup").read_text().strip()
    except OSError:
        autogroup = None
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        memory_gb = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "memory_gb": memory_gb,
        "nice": os.nice(0) if hasattr(os, "nice") else None,
        "autogroup": autogroup,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
