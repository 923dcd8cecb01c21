"""Bad input and bad usage on the command line, run as a user runs it (``python -m thce ...`` in a subprocess): exit
code 2, one line naming the file and the problem, no traceback, every pre-existing file byte-identical. Also the
conventions of issue 14 (items 7-12, 14-16): --version, -q/-v after the subcommand, --set errors, plurals, config
paths relative to the config's folder, DET figures."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.stub_runs import stub_run
from thce import __version__

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
SR = 16000


def thce(*args: str | os.PathLike, cwd: Path | None = None, pythonpath: Path = SRC) -> subprocess.CompletedProcess:
    """``python -m thce ARGS`` with this checkout's sources first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(pythonpath), os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "thce", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


class Snapshot(dict):
    """``{path: SHA-256}`` of every file under ``root`` (symbolic links by their target text)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        for path in sorted(root.rglob("*")):
            if path.is_symlink():
                self[path] = "link:" + os.readlink(path)
            elif path.is_file():
                self[path] = hashlib.sha256(path.read_bytes()).hexdigest()


snapshot = Snapshot


def assert_refused(done: subprocess.CompletedProcess, before: Snapshot, *needles: str) -> str:
    """Exit 2, one line on stderr holding every needle, no traceback, and under ``before.root`` every file as it
    was, none added. Returns the line."""
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == 2, output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert Snapshot(before.root) == before
    return lines[0]


def noise(path: Path, seconds: float = 1.0, *, peak: float = 0.1, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.random.default_rng(seed).uniform(-peak, peak, round(seconds * SR)).astype(np.float32)
    sf.write(path, samples, SR, subtype="PCM_16")
    return path


# ------------------------------------------------------------------------------------------ 7: evaluate-events

REFERENCE = "a.wav\t1.000\t2.000\tdog\nb.wav\t3.000\t4.000\tgun\nc.wav\n"


@pytest.fixture
def lists(tmp_path: Path) -> Path:
    (tmp_path / "ref.tsv").write_text(REFERENCE)
    shutil.copy(SRC / "thce" / "configs" / "demo.toml", tmp_path / "demo.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("estimated", "needles"),
    [
        ("demo.toml", ["demo.toml:4: not an event list line", "'seed = 0'"]),  # was scored as "36 files"
        ("a.wav 1.0 2.0 dog\n", ["est.tsv:1: not an event list line"]),  # spaces, not tabs
        ("a.wav\tsoon\t2.0\tdog\n", ["est.tsv:1: onset/offset must be numbers"]),
        ("a.wav\t3.0\t2.0\tdog\n", ["est.tsv:1: expected 0 <= onset <= offset"]),
        ("a.wav\t1.0\t2.0\n", ["est.tsv:1: expected filename<TAB>onset<TAB>offset<TAB>event_label"]),
        ("\n\n", ["est.tsv: no events and no files: not an event list"]),
        ("x.wav\t1.0\t2.0\tdog\ny.wav\n", ["est.tsv: none of its 2 files is in", "ref.tsv", "a.wav, b.wav, c.wav"]),
    ],
)
def test_evaluate_events_refuses_what_is_not_an_event_list(lists, estimated, needles):
    est = lists / estimated if estimated.endswith(".toml") else lists / "est.tsv"
    if not estimated.endswith(".toml"):
        est.write_text(estimated)
    before = snapshot(lists)
    out = lists / "metrics.json"
    assert_refused(thce("evaluate-events", lists / "ref.tsv", est, "--out", out), before, *needles)
    assert not out.exists()


def test_evaluate_events_reference_that_is_no_event_list(lists):
    before = snapshot(lists)
    assert_refused(thce("evaluate-events", lists / "demo.toml", lists / "ref.tsv"), before, "demo.toml:4:")


def test_evaluate_events_names_files_and_labels_found_in_one_list_only(lists):
    (lists / "est.tsv").write_text("a.wav\t1.1\t2.0\tdog\nd.wav\t1.0\t2.0\tgunshot\n")
    out = lists / "metrics.json"
    done = thce("evaluate-events", lists / "ref.tsv", lists / "est.tsv", "--out", out)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "2 files only in" in done.stderr and "b.wav, c.wav" in done.stderr  # warnings
    assert "1 file only in" in done.stderr and "d.wav" in done.stderr
    assert "labels only in" in done.stderr and "gunshot" in done.stderr
    assert "2 files only in the reference (events there count as missed): b.wav, c.wav." in done.stdout
    assert "1 file only in the estimated list (events there count as insertions): d.wav." in done.stdout
    assert "4 files" in done.stdout.splitlines()[0]
    result = json.loads(out.read_text())
    assert result["files_only_in_reference"] == ["b.wav", "c.wav"]
    assert result["files_only_in_estimated"] == ["d.wav"]


# ------------------------------------------------------------------------------------------ 8, 9: imports


def test_import_folder_without_audio_is_an_error(tmp_path):
    root = tmp_path / "root"
    (root / "dog").mkdir(parents=True)
    (root / "dog" / "notes.txt").write_text("no audio here")
    before = snapshot(tmp_path)
    out = tmp_path / "m.csv"
    assert_refused(thce("data", "import", "folder", root, "--out", out), before, f"{root}: no clips to import")
    assert not out.exists() and not (tmp_path / "m.skipped.csv").exists()


def test_import_audioset_of_a_csv_that_is_no_segment_list_is_an_error(tmp_path):
    noise(tmp_path / "clips" / "abc.wav")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\nclips/abc.wav,dog\n")
    before = snapshot(tmp_path)
    out = tmp_path / "m.csv"
    done = thce("data", "import", "audioset", manifest, "--audio-dir", tmp_path / "clips", "--out", out)
    assert_refused(done, before, f"{manifest}: not an AudioSet segment list", "manifest.csv:1")
    segments = tmp_path / "segments.csv"
    segments.write_text('# YTID, start_seconds, end_seconds, positive_labels\nxyz, 30.000, 40.000, "/m/0bt9lr"\n')
    before = snapshot(tmp_path)
    done = thce("data", "import", "audioset", segments, "--audio-dir", tmp_path / "clips", "--out", out)
    assert_refused(done, before, f"{tmp_path / 'clips'}: none of the 1 segments listed has a file here")


def test_import_folder_strict_checks_every_file_and_keeps_link_names(tmp_path):
    root = tmp_path / "root"
    noise(root / "gun" / "a.wav")
    noise(root / "background" / "b.wav", seed=1)
    (root / "gun" / "dangling.wav").symlink_to(Path("..") / ".." / "data" / "nowhere.wav")
    out = tmp_path / "m.csv"
    done = thce("data", "import", "folder", root, "--out", out)
    assert done.returncode == 0, done.stderr
    assert f"{out}: 2 clips (background 1, gun 1)" in done.stdout
    skipped = (tmp_path / "m.skipped.csv").read_text()
    assert "root/gun/dangling.wav" in skipped and "broken symbolic link" in skipped
    assert "nowhere.wav,audio" not in skipped  # listed under the user's name, not the target's
    (root / "gun" / "bad.wav").write_text("not audio at all")
    before = snapshot(tmp_path)
    done = thce("data", "import", "folder", root, "--out", out, "--strict")
    assert_refused(done, before, f"{root}: 2 bad clips", "bad.wav: cannot read as audio", "dangling.wav")


def test_import_keeps_the_name_of_a_symlinked_clip(tmp_path):
    target = noise(tmp_path / "store" / "take7.wav")
    (tmp_path / "root" / "dog").mkdir(parents=True)
    (tmp_path / "root" / "dog" / "bark.wav").symlink_to(target)
    done = thce("data", "import", "folder", tmp_path / "root", "--out", tmp_path / "m.csv")
    assert done.returncode == 0, done.stderr
    assert "1 clip (dog 1)" in done.stdout  # one clip, not "1 clips"
    assert (tmp_path / "m.csv").read_text().splitlines()[1].startswith("root/dog/bark.wav,dog")


def test_detect_reports_no_events_in_digital_silence(tmp_path):
    run = stub_run(tmp_path / "run", encoder="cnn", method="proposed2", duration_s=2.0, second_pool_frames=20,
                   cluster_class=(0, 0, 1, 2, 3, 3))  # fmt: skip
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(6 * SR, dtype=np.float32), SR, subtype="PCM_16")
    loud = noise(tmp_path / "loud.wav", 6.0)
    out = tmp_path / "events.tsv"
    done = thce("detect", run, silent, loud, "--threshold", "0", "--out", out)  # threshold 0: every window fires
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "digital silence" in line]
    assert len(warnings) == 1 and str(silent) in warnings[0] and "throughout" in warnings[0]
    rows = out.read_text().splitlines()[1:]
    assert [r for r in rows if r.startswith(str(silent))] == [str(silent)]  # listed, without events
    assert any(r.startswith(f"{loud}\t") for r in rows)  # the model fires everywhere else


# ------------------------------------------------------------------------------------------ 10, 11, 12


def test_version_inside_and_outside_a_git_checkout(tmp_path):
    done = thce("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith(f"thce {__version__} (torch "), done.stderr
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert f"git {head.stdout.strip()}" in done.stdout
    copy = tmp_path / "site"
    shutil.copytree(SRC / "thce", copy / "thce", ignore=shutil.ignore_patterns("__pycache__"))
    done = thce("--version", cwd=tmp_path, pythonpath=copy)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout.strip().startswith(f"thce {__version__} (torch ") and "git" not in done.stdout


def test_provenance_of_a_run():
    from thce.machine import run_provenance
    from thce.report import provenance_line

    record = run_provenance()
    assert record["thce"] == __version__ and record["torch"] and "cpu" in record["machine"]
    assert "load_average" not in record["machine"]  # a resumed run's results equal an uninterrupted one's
    line = provenance_line(record)
    assert line.startswith(f"- **software and machine**: thce {__version__}") and "torch" in line


@pytest.mark.parametrize("flags", [["-q"], ["-v", "-q"], ["--quiet"]])
def test_output_flags_after_the_subcommand(tmp_path, flags):
    from thce.cli import main

    assert main(["experiment", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "run"), *flags]) == 2
    train = logging.getLogger("thce.training")
    assert not train.isEnabledFor(logging.INFO) or "-v" in flags  # -q silences the per-epoch lines
    assert main(["-q", "experiment", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "run")]) == 2
    assert not train.isEnabledFor(logging.INFO)
    assert main(["experiment", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "run")]) == 2
    assert train.isEnabledFor(logging.INFO)  # the heartbeat of long runs, by default


def test_quiet_after_the_subcommand_on_the_command_line(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[embedding]\nalpha = -1.0\n")
    before = snapshot(tmp_path)
    done = thce("experiment", config, "--out", tmp_path / "run", "-q")
    assert_refused(done, before, f"{config}: embedding.alpha: must be > 0")


def test_set_errors_name_the_flag(tmp_path):
    config = tmp_path / "cfg.toml"
    config.write_text("seed = 1\n")
    before = snapshot(tmp_path)
    done = thce("experiment", config, "--out", tmp_path / "run", "--set", "embedding.alpha=x")
    line = assert_refused(done, before, "thce: error: --set embedding.alpha=x: expected a number, got 'x'")
    assert str(config) not in line


def test_per_epoch_lines_of_stages_without_iterations_have_no_empty_it():
    from thce.training.metrics_log import MetricsLog

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("thce.training.metrics_log")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log = MetricsLog()
        log.write(method="baseline", stage="train", epoch=3, train_loss=0.5, val_loss=0.25)
        log.write(method="proposed1", stage="embedding", iteration=2, epoch=1, train_loss=0.5, val_loss=0.25)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert seen[0].startswith("baseline/train epoch=3 ") and "it=" not in seen[0]
    assert seen[1].startswith("proposed1/embedding it=2 epoch=1 ")


# ------------------------------------------------------------------------------------------ 14: config paths


def test_config_paths_are_relative_to_the_config_folder_and_set_paths_to_the_cwd(tmp_path, monkeypatch):
    from thce.config import load_config

    folder = tmp_path / "project" / "configs"
    folder.mkdir(parents=True)
    config = folder / "c.toml"
    config.write_text('[data]\nsource = "manifest"\nmanifest = "../data/m.csv"\ncache_dir = "cache"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_config(Path("..") / "project" / "configs" / "c.toml")
    assert loaded.data.manifest == str(tmp_path / "project" / "data" / "m.csv")
    assert loaded.data.cache_dir == str(folder / "cache")
    overridden = load_config(config, ["data.manifest=mine.csv", "data.cache_dir=/abs/cache"])
    assert overridden.data.manifest == str(elsewhere / "mine.csv") and overridden.data.cache_dir == "/abs/cache"


def test_a_relative_manifest_is_looked_for_beside_the_config(tmp_path):
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "c.toml"
    config.write_text('[data]\nsource = "manifest"\nmanifest = "m.csv"\n')
    (tmp_path / "m.csv").write_text("path,label\n")  # in the cwd: not the one the config means
    done = thce("experiment", "configs/c.toml", "--out", "run", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{tmp_path / 'configs' / 'm.csv'}: manifest not found" in done.stderr


# ------------------------------------------------------------------------------------------ 15, 16: DET figures


def _results(seed: int = 0) -> dict:
    from thce.metrics import per_class_det_points, per_class_eer

    rng = np.random.default_rng(seed)
    classes = ["dog", "baby", "gun"]
    index = np.repeat(np.arange(4), 15)
    methods = {}
    for method in ("baseline", "proposed2"):
        scores = rng.random((60, 3)) + 0.8 * (index[:, None] == np.arange(3)[None, :])
        methods[method] = {"eer": per_class_eer(scores=scores, class_index=index, classes=classes),
                           "det": per_class_det_points(scores=scores, class_index=index, classes=classes),
                           "scores": scores}  # fmt: skip
    counts = {"train": {"dog": 40, "baby": 40, "gun": 40, "background": 40}, **{
        "test": {"dog": 15, "baby": 15, "gun": 15, "background": 15}}}  # fmt: skip
    return {"classes": classes, "methods": methods, "data": {"counts": counts}, "class_index": index}


def test_det_png_nothing_clipped_edges_labelled_counts_shown(tmp_path):
    from matplotlib.image import imread

    from thce.figures import det_figure, plot_det

    results = _results()
    plot_det(results, tmp_path / "det.png")
    dark = (imread(tmp_path / "det.png")[..., :3] < 0.9).any(axis=2)
    assert not dark[:3].any() and not dark[-3:].any() and not dark[:, :3].any() and not dark[:, -3:].any()
    fig = det_figure(results)
    for ax in fig.axes:
        assert "(n+ = 15, n- = 45)" in ax.get_title()
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels[0] == "0" and labels[-1] == "100" and "0.1" in labels and "99.9" in labels
        ticks = dict(zip(labels, ax.get_xticks()))
        curve = ax.get_lines()[1]  # after the diagonal: B's curve, whose rates reach 0 and 100 %
        x = curve.get_xdata()
        assert x.min() == pytest.approx(ticks["0"]) and x.min() < ticks["0.1"]


def test_seeds_figure_draws_every_seed_and_the_pooled_curve(tmp_path):
    from thce.metrics import per_class_det_points
    from thce.figures import det_figure, seeds_det_summary
    from thce.report import write_report
    from thce.stats import ScoredTestSet

    runs = [_results(seed) for seed in (0, 1, 2)]
    sets = [ScoredTestSet(class_index=r["class_index"], scores={m: e["scores"] for m, e in r["methods"].items()},
                          classes=("dog", "baby", "gun")) for r in runs]  # fmt: skip
    curves = seeds_det_summary(runs, sets)
    pooled = np.concatenate([r["methods"]["baseline"]["scores"] for r in runs])
    index = np.concatenate([r["class_index"] for r in runs])
    assert curves["det_pooled"]["baseline"] == per_class_det_points(scores=pooled, class_index=index,
                                                                    classes=["dog", "baby", "gun"])  # fmt: skip
    assert curves["det_per_seed"]["baseline"] == [r["methods"]["baseline"]["det"] for r in runs]
    assert curves["test_counts"]["positives"]["dog"] == 45 and curves["test_counts"]["negatives"]["dog"] == 135
    summary = {
        "classes": ["dog", "baby", "gun"],
        "methods": {m: {"eer": {"dog": 0.2, "baby": 0.2, "gun": 0.2, "overall": 0.2}, "det": curves["det_pooled"][m]}
                    for m in ("baseline", "proposed2")},
        "data": runs[0]["data"],
        "seeds": {"seeds": [0, 1, 2], "eer": {m: {c: {"mean": 0.2, "std": 0.01} for c in ("dog", "baby", "gun",
                                                 "overall")} for m in ("baseline", "proposed2")}, **curves},
    }  # fmt: skip
    fig = det_figure(summary)
    ax = fig.axes[0]
    assert "(n+ = 45, n- = 135, 3 seeds pooled)" in ax.get_title()
    thin = [line for line in ax.get_lines()[1:] if line.get_linewidth() < 1.0]
    assert len(thin) == 6  # 3 seeds x 2 methods
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    pooled_eer = 100 * curves["eer_pooled"]["baseline"]["dog"]
    assert legend[0] == f"B (mean EER 20.0%, pooled {pooled_eer:.1f}%)"
    report = write_report(tmp_path, summary)["report"].read_text()
    assert "Thin lines: each of the 3 seeds' curves; thick: the curve of all seeds' test scores pooled" in report
