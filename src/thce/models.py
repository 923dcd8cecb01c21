"""Networks of the paper (Sec. 4, Fig. 2): encoders E ending in an L2-normalised embedding, the cluster layer
W (Eq. 4) and the sigmoid detector head.

Input features are log-mel matrices ``x`` of shape ``(batch, frames, mels)`` (1000 x 64 for 10 s clips).

Our reading of the paper where it is silent (also in docs/method.md):

- **LSTMEncoder**: one LSTM layer of 128 units; the embedding is the last hidden state ``h_T`` (128-d),
  L2-normalised. ``ModelConfig.lstm_init`` defaults to chrono initialisation (:func:`init_lstm`): with PyTorch's or
  Keras' the last state of a 1000-frame clip does not depend on its first 990 frames. Departures, off by default
  (the few-sources configs use them, chosen on validation): ``ModelConfig.lstm_pooling`` (mean or max of the
  hidden states over time) and ``ModelConfig.remove_clip_mean`` (:func:`remove_clip_mean`, CNN too).
- **CNNEncoder**: the paper's two convolutional layers: 32 filters 7x7, ReLU, batch norm, 5x4 max-pool
  (time x mel), dropout 0.3; 64 filters 7x7, ReLU, batch norm, 100x4 max-pool, dropout 0.3, with ``same``
  padding: the pool sizes then divide the 1000 x 64 input exactly (1000/5/100 = 2, 64/4/4 = 4) and the map is
  64 channels x 2 x 4, a 512-d embedding, then L2-normalised. With Keras' default ``valid`` padding
  (``cnn_padding = "valid"``) the second pool keeps one row of 192 and drops the rest: the network would see only
  the first ~5.4 s of a 10 s clip and miss every event after it.
- **Centring** (``ModelConfig.center_embedding``, on by default; not in the paper): before the L2 normalisation
  the embedding passes a batch norm without learnable parameters. The CNN's last operations (batch norm, then a
  100x4 max-pool) make every output component a maximum of ~400 standardised values, about +2.5 for every clip,
  so all embeddings start within a few degrees of one common direction (cosines ~0.98) and the cosine layer sees
  almost no differences; batch-norm shifts learn to remove that offset only at ~lr per step. Centring removes it.
  Its statistics are estimated on eval-mode inputs and, by default (``centring = "fixed"``), applied identically
  in train and eval mode (see :class:`EmbeddingOutput`), so what the triple-header CE trains on is what
  clustering, the detector and scoring see.
- **Dropout placement** (``ModelConfig.cnn_dropout_placement``, default ``"after_centring"``): the paper's second
  dropout follows the 100x4 max-pool; with centring after it, the dropout noise on the common offset survives
  while the offset itself is removed, and two dropout masks of one clip give nearly unrelated embeddings. By
  default it moves onto the centred vector; ``"before_centring"`` keeps the literal order.
- **ClusterLayer**: the dense layer of Eq. 4, ``h = W^T E(x)`` without bias. W is unnormalised: it holds
  ``alpha * centroid`` at initialisation ("we combine alpha and L2-normalised W"), so ``h`` is alpha times a
  cosine at that moment and free afterwards.
- **DetectorHead**: a dense layer with L sigmoid outputs (one per event class; background is the all-zero
  target). The proposed model puts it on the cluster layer's output ``h`` (Fig. 2, "without discarding the
  dense layer of Eq. (4)"); the baseline puts it directly on the encoder's output, by default *without* the L2
  normalisation (the constraint belongs to the embedding method; a sigmoid layer on a unit vector has logits
  bounded by ``||w||`` and learns far slower, which would handicap the baseline: see docs/method.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thce.errors import ConfigError


def l2_normalise(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Rows of ``x`` (..., D) scaled to unit L2 norm."""
    return F.normalize(x, p=2.0, dim=-1, eps=eps)


CENTRINGS = ("fixed", "batch")
DROPOUT_PLACEMENTS = ("after_centring", "before_centring")


