"""Encoders, the cluster layer (Eq. 4) and the detector."""

import pytest
import torch

from thce.encoders import FrameModelConfig, ModelConfig, build_encoder
from thce.errors import ConfigError
from thce.models import (
    CNNEncoder,
    ClusterLayer,
    DetectorHead,
    EventDetector,
    LSTMEncoder,
    remove_clip_mean,
)


def test_cnn_matches_the_papers_shapes():
    encoder = CNNEncoder()  # 1000 x 64 input, "same" 7x7 convolutions, 5x4 and 100x4 pools
    assert encoder.embedding_dim == 64 * 2 * 4
    convs = [m for m in encoder.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 32, (7, 7)), (32, 64, (7, 7))]
    pools = [m.kernel_size for m in encoder.features if isinstance(m, torch.nn.MaxPool2d)]
    assert pools == [(5, 4), (100, 4)]
    assert [m.p for m in encoder.features if isinstance(m, torch.nn.Dropout)] == [0.3, 0.3]
    z = encoder(torch.randn(3, 1000, 64))
    assert z.shape == (3, 512)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_cnn_eval_pools_first_with_exactly_the_numbers_of_the_layer_order(padding):
    # eval mode pools before ReLU and batch norm (models._pooled_first): bit for bit what the layers in the
    # paper's order give, also for channels whose batch-norm scale is negative (max becomes min) or zero
    torch.manual_seed(0)
    encoder = CNNEncoder(frames=200, n_mels=64, pools=((5, 4), (20, 4)), padding=padding).eval()
    with torch.no_grad():
        for norm in (m for m in encoder.features if isinstance(m, torch.nn.BatchNorm2d)):
            weight = torch.randn_like(norm.weight)
            weight[0] = 0.0
            norm.weight.copy_(weight)
            norm.bias.copy_(torch.randn_like(norm.bias))
            norm.running_mean.copy_(torch.randn_like(norm.running_mean))
            norm.running_var.copy_(torch.rand_like(norm.running_var) + 0.1)
    assert any(n.weight.min() < 0 < n.weight.max() for n in encoder.features if isinstance(n, torch.nn.BatchNorm2d))
    x = torch.randn(6, 200, 64)
    with torch.no_grad():
        in_order = encoder.features(x.unsqueeze(1)).flatten(1)
        assert torch.equal(encoder.pre_output(x), in_order)
        encoder.train()  # train mode: batch statistics and dropout, the layers as they are
        torch.manual_seed(1)
        train_mode = encoder.pre_output(x)
        torch.manual_seed(1)
        assert torch.equal(train_mode, encoder.features(x.unsqueeze(1)).flatten(1))


@pytest.mark.parametrize("frame_level", [False, True])
def test_cnn_weights_are_channels_last_and_old_nchw_state_dicts_load_to_the_same_numbers(frame_level):
    # channels-last conv weights are what makes oneDNN run the CNN fast on a CPU (benchmarks/channels_last.py); a
    # checkpoint written with contiguous (NCHW) weights, as before, loads into them and gives the same embedding
    torch.manual_seed(0)
    if frame_level:
        config = FrameModelConfig(encoder="crnn", cnn_channels=(4, 8), cnn_kernel=3, rnn_hidden_size=4)
        build = lambda: build_encoder(config, n_mels=16)  # noqa: E731
    else:
        build = lambda: CNNEncoder(frames=100, n_mels=16, channels=(4, 8), kernel=3, pools=((5, 4), (20, 4)))  # noqa: E731
    encoder = build().eval()
    convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not all(c.weight.is_contiguous() for c in convs)
    old = {k: v.contiguous() for k, v in encoder.state_dict().items()}  # the NCHW layout of earlier checkpoints
    loaded = build().eval()
    loaded.load_state_dict(old)
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last)
               for m in loaded.modules() if isinstance(m, torch.nn.Conv2d))  # fmt: skip
    nchw = build().to(memory_format=torch.contiguous_format).eval()
    nchw.load_state_dict(old)
    x = torch.randn(3, 100, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), encoder(x), rtol=0, atol=0)
        torch.testing.assert_close(loaded(x), nchw(x), rtol=1e-5, atol=1e-6)


