"""LMLE (Huang et al. 2016): the chunked quintuplet table against a brute-force reference, the triple-header hinge
(Eq. 2) against hand-computed values, a tiny training run, and the scaling benchmark in its tiny mode."""

import json
import math

import numpy as np
import pytest
import torch

from thce.cluster import cluster_per_class
from thce.errors import ConfigError, DataError
from thce.losses.lmle import (
    TripleHeaderHinge,
    eq1_fraction,
    header_validity,
    hinge_headers,
    quintuplets,
    triple_header_hinge,
)
from thce.models import LSTMEncoder
from thce.training.data import TrainingData
from thce.training.engine import RunContext, TrainConfig
from thce.training.metrics_log import MetricsLog
from thce.training.lmle import LMLEConfig, learn_embedding_lmle
from tests.conftest import load_benchmark



# ------------------------------------------------------------------------------------------- brute force


def reference_quintuplets(x, class_index, cluster_index, candidates=None):
    """The definitions of ``quintuplets``' docstring, written out with plain loops over the full distance matrix.

    Distances are sums of squared differences in Python floats; ties keep the first (lowest) index met.
    """
    x = x.tolist()
    cls, clu = class_index.tolist(), cluster_index.tolist()
    n = len(x)
    cand = [True] * n if candidates is None else candidates.tolist()
    dist = [[sum((a - b) ** 2 for a, b in zip(x[i], x[j])) for j in range(n)] for i in range(n)]

    def arg(i, members, farthest):
        best, best_j = None, -1
        for j in members:  # ascending j
            d = dist[i][j]
            if best is None or (d > best if farthest else d < best):
                best, best_j = d, j
        return best_j

    table = []
    for i in range(n):
        own = [j for j in range(n) if j != i and cand[j] and clu[j] == clu[i]]
        rest = [j for j in range(n) if cand[j] and cls[j] == cls[i] and clu[j] != clu[i]]
        other = [j for j in range(n) if cand[j] and cls[j] != cls[i]]
        p_plus = arg(i, own, True) if own else i
        p_minus = arg(i, rest, False) if rest else -1
        p_minus2 = arg(i, rest, True) if rest else p_plus
        negative = arg(i, other, False) if other else -1
        table.append([p_plus, p_minus, p_minus2, negative])
    return torch.tensor(table, dtype=torch.long)


