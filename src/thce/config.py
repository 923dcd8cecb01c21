"""Experiment configuration: typed dataclasses, loaded from TOML, validated with errors that name the key.

A config file has top-level ``seed`` and ``methods`` and one table per section (``[data]``, ``[synth]``,
``[features]``, ``[model]``, ``[train]``, ``[embedding]``, ``[detector]``, ``[baseline]``, one per other method).
Components own their config dataclass (``LogMelConfig`` in :mod:`thce.audio`, ``ModelConfig`` in
:mod:`thce.encoders`, each stage's next to its trainer in :mod:`thce.training`, ...); this module composes them and
checks ``methods`` against the registry :mod:`thce.methods`. Every key is documented in README.md
("Configuration").
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from thce.audio import LogMelConfig
from thce.augment import AugmentConfig
from thce.config_reader import check_keys, read_table
from thce.data.synth import SynthConfig
from thce.encoders import PANNS_ENCODERS, FrameModelConfig, ModelConfig
from thce.errors import ConfigError
from thce.io import atomic_write
from thce.losses.imbalance import LOSS_CONFIGS, LossConfig, loss_config
from thce.methods import FRAME_METHODS, PAPER_METHODS, check_methods
from thce.reference import LogRegStatsConfig
from thce.training.algorithm1 import (
    AuxiliaryTHCEConfig,
    BaselineConfig,
    DCASE2017BaselineConfig,
    DetectorConfig,
    EmbeddingConfig,
)
from thce.training.engine import TrainConfig
from thce.training.lmle import LMLEConfig
# The paper's second setting (Table 2): dog:baby:gun:background.
PAPER_RATIO_2_2_1_26 = {"dog": 2, "baby": 2, "gun": 1, "background": 26}


@dataclass(frozen=True)
class DataConfig:
    """Where clips come from and how they are split.

    ``source``: ``"synth"`` (built-in scenes, see ``[synth]``) or ``"manifest"`` (a manifest CSV).
    ``classes``: the event classes, in output order; any other label is an error, empty label is background.
    ``ratio``: optional re-ratio of train and val, e.g. ``"2:2:1:26"`` (classes in order, then background);
    the test split is left untouched, as in the paper. ``ratio_shrink``: if not empty, only these labels are
    subsampled to the ratio (``["dog", "gun"]``: the paper's 2:2:1:26); by default every label may be.
    ``strong_labels``: train and evaluate at the frame level on the clips' event onsets and offsets
    (:mod:`thce.data.strong`; the encoder is ``[frame_model]``'s); ``events``: their event list (``""``:
    ``events.tsv`` beside the manifest, else the manifest's ``onset_s,offset_s`` columns).
    """

    source: str = "synth"
    manifest: str = ""
    classes: tuple[str, ...] = ("dog", "baby", "gun")
    split_fractions: tuple[float, float, float] = (0.7, 0.2, 0.1)
    ratio: str = ""
    ratio_shrink: tuple[str, ...] = ()
    cache_dir: str = ""
    feature_workers: int = 0
    strict: bool = False
    strong_labels: bool = False
    events: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.source not in ("synth", "manifest"):
            raise ConfigError(f"data.source: {self.source!r} is not 'synth' or 'manifest'")
        if self.source == "manifest" and not self.manifest:
            raise ConfigError("data.manifest: required when data.source = 'manifest'")
        if not self.classes or len(set(self.classes)) != len(self.classes) or "" in self.classes:
            raise ConfigError(f"data.classes: need distinct non-empty names, got {list(self.classes)}")
        if "background" in self.classes:
            raise ConfigError("data.classes: 'background' is implicit (empty label), do not list it")
        if len(self.split_fractions) != 3 or min(self.split_fractions) < 0 or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ConfigError(f"data.split_fractions: need three non-negative fractions summing to 1, got {self.split_fractions}")
        unknown = [name for name in self.ratio_shrink if name not in (*self.classes, "background")]
        if unknown:
            raise ConfigError(f"data.ratio_shrink: {unknown} are not among the classes {list(self.classes)} or 'background'")
        if self.feature_workers < 0:
            raise ConfigError(f"data.feature_workers: must be >= 0 (0: one per CPU), got {self.feature_workers}")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one run needs; ``seed`` drives synthetic data, splits, initialisation and sampling."""

    seed: int = 0
    methods: tuple[str, ...] = PAPER_METHODS
    data: DataConfig = field(default_factory=DataConfig)
    synth: SynthConfig = field(default_factory=lambda: SynthConfig.from_ratio(PAPER_RATIO_2_2_1_26, unit=4))
    features: LogMelConfig = field(default_factory=LogMelConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    frame_model: FrameModelConfig = field(default_factory=FrameModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    proposed2_aux: AuxiliaryTHCEConfig = field(default_factory=AuxiliaryTHCEConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    #: each imbalance loss's settings by name (its ``[name]`` table; :data:`thce.losses.imbalance.LOSS_CONFIGS`)
    losses: dict[str, LossConfig] = field(default_factory=dict)
    lmle: LMLEConfig = field(default_factory=LMLEConfig)
    logreg_stats: LogRegStatsConfig = field(default_factory=LogRegStatsConfig)
    dcase2017_baseline: DCASE2017BaselineConfig = field(default_factory=DCASE2017BaselineConfig)

    @property
    def strong_labels(self) -> bool:
        """Whether the run trains and evaluates over frames (``data.strong_labels``)."""
        return self.data.strong_labels

    def loss_config(self, method: str) -> LossConfig:
        """The settings of an imbalance method (``focal``, ``ldam_drw``, ...): its ``[method]`` table."""
        return self.losses[method]

    def __post_init__(self) -> None:
        unknown = [name for name in self.losses if name not in LOSS_CONFIGS]
        if unknown:
            raise ConfigError(f"losses: {unknown} are not among the imbalance losses {', '.join(LOSS_CONFIGS)}")
        wrong = [name for name, settings in self.losses.items() if not isinstance(settings, LOSS_CONFIGS[name])]
        if wrong:
            raise ConfigError(f"losses: the settings of {wrong[0]} must be a {LOSS_CONFIGS[wrong[0]].__name__}")
        # every loss, in the registry's order (config.toml's), with its defaults where not given
        every = {name: self.losses.get(name, settings()) for name, settings in LOSS_CONFIGS.items()}
        object.__setattr__(self, "losses", every)
        self.validate()

    def validate(self) -> None:
        check_methods(self.methods)
        self.data.validate()
        self.synth.validate()
        self.features.validate()
        self.model.validate()
        self.frame_model.validate()
        self._check_panns()
        self._check_frames()
        self.train.validate()
        self.embedding.validate()
        self.detector.validate("detector")
        self.baseline.validate("baseline")
        self.proposed2_aux.validate()
        self.augment.validate()
        for settings in self.losses.values():
            settings.validate()
        self.lmle.validate()
        self.logreg_stats.validate()
        self.dcase2017_baseline.validate("dcase2017_baseline")

    def _check_panns(self) -> None:
        """A PANNs encoder: ``[features]`` is its own front end; frozen, its inputs are cached embeddings."""
        own_features = self.model.kind.features
        if own_features is None:
            if self.features.front_end != "paper":
                raise ConfigError(f"features.front_end: {self.features.front_end!r} is for a PANNs model.encoder")
            return
        own = own_features(self.model.encoder, self.features.duration_s)
        if self.features != own:
            names = [f.name for f in dataclasses.fields(own)]
            wrong = next(name for name in names if getattr(own, name) != getattr(self.features, name))
            raise ConfigError(
                f"features.{wrong}: {getattr(self.features, wrong)!r} is not {self.model.encoder}'s "
                f"{getattr(own, wrong)!r}; a PANNs encoder brings its own front end (leave it out of [features])"
            )
        if self.augment.gain_db > 0:
            raise ConfigError("augment.gain_db: not with a PANNs encoder (its dB features and bn0 have no band std)")
        if self.model.freeze == "all":
            if self.augment.enabled:
                raise ConfigError(
                    "augment: must be off with model.freeze = 'all' (training reads cached embeddings, not log-mel)"
                )
            fixed = [m for m in self.methods if m in ("lmle", "logreg_stats")]
            if fixed:
                raise ConfigError(f"methods: {', '.join(fixed)} not with model.freeze = 'all' (see docs/panns.md)")

    def _check_frames(self) -> None:
        """Frame-level runs (``data.strong_labels``): the methods that train over frames, without mixup (a mixed
        clip's frames have no one cluster) or circular time shifts (they move events away from their labels), and
        without a PANNs ``model.encoder``."""
        if not self.data.strong_labels:
            if self.augment.remix_events:
                raise ConfigError("augment.remix_events: needs strong labels (data.strong_labels = true)")
            clip_only = [m for m in self.methods if m in FRAME_METHODS and m not in PAPER_METHODS]
            if clip_only:
                raise ConfigError(f"methods: {', '.join(clip_only)} needs frame labels (data.strong_labels = true)")
            return
        if self.augment.remix_band_shift >= self.features.n_mels:
            raise ConfigError(f"augment.remix_band_shift: must be below features.n_mels ({self.features.n_mels}), got "
                              f"{self.augment.remix_band_shift}")  # fmt: skip
        other = [m for m in self.methods if m not in FRAME_METHODS]
        if other:
            raise ConfigError(
                f"methods: {', '.join(other)} not with data.strong_labels = true (frame-level methods: "
                f"{', '.join(FRAME_METHODS)})"
            )
        if self.augment.mixup_alpha > 0:
            raise ConfigError("augment.mixup_alpha: not with data.strong_labels = true (it mixes clips, not frames)")
        if self.augment.time_shift:
            raise ConfigError("augment.time_shift: not with data.strong_labels = true (it moves events off their labels)")
        if self.model.encoder in PANNS_ENCODERS:
            raise ConfigError(f"model.encoder: {self.model.encoder} has no frame-level version; [frame_model] is used")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain tables, as in a config file: each loss's settings its own table (``focal``, ...)."""
        table: dict[str, Any] = {}
        for key, value in _to_plain(self).items():
            if key == "losses":
                table.update(value)
            else:
                table[key] = value
        return table


def follow_encoder_features(table: dict[str, Any]) -> dict[str, Any]:
    """A raw config table whose ``[features]`` is the front end of its PANNs ``model.encoder`` (any other encoder:
    unchanged). ``features.duration_s`` stays the user's; any other ``[features]`` key the table sets must equal
    the encoder's value (:data:`thce.pretrained.panns.PANNS_FEATURE_KEYS`), else a :class:`ConfigError` names it."""
    model = table.get("model")
    encoder = model.get("encoder") if isinstance(model, dict) else None
    if not isinstance(encoder, str) or not encoder.startswith("panns_"):
        return table
    from thce.pretrained.panns import PANNS_FEATURE_KEYS, logmel_config

    features = table.get("features", {})
    if not isinstance(features, dict):
        return table  # the build names the error
    duration = features.get("duration_s", LogMelConfig.duration_s)
    try:
        own = logmel_config(encoder, duration_s=duration).to_dict()
    except (ConfigError, TypeError, ValueError):
        return table  # an unknown encoder or a bad duration: the build names it
    for key in PANNS_FEATURE_KEYS:
        if key in features and features[key] != own[key]:
            raise ConfigError(
                f"features.{key}: {features[key]!r} is not {encoder}'s {own[key]!r}; a PANNs encoder brings its own "
                f"front end (leave {key} out of [features])"
            )
    return {**table, "features": {**features, **{k: own[k] for k in PANNS_FEATURE_KEYS}}}


# ----------------------------------------------------------------------------------------------- loading


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def _parse_override(text: str) -> tuple[list[str], Any]:
    """``"embedding.alpha=8"`` -> (["embedding", "alpha"], 8); the value is read as TOML, else as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. embedding.alpha=8")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip().split("."), value


#: Config keys holding file or folder paths: relative ones are resolved against the config file's folder when read
#: from a file, against the current directory when given with ``--set``.
PATH_KEYS: tuple[tuple[str, ...], ...] = (
    ("data", "manifest"), ("data", "events"), ("data", "cache_dir"), ("model", "pretrained"),
)


def _absolute(value: Any, base: str | os.PathLike) -> Any:
    """``value`` joined to ``base`` and normalised when it is a non-empty relative path, else as is."""
    if not isinstance(value, str) or not value or os.path.isabs(os.path.expanduser(value)):
        return os.path.expanduser(value) if isinstance(value, str) else value
    return os.path.normpath(os.path.join(os.path.abspath(base), value))


def resolve_paths(table: dict[str, Any], base: str | os.PathLike) -> dict[str, Any]:
    """A copy of a raw config table whose :data:`PATH_KEYS` are absolute, relative ones taken from ``base`` (the
    config file's folder). ``..`` is resolved on the text, as a shell's ``cd`` does, not through symbolic links."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in table.items()}
    for *sections, key in PATH_KEYS:
        node: Any = out
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict) and key in node:
            node[key] = _absolute(node[key], base)
    return out


def merge_overrides(table: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set section.key=value`` overrides to a raw config table (returns a new table); a relative path in
    a :data:`PATH_KEYS` key is taken from the current directory."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in table.items()}
    for text in overrides:
        path, value = _parse_override(text)
        if tuple(path) in PATH_KEYS:
            value = _absolute(value, os.getcwd())
        set_dotted_key(merged, path, value, where=f"--set {text!r}")
    return merged


def set_dotted_key(table: dict[str, Any], path: Sequence[str], value: Any, *, where: str) -> None:
    """``table[path[0]][path[1]]... = value`` in a raw config table, creating missing tables; a
    :class:`ConfigError` starting with ``where`` when a part of ``path`` is not a table."""
    node = table
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {part!r} is not a table")
    node[path[-1]] = value


def _error_key(message: str) -> str | None:
    """The config key an error message is about: ``"embedding.alpha: must be > 0"`` -> ``embedding.alpha``,
    ``"unknown config key 'embedding.alpah'; ..."`` -> ``embedding.alpah``."""
    unknown = re.match(r"unknown config key '([^']+)'", message)
    if unknown:
        return unknown.group(1)
    head = re.match(r"([A-Za-z_][\w.]*(?:\[\d+\])*):", message)
    return head.group(1) if head else None


def _blamed_override(message: str, overrides: list[str]) -> str | None:
    """The last ``--set`` that set the key of an error message, or a key inside or around it; None if none did."""
    key = _error_key(message)
    if key is None:
        return None
    base = re.sub(r"\[\d+\]$", "", key)
    for text in reversed(overrides):
        set_key = text.split("=", 1)[0].strip()
        if set_key in (key, base) or set_key.startswith(key + ".") or base.startswith(set_key + "."):
            return text
    return None


def _read_experiment(table: dict[str, Any]) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a raw config table: each imbalance loss's table (``[focal]``, ...) read
    into its settings (:data:`thce.losses.imbalance.LOSS_CONFIGS`), every other table into its field."""
    tables = [f.name for f in dataclasses.fields(ExperimentConfig) if f.name != "losses"]
    check_keys(ExperimentConfig, table, keys=[*tables, *LOSS_CONFIGS])
    losses = {}
    for name in LOSS_CONFIGS:
        values = table.get(name, {})
        if not isinstance(values, dict):
            raise ConfigError(f"{name}: expected a table, got {values!r}")
        losses[name] = loss_config(name, **values)
    rest = {key: value for key, value in table.items() if key not in LOSS_CONFIGS}
    return dataclasses.replace(read_table(ExperimentConfig, rest), losses=losses)


def config_from_dict(
    table: dict[str, Any], *, source: str = "config", overrides: list[str] | None = None
) -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig`; ``source`` prefixes error messages (the file name), or the
    ``--set KEY=VALUE`` flag among ``overrides`` (already merged into ``table``) that set the offending key."""
    try:
        config = _read_experiment(follow_encoder_features(table))
    except (ConfigError, TypeError, ValueError) as error:
        message = str(error)
        flag = _blamed_override(message, overrides or [])
        if flag is None:
            raise ConfigError(f"{source}: {message}") from None
        key = _error_key(message)
        if key == flag.split("=", 1)[0].strip() and message.startswith(f"{key}: "):
            message = message[len(key) + 2 :]  # "--set a.b=x: a.b: expected ..." says the key twice
        raise ConfigError(f"--set {flag}: {message}") from None
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a TOML config (``None``: all defaults) and apply ``--set`` overrides.

    Relative paths (:data:`PATH_KEYS`: ``data.manifest``, ``data.cache_dir``, ``model.pretrained``) are made
    absolute: those of the file against the file's folder, those of ``--set`` against the current directory.
    Errors name the file, or the ``--set`` flag that set the wrong value."""
    table: dict[str, Any] = {}
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: cannot read the config ({error})") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML ({error})") from None
        table = resolve_paths(table, path.parent)
    overrides = list(overrides or [])
    return config_from_dict(merge_overrides(table, overrides), source=source, overrides=overrides)


def save_config(config: ExperimentConfig, path: str | Path) -> Path:
    """Write the resolved config as TOML (atomically); ``None`` values are left out."""

    def drop_none(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: drop_none(v) for k, v in value.items() if v is not None}
        return value

    with atomic_write(path, "wb") as handle:
        tomli_w.dump(drop_none(config.to_dict()), handle)
    return Path(path)
