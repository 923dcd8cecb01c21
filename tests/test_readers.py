"""data/readers.py and data/audioset.py: AudioSet, ESC-50, folder-per-class and hand-written manifests -> manifest
rows; audio decoding of every format soundfile writes; exact split counts on imported data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import torch

from thce.audio import LogMel, LogMelConfig, load_audio
from thce.cli import main
from thce.data.manifest import read_manifest, read_skipped
from thce.data.audioset import (
    AUDIOSET_DESCENDANTS,
    audioset_file_stems,
    audioset_mid_labels,
    load_ontology,
    read_audioset,
)
from thce.data.readers import load_label_map, read_checked_manifest, read_esc50, read_folder
from thce.data.splits import assign_splits, parse_ratio, rebalance, split_counts
from thce.errors import ConfigError, DataError


def tone(path: Path, *, seconds: float = 0.5, sr: int = 16000, channels: int = 1, freq: float = 440.0, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    sf.write(path, np.repeat(x[:, None], channels, axis=1) if channels > 1 else x, sr, **kw)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Decoding: wav/flac/ogg/mp3 at any rate, bit depth and channel count -> mono float32 at 16 kHz


@pytest.mark.parametrize(
    ("name", "sr", "channels", "kw"),
    [
        ("u8.wav", 8000, 1, {"subtype": "PCM_U8"}),
        ("s16.wav", 44100, 2, {"subtype": "PCM_16"}),
        ("s24.wav", 48000, 6, {"subtype": "PCM_24"}),
        ("s32.wav", 22050, 1, {"subtype": "PCM_32"}),
        ("f32.wav", 32000, 2, {"subtype": "FLOAT"}),
        ("f64.wav", 11025, 1, {"subtype": "DOUBLE"}),
        ("s16.flac", 44100, 2, {"subtype": "PCM_16"}),
        ("s24.flac", 96000, 1, {"subtype": "PCM_24"}),
        ("vorbis.ogg", 44100, 2, {"format": "OGG", "subtype": "VORBIS"}),
        ("opus.ogg", 48000, 1, {"format": "OGG", "subtype": "OPUS"}),
        ("layer3.mp3", 44100, 2, {"format": "MP3", "subtype": "MPEG_LAYER_III"}),
        ("layer3_22k.mp3", 22050, 1, {"format": "MP3", "subtype": "MPEG_LAYER_III"}),
    ],
)
def test_every_format_decodes_to_mono_16k(tmp_path, name, sr, channels, kw):
    path = tone(tmp_path / name, seconds=1.0, sr=sr, channels=channels, freq=1000.0, **kw)
    out = load_audio(path, sample_rate_hz=16000, duration_s=1.5)
    assert out.dtype == np.float32 and out.shape == (24000,)
    assert np.all(out[17000:] == 0.0)  # padded past the 1 s of audio
    body = out[2000:14000]  # away from codec delay and the ends
    spectrum = np.abs(np.fft.rfft(body * np.hanning(body.size)))
    assert spectrum.argmax() * 16000 / body.size == pytest.approx(1000.0, abs=3.0)
    level = 0.3 if "u8" not in name else 0.3 * 127 / 128
    assert np.sqrt(np.mean(body**2)) == pytest.approx(level / np.sqrt(2), rel=0.08)


@pytest.mark.parametrize(
    "config",
    [LogMelConfig(), LogMelConfig(duration_s=1.0, n_mels=16, sample_rate_hz=8000, n_fft=256),
     LogMelConfig(duration_s=2.0, n_fft=1024, frame_length_ms=50.0, hop_ms=12.5, f_min_hz=50.0, f_max_hz=7000.0)],
)  # fmt: skip
def test_numpy_log_mel_equals_torch_log_mel(config):
    """LogMel.compute (the feature cache's CPU path) and LogMel.forward give the same features for any length."""
    module = LogMel(config)
    rng = np.random.default_rng(0)
    for samples in (config.clip_samples, config.clip_samples + 77, 12345, 100, 1):
        x = (0.1 * rng.standard_normal((2, samples))).astype(np.float32)
        ours = module.compute(x)
        ref = module(torch.from_numpy(x)).numpy()
        assert ours.shape == ref.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=0)
    assert module.compute(np.zeros(config.clip_samples)).shape == (config.num_frames, config.n_mels)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_direct_pcm16_wav_read_equals_libsndfile(tmp_path, channels):
    """16-bit PCM WAVs are read straight from the data chunk: the samples must be libsndfile's, metadata chunks
    before the data, odd lengths, offsets and crops included."""
    rng = np.random.default_rng(channels)
    x = rng.integers(-32768, 32767, size=(12347, channels)).astype(np.int16)
    path = tmp_path / "tagged.wav"
    with sf.SoundFile(path, "w", samplerate=11025, channels=channels, subtype="PCM_16") as handle:
        handle.title = "a LIST chunk before the data"  # written ahead of the data chunk
        handle.write(x)
    assert b"LIST" in path.read_bytes()[: path.read_bytes().index(b"data")]
    reference = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)
    full = load_audio(path, sample_rate_hz=11025, duration_s=None)
    np.testing.assert_allclose(full, reference, rtol=0, atol=1e-7)
    part = load_audio(path, sample_rate_hz=11025, duration_s=0.5, offset_s=0.25)
    start = round(0.25 * 11025)
    np.testing.assert_allclose(part, reference[start : start + round(0.5 * 11025)], rtol=0, atol=1e-7)
    resampled = load_audio(path, sample_rate_hz=16000, duration_s=2.0)
    assert resampled.shape == (32000,) and np.all(resampled[round(12347 / 11025 * 16000) + 50 :] == 0)