def grid_data(seed: int, n: int = 60):
    """Small integer coordinates (exact distances in float32 and float64, many exact ties and duplicates).

    Class 0: three clusters; class 1: one cluster; class 2: two clusters, one of them a singleton.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-2, 3, (n, 3), generator=g).double()
    cls = torch.randint(0, 3, (n,), generator=g)
    cls[:3] = torch.tensor([0, 1, 2])
    clu = torch.empty(n, dtype=torch.long)
    clu[cls == 0] = torch.randint(0, 3, (int((cls == 0).sum()),), generator=g)
    clu[cls == 1] = 3
    members2 = torch.nonzero(cls == 2).flatten()
    clu[members2] = 4
    clu[members2[0]] = 5  # singleton cluster
    return x, cls, clu


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, 4096])
def test_quintuplets_equal_brute_force_with_ties(seed, chunk_size):
    x, cls, clu = grid_data(seed)
    expected = reference_quintuplets(x, cls, clu)
    assert torch.equal(quintuplets(x, cls, clu, chunk_size=chunk_size), expected)
    assert torch.equal(quintuplets(x.float(), cls, clu, chunk_size=chunk_size), expected)  # exact in float32 too


@pytest.mark.parametrize("chunk_size", [2, 5, 64])
def test_quintuplets_equal_brute_force_with_candidates(chunk_size):
    x, cls, clu = grid_data(3)
    candidates = torch.rand(len(x), generator=torch.Generator().manual_seed(3)) < 0.5
    expected = reference_quintuplets(x, cls, clu, candidates)
    assert torch.equal(quintuplets(x, cls, clu, candidates=candidates, chunk_size=chunk_size), expected)


@pytest.mark.parametrize("chunk_size", [1, 16, 97, 4096])
def test_quintuplets_equal_brute_force_on_clustered_unit_vectors(chunk_size):
    g = torch.Generator().manual_seed(7)
    counts = [40, 40, 20, 120]  # K_c = 2, 2, 1, 6
    cls = torch.repeat_interleave(torch.arange(4), torch.tensor(counts))
    cls = cls[torch.randperm(len(cls), generator=g)]
    x = torch.nn.functional.normalize(torch.randn(len(cls), 8, generator=g, dtype=torch.float64), dim=1)
    clustering = cluster_per_class(x, cls, num_classes=4, seed=0)
    expected = reference_quintuplets(x, cls, clustering.assignment)
    table = quintuplets(x, cls, clustering.assignment, chunk_size=chunk_size)
    assert torch.equal(table, expected)
    # The single-cluster class (2) has no p-, and its p-- is its p+; all anchors have a between-class neighbour.
    single = cls == 2
    assert bool((table[single, 1] == -1).all()) and torch.equal(table[single, 2], table[single, 0])
    assert bool((table[~single, 1] >= 0).all()) and bool((table[:, 3] >= 0).all())


def test_quintuplets_empty_sets_and_hand_example():
    x = torch.tensor([[0.0], [1.0], [3.0], [4.0], [10.0], [11.0]])
    cls = torch.tensor([0, 0, 0, 0, 1, 1])
    clu = torch.tensor([0, 0, 1, 2, 3, 3])  # cluster 1 and 2 are singletons
    table = quintuplets(x, cls, clu)
    assert table.tolist() == [
        [1, 2, 3, 4],  # 0: p+ = 1, nearest other cluster 3.0 (index 2), farthest 4.0 (index 3), n = 10.0
        [0, 2, 3, 4],
        [2, 3, 0, 4],  # singleton: p+ is itself
        [3, 2, 0, 4],
        [5, -1, 5, 3],  # single-cluster class: no p-, p-- = p+; n = the nearest of class 0 (4.0)
        [4, -1, 4, 3],
    ]
    single_class = quintuplets(x, torch.zeros(6, dtype=torch.long), clu)
    assert bool((single_class[:, 3] == -1).all())
    assert header_validity(table).tolist()[4] == [False, False, True]


def test_quintuplets_errors():
    x = torch.zeros(4, 2)
    with pytest.raises(DataError, match="several classes"):
        quintuplets(x, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1]))
    with pytest.raises(DataError, match="shape"):
        quintuplets(x, torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ConfigError, match="chunk_size"):
        quintuplets(x, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 1]), chunk_size=0)


# ----------------------------------------------------------------------------------------- hinge, Eq. (2)


def test_hinge_hand_computed():
    # Unit vectors in 2-D; squared distances from the anchor a = (1, 0):
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p_plus = torch.tensor([[0.6, 0.8], [0.0, 1.0]])  # D = 0.8,  0
    p_minus = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # D = 2.0,  2
    p_minus2 = torch.tensor([[-0.6, 0.8], [-1.0, 0.0]])  # D = 3.2,  2
    negative = torch.tensor([[-1.0, 0.0], [0.0, -1.0]])  # D = 4.0,  4
    g = (0.5, 1.5, 1.0)
    headers = hinge_headers(a, p_plus, p_minus, p_minus2, negative, margins=g)
    # Anchor 0: max(0, 0.5 + 0.8 - 2.0) = 0, max(0, 1.5 + 2.0 - 3.2) = 0.3, max(0, 1.0 + 3.2 - 4.0) = 0.2
    # Anchor 1: max(0, 0.5 + 0 - 2) = 0,     max(0, 1.5 + 2 - 2) = 1.5,     max(0, 1.0 + 2 - 4) = 0
    assert headers.flatten().tolist() == pytest.approx([0.0, 0.3, 0.2, 0.0, 1.5, 0.0], abs=1e-6)
    per_anchor = triple_header_hinge(a, p_plus, p_minus, p_minus2, negative, margins=g, reduction="none")
    assert per_anchor.tolist() == pytest.approx([0.5, 1.5], abs=1e-6)
    assert triple_header_hinge(a, p_plus, p_minus, p_minus2, negative, margins=g).item() == pytest.approx(1.0)
    assert triple_header_hinge(a, p_plus, p_minus, p_minus2, negative, margins=g, reduction="sum").item() == (
        pytest.approx(2.0)
    )
    valid = torch.tensor([[True, False, True], [True, True, True]])
    masked = triple_header_hinge(a, p_plus, p_minus, p_minus2, negative, margins=g, valid=valid, reduction="none")
    assert masked.tolist() == pytest.approx([0.2, 1.5], abs=1e-6)


def test_module_matches_function_and_drops_empty_sets():
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(6, 4, dtype=torch.float64, generator=g), dim=1)
    rows = torch.tensor([[0, 1, 2, 3, 4], [5, 5, -1, 5, 0]])  # second: single-cluster class
    loss = TripleHeaderHinge((0.1, 0.2, 0.3), reduction="none")(emb, rows)
    first = triple_header_hinge(emb[[0]], emb[[1]], emb[[2]], emb[[3]], emb[[4]], margins=(0.1, 0.2, 0.3))
    d_pm2, d_n = (emb[5] - emb[5]).pow(2).sum(), (emb[5] - emb[0]).pow(2).sum()
    second = max(0.0, 0.3 + float(d_pm2) - float(d_n))  # only the class header applies
    assert loss.tolist() == pytest.approx([first.item(), second])
    with pytest.raises(ValueError, match="B, 5"):
        TripleHeaderHinge()(emb, rows[:, :4])
    with pytest.raises(ConfigError, match="three"):
        TripleHeaderHinge((0.1, 0.2))


def test_hinge_gradients_and_eq1_fraction():
    g = torch.Generator().manual_seed(1)
    emb = torch.nn.functional.normalize(torch.randn(5, 3, dtype=torch.float64, generator=g), dim=1).requires_grad_()
    rows = torch.tensor([[0, 1, 2, 3, 4]])
    TripleHeaderHinge((1.0, 1.0, 1.0))(emb, rows).backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    # A layout satisfying Eq. (1) for anchor 0 (on a line): distances 1 < 4 < 9 < 16.
    line = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    table = torch.tensor([[1, 2, 3, 4], [-1, -1, -1, -1], [-1, -1, -1, -1], [-1, -1, -1, -1], [-1, -1, -1, -1]])
    assert eq1_fraction(line, table) == 1.0
    table[0] = torch.tensor([3, 2, 1, 4])  # D(p+) = 9 > D(p-) = 4: violated
    assert eq1_fraction(line, table) == pytest.approx(0.8)


def test_config_validation():
    LMLEConfig().validate()
    for bad in (dict(epochs=-1), dict(rebuild_every=0), dict(candidate_fraction=0.0), dict(margins=(0.1, -1.0, 0.2)),
                dict(margins=(0.1, 0.2)), dict(chunk_size=0)):  # fmt: skip
        with pytest.raises(ConfigError):
            LMLEConfig(**bad).validate()


# ------------------------------------------------------------------------------------------------ training


def tiny_data(seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    counts = [8, 8, 4, 52]  # 2:2:1:13 -> K_c = 2, 2, 1, 13
    class_index = np.repeat(np.arange(4), counts)
    rng.shuffle(class_index)
    means = rng.normal(size=(4, 1, 6)).astype(np.float32)
    features = (means[class_index] + rng.normal(size=(len(class_index), 5, 6))).astype(np.float32)
    order = rng.permutation(len(class_index))
    return TrainingData(
        features=features, class_index=class_index,
        splits={"train": np.sort(order[:56]), "val": np.sort(order[56:])}, classes=("dog", "baby", "gun"),
    )  # fmt: skip


def run_tiny(seed: int = 0):
    torch.manual_seed(seed)
    encoder = LSTMEncoder(n_mels=6, hidden_size=8)
    log = MetricsLog()
    ctx = RunContext(train=TrainConfig(batch_size=16), seed=seed, log=log)
    config = LMLEConfig(epochs=3, rebuild_every=2, kmeans_max_iter=20)
    return learn_embedding_lmle(encoder, tiny_data(seed), config, ctx), log


def test_learn_embedding_lmle_tiny_run():
    data = tiny_data()
    result, log = run_tiny()
    # Two rebuilds (epochs 0 and 2) and three logged epochs with finite losses.
    assert [d["rebuild"] for d in result.diagnostics] == [1, 2]
    assert [d["epochs"] for d in result.diagnostics] == [2, 1]
    rows = [r for r in log.rows if r["method"] == "lmle"]
    assert len(rows) == 3 and all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in rows)
    assert all(0.0 <= r["eq3_val"] <= 1.0 for r in rows)
    n_train = len(data.splits["train"])
    assert result.table.shape == (n_train, 4)
    assert result.diagnostics[0]["candidates"] == n_train // 2
    # The encoder gives L2-normalised embeddings a detector can be trained on.
    with torch.no_grad():
        emb = result.encoder(data.load(data.splits["val"]))
    assert emb.shape == (len(data.splits["val"]), 8)
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(emb)), atol=1e-5)
    # Same seed, same result.
    again, _ = run_tiny()
    for p, q in zip(result.encoder.parameters(), again.encoder.parameters()):
        assert torch.equal(p, q)


# ----------------------------------------------------------------------------------------------- benchmark


def test_embedding_scaling_benchmark_tiny(tmp_path, capsys):
    module = load_benchmark("embedding_scaling")
    out = tmp_path / "scaling.png"
    json_path = tmp_path / "scaling.json"
    result = module.main(["--sizes", "64", "128", "--tiny", "--out", str(out), "--json", str(json_path)])
    for key in ("sizes", "thce_s", "lmle_s", "slope_thce", "slope_lmle", "ratio_at_max", "machine", "encoder",
                "ratios", "phases", "slopes", "slopes_upper", "extrapolated_sizes", "extrapolated_size_for_goal",
                "goal_met", "summary"):  # fmt: skip
        assert key in result
    assert result["sizes"] == [64, 128] and len(result["thce_s"]) == len(result["lmle_s"]) == 2
    assert result["ratio_at_max"] > 0 and out.exists()
    assert result["goal_met"] is None and result["ratio_at_32k"] is None  # 32k not measured
    # Every ratio at every size, positive; the phases the ratios are built from.
    for key in ("whole_epoch", "whole_epoch_without_clustering", "amortised", "amortised_lmle_paper_schedule",
                "loss_side", "loss_side_amortised"):  # fmt: skip
        assert len(result["ratios"][key]) == 2 and all(r > 0 for r in result["ratios"][key])
    assert set(result["phases"]["thce"]) == {"total", "cluster", "train_epoch", "other", "loss"}
    assert set(result["phases"]["lmle"]) == {"total", "cluster", "quintuplets", "train_epoch", "other", "hinge"}
    machine = result["machine"]
    assert machine["torch_threads"] == 1 and len(machine["loadavg_before"]) == 3 and "load_note" in machine
    assert 0 < machine["cpu_over_wall"] <= 1.5
    printed = json.loads(capsys.readouterr().out)
    assert printed["ratio_at_max"] == result["ratio_at_max"] and json.loads(json_path.read_text()) == printed
    # docs/benchmarks.md's section, written from the saved JSON without measuring again
    readme = tmp_path / "README.md"
    readme.write_text(f"top\n{module.README_START}\nold\n{module.README_END}\nbottom\n")
    assert module.main(["--from-json", str(json_path), "--readme", str(readme)]) == printed
    text = readme.read_text()
    assert "old" not in text and text.startswith("top\n") and text.endswith("bottom\n")
    assert f"from `{json_path}`" in text and result["summary"][0] in text
    assert f"| 128 | {result['thce_s'][1]:.3g} | {result['lmle_s'][1]:.3g} |" in text


class _Crash(RuntimeError):
    pass


class _CrashingLog(MetricsLog):
    """A metrics log that raises on its ``crash_at``-th row: the epoch's state is not saved, as after a kill."""

    def __init__(self, crash_at: int) -> None:
        super().__init__()
        self.crash_at = crash_at

    def write(self, **row) -> None:
        if len(self.rows) + 1 == self.crash_at:
            raise _Crash
        super().write(**row)


