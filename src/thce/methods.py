"""The registry of methods: one :class:`Method` per name that a config's ``methods`` may list.

An entry says how the method's encoder ends (L2-normalised or not), which detector it puts on that encoder, how it
trains, and how tables show it (short name, description). Every method's model is built here and only here: the
trainers build it with :func:`build_detector`, and :mod:`thce.checkpoint` rebuilds a saved one with the same
function. :mod:`thce.config` validates ``methods`` against :data:`METHODS`, :mod:`thce.experiment` runs the
listed ones in the registry's order, :mod:`thce.report` names them.

This module reads a run's configuration through :class:`RunSettings` (the attributes of
:class:`thce.config.ExperimentConfig` it uses) rather than importing thce.config, which imports this registry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from thce.audio import LogMelConfig
from thce.encoders import EncoderSettings, build_encoder, encoder_table
from thce.errors import ConfigError
from thce.frame_models import FramePooling, build_dcase2017_detector
from thce.losses.imbalance import LOSS_CONFIGS, LossConfig
from thce.models import ClusterLayer, DetectorHead, EventDetector
from thce.reference import LogRegStatsConfig, run_logreg_stats
from thce.training.algorithm1 import (
    AuxiliaryTHCEConfig,
    BaselineConfig,
    DCASE2017BaselineConfig,
    DetectorConfig,
    EmbeddingConfig,
    learn_embedding,
    thce_auxiliary_loss,
    train_baseline,
    train_detector,
    train_end_to_end,
)
from thce.training.data import TrainingData
from thce.training.engine import RunContext
from thce.training.imbalance import train_with_imbalance_loss
from thce.training.lmle import LMLEConfig, learn_embedding_lmle, train_lmle_detector


class RunSettings(EncoderSettings, Protocol):
    """What the registry reads of a run's configuration (:class:`thce.config.ExperimentConfig` has all of it):
    what the encoder factory reads, and more."""

    @property
    def seed(self) -> int: ...

    @property
    def methods(self) -> tuple[str, ...]: ...

    @property
    def features(self) -> LogMelConfig: ...

    @property
    def dcase2017_baseline(self) -> DCASE2017BaselineConfig: ...

    @property
    def embedding(self) -> EmbeddingConfig: ...

    @property
    def detector(self) -> DetectorConfig: ...

    @property
    def baseline(self) -> BaselineConfig: ...

    @property
    def proposed2_aux(self) -> AuxiliaryTHCEConfig: ...

    @property
    def lmle(self) -> LMLEConfig: ...

    @property
    def logreg_stats(self) -> LogRegStatsConfig: ...

    def loss_config(self, method: str) -> LossConfig: ...


#: A method's results entry in ``results.json`` (``eer``, ``val_eer``, ``det``, ...; ``test_scores`` and
#: ``val_scores`` until the run writes them to ``scores.npz`` / ``val_scores.npz``).
Results = dict[str, Any]


@dataclass
class MethodRun:
    """What every trainer of one run shares.

    Attributes:
        config: the run's configuration.
        data: the clips, splits and normaliser.
        ctx: training settings, seed, metrics log, progress, resume folder, torchrun rank.
        evaluate: ``(method, trained model) -> results entry``: scores validation and test, saves the checkpoint.
        checkpoint_dir: where a method that is not a network saves what it fitted (``None``: nowhere).
        timing: seconds per stage (``results.json``'s ``timing_s``), filled by the trainers; a resumed run's stage
            adds what earlier processes spent on it (``spent_before``), so each is the stage's total;
            ``save_timing(timing)`` keeps the totals after each stage for a later resume.
        diagnostics: Algorithm 1's per-iteration records (``embedding_diagnostics``), filled by proposed1's trainer.
    """

    config: RunSettings
    data: TrainingData
    ctx: RunContext
    evaluate: Callable[[str, EventDetector], Results]
    checkpoint_dir: Path | None = None
    timing: dict[str, float] = field(default_factory=dict)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    spent_before: dict[str, float] = field(default_factory=dict)
    save_timing: Callable[[dict[str, float]], None] | None = None

    def new_encoder(self, method: str) -> nn.Module:
        """A fresh encoder for ``method``; every method's starts from the same weights (seeded with the run's seed).
        With a fully frozen PANNs encoder (``model.freeze = "all"``) the part of it that trains on cached embeddings
        (the data's features then are those embeddings: :mod:`thce.pretrained.frozen`)."""
        torch.manual_seed(self.config.seed)
        return build_method_encoder(self.config, method, cached=self.config.model.cached_embeddings)

    def build_detector(
        self, method: str, encoder: nn.Module, cluster_layer: ClusterLayer | None = None
    ) -> EventDetector:
        """``method``'s untrained detector on ``encoder`` (:func:`build_detector` for this run's data)."""
        return build_detector(
            self.config, method, encoder, num_events=self.data.num_events,
            train_class_counts=self.data.class_counts("train"), cluster_layer=cluster_layer,
        )  # fmt: skip

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Record the wall time of the ``with`` block, plus what earlier processes spent on it, as ``timing[stage]``
        (and hand the totals to ``save_timing``)."""
        start = time.perf_counter()
        yield
        self.timing[stage] = self.spent_before.get(stage, 0.0) + time.perf_counter() - start
        if self.save_timing is not None:
            self.save_timing(self.timing)


#: ``(config, method, encoder, num_events, train_class_counts, cluster_layer) -> EventDetector``
DetectorBuilder = Callable[[RunSettings, str, nn.Module, int, np.ndarray, "ClusterLayer | None"], EventDetector]
#: ``run -> {method: results entry}`` (proposed1's trainer also returns proposed2's when the run lists it)
Trainer = Callable[[MethodRun], dict[str, Results]]


@dataclass(frozen=True)
class Method:
    """One method of the registry.

    Attributes:
        name: the key in a config's ``methods`` and in ``results.json``.
        description: what it is, for the legend under the EER table.
        short_name: its column in tables (B, P1, P2 for the paper's three); ``""``: the name.
        l2_normalised: ``config -> whether the encoder ends in the L2 normalisation``; ``None``: no encoder.
        detector: builds the untrained detector on an encoder; ``None``: not a network.
        train: trains, evaluates and returns its results entries; ``None``: trained by ``requires``' trainer.
        requires: the method whose training it continues (proposed2: proposed1), listed with it.
        sections: the config tables of its own that its training reads, besides those every method shares
            (seed, data, synth, features, model, train, augment); see :func:`method_settings`.
    """

    name: str
    description: str
    short_name: str = ""
    l2_normalised: Callable[[RunSettings], bool] | None = None
    detector: DetectorBuilder | None = None
    train: Trainer | None = None
    requires: str | None = None
    sections: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The name tables show: :attr:`short_name`, or the name."""
        return self.short_name or self.name


# ------------------------------------------------------------------------------------------ encoders, models


def _always(config: RunSettings) -> bool:
    return True


def _as_baseline(config: RunSettings) -> bool:
    return config.baseline.l2_normalise


def _sigmoid_on_embedding(
    config: RunSettings, method: str, encoder: nn.Module, num_events: int, counts: np.ndarray, cluster_layer: Any
) -> EventDetector:
    """A sigmoid layer of L outputs on the embedding (the baseline, LMLE)."""
    return EventDetector(encoder, DetectorHead(encoder.embedding_dim, num_events))


def _sigmoid_on_clusters(
    config: RunSettings, method: str, encoder: nn.Module, num_events: int, counts: np.ndarray,
    cluster_layer: ClusterLayer | None,
) -> EventDetector:  # fmt: skip
    """Fig. 2: the cluster layer W (Eq. 4) kept, a sigmoid layer of L outputs on its K outputs."""
    if cluster_layer is None:
        raise ValueError(f"{method}: the detector sits on a cluster layer; pass the learned one")
    return EventDetector(encoder, DetectorHead(cluster_layer.num_clusters, num_events), cluster_layer)


def _loss_head(
    config: RunSettings, method: str, encoder: nn.Module, num_events: int, counts: np.ndarray, cluster_layer: Any
) -> EventDetector:
    """The head the method's loss expects, the loss kept as the scorer (it may hold weights, e.g. SoftTriple's)."""
    loss_fn = config.loss_config(method).build(counts, embedding_dim=encoder.embedding_dim)
    return EventDetector(encoder, loss_fn.make_head(encoder.embedding_dim), scorer=loss_fn)


def build_method_encoder(config: RunSettings, method: str, *, cached: bool = False) -> nn.Module:
    """A fresh encoder of the table that names the run's (:func:`thce.encoders.encoder_table`: ``[model]``, or
    ``[frame_model]`` in a frame-level run) for ``config.features``' inputs, L2-normalised as ``method`` wants.
    ``cached``: with a fully frozen encoder, only its part after the cached embeddings (training's view)."""
    normalised = METHODS[method].l2_normalised
    if normalised is None:
        raise ValueError(f"{method} is not a network: it has no encoder")
    table = encoder_table(config)
    if method == "dcase2017_baseline":  # the published MLP, whatever [frame_model] names (its stride: 1)
        table = dataclasses.replace(table, encoder="dcase2017_mlp", frame_stride=None)
    features = config.features
    return build_encoder(
        table, frames=features.num_frames, n_mels=features.n_mels, sample_rate_hz=features.sample_rate_hz,
        normalise=normalised(config), cached=cached,
    )  # fmt: skip


def build_detector(
    config: RunSettings,
    method: str,
    encoder: nn.Module,
    *,
    num_events: int,
    train_class_counts: np.ndarray | list[int],
    cluster_layer: ClusterLayer | None = None,
) -> EventDetector:
    """``method``'s untrained detector on ``encoder``: ``(B, frames, mels) -> (B, L)`` outputs.

    Args:
        num_events: L.
        train_class_counts: (L + 1,) training clips per class, background last (the imbalance losses need them).
        cluster_layer: the learned cluster layer of proposed1 and proposed2 (Eq. 4); unused by the others.
    """
    builder = METHODS[method].detector
    if builder is None:
        raise ValueError(f"{method} is not a network: it has no detector")
    return builder(config, method, encoder, num_events, np.asarray(train_class_counts), cluster_layer)


# ------------------------------------------------------------------------------------------------ trainers


def _train_baseline(run: MethodRun) -> dict[str, Results]:
    with run.timed("baseline"):
        model = run.build_detector("baseline", run.new_encoder("baseline"))
        model = train_baseline(model, run.data, run.config.baseline, run.ctx)
        return {"baseline": run.evaluate("baseline", model)}


def _train_proposed(run: MethodRun) -> dict[str, Results]:
    """Algorithm 1: the embedding, then Proposed1 and, when listed, Proposed2 and proposed2_aux (which continue
    from Proposed1)."""
    with run.timed("embedding"):
        embedding = learn_embedding(run.new_encoder("proposed1"), run.data, run.config.embedding, run.ctx)
    run.diagnostics[:] = embedding.diagnostics
    with run.timed("detector"):
        model = run.build_detector("proposed1", embedding.encoder, embedding.cluster_layer)
        methods = run.config.methods
        auxiliary = None
        if "proposed2_aux" in methods:
            auxiliary = thce_auxiliary_loss(embedding, run.config.proposed2_aux.weight)
        models = train_detector(
            model, run.data, run.config.detector, run.ctx, end_to_end="proposed2" in methods, auxiliary=auxiliary
        )
        return {name: run.evaluate(name, trained) for name, trained in models.items()}


def _train_lmle(run: MethodRun) -> dict[str, Results]:
    """LMLE's embedding, then a sigmoid detector on it trained like Proposed1 then Proposed2."""
    with run.timed("lmle"):
        lmle = learn_embedding_lmle(run.new_encoder("lmle"), run.data, run.config.lmle, run.ctx)
        model = run.build_detector("lmle", lmle.encoder)
        train_lmle_detector(model, run.data, run.config.detector, run.ctx)
        return {"lmle": run.evaluate("lmle", model)}


def _imbalance(settings: type[LossConfig]) -> Method:
    """The method of an imbalance loss of :data:`thce.losses.imbalance.LOSS_CONFIGS` (named after it, described by
    it): the baseline's encoder and ``[baseline]`` stage settings, the head and loss of its own table."""
    name = settings.loss.method

    def train(run: MethodRun) -> dict[str, Results]:
        with run.timed(name):
            model = run.build_detector(name, run.new_encoder(name))
            model = train_with_imbalance_loss(model, run.data, run.config.baseline, run.ctx, method=name)
            return {name: run.evaluate(name, model)}

    return Method(
        name, settings.loss.description, l2_normalised=_as_baseline, detector=_loss_head, train=train,
        sections=("baseline", name),
    )  # fmt: skip


def _dcase2017_detector(
    config: RunSettings, method: str, encoder: nn.Module, num_events: int, counts: np.ndarray, cluster_layer: Any
) -> EventDetector:
    """The DCASE 2017 Task 2 baseline's output layer (one sigmoid per class, its published initialiser), on its
    hidden layers averaged over each of the run's output frames (it scores every input frame; the run's targets
    and evaluation are at ``frame_model``'s stride, e.g. 50 ms)."""
    return build_dcase2017_detector(
        config.features.n_mels, num_events, encoder=FramePooling(encoder, config.frame_model.stride)
    )


def _train_dcase2017_baseline(run: MethodRun) -> dict[str, Results]:
    """The DCASE 2017 Task 2 baseline: its MLP on log-mel frames with context, unweighted BCE (Eq. 1) over frames,
    early stopping as ``[dcase2017_baseline]`` says."""
    with run.timed("dcase2017_baseline"):
        model = run.build_detector("dcase2017_baseline", run.new_encoder("dcase2017_baseline"))
        train_end_to_end(model, run.data, run.config.dcase2017_baseline, run.ctx, method="dcase2017_baseline",
                         weighted=False)  # fmt: skip
        return {"dcase2017_baseline": run.evaluate("dcase2017_baseline", model)}


def _train_logreg_stats(run: MethodRun) -> dict[str, Results]:
    with run.timed("logreg_stats"):
        return {"logreg_stats": run_logreg_stats(run.data, run.config.logreg_stats, run.checkpoint_dir)}


# ------------------------------------------------------------------------------------------------ registry

#: Every method, in the order runs train them and tables show them.
METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("baseline", "class-weighted BCE, Eq. 2", "B", _as_baseline, _sigmoid_on_embedding, _train_baseline,
               sections=("baseline",)),
        Method("proposed1", "THCE embedding, Alg. 1; detector head trained alone", "P1", _always,
               _sigmoid_on_clusters, _train_proposed, sections=("embedding", "detector")),
        Method("proposed2", "THCE embedding, Alg. 1; detector tuned end-to-end", "P2", _always,
               _sigmoid_on_clusters, requires="proposed1", sections=("embedding", "detector")),
        Method("proposed2_aux", "beyond the paper: P2 with the THCE of Alg. 1's last clustering kept as an "
               "auxiliary loss", "P2aux", _always, _sigmoid_on_clusters, requires="proposed1",
               sections=("embedding", "detector", "proposed2_aux")),
        Method("lmle", "LMLE triple-header hinge on quintuplets", "", _always, _sigmoid_on_embedding, _train_lmle,
               sections=("lmle", "detector")),
        *(_imbalance(settings) for settings in LOSS_CONFIGS.values()),  # the field's losses, in their registry's order
        Method("dcase2017_baseline", "the DCASE 2017 Task 2 baseline: MLP on log-mel frames with context, "
               "unweighted BCE (frame-level runs only)", "DCASE17", lambda config: False, _dcase2017_detector,
               _train_dcase2017_baseline, sections=("dcase2017_baseline",)),
        Method("logreg_stats", "not deep: per-band mean and std of the normalised log-mel, balanced logistic "
               "regression, C on val", train=_train_logreg_stats, sections=("logreg_stats",)),
    )
}  # fmt: skip