def remove_clip_mean(x: Tensor) -> Tensor:
    """``x`` minus each clip's mean over time, per band: ``(B, T, F) -> (B, T, F)``. On a log-mel this divides each
    band's energy by its geometric mean over the clip (cepstral mean normalisation): a recording's stationary colour
    and level (its place, its microphone) are gone, what changes within the clip (an event) stays."""
    return x - x.mean(dim=1, keepdim=True)


class EmbeddingOutput(nn.Module):
    """The last step of an encoder: optional centring (a batch norm without learnable parameters), optional
    dropout, then L2 normalisation; or the raw output when ``normalise`` is off (the baseline).

    ``centring`` (training calls :meth:`calibrate` with eval-mode inputs before every clustering and validation, see
    ``thce.training.data.calibrate_centring``, so eval mode always uses eval-mode statistics of the current network):

    - ``"batch"`` (default): batch statistics in train mode, so training batches are always centred.
    - ``"fixed"``: the calibrated statistics in train mode too (train and eval identical up to dropout); between
      calibrations the encoder's output can drift away from them.

    ``dropout`` > 0 applies dropout to the centred vector (``model.cnn_dropout_placement = "after_centring"``):
    on the raw CNN output every component is ~+2.5 for every clip (a max of ~400 standardised values), so dropout
    there is noise proportional to the common offset, which centring then removes while the noise stays: two
    dropout masks on one clip gave embeddings with cosine ~0.37. On the centred vector the noise is proportional
    to what distinguishes clips.
    """

    def __init__(
        self, dim: int, *, normalise: bool, center: bool, centring: str = "fixed", dropout: float = 0.0
    ) -> None:
        super().__init__()
        if centring not in CENTRINGS:
            raise ConfigError(f"model.centring: {centring!r} is not one of {', '.join(CENTRINGS)}")
        self.normalise = normalise
        self.centring = centring
        self.center = nn.BatchNorm1d(dim, affine=False) if (normalise and center) else None
        self.dropout = nn.Dropout(dropout) if (normalise and dropout > 0) else None
        if self.center is not None and centring == "fixed":
            self.center.eval()

    def train(self, mode: bool = True) -> EmbeddingOutput:
        super().train(mode)
        if self.center is not None and self.centring == "fixed":
            self.center.eval()  # fixed statistics: never batch statistics, never updated by training
        return self

    @torch.no_grad()
    def calibrate(self, pre_centring: list[Tensor]) -> None:
        """Set the centring statistics to the mean and (biased, as batch norm) variance of ``pre_centring``, a list
        of (n, D) batches of what this layer receives (computed in eval mode by the caller); (B, T', D) batches of a
        frame encoder count each frame as a row."""
        if self.center is None:
            return
        x = torch.cat([b.float().reshape(-1, b.shape[-1]) for b in pre_centring])  # frame encoders' (B, T', D) as rows
        self.center.running_mean.copy_(x.mean(dim=0))
        self.center.running_var.copy_(x.var(dim=0, unbiased=len(x) > 1))
        self.center.num_batches_tracked.fill_(1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, D) -> (B, D); a frame encoder's (B, T', D) -> (B, T', D), each frame a row (one centring for all)."""
        if not self.normalise:
            return x
        if x.ndim > 2:
            return self(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        if self.center is not None:
            x = self.center(x)
        if self.dropout is not None:
            x = self.dropout(x)
        return l2_normalise(x)


LSTM_INITS = ("pytorch", "keras", "chrono")
LSTM_POOLINGS = ("last", "mean", "max")


def init_lstm(lstm: nn.LSTM, scheme: str, *, max_steps: int = 1000, generator: torch.Generator | None = None) -> None:
    """Re-initialise ``lstm`` in place (PyTorch's gate order: input, forget, cell, output).

    - ``"pytorch"``: leave PyTorch's default, every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)): the forget gate
      starts near sigmoid(0) = 0.5, so the cell forgets half of its content per step and the last hidden state of
      a 1000-frame clip carries almost nothing from the first 990 frames, nor do gradients reach them.
    - ``"keras"``: Keras' LSTM defaults (Glorot-uniform input weights, orthogonal recurrent weights, zero biases
      with ``unit_forget_bias``: forget-gate bias 1, Gers et al. 2000; Jozefowicz et al. 2015).
    - ``"chrono"``: Tallec and Ollivier, "Can recurrent neural networks warp time?" (ICLR 2018): forget-gate bias
      ``log(u)``, ``u ~ U(1, max_steps - 1)``, input-gate bias its negative, so the units start with memory spans
      spread up to ``max_steps`` (the clip's frames); weights as ``"keras"``.
    """
    if scheme not in LSTM_INITS:
        raise ConfigError(f"model.lstm_init: {scheme!r} is not one of {', '.join(LSTM_INITS)}")
    if scheme == "pytorch":
        return
    hidden = lstm.hidden_size
    with torch.no_grad():
        for layer in range(lstm.num_layers):
            w_ih, w_hh = getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")
            b_ih, b_hh = getattr(lstm, f"bias_ih_l{layer}"), getattr(lstm, f"bias_hh_l{layer}")
            # as Keras: Glorot over the whole (4H, F) input kernel; the (4H, H) recurrent kernel with orthonormal
            # columns (Keras' (H, 4H) kernel with orthonormal rows, transposed)
            nn.init.xavier_uniform_(w_ih, generator=generator)
            nn.init.orthogonal_(w_hh, generator=generator)
            b_ih.zero_()
            b_hh.zero_()
            forget, input_gate = slice(hidden, 2 * hidden), slice(0, hidden)
            if scheme == "keras":
                b_ih[forget] = 1.0
            else:
                u = torch.rand(hidden, generator=generator) * (max(max_steps, 3) - 2) + 1.0
                b_ih[forget] = torch.log(u)
                b_ih[input_gate] = -torch.log(u)


class LSTMEncoder(nn.Module):
    """One LSTM layer; embedding = last hidden state, L2-normalised. ``(B, T, F) -> (B, hidden_size)``.

    ``init`` chooses the initialisation (:func:`init_lstm`); ``max_steps`` is the sequence length it plans for.
    ``pooling`` chooses what of the hidden states ``h_1 .. h_T`` becomes the embedding: ``"last"`` (``h_T``, the
    paper's reading), or their ``"mean"`` or element-wise ``"max"`` over time (not in the paper: every step's state
    then receives gradient directly, not only through the recurrence). ``clip_mean``: the input passes
    :func:`remove_clip_mean` first.
    """

    def __init__(
        self,
        n_mels: int = 64,
        hidden_size: int = 128,
        *,
        normalise: bool = True,
        center: bool = False,
        centring: str = "fixed",
        init: str = "pytorch",
        max_steps: int = 1000,
        pooling: str = "last",
        clip_mean: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in LSTM_POOLINGS:
            raise ConfigError(f"model.lstm_pooling: {pooling!r} is not one of {', '.join(LSTM_POOLINGS)}")
        self.pooling = pooling
        self.clip_mean = clip_mean
        self.lstm = nn.LSTM(n_mels, hidden_size, batch_first=True)
        init_lstm(self.lstm, init, max_steps=max_steps)
        self.embedding_dim = hidden_size
        self.output = EmbeddingOutput(hidden_size, normalise=normalise, center=center, centring=centring)

    def pre_output(self, x: Tensor) -> Tensor:
        """What :attr:`output` receives: the hidden states pooled over time as :attr:`pooling` says (B, hidden_size)."""
        # a deep copy (Proposed1's model, kept while Proposed2 trains on) leaves cuDNN's weights in separate chunks,
        # which it then compacts at every call, with a warning; re-flattening is a no-op when they already are one
        self.lstm.flatten_parameters()
        states, (h_last, _) = self.lstm(remove_clip_mean(x) if self.clip_mean else x)  # states: (B, T, hidden_size)
        if self.pooling == "mean":
            return states.mean(dim=1)
        if self.pooling == "max":
            return states.amax(dim=1)
        return h_last[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.pre_output(x))


class CNNEncoder(nn.Module):
    """The paper's two-layer CNN; flattened output L2-normalised. ``(B, T, F) -> (B, embedding_dim)``.

    Pool sizes are (time, mel). ``embedding_dim`` is derived from ``frames`` and ``n_mels`` (512 for 1000 x 64
    with ``same`` padding). With ``dropout_placement = "after_centring"`` and a centred, normalised output, the
    second block's dropout moves after the centring (see :class:`EmbeddingOutput`); the first block's stays.
    ``clip_mean``: the input passes :func:`remove_clip_mean` first.
    """

    def __init__(
        self,
        frames: int = 1000,
        n_mels: int = 64,
        *,
        channels: tuple[int, int] = (32, 64),
        kernel: int = 7,
        pools: tuple[tuple[int, int], tuple[int, int]] = ((5, 4), (100, 4)),
        dropout: float = 0.3,
        normalise: bool = True,
        center: bool = False,
        centring: str = "fixed",
        dropout_placement: str = "before_centring",
        padding: str = "same",
        clip_mean: bool = False,
    ) -> None:
        super().__init__()
        self.clip_mean = clip_mean
        if dropout_placement not in DROPOUT_PLACEMENTS:
            raise ConfigError(
                f"model.cnn_dropout_placement: {dropout_placement!r} is not one of {', '.join(DROPOUT_PLACEMENTS)}"
            )
        if padding not in ("same", "valid"):
            raise ConfigError(f"CNNEncoder: padding must be 'same' or 'valid', got {padding!r}")
        shrink = 0 if padding == "same" else kernel - 1
        layers: list[nn.Module] = []
        in_channels, t, f = 1, frames, n_mels
        for out_channels, (pool_t, pool_f) in zip(channels, pools):
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel, padding=padding),
                nn.ReLU(),
                nn.BatchNorm2d(out_channels),
                nn.MaxPool2d((pool_t, pool_f)),
                nn.Dropout(dropout),
            ]
            t, f = (t - shrink) // pool_t, (f - shrink) // pool_f
            in_channels = out_channels
            if t < 1 or f < 1:
                raise ConfigError(
                    f"CNNEncoder: input {frames}x{n_mels} is too small for kernel {kernel} and pools {pools}"
                )
        moved = normalise and center and dropout_placement == "after_centring"
        if moved:
            layers.pop()  # the second block's dropout; EmbeddingOutput applies it after the centring
        self.features = nn.Sequential(*layers)
        # Channels-last weights make every conv run channels-last (oneDNN's fast layout on CPU): on one thread the
        # clip CNN's training step 1.3x and eval 2.0x faster, the DCASE-style frame CRNN's 1.5x and 2.1x
        # (benchmarks/channels_last.py); the same numbers up to float rounding; state dicts load either way.
        self.features.to(memory_format=torch.channels_last)
        self.embedding_dim = in_channels * t * f
        self.output = EmbeddingOutput(
            self.embedding_dim, normalise=normalise, center=center, centring=centring,
            dropout=dropout if moved else 0.0,
        )  # fmt: skip

    def pre_output(self, x: Tensor) -> Tensor:
        """What :attr:`output` receives: the flattened feature map (B, embedding_dim)."""
        return self.feature_maps(x).flatten(1)

    def feature_maps(self, x: Tensor) -> Tensor:
        """The last block's output ``(B, channels[-1], T // prod(time pools), n_mels // prod(mel pools))``."""
        x = (remove_clip_mean(x) if self.clip_mean else x).unsqueeze(1)
        if self.training or any(m.training for m in self.features) or _tracing():
            return self.features(x)  # (exports keep the layers as they are: no value-dependent branch)
        for block in self._blocks():
            x = _pooled_first(x, *block)
        return x

    def _blocks(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d]]:
        """(conv, batch norm, max-pool) of each block of :attr:`features` (ReLU and dropout are implied)."""
        layers = list(self.features)
        convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
        return [(layers[i], layers[i + 2], layers[i + 3]) for i in convs]

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.pre_output(x))


