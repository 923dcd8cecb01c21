"""Frame-level encoders (issue 30): shapes and strides, per-frame embeddings, centring, the detector and the
triple-header CE over frames, the DCASE 2017 Task 2 baseline as published, config and export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from thce.config_reader import read_table
from thce.encoders import ENCODERS, FrameModelConfig, build_encoder
from thce.errors import ConfigError
from thce.frame_models import (
    DCASE2017_TASK2,
    DCASE2017MLPEncoder,
    FrameCNNEncoder,
    FrameLSTMEncoder,
    build_dcase2017_detector,
)
from thce.losses import triple_header_ce
from thce.models import ClusterLayer, DetectorHead, EmbeddingOutput, EventDetector

MELS = 64
# encoder name -> (output frames for 1003 input frames, embedding dim) with the default config
EXPECTED = {"cnn": (200, 256), "crnn": (200, 128), "lstm": (200, 128), "dcase2017_mlp": (1003, 50)}


def encoder(name: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    normalise = options.pop("normalise", name != "dcase2017_mlp")
    return build_encoder(FrameModelConfig(encoder=name, **options), n_mels=MELS, normalise=normalise)


def test_registry_names_every_encoder():
    assert set(ENCODERS["frame_model"]) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shapes_strides_and_unit_frames(name):
    # 1003 frames: not a multiple of the stride; the last 1003 % 5 = 3 frames get no output frame of their own
    net = encoder(name, normalise=True)
    frames, dim = EXPECTED[name]
    assert net.embedding_dim == dim and net.frame_stride == 1003 // frames
    assert FrameModelConfig(encoder=name).stride == net.frame_stride
    x = torch.randn(3, 1003, MELS)
    for mode in (True, False):
        z = net.train(mode)(x)
        assert z.shape == (3, frames, dim)
        assert net.pre_output(x).shape == (3, frames, dim)
        torch.testing.assert_close(z.norm(dim=-1), torch.ones(3, frames))


def test_unnormalised_frames_are_raw():
    net = encoder("dcase2017_mlp").eval()  # the reference's default: no L2 normalisation
    x = torch.randn(2, 50, MELS)
    torch.testing.assert_close(net(x), net.pre_output(x))
    assert not torch.allclose(net(x).norm(dim=-1), torch.ones(2, 50))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_gradients_reach_every_parameter(name):
    net = encoder(name).train()
    net(torch.randn(2, 100, MELS)).pow(3).sum().backward()  # cubed: a unit vector's sum of squares has no gradient
    for pname, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_eval_is_deterministic_and_train_mode_drops_out(name):
    net = encoder(name, cnn_dropout=0.3, mlp_dropout=0.2)
    x = torch.randn(2, 100, MELS)
    net.eval()
    torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)
    if name != "lstm":  # the paper's LSTM has no dropout
        net.train()
        assert not torch.allclose(net(x), net(x))


def test_cnn_eval_fast_path_gives_the_layers_numbers():
    net = encoder("cnn").eval()
    with torch.no_grad():
        for norm in (m for m in net.features if isinstance(m, torch.nn.BatchNorm2d)):
            norm.weight.copy_(torch.randn_like(norm.weight))  # some negative scales: max becomes min
            norm.running_mean.normal_()
        x = torch.randn(2, 200, MELS)
        torch.testing.assert_close(net.feature_maps(x), net.features(x.unsqueeze(1)), rtol=0, atol=1e-6)


def test_cnn_defaults_are_the_papers_blocks_with_time_pooled_once():
    net = FrameCNNEncoder()
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 32, (7, 7), "same"), (32, 64, (7, 7), "same"),
    ]  # fmt: skip
    assert [m.kernel_size for m in net.features if isinstance(m, torch.nn.MaxPool2d)] == [(5, 4), (1, 4)]
    # a smaller configurable CNN: stride 10 pooled over two blocks, 16 / 32 channels, 3x3
    small = FrameCNNEncoder(channels=(16, 32), kernel=3, pools=((5, 4), (2, 4)))
    assert small.frame_stride == 10 and small(torch.randn(1, 1000, MELS)).shape == (1, 100, 32 * 4)


def test_pool_first_blocks_equal_the_papers_order_in_eval_mode():
    torch.manual_seed(0)
    paper = FrameCNNEncoder(channels=(8, 16))
    fast = FrameCNNEncoder(channels=(8, 16), block_order="pool_first")
    kinds = [type(m).__name__ for m in fast.features]
    assert kinds == ["Conv2d", "MaxPool2d", "ReLU", "BatchNorm2d", "Dropout"] * 2
    with torch.no_grad():
        for norm in (m for m in paper.features if isinstance(m, torch.nn.BatchNorm2d)):
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.1, 2.0)
        for kind in (torch.nn.Conv2d, torch.nn.BatchNorm2d):  # the same layers at other indices
            pairs = zip(*([m for m in net.features if isinstance(m, kind)] for net in (paper, fast)))
            for source, target in pairs:
                target.load_state_dict(source.state_dict())
    x = torch.randn(2, 100, MELS)
    torch.testing.assert_close(fast.eval()(x), paper.eval()(x))
    # in training the batch norm sees the pooled map: other statistics, other numbers
    assert not torch.allclose(fast.train().pre_output(x), paper.train().pre_output(x))
    assert FrameModelConfig(cnn_block_order="pool_first").cnn_block_order == "pool_first"


def test_lstm_stack_and_states_strides():
    torch.manual_seed(0)
    x = torch.randn(2, 103, MELS)
    plain = FrameLSTMEncoder(MELS, 16, normalise=False)  # stride 1: every frame's state
    states = FrameLSTMEncoder(MELS, 16, frame_stride=5, stride_by="states", normalise=False)
    states.load_state_dict(plain.state_dict())
    per_frame = plain(x)[:, :100]
    torch.testing.assert_close(states(x), per_frame.reshape(2, 20, 5, 16).mean(dim=2))
    stacked = FrameLSTMEncoder(MELS, 16, frame_stride=5, normalise=False)
    assert stacked.lstm.input_size == 5 * MELS and stacked(x).shape == (2, 20, 16)
    # the trailing 3 frames are cut before the LSTM: they change nothing
    torch.testing.assert_close(stacked(x), stacked(x[:, :100]))
    # unidirectional, as the paper's: a frame's state does not depend on later frames
    later = x.clone()
    later[:, 50:] = 0
    torch.testing.assert_close(stacked(later)[:, :10], stacked(x)[:, :10])


@pytest.mark.parametrize("rnn_type,layer", [("gru", torch.nn.GRU), ("lstm", torch.nn.LSTM)])
def test_crnn_is_a_bidirectional_rnn_over_the_conv_frames(rnn_type, layer):
    net = encoder("crnn", rnn_hidden_size=32, rnn_type=rnn_type)
    assert type(net.rnn) is layer and net.rnn.bidirectional and net.rnn.input_size == 256 and net.embedding_dim == 64
    assert net(torch.randn(2, 103, MELS)).shape == (2, 20, 64)
    x = torch.randn(1, 200, MELS)
    later = x.clone()
    later[:, 150:] = 0
    assert not torch.allclose(net.eval()(later)[:, :10], net(x)[:, :10])  # the backward direction sees later frames


def test_too_short_inputs_are_refused():
    with pytest.raises(ValueError, match="frames >= 5"):
        encoder("cnn")(torch.randn(1, 4, MELS))
    with pytest.raises(ConfigError, match="channel counts"):
        FrameCNNEncoder(channels=(32,), pools=((5, 4), (1, 4)))
    with pytest.raises(ConfigError, match="mel bands"):
        FrameCNNEncoder(n_mels=8)


@pytest.mark.parametrize("name", ["cnn", "crnn", "lstm"])
def test_centring_calibrates_on_every_frame(name):
    net = encoder(name, centring="fixed").eval()
    layer = net.output
    batches = [net.pre_output(torch.randn(2, 100, MELS) + i) for i in range(2)]  # (2, 20, D) each
    layer.calibrate(batches)
    rows = torch.cat([b.reshape(-1, net.embedding_dim) for b in batches])  # 80 frames
    torch.testing.assert_close(layer.center.running_mean, rows.mean(dim=0))
    torch.testing.assert_close(layer.center.running_var, rows.var(dim=0, unbiased=True))
    flat = EmbeddingOutput(net.embedding_dim, normalise=True, center=True)
    flat.calibrate([rows])
    torch.testing.assert_close(flat.center.running_mean, layer.center.running_mean)
    # the calibrated centring applied per frame: the centred frames have mean 0 and unit variance
    centred = torch.cat([layer.center(b.reshape(-1, net.embedding_dim)) for b in batches])
    torch.testing.assert_close(centred.mean(dim=0), torch.zeros(net.embedding_dim), atol=1e-4, rtol=0)
    # eval mode: each output frame is its pre-output frame centred with those statistics, then L2-normalised
    x = torch.randn(2, 100, MELS) + 1
    pre = net.pre_output(x)
    mean, var = layer.center.running_mean, layer.center.running_var
    expected = torch.nn.functional.normalize((pre - mean) / torch.sqrt(var + layer.center.eps), dim=-1)
    torch.testing.assert_close(net(x), expected)


def test_batch_centring_in_train_mode_uses_all_frames_of_the_batch():
    net = encoder("cnn", centring="batch", cnn_dropout=0.0).train()
    x = torch.randn(2, 100, MELS)
    torch.manual_seed(1)
    pre = net.pre_output(x)  # (2, 20, 256): 40 rows for the batch statistics
    rows = pre.reshape(-1, 256)
    centred = (rows - rows.mean(dim=0)) / torch.sqrt(rows.var(dim=0, unbiased=False) + 1e-5)
    expected = torch.nn.functional.normalize(centred, dim=-1).reshape(pre.shape)
    torch.testing.assert_close(net.output(pre), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_event_detector_works_unchanged_on_frames(name):
    net = encoder(name, normalise=True)
    cluster_class = torch.tensor([0, 0, 1, 2, 3, 3, 3])
    proposed = EventDetector(net, DetectorHead(len(cluster_class), 3), ClusterLayer(net.embedding_dim, cluster_class))
    baseline = EventDetector(encoder(name, normalise=False), DetectorHead(net.embedding_dim, 3))
    frames = EXPECTED[name][0]
    x = torch.randn(2, 1003, MELS)
    for model in (proposed, baseline):
        out = model(x)
        assert out.shape == (2, frames, 3)
        scores = model.detection_scores(out)
        assert scores.shape == (2, frames, 3) and bool(((scores > 0) & (scores < 1)).all())
    h = proposed.cluster_layer(proposed.encoder(x))
    assert h.shape == (2, frames, len(cluster_class))


def test_triple_header_ce_over_frames_is_the_mean_of_its_clips():
    torch.manual_seed(0)
    cluster_class = torch.tensor([0, 0, 1, 2, 2, 2])
    h = torch.randn(3, 7, 6) * 4  # 3 clips x 7 frames x 6 clusters
    index = torch.randint(0, 6, (3, 7))
    flat = triple_header_ce(h.reshape(-1, 6), index.reshape(-1), cluster_class)
    per_clip = torch.stack([triple_header_ce(h[b], index[b], cluster_class) for b in range(3)])
    torch.testing.assert_close(flat, per_clip.mean())
    weights = torch.tensor([1.0, 1.0, 2.0, 0.5, 0.5, 0.5])
    flat_sum = triple_header_ce(h.reshape(-1, 6), index.reshape(-1), cluster_class, weights=weights, reduction="sum")
    clip_sums = [triple_header_ce(h[b], index[b], cluster_class, weights=weights, reduction="sum") for b in range(3)]
    torch.testing.assert_close(flat_sum, torch.stack(clip_sums).sum())
    # every clip one frame: the frame-level loss is the clip-level one
    clips = h[:, 0]
    torch.testing.assert_close(
        triple_header_ce(clips.reshape(-1, 6), index[:, 0].reshape(-1), cluster_class),
        triple_header_ce(clips, index[:, 0], cluster_class),
    )


def test_triple_header_ce_over_frames_by_hand():
    # 2 clips x 2 frames, clusters of classes [0, 0, 1]; beta' = 5, beta'' = 0 (the paper's)
    cluster_class = torch.tensor([0, 0, 1])
    h = torch.tensor([[[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]], [[1.0, 0.0, 4.0], [2.0, 2.0, 2.0]]])
    index = torch.tensor([[0, 1], [2, 0]])

    def minus_log_v(row, k):
        own = row[k]
        same = [row[j] for j in range(3) if j != k and cluster_class[j] == cluster_class[k]]
        other = [row[j] for j in range(3) if cluster_class[j] != cluster_class[k]]
        total = 1.0
        if same:
            total += math.exp(max(same) - 5.0 - own)
        if other:
            total += math.exp(max(other) - 0.0 - own)
        return math.log(total)

    by_hand = [minus_log_v(h[b, t].tolist(), int(index[b, t])) for b in range(2) for t in range(2)]
    # frame (0, 0): log(1 + e^{1-5-3} + e^{0-3}); frame (1, 0): class 1 has one cluster, log(1 + e^{1-4})
    assert by_hand[0] == pytest.approx(math.log(1 + math.exp(-7) + math.exp(-3)))
    assert by_hand[2] == pytest.approx(math.log(1 + math.exp(-3)))
    loss = triple_header_ce(h.reshape(-1, 3), index.reshape(-1), cluster_class)
    assert float(loss) == pytest.approx(sum(by_hand) / 4, rel=1e-6)


def test_dcase2017_mlp_has_the_published_size_for_40_mels_and_5_frames():
    settings = DCASE2017_TASK2
    assert (settings.n_mels, settings.context_frames, settings.hidden_units, settings.dropout) == (40, 5, (50, 50), 0.2)
    for classes in (1, 3):
        model = build_dcase2017_detector(40, classes, encoder=DCASE2017MLPEncoder(40))
        inputs = 40 * 5
        published = (inputs * 50 + 50) + (50 * 50 + 50) + (50 * classes + classes)
        assert sum(p.numel() for p in model.parameters()) == published
        assert model(torch.randn(2, 30, 40)).shape == (2, 30, classes)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3
    for linear in linears:  # Keras' "uniform": U(-0.05, 0.05), zero biases
        assert float(linear.weight.detach().abs().max()) <= 0.05 and not linear.bias.detach().any()
    dropouts = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [0.2, 0.2]
    # the bands come from the input: thce's 64 mels, 320 inputs
    assert DCASE2017MLPEncoder(64).hidden[0].in_features == 320


@pytest.mark.parametrize(
    "dilation,expected_first,expected_last",
    [(1, [0, 0, 0, 1, 2], [7, 8, 9, 9, 9]), (2, [0, 0, 0, 2, 4], [5, 7, 9, 9, 9])],
)
def test_dcase2017_context_is_centred_with_repeated_edges(dilation, expected_first, expected_last):
    # frame t sees t - 2d .. t + 2d (the baseline's FeatureAggregator: floor(5/2) before, the first/last frame repeated)
    net = DCASE2017MLPEncoder(2, context_dilation=dilation)
    x = torch.arange(10, dtype=torch.float32).repeat_interleave(2).reshape(1, 10, 2)  # frame t holds t in both bands
    context = net.context(x)  # (1, 10, 5 * 2), frame-major
    assert context.shape == (1, 10, 10)
    assert context[0, 0, ::2].tolist() == expected_first and context[0, 9, ::2].tolist() == expected_last
    assert context[0, 5, ::2].tolist() == [5 - 2 * dilation, 5 - dilation, 5, 5 + dilation, 5 + 2 * dilation]
    torch.testing.assert_close(context[0, :, 0::2], context[0, :, 1::2])  # both bands of one frame side by side


def test_dcase2017_settings_for_the_training_side():
    s = DCASE2017_TASK2
    assert (s.epochs, s.batch_size_frames, s.learning_rate, s.optimizer) == (200, 256, 0.001, "adam")
    assert (s.threshold, s.median_filter_s, s.event_handling) == (0.5, 0.54, "event-dependent")
    assert s.median_filter_frames(0.05) == 11 and "TUT-ARG/DCASE2017-baseline-system" in s.source


@pytest.mark.parametrize(
    "options,key",
    [
        ({"encoder": "tcn"}, "frame_model.encoder"),
        ({"cnn_kernel": 0}, "frame_model.cnn_kernel"),
        ({"cnn_channels": (32,)}, "frame_model.cnn_pools"),
        ({"cnn_pools": ((5, 4), (0, 4))}, "frame_model.cnn_pools"),
        ({"cnn_dropout": 1.0}, "frame_model.cnn_dropout"),
        ({"centring": "moving"}, "frame_model.centring"),
        ({"cnn_block_order": "relu_last"}, "frame_model.cnn_block_order"),
        ({"encoder": "crnn", "rnn_type": "rnn"}, "frame_model.rnn_type"),
        ({"lstm_stride_by": "max"}, "frame_model.lstm_stride_by"),
        ({"lstm_init": "xavier"}, "frame_model.lstm_init"),
        ({"mlp_hidden": ()}, "frame_model.mlp_hidden"),
        ({"mlp_init": "glorot"}, "frame_model.mlp_init"),
        ({"frame_stride": 4}, "frame_model.frame_stride"),  # the CNN's pools give 5
        ({"encoder": "dcase2017_mlp", "frame_stride": 5}, "frame_model.frame_stride"),
        ({"encoder": "lstm", "frame_stride": 0}, "frame_model.frame_stride"),
    ],
)
def test_config_errors_name_the_key(options, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        FrameModelConfig(**options)


def test_config_reads_from_a_table_and_strides():
    config = read_table(FrameModelConfig, {"encoder": "crnn", "cnn_pools": [[10, 4], [1, 4]], "rnn_hidden_size": 8})
    assert config.cnn_pools == ((10, 4), (1, 4)) and config.stride == 10
    net = build_encoder(config, n_mels=MELS)
    assert net.frame_stride == 10 and net.embedding_dim == 16
    assert FrameModelConfig(encoder="lstm", frame_stride=2).stride == 2
    assert build_encoder(FrameModelConfig(encoder="lstm", frame_stride=2), n_mels=MELS).frame_stride == 2


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name,options", [(name, {}) for name in sorted(EXPECTED)] + [("crnn", {"rnn_type": "lstm"})])
def test_torchscript_export_of_a_frame_detector(tmp_path, name, options):
    from thce.detection.export import export_torchscript, run_exported
    from thce.detection.inference import LogMelScores

    net = encoder(name, normalise=name != "dcase2017_mlp", **options)
    head = DetectorHead(net.embedding_dim, 3)
    module = LogMelScores(EventDetector(net, head), np.zeros(MELS), np.ones(MELS)).eval()
    path = export_torchscript(module, torch.randn(2, 200, MELS), tmp_path / "m.pt")
    x = torch.randn(3, 200, MELS)
    with torch.no_grad():
        expected = module(x).numpy()
    got = run_exported(path, "torchscript", x)
    assert got.shape == (3, 200 // net.frame_stride, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_onnx_export_of_a_frame_cnn_with_cluster_layer(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from thce.detection.export import export_onnx, run_exported
    from thce.detection.inference import LogMelScores

    net = encoder("cnn")
    cluster_class = torch.tensor([0, 1, 2, 3, 3])
    model = EventDetector(net, DetectorHead(5, 3), ClusterLayer(net.embedding_dim, cluster_class))
    module = LogMelScores(model, np.zeros(MELS), np.ones(MELS)).eval()
    path = export_onnx(module, torch.randn(2, 100, MELS), tmp_path / "m.onnx")
    x = torch.randn(3, 100, MELS)
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(run_exported(path, "onnx", x), expected, atol=1e-5, rtol=0)
