"""Strong-label readers on small fixtures in each format: DCASE 2017 Task 2 (event lists, mixture recipes) and
AudioSet's strong-label TSV, through the library and `thce data import`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from thce.cli import main
from thce.data.audioset import parse_strong_segments, read_audioset_strong
from thce.data.dcase2017 import read_dcase2017_task2
from thce.data.manifest import read_manifest, read_skipped
from thce.data.strong import StrongEvent, read_strong_labels
from thce.errors import ConfigError, DataError


def wav(path: Path, seconds: float = 0.2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(16000 * seconds), np.float32), 16000)
    return path


def recipe(name: str, onset: float | None = None, length: float = 1.5, cls: str = "babycry",
           bg: str = "audio/b001_0_30.wav") -> dict:  # fmt: skip
    """One entry as the DCASE 2017 generator writes it (a subset of its keys plus the ones read)."""
    item = {"bg_classname": "park", "bg_path": bg, "event_present": onset is not None,
            "mixture_audio_filename": name, "ebr": 6.0 if onset is not None else float("-inf"),
            "annotation_string": name}  # fmt: skip
    if onset is not None:
        item.update({"event_class": cls, "event_path": f"{cls}/123.wav", "event_start_in_mixture_seconds": onset,
                     "event_length_seconds": length, "scaling_factor": 0.5, "segment_start_seconds": 0.0,
                     "segment_end_seconds": length})  # fmt: skip
    return item


@pytest.fixture
def dcase(tmp_path) -> Path:
    """devtrain: babycry recipes (3 mixtures: 2 on one background recording) + audio; devtest: a gunshot event
    list + audio; evaltest: a glassbreak event list + audio, one mixture's audio missing."""
    root = tmp_path / "data" / "mixture_data"
    train = root / "devtrain" / "20b2"
    items = [recipe("mixture_devtrain_babycry_000_aa.wav", 3.25), recipe("mixture_devtrain_babycry_001_bb.wav"),
             recipe("mixture_devtrain_babycry_002_cc.wav", 10.0, 2.0, bg="audio/b002_30_60.wav"),
             recipe("mixture_devtrain_babycry_003_dd.wav", 1.0, bg="audio/b001_60_90.wav")]  # fmt: skip
    (train / "meta").mkdir(parents=True)
    (train / "meta" / "mixture_recipes_devtrain_babycry.yaml").write_text(yaml.dump(items, default_flow_style=False))
    (train / "meta" / "event_list_devtrain_babycry.csv").write_text("ignored\tbecause\tthe recipe\twins\n")
    for item in items:
        wav(train / "audio" / item["mixture_audio_filename"])
    test = root / "devtest" / "1f3e"
    (test / "meta").mkdir(parents=True)
    (test / "meta" / "event_list_devtest_gunshot.csv").write_text(
        "mixture_devtest_gunshot_000_ee.wav\t12.5\t13.25\tgunshot\nmixture_devtest_gunshot_001_ff.wav\n"
    )
    wav(test / "audio" / "mixture_devtest_gunshot_000_ee.wav")
    wav(test / "audio" / "mixture_devtest_gunshot_001_ff.wav")
    evaluation = tmp_path / "eval"
    (evaluation / "meta").mkdir(parents=True)
    (evaluation / "meta" / "event_list_evaltest_glassbreak.csv").write_text(
        "mixture_evaltest_glassbreak_000_gg.wav\t0.5\t1.0\tglassbreak\nmixture_evaltest_glassbreak_001_hh.wav\n"
    )
    wav(evaluation / "audio" / "mixture_evaltest_glassbreak_000_gg.wav")
    return tmp_path


def test_dcase2017_recipes_and_event_lists(dcase):
    result = read_dcase2017_task2([dcase / "data", dcase / "eval"], devtest_split="val")
    rows = {row.path.name: row for row in result.rows}
    assert len(rows) == 7
    a = rows["mixture_devtrain_babycry_000_aa.wav"]
    assert (a.label, a.split, a.group) == ("babycry", "train", "bg:b001")
    assert result.strong[a.path] == (StrongEvent(3.25, 4.75, "babycry"),)
    assert (a.extra["ebr_db"], a.extra["event_file"], a.extra["dcase_set"]) == ("6", "babycry/123.wav", "devtrain")
    b = rows["mixture_devtrain_babycry_001_bb.wav"]
    assert (b.label, b.group, result.strong[b.path], b.extra["onset_s"]) == ("", "bg:b001", (), "")
    assert rows["mixture_devtrain_babycry_002_cc.wav"].group == "bg:b002"  # segments of one recording: one group
    assert rows["mixture_devtrain_babycry_003_dd.wav"].group == "bg:b001"
    g = rows["mixture_devtest_gunshot_000_ee.wav"]
    assert (g.label, g.split, g.group) == ("gunshot", "val", "mixture_devtest_gunshot_000_ee")
    assert result.strong[g.path] == (StrongEvent(12.5, 13.25, "gunshot"),)
    assert rows["mixture_devtest_gunshot_001_ff.wav"].label == ""
    e = rows["mixture_evaltest_glassbreak_000_gg.wav"]
    assert (e.label, e.split) == ("glassbreak", "test")
    assert [(Path(s.path).name, s.problem) for s in result.skipped] == [
        ("mixture_evaltest_glassbreak_001_hh.wav", "audio file not found")
    ]
    assert result.counts["no_audio"] == 1 and result.counts["events"] == 5
    with pytest.raises(DataError, match="audio file not found"):
        read_dcase2017_task2([dcase / "data", dcase / "eval"], strict=True)