#: The paper's methods (Tables 1 and 2), the default of a config's ``methods``.
PAPER_METHODS = ("baseline", "proposed1", "proposed2")
#: The methods a frame-level run (``data.strong_labels``) trains: the paper's over frames, and the field's reference.
FRAME_METHODS = (*PAPER_METHODS, "dcase2017_baseline")


def check_methods(names: Iterable[str]) -> None:
    """A :class:`ConfigError` naming ``methods`` unless ``names`` are known methods, at least one, each listed with
    the method it continues."""
    names = list(names)
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise ConfigError(f"methods: {unknown or '[]'} not among {', '.join(METHODS)}")
    for name in names:
        requires = METHODS[name].requires
        if requires is not None and requires not in names:
            raise ConfigError(f"methods: {name} starts from {requires}; list both")


def training_units(names: Iterable[str]) -> list[str]:
    """The methods of ``names`` that have a trainer, in registry order: proposed2 trains with proposed1, so it is
    not one (``["baseline", "proposed1", "proposed2"]`` -> ``["baseline", "proposed1"]``)."""
    listed = set(names)
    return [method.name for method in METHODS.values() if method.name in listed and method.train is not None]


def trainers(names: Iterable[str]) -> list[Trainer]:
    """The trainers of the methods ``names``, in registry order (proposed2 trains with proposed1)."""
    return [METHODS[name].train for name in training_units(names)]  # type: ignore[misc]  # units have one


