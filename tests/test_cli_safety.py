"""Issue 32, as a user meets it on the command line (``python -m thce ...`` in subprocesses where processes or
third-party warning filters are what is tested; ``thce.cli.main`` in this process where thce's own output is): one
process per output folder, sweeps resumable from any working directory, warnings where a flag is ignored, printed
thresholds that reproduce the events, third-party warnings kept out of the terminal unless ``-v``. (Refusals that
end in one line and exit 2 are in tests/test_cli_matrix.py.)"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import tiny_toml
from tests.stub_runs import stub_run
from thce.errors import OutputError

LOCK_NAME = ".thce.lock"  # thce.locks.LOCK_NAME (spelt out: this file also runs against code without the module)

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}  # fmt: skip
ENV.pop("RANK", None)


def thce(*argv: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thce", *argv], env=ENV, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def _default_sigint() -> None:
    """In the child before thce starts: Ctrl-C as in a terminal. A shell that runs the tests in the background
    (``make test &``) starts them with SIGINT ignored, which children inherit and Python then keeps."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*argv: str, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "thce", *argv], env=ENV, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)  # fmt: skip


def wait_for(predicate, what: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------------ the lock


@pytest.mark.slow
def test_a_second_experiment_into_one_out_is_refused_at_once(tmp_path):
    """Issue 32: `thce experiment slow.toml --out R`, then the same with --overwrite and with --resume while it runs:
    both refused at once with one line naming the holder; the first finishes with an intact metrics.csv."""
    config = tmp_path / "slow.toml"
    config.write_text(tiny_toml(["baseline"], stages="[baseline]\nmax_epochs = 4\npatience = 4\n"))
    run = tmp_path / "R"
    first = start("-q", "experiment", str(config), "--out", str(run))
    wait_for(lambda: (run / "metrics.csv").is_file(), "metrics.csv", first)  # training has started
    for flag in ("--overwrite", "--resume"):
        began = time.monotonic()
        second = thce("-q", "experiment", str(config), "--out", str(run), flag)
        lines = (second.stdout + second.stderr).strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, (second.stdout, second.stderr)
        assert lines[0].startswith(f"thce: error: {run}: in use by another thce process (PID {first.pid} on host "
                                   f"{socket.gethostname()}, started "), lines[0]  # fmt: skip
        assert time.monotonic() - began < 30  # at once: before any data or torch work
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("method,") and len(rows) == 1 + 4, rows  # the header and the 4 epochs, nothing lost
    assert all(row.startswith("baseline,") for row in rows[1:])
    assert not (run / LOCK_NAME).exists()
    assert thce("-q", "report", str(run)).returncode == 0


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    from thce.locks import folder_lock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "out"
    folder.mkdir()
    holder = {"pid": dead.pid, "host": socket.gethostname(), "started": "2026-01-01 00:00:00 UTC"}
    (folder / LOCK_NAME).write_text(json.dumps(holder))
    with caplog.at_level(logging.WARNING, logger="thce"), folder_lock(folder):
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"taking over a stale lock (PID {dead.pid} on host" in caplog.text and "no longer running" in caplog.text
    assert not (folder / LOCK_NAME).exists()


def test_a_lock_of_another_host_is_refused(tmp_path):
    from thce.locks import folder_lock

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "yesterday"}))
    with pytest.raises(OutputError, match="on another host .*PID 1 on host elsewhere.*delete"):
        with folder_lock(folder):
            pass


def test_lock_is_reentrant_and_leaves_no_folder_it_made(tmp_path):
    from thce.locks import LOCK_NAME, folder_lock

    folder = tmp_path / "new" / "out"
    with folder_lock(folder), folder_lock(folder):
        assert (folder / LOCK_NAME).is_file()
    assert not folder.exists()


# ------------------------------------------------------------------------------------------------ sweeps