def test_truncated_mp3_is_reported(tmp_path):
    path = tone(tmp_path / "a.mp3", seconds=2.0, sr=22050, format="MP3")
    raw = path.read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.mp3: truncated file: its header promises 2\.00 s"):
        load_audio(cut, sample_rate_hz=16000, duration_s=None)


def test_offset_reads_from_the_middle(tmp_path):
    sr = 8000
    x = np.arange(3 * sr, dtype=np.float32) / (3 * sr)
    path = tmp_path / "ramp.wav"
    sf.write(path, x, sr, subtype="FLOAT")
    out = load_audio(path, sample_rate_hz=sr, duration_s=1.0, offset_s=1.5)
    np.testing.assert_allclose(out, x[int(1.5 * sr) : int(2.5 * sr)])
    with pytest.raises(DataError, match="past the end"):
        load_audio(path, sample_rate_hz=sr, duration_s=1.0, offset_s=4.0)


# ----------------------------------------------------------------------------------------------------------------------
# AudioSet

SEGMENTS_HEADER = (
    "# Segments csv created Sun Mar  5 10:54:31 2017\n"
    "# num_ytids=8, num_segs=8, num_unique_labels=6, num_positive_labels=12\n"
    "# YTID, start_seconds, end_seconds, positive_labels\n"
)


@pytest.fixture()
def audioset(tmp_path):
    """Two segment CSVs and a folder of clips named in several downloaders' styles."""
    root = tmp_path / "audioset"
    balanced = root / "balanced_train_segments.csv"
    balanced.parent.mkdir(parents=True)
    balanced.write_text(
        SEGMENTS_HEADER
        + '--4gqARaEJE, 0.000, 10.000, "/m/068hy,/m/07q6cd_,/m/0bt9lr,/m/0jbk"\n'  # Dog -> dog
        + '-0BIyqJj9ZU, 30.000, 40.000, "/m/05tny_"\n'  # Bark (child of Dog) -> dog
        + 'abcdefghijk, 15.500, 25.500, "/t/dd00002,/m/09x0r"\n'  # Baby cry + Speech -> baby
        + 'Mgun_000001, 100.000, 110.000, "/m/04zjc"\n'  # Machine gun (child of Gunshot) -> gun
        + 'Xtwo_events, 0.000, 10.000, "/m/05tny_,/m/032s66"\n'  # Bark + Gunshot: two targets -> excluded
        + 'speech_only, 20.000, 30.000, "/m/09x0r"\n'  # Speech only -> background
        + 'not_download, 0.000, 10.000, "/m/0bt9lr"\n'  # no file
        + "broken_row, abc, 10.000\n"  # malformed
    )
    evals = root / "eval_segments.csv"
    evals.write_text(
        SEGMENTS_HEADER
        + '-0BIyqJj9ZU, 30.000, 40.000, "/m/05tny_"\n'  # duplicate of a balanced segment
        + 'evalcat0001, 0.000, 10.000, "/m/01yrx"\n'  # Cat: background by default
        + 'twoinnofile, 0.000, 10.000, "/m/0bt9lr,/t/dd00002"\n'  # two targets, not downloaded: counted only
    )
    audio = root / "audio"
    tone(audio / "--4gqARaEJE.wav")  # YTID
    tone(audio / "sub" / "-0BIyqJj9ZU_30.000.flac", sr=44100)  # YTID_START (3 decimals), nested folder
    tone(audio / "abcdefghijk_15500_25500.ogg", format="OGG")  # YTID_START_END in ms
    tone(audio / "YMgun_000001.wav")  # PANNs-style leading Y
    tone(audio / "Xtwo_events_0_10.wav")  # YTID_START_END in integer seconds
    tone(audio / "speech_only_20-30.mp3", sr=22050, format="MP3")  # YTID_START-END
    tone(audio / "evalcat0001.wav")
    tone(audio / "evalcat0001.mp3", sr=22050, format="MP3")  # same name twice: wav preferred
    return balanced, evals, audio


