"""The paper's toy example (Sec. 3.1, Fig. 1): Algorithm 1's embedding stage on a 3-unit LSTM, shown on the sphere.

The paper: "1000 samples of x_i in R^20 and 3 classes, blue, green and red, with data distribution 1:1:4 ... E is a
single layer LSTM model with 3 nodes, whose output lies on a 3D-sphere. Fig. 1 shows the progress of learning until
we get the final embedding where all three classes are separated, with red class embedded into 4 clusters."

Our reading (the paper gives nothing else about the data):

- **Input.** ``x_i`` in R^20 is a *sequence of 20 scalar time steps* (the LSTM reads one value per step), shape
  ``(20, 1)``. Every sample is a noisy sinusoid ``x_t = a sin(2 pi f t / 20 + phi + delta) + sigma eps_t`` with
  amplitude ``a ~ U(0.8, 1.2)``, phase jitter ``delta ~ N(0, phase_jitter)``, white noise ``eps_t ~ N(0, 1)``.
  Each class is a mixture of *modes* ``(f, phi)``: blue (1 cycle, phase 0), green (1 cycle, phase pi); red is
  multimodal, 4 equally likely modes of 2 cycles at phases 0, pi/2, pi, 3 pi/2, so it has 4 natural sub-clusters.
  Defaults sigma = 0.1, phase jitter 0.1 rad. (Modes that differ only early in the sequence, e.g. half-cycle bumps
  of opposite sign, were merged by the 3-unit LSTM's last state in some seeds; these four were not, over 10 seeds.)
- **Counts.** 1:1:4 of 1000 is 166 : 166 : 668 (blue and green get ``floor(1000 / 6)``, red the rest), so that
  ``K_red = floor(668 / 166) = 4`` (167 : 167 : 666 would give 3). Validation (300) and held-out test (600) sets
  are drawn from the same distribution at the same ratio.
- **Classes in thce's terms.** blue and green are the "event" classes, red takes the background slot (class index
  2): for clustering and the triple-header loss every class is just a class, so this changes nothing.
- **Training.** :func:`thce.training.algorithm1.learn_embedding` itself, measured after every iteration through its
  ``on_iteration`` hook, with :class:`~thce.training.algorithm1.EmbeddingConfig`'s defaults: the paper's schedule
  (5 iterations, 2 head-only epochs, 30 end-to-end epochs, 150 in the last iteration), the project's alpha = 16,
  beta' = 5, beta'' = 0, balanced clusters; Adam at lr 0.01 (the toy LSTM has 60 weights; 0.001 needs many more
  epochs), batch 64.

Measures per iteration (iteration 0 = the randomly initialised LSTM): the training embeddings are clustered per
class exactly as Algorithm 1 does (``K_c`` rule, balanced spherical k-means); then

- ``nearest_centroid_accuracy``: held-out test samples take the class of the nearest (cosine) cluster centroid,
  plus per-class recall and their mean (``balanced_accuracy``),
- Eq. 3 fractions and mean cosines to the own, nearest same-class and nearest other-class centroid (train, and
  test with each sample assigned to its own class's nearest centroid),
- cluster sizes per class, and ``red_mode_purity``: the fraction of red training samples whose cluster's majority
  generative mode is their own (1.0: the 4 red clusters are exactly the 4 modes),
- after training: Algorithm 1's own records (Eq. 3 fractions at clustering and after training, the THCE loss).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from thce import seeds
from thce.cluster import Clustering, assign_to_own_class, cluster_per_class, clusters_per_class
from thce.losses import eq3_ordering, eq3_terms
from thce.models import LSTMEncoder
from thce.training.algorithm1 import EmbeddingConfig, EmbeddingIteration, learn_embedding
from thce.training.data import TrainingData, embed
from thce.progress import ProgressFn
from thce.training.engine import RunContext, TrainConfig
from thce.training.metrics_log import MetricsLog

TOY_CLASSES = ("blue", "green", "red")
# Generative modes (class index, cycles per sequence f, phase phi in radians); red (2) has four.
TOY_MODES: tuple[tuple[int, float, float], ...] = (
    (0, 1.0, 0.0),
    (1, 1.0, math.pi),
    (2, 2.0, 0.0),
    (2, 2.0, 0.5 * math.pi),
    (2, 2.0, math.pi),
    (2, 2.0, 1.5 * math.pi),
)
RED = 2
METHOD = "toy"  # the method name of its rows in metrics.csv and of its random streams


@dataclass(frozen=True)
class ToyConfig:
    """Settings of the toy example; the defaults reproduce Fig. 1 (see the module docstring for the reading).

    Attributes:
        train_samples: training set size at 1:1:4 (paper: 1000).
        val_samples, test_samples: validation (Algorithm 1 logs on it) and held-out test set sizes, 1:1:4.
        steps: sequence length T (paper: x in R^20).
        noise: white-noise standard deviation sigma (signal amplitude ~1).
        phase_jitter: standard deviation of the per-sample phase offset, radians.
        hidden_size: LSTM units = embedding dimension (paper: 3).
        embedding: Algorithm 1's embedding stage: schedule (paper: ``n_iter`` 5, ``head_only_epochs`` 2,
            ``epochs`` 30, ``last_epochs`` 150) and loss (alpha, beta', beta'', balanced clusters).
        batch_size, learning_rate: Adam settings.
        seed: drives data, initialisation, clustering and batches (streams named as in experiments).
        threads: torch threads while running (1 is fastest for this tiny LSTM); 0 leaves the setting alone.
    """

    train_samples: int = 1000
    val_samples: int = 300
    test_samples: int = 600
    steps: int = 20
    noise: float = 0.1
    phase_jitter: float = 0.1
    hidden_size: int = 3
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    batch_size: int = 64
    learning_rate: float = 0.01
    seed: int = 0
    threads: int = 1

    @classmethod
    def tiny(cls, **overrides: Any) -> ToyConfig:
        """A few-second run (smaller sets, 2 short iterations) for smoke tests; classes may not fully separate."""
        values: dict[str, Any] = dict(
            train_samples=300, val_samples=60, test_samples=120,
            embedding=EmbeddingConfig(n_iter=2, epochs=5, last_epochs=10),
        )  # fmt: skip
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("train_samples", "val_samples", "test_samples"):
            if getattr(self, name) < 6 * 2:
                raise ValueError(
                    f"toy.{name}: need at least 12 samples (1:1:4 with 4 red modes), got {getattr(self, name)}"
                )
        for name in ("steps", "hidden_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"toy.{name}: must be >= 1, got {getattr(self, name)}")
        if self.threads < 0:
            raise ValueError(f"toy.threads: must be >= 0, got {self.threads}")
        if self.noise < 0 or self.phase_jitter < 0:
            raise ValueError("toy.noise and toy.phase_jitter must be >= 0")
        if self.learning_rate <= 0:
            raise ValueError("toy.learning_rate must be > 0")
        self.embedding.validate()  # a ConfigError (a ValueError) naming embedding.<key>


# ------------------------------------------------------------------------------------------------ data


def class_counts_1_1_4(n: int) -> tuple[int, int, int]:
    """Blue, green, red counts for ``n`` samples at 1:1:4: ``floor(n / 6)`` twice and the rest.

    >>> class_counts_1_1_4(1000)
    (166, 166, 668)
    """
    unit = n // 6
    return unit, unit, n - 2 * unit


def sample_toy(n: int, config: ToyConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` toy samples at 1:1:4: features (n, steps, 1) float32, class (n,), generative mode (n,).

    Red's share is split as evenly as possible over its 4 modes.
    """
    counts = class_counts_1_1_4(n)
    per_mode: list[int] = []
    for mode, (c, _, _) in enumerate(TOY_MODES):
        modes_of_class = [m for m, (cc, _, _) in enumerate(TOY_MODES) if cc == c]
        share, extra = divmod(counts[c], len(modes_of_class))
        per_mode.append(share + (1 if modes_of_class.index(mode) < extra else 0))
    t = np.arange(config.steps) / config.steps
    xs, classes, modes = [], [], []
    for mode, ((c, f, phi), m) in enumerate(zip(TOY_MODES, per_mode)):
        amplitude = rng.uniform(0.8, 1.2, (m, 1))
        jitter = rng.normal(0.0, config.phase_jitter, (m, 1))
        noise = config.noise * rng.standard_normal((m, config.steps))
        x = amplitude * np.sin(2 * np.pi * f * t[None, :] + phi + jitter) + noise
        xs.append(x)
        classes += [c] * m
        modes += [mode] * m
    return (
        np.concatenate(xs)[:, :, None].astype(np.float32),
        np.asarray(classes, dtype=np.int64),
        np.asarray(modes, dtype=np.int64),
    )


@dataclass
class ToyData:
    """The toy sets as a :class:`TrainingData` (splits train/val/test) plus each sample's generative mode."""

    data: TrainingData
    modes: np.ndarray

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            split: dict(zip(TOY_CLASSES, map(int, self.data.class_counts(split)))) for split in self.data.splits
        }


