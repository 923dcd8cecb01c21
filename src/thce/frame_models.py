"""Frame-level networks (issue 30): encoders that keep the time axis, one embedding per frame, and the DCASE 2017
Task 2 baseline as a reference model.

Every frame encoder maps normalised log-mel ``x`` ``(B, T, F)`` to per-frame embeddings ``(B, T', D)`` with
``T' = T // frame_stride`` (the trailing ``T % frame_stride`` input frames get no output frame of their own: the CNN's
max-pool drops them, though its convolutions still see them, the LSTM drops them before it starts; output frame
``j`` stands for input frames ``[j * frame_stride, (j + 1) * frame_stride)``; at the 10 ms hop, stride 5 gives
50 ms frames, a tenth of DCASE's 500 ms onset collar). Each has ``embedding_dim`` (D), ``frame_stride``,
``pre_output(x) -> (B, T', D)`` (what its :class:`~thce.models.EmbeddingOutput` receives; centring counts every frame
as one row, see ``EmbeddingOutput.calibrate``) and ``output``, the EmbeddingOutput (L2 normalisation per frame unless
``normalise=False``; optional centring and clip-mean removal as the clip encoders of :mod:`thce.models`).
:class:`~thce.models.EventDetector` works on them unchanged: its cluster layer and head act on the last axis, so
``EventDetector(encoder, DetectorHead(D, L), ClusterLayer(D, ...))`` maps ``(B, T, F)`` to ``(B, T', L)``.

- :class:`FrameCNNEncoder` (``"cnn"``): the paper's CNN blocks (conv 7x7, ReLU, batch norm, max-pool, dropout 0.3)
  pooling time only in the first block (5x4, then 1x4: stride 5, 64 channels x 4 mels = 256-d per frame).
  ``recurrent`` (``"crnn"``): a bidirectional GRU or LSTM over the per-frame conv features before the embedding output.
- :class:`FrameLSTMEncoder` (``"lstm"``): the paper's LSTM (128 units, chrono initialisation), each step's state.
- :class:`DCASE2017MLPEncoder` (``"dcase2017_mlp"``) with :func:`build_dcase2017_detector`: the published DCASE 2017
  Task 2 baseline (an MLP on log-mel frames with 5 frames of context); :data:`DCASE2017_TASK2` records its published
  training and post-processing settings.

This module holds the networks; the ``[frame_model]`` table that names one (:class:`thce.encoders.FrameModelConfig`)
and the one factory that builds it, as every other encoder, from its entry in :data:`thce.encoders.ENCODERS`
(:func:`thce.encoders.build_encoder`) are in :mod:`thce.encoders`.

Export (:mod:`thce.detection.export`): ``LogMelScores`` around a frame detector traces (TorchScript) and exports to
ONNX with its number of frames fixed and the batch dynamic, as clip detectors do (tests/test_frame_models.py). A
dynamic time axis also exports for ``cnn`` and ``dcase2017_mlp``; ``crnn``'s GRU does not get through the ONNX
exporter's decomposition with one, and ``lstm``'s graph then fails on lengths that are not a multiple of
``frame_stride``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from thce.errors import ConfigError
from thce.models import (
    CNNEncoder,
    DetectorHead,
    EmbeddingOutput,
    EventDetector,
    LSTMEncoder,
    remove_clip_mean,
)
from thce.recurrent import run_gru


def _check_length(x: Tensor, frame_stride: int) -> None:
    if x.ndim != 3 or x.shape[1] < frame_stride:
        raise ValueError(f"frame encoder: expected (batch, frames >= {frame_stride}, mels), got {tuple(x.shape)}")


class FrameCNNEncoder(CNNEncoder):
    """The paper's CNN blocks keeping the time axis: ``(B, T, F) -> (B, T // frame_stride, embedding_dim)``.

    Each block is conv ``kernel`` x ``kernel`` (``same`` padding), ReLU, batch norm, max-pool (time, mel), dropout,
    as :class:`~thce.models.CNNEncoder` (whose eval-mode fast path, pooling before ReLU and batch norm, it keeps).
    ``frame_stride`` is the product of the time pools (default ``((5, 4), (1, 4))``: 5); the per-frame feature is the
    last block's channels x remaining mel bins (64 x 4 = 256 for 64 mels). ``recurrent``: a bidirectional GRU or LSTM of
    ``rnn_hidden_size`` units per direction (``rnn_type``: :data:`RNN_TYPES`, PyTorch's initialisation) runs over those
    per-frame features (a CRNN) and its states (``2 * rnn_hidden_size``) become the embedding. On a CPU the LSTM
    trains faster than the GRU (oneDNN fuses its steps and their backward; benchmarks/frame_models.py), though the
    DCASE-style config validated it worse (docs/results.md). ``dropout_placement = "after_centring"`` moves the last
    block's dropout after the centring as in the clip CNN; with ``recurrent`` it stays before the recurrent layer.

    ``block_order`` (:data:`CNN_BLOCK_ORDERS`): ``"paper"`` (conv, ReLU, batch norm, max-pool, dropout) or
    ``"pool_first"`` (conv, max-pool, ReLU, batch norm, dropout). ReLU commutes with the max exactly; the batch norm
    then normalises the pooled map (its statistics are the pooled map's, and a negative scale no longer turns the max
    into a min): the same numbers as ``"paper"`` in eval mode for equal weights and non-negative scales, and
    training runs ReLU, batch norm and dropout on a map 20x smaller, which is most of a training step's time on a
    CPU (benchmarks/frame_models.py measures both orders). In eval mode ``"paper"`` pools first too, exactly (``_pooled_first``).
    """

    def __init__(
        self,
        n_mels: int = 64,
        *,
        channels: tuple[int, ...] = (32, 64),
        kernel: int = 7,
        pools: tuple[tuple[int, int], ...] = ((5, 4), (1, 4)),
        dropout: float = 0.3,
        recurrent: bool = False,
        rnn_hidden_size: int = 64,
        rnn_type: str = "gru",
        normalise: bool = True,
        center: bool = False,
        centring: str = "fixed",
        dropout_placement: str = "before_centring",
        block_order: str = "paper",
        clip_mean: bool = False,
    ) -> None:
        if block_order not in CNN_BLOCK_ORDERS:
            raise ConfigError(
                f"frame_model.cnn_block_order: {block_order!r} is not one of {', '.join(CNN_BLOCK_ORDERS)}"
            )
        if rnn_type not in RNN_TYPES:
            raise ConfigError(f"frame_model.rnn_type: {rnn_type!r} is not one of {', '.join(RNN_TYPES)}")
        if len(channels) != len(pools) or not channels:
            raise ConfigError(f"FrameCNNEncoder: {len(channels)} channel counts for {len(pools)} pools")
        frame_stride = math.prod(p[0] for p in pools)
        if n_mels // math.prod(p[1] for p in pools) < 1:
            raise ConfigError(f"FrameCNNEncoder: {n_mels} mel bands are fewer than the mel pools' product")
        super().__init__(
            frame_stride,  # one output frame: the clip CNN's embedding is then exactly one frame's feature vector
            n_mels,
            channels=tuple(channels),
            kernel=kernel,
            pools=tuple(tuple(p) for p in pools),
            dropout=dropout,
            normalise=normalise,
            center=center,
            centring=centring,
            dropout_placement="before_centring" if recurrent else dropout_placement,
            padding="same",
            clip_mean=clip_mean,
        )
        self.frame_stride = frame_stride
        self.block_order = block_order
        if block_order == "pool_first":
            self.features = nn.Sequential(*_pool_first_order(list(self.features)))
        self.rnn: nn.GRU | nn.LSTM | None = None
        if recurrent:
            self.rnn = RNN_TYPES[rnn_type](self.embedding_dim, rnn_hidden_size, batch_first=True, bidirectional=True)
            self.embedding_dim = 2 * rnn_hidden_size
            self.output = EmbeddingOutput(self.embedding_dim, normalise=normalise, center=center, centring=centring)

    def pre_output(self, x: Tensor) -> Tensor:
        """What :attr:`output` receives: ``(B, T', embedding_dim)``, the conv features of each frame (channel-major,
        then mel) or, with ``recurrent``, the recurrent layer's states."""
        _check_length(x, self.frame_stride)
        frames = self.feature_maps(x).permute(0, 2, 1, 3).flatten(2)  # (B, C, T', F') -> (B, T', C * F')
        if self.rnn is None:
            return frames
        self.rnn.flatten_parameters()  # as LSTMEncoder: a deep copy leaves cuDNN's weights in separate chunks
        if isinstance(self.rnn, nn.GRU):
            return run_gru(self.rnn, frames)  # on a CPU, training passes take thce.recurrent's faster backward
        return self.rnn(frames)[0]

    def feature_maps(self, x: Tensor) -> Tensor:
        """The last block's output ``(B, channels[-1], T // frame_stride, n_mels // prod(mel pools))``."""
        if self.block_order == "pool_first":  # already pools first: the layers as they are
            return self.features((remove_clip_mean(x) if self.clip_mean else x).unsqueeze(1))
        return super().feature_maps(x)


#: ``frame_model.cnn_block_order``: see :class:`FrameCNNEncoder`.
CNN_BLOCK_ORDERS = ("paper", "pool_first")

#: ``frame_model.rnn_type``: the CRNN's recurrent layer (bidirectional, ``batch_first``).
RNN_TYPES: dict[str, type[nn.GRU] | type[nn.LSTM]] = {"gru": nn.GRU, "lstm": nn.LSTM}


def _pool_first_order(layers: list[nn.Module]) -> list[nn.Module]:
    """The paper-ordered blocks ``conv, ReLU, batch norm, max-pool[, dropout]`` as ``conv, max-pool, ReLU, batch
    norm[, dropout]``."""
    reordered: list[nn.Module] = []
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            relu, norm, pool = layers[i + 1 : i + 4]
            reordered += [layer, pool, relu, norm]
        elif isinstance(layer, nn.Dropout):
            reordered.append(layer)
    return reordered


#: How :class:`FrameLSTMEncoder` reaches ``frame_stride``: ``"stack"`` concatenates each group of ``frame_stride``
#: input frames into one LSTM step; ``"states"`` runs the LSTM on every input frame and averages the group's states.
LSTM_STRIDES = ("stack", "states")


class FrameLSTMEncoder(LSTMEncoder):
    """The paper's LSTM returning a state per output frame: ``(B, T, F) -> (B, T // frame_stride, hidden_size)``.

    With ``frame_stride`` > 1 (``stride_by``): ``"stack"`` (default) feeds each non-overlapping group of
    ``frame_stride`` frames as one step (input ``frame_stride * F``): ``frame_stride`` times fewer recurrent steps,
    the recurrence being what is slow on a CPU (benchmarks/frame_models.py), and no input frame is averaged away (a
    10 ms gunshot transient keeps its own input weights); ``"states"`` steps through every frame and averages the
    states of each group. Unidirectional as in the paper: a frame's embedding depends on it and what came before.
    ``init`` / ``max_steps``: :func:`thce.models.init_lstm` (``max_steps`` counts LSTM steps, i.e. output frames
    with ``"stack"``).
    """

    def __init__(
        self,
        n_mels: int = 64,
        hidden_size: int = 128,
        *,
        frame_stride: int = 1,
        stride_by: str = "stack",
        normalise: bool = True,
        center: bool = False,
        centring: str = "fixed",
        init: str = "chrono",
        max_steps: int = 200,
        clip_mean: bool = False,
    ) -> None:
        if stride_by not in LSTM_STRIDES:
            raise ConfigError(f"frame_model.lstm_stride_by: {stride_by!r} is not one of {', '.join(LSTM_STRIDES)}")
        if frame_stride < 1:
            raise ConfigError(f"frame_model.frame_stride: must be >= 1, got {frame_stride}")
        stacked = stride_by == "stack" and frame_stride > 1
        super().__init__(
            n_mels * frame_stride if stacked else n_mels, hidden_size, normalise=normalise, center=center,
            centring=centring, init=init, max_steps=max_steps, clip_mean=clip_mean,
        )  # fmt: skip
        self.frame_stride = frame_stride
        self.stride_by = stride_by

    def pre_output(self, x: Tensor) -> Tensor:
        """What :attr:`output` receives: ``(B, T', hidden_size)``, the state of each output frame."""
        _check_length(x, self.frame_stride)
        x = remove_clip_mean(x) if self.clip_mean else x
        batch, stride = x.shape[0], self.frame_stride
        frames = x.shape[1] // stride
        x = x[:, : frames * stride]
        if stride > 1 and self.stride_by == "stack":
            x = x.reshape(batch, frames, stride * x.shape[2])
        self.lstm.flatten_parameters()
        states = self.lstm(x)[0]
        if stride > 1 and self.stride_by == "states":
            states = states.reshape(batch, frames, stride, states.shape[2]).mean(dim=2)
        return states


# --- DCASE 2017 Task 2 baseline ---------------------------------------------------------------------------------

#: Where the published settings below come from: the official baseline's Task 2 parameter file (set ``dcase2017``,
#: the CPU set that produced the published development results ER 0.53 / F 72.7 %) and the framework it runs on.
DCASE2017_SOURCE = (
    "https://github.com/TUT-ARG/DCASE2017-baseline-system/blob/master/applications/parameters/task2.defaults.yaml; "
    "dcase_framework/features.py (FeatureAggregator), dcase_framework/parameters.py (frame counts), "
    "dcase_framework/recognizers.py (post-processing); results: https://tut-arg.github.io/DCASE2017-baseline-system/"
)


@dataclass(frozen=True)
class DCASE2017Task2Settings:
    """The DCASE 2017 Task 2 baseline as published (:data:`DCASE2017_SOURCE`), for the training side to read.

    Features: log mel-band energies, 40 bands, 40 ms Hamming windows, 20 ms hop, 44.1 kHz, FFT 2048, magnitude
    spectrogram; normalised with the training set's global mean and variance. Each frame is classified from 5 frames
    of context (``ceil(0.1 s / 0.02 s)``, centred on it: frames t-2 .. t+2, the edges padded with the first / last
    frame), flattened frame by frame. Network: Dense 50 ReLU, dropout 0.2, Dense 50 ReLU, dropout 0.2, Dense with one
    sigmoid output per class, Keras' ``uniform`` initialiser (U(-0.05, 0.05), zero biases), binary cross-entropy,
    Adam with Keras' default learning rate (the set's ``optimizer`` has no parameters; the GPU set uses 0.01).
    Training: up to 200 epochs, batches of 256 *frames* shuffled over all training frames, early stopping on
    validation binary accuracy (patience 10, min delta 0.001) with 10 % of the training files held out.
    ``event_handling = "event-dependent"``: one such network, with one output, per event class, trained on that
    class's mixtures only (thce's :func:`build_dcase2017_detector` with ``num_events = L`` is the event-independent
    variant: shared hidden layers). Decision: frame scores > 0.5, median filter of 0.54 s (27 frames at the 20 ms
    hop) on the binary activity, contiguous active frames become events; the minimum length / gap post-processing
    (0.1 s each) is disabled in this set.
    """

    sample_rate_hz: int = 44100
    n_mels: int = 40
    window_s: float = 0.04
    hop_s: float = 0.02
    n_fft: int = 2048
    context_s: float = 0.1
    context_frames: int = 5
    hidden_units: tuple[int, ...] = (50, 50)
    dropout: float = 0.2
    init_limit: float = 0.05
    optimizer: str = "adam"
    learning_rate: float = 0.001
    epochs: int = 200
    batch_size_frames: int = 256
    early_stopping_patience: int = 10
    early_stopping_min_delta: float = 0.001
    early_stopping_monitor: str = "val_binary_accuracy"
    validation_fraction: float = 0.1
    event_handling: str = "event-dependent"
    threshold: float = 0.5
    median_filter_s: float = 0.54
    min_event_length_s: float | None = None
    min_event_gap_s: float | None = None
    source: str = DCASE2017_SOURCE

    def median_filter_frames(self, hop_s: float) -> int:
        """The median filter's length in frames of ``hop_s`` seconds, as the baseline counts it
        (``int(median_filter_s / hop_s)``: 27 at its 20 ms hop) and made odd as a median filter needs (55 at 10 ms).

        >>> DCASE2017_TASK2.median_filter_frames(0.02), DCASE2017_TASK2.median_filter_frames(0.01)
        (27, 55)
        """
        frames = max(1, int(self.median_filter_s / hop_s))
        return frames if frames % 2 else frames + 1


DCASE2017_TASK2 = DCASE2017Task2Settings()

#: ``frame_model.mlp_init``: the published Keras ``uniform`` initialiser, or PyTorch's default.
MLP_INITS = ("keras_uniform", "pytorch")


def _keras_uniform(linear: nn.Linear, limit: float = DCASE2017_TASK2.init_limit) -> None:
    """Keras' ``uniform`` initialiser (RandomUniform(-0.05, 0.05)) for the weights, zero biases (Keras' default)."""
    with torch.no_grad():
        nn.init.uniform_(linear.weight, -limit, limit)
        linear.bias.zero_()


class DCASE2017MLPEncoder(nn.Module):
    """The DCASE 2017 Task 2 baseline's hidden layers on frames with context: ``(B, T, F) -> (B, T, hidden[-1])``.

    Each frame t is seen as the ``context_frames`` frames ``t + (k - context_frames // 2) * context_dilation``
    (k = 0 .. context_frames - 1; the published centring, edges repeated), concatenated frame by frame
    (``context_frames * F`` inputs), then Dense + ReLU + dropout per entry of ``hidden`` (published: 50, 50, 0.2).
    ``init = "keras_uniform"`` is the published initialiser (weights U(-0.05, 0.05), zero biases); ``"pytorch"``
    keeps PyTorch's. The bands come from the input: the baseline used 40 mel bands (200 inputs), thce's features
    have 64 (320 inputs). ``context_dilation``: the baseline's 5 frames at its 20 ms hop span 100 ms; at thce's
    10 ms hop ``context_dilation = 2`` keeps both the 5 frames and the 100 ms (every other frame), 1 takes 5
    adjacent frames (50 ms). ``frame_stride`` is 1: a score per input frame, as published.
    """

    def __init__(
        self,
        n_mels: int = 64,
        *,
        context_frames: int = DCASE2017_TASK2.context_frames,
        context_dilation: int = 2,
        hidden: tuple[int, ...] = DCASE2017_TASK2.hidden_units,
        dropout: float = DCASE2017_TASK2.dropout,
        init: str = "keras_uniform",
        normalise: bool = False,
        center: bool = False,
        centring: str = "fixed",
        clip_mean: bool = False,
    ) -> None:
        super().__init__()
        if context_frames < 1 or context_dilation < 1 or not hidden or min(hidden) < 1:
            raise ConfigError("DCASE2017MLPEncoder: context_frames, context_dilation and hidden sizes must be >= 1")
        if init not in MLP_INITS:
            raise ConfigError(f"frame_model.mlp_init: {init!r} is not one of {', '.join(MLP_INITS)}")
        self.context_frames = context_frames
        self.context_dilation = context_dilation
        self.clip_mean = clip_mean
        self.frame_stride = 1
        layers: list[nn.Module] = []
        width = context_frames * n_mels
        for units in hidden:
            linear = nn.Linear(width, units)
            if init == "keras_uniform":
                _keras_uniform(linear)
            layers += [linear, nn.ReLU(), nn.Dropout(dropout)]
            width = units
        self.hidden = nn.Sequential(*layers)
        self.embedding_dim = width
        self.output = EmbeddingOutput(width, normalise=normalise, center=center, centring=centring)

    def context(self, x: Tensor) -> Tensor:
        """``(B, T, F) -> (B, T, context_frames * F)``: each frame's context, frame-major, edges repeated."""
        before = (self.context_frames // 2) * self.context_dilation
        after = (self.context_frames - 1) * self.context_dilation - before
        frames = x.shape[1]
        padded = torch.cat([x[:, :1].expand(-1, before, -1), x, x[:, -1:].expand(-1, after, -1)], dim=1)
        steps = range(0, self.context_frames * self.context_dilation, self.context_dilation)
        return torch.cat([padded[:, k : k + frames] for k in steps], dim=2)

    def pre_output(self, x: Tensor) -> Tensor:
        """What :attr:`output` receives: the last hidden layer's activations ``(B, T, hidden[-1])``."""
        _check_length(x, 1)
        return self.hidden(self.context(remove_clip_mean(x) if self.clip_mean else x))

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.pre_output(x))


def build_dcase2017_detector(n_mels: int, num_events: int, *, encoder: nn.Module | None = None) -> EventDetector:
    """The DCASE 2017 Task 2 baseline as an :class:`~thce.models.EventDetector`: ``(B, T, F) -> (B, T, num_events)``
    logits (the sigmoid lives in the loss and in ``detection_scores``), the published hidden layers
    (:class:`DCASE2017MLPEncoder`, unnormalised) then a dense output layer with the published initialiser.
    ``num_events = 1`` per class is the published event-dependent setting (:class:`DCASE2017Task2Settings`)."""
    encoder = encoder if encoder is not None else DCASE2017MLPEncoder(n_mels)
    head = DetectorHead(encoder.embedding_dim, num_events)
    _keras_uniform(head.linear)
    return EventDetector(encoder, head)


class FramePooling(nn.Module):
    """An encoder's per-frame outputs averaged over non-overlapping groups of ``stride`` frames:
    ``(B, T, D) -> (B, T // stride, D)`` (a last partial group is dropped), so that a model scoring every input
    frame (the DCASE 2017 baseline) scores the output frames of a run whose targets are at ``stride``."""

    def __init__(self, encoder: nn.Module, stride: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.stride = stride
        self.embedding_dim = encoder.embedding_dim
        self.frame_stride = getattr(encoder, "frame_stride", 1) * stride

    def forward(self, x: Tensor) -> Tensor:
        frames = self.encoder(x)
        if self.stride == 1:
            return frames
        kept = frames.shape[1] // self.stride * self.stride
        return frames[:, :kept].unflatten(1, (-1, self.stride)).mean(dim=2)
