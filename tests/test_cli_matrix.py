"""Bad usage of the command line, run as a user runs it (``python -m thce ...`` in a subprocess): every case exits
with status 2 and one line ``thce: error: ...`` naming the file and the problem, prints no traceback, and leaves
every file that existed before byte-identical (issue 14).

The cases share cheap inputs (a stub run with an untrained 1-s checkpoint, a 2-s recording) and each gets its own
folder for what it could damage; all subprocesses run concurrently once per module, each case asserts its own."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import tiny_toml
from tests.stub_runs import stub_run
from thce.io import PNG_SIGNATURE

SRC = Path(__file__).resolve().parents[1] / "src"
DEMO_CONFIG = SRC / "thce" / "configs" / "demo.toml"


@dataclass
class Case:
    """``argv`` (``{shared}`` and ``{case}`` are folders), the words the error line must hold."""

    argv: list[str]
    expect: list[str]
    setup: object = None  # callable(case_dir, shared) making what the case could damage


def _file(path: Path, text: str | bytes = "mine\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def _finished_run(case: Path, shared: Path) -> None:
    run = case / "run"
    for name, text in (("results.json", '{"classes": ["dog"]}\n'), ("metrics.csv", "method\n"),
                       ("config.toml", "seed = 0\n"), ("checkpoints/baseline.pt", b"weights")):  # fmt: skip
        _file(run / name, text)


def _seeds_run(case: Path, shared: Path) -> None:
    for seed in (0, 1):
        _file(case / "seeds" / f"seed_{seed}" / "checkpoints" / "proposed2.pt", b"weights")
    _file(case / "seeds" / "results.json", "{}\n")


def _config_in_folder(case: Path, shared: Path) -> None:
    _file(case / "mine" / "config.toml", "# my notes\n" + DEMO_CONFIG.read_text())  # the user keeps it there


def _blocker(case: Path, shared: Path) -> None:
    _file(case / "somefile", "a regular file in the way\n")


def _torch_save_model(case: Path, shared: Path) -> None:
    case.mkdir(parents=True, exist_ok=True)
    torch.save({"weights": torch.zeros(3)}, case / "model.pt")  # the user's own checkpoint, not TorchScript


def _results(text: str):
    def make(case: Path, shared: Path) -> None:
        _file(case / "run" / "results.json", text)

    return make


def _users_png(folder: str, name: str):
    """A picture the user made (a PNG, but not one thce drew) at ``case/folder/name``."""

    def make(case: Path, shared: Path) -> None:
        _file(case / folder / name, PNG_SIGNATURE + b"\x00\x00\x00\rIHDR my own picture")

    return make


def _checkpoint_copied_as(method: str):
    """``case/run/checkpoints/<method>.pt``: the shared run's proposed2 checkpoint copied in under another name."""

    def make(case: Path, shared: Path) -> None:
        _file(case / "run" / "checkpoints" / f"{method}.pt", (shared / "run/checkpoints/proposed2.pt").read_bytes())

    return make


def _logreg_stats_run(case: Path, shared: Path) -> None:
    """A finished run whose only method, logreg_stats, saves no network."""
    _file(case / "run" / "results.json", json.dumps({"classes": ["dog"], "methods": {"logreg_stats": {}}}))
    _file(case / "run" / "checkpoints" / "logreg_stats.json", "{}\n")
    _file(case / "run" / "config.toml", 'methods = ["logreg_stats"]\n')


def _bad_label_manifest(case: Path, shared: Path) -> None:
    """A strict config whose manifest has a label outside its classes: the run stops while reading the data."""
    _file(case / "m.csv", f"path,label\n{shared / 'clip.wav'},dog\n{shared / 'folder/dog/dog.wav'},cat\n")
    _file(case / "strict.toml", tiny_toml(["baseline"]) + '[data]\nsource = "manifest"\nmanifest = "m.csv"\n'
          'classes = ["dog"]\nstrict = true\n')


def _copy_of_reference(name: str):
    def make(case: Path, shared: Path) -> None:
        _file(case / name, (shared / "ref.tsv").read_bytes())

    return make


CUDA = torch.cuda.is_available()
RUN, AUDIO = "{shared}/run", "{shared}/clip.wav"

