"""proposed2_aux (beyond the paper): Proposed2's end-to-end tuning with Algorithm 1's triple-header CE kept as an
auxiliary loss. The loss it adds, that it is added in training only, and that the method trains independently of
the others like every method of the registry."""

import copy
import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from thce.checkpoint import load_run
from thce.cli import main
from thce.config import load_config
from thce.errors import ConfigError
from thce.run_data import prepare_data
from thce.losses import TripleHeaderCrossEntropy
from thce.methods import build_detector, build_method_encoder
from thce.models import ClusterLayer
from thce.training.algorithm1 import DetectorConfig, thce_auxiliary_loss, train_end_to_end
from thce.training.data import predict_scores
from thce.training.engine import RunContext

from tests.conftest import TINY_STAGES, tiny_toml, write_config

STAGES = TINY_STAGES.replace("n_iter = 2", "n_iter = 1")


def _loss_fn(weighted: bool = True) -> tuple[TripleHeaderCrossEntropy, torch.Tensor]:
    """Five clusters of two classes in 3-D and the clusters of six training clips."""
    torch.manual_seed(0)
    centroids = torch.nn.functional.normalize(torch.randn(5, 3), dim=1)
    cluster_class = torch.tensor([0, 0, 0, 1, 1])
    assignment = torch.tensor([0, 1, 2, 3, 4, 0])
    loss_fn = TripleHeaderCrossEntropy.from_centroids(
        centroids, cluster_class, alpha=4.0, weighted=weighted, assignment=assignment
    )
    return loss_fn, assignment


def test_auxiliary_loss_is_weighted_eq8_of_the_clips_own_clusters():
    loss_fn, assignment = _loss_fn()
    embedding = SimpleNamespace(loss_fn=loss_fn, clustering=SimpleNamespace(assignment=assignment))
    auxiliary = thce_auxiliary_loss(embedding, weight=0.5)
    h = torch.randn(3, 5)
    positions = np.array([4, 0, 2])  # clips in clusters 4, 0, 2
    expected = 0.5 * loss_fn.loss_from_h(h, torch.tensor([4, 0, 2]))
    assert auxiliary(h, positions).item() == pytest.approx(expected.item(), rel=1e-6)
    # Eq. 8 over the fixed normaliser B x mean weight: weights 1/K_c (3 clusters of class 0, 2 of class 1)
    per_clip = torch.stack([loss_fn.loss_from_h(h[i : i + 1], torch.tensor([k])) for i, k in enumerate([4, 0, 2])])
    assert auxiliary(h, positions).item() == pytest.approx(0.5 * per_clip.mean().item(), rel=1e-6)
    # a mixup batch whose clips are unmixed (lam 1) is the plain loss; mixed, each clip counts as its two clusters
    identity = (torch.ones(3), torch.arange(3))
    assert auxiliary(h, positions, identity).item() == pytest.approx(expected.item(), rel=1e-6)
    lam, perm = torch.full((3,), 0.25), torch.tensor([1, 2, 0])
    mixed = 0.5 * loss_fn.mixed_loss_from_h(h, torch.tensor([4, 0, 2]), lam, perm)
    assert auxiliary(h, positions, (lam, perm)).item() == pytest.approx(mixed.item(), rel=1e-6)