def _comparable(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("timing_s", "provenance"):
        results.pop(key)
    return results


@pytest.mark.slow
def test_sweep_with_relative_out_resumes_after_sigint_from_any_working_directory(tmp_path):
    """Issue 32: `thce sweep ... --out rel/dir` interrupted with SIGINT, then --resume from the same working directory
    (interrupted again) and from another one, gives the results of an uninterrupted sweep."""
    config = tmp_path / "tiny.toml"
    # six epochs: after the first, the run to interrupt has five left, time for the SIGINT on a loaded machine
    config.write_text(tiny_toml(["baseline"], stages="[baseline]\nmax_epochs = 6\npatience = 6\n"))
    vary = ("--vary", "train.learning_rate=0.001,0.002,0.003")
    whole = thce("-q", "sweep", str(config), *vary, "--out", str(tmp_path / "whole"), "--draws", "50")
    assert whole.returncode == 0, whole.stderr
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    out = here / "rel" / "dir"
    argv = ("-q", "sweep", "../tiny.toml", *vary, "--draws", "50")
    for finished in (1, 2):  # interrupt once the next run has trained an epoch, from `here` both times
        proc = start(*argv, "--out", "rel/dir", *(("--resume",) if finished > 1 else ()), cwd=here)
        wait_for(lambda: len(list(out.glob("*/seed_*/results.json"))) >= finished
                 and any(not (m.parent / "results.json").exists() and len(m.read_text().splitlines()) > 1
                         for m in out.glob("*/seed_*/metrics.csv")), f"run {finished + 1} training", proc)  # fmt: skip
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and "thce: interrupted" in err, err
        assert not (out / LOCK_NAME).exists()
    resumed = thce(*argv, "--out", "../here/rel/dir", "--resume", cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    slugs = sorted(p.name for p in (tmp_path / "whole").iterdir() if (p / "seed_3").is_dir())
    assert len(slugs) == 3 and slugs == sorted(p.name for p in out.iterdir() if (p / "seed_3").is_dir())
    for slug in slugs:
        assert _comparable(out / slug / "seed_3") == _comparable(tmp_path / "whole" / slug / "seed_3"), slug
    assert (out / "sweep.md").read_text() == (tmp_path / "whole" / "sweep.md").read_text()
    again = thce(*argv, "--out", "rel/dir", cwd=here)  # finished runs are kept, from where the sweep started too
    assert again.returncode == 0, again.stderr


# ------------------------------------------------------------------------------------------------ detect


@pytest.fixture(scope="module")
def detect_inputs(tmp_path_factory):
    """A stub run (untrained 1-s checkpoint) and a 4-s recording with a non-Latin name."""
    root = tmp_path_factory.mktemp("detect")
    stub_run(root / "run", encoder="cnn", method="proposed2", duration_s=1.0, n_mels=32, second_pool_frames=10,
             cluster_class=(0, 0, 1, 2, 3))  # fmt: skip
    audio = (0.1 * np.random.default_rng(0).standard_normal(64000)).astype(np.float32)
    sf.write(root / "犬の声.wav", audio, 16000)
    (root / "ref.tsv").write_text("filename\tonset\toffset\tevent_label\n犬の声.wav\t0.5\t1.0\tdog\n")
    (root / "other.tsv").write_text("filename\tonset\toffset\tevent_label\nelse.wav\t0.5\t1.0\tdog\n")
    return root


def test_reference_without_plots_or_naming_no_input_is_warned(detect_inputs, tmp_path, capsys):
    from thce.cli import main  # in this process: the warnings are thce's own log lines, no third-party filter involved

    root = detect_inputs
    assert main(["-q", "detect", str(root / "run"), str(root / "犬の声.wav"), "--reference", str(root / "ref.tsv"),
                 "--out", str(tmp_path / "ev.tsv")]) == 0  # fmt: skip
    assert f"--reference {root / 'ref.tsv'}: ignored without --plots" in capsys.readouterr().err
    assert main(["-q", "detect", str(root / "run"), str(root / "犬の声.wav"), "--reference", str(root / "other.tsv"),
                 "--plots", str(tmp_path / "pages")]) == 0  # fmt: skip
    assert f"--reference {root / 'other.tsv'}: names none of the 1 input file(s)" in capsys.readouterr().err


def test_printed_thresholds_reproduce_the_events(detect_inputs, tmp_path, capsys):
    """Issue 32: re-thresholding the saved scores with the thresholds detect prints gives detect's events."""
    from thce.cli import main

    root = detect_inputs
    assert main(["-q", "detect", str(root / "run"), str(root / "犬の声.wav"), "--hop-s", "0.05", "--out",
                 str(tmp_path / "ev.json")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    printed = dict(re.findall(r"(\w+) ([0-9.e+-]+)", out.split("thresholds (eer): ")[1].splitlines()[0]))
    saved = json.loads((tmp_path / "ev.json").read_text())
    assert {k: float(v) for k, v in printed.items()} == saved["thresholds"]
    threshold = ",".join(f"{k}={v}" for k, v in printed.items())
    assert main(["-q", "events", str(tmp_path / "ev.scores"), "--threshold", threshold, "--out",
                 str(tmp_path / "again.json")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "again.json").read_text())["events"] == saved["events"]


def test_third_party_warnings_only_with_verbose(detect_inputs, tmp_path):
    """Issue 32: matplotlib's missing-glyph warnings (a non-Latin file name in a page's title) stay out of the
    terminal unless -v."""
    root = detect_inputs
    argv = ("detect", str(root / "run"), str(root / "犬の声.wav"), "--out", str(tmp_path / "ev.tsv"), "--overwrite")
    quiet = thce("-q", *argv, "--plots", str(tmp_path / "p1"))
    assert quiet.returncode == 0, quiet.stderr
    assert "Glyph" not in quiet.stderr and "Warning" not in quiet.stderr, quiet.stderr
    verbose = thce("-v", *argv, "--plots", str(tmp_path / "p2"))
    assert verbose.returncode == 0 and "Glyph" in verbose.stderr, verbose.stderr
