"""``thce export``: ONNX and TorchScript models that agree with PyTorch (max abs difference < 1e-4)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import thce

from tests.stub_runs import stub_run
from thce.checkpoint import load_run
from thce.cli import main
from thce.detection.inference import ModelScorer
from thce.errors import ConfigError
from thce.detection.export import PARITY_TOLERANCE, example_inputs, export_run, scoring_module

FRAMES, MELS = 100, 32  # 1 s windows
# TorchScript is deprecated upstream (torch.jit.load warns) but is what deployments without Python still load.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.jit")


def fake_run(root, *, encoder, method, seed=0, model=None):
    """A run directory holding an untrained tiny checkpoint of ``method`` (weights random, BN statistics set)."""
    return stub_run(
        root, encoder=encoder, method=method, seed=seed, duration_s=1.0, n_mels=MELS,
        second_pool_frames=10, cluster_class=(0, 0, 1, 2, 3), model=model,
    )


# the input's clip mean and the LSTM's pooling over time are part of the exported network
OPTIONS = {"remove_clip_mean": True, "lstm_pooling": "max"}


@pytest.mark.parametrize(
    "encoder,method,model",
    [
        ("cnn", "proposed2", None), ("lstm", "baseline", None),
        ("cnn", "baseline", OPTIONS), ("lstm", "proposed2", OPTIONS),
    ],  # fmt: skip
)
def test_torchscript_parity_for_log_mel_and_raw_audio(tmp_path, encoder, method, model):
    run = fake_run(tmp_path / "run", encoder=encoder, method=method, model=model)
    loaded = load_run(run, method)
    features = loaded.config.features
    for inputs in ("logmel", "audio"):
        out = tmp_path / f"model-{inputs}.pt"
        result = export_run(run, fmt="torchscript", out=out, method=method, inputs=inputs)
        assert result.max_abs_diff is not None and result.max_abs_diff < PARITY_TOLERANCE
        exported = torch.jit.load(str(out))
        reference = scoring_module(loaded, inputs=inputs)
        for batch in (1, 4):
            x = example_inputs(features, inputs=inputs, batch=batch, seed=batch + 7)
            with torch.no_grad():
                got, want = exported(x).numpy(), reference(x).numpy()
            assert got.shape == (batch, 3)
            assert np.max(np.abs(got - want)) < PARITY_TOLERANCE
    # the raw-audio model is the detection path: same scores as ModelScorer on the same windows
    audio = example_inputs(features, inputs="audio", batch=3, seed=3).numpy()
    with torch.no_grad():
        exported_scores = torch.jit.load(str(tmp_path / "model-audio.pt"))(torch.from_numpy(audio)).numpy()
    np.testing.assert_allclose(exported_scores, ModelScorer(loaded)(audio), atol=PARITY_TOLERANCE)
    for inputs in ("logmel", "audio"):  # the traced code's source ranges (debug records) are left out
        assert_no_local_paths(tmp_path / f"model-{inputs}.pt", tmp_path)
    meta = json.loads((tmp_path / "model-audio.pt.json").read_text())
    assert meta["input"]["shape"] == ["batch", 16000] and meta["classes"] == ["dog", "baby", "gun"]
    assert set(meta["eer_thresholds"]) == {"dog", "baby", "gun"}


@pytest.mark.parametrize("encoder,method,model", [("cnn", "proposed2", None), ("lstm", "baseline", OPTIONS)])
def test_onnx_parity(tmp_path, encoder, method, model):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    run = fake_run(tmp_path / "run", encoder=encoder, method=method, model=model)
    out = tmp_path / "model.onnx"
    result = export_run(run, fmt="onnx", out=out, method=method)
    assert result.max_abs_diff is not None and result.max_abs_diff < PARITY_TOLERANCE
    loaded = load_run(run, method)
    reference = scoring_module(loaded)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["logmel"]
    for batch in (1, 5):  # the batch axis is dynamic
        x = example_inputs(loaded.config.features, inputs="logmel", batch=batch, seed=batch)
        got = session.run(None, {"logmel": x.numpy()})[0]
        with torch.no_grad():
            want = reference(x).numpy()
        assert got.shape == (batch, 3) and np.max(np.abs(got - want)) < PARITY_TOLERANCE
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert meta["input"]["shape"] == ["batch", FRAMES, MELS] and meta["format"] == "onnx"
    assert b"stack_trace" not in out.read_bytes()  # the exporter records each node's Python stack trace
    assert_no_local_paths(out, tmp_path)


def assert_no_local_paths(model_file: Path, tmp_path: Path) -> None:
    """A model file meant to be shared names no file of the exporting machine (torch, thce, the run folder)."""
    written = model_file.read_bytes()
    if zipfile.is_zipfile(model_file):  # TorchScript: the records of the archive, uncompressed
        with zipfile.ZipFile(model_file) as archive:
            written = b"".join(archive.read(name) for name in archive.namelist())
    for local in (Path(torch.__file__).parent.parent, Path(thce.__file__).parent, tmp_path):
        assert str(local).encode() not in written, (model_file.name, local)


def test_export_errors_and_cli(tmp_path, capsys):
    run = fake_run(tmp_path / "run", encoder="cnn", method="proposed2")
    with pytest.raises(ConfigError, match="TorchScript only"):
        export_run(run, fmt="onnx", out=tmp_path / "m.onnx", inputs="audio")
    with pytest.raises(ConfigError, match="format"):
        export_run(run, fmt="tflite", out=tmp_path / "m.tfl")
    assert main(["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 0
    printed = capsys.readouterr().out
    assert "Parity with PyTorch: max abs difference" in printed and (tmp_path / "m.pt").is_file()
    assert main(["export", str(run), "--format", "torchscript", "--method", "baseline", "--out", str(tmp_path / "b.pt")]) == 2
    assert "no checkpoint for method 'baseline'" in capsys.readouterr().err
    (run / "checkpoints" / "baseline.pt").mkdir()  # a folder of that name is not a checkpoint
    assert main(["export", str(run), "--method", "baseline", "--out", str(tmp_path / "b.pt")]) == 2
    assert f"{run / 'checkpoints' / 'baseline.pt'}: not a file" in capsys.readouterr().err
