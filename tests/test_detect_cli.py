"""`thce detect` over folders and globs, --skip-bad, saved score tables and `thce events` (issue 16 items 2, 3)."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import soundfile as sf

from tests.stub_runs import stub_run
from thce.cli import main
from thce.data.manifest import read_skipped
from thce.detection import DetectConfig, DetectionOutputs, EventRules, run_detection
from thce.detection.events import read_event_list
from thce.detection.inputs import expand_inputs
from thce.detection.tables import events_from_tables, parse_thresholds, read_table, write_table
from thce.errors import ConfigError, DataError

SR = 16000


def tiny_run(root):
    return stub_run(root, encoder="cnn", method="proposed2", duration_s=2.0, n_mels=32, second_pool_frames=20,
                    cluster_class=(0, 0, 1, 2, 3, 3))  # fmt: skip


def noise(path, seconds, seed=0):
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(int(seconds * SR))).astype(np.float32), SR, subtype="PCM_16")
    return path


@pytest.fixture()
def folder(tmp_path):
    audio = tmp_path / "audio"
    (audio / "sub").mkdir(parents=True)
    noise(audio / "a.wav", 6.0, 1)
    noise(audio / "sub" / "b.flac", 5.0, 2)
    (audio / "notes.txt").write_text("not audio")
    (audio / "sub" / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return audio


def test_inputs_files_folders_and_globs(folder):
    everything = [str(folder / "a.wav"), str(folder / "sub" / "b.flac"), str(folder / "sub" / "bad.wav")]
    assert expand_inputs([folder]) == everything
    assert expand_inputs([str(folder / "**" / "*.flac")]) == [str(folder / "sub" / "b.flac")]
    assert expand_inputs([folder / "a.wav", folder]) == everything  # duplicates kept once
    with pytest.raises(ConfigError, match="matches no file"):
        expand_inputs([str(folder / "*.mp3")])
    (folder / "empty").mkdir()
    with pytest.raises(ConfigError, match="no audio files"):
        expand_inputs([folder / "empty"])


def test_score_tables_round_trip_and_rethreshold(tmp_path):
    edges = np.array([0.0, 0.5, 1.0, 1.5, 1.7])
    curve = np.array([[0.1, 0.9], [0.7, 0.9], [0.8, 0.2], [0.1, 0.6]], dtype=np.float32)
    write_table(tmp_path / "rec.tsv", edges, curve, ["dog", "baby"])
    assert (tmp_path / "rec.tsv").read_text().splitlines()[0] == "onset\toffset\tdog\tbaby"
    e, c, classes = read_table(tmp_path / "rec.tsv")
    assert np.allclose(e, edges) and np.allclose(c, curve) and classes == ("dog", "baby")
    result = events_from_tables(tmp_path, "0.5")
    assert [(ev.label, ev.onset_s, ev.offset_s) for ev in result.events] == [
        ("baby", 0.0, 1.0), ("dog", 0.5, 1.5), ("baby", 1.5, 1.7)]
    result = events_from_tables(tmp_path / "rec.tsv", "dog=0.75,baby=0.95")
    assert [(ev.label, ev.onset_s, ev.offset_s) for ev in result.events] == [("dog", 1.0, 1.5)]
    with pytest.raises(ConfigError, match="missing: baby"):
        parse_thresholds("dog=0.5", ["dog", "baby"])
    (tmp_path / "broken.tsv").write_text("onset\toffset\tdog\n0\t1\t0.5\n2\t3\t0.5\n")
    with pytest.raises(DataError, match="contiguous"):
        read_table(tmp_path / "broken.tsv")


def test_detect_folder_skip_bad_scores_and_events(tmp_path, folder, capsys):
    run = tiny_run(tmp_path / "run")
    out = tmp_path / "events.json"
    # default: the first bad file stops the batch, before any is scored
    assert main(["-q", "detect", str(run), str(folder), "--out", str(out)]) == 2
    assert "bad.wav" in capsys.readouterr().err and not out.exists()
    assert main(["-q", "detect", str(run), str(folder), "--skip-bad", "--hop-s", "0.5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Skipped 1 file(s)" in printed and "bad.wav" in printed
    payload = json.loads(out.read_text())
    assert [f["file"] for f in payload["files"]] == [str(folder / "a.wav"), str(folder / "sub" / "b.flac")]
    assert payload["skipped"][0]["file"] == str(folder / "sub" / "bad.wav") and payload["skipped"][0]["reason"]
    skip_list = tmp_path / "events.skipped.csv"  # the format of every list of skipped files thce writes
    (skipped,) = read_skipped(skip_list)
    assert skipped.path == str(folder / "sub" / "bad.wav") and skipped.problem and skipped.source == "thce detect"
    scores = tmp_path / "events.scores"
    assert sorted(p.name for p in scores.glob("*.tsv")) == ["a.tsv", "b.tsv"]
    edges, curve, classes = read_table(scores / "a.tsv")
    assert edges[0] == 0.0 and edges[-1] == pytest.approx(6.0) and np.allclose(np.diff(edges), 0.5)
    assert curve.shape == (12, len(classes))
    # the saved scores, thresholded as detect did, give detect's events, named as detect named the files
    thresholds = ",".join(f"{c}={payload['thresholds'][c]!r}" for c in classes)
    again = tmp_path / "again.json"
    assert main(["events", str(scores), "--threshold", thresholds, "--out", str(again)]) == 0
    key = lambda e: (e["file"], e["label"], e["onset_s"], e["offset_s"])  # noqa: E731
    assert sorted(map(key, json.loads(again.read_text())["events"])) == sorted(map(key, payload["events"]))
    for e in payload["events"]:
        assert e["offset_s"] - e["onset_s"] >= 0.5 - 1e-9
    # a lower threshold gives at least as much event time
    low = tmp_path / "low.tsv"
    assert main(["events", str(scores), "--threshold", "0.0", "--out", str(low)]) == 0
    assert len(read_event_list(low).events) == len(classes) * 2  # every class, the whole of each file
    capsys.readouterr()
    # the tables are not replaced by a file of another kind without --overwrite
    (scores / "a.tsv").write_text("my notes\n")
    assert main(["-q", "detect", str(run), str(folder / "a.wav"), "--out", str(out)]) == 2
    assert "not overwritten" in capsys.readouterr().err


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_library_entry_point_writes_what_the_command_writes(tmp_path, folder, capsys):
    run = tiny_run(tmp_path / "run")
    reference = tmp_path / "ref.txt"
    reference.write_text("a.wav\t1.0\t2.5\tdog\n")
    cli, lib = tmp_path / "cli", tmp_path / "lib"  # the same depth: the pages link the audio by relative paths
    assert main(["-q", "detect", str(run), str(folder), "--skip-bad", "--hop-s", "0.5", "--min-gap-s", "1",
                 "--plots", str(cli / "pages"), "--reference", str(reference), "--out", str(cli / "ev.json")]) == 0
    printed = capsys.readouterr().out
    outputs = DetectionOutputs.beside(lib / "ev.json", skip_bad=True, plots=lib / "pages", reference=reference)
    config = DetectConfig(hop_s=0.5, events=EventRules(min_gap_s=1.0))
    found = run_detection(run, [folder], outputs=outputs, config=config, skip_bad=True)
    written = _files(lib)
    assert sorted(written) == ["ev.json", "ev.scores/a.tsv", "ev.scores/audio_files.json", "ev.scores/b.tsv",
                               "ev.skipped.csv", "pages/a.png", "pages/b.png", "pages/index.html"]  # fmt: skip
    assert written == _files(cli)
    assert printed == "\n".join([*found.summary(), f"Events: {cli / 'ev.json'}"]).replace(str(lib), str(cli)) + "\n"
    assert "frame(s), min gap 1 s; thresholds" in printed  # the rules in use are said (no min event: it is 0)
    # without --out: the event list on stdout, the summary on stderr; nothing written beside it
    capsys.readouterr()  # the library's log line about bad.wav
    assert main(["-q", "detect", str(run), str(folder / "a.wav"), "--hop-s", "0.5"]) == 0
    shown = capsys.readouterr()
    stream = io.StringIO()
    found = run_detection(run, [folder / "a.wav"], outputs=DetectionOutputs.beside(stream), config=DetectConfig(0.5))
    assert stream.getvalue() == shown.out and shown.err == "\n".join(found.summary()) + "\n"
    assert found.scores is None and found.skip_list is None and found.pages is None


def test_events_command_errors(tmp_path, capsys):
    assert main(["events", str(tmp_path / "missing"), "--threshold", "0.5"]) == 2
    assert "scores not found" in capsys.readouterr().err
    assert main(["events", str(tmp_path), "--threshold", "0.5"]) == 2
    assert "no score tables" in capsys.readouterr().err


def _chromium():
    import shutil

    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def test_detect_folder_with_a_bad_file_writes_pages(tmp_path, folder, capsys):
    run = tiny_run(tmp_path / "run")
    reference = tmp_path / "ref.txt"
    reference.write_text("a.wav\t1.0\t2.5\tdog\n")
    plots, out = tmp_path / "pages", tmp_path / "ev.tsv"
    assert main(["-q", "detect", str(run), str(folder), "--skip-bad", "--hop-s", "0.5", "--plots", str(plots),
                 "--reference", str(reference), "--out", str(out)]) == 0  # fmt: skip
    assert "Pages:" in capsys.readouterr().out
    assert sorted(p.name for p in plots.iterdir()) == ["a.png", "b.png", "index.html"]
    assert (plots / "a.png").read_bytes()[:4] == b"\x89PNG"
    page = (plots / "index.html").read_text()
    assert page.count('<section class="file"') == 2 and page.count("<audio controls") == 2
    assert 'src="../audio/a.wav"' in page and 'id="skipped"' in page and "bad.wav" in page
    assert page.index("1 file skipped") < page.index('<section class="file"')  # counted at the top
    # the reference lists a.wav only: its event F and the dog event (hit or missed); b.flac "not in the reference"
    assert 'id="total-f">' in page and "not in the reference" in page
    assert re.search(r'<tr class="(hit|missed)"><td class="mark l">[^<]+</td><td class="l">dog</td>', page)
    assert (tmp_path / "ev.scores" / "a.tsv").exists() and (tmp_path / "ev.skipped.csv").exists()
    # a user's file in the way is not replaced
    (plots / "index.html").write_text("<html>my page</html>")
    assert main(["-q", "detect", str(run), str(folder / "a.wav"), "--plots", str(plots), "--out", str(out)]) == 2
    assert "not a thce detection page" in capsys.readouterr().err
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium here: the page was not opened in a headless browser")
    import subprocess

    (plots / "index.html").write_text(page)
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", (plots / "index.html").as_uri()],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count('<section class="file"') == 2 and "<audio" in done.stdout


class _NotATensor:
    """A class a pickled checkpoint of another program may hold (refused by ``weights_only``)."""


def _damaged_checkpoints(good: bytes, folder):
    """``{case: checkpoint path}``: a good checkpoint cut short, another program's pickle, a tensor, one lacking a
    key of its ``meta`` and one whose validation scores do not fit its classes."""
    import copy
    import io

    import torch

    payload = torch.load(io.BytesIO(good), weights_only=True)
    no_scores, bad_scores = copy.deepcopy(payload), copy.deepcopy(payload)
    del no_scores["meta"]["val_scores"]
    bad_scores["meta"]["val_scores"] = [0.1, 0.2, 0.3, 0.4, 0.5]
    cases = {"truncated": good[: len(good) // 2], "pickle": {"weights": _NotATensor()}, "tensor": torch.zeros(3),
             "no-val-scores": no_scores, "bad-val-scores": bad_scores}  # fmt: skip
    paths = {}
    for name, content in cases.items():
        path = folder / name / "checkpoints" / "proposed2.pt"
        path.parent.mkdir(parents=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path)
        paths[name] = path
    return paths


def test_damaged_checkpoints_give_one_line_naming_the_file(tmp_path, folder, capsys):
    run = tiny_run(tmp_path / "run")
    good = (run / "checkpoints" / "proposed2.pt").read_bytes()
    for name, path in _damaged_checkpoints(good, tmp_path / "damaged").items():
        assert main(["-q", "detect", str(path.parents[1]), str(folder / "a.wav")]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(f"thce: error: {path}: not a thce checkpoint") and err.count("\n") == 1, (name, err)