def make_toy_data(config: ToyConfig) -> ToyData:
    """Train, validation and held-out test sets drawn independently from the toy distribution."""
    rng = np.random.default_rng(config.seed)
    parts = [sample_toy(n, config, rng) for n in (config.train_samples, config.val_samples, config.test_samples)]
    features = np.concatenate([p[0] for p in parts])
    class_index = np.concatenate([p[1] for p in parts])
    modes = np.concatenate([p[2] for p in parts])
    bounds = np.cumsum([0, *(len(p[1]) for p in parts)])
    splits = {name: np.arange(bounds[i], bounds[i + 1]) for i, name in enumerate(("train", "val", "test"))}
    return ToyData(TrainingData(features, class_index, splits, TOY_CLASSES[:2]), modes)


# -------------------------------------------------------------------------------------------- measures


@dataclass
class Snapshot:
    """The embedding after one iteration: train embeddings (N, D), their clustering, and the measures."""

    iteration: int
    train_embedding: np.ndarray
    clustering: Clustering
    red_shade: np.ndarray  # (K,) shade rank of each cluster (red clusters ordered by majority mode), -1 otherwise
    measures: dict[str, Any]


def _mean_cosines(cos: Tensor, assignment: Tensor, cluster_class: Tensor) -> dict[str, float]:
    """Mean cosine to the own, nearest same-class (other) and nearest other-class centroid: Eq. 3's three terms."""
    own, same_other, has_same, other, _ = eq3_terms(cos, assignment, cluster_class)
    return {
        "own": float(own.mean()),
        "nearest_same_class": float(same_other[has_same].mean()) if has_same.any() else float("nan"),
        "nearest_other_class": float(other.mean()),
    }