def test_lstm_embedding_is_the_normalised_last_hidden_state():
    torch.manual_seed(0)
    encoder = LSTMEncoder(8, 5, center=False)
    x = torch.randn(2, 30, 8)
    _, (h, _) = encoder.lstm(x)
    torch.testing.assert_close(encoder(x), torch.nn.functional.normalize(h[-1], dim=1))
    raw = LSTMEncoder(8, 5, normalise=False)
    raw.load_state_dict(encoder.state_dict())
    torch.testing.assert_close(raw(x), h[-1])


def _mean_cos(z):
    cos = z @ z.t()
    return ((cos.sum() - cos.diag().sum()) / (len(z) * (len(z) - 1))).item()


def test_centring_spreads_embeddings_over_the_sphere():
    # in eval mode (what clustering, the detector and scoring see), after calibration on eval-mode inputs
    torch.manual_seed(0)
    x = torch.randn(32, 1000, 64)
    plain, centred = CNNEncoder(center=False).eval(), CNNEncoder(center=True).eval()
    centred.features.load_state_dict(plain.features.state_dict(), strict=False)
    with torch.no_grad():
        centred.output.calibrate([centred.pre_output(x)])
        assert _mean_cos(plain(x)) > 0.5  # max-pooled batch-norm outputs share one direction
        assert abs(_mean_cos(centred(x))) < 0.1


@pytest.mark.parametrize("placement", ["after_centring", "before_centring"])
def test_fixed_centring_is_the_same_in_train_and_eval_mode(placement):
    torch.manual_seed(0)
    x = torch.randn(16, 1000, 64)
    encoder = CNNEncoder(center=True, centring="fixed", dropout=0.0, dropout_placement=placement)
    with torch.no_grad():
        encoder.eval()
        pre = encoder.pre_output(x)
        encoder.output.calibrate([pre])
        stats = encoder.output.center.running_mean.clone()
        evaluated = encoder.output(pre)
        encoder.train()
        assert not encoder.output.center.training  # fixed statistics: never batch statistics
        trained = encoder.output(pre[:4])
    torch.testing.assert_close(trained, evaluated[:4])  # a batch of 4 is centred like the whole set
    torch.testing.assert_close(encoder.output.center.running_mean, stats)  # training does not move them


def test_dropout_after_centring_keeps_a_clip_recognisable_in_train_mode():
    # Issue 13: with the second block's dropout before the centring, two dropout masks on one clip gave
    # embeddings with cosine ~0.37 (noise proportional to the common offset, which centring removes).
    torch.manual_seed(0)
    x = torch.randn(48, 1000, 64)

    def same_clip_cosine(placement):
        torch.manual_seed(1)
        encoder = CNNEncoder(center=True, dropout_placement=placement)
        encoder.features[4].p = 0.0  # the first block's dropout off: measure the second block's alone
        with torch.no_grad():
            encoder.eval()
            encoder.output.calibrate([encoder.pre_output(x)])
            encoder.train()
            for m in encoder.modules():  # batch norm on running statistics: only dropout differs
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()
            a, b = encoder(x), encoder(x)
        return torch.nn.functional.cosine_similarity(a, b, dim=1).mean().item()

    before, after = same_clip_cosine("before_centring"), same_clip_cosine("after_centring")
    assert abs(before) < 0.2, before  # what is left after centring is dropout noise
    assert after == pytest.approx(0.7, abs=0.05)  # 1 - p: inverted dropout on the centred vector
    assert [m.p for m in CNNEncoder(center=True, dropout_placement="after_centring").modules()
            if isinstance(m, torch.nn.Dropout)] == [0.3, 0.3]  # moved, not removed


def test_cluster_layer_eq4_with_alpha_folded_in():
    centroids = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    layer = ClusterLayer.from_centroids(centroids, torch.tensor([0, 0, 1]), alpha=10.0)
    e = torch.tensor([[1.0, 0.0]])
    # h = W^T e with W columns alpha * unit centroids: alpha * cosines
    torch.testing.assert_close(layer(e), torch.tensor([[10.0, 0.0, 10.0 / 2**0.5]]))
    assert layer.num_clusters == 3 and layer.cluster_class.tolist() == [0, 0, 1]


