"""Issue 13: the centring statistics eval mode uses come from eval-mode inputs, and the embedding diagnostics
measure class separation on validation clips (balanced accuracies, within/between-class cosines)."""

import numpy as np
import pytest
import torch

from thce.models import CNNEncoder, LSTMEncoder
from thce.training.data import TrainingData, calibrate_centring
from thce.training.diagnostics import embedding_diagnostics, same_clip_cosine
from thce.training.engine import RunContext, TrainConfig


def _data(n: int = 24, frames: int = 1000, mels: int = 64, seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, frames, mels)).astype(np.float32)
    class_index = np.arange(n) % 3
    splits = {"train": np.arange(n), "val": np.arange(n), "test": np.arange(0)}
    return TrainingData(features, class_index, splits, ("a", "b"))


@pytest.mark.parametrize("centring", ["fixed", "batch"])
def test_centring_statistics_equal_eval_mode_statistics(centring):
    torch.manual_seed(0)
    data = _data()
    encoder = CNNEncoder(center=True, centring=centring)
    ctx = RunContext(train=TrainConfig(batch_size=8))
    encoder.train()
    calibrate_centring(encoder, data, data.splits["train"], ctx)
    assert encoder.training  # mode restored
    encoder.eval()
    with torch.no_grad():
        pre = encoder.pre_output(data.load(data.splits["train"]))
    torch.testing.assert_close(encoder.output.center.running_mean, pre.mean(dim=0))
    torch.testing.assert_close(encoder.output.center.running_var, pre.var(dim=0), rtol=1e-4, atol=1e-6)


def test_calibration_moves_nothing_but_the_centring_statistics():
    torch.manual_seed(0)
    data = _data(n=12, frames=200, mels=16)
    encoder = LSTMEncoder(16, 8, center=True)
    before = {k: v.clone() for k, v in encoder.state_dict().items() if "output.center" not in k}
    rng = torch.get_rng_state()
    calibrate_centring(encoder, data, data.splits["train"], RunContext(train=TrainConfig(batch_size=4)))
    after = {k: v for k, v in encoder.state_dict().items() if "output.center" not in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(rng, torch.get_rng_state())


def test_diagnostics_on_separated_and_on_random_embeddings():
    torch.manual_seed(0)
    # three classes on three orthogonal axes, two clusters each
    truth = torch.arange(60) % 3
    emb = torch.nn.functional.one_hot(truth, 8).float() + 0.05 * torch.randn(60, 8)
    centroids = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 1, 2, 2]), 8).float() + 0.01 * torch.randn(6, 8)
    cluster_class = torch.tensor([0, 0, 1, 1, 2, 2])
    good = embedding_diagnostics(emb, truth, centroids, cluster_class, 3)
    assert good["nearest_cluster_accuracy"] == good["class_centroid_accuracy"] == good["one_nn_accuracy"] == 1.0
    assert good["mean_cos_within_class"] > 0.9 > 0.1 > good["mean_cos_between_classes"]
    noise = embedding_diagnostics(torch.randn(600, 8), torch.arange(600) % 3, centroids, cluster_class, 3)
    for key in ("nearest_cluster_accuracy", "class_centroid_accuracy", "one_nn_accuracy"):
        assert noise[key] == pytest.approx(1 / 3, abs=0.08)


def test_balanced_accuracy_ignores_the_class_ratio():
    # 90 background clips, 10 event clips; everything called background: plain accuracy 0.9, balanced 0.5
    truth = torch.tensor([0] * 10 + [1] * 90)
    emb = torch.tensor([[0.0, 1.0]]).repeat(100, 1)
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    result = embedding_diagnostics(emb, truth, centroids, torch.tensor([0, 1]), 2)
    assert result["nearest_cluster_accuracy"] == pytest.approx(0.5)


def test_same_clip_cosine_is_one_without_dropout_and_restores_state():
    torch.manual_seed(0)
    data = _data(n=8, frames=1000, mels=64)
    ctx = RunContext(train=TrainConfig(batch_size=8))
    no_dropout = CNNEncoder(center=True, dropout=0.0).eval()
    calibrate_centring(no_dropout, data, data.splits["train"], ctx)
    for m in no_dropout.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.track_running_stats = True
    state = {k: v.clone() for k, v in no_dropout.state_dict().items()}
    assert same_clip_cosine(no_dropout, data, np.arange(8), ctx) == pytest.approx(1.0, abs=1e-5)
    assert all(torch.equal(state[k], v) for k, v in no_dropout.state_dict().items())
    assert not no_dropout.training
    with_dropout = CNNEncoder(center=True, dropout=0.3)
    calibrate_centring(with_dropout, data, data.splits["train"], ctx)
    assert same_clip_cosine(with_dropout, data, np.arange(8), ctx) < 0.95
