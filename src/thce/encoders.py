"""The encoder factory: every ``model.encoder`` a config can name, in one registry (:data:`ENCODERS`), and
:func:`build_encoder`, the one function that builds any of them (the paper's CNN and LSTM of :mod:`thce.models`, the
PANNs networks of :mod:`thce.pretrained`).

:class:`ModelConfig` (the ``[model]`` table) lives here because what it may hold depends on the encoder it names;
each :class:`EncoderKind` checks its own settings. Imports point down: this module imports the networks, they do not
import it. Adding an encoder: its network (an ``nn.Module`` with ``.embedding_dim``, ``(batch, frames, mels) ->
(batch, embedding_dim)``) in its own module, and one :class:`EncoderKind` entry in :data:`ENCODERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from thce.audio import LogMelConfig
from thce.errors import ConfigError
from thce.models import CENTRINGS, DROPOUT_PLACEMENTS, LSTM_INITS, LSTM_POOLINGS, CNNEncoder, LSTMEncoder
from thce.pretrained.encoder import build_cached_panns_encoder, build_panns_encoder
from thce.pretrained.panns import logmel_config, parse_freeze

#: Builds an encoder: ``(config, frames=, n_mels=, sample_rate_hz=, normalise=) -> nn.Module`` with
#: ``.embedding_dim``; ``normalise=False`` drops the final L2 normalisation (the baseline's default).
EncoderBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class EncoderKind:
    """One ``model.encoder`` value: how it is built and what it asks of the run.

    Attributes:
        build: the encoder for inputs of ``frames x n_mels`` (features at ``sample_rate_hz``, if known).
        check: raises :class:`ConfigError` for ``[model]`` settings this encoder does not take.
        features: ``(encoder, duration_s) -> LogMelConfig``: the encoder's own front end, which ``[features]``
            must equal (PANNs); ``None``: the config's ``[features]``.
        normalises_inputs: the encoder standardises its features itself (PANNs' ``bn0``): the run's feature
            normaliser is the identity.
        build_cached: ``(config, normalise) -> nn.Module``: the part after the embeddings of a fully frozen encoder
            (:attr:`ModelConfig.cached_embeddings`), with ``.full(whole_encoder)``; ``None``: cannot be frozen.
    """

    build: EncoderBuilder
    check: Callable[[ModelConfig], None]
    features: Callable[[str, float], LogMelConfig] | None = None
    normalises_inputs: bool = False
    build_cached: Callable[[ModelConfig, bool], nn.Module] | None = None


@dataclass(frozen=True)
class ModelConfig:
    """Encoder choice and sizes. ``encoder`` is ``"cnn"``, ``"lstm"`` or a PANNs network (:data:`PANNS_ENCODERS`).

    PANNs only (docs/panns.md): ``pretrained``: the official checkpoint file to start from (``""``:
    random initialisation; a relative path is taken from the config file's folder); ``freeze``: ``"none"``,
    ``"all"`` or ``"up_to:<module>"`` (e.g. ``"up_to:conv_block4"``); ``encoder_learning_rate``: the encoder's
    learning rate when fine-tuning (``None``: ``train.learning_rate``). A PANNs encoder sets ``[features]`` to its
    own front end (:func:`thce.pretrained.panns.logmel_config`).
    """

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

    def __post_init__(self) -> None:
        self.validate()

    @property
    def kind(self) -> EncoderKind:
        """What the encoder is (its :data:`ENCODERS` entry)."""
        return ENCODERS[self.encoder]

    @property
    def cached_embeddings(self) -> bool:
        """Whether the whole encoder is frozen (``freeze = "all"``): it is then a fixed function of its input, and
        training reads its embeddings, computed once (:mod:`thce.pretrained.frozen`), through the encoder's cached
        form (:attr:`EncoderKind.build_cached`)."""
        return self.freeze == "all"

    def validate(self) -> None:
        kind = ENCODERS.get(self.encoder)
        if kind is None:
            raise ConfigError(f"model.encoder: {self.encoder!r} is not one of {', '.join(ENCODERS)}")
        kind.check(self)
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


def build_encoder(
    config: ModelConfig,
    *,
    frames: int,
    n_mels: int,
    sample_rate_hz: int | None = None,
    normalise: bool = True,
    cached: bool = False,
) -> nn.Module:
    """The encoder ``config`` names for log-mel inputs of ``frames x n_mels`` (at ``sample_rate_hz``, checked
    against a pretrained file's when given); has ``.embedding_dim``. ``normalise=False`` drops the final L2
    normalisation (the baseline's default, see ``BaselineConfig``). ``cached``: a fully frozen encoder's part after
    its cached embeddings (training's view, :attr:`EncoderKind.build_cached`)."""
    config.validate()
    kind = ENCODERS[config.encoder]
    if cached:
        if kind.build_cached is None:
            raise ConfigError(f"model.encoder: {config.encoder} cannot train on cached embeddings")
        return kind.build_cached(config, normalise)
    return kind.build(config, frames=frames, n_mels=n_mels, sample_rate_hz=sample_rate_hz, normalise=normalise)


def _build_lstm(
    config: ModelConfig, *, frames: int, n_mels: int, sample_rate_hz: int | None, normalise: bool
) -> nn.Module:
    return LSTMEncoder(
        n_mels, config.lstm_hidden_size, normalise=normalise, center=config.center_embedding,
        centring=config.centring, init=config.lstm_init, max_steps=frames, pooling=config.lstm_pooling,
        clip_mean=config.remove_clip_mean,
    )  # fmt: skip


def _build_cnn(
    config: ModelConfig, *, frames: int, n_mels: int, sample_rate_hz: int | None, normalise: bool
) -> nn.Module:
    return CNNEncoder(
        frames,
        n_mels,
        channels=tuple(config.cnn_channels),
        kernel=config.cnn_kernel,
        pools=tuple(tuple(p) for p in config.cnn_pools),
        dropout=config.cnn_dropout,
        normalise=normalise,
        center=config.center_embedding,
        centring=config.centring,
        dropout_placement=config.cnn_dropout_placement,
        padding=config.cnn_padding,
        clip_mean=config.remove_clip_mean,
    )


def _no_pretrained_settings(config: ModelConfig) -> None:
    """An encoder trained from scratch: the settings of a pretrained one stay at their defaults."""
    for name, default in (("pretrained", ""), ("freeze", "none"), ("encoder_learning_rate", None)):
        if getattr(config, name) != default:
            raise ConfigError(f"model.{name}: only for a PANNs encoder ({', '.join(PANNS_ENCODERS)})")


def _build_panns(
    config: ModelConfig, *, frames: int, n_mels: int, sample_rate_hz: int | None, normalise: bool
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


#: The PANNs networks of :mod:`thce.pretrained` (issue 17), by ``model.encoder`` name.
PANNS_ENCODERS = ("panns_cnn14_16k", "panns_cnn14", "panns_cnn10")

#: Every ``model.encoder`` value, in the order error messages list them.
ENCODERS: dict[str, EncoderKind] = {
    "cnn": EncoderKind(_build_cnn, _no_pretrained_settings),
    "lstm": EncoderKind(_build_lstm, _no_pretrained_settings),
    **{
        name: EncoderKind(_build_panns, _check_panns, features=_panns_features, normalises_inputs=True,
                          build_cached=_build_cached_panns)
        for name in PANNS_ENCODERS
    },
}  # fmt: skip