def test_event_detector_composition():
    encoder = LSTMEncoder(4, 6)
    layer = ClusterLayer(6, torch.tensor([0, 1, 1, 2]))
    model = EventDetector(encoder, DetectorHead(4, 2), layer)
    out = model(torch.randn(5, 7, 4))
    assert out.shape == (5, 2)
    assert ((model.detection_scores(out) >= 0) & (model.detection_scores(out) <= 1)).all()
    baseline = EventDetector(LSTMEncoder(4, 6, normalise=False), DetectorHead(6, 2))
    assert baseline(torch.randn(5, 7, 4)).shape == (5, 2)


def test_bad_model_config():
    with pytest.raises(ConfigError, match="too small"):
        build_encoder(ModelConfig(), frames=200, n_mels=64)
    with pytest.raises(ConfigError, match="model.encoder"):
        build_encoder(ModelConfig(encoder="gru"), frames=1000, n_mels=64)


def test_one_factory_builds_every_encoder():
    from thce.encoders import ENCODERS
    from thce.pretrained import CachedPannsEncoder, PannsEncoder

    assert list(ENCODERS) == ["model", "frame_model"]
    assert list(ENCODERS["model"])[:2] == ["cnn", "lstm"] and "panns_cnn10" in ENCODERS["model"]
    built = {
        name: build_encoder(ModelConfig(encoder=name, cnn_pools=((2, 2), (10, 2))), frames=20, n_mels=64)
        for name in ("cnn", "lstm", "panns_cnn10")
    }
    assert [type(e) for e in built.values()] == [CNNEncoder, LSTMEncoder, PannsEncoder]
    assert built["panns_cnn10"].embedding_dim == 512
    frozen = ModelConfig(encoder="panns_cnn10", freeze="all")
    assert frozen.cached_embeddings and ENCODERS["model"]["panns_cnn10"].normalises_inputs
    assert isinstance(build_encoder(frozen, frames=20, n_mels=64, cached=True), CachedPannsEncoder)
    with pytest.raises(ConfigError, match="model.freeze: only for a PANNs encoder"):
        ModelConfig(encoder="cnn", freeze="all")
    with pytest.raises(ValueError, match="needs the clip's number of frames"):
        build_encoder(ModelConfig(encoder="lstm"), n_mels=64)


def test_the_factory_builds_the_encoder_a_runs_config_names_clip_or_frame_level():
    from thce.config import load_config
    from thce.encoders import FrameModelConfig, encoder_table
    from thce.frame_models import DCASE2017MLPEncoder, FrameCNNEncoder, FrameLSTMEncoder

    clip = load_config(None, ["model.encoder=lstm", "frame_model.encoder=crnn"])
    frame = load_config(None, ["model.encoder=lstm", "frame_model.encoder=crnn", "data.strong_labels=true"])
    assert encoder_table(clip) is clip.model and encoder_table(frame) is frame.frame_model
    crnn = build_encoder(encoder_table(frame), n_mels=64)
    assert isinstance(crnn, FrameCNNEncoder) and crnn.rnn is not None and crnn.frame_stride == 5
    built = {name: type(build_encoder(FrameModelConfig(encoder=name), n_mels=64)) for name in ("lstm", "dcase2017_mlp")}
    assert built == {"lstm": FrameLSTMEncoder, "dcase2017_mlp": DCASE2017MLPEncoder}
    with pytest.raises(ConfigError, match="frame_model.encoder: cnn cannot train on cached embeddings"):
        build_encoder(FrameModelConfig(), n_mels=64, cached=True)
    with pytest.raises(ConfigError, match="frame_model.encoder: 'panns_cnn10' is not one of cnn, crnn, lstm, dcase"):
        FrameModelConfig(encoder="panns_cnn10")