CASES: dict[str, Case] = {
    # item 1: a directory is never replaced by an output file
    "detect-out-is-a-directory": Case(["detect", RUN, AUDIO, "--out", "{case}"], ["{case}", "is a directory"]),
    # item 2: a run directory holding a run
    "experiment-over-a-finished-run": Case(
        ["experiment", str(DEMO_CONFIG), "--out", "{case}/run"], ["{case}/run", "holds a run", "--resume", "--overwrite"],
        _finished_run,
    ),
    "demo-over-a-finished-run": Case(
        ["demo", "--out", "{case}/run"], ["{case}/run", "holds a run", "--resume", "--overwrite"], _finished_run
    ),
    "seeds-over-a-seeds-run": Case(
        ["experiment", str(DEMO_CONFIG), "--out", "{case}/seeds", "--seeds", "2"],
        ["{case}/seeds", "seed_0/", "--overwrite"], _seeds_run,
    ),
    "resume-and-overwrite": Case(
        ["experiment", str(DEMO_CONFIG), "--out", "{case}/run", "--resume", "--overwrite"], ["choose one"],
        _finished_run,
    ),
    "experiment-config-is-outs-config-toml": Case(
        ["experiment", "{case}/mine/config.toml", "--out", "{case}/mine", "--overwrite"],
        ["{case}/mine/config.toml", "writes its resolved config"], _config_in_folder,
    ),
    "sweep-over-a-users-config-toml": Case(
        ["sweep", "{case}/mine/config.toml", "--out", "{case}/mine", "--vary", "embedding.alpha=8,16"],
        ["{case}/mine/config.toml", "not overwritten"], _config_in_folder,
    ),
    "import-manifest-into-itself": Case(
        ["data", "import", "manifest", "{case}/m.csv", "--out", "{case}/m.csv", "--overwrite"],
        ["{case}/m.csv", "is also an input"], lambda case, shared: _file(case / "m.csv", "path,label\nx.wav,dog\n"),
    ),
    "import-over-a-users-csv": Case(
        ["data", "import", "folder", "{shared}/folder", "--out", "{case}/notes.csv"],
        ["{case}/notes.csv", "not a thce manifest", "--overwrite"], lambda case, shared: _file(case / "notes.csv"),
    ),
    "import-over-a-users-skipped-csv": Case(
        ["data", "import", "folder", "{shared}/folder", "--out", "{case}/m.csv"],
        ["{case}/m.skipped.csv", "not a thce list of skipped files"], lambda case, shared: _file(case / "m.skipped.csv"),
    ),
    "mix-over-a-users-manifest": Case(
        ["data", "mix", "--events", "{shared}/folder", "--backgrounds", "{shared}/folder", "--out", "{case}/mine",
         "--count", "2", "--duration-s", "1"],
        ["{case}/mine/manifest.csv", "not a thce manifest"], lambda case, shared: _file(case / "mine" / "manifest.csv"),
    ),
    "detect-skip-list-over-a-users-file": Case(
        ["detect", RUN, AUDIO, "--out", "{case}/ev.tsv", "--skip-bad"],
        ["{case}/ev.skipped.csv", "not a thce list of skipped files"], lambda case, shared: _file(case / "ev.skipped.csv"),
    ),
    "toy-over-a-finished-run": Case(["toy", "--tiny", "--out", "{case}/run"], ["{case}/run", "holds a thce run"],
                                    _finished_run),
    # item 3: formats from extensions, files of another kind
    "detect-out-xlsx": Case(["detect", RUN, AUDIO, "--out", "{case}/ev.xlsx"], ["{case}/ev.xlsx", "'.xlsx'"]),
    "detect-over-a-users-tsv": Case(
        ["detect", RUN, AUDIO, "--out", "{case}/notes.tsv"], ["{case}/notes.tsv", "not a thce event list", "--overwrite"],
        lambda case, shared: _file(case / "notes.tsv", "my\tnotes\n"),
    ),
    "export-onnx-as-pt": Case(
        ["export", RUN, "--format", "onnx", "--out", "{case}/model.pt"], ["{case}/model.pt", "'.pt'", "torchscript"]
    ),
    "export-unknown-extension": Case(["export", RUN, "--out", "{case}/model.bin"], ["{case}/model.bin", "--format"]),
    "export-over-a-users-checkpoint": Case(
        ["export", RUN, "--format", "torchscript", "--out", "{case}/model.pt"],
        ["{case}/model.pt", "not a torchscript model", "--overwrite"], _torch_save_model,
    ),
    "evaluate-over-a-users-file": Case(
        ["evaluate-events", "{shared}/ref.tsv", "{shared}/ref.tsv", "--out", "{case}/notes.txt"],
        ["{case}/notes.txt", "not the metrics of thce evaluate-events", "--overwrite"],
        lambda case, shared: _file(case / "notes.txt"),
    ),
    # item 4: devices checked before any work
    "detect-device-mps": Case(["detect", RUN, AUDIO, "--device", "mps"], ["--device 'mps'", "available here: cpu"]),
    "detect-device-bogus": Case(["detect", RUN, AUDIO, "--device", "gpu0"], ["--device 'gpu0'", "not a torch device"]),
    # item 5: unwritable output locations (root ignores chmod: a path under a regular FILE is unwritable for anyone)
    "experiment-out-under-a-file": Case(
        ["experiment", str(DEMO_CONFIG), "--out", "{case}/somefile/run"], ["{case}/somefile", "not a directory"], _blocker
    ),
    "detect-out-under-a-file": Case(
        ["detect", RUN, AUDIO, "--out", "{case}/somefile/ev.tsv"], ["{case}/somefile", "not a directory"], _blocker
    ),
    "export-out-under-a-file": Case(
        ["export", RUN, "--out", "{case}/somefile/m.pt"], ["{case}/somefile", "not a directory"], _blocker
    ),
    "evaluate-out-under-a-file": Case(
        ["evaluate-events", "{shared}/ref.tsv", "{shared}/ref.tsv", "--out", "{case}/somefile/m.json"],
        ["{case}/somefile", "not a directory"], _blocker,
    ),
    "import-out-under-a-file": Case(
        ["data", "import", "folder", "{shared}/folder", "--out", "{case}/somefile/sub/m.csv"],
        ["{case}/somefile", "not a directory"], _blocker,
    ),
    "toy-out-under-a-file": Case(
        ["toy", "--tiny", "--out", "{case}/somefile/toy"], ["{case}/somefile", "not a directory"], _blocker
    ),
    # item 6: report
    "report-readme-missing": Case(
        ["report", "{case}/run", "--readme", "{case}/missing.md"], ["{case}/missing.md", "not found"],
        _results(json.dumps({"classes": ["dog"], "methods": {"baseline": {"eer": {"dog": 0.1, "overall": 0.1}}}})),
    ),
    "report-malformed-results": Case(
        ["report", "{case}/run"], ["{case}/run/results.json", "not valid JSON"], _results('{"classes": ["dog"], '),
    ),
    "report-partial-results": Case(
        ["report", "{case}/run"], ["{case}/run/results.json", "'methods'"], _results('{"classes": ["dog"]}\n'),
    ),
    # item 13: what detect expected to find
    "detect-on-a-seeds-run": Case(
        ["detect", "{case}/seeds", AUDIO], ["{case}/seeds", "--seeds run", "seed_0/, seed_1/", "{case}/seeds/seed_0"],
        _seeds_run,
    ),
    "detect-on-a-missing-run": Case(["detect", "{case}/nowhere", AUDIO], ["{case}/nowhere", "no such run directory"]),
    # issue 32: nothing thce did not write is replaced without --overwrite; an input is never an output
    "evaluate-out-over-a-runs-results-json": Case(
        ["evaluate-events", "{shared}/ref.tsv", "{shared}/ref.tsv", "--out", "{case}/run/results.json"],
        ["{case}/run/results.json", "not the metrics of thce evaluate-events", "--overwrite"], _finished_run,
    ),
    "evaluate-out-over-a-users-metrics-json": Case(
        ["evaluate-events", "{shared}/ref.tsv", "{shared}/ref.tsv", "--out", "{case}/metrics.json"],
        ["{case}/metrics.json", "not the metrics of thce evaluate-events"],
        lambda case, shared: _file(case / "metrics.json", '{"accuracy": 0.9}\n'),
    ),
    "evaluate-out-is-its-estimated-list": Case(
        ["evaluate-events", "{shared}/ref.tsv", "{case}/est.tsv", "--out", "{case}/est.tsv", "--overwrite"],
        ["{case}/est.tsv", "is also an input"], _copy_of_reference("est.tsv"),
    ),
    "detect-out-is-its-reference": Case(
        ["detect", RUN, AUDIO, "--plots", "{case}/pages", "--reference", "{case}/ref.tsv", "--out", "{case}/ref.tsv",
         "--overwrite"],
        ["{case}/ref.tsv", "is also an input"], _copy_of_reference("ref.tsv"),
    ),
    "export-out-is-its-checkpoint": Case(
        ["export", "{case}/run", "--format", "torchscript", "--out", "{case}/run/checkpoints/proposed2.pt",
         "--overwrite"],
        ["{case}/run/checkpoints/proposed2.pt", "is also an input"], _checkpoint_copied_as("proposed2"),
    ),
    "toy-over-a-users-png": Case(
        ["toy", "--tiny", "--out", "{case}/toy"], ["{case}/toy/toy.png", "not a picture thce drew", "--overwrite"],
        _users_png("toy", "toy.png"),
    ),
    "detect-plots-over-a-users-png": Case(
        ["detect", RUN, AUDIO, "--plots", "{case}/pages"], ["{case}/pages/clip.png", "not a picture thce drew"],
        _users_png("pages", "clip.png"),
    ),
    # issue 32: a checkpoint's recorded method is the one asked for
    "detect-checkpoint-of-another-method": Case(
        ["detect", "{case}/run", AUDIO, "--method", "baseline"],
        ["{case}/run/checkpoints/baseline.pt", "holds a proposed2 checkpoint", "not baseline"],
        _checkpoint_copied_as("baseline"),
    ),
    "export-checkpoint-of-another-method": Case(
        ["export", "{case}/run", "--method", "baseline", "--out", "{case}/model.onnx"],
        ["{case}/run/checkpoints/baseline.pt", "holds a proposed2 checkpoint", "not baseline"],
        _checkpoint_copied_as("baseline"),
    ),
    # issue 32: one clear line instead of a traceback or a misleading one
    "evaluate-negative-collar": Case(
        ["evaluate-events", "{shared}/ref.tsv", "{shared}/ref.tsv", "--collar-s", "-1"], ["--collar-s", "non-negative"]
    ),
    "evaluate-zero-segment": Case(
        ["evaluate-events", "{shared}/ref.tsv", "{shared}/ref.tsv", "--segment-s", "0"], ["--segment-s", "positive"]
    ),
    "evaluate-estimated-file-not-in-reference": Case(
        ["evaluate-events", "{shared}/ref.tsv", "{case}/est.tsv"], ["{case}/est.tsv", "other.wav is not in"],
        lambda case, shared: _file(case / "est.tsv", "filename\tonset\toffset\tevent_label\nother.wav\t0.5\t1\tdog\n"),
    ),
    "detect-on-a-run-without-a-network": Case(
        ["detect", "{case}/run", AUDIO], ["{case}/run", "without training a network", "logreg_stats"], _logreg_stats_run
    ),
    # issue 32: a run stopped by its data leaves nothing that blocks the corrected rerun (the folder is as before)
    "experiment-stopped-by-a-label-outside-the-classes": Case(
        ["experiment", "{case}/strict.toml", "--out", "{case}/run"], ["dog.wav", "unknown label 'cat'"],
        _bad_label_manifest,
    ),
    "detect-missing-method": Case(
        ["detect", RUN, AUDIO, "--method", "lmle"], ["checkpoints/lmle.pt", "this run has: proposed2"]
    ),
}
if not CUDA:
    CASES["experiment-set-device-cuda"] = Case(
        ["experiment", str(DEMO_CONFIG), "--out", "{case}/run", "--set", 'train.device="cuda"'],
        ["--set train.device 'cuda'", "available here: cpu"],
    )
    CASES["detect-device-cuda"] = Case(
        ["detect", RUN, AUDIO, "--device", "cuda", "--out", "{case}/ev.tsv"], ["--device 'cuda'", "available here: cpu"]
    )


