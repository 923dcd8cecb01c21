"""PANNs (Kong et al. 2020, "PANNs: Large-scale pretrained audio neural networks for audio pattern recognition",
IEEE/ACM TASLP 28) re-implemented with the state-dict key names of the official code (qiuqiangkong/
audioset_tagging_cnn, ``pytorch/models.py``; front end from torchlibrosa's ``Spectrogram`` / ``LogmelFilterBank``),
so that its released checkpoints load unchanged (see :mod:`thce.pretrained.checkpoints`).

Three variants (:data:`PANNS_VARIANTS`):

============  =========  ======  ====  ======  ============  =============  =============
name          rate (Hz)  window  hop   bands   band (Hz)     conv blocks    embedding
============  =========  ======  ====  ======  ============  =============  =============
Cnn14_16k     16000      512     160   64      50-8000       6 (64..2048)   2048
Cnn14         32000      1024    320   64      50-14000      6 (64..2048)   2048
Cnn10         32000      1024    320   64      50-14000      4 (64..512)    512
============  =========  ======  ====  ======  ============  =============  =============

The computation, waveform to clip embedding (shapes for a batch ``B`` of ``N`` samples)::

    spectrogram_extractor  pad n_fft/2 each side (reflect), conv1d with the STFT kernels conv_real / conv_imag
                           (n_fft/2+1, 1, n_fft): a periodic-Hann-windowed DFT, stride hop; power = real^2 + imag^2
                           -> (B, T, n_fft/2+1), T = 1 + N // hop
    logmel_extractor       power @ melW (n_fft/2+1, 64) (Slaney mel filters), 10 * log10(max(., 1e-10))
                           (PANNs' ref 1.0, amin 1e-10, top_db None) -> log-mel in dB (B, T, 64)
    bn0                    batch norm over the 64 mel bands (PANNs' feature normaliser)
    conv_block1..k         [3x3 conv, batch norm, ReLU] x 2, 2x2 average pool (Cnn14's sixth block: no pool),
                           dropout 0.2 in training
    pooling                mean over mel, then max + mean over time -> (B, C); dropout 0.5 in training
    fc1                    linear C -> C, ReLU -> the clip embedding (B, 2048) or (B, 512): PANNs' ``embedding``
    fc_audioset            linear -> 527 AudioSet logits (sigmoid: ``clipwise_output``); unused by the encoder

Input convention (our choice): :class:`thce.pretrained.encoder.PannsEncoder` is an encoder like
:class:`thce.models.CNNEncoder`: its ``forward`` takes log-mel frames ``(batch, frames, 64)`` in dB as
:meth:`PannsCnn.logmel` computes them (before bn0), so that a frozen encoder can run on cached features of our
pipeline; its ``forward_waveform`` takes waveforms ``(batch, samples)`` at the variant's rate and runs the front end
first. Left out of the official forward: SpecAugment (training only, no parameters; thce's ``augment.*`` masks do
that on the input) and mixup.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thce.audio import LogMelConfig, mel_filterbank
from thce.errors import ConfigError

#: PANNs' dB scaling (torchlibrosa ``power_to_db`` with the settings of every PANNs model): 10 * log10(max(x, amin))
#: - 10 * log10(max(amin, ref)), no top_db clipping.
DB_REF = 1.0
DB_AMIN = 1e-10
#: AudioSet classes of the tagging head ``fc_audioset`` in the released checkpoints.
AUDIOSET_CLASSES = 527


@dataclass(frozen=True)
class PannsVariant:
    """One PANNs architecture with its front end. Frequencies in Hz, window and hop in samples."""

    name: str
    sample_rate_hz: int
    window: int
    hop: int
    n_mels: int
    f_min_hz: float
    f_max_hz: float
    channels: tuple[int, ...]
    pools: tuple[int, ...]

    @property
    def encoder_name(self) -> str:
        """The name of ``model.encoder`` that selects it, e.g. ``"panns_cnn14_16k"``."""
        return "panns_" + self.name.lower()

    @property
    def embedding_dim(self) -> int:
        """Width of fc1, the clip embedding (2048 for Cnn14, 512 for Cnn10)."""
        return self.channels[-1]

    @property
    def min_frames(self) -> int:
        """Fewest input frames the pools accept (32 for Cnn14, 16 for Cnn10)."""
        return math.prod(self.pools)

    def describe(self) -> str:
        return (
            f"{self.name} ({self.sample_rate_hz} Hz, window {self.window}, hop {self.hop}, {self.n_mels} mel bands "
            f"{self.f_min_hz:g}-{self.f_max_hz:g} Hz, {len(self.channels)} conv blocks, "
            f"{self.embedding_dim}-d embedding)"
        )


_CNN14_BLOCKS = dict(channels=(64, 128, 256, 512, 1024, 2048), pools=(2, 2, 2, 2, 2, 1))
_32K = dict(sample_rate_hz=32000, window=1024, hop=320, n_mels=64, f_min_hz=50.0, f_max_hz=14000.0)

PANNS_VARIANTS: dict[str, PannsVariant] = {
    v.name: v
    for v in (
        PannsVariant("Cnn14_16k", 16000, 512, 160, 64, 50.0, 8000.0, **_CNN14_BLOCKS),
        PannsVariant("Cnn14", **_32K, **_CNN14_BLOCKS),
        PannsVariant("Cnn10", **_32K, channels=(64, 128, 256, 512), pools=(2, 2, 2, 2)),
    )
}


def panns_variant(name: str | PannsVariant) -> PannsVariant:
    """The variant named by its official class name (``"Cnn14_16k"``) or its encoder name (``"panns_cnn14_16k"``)."""
    if isinstance(name, PannsVariant):
        return name
    for variant in PANNS_VARIANTS.values():
        if name in (variant.name, variant.encoder_name):
            return variant
    known = ", ".join(f"{v.name} / {v.encoder_name}" for v in PANNS_VARIANTS.values())
    raise ConfigError(f"unknown PANNs variant {name!r}: expected one of {known}")


@dataclass(frozen=True)
class PannsFeatureSettings:
    """The log-mel features a PANNs variant expects, for the feature config and the cache key.

    ``frame_length_ms`` / ``hop_ms`` restate window / hop in milliseconds (32 ms and 10 ms for all three variants).
    Frames of a clip of ``N`` samples: ``1 + N // hop_samples`` (centred frames, reflect padding): 1001 for 10 s.
    Values: ``10 * log10(max(mel power, db_amin)) - 10 * log10(max(db_amin, db_ref))``, no top-dB clipping; the
    encoder normalises them itself (``bn0``), so the pipeline's normaliser must be off.
    """

    variant: str
    sample_rate_hz: int
    n_fft: int
    win_samples: int
    hop_samples: int
    frame_length_ms: float
    hop_ms: float
    n_mels: int
    f_min_hz: float
    f_max_hz: float
    window: str = "hann (periodic)"
    center: bool = True
    pad_mode: str = "reflect"
    power: float = 2.0
    mel_scale: str = "slaney"
    db_ref: float = DB_REF
    db_amin: float = DB_AMIN
    db_top_db: float | None = None
    normaliser: str = "bn0"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def feature_settings(variant: str | PannsVariant) -> PannsFeatureSettings:
    """The feature settings of ``variant`` (rate, window, hop, bands, band edges, dB scaling)."""
    v = panns_variant(variant)
    return PannsFeatureSettings(
        variant=v.name,
        sample_rate_hz=v.sample_rate_hz,
        n_fft=v.window,
        win_samples=v.window,
        hop_samples=v.hop,
        frame_length_ms=1000.0 * v.window / v.sample_rate_hz,
        hop_ms=1000.0 * v.hop / v.sample_rate_hz,
        n_mels=v.n_mels,
        f_min_hz=v.f_min_hz,
        f_max_hz=v.f_max_hz,
    )


#: ``[features]`` keys a PANNs encoder sets (:func:`logmel_config`); only ``duration_s`` stays the user's.
PANNS_FEATURE_KEYS = ("sample_rate_hz", "n_mels", "frame_length_ms", "hop_ms", "n_fft", "f_min_hz", "f_max_hz",
                      "log_floor", "front_end")  # fmt: skip


def logmel_config(variant: str | PannsVariant, *, duration_s: float = 10.0) -> LogMelConfig:
    """The :class:`~thce.audio.LogMelConfig` of ``variant``'s own front end for clips of ``duration_s``: its rate,
    window (= n_fft), hop, 64 bands and band edges, PANNs' dB scaling and reflect padding (``front_end="panns"``),
    ``1 + samples // hop`` frames. :class:`thce.audio.LogMel` then computes what :meth:`PannsCnn.logmel` does."""
    s = feature_settings(variant)
    return LogMelConfig(
        sample_rate_hz=s.sample_rate_hz, n_mels=s.n_mels, frame_length_ms=s.frame_length_ms, hop_ms=s.hop_ms,
        n_fft=s.n_fft, f_min_hz=s.f_min_hz, f_max_hz=s.f_max_hz, duration_s=duration_s, log_floor=s.db_amin,
        front_end="panns",
    )  # fmt: skip