def _tracing() -> bool:
    """Whether the forward pass is being traced or compiled (TorchScript, torch.export, torch.compile)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def _pooled_first(x: Tensor, conv: nn.Conv2d, norm: nn.BatchNorm2d, pool: nn.MaxPool2d) -> Tensor:
    """One block ``max-pool(batch-norm(ReLU(conv(x))))`` in eval mode, pooling first: the same numbers, faster.

    In eval mode the batch norm is a per-channel map ``y = a x + b`` and ReLU is ``max(x, 0)``, both monotone
    (floating-point rounding is monotone too), so the max over a pooling window commutes with them: for a
    channel with ``a >= 0`` the max of the outputs is the output of the max; for ``a < 0`` (rare: the scales start
    at 1) it is the output of the min, taken exactly as ``-max(-x)``. ReLU and batch norm then run on the pooled
    map (20x and 400x smaller than the conv output for the paper's pools) instead of the full one.
    """
    y = conv(x)
    pooled = pool(y)
    if norm.affine:
        flipped = (norm.weight < 0).nonzero().flatten()
        if flipped.numel():
            pooled[:, flipped] = -pool(-y[:, flipped])
    return norm(torch.relu_(pooled))


class ClusterLayer(nn.Module):
    """Eq. 4: ``h = W^T E(x)``, one column of W per cluster; ``(B, D) -> (B, K)``.

    ``cluster_class`` (K,) names the class of each cluster (a buffer, saved with the weights). With ``scale``
    (``embedding.normalise_w``), the columns are L2-normalised in the forward pass and ``h = scale * cosine``: the
    paper's "constrain each column of W to be L2 normalized" with alpha kept fixed, so the loss cannot fall by
    growing or shrinking columns, only by moving embeddings and directions. Without it (default) W is free
    ("we combine alpha and L2 normalized W to make W unnormalized").
    """

    def __init__(self, embedding_dim: int, cluster_class: Tensor, *, scale: float | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(len(cluster_class), embedding_dim))
        nn.init.normal_(self.weight, std=embedding_dim**-0.5)
        self.register_buffer("cluster_class", torch.as_tensor(cluster_class, dtype=torch.long).clone())
        self.scale = scale

    @classmethod
    def from_centroids(
        cls, centroids: Tensor, cluster_class: Tensor, alpha: float, *, normalised: bool = False
    ) -> ClusterLayer:
        """Columns initialised to ``alpha * centroid / ||centroid||`` (alpha folded into W); ``normalised``: alpha
        is the fixed scale of unit columns instead."""
        layer = cls(centroids.shape[1], cluster_class, scale=alpha if normalised else None)
        with torch.no_grad():
            layer.weight.copy_(alpha * l2_normalise(centroids.to(layer.weight.dtype)))
        return layer

    @property
    def num_clusters(self) -> int:
        return self.weight.shape[0]

    def forward(self, embedding: Tensor) -> Tensor:
        if self.scale is not None:
            return self.scale * (embedding @ l2_normalise(self.weight).t())
        return embedding @ self.weight.t()

    def extra_repr(self) -> str:
        return f"clusters={self.num_clusters}, scale={self.scale}"


class DetectorHead(nn.Module):
    """Dense layer with ``num_events`` outputs; returns logits (the sigmoid lives in the loss / at scoring)."""

    def __init__(self, in_features: int, num_events: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_events)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class EventDetector(nn.Module):
    """Encoder -> (optional cluster layer) -> head. ``(B, T, F) -> outputs (B, L)`` (or what ``scorer`` takes).

    With ``cluster_layer=None`` this is the baseline; with it, the proposed model of Fig. 2. ``scorer`` turns the
    head's outputs into (B, L) detection scores: sigmoid when ``None``, else a module with ``scores(outputs)``
    (the losses of :mod:`thce.losses.imbalance`, whose learnable weights, e.g. SoftTriple's centres, it then holds).
    """

    def __init__(
        self, encoder: nn.Module, head: nn.Module, cluster_layer: ClusterLayer | None = None, scorer: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.cluster_layer = cluster_layer
        self.head = head
        self.scorer = scorer

    def detection_scores(self, outputs: Tensor) -> Tensor:
        """(B, L) scores in [0, 1] from the head's outputs."""
        return torch.sigmoid(outputs) if self.scorer is None else self.scorer.scores(outputs)

    def features_for_head(self, embedding: Tensor) -> Tensor:
        """What the head sees: the embedding (baseline) or the cluster layer's output (proposed)."""
        return embedding if self.cluster_layer is None else self.cluster_layer(embedding)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features_for_head(self.encoder(x)))
