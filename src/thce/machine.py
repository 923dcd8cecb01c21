"""What a measurement ran on: benchmarks print it next to their figures (timings mean little without it)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from thce.allocator import allocator_setting


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
        "allocator": allocator_setting(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def _git(*args: str) -> str | None:
    """``git -C <thce's source folder> ARGS``'s output, or None (no git, not a checkout, error, 5 s timeout)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), *args],
            capture_output=True, text=True, timeout=5, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit() -> str | None:
    """The commit of the git checkout thce runs from (``"<hash>-dirty"`` when its tracked files differ from it);
    None when git is missing or thce is not run from a checkout (e.g. installed from a wheel, even inside another
    repository: the module itself must be tracked)."""
    commit = _git("rev-parse", "HEAD")
    if not commit or _git("ls-files", "--error-unmatch", Path(__file__).name) is None:
        return None
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}-dirty" if dirty else commit


def version_line() -> str:
    """``thce 0.1.0 (torch 2.x, git <hash>)`` for ``thce --version``; torch's version is read without importing it."""
    from importlib import metadata

    from thce import __version__

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    commit = git_commit()
    return f"thce {__version__} (torch {torch_version}" + (f", git {commit})" if commit else ")")


def run_provenance() -> dict[str, Any]:
    """What a run's results came from: thce's and torch's versions, the git commit (None outside a checkout) and
    the machine (:func:`describe_machine` without the load average and the scheduling group, which change from
    minute to minute and session to session and would make a resumed run's results differ from an uninterrupted
    one's)."""
    import torch

    from thce import __version__

    machine = describe_machine()
    for volatile in ("load_average", "nice", "autogroup"):
        machine.pop(volatile, None)
    return {"thce": __version__, "torch": torch.__version__, "git_commit": git_commit(), "machine": machine}
