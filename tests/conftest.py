"""Shared test data: the tiny synthetic experiment every whole-pipeline test runs (seconds on a CPU).

``TINY`` is the three paper methods on 49 two-second clips with a small CNN; :func:`tiny_toml` gives its variants
(other methods, other stage tables, other clip counts) so that test files do not each carry a copy of the config.
Test modules import these names (``from tests.conftest import TINY, tiny_toml``). The fixture ``tiny_run`` is
that run trained once per test session and shared by the tests that only read it.

Under pytest-xdist (``make test`` runs ``-n 2``) each worker computes on one thread (OMP_NUM_THREADS=1, also for the
processes the tests start): two workers of two threads each on two cores run slower than one thread each.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from thce.allocator import reuse_freed_memory

reuse_freed_memory()  # the allocator as the CLI sets it: the tests' training runs take about half the time

XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... in a worker; "" without xdist
if XDIST_WORKER:
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # for the processes the tests start

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

#: The test files that take longest (``--durations``, on 2 cores), longest first. Under xdist they are handed out
#: first, so that no long file is left running alone at the end; the others follow in collection order (the
#: Makefile turns off xdist's own reordering, by number of tests, which left the long few-test files to the last).
#: A file missing here only costs time.
LONGEST_FILES = (
    "test_distributed.py", "test_shipped_configs.py", "test_resume.py", "test_frame_training.py", "test_cli_safety.py",
    "test_cli_matrix.py", "test_experiment.py",
    "test_panns_wiring.py", "test_cli_input_matrix.py", "test_features.py", "test_sweep.py", "test_join.py",
    "test_auxiliary_thce.py", "test_export.py", "test_models.py", "test_reference.py",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under xdist, the tests of :data:`LONGEST_FILES` first (a stable sort: each file's tests stay together)."""
    if XDIST_WORKER:
        rank = {name: i for i, name in enumerate(LONGEST_FILES)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _seeded_global_rngs() -> None:
    """Each test starts from the same global torch and numpy random state, whatever ran before it: a test's
    unseeded ``torch.randn`` otherwise draws different values in a full run than alone (a tolerance that held
    locally failed in CI this way)."""
    torch.manual_seed(0)
    np.random.seed(0)

#: Data, front end, model and optimiser of the tiny runs; ``{counts}`` and ``{synth}`` are filled by tiny_toml.
_DATA = """seed = 3
[synth]
counts = {counts}
duration_s = 2.0
{synth}[features]
duration_s = 2.0
n_mels = 32
[model]
encoder = "cnn"
cnn_channels = [8, 16]
cnn_pools = [[5, 2], [20, 2]]
[train]
batch_size = 16
"""

#: The stage tables of the tiny run of the paper's three methods (two Algorithm 1 iterations, two epochs a stage).
TINY_STAGES = """[embedding]
n_iter = 2
epochs = 1
last_epochs = 2
[detector]
max_epochs = 2
head_only_max_epochs = 5
patience = 2
[baseline]
max_epochs = 2
patience = 2
"""

#: 8 clips of each event class and 25 of background.
TINY_COUNTS = {"dog": 8, "baby": 8, "gun": 8, "background": 25}


def tiny_toml(
    methods: Sequence[str] | None = None,
    *,
    stages: str = TINY_STAGES,
    counts: Mapping[str, int] = TINY_COUNTS,
    synth: str = "",
) -> str:
    """The tiny config's TOML text: ``methods`` (None: the default, the paper's three), ``stages`` the stage tables,
    ``counts`` the synthetic clips per label, ``synth`` extra ``[synth]`` lines (e.g. ``ebr_db_range = [6.0, 12.0]``).
    """
    table = "{" + ", ".join(f"{label} = {n}" for label, n in counts.items()) + "}"
    text = _DATA.format(counts=table, synth=synth + "\n" if synth and not synth.endswith("\n") else synth) + stages
    if methods is not None:
        text = text.replace("seed = 3\n", f"seed = 3\nmethods = {json.dumps(list(methods))}\n", 1)
    return text


#: The tiny run of the paper's three methods.
TINY = tiny_toml()


def write_config(folder: Path, text: str = TINY, name: str = "tiny.toml") -> Path:
    """``text`` written to ``folder/name`` (folder created); returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """``folder`` filled by ``build(folder)`` once per test session, by whichever xdist worker asks first (the others
    wait for it, then read the same folder); without xdist, once per process. Tests must only read it."""
    root = tmp_path_factory.getbasetemp()
    if XDIST_WORKER:
        root = root.parent  # the session's own numbered folder, which holds every worker's
    folder = root / f"built-once-{name}"
    with (root / f"built-once-{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (folder / ".built").is_file():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed build left
            build(folder)
            (folder / ".built").touch()
    return folder


def _train_tiny(folder: Path) -> None:
    from thce.cli import main

    assert main(["-q", "experiment", str(write_config(folder)), "--out", str(folder / "runs" / "seed_3")]) == 0


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The finished run of :data:`TINY` (seed 3), ``.../runs/seed_3``, trained once per test session; read only."""
    return built_once(tmp_path_factory, "tiny", _train_tiny) / "runs" / "seed_3"