def tree_state(root: Path) -> dict[str, str]:
    """Every path under ``root`` with what it is: a regular file's SHA-256, a link's target, a folder."""
    state = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            state[str(path)] = "link " + os.readlink(path)
        elif stat.S_ISREG(info.st_mode):
            state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            state[str(path)] = f"mode {stat.S_IFMT(info.st_mode):o}"
    return state


def _shared_inputs(shared: Path) -> None:
    stub_run(shared / "run", encoder="cnn", method="proposed2", duration_s=1.0, n_mels=32, second_pool_frames=10,
             cluster_class=(0, 0, 1, 2, 3))  # fmt: skip
    audio = (0.1 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32)
    sf.write(shared / "clip.wav", audio, 16000)
    for label in ("dog", "background"):
        (shared / "folder" / label).mkdir(parents=True)
        sf.write(shared / "folder" / label / f"{label}.wav", audio, 16000)
    _file(shared / "ref.tsv", "filename\tonset\toffset\tevent_label\nclip.wav\t0.5\t1.0\tdog\n")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Run every case once, concurrently; ``{name: (returncode, output, before, after)}``."""
    root = tmp_path_factory.mktemp("matrix")
    shared = root / "shared"
    _shared_inputs(shared)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    env.pop("RANK", None)
    jobs = {}
    for name, case in CASES.items():
        case_dir = root / name
        case_dir.mkdir()
        if case.setup is not None:
            case.setup(case_dir, shared)
        argv = [a.format(shared=shared, case=case_dir) for a in case.argv]
        jobs[name] = (case_dir, argv)
    before = {name: tree_state(case_dir) for name, (case_dir, _) in jobs.items()}
    shared_before = tree_state(shared)

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "thce", *argv], env=env, cwd=root, capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    with ThreadPoolExecutor(max_workers=4) as pool:
        done = {name: pool.submit(run, argv) for name, (_, argv) in jobs.items()}
        results = {name: future.result() for name, future in done.items()}
    assert tree_state(shared) == shared_before, "a case changed the shared inputs"
    return {
        name: (results[name].returncode, results[name].stdout + results[name].stderr, before[name],
               tree_state(jobs[name][0]), jobs[name][0], shared)
        for name in CASES
    }  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_usage_exits_2_with_one_line_and_changes_nothing(outcomes, name):
    code, output, before, after, case_dir, shared = outcomes[name]
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("thce: error: "), output
    for words in CASES[name].expect:
        assert words.format(case=case_dir, shared=shared) in lines[0], (words, lines[0])
    assert after == before


def test_make_demo_may_run_twice():
    """Item 2: the demo refuses to replace a finished run, so `make demo` says --overwrite (run twice, it redoes)."""
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "thce demo" in recipe and "--overwrite" in recipe


# ------------------------------------------------------------------------------ in-process: what succeeds


def test_detect_writes_through_a_fifo_and_keeps_it(tmp_path):
    """Item 1 end to end: ``thce detect --out PIPE`` (as ``--out /dev/null``) writes into it; the FIFO stays."""
    import threading

    from thce.cli import main

    _shared_inputs(tmp_path)
    fifo = tmp_path / "events"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    assert main(["-q", "detect", str(tmp_path / "run"), str(tmp_path / "clip.wav"), "--out", str(fifo)]) == 0
    reader.join(timeout=60)
    assert received and received[0].startswith("filename\tonset\toffset\tevent_label\tscore\n")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    # an event list of ours is replaced without --overwrite; a user's file only with it
    ours = tmp_path / "ev.tsv"
    assert main(["-q", "detect", str(tmp_path / "run"), str(tmp_path / "clip.wav"), "--out", str(ours)]) == 0
    assert main(["-q", "detect", str(tmp_path / "run"), str(tmp_path / "clip.wav"), "--out", str(ours)]) == 0
    mine = tmp_path / "mine.json"
    mine.write_text("[1, 2]")
    assert main(["-q", "detect", str(tmp_path / "run"), str(tmp_path / "clip.wav"), "--out", str(mine)]) == 2
    assert mine.read_text() == "[1, 2]"
    argv = ["-q", "detect", str(tmp_path / "run"), str(tmp_path / "clip.wav"), "--out", str(mine), "--overwrite"]
    assert main(argv) == 0 and '"settings"' in mine.read_text()


def test_overwrite_replaces_the_old_runs_outputs(tmp_path, monkeypatch):
    """Item 2: --overwrite starts afresh (no stale checkpoint of the old run is left for detect to pick up);
    stopped right after the run directory is prepared, so nothing trains."""
    import thce.experiment
    from thce.cli import main

    run = tmp_path / "run"
    _finished_run(tmp_path, tmp_path)
    _file(run / "checkpoints" / "lmle.pt", b"stale")
    _file(run / "cache" / "features.npy", b"kept")

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(thce.experiment, "prepare_data", stop)
    with pytest.raises(Stop):
        main(["-q", "experiment", str(DEMO_CONFIG), "--out", str(run), "--overwrite"])
    assert not (run / "results.json").exists() and not list((run / "checkpoints").glob("*.pt"))
    assert (run / "cache" / "features.npy").read_bytes() == b"kept"
    assert "seed" in (run / "config.toml").read_text()
    with pytest.raises(Stop):  # --resume continues what is there
        main(["-q", "experiment", str(DEMO_CONFIG), "--out", str(run), "--resume"])


def test_export_save_failure_names_the_problem(tmp_path, monkeypatch, capsys):
    """Item 5: a full disk while the ONNX file is saved is reported as such (not "try --format torchscript"),
    and no cleanup error hides it; nothing is left at --out."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from thce.cli import main

    class Program:
        def save(self, destination):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", lambda *args, **kwargs: Program())
    _shared_inputs(tmp_path)
    out = tmp_path / "model.onnx"
    assert main(["export", str(tmp_path / "run"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no space left on device" in err and "torchscript" not in err and "Traceback" not in err
    assert not out.exists() and not out.with_name("model.onnx.json").exists()