def test_end_to_end_adds_the_auxiliary_loss_in_training_only(tmp_path):
    """An auxiliary loss of constant value (no gradient) leaves training and validation exactly as they were and
    raises every logged training loss by that constant; it sees the cluster-layer outputs of the batch's clips."""
    config = load_config(write_config(tmp_path, tiny_toml(["proposed1", "proposed2"], stages=STAGES)))
    data = prepare_data(config, tmp_path / "run").data
    torch.manual_seed(1)
    encoder = build_method_encoder(config, "proposed2")
    centroids = torch.nn.functional.normalize(torch.randn(6, encoder.embedding_dim), dim=1)
    layer = ClusterLayer.from_centroids(centroids, torch.tensor([0, 1, 2, 3, 3, 3]), 16.0)
    counts = data.class_counts("train")
    model = build_detector(config, "proposed2", encoder, num_events=3, train_class_counts=counts, cluster_layer=layer)
    stage = DetectorConfig(max_epochs=2, patience=2)
    seen: list[np.ndarray] = []

    def constant(h: torch.Tensor, positions: np.ndarray, mix: object) -> torch.Tensor:
        assert h.shape == (len(positions), 6) and mix is None
        seen.append(np.asarray(positions))
        return 0.0 * h.sum() + 7.0

    runs = {}
    for name, auxiliary in (("plain", None), ("aux", constant)):
        torch.manual_seed(2)
        trained, ctx = copy.deepcopy(model), RunContext(train=config.train, seed=3)
        best = train_end_to_end(trained, data, stage, ctx, method="p", start_trained=True, auxiliary=auxiliary)
        runs[name] = (trained, ctx.log.rows, best)
    (plain, plain_rows, plain_best), (aux, aux_rows, aux_best) = runs["plain"], runs["aux"]
    assert aux_best == plain_best
    for a, b in zip(plain.state_dict().values(), aux.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    trained_rows = [(p, a) for p, a in zip(plain_rows, aux_rows, strict=True) if p["epoch"] > 0]
    assert len(trained_rows) == 2
    for p, a in trained_rows:
        assert a["train_loss"] == pytest.approx(p["train_loss"] + 7.0, rel=1e-6)
        assert a["val_loss"] == p["val_loss"]
    train_positions = np.sort(np.concatenate(seen[: len(seen) // 2]))
    np.testing.assert_array_equal(train_positions, np.arange(len(data.splits["train"])))
    with pytest.raises(ValueError, match="needs a model that has one"):
        baseline = build_detector(config, "baseline", build_method_encoder(config, "baseline"), num_events=3,
                                  train_class_counts=counts)  # fmt: skip
        train_end_to_end(baseline, data, stage, RunContext(train=config.train), method="b", auxiliary=constant)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("aux")
    out = {}
    both, alone = ["proposed1", "proposed2", "proposed2_aux"], ["proposed1", "proposed2_aux"]
    for name, methods in (("all", both), ("aux", alone)):
        path = write_config(root, tiny_toml(methods, stages=STAGES), name=f"{name}.toml")
        assert main(["-q", "experiment", str(path), "--out", str(root / name)]) == 0
        out[name] = root / name
    return out


def test_proposed2_aux_is_a_method_of_its_own(runs):
    run_dir = runs["all"]
    results = json.loads((run_dir / "results.json").read_text())
    assert list(results["methods"]) == ["proposed1", "proposed2", "proposed2_aux"]
    assert "proposed2_aux/end-to-end" in results["selection"]
    with (run_dir / "metrics.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["stage"] == "end-to-end"]
    tuned = {m: [r for r in rows if r["method"] == m] for m in ("proposed2", "proposed2_aux")}
    assert len(tuned["proposed2_aux"]) == len(tuned["proposed2"]) == 2  # detector.max_epochs, its own rows
    assert "P2aux" in (run_dir / "report.md").read_text()
    config = load_config(run_dir / "config.toml")
    assert config.proposed2_aux.weight == 1.0
    loaded = load_run(run_dir, "proposed2_aux")  # saved, reloadable, and scores as it scored
    data = prepare_data(config, run_dir).data
    val = data.splits["val"]
    np.testing.assert_allclose(predict_scores(loaded.model, data, val, RunContext()), loaded.val_scores, atol=1e-5)


def test_proposed2_aux_trains_alike_with_or_without_proposed2(runs):
    alone, together = (np.load(runs[name] / "scores.npz") for name in ("aux", "all"))
    for method in ("proposed1", "proposed2_aux"):
        np.testing.assert_array_equal(alone[method], together[method])


def test_weight_must_be_positive(tmp_path, capsys):
    text = tiny_toml(["proposed1", "proposed2_aux"], stages=STAGES) + "[proposed2_aux]\nweight = 0.0\n"
    assert main(["-q", "experiment", str(write_config(tmp_path, text)), "--out", str(tmp_path / "out")]) == 2
    assert "proposed2_aux.weight: must be a number > 0, got 0.0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="starts from proposed1; list both"):
        load_config(write_config(tmp_path, tiny_toml(["baseline", "proposed2_aux"], stages=STAGES), name="b.toml"))