def test_centring_is_calibrated_before_the_first_clustering():
    import numpy as np

    from thce.training.data import TrainingData, calibrate_centring, embed
    from thce.training.engine import RunContext

    torch.manual_seed(0)
    features = (np.random.default_rng(0).normal(size=(40, 20, 4)) + 3.0).astype(np.float32)
    data = TrainingData(features, np.zeros(40, dtype=np.int64), {"train": np.arange(40)}, ("a",))
    encoder = LSTMEncoder(4, 6, center=True)
    before = embed(encoder, data, np.arange(40), RunContext())
    rng = torch.get_rng_state()
    calibrate_centring(encoder, data, np.arange(40), RunContext())
    assert torch.equal(torch.get_rng_state(), rng)
    after = embed(encoder, data, np.arange(40), RunContext())
    raw = encoder.output.center.running_mean
    _, (h, _) = encoder.lstm(torch.from_numpy(features))
    torch.testing.assert_close(raw, h[-1].mean(dim=0), atol=1e-5, rtol=1e-4)  # the training split's mean
    assert (after @ after.t()).mean() < (before @ before.t()).mean()


def test_eval_passes_take_fewer_long_clips_at_a_time_and_embed_the_same(monkeypatch):
    import numpy as np

    from thce.training import data as training_data
    from thce.training.data import TrainingData, embed, eval_batch_size
    from thce.training.engine import RunContext, TrainConfig

    def clips(frames: int) -> TrainingData:
        features = np.zeros((2, frames, 4), dtype=np.float32)
        return TrainingData(features, np.zeros(2, dtype=np.int64), {"train": np.arange(2)}, ("a",))

    ctx = RunContext(train=TrainConfig(batch_size=16))
    assert [eval_batch_size(clips(frames), ctx) for frames in (1000, 3000, 500, 100_000)] == [256, 85, 512, 16]
    # an embedding does not depend on how many clips share its pass (eval mode)
    torch.manual_seed(0)
    features = np.random.default_rng(0).normal(size=(40, 20, 4)).astype(np.float32)
    data = TrainingData(features, np.zeros(40, dtype=np.int64), {"train": np.arange(40)}, ("a",))
    encoder = LSTMEncoder(4, 6)
    whole = embed(encoder, data, np.arange(40), ctx)
    monkeypatch.setattr(training_data, "EVAL_FRAMES", 20 * 3)  # 3 clips per pass
    torch.testing.assert_close(embed(encoder, data, np.arange(40), RunContext(train=TrainConfig(batch_size=1))), whole)


def test_cnn_sees_the_whole_clip():
    """An event in the last second must move the embedding (with valid padding it would not: see models.py)."""
    torch.manual_seed(0)
    encoder = CNNEncoder().eval()
    x = torch.randn(1, 1000, 64)
    late = x.clone()
    late[:, 900:] += 5.0
    assert not torch.allclose(encoder(x), encoder(late))
    blind = CNNEncoder(padding="valid").eval()
    torch.testing.assert_close(blind(x), blind(late))  # frames after ~535 never reach the embedding


def _first_frame_sensitivity(init: str) -> float:
    """|d embedding / d frame 0| relative to |d embedding / d frame 999| of a fresh 1000-frame LSTM."""
    torch.manual_seed(0)
    encoder = LSTMEncoder(init=init, normalise=False, max_steps=1000)
    x = torch.randn(4, 1000, 64, requires_grad=True)
    encoder(x).pow(2).sum().backward()
    per_frame = x.grad.abs().sum(dim=(0, 2))
    return float(per_frame[0] / per_frame[-1])


def test_chrono_init_lets_a_fresh_lstm_see_the_start_of_a_clip():
    """PyTorch's and Keras' initialisations forget ~half of the cell per step: the last hidden state of a
    1000-frame clip does not depend on its first frames (gradient underflows to 0), so training cannot learn
    events there. Chrono initialisation (Tallec & Ollivier 2018) spreads memory spans up to the clip length."""
    assert _first_frame_sensitivity("pytorch") < 1e-30
    assert _first_frame_sensitivity("keras") < 1e-30
    assert _first_frame_sensitivity("chrono") > 1e-3