def _red_purity(clustering: Clustering, class_index: np.ndarray, modes: np.ndarray) -> tuple[float, np.ndarray]:
    """Fraction of red samples in a cluster whose majority mode is their own, and each cluster's shade rank."""
    assignment = clustering.assignment.numpy()
    red = class_index == RED
    shade = np.full(len(clustering.cluster_class), -1, dtype=np.int64)
    red_clusters = np.flatnonzero(clustering.cluster_class.numpy() == RED)
    majority, agree = [], 0
    for k in red_clusters:
        members = modes[red & (assignment == k)]
        counts = np.bincount(members, minlength=len(TOY_MODES)) if len(members) else np.zeros(len(TOY_MODES), int)
        majority.append(int(counts.argmax()))
        agree += int(counts.max())
    for rank, position in enumerate(np.argsort(majority, kind="stable")):
        shade[red_clusters[position]] = rank
    return agree / max(int(red.sum()), 1), shade


def measure(encoder: torch.nn.Module, toy: ToyData, ctx: RunContext, *, iteration: int) -> Snapshot:
    """Cluster the training embeddings per class (Algorithm 1's step) and compute the toy's measures."""
    data = toy.data
    train_idx, test_idx = data.splits["train"], data.splits["test"]
    train_emb = embed(encoder, data, train_idx, ctx).cpu()
    test_emb = embed(encoder, data, test_idx, ctx).cpu()
    train_class = torch.as_tensor(data.class_index[train_idx])
    test_class = torch.as_tensor(data.class_index[test_idx])
    seed = seeds.derive_seed(ctx.seed, "kmeans", METHOD, "measure", iteration)
    clustering = cluster_per_class(train_emb, train_class, num_classes=len(TOY_CLASSES), seed=seed, balanced=True)
    cluster_class = clustering.cluster_class
    cos_train = train_emb @ clustering.centroids.t()
    cos_test = test_emb @ clustering.centroids.t()
    predicted = cluster_class[cos_test.argmax(dim=1)]
    recall = {name: float((predicted[test_class == c] == c).float().mean()) for c, name in enumerate(TOY_CLASSES)}
    test_assignment = assign_to_own_class(cos_test, test_class, cluster_class)
    sizes = clustering.sizes()
    purity, shade = _red_purity(clustering, data.class_index[train_idx], toy.modes[train_idx])
    measures = {
        "iteration": iteration,
        "nearest_centroid_accuracy": float((predicted == test_class).float().mean()),
        "balanced_accuracy": float(np.mean(list(recall.values()))),
        "recall": recall,
        "clusters_per_class": {name: int(k) for name, k in zip(TOY_CLASSES, clustering.clusters_per_class)},
        "cluster_sizes": {name: sizes[cluster_class == c].tolist() for c, name in enumerate(TOY_CLASSES)},
        "eq3_train": eq3_ordering(cos_train, clustering.assignment, cluster_class),
        "eq3_test": eq3_ordering(cos_test, test_assignment, cluster_class),
        "mean_cosine_train": _mean_cosines(cos_train, clustering.assignment, cluster_class),
        "red_mode_purity": purity,
    }
    return Snapshot(iteration, train_emb.numpy(), clustering, shade, measures)


