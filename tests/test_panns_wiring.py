"""PANNs encoders wired into runs (issue 17, part 2): config, front end, frozen and fine-tuned Algorithm 1,
detect and export on the checkpoint. A randomly initialised Cnn10 saved in the official layout stands in for the
released file; clips are 1 s at 32 kHz."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_panns import official_file, randomise_batch_norms
from thce.audio import LogMel, LogMelConfig
from thce.checkpoint import load_run
from thce.cli import main
from thce.config import config_from_dict, load_config
from thce.data.feature_store import FORMAT_VERSION
from thce.data.features import FeatureCacheInfo
from thce.errors import ConfigError, DataError
from thce.detection.export import PARITY_TOLERANCE, example_inputs, export_run, scoring_module
from thce.detection.inference import ModelScorer
from thce.pretrained import Cnn10, PannsCnn, build_panns_encoder, logmel_config
from thce.training.engine import learning_rate_groups

# TorchScript is deprecated upstream (torch.jit.load warns) but is what deployments without Python still load.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.jit")

TINY = """
seed = 5
methods = ["baseline", "proposed1", "proposed2"]
[synth]
counts = {dog = 4, baby = 4, gun = 4, background = 8}
duration_s = 1.0
[data]
split_fractions = [0.5, 0.25, 0.25]
[features]
duration_s = 1.0
[model]
encoder = "panns_cnn10"
pretrained = "cnn10.pth"
freeze = "FREEZE"
[train]
batch_size = 8
[embedding]
n_iter = 1
epochs = 1
last_epochs = 1
head_only_epochs = 1
[detector]
max_epochs = 1
head_only_max_epochs = 2
patience = 1
[baseline]
max_epochs = 1
patience = 1
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(10)
    model = Cnn10().eval()
    randomise_batch_norms(model)
    return official_file(model, tmp_path_factory.mktemp("panns") / "cnn10.pth")


def write_config(folder: Path, checkpoint: Path, freeze: str, extra: str = "") -> Path:
    (folder / "cnn10.pth").write_bytes(checkpoint.read_bytes())
    path = folder / "panns.toml"
    path.write_text(TINY.replace("FREEZE", freeze) + extra)
    return path


# ---------------------------------------------------------------------------------------------- config, front end


def test_features_follow_the_encoder_and_conflicts_are_errors(tmp_path, checkpoint):
    config = load_config(write_config(tmp_path, checkpoint, "all"))
    assert config.features == logmel_config("Cnn10", duration_s=1.0)
    assert config.features.num_frames == 101 and config.features.n_fft == 1024
    assert config.model.pretrained == str(tmp_path / "cnn10.pth")  # relative to the config file
    with pytest.raises(ConfigError, match=r"features.sample_rate_hz: 16000 is not panns_cnn10's 32000"):
        config_from_dict({"model": {"encoder": "panns_cnn10"}, "features": {"sample_rate_hz": 16000}})
    with pytest.raises(ConfigError, match="model.freeze: 'up_to:conv_block6'"):
        config_from_dict({"model": {"encoder": "panns_cnn10", "freeze": "up_to:conv_block6"}})
    with pytest.raises(ConfigError, match="model.pretrained: only for a PANNs encoder"):
        config_from_dict({"model": {"encoder": "cnn", "pretrained": "x.pth"}})
    with pytest.raises(ConfigError, match="augment: must be off"):
        config_from_dict({"model": {"encoder": "panns_cnn10", "freeze": "all"}, "augment": {"time_shift": True}})
    with pytest.raises(ConfigError, match="not with model.freeze"):
        config_from_dict({"model": {"encoder": "panns_cnn10", "freeze": "all"}, "methods": ["lmle"]})


def test_wrong_variant_and_wrong_file_are_one_line_errors(tmp_path, checkpoint):
    config = config_from_dict({"model": {"encoder": "panns_cnn14_16k", "pretrained": str(checkpoint)}})
    with pytest.raises(DataError, match="holds Cnn10.*choose panns_cnn10"):
        build_panns_encoder(config.model, sample_rate_hz=16000)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    cli_config = tmp_path / "bad.toml"
    cli_config.write_text(TINY.replace("FREEZE", "none").replace("cnn10.pth", "bad.pth"))
    assert main(["-q", "experiment", str(cli_config), "--out", str(tmp_path / "out")]) == 2