def test_lstm_inits_set_the_gate_biases():
    hidden = 16
    keras = LSTMEncoder(8, hidden, init="keras").lstm
    bias = keras.bias_ih_l0 + keras.bias_hh_l0  # PyTorch adds both; gate order input, forget, cell, output
    assert torch.equal(bias[hidden : 2 * hidden], torch.ones(hidden))
    assert torch.equal(bias[:hidden], torch.zeros(hidden)) and torch.equal(bias[2 * hidden :], torch.zeros(2 * hidden))
    w_hh = keras.weight_hh_l0  # (4H, H) with orthonormal columns, Keras' orthogonal (H, 4H) kernel transposed
    torch.testing.assert_close(w_hh.T @ w_hh, torch.eye(hidden), atol=1e-5, rtol=0)
    bound = (6.0 / (8 + 4 * hidden)) ** 0.5  # Glorot-uniform over the whole (4H, F) input kernel
    largest = float(keras.weight_ih_l0.detach().abs().max())
    assert 0.8 * bound < largest <= bound
    chrono = LSTMEncoder(8, hidden, init="chrono", max_steps=100).lstm
    bias = chrono.bias_ih_l0 + chrono.bias_hh_l0
    forget = bias[hidden : 2 * hidden]
    assert bool((forget >= 0).all()) and bool((forget <= torch.log(torch.tensor(99.0))).all())
    torch.testing.assert_close(bias[:hidden], -forget)
    with pytest.raises(ConfigError, match="lstm_init"):
        LSTMEncoder(8, hidden, init="xavier")
    with pytest.raises(ConfigError, match="lstm_init"):
        ModelConfig(encoder="lstm", lstm_init="xavier").validate()


def test_normalised_cluster_layer_gives_alpha_times_cosine_whatever_the_column_norms():
    centroids = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    layer = ClusterLayer.from_centroids(centroids, torch.tensor([0, 0, 1]), alpha=10.0, normalised=True)
    e = torch.tensor([[1.0, 0.0]])
    torch.testing.assert_close(layer(e), torch.tensor([[10.0, 0.0, 10.0 / 2**0.5]]))
    with torch.no_grad():
        layer.weight.mul_(torch.tensor([[5.0], [0.1], [2.0]]))  # column norms change, directions do not
    torch.testing.assert_close(layer(e), torch.tensor([[10.0, 0.0, 10.0 / 2**0.5]]))
    free = ClusterLayer.from_centroids(centroids, torch.tensor([0, 0, 1]), alpha=10.0)
    assert free.scale is None and layer.scale == 10.0
    assert set(layer.state_dict()) == set(free.state_dict())  # same checkpoint layout


def test_checkpoint_rebuilds_a_normalised_cluster_layer():
    from thce.checkpoint import build_detector
    from thce.config import config_from_dict

    config = config_from_dict({"model": {"encoder": "lstm", "lstm_hidden_size": 4},
                               "features": {"duration_s": 0.2}, "embedding": {"normalise_w": True, "alpha": 7.0}})
    layer = ClusterLayer.from_centroids(torch.randn(3, 4), torch.tensor([0, 1, 3]), alpha=7.0, normalised=True)
    encoder = build_encoder(config.model, frames=config.features.num_frames, n_mels=config.features.n_mels)
    model = EventDetector(encoder, DetectorHead(3, 3), layer)
    rebuilt = build_detector(config, model.state_dict(), 3, "proposed2", [4, 4, 4, 20])
    assert rebuilt.cluster_layer.scale == 7.0
    x = torch.randn(2, config.features.num_frames, config.features.n_mels)
    torch.testing.assert_close(rebuilt(x), model.eval()(x))