# ----------------------------------------------------------------------------------------------- run


@dataclass
class ToyResult:
    """Snapshots 0..n_iter (0 = initial LSTM), Algorithm 1's records per iteration, timing, the config."""

    config: ToyConfig
    counts: dict[str, dict[str, int]]
    snapshots: list[Snapshot]
    algorithm1: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def final(self) -> dict[str, Any]:
        return self.snapshots[-1].measures

    def acceptance(self, *, min_accuracy: float = 0.95, min_purity: float = 0.9) -> dict[str, Any]:
        """The issue's acceptance: classes separated (held-out nearest-centroid accuracy >= ``min_accuracy``) and
        red in 4 clusters (the K_c rule gives 4 and the 4 clusters are the 4 modes: purity >= ``min_purity``)."""
        final = self.final
        red_clusters = final["clusters_per_class"]["red"]
        checks = {
            "separated": final["nearest_centroid_accuracy"] >= min_accuracy,
            "red_clusters": red_clusters,
            "red_forms_4_clusters": red_clusters == 4 and final["red_mode_purity"] >= min_purity,
        }
        return {**checks, "min_accuracy": min_accuracy, "min_purity": min_purity,
                "passed": bool(checks["separated"] and checks["red_forms_4_clusters"])}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The JSON of the measures (``toy.json``)."""
        iterations = []
        for snapshot in self.snapshots:
            record = dict(snapshot.measures)
            if snapshot.iteration >= 1:
                record["algorithm1"] = self.algorithm1[snapshot.iteration - 1]
            iterations.append(record)
        return {
            "experiment": "toy example of Sec. 3.1 / Fig. 1",
            "config": dataclasses.asdict(self.config),
            "classes": list(TOY_CLASSES),
            "modes": [{"class": TOY_CLASSES[c], "cycles": f, "phase_rad": phi} for c, f, phi in TOY_MODES],
            "counts": self.counts,
            "clusters_per_class_rule": {
                name: int(k)
                for name, k in zip(TOY_CLASSES, clusters_per_class(list(self.counts["train"].values())))
            },
            "iterations": iterations,
            "final": self.final,
            "acceptance": self.acceptance(),
            "seconds": self.seconds,
        }


def run_toy(config: ToyConfig, *, log: MetricsLog | None = None, progress: ProgressFn | None = None) -> ToyResult:
    """Generate the toy data, run Algorithm 1's embedding stage, measure before it and after every iteration.

    Deterministic for a given ``config.seed`` on CPU; the global torch RNG is left untouched.
    """
    config.validate()
    start = time.perf_counter()
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            toy = make_toy_data(config)
            encoder = LSTMEncoder(1, config.hidden_size)
            train = TrainConfig(batch_size=config.batch_size, learning_rate=config.learning_rate, device="cpu")
            log = log if log is not None else MetricsLog()
            ctx = RunContext(train=train, seed=config.seed, log=log, progress=progress)
            snapshots = [measure(encoder, toy, ctx, iteration=0)]
            records: list[dict[str, Any]] = []

            def after(step: EmbeddingIteration) -> None:
                rows = [r for r in log.rows if r.get("method") == METHOD and r.get("iteration") == step.iteration]
                columns = ("stage", "epoch", "train_loss", "val_loss", "eq3_train", "eq3_val")
                records.append({**step.record, "epochs": [{k: row.get(k) for k in columns} for row in rows]})
                snapshots.append(measure(step.encoder, toy, ctx, iteration=step.iteration))

            learn_embedding(encoder, toy.data, config.embedding, ctx, method=METHOD, on_iteration=after)
    finally:
        torch.set_num_threads(previous_threads)
    return ToyResult(config, toy.counts(), snapshots, records, time.perf_counter() - start)


# ------------------------------------------------------------------------------------------------ figure

_CLASS_COLOURS = {0: "#1f5fbf", 1: "#2ca02c"}


def plot_toy(result: ToyResult, path: str | Path) -> Path:
    """Fig. 1: one 3-D sphere panel per snapshot (initial, then each iteration); blue, green, red in shades per
    cluster. Embeddings of more than 3 dimensions are shown by their first 3 coordinates."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from thce.io import PNG_METADATA

    path = Path(path)
    panels = result.snapshots
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols, 4.2 * rows))
    FigureCanvasAgg(fig)
    reds = colormaps["Reds"]
    u, v = np.mgrid[0 : 2 * np.pi : 24j, 0 : np.pi : 12j]
    sphere = (np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v))
    for i, snapshot in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        ax.plot_wireframe(*sphere, color="0.85", linewidth=0.4)
        emb = snapshot.train_embedding[:, :3]
        if emb.shape[1] < 3:
            emb = np.pad(emb, ((0, 0), (0, 3 - emb.shape[1])))
        assignment = snapshot.clustering.assignment.numpy()
        cluster_class = snapshot.clustering.cluster_class.numpy()
        n_red = int((cluster_class == RED).sum())
        colours = np.empty((len(emb), 4))
        for k, c in enumerate(cluster_class):
            members = assignment == k
            if c == RED:
                shade = snapshot.red_shade[k] / max(n_red - 1, 1)
                colours[members] = reds(0.4 + 0.55 * shade)
            else:
                colours[members] = _hex_rgba(_CLASS_COLOURS.get(int(c), "#7f7f7f"))
        ax.scatter(emb[:, 0], emb[:, 1], emb[:, 2], c=colours, s=5, depthshade=False)
        m = snapshot.measures
        title = "initial embedding" if snapshot.iteration == 0 else f"iteration {snapshot.iteration}"
        accuracy, eq3 = m["nearest_centroid_accuracy"], m["eq3_train"]["eq3"]
        ax.set_title(f"{title}\nheld-out acc {accuracy:.3f}, Eq. 3 {eq3:.2f}", fontsize=9)
        ax.set_box_aspect((1, 1, 1))
        ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_zlim(-1, 1)
        ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
    fig.suptitle("Toy example (Sec. 3.1, Fig. 1): blue, green, red (shades: red's clusters)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, metadata=PNG_METADATA)  # marked as ours: `thce toy` replaces only such a toy.png
    tmp.replace(path)
    return path


def _hex_rgba(colour: str) -> tuple[float, float, float, float]:
    colour = colour.lstrip("#")
    return tuple(int(colour[i : i + 2], 16) / 255 for i in (0, 2, 4)) + (1.0,)  # type: ignore[return-value]


def write_toy(result: ToyResult, out: str | Path) -> dict[str, Path]:
    """Write ``toy.json`` (measures) and ``toy.png`` (the figure) into ``out``."""
    from thce.io import write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return {"json": write_json(out / "toy.json", result.to_dict()), "figure": plot_toy(result, out / "toy.png")}