@pytest.mark.parametrize("crash_at", [2, 4])  # epoch 2 of rebuild 1 lost; epoch 2 of rebuild 2 lost
def test_lmle_resume_matches_uninterrupted(tmp_path, crash_at):
    """A run interrupted mid-stage and resumed draws the same anchors and ends with the same weights."""

    def run(resume_dir, log):
        torch.manual_seed(0)
        encoder = LSTMEncoder(n_mels=6, hidden_size=8)
        ctx = RunContext(train=TrainConfig(batch_size=16), seed=0, log=log, resume_dir=resume_dir)
        config = LMLEConfig(epochs=4, rebuild_every=2, kmeans_max_iter=20)
        return learn_embedding_lmle(encoder, tiny_data(0), config, ctx)

    reference_log = MetricsLog()
    reference = run(tmp_path / "reference", reference_log)
    with pytest.raises(_Crash):
        run(tmp_path / "killed", _CrashingLog(crash_at))
    resumed_log = MetricsLog()
    resumed = run(tmp_path / "killed", resumed_log)
    for p, q in zip(reference.encoder.parameters(), resumed.encoder.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(reference.table, resumed.table)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert 1 <= len(resumed_log.rows) < len(reference_log.rows)  # only the lost epochs were trained again
    assert strip(resumed_log.rows) == strip(reference_log.rows)[-len(resumed_log.rows) :]