def test_lstm_pooling_takes_the_last_the_mean_or_the_max_hidden_state():
    torch.manual_seed(0)
    x = torch.randn(3, 12, 8)
    encoders = {p: LSTMEncoder(8, 6, normalise=False, init="chrono", pooling=p) for p in ("last", "mean", "max")}
    for encoder in encoders.values():
        encoder.load_state_dict(encoders["last"].state_dict())
    with torch.no_grad():
        cell, state, states = encoders["last"].lstm, None, []
        for t in range(x.shape[1]):  # the recurrence one step at a time
            _, state = cell(x[:, t : t + 1], state)
            states.append(state[0][0])
        states = torch.stack(states, dim=1)  # (B, T, H)
        expected = {"last": states[:, -1], "mean": states.mean(dim=1), "max": states.max(dim=1).values}
        for pooling, encoder in encoders.items():
            torch.testing.assert_close(encoder(x), expected[pooling])
    normalised = LSTMEncoder(8, 6, pooling="max")(x)
    torch.testing.assert_close(normalised.norm(dim=1), torch.ones(3))


def test_lstm_pooling_over_time_gives_every_step_a_direct_gradient():
    """With the last state, a fresh PyTorch-initialised LSTM's embedding ignores a long clip's first frames; the
    mean over time does not (each state enters the embedding directly)."""
    for pooling, first_to_last in (("last", 1e-30), ("mean", 1e-2)):
        torch.manual_seed(0)
        encoder = LSTMEncoder(8, 16, init="pytorch", pooling=pooling)
        x = torch.randn(2, 1000, 8, requires_grad=True)
        encoder(x).pow(2).sum().backward()
        per_frame = x.grad.abs().sum(dim=(0, 2))
        ratio = float(per_frame[0] / per_frame[-1])
        assert (ratio < first_to_last) if pooling == "last" else (ratio > first_to_last)


def test_lstm_pooling_is_checked():
    with pytest.raises(ConfigError, match="model.lstm_pooling: 'attention' is not one of last, mean, max"):
        ModelConfig(encoder="lstm", lstm_pooling="attention")
    with pytest.raises(ConfigError, match="model.lstm_pooling"):
        LSTMEncoder(8, 4, pooling="sum")
    encoder = build_encoder(ModelConfig(encoder="lstm", lstm_pooling="mean"), frames=20, n_mels=8)
    assert encoder.pooling == "mean"


def test_remove_clip_mean_takes_each_clips_band_means_over_time():
    x = torch.tensor([[[1.0, 10.0], [3.0, 10.0], [5.0, 16.0]]])  # (1 clip, 3 frames, 2 bands)
    expected = torch.tensor([[[-2.0, -2.0], [0.0, -2.0], [2.0, 4.0]]])
    torch.testing.assert_close(remove_clip_mean(x), expected)
    torch.testing.assert_close(remove_clip_mean(torch.cat([x, x + 7.0])), torch.cat([expected, expected]))


@pytest.mark.parametrize("encoder", ["cnn", "lstm"])
def test_clip_mean_removal_makes_an_encoder_blind_to_a_recordings_level_and_colour(encoder):
    """With model.remove_clip_mean a constant offset per band (a louder place, another microphone's response: a
    gain per band on the energies) does not change the embedding; without it, it does."""
    torch.manual_seed(0)
    x = torch.randn(3, 40, 8)
    colour = torch.linspace(-3.0, 3.0, 8)  # log-energy offset per band
    for removed in (True, False):
        config = ModelConfig(encoder=encoder, remove_clip_mean=removed, cnn_pools=((2, 2), (20, 2)))
        net = build_encoder(config, frames=40, n_mels=8).eval()
        with torch.no_grad():
            same = torch.allclose(net(x), net(x + colour), atol=1e-5)
        assert same == removed


def test_clip_mean_removal_is_refused_for_panns():
    with pytest.raises(ConfigError, match="model.remove_clip_mean: not for a PANNs encoder"):
        ModelConfig(encoder="panns_cnn14", remove_clip_mean=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (cuDNN's packed LSTM weights)")
def test_a_copied_lstm_encoder_runs_on_packed_cudnn_weights():
    import copy
    import warnings

    encoder = copy.deepcopy(LSTMEncoder(n_mels=8, hidden_size=16).cuda())  # as Proposed1's model is kept
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*contiguous chunk of memory.*")
        encoder(torch.randn(3, 20, 8, device="cuda"))
