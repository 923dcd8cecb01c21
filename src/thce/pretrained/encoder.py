"""PANNs networks as thce encoders (issue 17): :class:`PannsEncoder` (log-mel in dB -> embedding, with
``model.freeze`` and the fine-tuning learning rate) and :class:`CachedPannsEncoder` (what a fully frozen one trains
as, on cached embeddings: :mod:`thce.pretrained.frozen`). The networks themselves are in :mod:`thce.pretrained.panns`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch.nn.functional as F
from torch import Tensor, nn

from thce.errors import ConfigError
from thce.models import EmbeddingOutput
from thce.pretrained.checkpoints import load_panns_checkpoint
from thce.pretrained.panns import PannsCnn, PannsVariant, panns_variant, parse_freeze

def _embedding_output(
    dim: int, *, normalise: bool, center: bool, centring: str, dropout: float
) -> tuple[float, EmbeddingOutput]:
    """PANNs' last dropout and the :class:`EmbeddingOutput` after it, the same for the whole and the cached encoder:
    with centring and L2 normalisation the dropout moves after the centring (as the CNN's default), so the returned
    dropout to apply before the output is 0; otherwise it stays before."""
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"PANNs encoder: embedding dropout {dropout} is not in [0, 1)")
    moved = normalise and center
    output = EmbeddingOutput(dim, normalise=normalise, center=center, centring=centring, dropout=dropout if moved else 0.0)
    return (0.0 if moved else dropout), output


class PannsEncoder(nn.Module):
    """A PANNs network as a thce encoder: log-mel ``(B, T, 64)`` in dB -> embedding ``(B, embedding_dim)``, then
    :class:`thce.models.EmbeddingOutput` (centring, L2 normalisation) exactly as for the CNN/LSTM encoders.

    ``pre_output`` is PANNs' ``embedding`` (``relu(fc1)``, 2048-d or 512-d). Its dropout (``embedding_dropout``,
    PANNs' 0.5) moves after the centring when the output is centred and normalised, as the CNN's
    ``"after_centring"`` placement; otherwise it stays in ``pre_output``. The network is ``self.panns`` (without
    the AudioSet head), so this module's keys are the official ones under ``panns.``.

    ``freeze`` (``model.freeze``, :func:`parse_freeze`): the frozen modules get ``requires_grad=False`` and stay in
    eval mode whatever :meth:`train` says (their batch norms keep the checkpoint's statistics). With everything
    frozen (``"all"``), the network is a fixed function of the log-mel, and training uses a
    :class:`CachedPannsEncoder` on that function's output instead (:mod:`thce.pretrained.frozen`).
    ``learning_rate``: the optimiser's learning rate for this encoder's parameters (``model.encoder_learning_rate``;
    ``None``: the run's ``train.learning_rate``), read by :func:`thce.training.engine.fit_stage`.
    """

    def __init__(
        self,
        variant: str | PannsVariant,
        *,
        normalise: bool = True,
        center: bool = False,
        centring: str = "fixed",
        embedding_dropout: float = 0.5,
        freeze: str = "none",
        learning_rate: float | None = None,
    ) -> None:
        super().__init__()
        self.panns = PannsCnn(variant, classes=None)
        self.variant = self.panns.variant
        self.embedding_dim = self.variant.embedding_dim
        self.embedding_dropout, self.output = _embedding_output(
            self.embedding_dim, normalise=normalise, center=center, centring=centring, dropout=embedding_dropout
        )
        self.frozen = parse_freeze(freeze, self.variant)
        self.fully_frozen = freeze == "all"
        for name in self.frozen:
            getattr(self.panns, name).requires_grad_(False)
        self.learning_rate = learning_rate
        self.train()

    def train(self, mode: bool = True) -> PannsEncoder:
        super().train(mode)
        for name in self.frozen:
            getattr(self.panns, name).eval()
        if self.fully_frozen:
            self.panns.eval()  # no dropout inside a fixed function either: what the cached embeddings are
        return self

    def panns_embedding(self, logmel: Tensor) -> Tensor:
        """PANNs' clip embedding ``(B, embedding_dim)`` of log-mel ``(B, T, 64)`` in dB (no embedding dropout)."""
        return self.panns.embed(logmel)

    def pre_output(self, x: Tensor) -> Tensor:
        """What :attr:`output` receives: PANNs' clip embedding ``(B, embedding_dim)`` of log-mel ``(B, T, 64)``, with
        the embedding dropout."""
        return F.dropout(self.panns_embedding(x), p=self.embedding_dropout, training=self.training)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.pre_output(x))

    def forward_waveform(self, waveform: Tensor) -> Tensor:
        """The embedding of waveforms ``(B, N)`` at ``variant.sample_rate_hz``: front end, then :meth:`forward`."""
        return self.forward(self.panns.logmel(waveform))


class CachedPannsEncoder(nn.Module):
    """What a fully frozen :class:`PannsEncoder` trains as: its inputs are PANNs' embeddings ``(B, embedding_dim)``
    already computed (eval mode, cached by :mod:`thce.pretrained.frozen`), and only the part after them runs:
    embedding dropout, then :attr:`output` (centring, L2 normalisation), built exactly as :class:`PannsEncoder`'s.
    :meth:`full` puts the trained part back on the whole network for detect, export and checkpoints."""

    def __init__(
        self,
        variant: str | PannsVariant,
        *,
        normalise: bool = True,
        center: bool = False,
        centring: str = "fixed",
        embedding_dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.variant = panns_variant(variant)
        self.embedding_dim = self.variant.embedding_dim
        self.embedding_dropout, self.output = _embedding_output(
            self.embedding_dim, normalise=normalise, center=center, centring=centring, dropout=embedding_dropout
        )

    def pre_output(self, x: Tensor) -> Tensor:
        """PANNs' cached embedding ``(B, embedding_dim)`` with the embedding dropout."""
        if x.dim() != 2 or x.shape[1] != self.embedding_dim:
            raise ConfigError(f"{self.variant.name} (frozen): expected cached embeddings (batch, {self.embedding_dim})")
        return F.dropout(x, p=self.embedding_dropout, training=self.training)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.pre_output(x))

    def full(self, encoder: PannsEncoder) -> PannsEncoder:
        """``encoder`` (the whole network, weights loaded) with this module's trained :attr:`output` state, in the
        same mode as this module."""
        if encoder.variant != self.variant or encoder.embedding_dropout != self.embedding_dropout:
            raise ConfigError(f"{self.variant.name}: the whole encoder is not built as its cached part")
        encoder.output.load_state_dict(self.output.state_dict())
        return encoder.train(self.training)


# ----------------------------------------------------------------------------------------------------------------------
# Built from a config


class PannsSettings(Protocol):
    """The ``[model]`` settings a PANNs encoder is built from (:class:`thce.encoders.ModelConfig`, which builds
    encoders through :func:`thce.encoders.build_encoder`, has them; this module sits below it)."""

    @property
    def encoder(self) -> str: ...
    @property
    def pretrained(self) -> str: ...
    @property
    def freeze(self) -> str: ...
    @property
    def encoder_learning_rate(self) -> float | None: ...
    @property
    def center_embedding(self) -> bool: ...
    @property
    def centring(self) -> str: ...


def build_panns_encoder(
    config: PannsSettings, *, normalise: bool = True, sample_rate_hz: int | None = None
) -> nn.Module:
    """A :class:`thce.pretrained.PannsEncoder` of ``config``: the checkpoint ``config.pretrained`` loaded (checked
    against the variant and, if given, the features' ``sample_rate_hz``; :class:`ConfigError` / ``DataError``
    otherwise), ``config.freeze`` applied, ``config.encoder_learning_rate`` attached."""
    encoder = PannsEncoder(
        config.encoder, normalise=normalise, center=config.center_embedding, centring=config.centring,
        freeze=config.freeze, learning_rate=config.encoder_learning_rate,
    )  # fmt: skip
    if config.pretrained:
        encoder.panns.load_official(_pretrained_state(config.pretrained, config.encoder, sample_rate_hz))
    return encoder


def build_cached_panns_encoder(config: PannsSettings, *, normalise: bool = True) -> nn.Module:
    """What a fully frozen PANNs encoder (``model.freeze = "all"``) trains as: a
    :class:`thce.pretrained.panns.CachedPannsEncoder` on cached embeddings; no weights to load."""
    return CachedPannsEncoder(
        config.encoder, normalise=normalise, center=config.center_embedding, centring=config.centring
    )


_PRETRAINED_CACHE: dict[tuple[str, str, int | None], tuple[tuple[int, int], dict[str, Tensor]]] = {}


def _pretrained_state(path: str, variant: str, sample_rate_hz: int | None) -> dict[str, Tensor]:
    """The checked official state dict of ``path``, read once per run (every method's encoder starts from it)."""
    key = (path, variant, sample_rate_hz)
    try:
        stat = Path(path).stat()
        stamp = (stat.st_size, stat.st_mtime_ns)
    except OSError:
        stamp = (-1, -1)  # load_panns_checkpoint says what is wrong with it
    cached = _PRETRAINED_CACHE.get(key)
    if cached is None or cached[0] != stamp:
        _PRETRAINED_CACHE.clear()  # one file held at a time (Cnn14: 327 MB)
        _PRETRAINED_CACHE[key] = (stamp, load_panns_checkpoint(path, variant, sample_rate_hz=sample_rate_hz))
    return _PRETRAINED_CACHE[key][1]