def test_dcase2017_label_map_drops_unmapped_classes(dcase):
    result = read_dcase2017_task2([dcase / "data", dcase / "eval"], label_map={"baby": ["babycry"]})
    labels = {row.path.name: row.label for row in result.rows}
    assert labels["mixture_devtrain_babycry_000_aa.wav"] == "baby"
    assert labels["mixture_devtest_gunshot_000_ee.wav"] == ""  # an unmapped class's event is dropped
    gun = next(r for r in result.rows if r.path.name == "mixture_devtest_gunshot_000_ee.wav")
    assert result.strong[gun.path] == () and gun.split == "test"
    assert result.counts["dropped_events"] == 2


def test_dcase2017_bad_inputs(dcase, tmp_path):
    with pytest.raises(DataError, match="no DCASE 2017 Task 2 meta files"):
        read_dcase2017_task2([tmp_path / "nothing"])
    with pytest.raises(ConfigError, match="devtest split"):
        read_dcase2017_task2([dcase / "data"], devtest_split="dev")
    meta = dcase / "data" / "mixture_data" / "devtrain" / "20b2" / "meta" / "mixture_recipes_devtrain_babycry.yaml"
    text = meta.read_text()
    # an entry without its times: skipped, naming file and line; old generators' python tags read as plain values
    broken = text.replace("event_start_in_mixture_seconds: 3.25", "event_start_in_mixture_seconds: soon")
    meta.write_text(broken.replace("event_class: babycry", "event_class: !!python/unicode 'babycry'"))
    result = read_dcase2017_task2([dcase / "data"])
    (bad,) = result.skipped
    assert bad.source.startswith("mixture_recipes_devtrain_babycry.yaml:") and "event_start_in_mixture" in bad.problem
    assert {row.label for row in result.rows} == {"babycry", "gunshot", ""}
    meta.write_text("- a: [1\n")
    with pytest.raises(DataError, match=r"mixture_recipes_devtrain_babycry.yaml:\d+: not a YAML mixture recipe"):
        read_dcase2017_task2([dcase / "data"])
    meta.write_text("just text\n")
    with pytest.raises(DataError, match="expected a YAML list of mixture recipes"):
        read_dcase2017_task2([dcase / "data"])
    meta.unlink()
    listed = dcase / "data" / "mixture_data" / "devtrain" / "20b2" / "meta" / "event_list_devtrain_babycry.csv"
    listed.write_text("mixture_devtrain_babycry_000_aa.wav\t1\t2\tbabycry\nmixture_devtrain_babycry_000_aa.wav\t3\t4"
                      "\tbabycry\n")  # fmt: skip
    with pytest.raises(DataError, match="has 2 events; DCASE 2017 Task 2 mixtures have at most one"):
        read_dcase2017_task2([dcase / "data"])
    listed.write_text("mixture_devtrain_babycry_000_aa.wav\t5\t2\tbabycry\n")
    with pytest.raises(DataError, match=r"event_list_devtrain_babycry.csv:1: expected 0 <= onset <= offset"):
        read_dcase2017_task2([dcase / "data"])


def test_cli_import_dcase2017_writes_manifest_and_events_tsv(dcase, tmp_path, capsys):
    out = tmp_path / "imported" / "manifest.csv"
    argv = ["-q", "data", "import", "dcase2017", str(dcase / "data"), str(dcase / "eval"), "--out", str(out),
            "--devtest", "val"]  # fmt: skip
    assert main(argv) == 0
    assert "7 clips" in capsys.readouterr().out
    rows = read_manifest(out)
    labels = read_strong_labels(out)
    assert (out.parent / "events.tsv").is_file() and len(labels) == 7 == len(rows)
    assert {row.split for row in rows} == {"train", "val", "test"}
    assert [Path(s.path).name for s in read_skipped(out.with_name("manifest.skipped.csv"))] == [
        "mixture_evaltest_glassbreak_001_hh.wav"
    ]
    assert main([*argv, "--strict"]) == 2
    err = capsys.readouterr().err
    assert "audio file not found" in err and err.count("\n") == 1
    # an events.tsv beside --out that thce did not write stays
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "events.tsv").write_text("my notes\n")
    assert main([*argv[:-4], "--out", str(mine / "manifest.csv")]) == 2
    assert "events.tsv" in capsys.readouterr().err and (mine / "events.tsv").read_text() == "my notes\n"
    assert not (mine / "manifest.csv").exists()


