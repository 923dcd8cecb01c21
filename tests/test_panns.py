"""PANNs encoders (thce.pretrained): official state-dict layout, checkpoint files in the released layout read with
weights_only=True, front-end parity with the checkpoint's own STFT kernels and mel matrix, errors."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from thce.audio import mel_filterbank
from thce.errors import ConfigError, DataError, OutputError
from thce.pretrained import (
    PANNS_VARIANTS,
    Cnn10,
    Cnn14_16k,
    PannsCnn,
    PannsEncoder,
    convert_panns_checkpoint,
    detect_variant,
    feature_settings,
    load_panns_checkpoint,
    mel_matrix,
    official_layout,
    panns_variant,
    safetensors_available,
    stft_kernels,
)


def official_file(model: PannsCnn, path: Path, *, legacy: bool = False) -> Path:
    """``model`` saved as the official training script saves it: iteration, state dict, numpy sampler state."""
    sampler = {
        "indexes_per_class": [np.arange(7, dtype=np.int64), np.arange(3, dtype=np.int32)],
        "queue": [3, 1, 2],
        "pointers_of_classes": [0, 2],
        "random_state": np.random.RandomState(1234).get_state(),  # ('MT19937', uint32 key, pos, has_gauss, cached)
    }
    checkpoint = {"iteration": 600000, "model": model.state_dict(), "sampler": sampler}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    return path


def with_numpy1_spelling(source: Path, destination: Path) -> Path:
    """``source`` rewritten as numpy 1.x pickles arrays (``numpy.core.multiarray._reconstruct``), as in the
    released files."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(destination, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(info.filename, data)
    return destination


def waveform(variant: str, seconds: float = 0.5, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, round(seconds * panns_variant(variant).sample_rate_hz), generator=g)