def test_audioset_defaults(audioset):
    balanced, evals, audio = audioset
    result = read_audioset([balanced, evals], audio)
    got = {r.group: (r.label, r.path.name) for r in result.rows}
    assert got == {
        "--4gqARaEJE": ("dog", "--4gqARaEJE.wav"),
        "-0BIyqJj9ZU": ("dog", "-0BIyqJj9ZU_30.000.flac"),
        "abcdefghijk": ("baby", "abcdefghijk_15500_25500.ogg"),
        "Mgun_000001": ("gun", "YMgun_000001.wav"),
        "speech_only": ("", "speech_only_20-30.mp3"),
        "evalcat0001": ("", "evalcat0001.wav"),
    }
    assert result.counts == {
        "segments": 10, "multi_target": 2, "not_downloaded": 1, "duplicate": 1, "malformed": 1, "imported": 6,
    }  # fmt: skip
    assert [Path(s.path).name for s in result.excluded] == ["Xtwo_events_0_10.wav"]
    assert "2 target events (dog, gun)" in result.excluded[0].problem
    assert result.excluded[0].source == "balanced_train_segments.csv:8"
    problems = sorted(s.problem.split(" (")[0] for s in result.skipped)
    assert problems == ["duplicate segment", "malformed segment row ['broken_row', 'abc', '10.000']"]
    row = next(r for r in result.rows if r.group == "abcdefghijk")
    assert row.extra == {"ytid": "abcdefghijk", "start_s": "15.500", "end_s": "25.500"}
    assert all(r.path.is_absolute() and r.split == "" for r in result.rows)
    with pytest.raises(DataError, match="duplicate segment"):
        read_audioset([balanced, evals], audio, strict=True)


def test_audioset_label_map_file_and_ontology(audioset, tmp_path):
    balanced, evals, audio = audioset
    toml_map = tmp_path / "labels.toml"
    toml_map.write_text('[labels]\ncat = ["/m/01yrx"]\nbark = "/m/05tny_"\n')
    result = read_audioset([balanced, evals], audio, label_map=load_label_map(toml_map), split="test")
    got = {r.group: r.label for r in result.rows}
    assert got["evalcat0001"] == "cat" and got["-0BIyqJj9ZU"] == "bark" and got["Xtwo_events"] == "bark"
    assert got["--4gqARaEJE"] == ""  # Dog is not Bark
    assert {r.split for r in result.rows} == {"test"}
    # an ontology file adds descendants of any MID
    ontology = tmp_path / "ontology.json"
    ontology.write_text(json.dumps([
        {"id": "/m/0jbk", "name": "Animal", "child_ids": ["/m/0bt9lr"]},
        {"id": "/m/0bt9lr", "name": "Dog", "child_ids": ["/m/05tny_"]},
        {"id": "/m/05tny_", "name": "Bark", "child_ids": []},
    ]))  # fmt: skip
    json_map = tmp_path / "labels.json"
    json_map.write_text(json.dumps({"animal": ["/m/0jbk"]}))
    result = read_audioset([balanced], audio, label_map=load_label_map(json_map),
                           ontology=load_ontology(ontology))  # fmt: skip
    assert {r.group: r.label for r in result.rows}["-0BIyqJj9ZU"] == "animal"