def method_settings(config: Mapping[str, Any], method: str) -> dict[str, Any]:
    """The settings ``method``'s training reads, from a config as a dict (``ExperimentConfig.to_dict()``): the
    tables every method shares and the method's own :attr:`Method.sections`, without ``methods`` and without any
    other method's tables. Two runs whose dicts give equal settings train ``method`` alike (each method's random
    streams are named after it), whatever else they ran.

    >>> a = {"seed": 0, "methods": ["baseline"], "train": {"batch_size": 16}, "embedding": {"alpha": 16.0},
    ...      "baseline": {"max_epochs": 12}}
    >>> b = {**a, "methods": ["baseline", "proposed1"], "embedding": {"alpha": 8.0}}
    >>> [method_settings(a, m) == method_settings(b, m) for m in ("baseline", "proposed1")]
    [True, False]
    """
    others = {section for entry in METHODS.values() for section in entry.sections} - set(METHODS[method].sections)
    return {key: value for key, value in config.items() if key != "methods" and key not in others}


def method_short_name(name: str) -> str:
    """The name tables show for ``name`` (B, P1, P2 for the paper's methods); an unknown name as it is.

    >>> [method_short_name(m) for m in ("baseline", "proposed2", "focal", "mine")]
    ['B', 'P2', 'focal', 'mine']
    """
    return METHODS[name].label if name in METHODS else name