@pytest.mark.parametrize("variant", ["Cnn10", "Cnn14_16k"])
def test_logmel_equals_the_checkpoints_own_front_end(variant):
    cfg = logmel_config(variant, duration_s=1.0)
    with torch.no_grad():
        net = PannsCnn(variant, classes=None)
        x = 0.1 * torch.randn(2, cfg.clip_samples, generator=torch.Generator().manual_seed(0))
        want = net.logmel(x)
        logmel = LogMel(cfg)
        for got in (logmel(x), torch.from_numpy(logmel.compute(x.numpy()))):
            assert got.shape == want.shape == (2, cfg.num_frames, 64)
            assert (got - want).abs().max().item() < 1e-4  # dB; measured 1.5e-5 over values up to ~30 dB


def test_cache_key_includes_the_front_end_and_keeps_the_papers():
    panns = FeatureCacheInfo.from_paths([], config=logmel_config("Cnn14_16k", duration_s=1.0), shard_size=8)
    same_numbers = dataclasses.replace(panns.config, front_end="paper")
    assert panns.key != FeatureCacheInfo.from_paths([], config=same_numbers, shard_size=8).key
    # the paper's features: the key of the payload without front_end, as before the key existed
    paper = FeatureCacheInfo.from_paths([], config=LogMelConfig(), shard_size=8)
    old = {k: v for k, v in LogMelConfig().to_dict().items() if k != "front_end"}
    checks = paper.checks.to_dict() if paper.checks is not None else None
    payload = {"format": FORMAT_VERSION, "config": old, "checks": checks, "shard_size": 8, "files": []}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
    assert paper.key == hashlib.sha256(blob).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- fine-tuning


def test_freeze_up_to_and_the_encoder_learning_rate(checkpoint):
    config = config_from_dict(
        {"model": {"encoder": "panns_cnn10", "pretrained": str(checkpoint), "freeze": "up_to:conv_block2",
                   "encoder_learning_rate": 1e-5}}
    )  # fmt: skip
    encoder = build_panns_encoder(config.model, sample_rate_hz=32000)
    assert not any(p.requires_grad for p in encoder.panns.conv_block2.parameters())
    assert all(p.requires_grad for p in encoder.panns.conv_block3.parameters())
    encoder.train()
    assert not encoder.panns.conv_block1.bn1.training and encoder.panns.conv_block3.bn1.training
    head = torch.nn.Linear(encoder.embedding_dim, 3)
    module = torch.nn.ModuleList([encoder, head])
    groups = learning_rate_groups(module, list(module.parameters()), 1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 1e-5]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in head.parameters()}


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module", params=["all", "up_to:conv_block3"])
def run(request, tmp_path_factory, checkpoint):
    root = tmp_path_factory.mktemp("run")
    config = write_config(root, checkpoint, request.param)
    out = root / "out"
    assert main(["-q", "experiment", str(config), "--out", str(out)]) == 0
    return request.param, out


def test_runs_train_every_method_and_frozen_caches_embeddings(run, checkpoint):
    freeze, out = run
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"baseline", "proposed1", "proposed2"}
    cached = list((out / "cache" / "embeddings").glob("*.npy"))
    assert len(cached) == (1 if freeze == "all" else 0)
    loaded = load_run(out, "proposed2")
    assert loaded.config.model.pretrained == ""  # the checkpoint holds every weight
    np.testing.assert_array_equal(loaded.normaliser.mean, 0.0)
    np.testing.assert_array_equal(loaded.normaliser.std, 1.0)
    reference = Cnn10(classes=None)
    state = torch.load(checkpoint, weights_only=False)["model"]  # our own test file
    reference.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc_audioset.")})
    trained = loaded.model.encoder.panns
    same = torch.equal(trained.conv_block1.conv1.weight, reference.conv_block1.conv1.weight)
    assert same  # frozen in both modes
    moved = not torch.equal(trained.fc1.weight, reference.fc1.weight)
    assert moved == (freeze != "all")
    if freeze == "all":  # the cached rows are the encoder's embeddings of the clips' features
        rows = np.load(cached[0], mmap_mode="r")
        assert rows.shape[1] == 512 and np.abs(rows).sum() > 0