STRONG_TSV = """segment_id\tstart_time_seconds\tend_time_seconds\tlabel
dogdogdog01_30000\t1.000\t2.500\t/m/0bt9lr
dogdogdog01_30000\t2.000\t3.000\t/m/05tny_
dogdogdog01_30000\t6.000\t7.000\t/m/05tny_
dogdogdog01_30000\t0.000\t10.000\t/m/07yv9
talk_talk01_0\t0.000\t4.000\t/m/09x0r
dogandgun01_10000\t1.000\t2.000\t/m/05tny_
dogandgun01_10000\t5.000\t5.200\t/m/032s66
notdownload_20000\t1.000\t2.000\t/m/05tny_
badtimes001_0\t3.000\t2.000\t/m/05tny_
badtimes001_0\t1.000\t2.000\t/m/05tny_
gun_shots01_5000\t4.250\t4.500\t/m/032s66
"""


@pytest.fixture
def audioset_strong(tmp_path) -> Path:
    (tmp_path / "strong.tsv").write_text(STRONG_TSV)
    for name in ("dogdogdog01_30.000_40.000.wav", "Ytalk_talk01_0.wav", "dogandgun01_10.wav", "badtimes001.wav",
                 "gun_shots01_5_15.flac"):  # fmt: skip
        wav(tmp_path / "clips" / name)
    return tmp_path


def test_audioset_strong_reader(audioset_strong):
    segments, malformed = parse_strong_segments(audioset_strong / "strong.tsv")
    assert [s.ytid for s in segments] == ["dogdogdog01", "talk_talk01", "dogandgun01", "notdownload", "gun_shots01"]
    assert segments[0].start_s == 30.0 and segments[-1].start_s == 5.0 and segments[0].source == "strong.tsv:2"
    (bad,) = malformed
    assert (bad.path, bad.source) == ("badtimes001_0", "strong.tsv:10") and "0 <= start < end" in bad.problem

    result = read_audioset_strong([audioset_strong / "strong.tsv"], audioset_strong / "clips")
    rows = {row.group: row for row in result.rows}
    assert sorted(rows) == ["dogdogdog01", "gun_shots01", "talk_talk01"]
    dog = rows["dogdogdog01"]
    # Dog and its child Bark over one bark: one event; /m/07yv9 (Vehicle) is not ours: dropped
    assert dog.label == "dog"
    assert result.strong[dog.path] == (StrongEvent(1.0, 3.0, "dog"), StrongEvent(6.0, 7.0, "dog"))
    assert (dog.extra["start_s"], dog.extra["end_s"]) == ("30.000", "40.000")
    assert result.strong[rows["talk_talk01"].path] == () and rows["talk_talk01"].label == ""  # background
    assert result.strong[rows["gun_shots01"].path] == (StrongEvent(4.25, 4.5, "gun"),)
    assert [s.problem for s in result.excluded] == ["2 target events (dog, gun): excluded, one event per clip"]
    counts = result.counts
    assert (counts["segments"], counts["not_downloaded"], counts["multi_target"], counts["malformed"]) == (5, 1, 1, 1)
    with pytest.raises(DataError, match="badtimes001_0: event"):
        read_audioset_strong([audioset_strong / "strong.tsv"], audioset_strong / "clips", strict=True)
    # a label map with other MIDs
    speech = read_audioset_strong([audioset_strong / "strong.tsv"], audioset_strong / "clips",
                                  label_map={"speech": ["/m/09x0r"]})  # fmt: skip
    assert {r.group: r.label for r in speech.rows}["talk_talk01"] == "speech"


def test_audioset_strong_bad_files(audioset_strong, tmp_path):
    (tmp_path / "weak.csv").write_text("# YTID, start_seconds, end_seconds, positive_labels\nabc, 30.000, 40.000, "
                                       '"/m/05tny_"\n')  # fmt: skip
    with pytest.raises(DataError, match="not an AudioSet strong-label TSV"):
        read_audioset_strong([tmp_path / "weak.csv"], audioset_strong / "clips")
    with pytest.raises(DataError, match="audio folder not found"):
        read_audioset_strong([audioset_strong / "strong.tsv"], tmp_path / "nowhere")
    with pytest.raises(DataError, match="cannot read the strong-label TSV"):
        read_audioset_strong([tmp_path / "missing.tsv"], audioset_strong / "clips")


def test_cli_import_audioset_strong(audioset_strong, tmp_path, capsys):
    out = tmp_path / "as" / "manifest.csv"
    argv = ["-q", "data", "import", "audioset-strong", str(audioset_strong / "strong.tsv"), "--audio-dir",
            str(audioset_strong / "clips"), "--out", str(out), "--split", "train"]  # fmt: skip
    assert main(argv) == 0
    assert "3 clips" in capsys.readouterr().out
    labels = read_strong_labels(out)
    by_name = {path.stem: events for path, events in labels.items()}
    assert by_name["dogdogdog01_30.000_40.000"] == (StrongEvent(1.0, 3.0, "dog"), StrongEvent(6.0, 7.0, "dog"))
    assert by_name["Ytalk_talk01_0"] == ()
    assert {row.split for row in read_manifest(out)} == {"train"}
    assert main([*argv, "--strict"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