def randomise_batch_norms(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-trivial running statistics and affine parameters, so that a round trip that lost them would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.num_batches_tracked.fill_(12345)


@pytest.fixture(scope="module")
def cnn10(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cnn10, Path]:
    torch.manual_seed(10)
    model = Cnn10().eval()
    randomise_batch_norms(model)
    return model, official_file(model, tmp_path_factory.mktemp("panns") / "Cnn10_mAP=0.380.pth")


@pytest.fixture(scope="module")
def cnn14_16k(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cnn14_16k, Path]:
    torch.manual_seed(14)
    model = Cnn14_16k().eval()
    randomise_batch_norms(model)
    return model, official_file(model, tmp_path_factory.mktemp("panns") / "Cnn14_16k_mAP=0.438.pth")


# ----------------------------------------------------------------------------------------------------------------------
# Architecture


def test_state_dict_has_the_official_keys_and_shapes():
    # key names of qiuqiangkong/audioset_tagging_cnn pytorch/models.py (torchlibrosa front end); shapes of
    # Cnn14_16k_mAP=0.438.pth as listed in that repository's issue 18
    layout = official_layout("Cnn14_16k")
    assert list(layout)[:9] == [
        "spectrogram_extractor.stft.conv_real.weight",
        "spectrogram_extractor.stft.conv_imag.weight",
        "logmel_extractor.melW",
        "bn0.weight",
        "bn0.bias",
        "bn0.running_mean",
        "bn0.running_var",
        "bn0.num_batches_tracked",
        "conv_block1.conv1.weight",
    ]
    assert layout["spectrogram_extractor.stft.conv_real.weight"] == (257, 1, 512)
    assert layout["logmel_extractor.melW"] == (257, 64)
    assert layout["conv_block1.conv1.weight"] == (64, 1, 3, 3)
    assert layout["conv_block1.conv2.weight"] == (64, 64, 3, 3)
    assert layout["conv_block6.bn2.running_var"] == (2048,)
    assert layout["fc1.weight"] == (2048, 2048)
    assert layout["fc_audioset.weight"] == (527, 2048)
    block = ["conv1.weight", "conv2.weight"] + [
        f"{bn}.{p}"
        for bn in ("bn1", "bn2")
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    ]
    head = ["fc1.weight", "fc1.bias", "fc_audioset.weight", "fc_audioset.bias"]
    for name, blocks in (("Cnn14_16k", 6), ("Cnn14", 6), ("Cnn10", 4)):
        expected = list(layout)[:8] + [f"conv_block{i}.{k}" for i in range(1, blocks + 1) for k in block] + head
        assert list(official_layout(name)) == expected
        with torch.device("meta"):
            ours = {k: tuple(t.shape) for k, t in PannsCnn(name).state_dict().items()}
        assert list(ours.items()) == list(official_layout(name).items())


def test_parameter_counts_match_the_published_ones():
    # PANNs paper: Cnn14 80.8M parameters. The frozen front end (STFT kernels, melW) is stored in the checkpoints
    # as well: Cnn10's 6,302,735 float32 values are 25,210,940 bytes of the 25,237,595-byte Cnn10_mAP=0.380.pth
    counts = {}
    for name in PANNS_VARIANTS:
        with torch.device("meta"):
            model = PannsCnn(name)
        counts[name] = (
            sum(p.numel() for p in model.parameters() if p.requires_grad),
            sum(p.numel() for p in model.parameters()),
        )
    assert counts == {
        "Cnn14_16k": (80_753_615, 81_033_231),
        "Cnn14": (80_753_615, 81_837_071),
        "Cnn10": (5_219_279, 6_302_735),
    }


@pytest.mark.parametrize("name", ["Cnn14_16k", "Cnn14", "Cnn10"])
def test_encoder_embedding_shapes(name):
    variant = panns_variant(name)
    with torch.device("meta"):  # shapes only: no 80M-parameter initialisation
        encoder = PannsEncoder(name).eval()
        embedding = encoder(torch.empty(2, 101, 64))
        from_audio = encoder.forward_waveform(torch.empty(2, variant.sample_rate_hz))
    assert encoder.embedding_dim == {"Cnn10": 512}.get(name, 2048)
    assert embedding.shape == from_audio.shape == (2, encoder.embedding_dim)
    assert encoder.panns.fc_audioset is None


def test_encoder_embedding_is_pannss_and_feeds_the_embedding_output(cnn10):
    model, _ = cnn10
    x = waveform("Cnn10")
    raw = PannsEncoder("Cnn10", normalise=False).eval()
    raw.panns.load_official(model.state_dict())
    normalised = PannsEncoder("Cnn10", normalise=True, center=True).eval()
    normalised.panns.load_official(model.state_dict())
    with torch.no_grad():
        reference = model(x)
        logmel = model.logmel(x)
        torch.testing.assert_close(raw(logmel), reference, rtol=0, atol=0)
        torch.testing.assert_close(raw.forward_waveform(x), reference, rtol=0, atol=0)
        normalised.output.calibrate([normalised.pre_output(logmel)])
        torch.testing.assert_close(normalised(logmel).norm(dim=1), torch.ones(2))
    assert (reference >= 0).all() and reference.shape == (2, 512)  # relu(fc1)


def test_embedding_dropout_moves_after_the_centring():
    with torch.device("meta"):
        centred = PannsEncoder("Cnn10", normalise=True, center=True)
        plain = PannsEncoder("Cnn10", normalise=True, center=False)
    assert centred.embedding_dropout == 0.0 and centred.output.dropout.p == 0.5
    assert plain.embedding_dropout == 0.5 and plain.output.dropout is None


def official_forward(
    state: dict[str, torch.Tensor], wave: torch.Tensor, variant: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """PANNs' eval-mode forward written out from the checkpoint tensors alone: (embedding, clipwise_output)."""
    v = panns_variant(variant)

    def bn(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.batch_norm(
            x, state[f"{name}.running_mean"], state[f"{name}.running_var"], state[f"{name}.weight"],
            state[f"{name}.bias"], training=False, eps=1e-5,
        )  # fmt: skip

    logmel = reference_logmel(state, wave, v.hop)[:, None]  # (B, 1, T, M)
    x = bn(logmel.transpose(1, 3), "bn0").transpose(1, 3)
    for i, pool in enumerate(v.pools, start=1):
        x = F.relu(bn(F.conv2d(x, state[f"conv_block{i}.conv1.weight"], padding=1), f"conv_block{i}.bn1"))
        x = F.relu(bn(F.conv2d(x, state[f"conv_block{i}.conv2.weight"], padding=1), f"conv_block{i}.bn2"))
        x = F.avg_pool2d(x, kernel_size=(pool, pool))
    x = torch.mean(x, dim=3)
    x = torch.max(x, dim=2)[0] + torch.mean(x, dim=2)
    embedding = F.relu(F.linear(x, state["fc1.weight"], state["fc1.bias"]))
    return embedding, torch.sigmoid(F.linear(embedding, state["fc_audioset.weight"], state["fc_audioset.bias"]))


def reference_logmel(state: dict[str, torch.Tensor], wave: torch.Tensor, hop: int) -> torch.Tensor:
    """Log-mel (B, T, M) in dB computed directly from a checkpoint's STFT kernels and mel matrix (torchlibrosa's
    Spectrogram + LogmelFilterBank with ref 1.0, amin 1e-10, top_db None)."""
    real_w = state["spectrogram_extractor.stft.conv_real.weight"]
    imag_w = state["spectrogram_extractor.stft.conv_imag.weight"]
    n_fft = real_w.shape[-1]
    x = F.pad(wave[:, None, :], (n_fft // 2, n_fft // 2), mode="reflect")
    power = F.conv1d(x, real_w, stride=hop) ** 2 + F.conv1d(x, imag_w, stride=hop) ** 2  # (B, bins, T)
    mel = power.transpose(1, 2) @ state["logmel_extractor.melW"]
    return 10.0 * torch.log10(torch.clamp(mel, min=1e-10))


def test_network_computes_the_official_forward(cnn10):
    model, _ = cnn10
    x = waveform("Cnn10", seed=3)
    with torch.no_grad():
        embedding, clipwise = official_forward(model.state_dict(), x, "Cnn10")
        ours = model(x)
        torch.testing.assert_close(ours, embedding, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.clipwise(ours), clipwise, rtol=1e-5, atol=1e-6)


def test_too_short_inputs_are_config_errors():
    with torch.device("meta"):
        model = PannsCnn("Cnn14", classes=None)
        with pytest.raises(ConfigError, match="31 frames are too few, the pools need 32"):
            model.embed(torch.empty(1, 31, 64))
        with pytest.raises(ConfigError, match=r"expected log-mel \(batch, frames, 64\)"):
            model.embed(torch.empty(1, 100, 40))
    with pytest.raises(ConfigError, match="too few for an FFT of 1024"):
        PannsCnn("Cnn10").logmel(torch.zeros(1, 400))


# ----------------------------------------------------------------------------------------------------------------------
# Front end


def test_front_end_log_mel_equals_the_one_from_the_checkpoints_tensors(cnn14_16k):
    model, path = cnn14_16k
    state = load_panns_checkpoint(path, "Cnn14_16k")
    x = waveform("Cnn14_16k", seconds=1.5, seed=5)
    with torch.no_grad():
        ours = model.logmel(x)
        expected = reference_logmel(state, x, hop=160)
    assert ours.shape == (2, 1 + x.shape[1] // 160, 64)
    diff = (ours - expected).abs().max().item()
    assert diff <= 1e-4, f"max abs diff {diff:.3g} dB"  # measured: 0 (identical operations on the same tensors)


@pytest.mark.parametrize("n_fft", [512, 1024])
def test_stft_kernels_are_torchlibrosas_and_a_hann_windowed_dft(n_fft):
    real, imag = stft_kernels(n_fft)
    assert real.shape == imag.shape == (n_fft // 2 + 1, 1, n_fft) and real.dtype == torch.float32
    # torchlibrosa's construction: DFT matrix omega^(x*y), omega = exp(-2 pi i / n), times librosa's periodic Hann
    x, y = np.meshgrid(np.arange(n_fft), np.arange(n_fft))
    w = np.power(np.exp(-2j * np.pi / n_fft), x * y)[:, : n_fft // 2 + 1]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    expected = w * hann[:, None]
    assert np.abs(real[:, 0].double().numpy() - expected.real.T).max() < 1e-6
    assert np.abs(imag[:, 0].double().numpy() - expected.imag.T).max() < 1e-6
    # and the conv1d STFT equals torch.stft's
    name = "Cnn14_16k" if n_fft == 512 else "Cnn10"
    hop = panns_variant(name).hop
    wave = waveform(name, seconds=0.1, seed=7)
    with torch.no_grad():
        re, im = PannsCnn(name, classes=None).spectrogram_extractor.stft(wave)
    window = torch.hann_window(n_fft)  # periodic
    spec = torch.stft(wave, n_fft, hop, window=window, center=True, pad_mode="reflect", return_complex=True)
    torch.testing.assert_close(re, spec.real.transpose(1, 2), rtol=0, atol=1e-4)
    torch.testing.assert_close(im, spec.imag.transpose(1, 2), rtol=0, atol=1e-4)


def test_feature_settings_follow_the_variant():
    s16 = feature_settings("panns_cnn14_16k")
    assert (s16.sample_rate_hz, s16.n_fft, s16.win_samples, s16.hop_samples, s16.n_mels) == (16000, 512, 512, 160, 64)
    assert (s16.f_min_hz, s16.f_max_hz, s16.frame_length_ms, s16.hop_ms) == (50.0, 8000.0, 32.0, 10.0)
    assert (s16.db_ref, s16.db_amin, s16.db_top_db, s16.normaliser) == (1.0, 1e-10, None, "bn0")
    for name in ("Cnn14", "Cnn10"):
        s = feature_settings(name).to_dict()
        assert s["variant"] == name
        got = (s["sample_rate_hz"], s["n_fft"], s["hop_samples"], s["f_min_hz"], s["f_max_hz"])
        assert got == (32000, 1024, 320, 50.0, 14000.0)
    with pytest.raises(ConfigError, match="unknown PANNs variant 'Cnn6'"):
        feature_settings("Cnn6")


@pytest.mark.parametrize(
    ("name", "rate", "n_fft", "top"), [("Cnn14_16k", 16000, 512, 8000.0), ("Cnn14", 32000, 1024, 14000.0)]
)
def test_mel_matrix_spans_the_variants_band(name, rate, n_fft, top):
    melw = mel_matrix(name).numpy()
    assert melw.shape == (n_fft // 2 + 1, 64) and (melw.max(axis=0) > 0).all()
    support = np.fft.rfftfreq(n_fft, 1 / rate)[(melw > 0).any(axis=1)]
    assert 50.0 < support.min() < 100.0 and top * 0.95 < support.max() < top
    # Slaney normalisation: each wide triangle has unit area in Hz
    np.testing.assert_allclose(melw[:, -20:].sum(axis=0) * rate / n_fft, 1.0, rtol=0.02)


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoint files


def assert_same_network(model: PannsCnn, state: dict[str, torch.Tensor], name: str) -> None:
    """``state`` holds ``model``'s tensors, and a network loaded from it computes what ``model`` computes."""
    assert sorted(state) == sorted(model.state_dict())  # a .safetensors file keeps its keys sorted, not in model order
    for key, tensor in model.state_dict().items():
        assert torch.equal(state[key], tensor), key
    loaded = PannsCnn(name).eval()
    loaded.load_official(state)
    x = waveform(name)
    with torch.no_grad():
        e1, e2 = model(x), loaded(x)
        assert torch.equal(e1, e2)
        assert torch.equal(model.clipwise(e1), loaded.clipwise(e2))


@pytest.mark.parametrize("layout", ["zip", "legacy", "numpy1"])
def test_official_layout_round_trip_cnn10(cnn10, tmp_path, layout):
    model, path = cnn10
    if layout == "legacy":
        path = official_file(model, tmp_path / "legacy.pth", legacy=True)
    elif layout == "numpy1":
        path = with_numpy1_spelling(path, tmp_path / "numpy1.pth")
    assert_same_network(model, load_panns_checkpoint(path, "panns_cnn10", sample_rate_hz=32000), "Cnn10")
    # the allow-list held for that one load only: plain weights-only loading still refuses numpy arrays
    with pytest.raises(Exception, match=r"numpy\.(_)?core\.multiarray\._reconstruct"):
        torch.load(path, weights_only=True)


def test_official_layout_round_trip_cnn14_16k(cnn14_16k):
    model, path = cnn14_16k
    state = load_panns_checkpoint(path, "Cnn14_16k", sample_rate_hz=16000)
    assert sorted(state) == sorted(model.state_dict())  # a .safetensors file keeps its keys sorted, not in model order
    for key, tensor in model.state_dict().items():
        assert torch.equal(state[key], tensor), key
    encoder = PannsEncoder("panns_cnn14_16k", normalise=False).eval()  # the network without its AudioSet head
    encoder.panns.load_official(state)
    x = waveform("Cnn14_16k")
    with torch.no_grad():
        embedding = encoder.forward_waveform(x)
        assert embedding.shape == (2, 2048)
        assert torch.equal(embedding, model(x))


def test_variant_mismatch_names_the_variant_the_file_holds(cnn14_16k, cnn10):
    _, path16 = cnn14_16k
    expected = r"Cnn14_16k_mAP=0.438.pth: holds Cnn14_16k \(16000 Hz.*not Cnn14 \(32000 Hz.*choose panns_cnn14_16k"
    with pytest.raises(DataError, match=expected):
        load_panns_checkpoint(path16, "Cnn14")
    _, path10 = cnn10
    with pytest.raises(DataError, match=r"holds Cnn10 .* not Cnn14_16k .*choose panns_cnn10"):
        load_panns_checkpoint(path10, "panns_cnn14_16k")


def test_decision_level_files_are_refused_by_name(cnn10, tmp_path):
    """Cnn14_DecisionLevelMax has Cnn14's keys and shapes but pools after fc1: loading it as Cnn14 would run."""
    _, path = cnn10
    for name in ("Cnn14_DecisionLevelMax_mAP=0.385.pth", "cnn14_decisionlevelavg.safetensors"):
        renamed = tmp_path / name
        shutil.copyfile(path, renamed)
        with pytest.raises(DataError, match=rf"{re.escape(name)}: by its name a decision-level PANNs model"):
            load_panns_checkpoint(renamed, "Cnn14")
        with pytest.raises(DataError, match="decision-level"):
            convert_panns_checkpoint(renamed)
    assert load_panns_checkpoint(path, "Cnn10")  # the check is on the name, not on every file


def test_sample_rate_mismatch_is_a_config_error(cnn10):
    _, path = cnn10
    with pytest.raises(ConfigError, match="sample rate 16000 Hz does not match Cnn10, which takes 32000 Hz"):
        load_panns_checkpoint(path, "Cnn10", sample_rate_hz=16000)


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_file(cnn10, tmp_path, legacy):
    model, path = cnn10
    if legacy:
        path = official_file(model, tmp_path / "legacy.pth", legacy=True)
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"cut.pth: truncated or not a PyTorch checkpoint \({len(data) // 2} bytes\)"):
        load_panns_checkpoint(cut, "Cnn10")


class Smuggled:
    """Stands for any object a checkpoint should not contain."""

    def __init__(self) -> None:
        self.payload = 1


class Runs:
    def __reduce__(self):
        return (print, ("unpickling ran code",))


@pytest.mark.parametrize(
    ("thing", "named"), [(Smuggled(), "Smuggled"), (Runs(), "print"), (np.ones(3), "Float64DType")]
)
def test_disallowed_pickled_objects_are_refused(cnn10, tmp_path, capsys, thing, named):
    model, _ = cnn10
    path = tmp_path / "odd.pth"
    torch.save({"iteration": 1, "model": model.state_dict(), "sampler": {"extra": thing}}, path)
    with pytest.raises(DataError, match=rf"odd.pth: holds a pickled object .*{named}.*refusing to load it"):
        load_panns_checkpoint(path, "Cnn10")
    assert "unpickling ran code" not in capsys.readouterr().out


def test_files_that_are_not_checkpoints(cnn10, tmp_path):
    model, path = cnn10
    with pytest.raises(DataError, match="nothing.pth: no such file"):
        load_panns_checkpoint(tmp_path / "nothing.pth", "Cnn10")
    html = tmp_path / "page.pth"
    html.write_text("<!DOCTYPE html>\n<html><body>Too many requests</body></html>")
    with pytest.raises(DataError, match="page.pth: an HTML or XML page .* a failed download"):
        load_panns_checkpoint(html, "Cnn10")
    noise = tmp_path / "noise.pth"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DataError, match="noise.pth: truncated or not a PyTorch checkpoint"):
        load_panns_checkpoint(noise, "Cnn10")
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(DataError, match="tensor.pth: not a PANNs checkpoint: expected a dict with a 'model'"):
        load_panns_checkpoint(tensor, "Cnn10")
    other = tmp_path / "other.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, other)
    with pytest.raises(DataError, match=r"other.pth: not a PANNs state dict \(no spectrogram_extractor"):
        load_panns_checkpoint(other, "Cnn10")


def test_missing_unexpected_and_misshapen_keys(cnn10, tmp_path):
    model, _ = cnn10
    state = model.state_dict()
    cases = {
        "missing": (
            {k: t for k, t in state.items() if k != "conv_block2.bn1.running_var"},
            r"keys 1 missing \(conv_block2.bn1.running_var\)",
        ),
        "unexpected": (
            {**state, "fc_transfer.weight": torch.zeros(3, 512)},
            r"keys 1 unexpected \(fc_transfer.weight\)",
        ),
        "shape": (
            {**state, "fc_audioset.bias": torch.zeros(10)},
            r"shapes of fc_audioset.bias \(10,\) \(expected \(527,\)\)",
        ),
    }
    for name, (broken, message) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save({"model": broken}, path)
        with pytest.raises(DataError, match=rf"{name}.pth: not an official Cnn10 state dict: {message}"):
            load_panns_checkpoint(path, "Cnn10")


def test_mel_matrix_of_another_rate_is_refused(cnn10, tmp_path):
    model, _ = cnn10
    state = model.state_dict()
    # same shape as Cnn10's, but for 44.1 kHz audio
    wrong = torch.from_numpy(
        mel_filterbank(sample_rate_hz=44100, n_fft=1024, n_mels=64, f_min_hz=50.0, f_max_hz=14000.0)
    ).float()
    path = tmp_path / "rate.pth"
    torch.save({"model": {**state, "logmel_extractor.melW": wrong}}, path)
    with pytest.raises(DataError, match=r"rate.pth: its mel matrix is not Cnn10's \(32000 Hz"):
        load_panns_checkpoint(path, "Cnn10")


def test_detect_variant_of_unknown_networks(cnn10):
    model, _ = cnn10
    state = dict(model.state_dict())
    assert detect_variant(state) is panns_variant("Cnn10")
    state["logmel_extractor.melW"] = torch.zeros(513, 128)  # Cnn14_mel128-like front end
    expected = "FFT size 1024, 128 mel bands, 4 conv blocks and a 512-d fc1, which is none of"
    with pytest.raises(DataError, match=expected):
        detect_variant(state)


def test_convert_writes_a_plain_state_dict(cnn10, tmp_path):
    model, path = cnn10
    source = tmp_path / path.name
    source.write_bytes(path.read_bytes())
    written = convert_panns_checkpoint(source)
    assert written.parent == tmp_path and written.name.startswith("Cnn10_mAP=0.380.")
    if written.suffix == ".pt":
        plain = torch.load(written, weights_only=True)  # no allow-list needed any more
        assert isinstance(plain, dict) and plain.keys() == model.state_dict().keys()
    assert_same_network(model, load_panns_checkpoint(written, "Cnn10"), "Cnn10")
    with pytest.raises(DataError, match="holds Cnn10"):
        convert_panns_checkpoint(source, tmp_path / "x.pt", variant="Cnn14")


@pytest.mark.skipif(safetensors_available(), reason="safetensors is installed")
def test_safetensors_without_the_package_is_a_clear_error(cnn10, tmp_path):
    _, path = cnn10
    with pytest.raises(OutputError, match=r"x.safetensors: writing .safetensors needs the safetensors package"):
        convert_panns_checkpoint(path, tmp_path / "x.safetensors")
    (tmp_path / "y.safetensors").write_bytes(b"{}")
    with pytest.raises(DataError, match=r"y.safetensors: reading .safetensors files needs the safetensors package"):
        load_panns_checkpoint(tmp_path / "y.safetensors", "Cnn10")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.safetensors"]  # no temporary file left behind
