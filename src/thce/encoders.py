"""The encoder factory: every encoder a config can name, clip- or frame-level, in one registry (:data:`ENCODERS`),
and :func:`build_encoder`, the one function that builds any of them.

Two tables name an encoder. ``[model]`` (:class:`ModelConfig`) names a clip encoder, one embedding per clip: the
paper's CNN and LSTM (:mod:`thce.models`) and the PANNs networks (:mod:`thce.pretrained`). ``[frame_model]``
(:class:`FrameModelConfig`) names a frame encoder, one embedding per output frame, used by frame-level runs
(``data.strong_labels``): the frame CNN, CRNN and LSTM and the DCASE 2017 baseline's MLP (:mod:`thce.frame_models`).
:data:`ENCODERS` holds both, by table then name; :func:`encoder_table` says which table names a run's encoder.

Each table's config lives here because what it may hold depends on the encoder it names; each :class:`EncoderKind`
checks its own settings. Imports point down: this module imports the networks, they do not import it. Adding an
encoder: its network in its own module (a clip encoder ``(batch, frames, mels) -> (batch, embedding_dim)``; a frame
encoder ``(batch, frames, mels) -> (batch, frames // frame_stride, embedding_dim)``, see :mod:`thce.frame_models`),
with ``.embedding_dim``, and one :class:`EncoderKind` entry under its table in :data:`ENCODERS`; a setting of its own
is a field of that table's config, checked by the entry's ``check``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from torch import nn

from thce.audio import LogMelConfig
from thce.errors import ConfigError
from thce.frame_models import (
    CNN_BLOCK_ORDERS,
    DCASE2017_TASK2,
    LSTM_STRIDES,
    MLP_INITS,
    RNN_TYPES,
    DCASE2017MLPEncoder,
    FrameCNNEncoder,
    FrameLSTMEncoder,
)
from thce.models import CENTRINGS, DROPOUT_PLACEMENTS, LSTM_INITS, LSTM_POOLINGS, CNNEncoder, LSTMEncoder
from thce.pretrained.encoder import build_cached_panns_encoder, build_panns_encoder
from thce.pretrained.panns import logmel_config, parse_freeze

#: Builds an encoder: ``(config, frames=, n_mels=, sample_rate_hz=, normalise=) -> nn.Module`` with
#: ``.embedding_dim``, ``config`` the table that names it; ``normalise=False`` drops the final L2 normalisation (the
#: baseline's default). ``frames`` (the clip's frames) and ``sample_rate_hz`` may be ``None`` where not known.
EncoderBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class EncoderKind:
    """One encoder a table can name: how it is built and what it asks of the run.

    Attributes:
        build: the encoder for inputs of ``frames x n_mels`` (features at ``sample_rate_hz``, if known).
        check: raises :class:`ConfigError` for settings of its table that this encoder does not take.
        stride: a frame encoder's input frames per output frame for its ``[frame_model]`` config; ``None`` for a
            clip encoder.
        features: ``(encoder, duration_s) -> LogMelConfig``: the encoder's own front end, which ``[features]``
            must equal (PANNs); ``None``: the config's ``[features]``.
        normalises_inputs: the encoder standardises its features itself (PANNs' ``bn0``): the run's feature
            normaliser is the identity.
        build_cached: ``(config, normalise) -> nn.Module``: the part after the embeddings of a fully frozen encoder
            (:attr:`ModelConfig.cached_embeddings`), with ``.full(whole_encoder)``; ``None``: cannot be frozen.
    """

    build: EncoderBuilder
    check: Callable[[Any], None]
    stride: Callable[[FrameModelConfig], int] | None = None
    features: Callable[[str, float], LogMelConfig] | None = None
    normalises_inputs: bool = False
    build_cached: Callable[[ModelConfig, bool], nn.Module] | None = None


class _EncoderTable:
    """What a table that names an encoder has: its name (:attr:`table`, its key in :data:`ENCODERS`), the
    ``encoder`` it names, and its values checked when it is made (``validate``, first the name)."""

    table: ClassVar[str]
    encoder: str

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        kinds = ENCODERS[self.table]
        if self.encoder not in kinds:
            raise ConfigError(f"{self.table}.encoder: {self.encoder!r} is not one of {', '.join(kinds)}")

    @property
    def kind(self) -> EncoderKind:
        """What the encoder is (its :data:`ENCODERS` entry)."""
        return ENCODERS[self.table][self.encoder]


@dataclass(frozen=True)
class ModelConfig(_EncoderTable):
    """The ``[model]`` table: the clip encoder and its sizes. ``encoder`` is ``"cnn"``, ``"lstm"`` or a PANNs network
    (:data:`PANNS_ENCODERS`).

    PANNs only (docs/panns.md): ``pretrained``: the official checkpoint file to start from (``""``:
    random initialisation; a relative path is taken from the config file's folder); ``freeze``: ``"none"``,
    ``"all"`` or ``"up_to:<module>"`` (e.g. ``"up_to:conv_block4"``); ``encoder_learning_rate``: the encoder's
    learning rate when fine-tuning (``None``: ``train.learning_rate``). A PANNs encoder sets ``[features]`` to its
    own front end (:func:`thce.pretrained.panns.logmel_config`).
    """

    table: ClassVar[str] = "model"

    encoder: str = "cnn"
    lstm_hidden_size: int = 128
    lstm_init: str = "chrono"
    lstm_pooling: str = "last"
    remove_clip_mean: bool = False
    cnn_channels: tuple[int, int] = (32, 64)
    cnn_kernel: int = 7
    cnn_pools: tuple[tuple[int, int], tuple[int, int]] = ((5, 4), (100, 4))
    cnn_dropout: float = 0.3
    cnn_padding: str = "same"
    cnn_dropout_placement: str = "after_centring"
    center_embedding: bool = True
    centring: str = "batch"
    pretrained: str = ""
    freeze: str = "none"
    encoder_learning_rate: float | None = None

    @property
    def cached_embeddings(self) -> bool:
        """Whether the whole encoder is frozen (``freeze = "all"``): it is then a fixed function of its input, and
        training reads its embeddings, computed once (:mod:`thce.pretrained.frozen`), through the encoder's cached
        form (:attr:`EncoderKind.build_cached`)."""
        return self.freeze == "all"

    def validate(self) -> None:
        super().validate()
        self.kind.check(self)
        if self.encoder_learning_rate is not None and not self.encoder_learning_rate > 0:
            raise ConfigError(f"model.encoder_learning_rate: must be > 0, got {self.encoder_learning_rate}")
        if self.lstm_hidden_size < 1 or self.cnn_kernel < 1 or min(self.cnn_channels) < 1:
            raise ConfigError("model: sizes must be positive integers")
        if self.lstm_init not in LSTM_INITS:
            raise ConfigError(f"model.lstm_init: {self.lstm_init!r} is not one of {', '.join(LSTM_INITS)}")
        if self.lstm_pooling not in LSTM_POOLINGS:
            raise ConfigError(f"model.lstm_pooling: {self.lstm_pooling!r} is not one of {', '.join(LSTM_POOLINGS)}")
        if self.cnn_padding not in ("same", "valid"):
            raise ConfigError(f"model.cnn_padding: {self.cnn_padding!r} is not 'same' or 'valid'")
        if self.centring not in CENTRINGS:
            raise ConfigError(f"model.centring: {self.centring!r} is not one of {', '.join(CENTRINGS)}")
        if self.cnn_dropout_placement not in DROPOUT_PLACEMENTS:
            raise ConfigError(
                f"model.cnn_dropout_placement: {self.cnn_dropout_placement!r} is not one of "
                f"{', '.join(DROPOUT_PLACEMENTS)}"
            )
        if not 0.0 <= self.cnn_dropout < 1.0:
            raise ConfigError(f"model.cnn_dropout: {self.cnn_dropout} is not in [0, 1)")


@dataclass(frozen=True)
class FrameModelConfig(_EncoderTable):
    """The ``[frame_model]`` table: the frame encoder of a frame-level run and its sizes (``encoder``: ``"cnn"``,
    ``"crnn"``, ``"lstm"``, ``"dcase2017_mlp"``; :mod:`thce.frame_models`).

    ``frame_stride`` (input frames per output frame): ``None`` takes the encoder's own (cnn / crnn: the product of
    the time pools of ``cnn_pools``, 5 by default; lstm: 5; dcase2017_mlp: 1); set, it must agree with the CNN's
    pools, and the MLP only has 1. ``center_embedding``, ``centring``, ``remove_clip_mean`` and
    ``cnn_dropout_placement`` mean what they mean in :class:`ModelConfig`.
    """

    table: ClassVar[str] = "frame_model"

    encoder: str = "cnn"
    frame_stride: int | None = None
    cnn_channels: tuple[int, ...] = (32, 64)
    cnn_kernel: int = 7
    cnn_pools: tuple[tuple[int, int], ...] = ((5, 4), (1, 4))
    cnn_dropout: float = 0.3
    cnn_dropout_placement: str = "after_centring"
    cnn_block_order: str = "paper"
    rnn_hidden_size: int = 64
    rnn_type: str = "gru"
    lstm_hidden_size: int = 128
    lstm_init: str = "chrono"
    lstm_max_steps: int = 200
    lstm_stride_by: str = "stack"
    mlp_context_frames: int = DCASE2017_TASK2.context_frames
    mlp_context_dilation: int = 2
    mlp_hidden: tuple[int, ...] = DCASE2017_TASK2.hidden_units
    mlp_dropout: float = DCASE2017_TASK2.dropout
    mlp_init: str = "keras_uniform"
    center_embedding: bool = True
    centring: str = "batch"
    remove_clip_mean: bool = False

    @property
    def stride(self) -> int:
        """Input frames per output frame of the encoder this config builds."""
        stride = self.kind.stride
        if stride is None:
            raise ValueError(f"frame_model.encoder {self.encoder!r}: its ENCODERS entry has no stride")
        return stride(self)

    def validate(self) -> None:
        """Raise :class:`~thce.errors.ConfigError` naming ``frame_model.<key>`` for the first bad value."""
        super().validate()
        positive = {
            "cnn_kernel": self.cnn_kernel, "rnn_hidden_size": self.rnn_hidden_size,
            "lstm_hidden_size": self.lstm_hidden_size, "lstm_max_steps": self.lstm_max_steps,
            "mlp_context_frames": self.mlp_context_frames, "mlp_context_dilation": self.mlp_context_dilation,
        }  # fmt: skip
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"frame_model.{key}: must be >= 1, got {value}")
        for key, sizes in (("cnn_channels", self.cnn_channels), ("mlp_hidden", self.mlp_hidden)):
            if not sizes or min(sizes) < 1:
                raise ConfigError(f"frame_model.{key}: must be one or more sizes >= 1, got {list(sizes)}")
        if len(self.cnn_pools) != len(self.cnn_channels) or any(
            len(p) != 2 or min(p) < 1 for p in self.cnn_pools
        ):
            raise ConfigError(
                f"frame_model.cnn_pools: one [time, mel] pair >= 1 per entry of cnn_channels "
                f"({len(self.cnn_channels)}), got {[list(p) for p in self.cnn_pools]}"
            )
        for key, rate in (("cnn_dropout", self.cnn_dropout), ("mlp_dropout", self.mlp_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"frame_model.{key}: {rate} is not in [0, 1)")
        choices = {
            "cnn_dropout_placement": (self.cnn_dropout_placement, DROPOUT_PLACEMENTS),
            "cnn_block_order": (self.cnn_block_order, CNN_BLOCK_ORDERS),
            "rnn_type": (self.rnn_type, tuple(RNN_TYPES)),
            "lstm_init": (self.lstm_init, LSTM_INITS),
            "lstm_stride_by": (self.lstm_stride_by, LSTM_STRIDES),
            "mlp_init": (self.mlp_init, MLP_INITS),
            "centring": (self.centring, CENTRINGS),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"frame_model.{key}: {value!r} is not one of {', '.join(allowed)}")
        if self.frame_stride is not None and self.frame_stride < 1:
            raise ConfigError(f"frame_model.frame_stride: must be >= 1, got {self.frame_stride}")
        self.kind.check(self)


#: A table that names an encoder.
EncoderConfig = ModelConfig | FrameModelConfig


class EncoderSettings(Protocol):
    """What the factory reads of a run's configuration (:class:`thce.config.ExperimentConfig` has it)."""

    @property
    def model(self) -> ModelConfig: ...

    @property
    def frame_model(self) -> FrameModelConfig: ...

    @property
    def strong_labels(self) -> bool: ...


def encoder_table(settings: EncoderSettings) -> EncoderConfig:
    """The table that names a run's encoder: ``[frame_model]`` in a frame-level run (``data.strong_labels``: one
    embedding per output frame), ``[model]`` otherwise."""
    return settings.frame_model if settings.strong_labels else settings.model


def build_encoder(
    config: EncoderConfig,
    *,
    n_mels: int,
    frames: int | None = None,
    sample_rate_hz: int | None = None,
    normalise: bool = True,
    cached: bool = False,
) -> nn.Module:
    """The encoder ``config`` (its table, :func:`encoder_table` for a run's) names for log-mel inputs of ``frames x
    n_mels`` (at ``sample_rate_hz``, checked against a pretrained file's when given); has ``.embedding_dim``.
    ``frames`` may be ``None`` for an encoder that takes any length (frame encoders, PANNs). ``normalise=False``
    drops the final L2 normalisation and centring: the raw output (the baseline's default, see ``BaselineConfig``).
    ``cached``: a fully frozen encoder's part after its cached embeddings (training's view,
    :attr:`EncoderKind.build_cached`)."""
    config.validate()
    kind = config.kind
    if cached:
        if kind.build_cached is None:
            raise ConfigError(f"{config.table}.encoder: {config.encoder} cannot train on cached embeddings")
        return kind.build_cached(config, normalise)
    return kind.build(config, frames=frames, n_mels=n_mels, sample_rate_hz=sample_rate_hz, normalise=normalise)


# ------------------------------------------------------------------------------------------- clip encoders


def _clip_frames(config: ModelConfig, frames: int | None) -> int:
    if frames is None:
        raise ValueError(f"model.encoder {config.encoder!r}: build_encoder needs the clip's number of frames")
    return frames


def _build_lstm(
    config: ModelConfig, *, frames: int | None, n_mels: int, sample_rate_hz: int | None, normalise: bool
) -> nn.Module:
    return LSTMEncoder(
        n_mels, config.lstm_hidden_size, normalise=normalise, center=config.center_embedding,
        centring=config.centring, init=config.lstm_init, max_steps=_clip_frames(config, frames),
        pooling=config.lstm_pooling, clip_mean=config.remove_clip_mean,
    )  # fmt: skip


def _cnn_options(config: EncoderConfig, normalise: bool) -> dict[str, Any]:
    """The CNN settings both tables hold, as the keywords of :class:`CNNEncoder` and :class:`FrameCNNEncoder`."""
    return {
        "channels": tuple(config.cnn_channels), "kernel": config.cnn_kernel,
        "pools": tuple(tuple(p) for p in config.cnn_pools), "dropout": config.cnn_dropout, "normalise": normalise,
        "center": config.center_embedding, "centring": config.centring,
        "dropout_placement": config.cnn_dropout_placement, "clip_mean": config.remove_clip_mean,
    }  # fmt: skip


def _build_cnn(
    config: ModelConfig, *, frames: int | None, n_mels: int, sample_rate_hz: int | None, normalise: bool
) -> nn.Module:
    return CNNEncoder(
        _clip_frames(config, frames), n_mels, padding=config.cnn_padding, **_cnn_options(config, normalise)
    )


def _no_pretrained_settings(config: ModelConfig) -> None:
    """An encoder trained from scratch: the settings of a pretrained one stay at their defaults."""
    for name, default in (("pretrained", ""), ("freeze", "none"), ("encoder_learning_rate", None)):
        if getattr(config, name) != default:
            raise ConfigError(f"model.{name}: only for a PANNs encoder ({', '.join(PANNS_ENCODERS)})")


def _build_panns(
    config: ModelConfig, *, frames: int | None, n_mels: int, sample_rate_hz: int | None, normalise: bool
) -> nn.Module:
    return build_panns_encoder(config, normalise=normalise, sample_rate_hz=sample_rate_hz)


def _check_panns(config: ModelConfig) -> None:
    parse_freeze(config.freeze, config.encoder)
    if config.remove_clip_mean:
        raise ConfigError(f"model.remove_clip_mean: not for a PANNs encoder ({config.encoder} has its own front end)")


def _panns_features(encoder: str, duration_s: float) -> LogMelConfig:
    return logmel_config(encoder, duration_s=duration_s)


def _build_cached_panns(config: ModelConfig, normalise: bool) -> nn.Module:
    return build_cached_panns_encoder(config, normalise=normalise)


# ------------------------------------------------------------------------------------------ frame encoders


def _build_frame_cnn(
    config: FrameModelConfig, *, frames: int | None, n_mels: int, sample_rate_hz: int | None, normalise: bool,
    recurrent: bool = False,
) -> nn.Module:  # fmt: skip
    return FrameCNNEncoder(
        n_mels, recurrent=recurrent, rnn_hidden_size=config.rnn_hidden_size, rnn_type=config.rnn_type,
        block_order=config.cnn_block_order,
        **_cnn_options(config, normalise),
    )


def _build_crnn(
    config: FrameModelConfig, *, frames: int | None, n_mels: int, sample_rate_hz: int | None, normalise: bool
) -> nn.Module:
    return _build_frame_cnn(
        config, frames=frames, n_mels=n_mels, sample_rate_hz=sample_rate_hz, normalise=normalise, recurrent=True
    )


def _build_frame_lstm(
    config: FrameModelConfig, *, frames: int | None, n_mels: int, sample_rate_hz: int | None, normalise: bool
) -> nn.Module:
    return FrameLSTMEncoder(
        n_mels, config.lstm_hidden_size, frame_stride=config.stride, stride_by=config.lstm_stride_by,
        normalise=normalise, center=config.center_embedding, centring=config.centring, init=config.lstm_init,
        max_steps=config.lstm_max_steps, clip_mean=config.remove_clip_mean,
    )  # fmt: skip


def _build_dcase2017_mlp(
    config: FrameModelConfig, *, frames: int | None, n_mels: int, sample_rate_hz: int | None, normalise: bool
) -> nn.Module:
    return DCASE2017MLPEncoder(
        n_mels, context_frames=config.mlp_context_frames, context_dilation=config.mlp_context_dilation,
        hidden=tuple(config.mlp_hidden), dropout=config.mlp_dropout, init=config.mlp_init, normalise=normalise,
        center=config.center_embedding, centring=config.centring, clip_mean=config.remove_clip_mean,
    )  # fmt: skip


def _time_pools(config: FrameModelConfig) -> int:
    return math.prod(p[0] for p in config.cnn_pools)


def _chosen_stride(config: FrameModelConfig) -> int:
    return 5 if config.frame_stride is None else config.frame_stride


def _every_frame(config: FrameModelConfig) -> int:
    return 1


def _fixed_stride(why: str) -> Callable[[FrameModelConfig], None]:
    """The check of an encoder whose stride follows from its other settings: ``frame_model.frame_stride``, when
    set, must equal it (``why`` says what fixes it)."""

    def check(config: FrameModelConfig) -> None:
        if config.frame_stride is not None and config.frame_stride != config.stride:
            raise ConfigError(
                f"frame_model.frame_stride: {config.frame_stride} for encoder {config.encoder!r}, whose stride is "
                f"{config.stride} ({why})"
            )

    return check


def _any_stride(config: FrameModelConfig) -> None:
    """An encoder that takes any ``frame_model.frame_stride``."""


_POOLED = _fixed_stride("the product of the time pools of frame_model.cnn_pools")

#: The PANNs networks of :mod:`thce.pretrained` (issue 17), by ``model.encoder`` name.
PANNS_ENCODERS = ("panns_cnn14_16k", "panns_cnn14", "panns_cnn10")

#: Every encoder a config can name: table (``"model"``, ``"frame_model"``) -> its ``encoder`` value -> what it is;
#: in each table, the order error messages list them.
ENCODERS: dict[str, dict[str, EncoderKind]] = {
    "model": {
        "cnn": EncoderKind(_build_cnn, _no_pretrained_settings),
        "lstm": EncoderKind(_build_lstm, _no_pretrained_settings),
        **{
            name: EncoderKind(_build_panns, _check_panns, features=_panns_features, normalises_inputs=True,
                              build_cached=_build_cached_panns)
            for name in PANNS_ENCODERS
        },
    },
    "frame_model": {
        "cnn": EncoderKind(_build_frame_cnn, _POOLED, stride=_time_pools),
        "crnn": EncoderKind(_build_crnn, _POOLED, stride=_time_pools),
        "lstm": EncoderKind(_build_frame_lstm, _any_stride, stride=_chosen_stride),
        "dcase2017_mlp": EncoderKind(_build_dcase2017_mlp, _fixed_stride("the DCASE 2017 baseline scores every frame"),
                                     stride=_every_frame),
    },
}  # fmt: skip