def test_detect_scores_equal_export_on_the_checkpoint(run, tmp_path):
    _, out = run
    loaded = load_run(out, "proposed2")
    features = loaded.config.features
    audio = example_inputs(features, inputs="audio", batch=2, seed=1).numpy()
    scorer = ModelScorer(loaded)
    assert scorer.support_frames == (0, features.num_frames)
    scores = scorer(audio)
    with torch.no_grad():
        direct = torch.sigmoid(loaded.model(LogMel(features)(torch.from_numpy(audio)))).numpy()
    np.testing.assert_allclose(scores, direct, atol=1e-5)
    result = export_run(out, fmt="torchscript", out=tmp_path / "m.pt", method="proposed2", inputs="audio")
    assert result.max_abs_diff is not None and result.max_abs_diff < PARITY_TOLERANCE
    with torch.no_grad():
        exported = torch.jit.load(str(tmp_path / "m.pt"))(torch.from_numpy(audio)).numpy()
        reference = scoring_module(loaded, inputs="audio")(torch.from_numpy(audio)).numpy()
    np.testing.assert_allclose(exported, scores, atol=PARITY_TOLERANCE)
    np.testing.assert_allclose(reference, scores, atol=PARITY_TOLERANCE)


def test_onnx_export_of_a_panns_run_matches_the_model(run, tmp_path):
    """The PANNs blocks export to ONNX (log-mel windows in, as for every ONNX export), and the file scores what the
    checkpoint's model scores on the PANNs front end's log-mel of the same audio."""
    pytest.importorskip("onnxruntime")
    import onnxruntime

    _, out = run
    loaded = load_run(out, "proposed2")
    features = loaded.config.features
    audio = example_inputs(features, inputs="audio", batch=2, seed=1)
    result = export_run(out, fmt="onnx", out=tmp_path / "m.onnx", method="proposed2", inputs="logmel")
    assert result.max_abs_diff is not None and result.max_abs_diff < PARITY_TOLERANCE
    logmel = LogMel(features)(audio)
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    exported = session.run(None, {session.get_inputs()[0].name: logmel.numpy()})[0]
    with torch.no_grad():
        direct = torch.sigmoid(loaded.model(logmel)).numpy()
    np.testing.assert_allclose(exported, direct, atol=PARITY_TOLERANCE)


def test_frozen_embeddings_are_computed_once_per_clip(tmp_path, checkpoint, monkeypatch):
    from types import SimpleNamespace

    from thce.pretrained import frozen
    from thce.training.data import TrainingData
    from thce.training.engine import RunContext
    from thce.training.metrics_log import MetricsLog

    config = config_from_dict(
        {"model": {"encoder": "panns_cnn10", "pretrained": str(checkpoint), "freeze": "all"},
         "features": {"duration_s": 0.5}, "train": {"batch_size": 4}}
    )  # fmt: skip
    features = np.random.default_rng(0).normal(-40, 10, (6, config.features.num_frames, 64)).astype(np.float32)
    splits = {"train": np.array([0, 1, 2]), "val": np.array([3]), "test": np.array([5])}  # clip 4: unusable
    logmel = TrainingData(features, np.array([0, 1, 3, 0, 2, 3]), splits, ("dog", "baby", "gun"))
    store = SimpleNamespace(directory=tmp_path / "cache" / "abc", key="abc")
    ctx = RunContext(train=config.train, seed=0, log=MetricsLog(None))
    calls = []
    original = PannsCnn.embed
    monkeypatch.setattr(PannsCnn, "embed", lambda self, x: calls.append(len(x)) or original(self, x))
    first = frozen.frozen_training_data(logmel, store, model=config.model, seed=0, ctx=ctx)
    assert sum(calls) == 5 and first.features.shape == (6, 512)  # each usable clip once
    np.testing.assert_array_equal(first.features[4], 0.0)
    second = frozen.frozen_training_data(logmel, store, model=config.model, seed=0, ctx=ctx)
    assert sum(calls) == 5  # read back from the cache, not recomputed
    np.testing.assert_array_equal(np.asarray(first.features), np.asarray(second.features))
    encoder = build_panns_encoder(config.model).eval()
    with torch.no_grad():
        want = encoder.panns_embedding(torch.from_numpy(features[:3])).numpy()
    np.testing.assert_allclose(first.features[:3], want, rtol=1e-5, atol=1e-5)
    assert [p.name for p in (tmp_path / "cache" / "embeddings").iterdir()][0].startswith("abc-panns_cnn10-")
