"""data/strong.py: the strong-label data model (events.tsv beside the manifest), its reader's errors, frame targets
against hand values, and events.tsv from the synthetic scenes and `thce data mix`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from thce.cli import main
from thce.data.manifest import ManifestRow, read_manifest, write_manifest
from thce.data.mix import MixConfig, make_mixtures
from thce.data.strong import (
    StrongEvent,
    clip_frame_targets,
    frame_class,
    frame_targets,
    read_strong_labels,
    write_strong_labels,
)
from thce.data.synth import SynthConfig, generate_scenes
from thce.errors import DataError
from thce.detection.events import read_event_list
from tests.test_mix import sources  # noqa: F401  (the fixture: isolated events and background recordings)


def test_frame_targets_hand_values():
    # hop 0.1 s: frame i covers [0.1 i, 0.1 i + 0.1), centre 0.1 i + 0.05
    events = [StrongEvent(0.25, 0.45, "dog"), (0.0, 0.05, "gun"), StrongEvent(0.72, 9.0, "gun")]
    got = frame_targets(events, ["dog", "gun"], 9, 0.1)
    assert got.dtype == np.uint8 and got.shape == (9, 2)
    # dog: centres 0.25 (on the onset: in) and 0.35; 0.45 is on the offset: out
    assert got[:, 0].tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 0]
    # gun: [0, 0.05) holds no centre (0.05 is on the offset); [0.72, 9.0) from centre 0.75 on, cut at frame 9
    assert got[:, 1].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1]
    # a short event between two centres gives no frame; one covering a centre gives exactly that frame
    assert frame_targets([(0.06, 0.14, "dog")], ["dog"], 3, 0.1).sum() == 0
    assert frame_targets([(0.14, 0.16, "dog")], ["dog"], 3, 0.1)[:, 0].tolist() == [0, 1, 0]
    # an empty event list: all background; an unknown label: an error
    assert frame_targets((), ["dog"], 4, 0.02).sum() == 0
    with pytest.raises(DataError, match="'cat' is not one of the classes dog"):
        frame_targets([(0.0, 1.0, "cat")], ["dog"], 4, 0.1)
    with pytest.raises(ValueError, match="frame_hop_s"):
        frame_targets((), ["dog"], 4, 0.0)


def test_frame_targets_at_10_ms_over_a_10_s_clip():
    got = frame_targets([(2.003, 2.5, "dog")], ["dog"], 1000, 0.01)
    # centres 2.005, ..., 2.495: frames 200..249
    assert np.flatnonzero(got[:, 0]).tolist() == list(range(200, 250))


def test_clip_frame_targets_marks_weak_clips(tmp_path):
    rows = [ManifestRow(tmp_path / "a.wav", "dog"), ManifestRow(tmp_path / "b.wav"),
            ManifestRow(tmp_path / "c.wav", "gun")]  # fmt: skip
    labels = {tmp_path / "a.wav": (StrongEvent(0.1, 0.3, "dog"),), tmp_path / "b.wav": ()}
    targets, strong = clip_frame_targets(rows, labels, ["dog", "gun"], 4, 0.1)
    assert targets.shape == (3, 4, 2) and strong.tolist() == [True, True, False]
    assert targets[0, :, 0].tolist() == [0, 1, 1, 0] and targets[1:].sum() == 0


def test_frame_class_picks_the_first_class_where_two_overlap():
    targets = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=np.uint8)
    assert frame_class(targets).tolist() == [3, 1, 0, 1]
    assert frame_class(np.stack([targets, targets[::-1]])).tolist() == [[3, 1, 0, 1], [1, 0, 1, 3]]


@pytest.fixture
def manifest(tmp_path) -> Path:
    rows = [
        ManifestRow(tmp_path / "audio" / "a.wav", "dog", "train", "g1"),
        ManifestRow(tmp_path / "audio" / "b.wav", "", "train", "g2"),
        ManifestRow(tmp_path / "audio" / "c.wav", "gun", "val", "g3"),
        ManifestRow(tmp_path / "other" / "d.wav", "dog", "test", "g4"),
    ]
    return write_manifest(rows, tmp_path / "manifest.csv")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_strong_labels_from_events_tsv(manifest, tmp_path):
    write(tmp_path / "events.tsv", "filename\tonset\toffset\tevent_label\n"
          "audio/a.wav\t3.5\t4.0\tdog\n"
          "audio/a.wav\t1.0\t1.5\tdog\n"
          "# a comment\n"
          "audio/b.wav\n"
          "d.wav\t0\t0.25\tdog\n")  # fmt: skip
    labels = read_strong_labels(manifest)
    assert labels == {
        tmp_path / "audio" / "a.wav": (StrongEvent(1.0, 1.5, "dog"), StrongEvent(3.5, 4.0, "dog")),  # by onset
        tmp_path / "audio" / "b.wav": (),
        tmp_path / "other" / "d.wav": (StrongEvent(0.0, 0.25, "dog"),),  # a unique base name matches too
    }  # c.wav is not listed: weak only
    # the rows may be given, and another event list named
    other = write(tmp_path / "elsewhere.tsv", "audio/c.wav\t2\t3\tgun\n")
    labels = read_strong_labels(manifest, read_manifest(manifest), events_path=other)
    assert labels[tmp_path / "audio" / "c.wav"] == (StrongEvent(2.0, 3.0, "gun"),)
    assert labels[tmp_path / "audio" / "b.wav"] == ()  # background: no events, listed or not
    assert tmp_path / "audio" / "a.wav" not in labels
    # the list thce writes is what it reads, and what `thce evaluate-events` reads as a reference
    rows = read_manifest(manifest)
    written = write_strong_labels(tmp_path / "again.tsv", rows, labels)
    assert read_strong_labels(manifest, rows, events_path=written) == labels
    assert {e.file: (e.onset_s, e.offset_s, e.label) for e in read_event_list(written).events} == {
        "c.wav": (2.0, 3.0, "gun")
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("audio/a.wav\t2.0\t2.0\tdog", "expected 0 <= onset < offset, got onset 2, offset 2"),
        ("audio/a.wav\t3.0\t2.0\tdog", "expected 0 <= onset < offset"),
        ("audio/a.wav\t-1\t2.0\tdog", "expected 0 <= onset < offset, got onset -1"),
        ("audio/a.wav\tsoon\t2.0\tdog", "onset and offset must be numbers of seconds"),
        ("audio/a.wav\t1\t2\tgun", "event 'gun' in a clip labelled 'dog'"),
        ("audio/b.wav\t1\t2\tdog", "event 'dog' in a background clip"),
        ("audio/zzz.wav\t1\t2\tdog", "'audio/zzz.wav' is not a clip of the manifest"),
        ("audio/a.wav\t1\t2", "expected filename<TAB>onset<TAB>offset<TAB>event_label or a file name alone"),
        ("audio/a.wav", "a clip labelled 'dog' listed without events"),
    ],
)
def test_bad_event_lists_are_one_line_naming_file_and_line(manifest, tmp_path, line, message):
    events = write(tmp_path / "events.tsv", f"filename\tonset\toffset\tevent_label\naudio/c.wav\t1\t2\tgun\n{line}\n")
    with pytest.raises(DataError, match=message) as error:
        read_strong_labels(manifest)
    assert str(error.value).startswith(f"{events}:3: ") and "\n" not in str(error.value)


def test_missing_events_path_is_named(manifest, tmp_path):
    with pytest.raises(DataError, match="nope.tsv: event list not found"):
        read_strong_labels(manifest, events_path=tmp_path / "nope.tsv")


def test_manifest_columns_give_one_event_per_row(tmp_path):
    rows = [
        ManifestRow(tmp_path / "a.wav", "dog", extra={"onset_s": "1.25", "offset_s": "2.5"}),
        ManifestRow(tmp_path / "b.wav", "", extra={"onset_s": "", "offset_s": ""}),
        ManifestRow(tmp_path / "c.wav", "gun", extra={"onset_s": "", "offset_s": ""}),
    ]
    manifest = write_manifest(rows, tmp_path / "manifest.csv")
    assert read_strong_labels(manifest) == {
        tmp_path / "a.wav": (StrongEvent(1.25, 2.5, "dog"),), tmp_path / "b.wav": ()
    }  # fmt: skip
    # without the columns at all: background rows only
    plain = write_manifest([ManifestRow(tmp_path / "a.wav", "dog"), ManifestRow(tmp_path / "b.wav")],
                           tmp_path / "plain" / "manifest.csv")  # fmt: skip
    assert read_strong_labels(plain) == {tmp_path / "b.wav": ()}
    for extra, message in [({"onset_s": "1", "offset_s": ""}, "onset_s and offset_s must both be given or both be"),
                           ({"onset_s": "3", "offset_s": "1"}, "expected 0 <= onset < offset")]:  # fmt: skip
        bad = write_manifest([ManifestRow(tmp_path / "b.wav"), ManifestRow(tmp_path / "a.wav", "dog", extra=extra)],
                             tmp_path / "bad" / "manifest.csv")  # fmt: skip
        with pytest.raises(DataError, match=f"manifest.csv:3: {message}"):
            read_strong_labels(bad)


def test_synthetic_scenes_write_events_tsv(tmp_path):
    config = SynthConfig(counts={"dog": 2, "gun": 1, "background": 2}, duration_s=1.0, seed=3)
    manifest = generate_scenes(config, tmp_path)
    rows = read_manifest(manifest)
    labels = read_strong_labels(manifest)
    assert (tmp_path / "events.tsv").is_file() and len(labels) == len(rows)
    for row in rows:
        if not row.label:
            assert labels[row.path] == ()
            continue
        (event,) = labels[row.path]
        assert event.label == row.label
        assert (event.onset_s, event.offset_s) == pytest.approx(
            (float(row.extra["onset_s"]), float(row.extra["offset_s"])), abs=1e-6
        )
    # the same labels as the manifest's columns give
    (tmp_path / "events.tsv").unlink()
    from_columns = read_strong_labels(manifest)
    assert from_columns.keys() == labels.keys()
    for clip, events in labels.items():
        assert [tuple(e) for e in from_columns[clip]] == [pytest.approx(tuple(e)) for e in events]


def normalised_digest(out: Path, sources: Path) -> str:
    digest = hashlib.sha256((out / "manifest.csv").read_text().replace(str(sources), "SRC").encode())
    for path in sorted((out / "audio").glob("*.wav")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


#: sha256 of manifest.csv (sources' folder as SRC) and every WAV made by `make_mixtures` before events.tsv and
#: events_per_mixture existed, for MixConfig(num_mixtures=12, seed=5, event_probability=0.7, duration_s=3.0).
GOLDEN_MIX_DIGEST = "ff4f690693a141ae5f783c816b331cd130380ef1464924171ab51202964a1b45"


def test_mix_defaults_are_byte_identical_to_before_and_write_events_tsv(sources, tmp_path):
    config = MixConfig(num_mixtures=12, seed=5, event_probability=0.7, duration_s=3.0)
    result = make_mixtures(sources / "events", sources / "backgrounds", tmp_path / "mix", config=config)
    assert normalised_digest(tmp_path / "mix", sources) == GOLDEN_MIX_DIGEST
    assert result.events == tmp_path / "mix" / "events.tsv"
    labels = read_strong_labels(result.manifest)
    rows = read_manifest(result.manifest)
    assert len(labels) == len(rows)
    for row in rows:
        if row.label:
            (event,) = labels[row.path]
            assert (round(event.onset_s, 3), round(event.offset_s, 3)) == (
                float(row.extra["onset_s"]), float(row.extra["offset_s"])
            )  # fmt: skip
        else:
            assert labels[row.path] == ()


def test_mix_several_events_per_mixture(sources, tmp_path):
    config = MixConfig(num_mixtures=10, seed=2, event_probability=1.0, duration_s=4.0, events_per_mixture=3,
                       split_fractions=None)  # fmt: skip
    result = make_mixtures(sources / "events", sources / "backgrounds", tmp_path / "mix", config=config)
    labels = read_strong_labels(result.manifest)
    for row in read_manifest(result.manifest):
        events = labels[row.path]
        assert len(events) == 3 and {e.label for e in events} == {row.label}
        for before, after in zip(events, events[1:]):
            assert before.offset_s <= after.onset_s  # no overlap
        assert 0 <= events[0].onset_s and events[-1].offset_s <= 4.0
        assert float(row.extra["onset_s"]) == round(events[0].onset_s, 3)  # the columns: the first event
    # the same seed gives the same mixtures; k = 1 differs from k = 3
    again = make_mixtures(sources / "events", sources / "backgrounds", tmp_path / "again", config=config)
    assert (tmp_path / "mix" / "events.tsv").read_bytes() == (tmp_path / "again" / "events.tsv").read_bytes()
    assert [r.path.read_bytes() for r in result.rows] == [r.path.read_bytes() for r in again.rows]
    # events that cannot all fit: the last drawn are dropped
    short = MixConfig(num_mixtures=4, seed=2, event_probability=1.0, duration_s=1.0, events_per_mixture=4,
                      split_fractions=None)  # fmt: skip
    made = make_mixtures(sources / "events", sources / "backgrounds", tmp_path / "short", config=short)
    for events in read_strong_labels(made.manifest).values():
        assert 1 <= len(events) < 4 and sum(e.offset_s - e.onset_s for e in events) <= 1.0 + 1e-9
    with pytest.raises(Exception, match="events_per_mixture"):
        MixConfig(events_per_mixture=0)


def test_cli_mix_events_per_mixture_and_foreign_events_tsv(sources, tmp_path, capsys):
    out = tmp_path / "mix"
    argv = ["-q", "data", "mix", "--events", str(sources / "events"), "--backgrounds", str(sources / "backgrounds"),
            "--out", str(out), "--count", "3", "--duration-s", "3", "--event-probability", "1", "--no-split",
            "--events-per-mixture", "2"]  # fmt: skip
    assert main(argv) == 0
    assert all(len(events) == 2 for events in read_strong_labels(out / "manifest.csv").values())
    capsys.readouterr()
    # an events.tsv thce did not write is not replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    write(mine / "events.tsv", "my notes\n")
    argv_mine = [a if a != str(out) else str(mine) for a in argv]
    assert main(argv_mine) == 2
    err = capsys.readouterr().err
    assert "events.tsv" in err and err.count("\n") == 1
    assert (mine / "events.tsv").read_text() == "my notes\n"
    assert main([*argv_mine, "--overwrite"]) == 0
