"""Data augmentation for small training sets: batches of normalised log-mel features and their targets.

Everything here works on what a training step receives: ``x`` of shape ``(B, frames, mels)``, log-mel features
already standardised per mel band with the training split's statistics (:class:`thce.data.normaliser.Normaliser`),
on any device. All of it is off by default (:class:`AugmentConfig`), so a config without ``[augment]`` trains
exactly as before. Randomness comes only from a ``torch.Generator`` passed in (CPU; the few draws per batch are
made there and moved to ``x``'s device), so a run is reproducible and the same seed gives the same augmentations
on CPU and GPU; the global random state (dropout's) is never touched.

Applied in this order, each to every clip of a batch independently (all vectorised over the batch):

1. **Gain** (``gain_db``): the clip's level changes by ``g ~ U[-gain_db, +gain_db]`` dB. A waveform gain of
   ``g`` dB multiplies power by ``10^(g/10)``, so the natural-log mel energy of every band grows by
   ``g ln(10) / 10`` (0.230 per dB). After standardisation ``(x_raw - mean_b) / std_b`` that is an additive
   offset of ``g ln(10) / (10 std_b)`` in band ``b``: hence the per-band ``band_std`` (the ``Normaliser``'s
   ``std``, (mels,)) that :class:`BatchAugmenter` needs for it. (The log floor, ln(1e-10), is ignored: silent
   frames, which the floor clamps, move too.) *Against*: a model that keys on absolute level. thce standardises
   with one global mean per band, not per clip, so a few training recordings made at one level teach "this
   level = this class"; unseen recordings come at other levels. It does not change the event-to-background
   ratio (that needs mixing in the audio domain, before the features). Level/dynamic-range augmentation for
   environmental sound: Salamon & Bello 2017 (IEEE SPL 24(3)); random gain is standard in DCASE systems.
2. **Circular time shift** (``time_shift``): the clip is rolled along time by ``s ~ U{0, ..., frames-1}`` frames
   (what leaves at the end comes back at the start; no frame is lost, so a short event is never cut out). *Against*:
   position memorisation. With a handful of source recordings every dog clip of a recording has its event at a
   few positions, and the encoders are not shift invariant (the CNN's 5- and 100-frame pools leave 2 time cells,
   the LSTM reads in order). The wrap point adds one discontinuity of the background, which 10 s clips of
   stationary-ish beds tolerate.
3. **SpecAugment masks** (``freq_masks`` x ``freq_mask_bands``, ``time_masks`` x ``time_mask_frames``): Park et al.
   2019 (Interspeech, "SpecAugment"): each mask has width ``w ~ U{0, ..., max}`` and start ``U{0, ..., size-w}``;
   masked values are set to 0, the normalised mean of the band (Park et al. mask with the mean). Masks may
   overlap. *Against*: reliance on one narrow band or one short moment, which on few recordings is often a
   property of the recording (a hum, a click) rather than of the class; the model must use all the evidence.
   (Park et al.'s time-warp and their cap of time masks at a fraction of the clip are not implemented.)
4. **Mixup** (``mixup_alpha``): Zhang et al. 2018 (ICLR, "mixup"): each clip is mixed with another clip of the
   same batch (a random permutation ``perm``) as ``lam x + (1 - lam) x[perm]``, ``lam ~ Beta(alpha, alpha)`` drawn
   per clip, and the targets are mixed the same way (:func:`mix_targets`, :func:`mixed_loss`). It is a separate
   step (:meth:`BatchAugmenter.mixup`) because the loss must know ``lam`` and ``perm``. *Against*: over-confident,
   memorising decision boundaries on small data; between-class mixing of sounds works well for sound
   classification (Tokozume et al. 2018, ICLR, "between-class learning"; mixup + SpecAugment in PANNs, Kong et
   al. 2020, IEEE/ACM TASLP). Mixing in the normalised log domain is not mixing waveforms (it is a geometric
   mean of energies); this is the common practice for log-mel inputs. A rare-event clip mixed with background
   keeps a soft target ``lam``, so the positives are not lost but diluted: small ``alpha`` (0.1-0.4) keeps most
   ``lam`` near 0 or 1. For the THCE embedding stage (``mixup_embedding``) the default is ``"off"``: THCE pulls
   each clip towards its own cluster and away from the nearest other ones (Eq. 3), and a mixed clip belongs to
   no cluster; ``"mix"`` trains it towards both of its clips' clusters with weights ``lam`` and ``1 - lam``.

Contract: augmentation is for training batches only. :class:`BatchAugmenter` is an ``nn.Module`` without
parameters; it augments only in training mode (``augmenter.eval()`` makes both steps the identity) and only what
its config turns on (all off: the identity, returning ``x`` itself). Validation, scoring and embedding passes
must not call it. It never modifies the caller's tensor and keeps shape, dtype and device. Head-only stages that
train on cached embeddings (the encoder run once) cannot use the input augmentations; mixup can still mix those
embeddings (features for the head) with :meth:`BatchAugmenter.mixup`, which works on any ``(B, ...)`` tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor, nn

from thce.errors import ConfigError

__all__ = ["MIXUP_EMBEDDING", "AugmentConfig", "BatchAugmenter", "band_std_of", "mix_targets", "mixed_loss"]

#: What mixup does in the THCE embedding stage: nothing, or mixed one-hot cluster targets.
MIXUP_EMBEDDING = ("off", "mix")

#: Natural-log units per dB of power: ``ln(10) / 10``.
LN_PER_DB = math.log(10.0) / 10.0


@dataclass(frozen=True)
class AugmentConfig:
    """The ``[augment]`` table: training-batch augmentations, all off by default (see the module docstring).

    ``time_shift``: random circular shift along time, uniform over all frames.
    ``gain_db``: maximum absolute gain in dB, ``g ~ U[-gain_db, gain_db]`` per clip (0: off).
    ``freq_masks`` / ``freq_mask_bands``: SpecAugment frequency masks per clip and their maximum width in mel bands.
    ``time_masks`` / ``time_mask_frames``: SpecAugment time masks per clip and their maximum width in frames.
    ``mixup_alpha``: Beta(alpha, alpha) of mixup within the batch (0: off).
    ``mixup_embedding``: mixup in the THCE embedding stage: ``"off"`` or ``"mix"`` (mixed cluster targets).
    ``remix_events``: frame-level runs (strong labels) only: events cut from the training clips pasted into each
    training clip per epoch of the detector stages (:mod:`thce.data.remix`; 0: off), at an event-to-background
    ratio drawn uniformly from ``remix_ebr_db`` (dB), each moved by up to ``remix_band_shift`` mel bands up or down
    (:func:`thce.data.remix.shift_bands`; 0: off). Not in the THCE embedding stage, whose clusters are fixed.

    A zero count or a zero width turns that mask off; ``mixup_alpha = 0`` turns mixup off everywhere (then
    ``mixup_embedding`` has no effect), so a sweep can vary each key on its own.
    """

    time_shift: bool = False
    gain_db: float = 0.0
    freq_masks: int = 0
    freq_mask_bands: int = 0
    time_masks: int = 0
    time_mask_frames: int = 0
    mixup_alpha: float = 0.0
    mixup_embedding: str = "off"
    remix_events: int = 0
    remix_ebr_db: tuple[float, float] = (-6.0, 6.0)
    remix_band_shift: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not (math.isfinite(self.gain_db) and self.gain_db >= 0):
            raise ConfigError(f"augment.gain_db: must be a finite number >= 0 (max |gain| in dB), got {self.gain_db}")
        for name in ("freq_masks", "freq_mask_bands", "time_masks", "time_mask_frames"):
            if getattr(self, name) < 0:
                raise ConfigError(f"augment.{name}: must be >= 0, got {getattr(self, name)}")
        if not (math.isfinite(self.mixup_alpha) and self.mixup_alpha >= 0):
            raise ConfigError(f"augment.mixup_alpha: must be a finite number >= 0 (0: off), got {self.mixup_alpha}")
        if self.remix_events < 0:
            raise ConfigError(f"augment.remix_events: must be >= 0 (0: off), got {self.remix_events}")
        if self.remix_band_shift < 0:
            raise ConfigError(f"augment.remix_band_shift: must be >= 0 mel bands (0: off), got {self.remix_band_shift}")
        low, high = self.remix_ebr_db
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ConfigError(f"augment.remix_ebr_db: expected [low, high] dB with low <= high, got {list(self.remix_ebr_db)}")
        if self.mixup_embedding not in MIXUP_EMBEDDING:
            raise ConfigError(
                f"augment.mixup_embedding: must be one of {MIXUP_EMBEDDING}, got {self.mixup_embedding!r}"
            )

    @property
    def freq_masking(self) -> bool:
        return self.freq_masks > 0 and self.freq_mask_bands > 0

    @property
    def time_masking(self) -> bool:
        return self.time_masks > 0 and self.time_mask_frames > 0

    @property
    def input_enabled(self) -> bool:
        """Any label-preserving input augmentation (gain, shift, masks) is on."""
        return self.gain_db > 0 or self.time_shift or self.freq_masking or self.time_masking

    @property
    def mixup(self) -> bool:
        """Mixup is on (stages with class or multi-hot targets)."""
        return self.mixup_alpha > 0

    @property
    def mixup_in_embedding(self) -> bool:
        """Mixup is on in the THCE embedding stage."""
        return self.mixup and self.mixup_embedding == "mix"

    @property
    def enabled(self) -> bool:
        """Any batch augmentation is on (``remix_events`` works on whole epochs, see :mod:`thce.data.remix`);
        ``False`` means the batches are exactly as without augmentation."""
        return self.input_enabled or self.mixup

    def describe(self) -> str:
        """The keys that differ from the defaults, e.g. ``"time_shift=True, mixup_alpha=0.2"`` (``"off"`` if none)."""
        default = AugmentConfig()
        changed = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                   if getattr(self, f.name) != getattr(default, f.name)]  # fmt: skip
        return ", ".join(changed) or "off"


def band_std_of(normalise: object) -> Tensor | None:
    """The per-band std ``(mels,)`` of a normaliser (``TrainingData.normalise``, a :class:`Normaliser`), as float32;
    ``None`` for anything without a ``std`` (e.g. no normalisation), for which gain cannot be expressed."""
    std = getattr(normalise, "std", None)
    return None if std is None else torch.as_tensor(np.asarray(std), dtype=torch.float32).reshape(-1)


def _uniform(generator: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float64)


def _random_spans(generator: torch.Generator, batch: int, count: int, max_width: int, size: int) -> Tensor:
    """(batch, size) bool: ``count`` spans per row, widths ``U{0..max_width}``, starts ``U{0..size-width}``."""
    where = torch.arange(size)
    masked = torch.zeros(batch, size, dtype=torch.bool)
    for _ in range(count):  # a handful of masks; each vectorised over the batch
        width = torch.randint(0, max_width + 1, (batch,), generator=generator)
        start = (_uniform(generator, batch) * (size - width + 1)).long()
        masked |= (where >= start[:, None]) & (where < (start + width)[:, None])
    return masked


class BatchAugmenter(nn.Module):
    """The augmentations of ``config`` for training batches; an ``nn.Module`` only for its ``training`` flag and
    for moving ``band_std`` with ``.to(device)`` (a non-persistent buffer: nothing enters a state dict).

    Usage in a training step (``generator``: a CPU ``torch.Generator`` of the stage, saved with its checkpoint)::

        x = augmenter(x, generator)                           # gain, shift, masks; targets unchanged
        x, lam, perm = augmenter.mixup(x, generator)          # identity (lam = 1, perm = arange) when off
        loss = weighted_bce(model(x), mix_targets(t, lam, perm), w)

    Args:
        config: which augmentations (validated here).
        band_std: (mels,) per-band std of the normalisation (:func:`band_std_of`); required when
            ``config.gain_db > 0``.
    """

    band_std: Tensor | None

    def __init__(self, config: AugmentConfig, band_std: Tensor | np.ndarray | None = None) -> None:
        super().__init__()
        config.validate()
        self.config = config
        if config.gain_db > 0:
            if band_std is None:
                raise ValueError("BatchAugmenter: augment.gain_db needs the normalisation's per-band std (band_std)")
            std = torch.as_tensor(np.asarray(band_std) if not isinstance(band_std, Tensor) else band_std)
            std = std.to(torch.float32).reshape(-1)
            if std.numel() == 0 or not bool(torch.isfinite(std).all()) or bool((std <= 0).any()):
                raise ValueError("BatchAugmenter: band_std must be finite and positive")
            self.register_buffer("band_std", std, persistent=False)
        else:
            self.band_std = None

    def extra_repr(self) -> str:
        return self.config.describe()

    def _check(self, x: Tensor) -> None:
        if x.ndim != 3:
            raise ValueError(f"BatchAugmenter: x must be (B, frames, mels), got {tuple(x.shape)}")
        _, frames, mels = x.shape
        cfg = self.config
        if cfg.freq_masking and cfg.freq_mask_bands > mels:
            raise ValueError(f"augment.freq_mask_bands: {cfg.freq_mask_bands} exceeds the {mels} mel bands")
        if cfg.time_masking and cfg.time_mask_frames > frames:
            raise ValueError(f"augment.time_mask_frames: {cfg.time_mask_frames} exceeds the {frames} frames")
        if self.band_std is not None and self.band_std.numel() != mels:
            raise ValueError(f"BatchAugmenter: band_std has {self.band_std.numel()} bands, x has {mels}")

    def forward(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Gain, circular time shift, then SpecAugment masks on ``x`` (B, frames, mels); returns a new tensor
        (``x`` itself when nothing is on or in eval mode). Targets are unchanged by all of these."""
        cfg = self.config
        if not self.training or not cfg.input_enabled:
            return x
        self._check(x)
        batch, frames, mels = x.shape
        device = x.device
        # Random draws in the documented order (gain, shift, masks), all before any arithmetic.
        offset = shift = bands = times = None
        if cfg.gain_db > 0:
            gain_db = (2 * _uniform(generator, batch) - 1) * cfg.gain_db  # U[-gain_db, gain_db]
            offset = (gain_db.to(device, torch.float32)[:, None] * LN_PER_DB) / self.band_std.to(device)[None, :]
        if cfg.time_shift:
            shift = torch.randint(0, frames, (batch,), generator=generator)
        if cfg.freq_masking:
            bands = _random_spans(generator, batch, cfg.freq_masks, cfg.freq_mask_bands, mels)
        if cfg.time_masking:
            times = _random_spans(generator, batch, cfg.time_masks, cfg.time_mask_frames, frames)
        # One new (B, frames, mels) tensor, then in place on it: each fresh 16 MB batch costs page faults, and the
        # gain (constant over time) commutes with the shift (a permutation of frames), so the shift goes first.
        owned = False
        if shift is not None:
            source = (torch.arange(frames)[None, :] - shift[:, None]) % frames  # out[t] = x[t - s]
            # rows of the (B * frames, mels) matrix: index_select is about 2x faster than x[arange(B)[:, None], source]
            rows = (source + frames * torch.arange(batch)[:, None]).reshape(-1).to(device)
            x, owned = x.reshape(batch * frames, mels).index_select(0, rows).view(batch, frames, mels), True
        if offset is not None:
            offset = offset[:, None, :].to(x.dtype)
            x, owned = (x.add_(offset) if owned else x + offset), True
        # Masks as multiplications by 0/1 (broadcast (B, 1, M) and (B, T, 1)): about 2x faster than masked_fill with
        # their union; the features are finite, so a masked value is 0 (or -0.0, equal to 0).
        for keep in (
            None if bands is None else (~bands).to(device, x.dtype)[:, None, :],
            None if times is None else (~times).to(device, x.dtype)[:, :, None],
        ):
            if keep is not None:
                x, owned = (x.mul_(keep) if owned else x * keep), True
        return x

    def mixup(
        self, x: Tensor, generator: torch.Generator, *, enabled: bool | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Mixup within the batch: ``(lam x + (1 - lam) x[perm], lam, perm)``.

        ``x`` is any ``(B, ...)`` tensor (features or cached embeddings); ``lam`` (B,) float32 on ``x``'s device,
        one ``Beta(alpha, alpha)`` draw per clip; ``perm`` (B,) long, a random permutation. Mix the targets with
        :func:`mix_targets` (multi-hot) or the losses with :func:`mixed_loss` (class or cluster indices).

        ``enabled`` overrides ``config.mixup`` (the embedding stage passes ``config.mixup_in_embedding``). When
        off, or in eval mode, returns ``(x, ones, arange)``: the mixing helpers then give the unmixed values.
        """
        batch = x.shape[0]
        on = self.config.mixup if enabled is None else (enabled and self.config.mixup)
        if not self.training or not on or batch < 2:
            return x, torch.ones(batch, device=x.device), torch.arange(batch, device=x.device)
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
        alpha = self.config.mixup_alpha
        lam = torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, size=batch)).to(x.device, torch.float32)
        perm = torch.randperm(batch, generator=generator).to(x.device)
        weight = lam.reshape(batch, *([1] * (x.ndim - 1))).to(x.dtype)
        # lerp_(b, w): a + w (b - a) = lam x + (1 - lam) x[perm] in place on the new x[perm]: one pass, one new tensor
        return x.index_select(0, perm).lerp_(x, weight), lam, perm


def mix_targets(targets: Tensor, lam: Tensor, perm: Tensor) -> Tensor:
    """Multi-hot (or one-hot, or soft) targets (B, L) mixed like the inputs: ``lam t + (1 - lam) t[perm]``.

    For Eq. 2 this is exact: the weighted BCE is linear in the target (``-[w t log y + (1 - t) log(1 - y)]``), so
    the loss on mixed targets equals ``lam loss(t) + (1 - lam) loss(t[perm])`` per term, class weights included.

    >>> mix_targets(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0.75, 0.5]), torch.tensor([1, 0])).tolist()
    [[0.75, 0.25], [0.5, 0.5]]
    """
    if not targets.is_floating_point():
        targets = targets.float()
    weight = lam.to(targets.device, targets.dtype).reshape(-1, *([1] * (targets.ndim - 1)))
    return weight * targets + (1 - weight) * targets[perm.to(targets.device)]


def mixed_loss(
    loss_per_sample: Callable[[Tensor], Tensor],
    targets: Tensor,
    lam: Tensor,
    perm: Tensor,
    *,
    weights: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Mixup for losses on class or cluster indices: ``lam loss(y) + (1 - lam) loss(y[perm])`` per sample.

    Args:
        loss_per_sample: ``targets -> (B,)`` unweighted per-sample losses of the (mixed) batch's outputs, e.g.
            ``lambda k: triple_header_ce(h, k, cluster_class, beta_same=..., beta_other=..., reduction="none")``.
        targets: (B,) class or cluster indices of the clips before mixing (or any (B, ...) targets).
        lam, perm: from :meth:`BatchAugmenter.mixup`.
        weights: (B,) per-sample weights of the unmixed clips (THCE: ``cluster_weights[k]``, Eqs. 8-9); each
            mixed clip then counts as its two clips with weights ``lam w_i`` and ``(1 - lam) w_perm(i)``.
        reduction: ``"none"`` (B,) unweighted mixed losses; ``"sum"`` ``sum(lam w l_a + (1 - lam) w' l_b)``;
            ``"mean"`` that sum divided by ``sum(lam w + (1 - lam) w')`` -- with ``lam = 1`` exactly the weighted
            mean of :func:`thce.losses.triple_header_ce`.
    """
    perm = perm.to(targets.device)
    loss_a, loss_b = loss_per_sample(targets), loss_per_sample(targets[perm])
    lam = lam.to(loss_a.device, loss_a.dtype)
    if reduction == "none":
        return lam * loss_a + (1 - lam) * loss_b
    w_a = torch.ones_like(loss_a) if weights is None else weights.to(loss_a.device, loss_a.dtype)
    w_b = w_a[perm.to(w_a.device)]
    total = (lam * w_a * loss_a + (1 - lam) * w_b * loss_b).sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / (lam * w_a + (1 - lam) * w_b).sum()
    raise ValueError(f"mixed_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
