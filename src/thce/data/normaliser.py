"""Per-mel-band standardisation of log-mel features (:class:`Normaliser`), fitted on the training clips only (the
paper: "normalized using the mean and variance of the training data"), computed streaming in float64."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from thce.data.feature_store import FeatureStore
from thce.errors import DataError
from thce.io import read_json, write_json


def _as_float(x: np.ndarray, dtype: type[np.floating], *, copy: bool = False) -> np.ndarray:
    """``x`` as ``dtype``; float16 is converted by torch (vectorised; numpy's float16 cast is about 20x slower)."""
    x = np.asarray(x)
    if x.dtype == np.float16:
        torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
        return torch.from_numpy(np.ascontiguousarray(x)).to(torch_dtype).numpy()  # always a new array
    return np.array(x, dtype=dtype, copy=True) if copy else np.asarray(x, dtype=dtype)


@dataclass
class Normaliser:
    """Per-mel-band standardisation: ``(x - mean) / std``, statistics from the training clips.

    Attributes:
        mean: float64 ``(n_mels,)``, mean log-mel energy of each band over all training frames.
        std: float64 ``(n_mels,)``, population standard deviation of each band (floored at ``min_std``).
    """

    mean: np.ndarray
    std: np.ndarray

    #: A band with (near) constant energy, e.g. an empty filter, is divided by this instead of ~0.
    min_std: ClassVar[float] = 1e-5

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(self.std, dtype=np.float64).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise DataError(f"Normaliser: mean has {self.mean.size} bands but std has {self.std.size}")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.std).all()) or (self.std <= 0).any():
            raise DataError("Normaliser: mean and std must be finite and std positive")

    @classmethod
    def fit(
        cls, store: FeatureStore | np.ndarray, indices: Sequence[int] | np.ndarray, *, chunk: int = 32
    ) -> Normaliser:
        """Mean and std per mel band over every frame of the clips ``store[indices]``, streaming ``chunk`` clips at a
        time in float64 (chunk statistics merged with Chan et al.'s parallel variance formula: no cancellation).
        Memory: about ``chunk`` x 0.5 MB for 10 s clips, whatever the number of clips.

        Raises:
            DataError: ``indices`` is empty.
        """
        if chunk < 1:
            raise ValueError(f"Normaliser.fit: chunk must be >= 1, got {chunk}")
        idx = np.sort(np.asarray(indices, dtype=np.int64).reshape(-1))
        if idx.size == 0:
            raise DataError("Normaliser.fit: no training clips to compute statistics from")
        count = 0
        mean: np.ndarray | None = None
        m2: np.ndarray | None = None
        for start in range(0, idx.size, chunk):
            block = store[idx[start : start + chunk]]
            x = _as_float(block.reshape(-1, block.shape[-1]), np.float64)
            n_b = x.shape[0]
            mean_b = x.mean(axis=0)
            x -= mean_b
            np.square(x, out=x)
            m2_b = x.sum(axis=0)
            if mean is None or m2 is None:
                count, mean, m2 = n_b, mean_b, m2_b
                continue
            delta = mean_b - mean
            total = count + n_b
            mean = mean + delta * (n_b / total)
            m2 = m2 + m2_b + np.square(delta) * (count * n_b / total)
            count = total
        assert mean is not None and m2 is not None
        std = np.sqrt(m2 / count)
        return cls(mean=mean, std=np.maximum(std, cls.min_std))

    @property
    def n_mels(self) -> int:
        return int(self.mean.size)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Normalise features ``(..., frames, n_mels)`` (any float dtype) -> float32 of the same shape."""
        if x.shape[-1] != self.n_mels:
            raise ValueError(f"Normaliser fitted on {self.n_mels} mel bands, got features with {x.shape[-1]}")
        out = _as_float(x, np.float32, copy=True)  # normalised in place
        out -= self.mean.astype(np.float32)
        out *= (1.0 / self.std).astype(np.float32)
        return out

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normaliser:
        """Inverse of :meth:`to_dict`; raises :class:`DataError` on missing or unknown keys."""
        unknown = sorted(set(data) - {"mean", "std"})
        missing = sorted({"mean", "std"} - set(data))
        if unknown or missing:
            raise DataError(
                f"Normaliser: expected keys mean, std; missing {missing or 'none'}, unknown {unknown or 'none'}"
            )
        return cls(mean=np.asarray(data["mean"]), std=np.asarray(data["std"]))

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON (atomically)."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Normaliser:
        data = read_json(path, "normalisation statistics")
        try:
            return cls.from_dict(data)
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from exc