def test_audioset_defaults_and_label_map_errors(tmp_path):
    mids = audioset_mid_labels()
    assert {m for m, label in mids.items() if label == "dog"} == {
        "/m/0bt9lr", "/m/05tny_", "/m/07r_k2n", "/m/07qf0zm", "/m/07rc7d9", "/m/0ghcn6", "/t/dd00136",
    }  # fmt: skip
    assert {m for m, label in mids.items() if label == "gun"} == {
        "/m/032s66", "/m/04zjc", "/m/02z32qm", "/m/0_1c", "/m/073cg4",
    }  # fmt: skip
    assert {m for m, label in mids.items() if label == "baby"} == {"/t/dd00002"}
    assert set(AUDIOSET_DESCENDANTS) == {"/m/0bt9lr", "/t/dd00002", "/m/032s66"}
    with pytest.raises(ConfigError, match="falls under both 'dog' and 'bark'"):
        audioset_mid_labels({"dog": ["/m/0bt9lr"], "bark": ["/m/05tny_"]})
    for text, message in [
        ('background = ["/m/0"]', "background is implicit"),
        ('dog = []', "non-empty"),
        ('dog = "/m/1"\ncat = "/m/1"', "mapped to both"),
        ("dog = [", "not valid TOML"),
    ]:
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_label_map(path)
    assert audioset_file_stems("-x", 1.5, 11.5)[:6] == ["-x", "Y-x", "-x_1.500", "Y-x_1.500", "-x_1.500_11.500",
                                                        "Y-x_1.500_11.500"]  # fmt: skip


def test_cli_import_audioset(audioset, tmp_path, capsys):
    balanced, evals, audio = audioset
    out = tmp_path / "out" / "audioset.csv"
    assert main(["data", "import", "audioset", str(balanced), str(evals), "--audio-dir", str(audio),
                 "--out", str(out)]) == 0  # fmt: skip
    rows = read_manifest(out)
    assert len(rows) == 6 and {r.label for r in rows} == {"dog", "baby", "gun", ""}
    header = out.read_text().splitlines()[0]
    assert header == "path,label,split,group,end_s,start_s,ytid"
    left_out = read_skipped(out.with_name("audioset.skipped.csv"))
    assert len(left_out) == 3
    printed = capsys.readouterr().out
    assert "6 clips (baby 1, background 2, dog 2, gun 1)" in printed
    assert "multi_target 2" in printed and "not_downloaded 1" in printed


# ----------------------------------------------------------------------------------------------------------------------
# ESC-50


@pytest.fixture()
def esc50(tmp_path):
    root = tmp_path / "ESC-50-master"
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    specs = [
        ("1-100032-A-0.wav", 1, 0, "dog", "100032", "A"),
        ("1-100032-B-0.wav", 1, 0, "dog", "100032", "B"),
        ("2-102414-A-20.wav", 2, 20, "crying_baby", "102414", "A"),
        ("3-1000-A-42.wav", 3, 42, "siren", "1000", "A"),
        ("4-2000-A-19.wav", 4, 19, "thunderstorm", "2000", "A"),
        ("5-3000-A-0.wav", 5, 0, "dog", "3000", "A"),  # listed, file missing
    ]
    for name, fold, target, category, src, take in specs:
        lines.append(f"{name},{fold},{target},{category},False,{src},{take}")
        if not name.startswith("5-"):
            tone(root / "audio" / name, seconds=5.0, sr=44100)
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return root


def test_esc50(esc50, tmp_path):
    result = read_esc50(esc50)
    got = [(r.path.name, r.label, r.extra["fold"], r.group) for r in result.rows]
    assert got == [
        ("1-100032-A-0.wav", "dog", "1", "esc50-100032"),
        ("1-100032-B-0.wav", "dog", "1", "esc50-100032"),  # same source recording, same group
        ("2-102414-A-20.wav", "baby", "2", "esc50-102414"),
        ("3-1000-A-42.wav", "", "3", "esc50-1000"),
        ("4-2000-A-19.wav", "", "4", "esc50-2000"),
    ]
    assert [(Path(s.path).name, s.problem, s.source) for s in result.skipped] == [
        ("5-3000-A-0.wav", "audio file not found", "esc50.csv:7")
    ]
    custom = read_esc50(esc50, label_map={"siren": ["siren"], "dog": ["dog"]})
    assert [r.label for r in custom.rows] == ["dog", "dog", "", "siren", ""]
    with pytest.raises(ConfigError, match=r"categories \['cryingbaby'\] do not occur"):
        read_esc50(esc50, label_map={"baby": ["cryingbaby"]})
    with pytest.raises(DataError, match="audio file not found"):
        read_esc50(esc50, strict=True)
    with pytest.raises(DataError, match="meta file not found"):
        read_esc50(tmp_path)
    out = tmp_path / "esc.csv"
    assert main(["data", "import", "esc50", str(esc50), "--out", str(out)]) == 0
    assert [r.extra["fold"] for r in read_manifest(out)] == ["1", "1", "2", "3", "4"]


