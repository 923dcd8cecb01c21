"""A run killed with SIGKILL mid-stage resumes and ends with the results of an uninterrupted run."""

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import TINY
from thce.cli import main
from thce.data.feature_pool import one_torch_thread
from thce.locks import LOCK_NAME

CONFIG = TINY.replace("epochs = 1\n", "epochs = 2\n").replace("last_epochs = 2", "last_epochs = 3")
WITH_LMLE = CONFIG.replace("seed = 3\n", 'seed = 3\nmethods = ["baseline", "proposed1", "proposed2", "lmle"]\n') + (
    "[lmle]\nepochs = 4\nrebuild_every = 2\n"
)


def _comparable(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    results.pop("timing_s")
    return results


def _kill_when(path_glob: str, run_dir: Path, config: Path, launcher: tuple[str, ...] = (), *extra: str) -> None:
    """Start the run in a subprocess (``launcher``: e.g. torchrun's arguments) and SIGKILL it, with every process
    it started, as soon as a stage file matching ``path_glob`` appears."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(run_dir.parent)}  # a killed run's temporary folders
    proc = subprocess.Popen(
        [sys.executable, "-m", *launcher, "thce", "-q", "experiment", str(config), "--out", str(run_dir), *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if list((run_dir / "checkpoints" / "resume").glob(path_glob)):
            workers = _descendants(proc.pid)  # torchrun starts its workers in sessions of their own
            os.killpg(proc.pid, signal.SIGKILL)
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    _wait_until_unlocked(run_dir / LOCK_NAME)


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux /proc), children before their own children."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _wait_until_unlocked(lock_path: Path, timeout_s: float = 60.0) -> None:
    """Wait until no process holds ``lock_path``'s flock: a launcher's workers (torchrun's ranks) are its
    grandchildren, still dying when ``wait`` on the launcher returns, and a resume started then is refused."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            fd = os.open(lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(0.05)
        finally:
            os.close(fd)
    raise AssertionError(f"{lock_path} still held {timeout_s} s after the kill")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Callable[[str], Path]:
    """The uninterrupted run of a config text, trained once for every test that kills a run of that config."""
    runs: dict[str, Path] = {}

    def reference(config_text: str) -> Path:
        if config_text not in runs:
            root = tmp_path_factory.mktemp("uninterrupted")
            (root / "tiny.toml").write_text(config_text)
            with one_torch_thread():
                assert main(["-q", "experiment", str(root / "tiny.toml"), "--out", str(root / "reference")]) == 0
            runs[config_text] = root / "reference"
        return runs[config_text]

    return reference


@pytest.mark.parametrize(
    "stage_file, config_text",
    [
        ("proposed-embedding-2.pt", CONFIG),
        ("proposed2-end-to-end.pt", CONFIG),
        ("baseline-end-to-end.pt", CONFIG),
        ("lmle-embedding-2.pt", WITH_LMLE),  # LMLE's second rebuild, after its first epoch
        ("lmle-end-to-end.pt", WITH_LMLE),
    ],
)
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, monkeypatch, uninterrupted, stage_file, config_text):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    reference = uninterrupted(config_text)
    config = tmp_path / "tiny.toml"
    config.write_text(config_text)
    killed = tmp_path / "killed"
    _kill_when(stage_file, killed, config)
    assert not (killed / "results.json").exists()
    with one_torch_thread():
        assert main(["-q", "experiment", str(config), "--out", str(killed), "--resume"]) == 0
    assert _comparable(killed) == _comparable(reference)
    reference_rows = (reference / "metrics.csv").read_text().splitlines()
    killed_rows = (killed / "metrics.csv").read_text().splitlines()
    strip = lambda rows: [",".join(r.split(",")[:-1]) for r in rows]  # noqa: E731 (drop the seconds column)
    assert strip(killed_rows) == strip(reference_rows)


def test_resume_refuses_another_config(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG.replace("n_iter = 2", "n_iter = 1").replace("last_epochs = 3", "last_epochs = 1"))
    out = tmp_path / "run"
    assert main(["-q", "experiment", str(config), "--out", str(out), "--set", "methods=['baseline']"]) == 0
    assert main(["-q", "experiment", str(config), "--out", str(out), "--resume"]) == 2
    assert "used another configuration" in capsys.readouterr().err
    # the machine's settings may differ: a run resumed with more threads (or another cache folder) is the same run
    again = ["-q", "experiment", str(config), "--out", str(out), "--set", "methods=['baseline']", "--resume"]
    assert main([*again, "--set", "train.num_threads=2"]) == 0


def test_a_resumed_run_reports_each_stage_s_total_time(tmp_path):
    """Resuming restores finished stages in moments; timing_s must still say what each stage took in all."""
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG.replace("n_iter = 2", "n_iter = 1").replace("last_epochs = 3", "last_epochs = 1"))
    out = tmp_path / "run"
    argv = ["-q", "experiment", str(config), "--out", str(out), "--set", "methods=['baseline']"]
    assert main(argv) == 0
    first = json.loads((out / "results.json").read_text())["timing_s"]
    assert main([*argv, "--resume"]) == 0
    again = json.loads((out / "results.json").read_text())["timing_s"]
    assert set(again) == set(first) and all(again[stage] >= first[stage] for stage in first), (first, again)


def test_a_resumed_run_reads_finished_iterations_clusterings_back(tmp_path, monkeypatch, uninterrupted):
    """Algorithm 1's clustering (minutes of k-means over every training frame at scale) is kept per iteration: a
    run resumed after its embedding stages finished clusters nothing again and ends as the uninterrupted run."""
    import thce.training.algorithm1 as algorithm1

    reference = uninterrupted(CONFIG)
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG)
    out = tmp_path / "run"
    argv = ["-q", "experiment", str(config), "--out", str(out), "--set", "methods=['proposed1', 'proposed2']"]
    with one_torch_thread():
        assert main(argv) == 0
    kept = sorted(p.name for p in (out / "checkpoints" / "resume").glob("proposed-clustering-*.pt"))
    assert kept == ["proposed-clustering-1.pt", "proposed-clustering-2.pt"]

    def no_clustering(*args, **kwargs):
        raise AssertionError("a finished iteration was clustered again")

    monkeypatch.setattr(algorithm1, "cluster_per_class", no_clustering)
    with one_torch_thread():
        assert main([*argv, "--resume"]) == 0
    resumed, whole = _comparable(out), _comparable(reference)
    assert resumed["embedding_diagnostics"] == whole["embedding_diagnostics"]
    for method in ("proposed1", "proposed2"):
        assert resumed["methods"][method] == whole["methods"][method]