def check_sample_rate(variant: str | PannsVariant, sample_rate_hz: int, *, where: str = "features") -> None:
    """Raise :class:`ConfigError` unless audio at ``sample_rate_hz`` suits ``variant``."""
    v = panns_variant(variant)
    if sample_rate_hz != v.sample_rate_hz:
        raise ConfigError(
            f"{where}: sample rate {sample_rate_hz} Hz does not match {v.name}, which takes {v.sample_rate_hz} Hz audio"
        )


# ----------------------------------------------------------------------------------------------------------------------
# Front end, laid out as torchlibrosa's modules so that the checkpoint's own kernels and mel matrix load into it


def stft_kernels(n_fft: int) -> tuple[Tensor, Tensor]:
    """Real and imaginary DFT kernels times a periodic Hann window, each ``(n_fft // 2 + 1, 1, n_fft)`` float32:
    ``real[k, 0, n] = w[n] cos(2 pi k n / n_fft)``, ``imag[k, 0, n] = -w[n] sin(2 pi k n / n_fft)``."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    phase = 2.0 * math.pi * torch.remainder(k[:, None] * n[None, :], n_fft) / n_fft  # exact integer phases
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    real = (torch.cos(phase) * window).float()[:, None, :]
    imag = (-torch.sin(phase) * window).float()[:, None, :]
    return real.contiguous(), imag.contiguous()


def mel_matrix(variant: str | PannsVariant) -> Tensor:
    """The variant's ``melW``: Slaney mel filters (librosa's default, as torchlibrosa uses) ``(n_fft // 2 + 1,
    n_mels)`` float64."""
    v = panns_variant(variant)
    return torch.tensor(  # a copy on the current default device (meta when only shapes are wanted)
        mel_filterbank(
            sample_rate_hz=v.sample_rate_hz, n_fft=v.window, n_mels=v.n_mels, f_min_hz=v.f_min_hz, f_max_hz=v.f_max_hz
        )
    )


class _ConvSTFT(nn.Module):
    """STFT as two frozen conv1d layers (``conv_real``, ``conv_imag``); ``(B, N) -> real, imag (B, T, n_fft/2+1)``
    with centred frames (reflect padding of n_fft/2 samples each side), ``T = 1 + N // hop``."""

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        bins = n_fft // 2 + 1
        self.conv_real = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        real, imag = stft_kernels(n_fft)
        with torch.no_grad():
            self.conv_real.weight.copy_(real)
            self.conv_imag.weight.copy_(imag)
        self.requires_grad_(False)

    def forward(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        if waveform.shape[-1] <= self.n_fft // 2:
            raise ConfigError(
                f"PANNs front end: {waveform.shape[-1]} samples are too few for an FFT of {self.n_fft} "
                f"(reflect padding needs more than {self.n_fft // 2})"
            )
        x = F.pad(waveform[:, None, :], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        return self.conv_real(x).transpose(1, 2), self.conv_imag(x).transpose(1, 2)


class _Spectrogram(nn.Module):
    """Power spectrogram ``(B, N) -> (B, T, n_fft/2+1)``; the kernels live in ``stft`` as in torchlibrosa."""

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.stft = _ConvSTFT(n_fft, hop)

    def forward(self, waveform: Tensor) -> Tensor:
        real, imag = self.stft(waveform)
        return real**2 + imag**2


class _LogmelFilterBank(nn.Module):
    """``(B, T, n_fft/2+1)`` power -> ``(B, T, n_mels)`` dB: ``10 log10(max(power @ melW, amin))`` (ref 1.0).
    ``melW`` is a frozen parameter ``(n_fft/2+1, n_mels)`` as in the checkpoints."""

    def __init__(self, variant: PannsVariant) -> None:
        super().__init__()
        self.melW = nn.Parameter(mel_matrix(variant).float(), requires_grad=False)

    def forward(self, power: Tensor) -> Tensor:
        mel = torch.matmul(power, self.melW)
        return 10.0 * torch.log10(torch.clamp(mel, min=DB_AMIN)) - 10.0 * math.log10(max(DB_AMIN, DB_REF))


# ----------------------------------------------------------------------------------------------------------------------
# The network


class _ConvBlock(nn.Module):
    """Two 3x3 convolutions (no bias), each followed by batch norm and ReLU, then ``pool`` x ``pool`` average
    pooling. ``(B, C_in, T, M) -> (B, C_out, T // pool, M // pool)``."""

    def __init__(self, in_channels: int, out_channels: int, pool: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, self.pool) if self.pool > 1 else x


class PannsCnn(nn.Module):
    """A PANNs CNN with the official module names (``spectrogram_extractor``, ``logmel_extractor``, ``bn0``,
    ``conv_block1``.., ``fc1``, ``fc_audioset``), so ``state_dict()`` has the checkpoints' keys and shapes.

    ``classes``: width of the AudioSet tagging head ``fc_audioset`` (527 as released); ``None`` leaves the head
    out (the encoder's use: only the embedding is needed). Weights are initialised as in the official code
    (Xavier-uniform convolutions and linear layers, zero biases); load a checkpoint for pre-trained ones.
    """

    def __init__(self, variant: str | PannsVariant, *, classes: int | None = AUDIOSET_CLASSES) -> None:
        super().__init__()
        self.variant = v = panns_variant(variant)
        self.spectrogram_extractor = _Spectrogram(v.window, v.hop)
        self.logmel_extractor = _LogmelFilterBank(v)
        self.bn0 = nn.BatchNorm2d(v.n_mels)
        in_channels = 1
        for i, (channels, pool) in enumerate(zip(v.channels, v.pools), start=1):
            self.add_module(f"conv_block{i}", _ConvBlock(in_channels, channels, pool))
            in_channels = channels
        self.fc1 = nn.Linear(v.embedding_dim, v.embedding_dim)
        self.fc_audioset = nn.Linear(v.embedding_dim, classes) if classes else None
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def logmel(self, waveform: Tensor) -> Tensor:
        """Front end: waveform ``(B, N)`` at ``variant.sample_rate_hz`` -> log-mel in dB ``(B, 1 + N // hop, 64)``."""
        return self.logmel_extractor(self.spectrogram_extractor(waveform))

    def embed(self, logmel: Tensor) -> Tensor:
        """Clip embedding ``relu(fc1(.))`` ``(B, embedding_dim)`` of log-mel frames ``(B, T, 64)`` in dB (the output
        of :meth:`logmel`, before bn0), ``T >= variant.min_frames``. The official network's dropouts apply in
        training mode except the last one (on the embedding itself), which is the caller's."""
        v = self.variant
        if logmel.dim() != 3 or logmel.shape[-1] != v.n_mels:
            raise ConfigError(f"{v.name}: expected log-mel (batch, frames, {v.n_mels}), got {tuple(logmel.shape)}")
        if logmel.shape[1] < v.min_frames:
            raise ConfigError(f"{v.name}: {logmel.shape[1]} frames are too few, the pools need {v.min_frames}")
        x = self.bn0(logmel.transpose(1, 2)[..., None])  # bn0 over the mel bands: (B, M, T, 1)
        x = x[..., 0].transpose(1, 2)[:, None]  # (B, 1, T, M)
        for i in range(1, len(v.channels) + 1):
            x = F.dropout(getattr(self, f"conv_block{i}")(x), p=0.2, training=self.training)
        x = x.mean(dim=3)  # (B, C, T')
        x = x.amax(dim=2) + x.mean(dim=2)
        x = F.dropout(x, p=0.5, training=self.training)
        return F.relu(self.fc1(x))

    def clipwise(self, embedding: Tensor) -> Tensor:
        """AudioSet tag probabilities ``(B, classes)`` from :meth:`embed`'s output (PANNs' ``clipwise_output``)."""
        if self.fc_audioset is None:
            raise ConfigError(f"{self.variant.name}: built without the AudioSet head (classes=None)")
        return torch.sigmoid(self.fc_audioset(embedding))

    def forward(self, waveform: Tensor) -> Tensor:
        """Clip embedding ``(B, embedding_dim)`` of waveforms ``(B, N)``."""
        return self.embed(self.logmel(waveform))

    def load_official(self, state_dict: dict[str, Tensor]) -> None:
        """Load a checked official state dict (:func:`thce.pretrained.load_panns_checkpoint`), strictly; without a
        tagging head the file's ``fc_audioset.*`` entries are dropped."""
        if self.fc_audioset is None:
            state_dict = {k: t for k, t in state_dict.items() if not k.startswith("fc_audioset.")}
        self.load_state_dict(state_dict, strict=True)


class Cnn14(PannsCnn):
    """PANNs Cnn14 at 32 kHz (window 1024, hop 320, 64 bands 50-14000 Hz); 2048-d embedding."""

    def __init__(self, *, classes: int | None = AUDIOSET_CLASSES) -> None:
        super().__init__("Cnn14", classes=classes)


class Cnn14_16k(PannsCnn):  # noqa: N801 (the official class name)
    """PANNs Cnn14 at 16 kHz (window 512, hop 160, 64 bands 50-8000 Hz); 2048-d embedding."""

    def __init__(self, *, classes: int | None = AUDIOSET_CLASSES) -> None:
        super().__init__("Cnn14_16k", classes=classes)


class Cnn10(PannsCnn):
    """PANNs Cnn10 at 32 kHz (window 1024, hop 320, 64 bands 50-14000 Hz); 512-d embedding."""

    def __init__(self, *, classes: int | None = AUDIOSET_CLASSES) -> None:
        super().__init__("Cnn10", classes=classes)


#: ``model.freeze``: ``"none"``, ``"all"``, or ``"up_to:<module>"`` with one of these (frozen up to and including it).
FREEZE_POINTS = ("bn0", "conv_block1", "conv_block2", "conv_block3", "conv_block4", "conv_block5", "conv_block6", "fc1")


def parse_freeze(spec: str, variant: str | PannsVariant) -> tuple[str, ...]:
    """The modules of ``variant``'s network that ``model.freeze = spec`` freezes, in order (the front end's
    kernels and mel matrix are always frozen). ``"none"`` -> ``()``; ``"all"`` -> every module from bn0 to fc1;
    ``"up_to:conv_block4"`` -> bn0, conv_block1 .. conv_block4."""
    v = panns_variant(variant)
    modules = ("bn0", *(f"conv_block{i}" for i in range(1, len(v.channels) + 1)), "fc1")
    if spec == "none":
        return ()
    if spec == "all":
        return modules
    point = spec[len("up_to:") :] if spec.startswith("up_to:") else None
    if point not in modules:
        raise ConfigError(
            f"model.freeze: {spec!r} is not 'none', 'all' or 'up_to:<module>' with a module of {v.name} "
            f"({', '.join(modules)})"
        )
    return modules[: modules.index(point) + 1]