def test_text_inputs_not_in_utf8_are_one_line_naming_the_file(esc50, tmp_path, capsys):
    """A manifest, an ESC-50 meta file or a segment CSV saved in another encoding (e.g. Latin-1 from a spreadsheet)
    is a one-line error naming it, exit status 2, not a UnicodeDecodeError traceback."""
    latin = "caf\u00e9".encode("latin-1")
    manifest = tmp_path / "hand.csv"
    manifest.write_bytes(b"path,label\nclip.wav," + latin + b"\n")
    segments = tmp_path / "segments.csv"
    segments.write_bytes(SEGMENTS_HEADER.encode() + b'abc, 0.000, 10.000, "/m/0bt9lr" # ' + latin + b"\n")
    meta = esc50 / "meta" / "esc50.csv"
    meta.write_bytes(meta.read_bytes().replace(b"siren", latin))
    for argv, named in (
        (["manifest", str(manifest)], manifest),
        (["audioset", str(segments), "--audio-dir", str(tmp_path)], segments),
        (["esc50", str(esc50)], meta),
    ):
        assert main(["data", "import", *argv, "--out", str(tmp_path / "out.csv")]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"thce: error: {named}: cannot read") and "utf-8" in err and err.count("\n") == 1
    assert not (tmp_path / "out.csv").exists()


# ----------------------------------------------------------------------------------------------------------------------
# Folder per class


def test_folder_per_class(tmp_path):
    root = tmp_path / "data"
    tone(root / "dog" / "a.wav")
    tone(root / "dog" / "park" / "b.flac")
    tone(root / "gun" / "c.mp3", sr=22050, format="MP3")
    tone(root / "background" / "d.ogg", format="OGG")
    tone(root / "cat" / "e.wav")
    (root / "dog" / "notes.txt").write_text("recorded in the park")
    (root / "dog" / ".DS_Store").write_bytes(b"\0")
    tone(root / "stray.wav")
    result = read_folder(root, classes=["dog", "baby", "gun"])
    got = sorted((r.label, r.group) for r in result.rows)
    assert got == [("", "background/d"), ("dog", "dog/a"), ("dog", "dog/park/b"), ("gun", "gun/c")]
    problems = {Path(s.path).name: s.problem for s in result.skipped}
    assert problems["e.wav"].startswith("unknown label 'cat'")
    assert problems["notes.txt"].startswith("unsupported extension '.txt'")
    assert problems["stray.wav"].startswith("not inside a class folder")
    assert len(problems) == 3
    assert {r.label for r in read_folder(root).rows} == {"", "dog", "gun", "cat"}
    with pytest.raises(DataError, match="unknown label 'cat'"):
        read_folder(root, classes=["dog", "baby", "gun"], strict=True)
    out = tmp_path / "m" / "folder.csv"
    assert main(["data", "import", "folder", str(root), "--out", str(out), "--classes", "dog,baby,gun"]) == 0
    rows = read_manifest(out)
    assert sorted(r.path for r in rows) == sorted(r.path for r in result.rows)


