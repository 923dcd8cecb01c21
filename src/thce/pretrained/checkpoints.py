"""Reading PANNs checkpoints safely, and converting them to plain state dicts.

The released files (Zenodo record 3987831, e.g. ``Cnn14_16k_mAP=0.438.pth``) are what the official training script
saves: ``{"iteration": int, "model": state_dict, "sampler": sampler.state_dict()}``, where the sampler's state holds
numpy arrays (shuffled clip indexes). ``torch.load(weights_only=True)`` refuses numpy objects by default; we allow,
for the duration of one load only, exactly what a numpy array needs to unpickle (:func:`numpy_safe_globals`) and
nothing else: any other object in the file (a class, a function) is refused with a :class:`DataError`.

:func:`load_panns_checkpoint` then checks that the file holds the requested variant (told apart by the shapes of
the STFT kernels, the mel matrix, the conv blocks and fc1), that its keys and shapes are exactly the official ones,
and that its mel matrix is the one of the variant's rate and band edges. The decision-level Cnn14 files share
Cnn14's tensors but not its pooling; they are refused by name. :func:`convert_panns_checkpoint` writes
the checked state dict alone (safetensors when that package is installed, else a weights-only ``.pt``), which
:func:`load_panns_checkpoint` reads as well.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from thce.errors import DataError, OutputError
from thce.pretrained.panns import (
    AUDIOSET_CLASSES,
    PANNS_VARIANTS,
    PannsVariant,
    check_sample_rate,
    mel_matrix,
    panns_variant,
)

#: Largest difference (relative to the largest weight) between a checkpoint's mel matrix and the one computed
#: from the variant's settings that still counts as equal: float32 storage and librosa versions differ by ~1e-7;
#: another sample rate or band edge moves whole filters.
MEL_TOLERANCE = 1e-4

#: Released PANNs files whose tensors have Cnn14's keys and shapes but whose network pools elsewhere: fc1 runs on
#: every frame and the clip output is pooled after it (Cnn14_DecisionLevelMax / _DecisionLevelAvg), where Cnn14
#: (and thce's encoder) pools the frames before fc1. Only the file name tells them apart.
_DECISION_LEVEL_NAME = re.compile(r"^cnn14_decisionlevel", re.IGNORECASE)

_STFT_KEY = "spectrogram_extractor.stft.conv_real.weight"
_MEL_KEY = "logmel_extractor.melW"
_SAFETENSORS_SUFFIX = ".safetensors"


def numpy_safe_globals() -> list[Any]:
    """The allow-list for ``torch.serialization.safe_globals`` while reading a PANNs checkpoint: what unpickling
    numpy arrays of the sampler state requires, nothing more.

    - ``_reconstruct`` under both spellings: numpy 1.x writes ``numpy.core.multiarray._reconstruct`` (the released
      files), numpy 2.x ``numpy._core.multiarray._reconstruct``;
    - ``numpy.ndarray`` (the array built and filled) and ``numpy.dtype`` (called to build its dtype);
    - the dtype classes whose state is set while unpickling: int64 and int32 (clip indexes; numpy's default
      integer on Linux / on Windows with numpy 1.x) and uint32 (the key of a ``RandomState.get_state()``).
    """
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 2 without the forward-compatible alias
        multiarray = importlib.import_module("numpy.core.multiarray")
    reconstruct = multiarray._reconstruct
    return [
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        np.dtypes.Int64DType,
        np.dtypes.Int32DType,
        np.dtypes.UInt32DType,
    ]


def _read_file(path: Path) -> Any:
    """What ``path`` holds: a torch file through the weights-only unpickler with :func:`numpy_safe_globals`, or a
    safetensors file. Raises :class:`DataError` (one line, naming the file) when it cannot be read."""
    if not path.exists():
        raise DataError(f"{path}: no such file (download the PANNs checkpoint from Zenodo record 3987831)")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if path.suffix == _SAFETENSORS_SUFFIX:
        return _read_safetensors(path)
    if head.lstrip().startswith(b"<"):
        raise DataError(f"{path}: an HTML or XML page ({size} bytes), not a checkpoint: a failed download?")
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(str(exc))
        refused = re.search(r"GLOBAL (\S+)|but got <class '([^']+)'>|unrecognized function (\S+)", reason)
        if refused is not None:
            raise DataError(
                f"{path}: holds a pickled object that a PANNs checkpoint does not contain "
                f"({next(g for g in refused.groups() if g)}); refusing to load it (only tensors, numbers, strings "
                "and numpy integer arrays are read)"
            ) from None
        raise DataError(f"{path}: truncated or not a PyTorch checkpoint ({size} bytes): {reason}") from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError) as exc:
        reason = _first_sentence(str(exc)) or type(exc).__name__
        raise DataError(f"{path}: truncated or not a PyTorch checkpoint ({size} bytes): {reason}") from None


def _unpickler_reason(message: str) -> str:
    """The weights-only unpickler's own reason inside torch's long error message."""
    found = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)", message, re.DOTALL)
    return _first_sentence(found.group(1) if found else message)


def _first_sentence(text: str) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line.split(". ")[0].rstrip(".")


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise DataError(
            f"{path}: reading .safetensors files needs the safetensors package (pip install safetensors)"
        ) from None
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path}: truncated or not a safetensors file: {_first_sentence(str(exc))}") from None


def _state_dict_of(content: Any, path: Path) -> dict[str, Tensor]:
    """The model state dict in ``content``: the ``model`` entry of an official checkpoint, or a plain state dict."""
    if isinstance(content, Mapping) and isinstance(content.get("model"), Mapping):
        content = content["model"]
    if not isinstance(content, Mapping) or not content:
        raise DataError(
            f"{path}: not a PANNs checkpoint: expected a dict with a 'model' state dict (or a plain state dict), "
            f"found {type(content).__name__}"
        )
    if not all(isinstance(k, str) and isinstance(t, Tensor) for k, t in content.items()):
        keys = ", ".join(map(str, list(content)[:5]))
        raise DataError(f"{path}: not a PANNs checkpoint: its entries ({keys}, ...) are not named tensors")
    return dict(content)


def _signature(state_dict: Mapping[str, Tensor], path: Path) -> tuple[int, int, int, int]:
    """(n_fft, n_mels, conv blocks, fc1 width) of a PANNs state dict; :class:`DataError` if it is none."""
    missing = [k for k in (_STFT_KEY, _MEL_KEY, "fc1.weight") if k not in state_dict]
    if missing:
        first = ", ".join(list(state_dict)[:4])
        raise DataError(f"{path}: not a PANNs state dict (no {missing[0]}; its first keys: {first}, ...)")
    blocks = 0
    while f"conv_block{blocks + 1}.conv1.weight" in state_dict:
        blocks += 1
    return state_dict[_STFT_KEY].shape[-1], state_dict[_MEL_KEY].shape[-1], blocks, state_dict["fc1.weight"].shape[0]


def _variant_signature(variant: PannsVariant) -> tuple[int, int, int, int]:
    return variant.window, variant.n_mels, len(variant.channels), variant.embedding_dim


def detect_variant(state_dict: Mapping[str, Tensor], *, path: str | os.PathLike = "state dict") -> PannsVariant:
    """The variant whose architecture a PANNs state dict has (by the STFT kernel and mel matrix shapes, the
    number of conv blocks and fc1's width); :class:`DataError` naming what it found when none matches."""
    found = _signature(state_dict, Path(path))
    for variant in PANNS_VARIANTS.values():
        if _variant_signature(variant) == found:
            return variant
    n_fft, n_mels, blocks, width = found
    raise DataError(
        f"{path}: a PANNs network with FFT size {n_fft}, {n_mels} mel bands, {blocks} conv blocks and a {width}-d "
        f"fc1, which is none of {', '.join(PANNS_VARIANTS)}"
    )


def _listing(what: str, keys: list[str]) -> list[str]:
    more = ", ..." if len(keys) > 3 else ""
    return [f"{len(keys)} {what} ({', '.join(keys[:3])}{more})"] if keys else []


def official_layout(variant: str | PannsVariant) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the state dict in an official ``variant`` checkpoint, in the file's order (written out
    from ``pytorch/models.py`` of qiuqiangkong/audioset_tagging_cnn; :class:`~thce.pretrained.panns.PannsCnn` must
    produce the same)."""
    v = panns_variant(variant)
    bins = v.window // 2 + 1

    def batch_norm(name: str, n: int) -> dict[str, tuple[int, ...]]:
        return {f"{name}.{p}": (n,) for p in ("weight", "bias", "running_mean", "running_var")} | {
            f"{name}.num_batches_tracked": ()
        }

    layout = {
        "spectrogram_extractor.stft.conv_real.weight": (bins, 1, v.window),
        "spectrogram_extractor.stft.conv_imag.weight": (bins, 1, v.window),
        _MEL_KEY: (bins, v.n_mels),
        **batch_norm("bn0", v.n_mels),
    }
    in_channels = 1
    for i, channels in enumerate(v.channels, start=1):
        layout[f"conv_block{i}.conv1.weight"] = (channels, in_channels, 3, 3)
        layout[f"conv_block{i}.conv2.weight"] = (channels, channels, 3, 3)
        layout |= batch_norm(f"conv_block{i}.bn1", channels) | batch_norm(f"conv_block{i}.bn2", channels)
        in_channels = channels
    d = v.embedding_dim
    return layout | {
        "fc1.weight": (d, d),
        "fc1.bias": (d,),
        "fc_audioset.weight": (AUDIOSET_CLASSES, d),
        "fc_audioset.bias": (AUDIOSET_CLASSES,),
    }


def _check_layout(state_dict: Mapping[str, Tensor], variant: PannsVariant, path: Path) -> None:
    """Keys and shapes exactly those of the official ``variant`` (with the 527-class head)."""
    expected = official_layout(variant)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    problems = _listing("missing", missing) + _listing("unexpected", unexpected)
    if problems:
        raise DataError(f"{path}: not an official {variant.name} state dict: keys {'; '.join(problems)}")
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} (expected {tuple(shape)})"
        for k, shape in expected.items()
        if tuple(state_dict[k].shape) != shape
    ]
    if wrong:
        raise DataError(f"{path}: not an official {variant.name} state dict: shapes of {'; '.join(wrong[:3])}")


def _check_mel(state_dict: Mapping[str, Tensor], variant: PannsVariant, path: Path) -> None:
    """The checkpoint's mel matrix is the variant's (rate, FFT size, band edges): one of another sample rate
    would feed the network features it was not trained on."""
    reference = mel_matrix(variant)
    diff = (state_dict[_MEL_KEY].detach().double() - reference).abs().max().item() / reference.abs().max().item()
    if not diff <= MEL_TOLERANCE:
        raise DataError(
            f"{path}: its mel matrix is not {variant.name}'s ({variant.sample_rate_hz} Hz, {variant.n_mels} bands "
            f"{variant.f_min_hz:g}-{variant.f_max_hz:g} Hz; relative difference {diff:.3g}): a network for another "
            "sample rate or band?"
        )


def _load_checked(path: Path, variant: PannsVariant | None) -> tuple[dict[str, Tensor], PannsVariant]:
    """The checked state dict in ``path`` and its variant (``variant``, or the one found when ``None``)."""
    if _DECISION_LEVEL_NAME.match(path.name):
        raise DataError(
            f"{path}: by its name a decision-level PANNs model (fc1 on every frame, pooled after it); thce's Cnn14 "
            "pools the frames before fc1, so these weights would not give the embedding they learned; use the "
            "clip-level Cnn14 file (e.g. Cnn14_mAP=0.431.pth)"
        )
    state_dict = _state_dict_of(_read_file(path), path)
    found = detect_variant(state_dict, path=path)
    if variant is not None and found != variant:
        raise DataError(f"{path}: holds {found.describe()}, not {variant.describe()}; choose {found.encoder_name}")
    _check_layout(state_dict, found, path)
    _check_mel(state_dict, found, path)
    return state_dict, found


def load_panns_checkpoint(
    path: str | os.PathLike, variant: str | PannsVariant, *, sample_rate_hz: int | None = None
) -> dict[str, Tensor]:
    """The official state dict of ``variant`` from a PANNs checkpoint (as released, or converted by
    :func:`convert_panns_checkpoint`), read with ``weights_only=True``.

    ``sample_rate_hz``: the rate of the features it will see; a mismatch raises :class:`thce.errors.ConfigError`.
    Every problem with the file (missing, truncated, not a checkpoint, a disallowed object, another variant,
    wrong keys or shapes, a mel matrix of another rate) raises :class:`DataError` with a one-line message naming it.
    """
    spec = panns_variant(variant)
    path = Path(path)
    if sample_rate_hz is not None:
        check_sample_rate(spec, sample_rate_hz, where=f"features for {spec.encoder_name} ({path})")
    return _load_checked(path, spec)[0]


def safetensors_available() -> bool:
    """Whether the ``safetensors`` package is installed (then :func:`convert_panns_checkpoint` writes that)."""
    return importlib.util.find_spec("safetensors") is not None


def convert_panns_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike | None = None,
    *,
    variant: str | PannsVariant | None = None,
) -> Path:
    """Write the checked state dict of the PANNs checkpoint ``source`` alone (no iteration, no sampler) and return
    where: ``destination``, or ``source`` with the suffix ``.safetensors`` when the safetensors package is
    installed, else ``.thce.pt`` (a dict of tensors, readable with plain ``torch.load(weights_only=True)``).
    ``variant``: the expected one; ``None`` takes the one the file holds."""
    source = Path(source)
    state_dict, found = _load_checked(source, None if variant is None else panns_variant(variant))
    if destination is None:
        suffix = _SAFETENSORS_SUFFIX if safetensors_available() else ".thce.pt"
        destination = source.with_name(source.stem + suffix)
    destination = Path(destination)
    tensors = {k: t.detach().contiguous() for k, t in state_dict.items()}
    directory = destination.parent
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", dir=directory)
        os.close(handle)
        try:
            if destination.suffix == _SAFETENSORS_SUFFIX:
                from safetensors.torch import save_file

                save_file(tensors, temporary, metadata={"format": "pt", "panns_variant": found.name})
            else:
                torch.save(tensors, temporary)
            os.replace(temporary, destination)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    except ImportError:
        raise OutputError(f"{destination}: writing .safetensors needs the safetensors package") from None
    except OSError as exc:
        raise OutputError(f"{destination}: cannot write it ({exc.strerror or exc})") from None
    return destination