def test_an_input_format_is_one_registry_entry(tmp_path, monkeypatch, capsys):
    """Issue 31: a format added to IMPORT_FORMATS alone is a `thce data import` subcommand with the shared options;
    its inputs are refused as outputs, its label map is loaded for its reader, and its event list is written."""
    from thce.cli import data as cli_data
    from thce.cli.import_formats import IMPORT_FORMATS, ImportFormat
    from thce.data.manifest import ManifestRow
    from thce.data.readers import ImportResult
    from thce.data.strong import StrongEvent

    clip = tone(tmp_path / "clips" / "a.wav")
    calls = []

    def add_arguments(parser):
        parser.add_argument("listing", type=Path)
        parser.add_argument("--label-map", type=Path)

    def read(args, label_map):
        calls.append(label_map)
        return ImportResult([ManifestRow(clip, "dog")], strong={clip: (StrongEvent(0.1, 0.2, "dog"),)})

    stub = ImportFormat("stub", "a test format", add_arguments=add_arguments, inputs=lambda args: [args.listing],
                        read=read, writes_strong_labels=True)  # fmt: skip
    monkeypatch.setattr(cli_data, "IMPORT_FORMATS", (*IMPORT_FORMATS, stub))
    listing = tmp_path / "listing.txt"
    listing.write_text("a.wav\n")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"dog": ["canine"]}))
    out = tmp_path / "out" / "m.csv"
    assert main(["data", "import", "stub", str(listing), "--label-map", str(labels), "--out", str(out)]) == 0
    assert calls == [{"dog": ("canine",)}]
    assert [(r.path, r.label) for r in read_manifest(out)] == [(clip, "dog")]
    assert (out.parent / "events.tsv").read_text().splitlines()[1].split("\t")[1:] == ["0.100000", "0.200000", "dog"]
    assert "m.csv: 1 clip (dog 1)" in capsys.readouterr().out
    before = listing.read_bytes()
    assert main(["data", "import", "stub", str(listing), "--out", str(listing), "--overwrite"]) == 2
    assert "is also an input of the import" in capsys.readouterr().err and listing.read_bytes() == before
    assert len(calls) == 1


def test_checked_manifest_keeps_good_rows(tmp_path):
    a = tone(tmp_path / "a.wav")
    b = tone(tmp_path / "b.wav")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,split,group\na.wav,dog,train,g1\nb.wav,,test,g2\na.wav,dog,train,g1\n")
    result = read_checked_manifest(manifest, classes=["dog"], check_audio=True)
    assert [(r.path, r.label, r.split, r.group) for r in result.rows] == [(a, "dog", "train", "g1"),
                                                                         (b, "", "test", "g2")]  # fmt: skip
    assert [s.source for s in result.skipped] == ["m.csv:4"]
    manifest.write_text("path,label,split\na.wav,dog,dev\n")
    with pytest.raises(DataError, match=r"m\.csv:2: split 'dev' is not one of"):
        read_checked_manifest(manifest)


# ----------------------------------------------------------------------------------------------------------------------
# Splits on imported data: exact counts


def test_imported_rows_split_and_rebalance_exactly(tmp_path):
    """A folder import of 6:1:2:16 clips (dog, baby, gun, background) per 10 -> 70/20/10 split, then 2:2:1:26."""
    from thce.data.manifest import ManifestRow

    rows = []
    for label, n in (("dog", 120), ("baby", 20), ("gun", 40), ("", 320)):
        rows += [ManifestRow(Path(f"/d/{label or 'bg'}/{i}.wav"), label, group=f"{label}/{i}") for i in range(n)]
    split = assign_splits(rows, seed=1)
    assert split_counts(split) == {
        "train": {"background": 224, "baby": 14, "dog": 84, "gun": 28},
        "val": {"background": 64, "baby": 4, "dog": 24, "gun": 8},
        "test": {"background": 32, "baby": 2, "dog": 12, "gun": 4},
    }
    balanced = rebalance(split, labels=["dog", "baby", "gun", ""], ratio=parse_ratio("2:2:1:26"), seed=1)
    # train: scale min(84/2, 14/2, 28/1, 224/26=8.6) = 7 -> 14, 14, 7, 182; val: min(12, 2, 8, 2.46) = 2 -> 4, 4, 2, 52
    assert split_counts(balanced) == {
        "train": {"background": 182, "baby": 14, "dog": 14, "gun": 7},
        "val": {"background": 52, "baby": 4, "dog": 4, "gun": 2},
        "test": {"background": 32, "baby": 2, "dog": 12, "gun": 4},
    }
    # the manifest's own splits win: fixed test rows stay, the rest is split 70/20/10
    fixed = [ManifestRow(r.path, r.label, "test", r.group) if i % 10 == 0 else r for i, r in enumerate(rows[:120])]
    counts = split_counts(assign_splits(fixed, seed=2))
    # 108 free clips: 75.6/21.6/10.8 -> largest remainders 76/21/11; test = 12 fixed + 11
    assert counts == {"train": {"dog": 76}, "val": {"dog": 21}, "test": {"dog": 23}}
