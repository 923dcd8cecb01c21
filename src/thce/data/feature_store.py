"""A finished feature cache, read-only (:class:`FeatureStore`), and the names of its files.

Layout of one cache (``cache_dir/<key>/``, written by :func:`thce.data.features.compute_features`)::

    meta.json                 {"format", "key", "config", "checks", "shard_size", "num_clips", "shards": [sizes],
                               "complete", "skipped": [{"index", "path", "problem"}], "files": [...]}
    shard_00000.npy           float16 (n_in_shard, num_frames, n_mels), clips [0, shard_size)
    shard_00000.skipped.json  only when a clip of the shard was skipped: [{"index", "path", "problem"}]
    shard_00001.npy           clips [shard_size, 2 * shard_size) ...

:class:`FeatureStore` reads it with positioned reads (``os.preadv``) into fresh arrays, so memory stays flat in the
number of clips (pages of a memory map that has been read count in the resident set; the page cache does not). Any
shard is also a plain ``.npy`` file that ``np.load(mmap_mode="r")`` maps.

float16 keeps a log-mel value (about -23 .. +20) to within 0.016 (10-bit mantissa), far below the spread of the
features; it halves disk use and I/O.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thce.audio.logmel import LogMelConfig
from thce.data.manifest import Skipped
from thce.errors import DataError
from thce.io import read_json

FORMAT_VERSION = 1
META_NAME = "meta.json"
FEATURE_DTYPE = np.float16


def shard_name(index: int) -> str:
    """File name of shard ``index`` (``shard_00000.npy``)."""
    return f"shard_{index:05d}.npy"


def skipped_name(index: int) -> str:
    """File name of the list of skipped clips of shard ``index`` (``shard_00000.skipped.json``)."""
    return f"shard_{index:05d}.skipped.json"


def skipped_json(item: Skipped) -> dict[str, Any]:
    """How a skipped clip is listed in ``meta.json`` and a shard's ``.skipped.json``."""
    return {"index": item.index, "path": item.path, "problem": item.problem}


def skipped_from_json(item: dict[str, Any]) -> Skipped:
    """Inverse of :func:`skipped_json`."""
    return Skipped(item["path"], item["problem"], "features", int(item["index"]))


def usable_indices(store: FeatureStore, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """``indices`` (default: every clip) without the clips the store skipped, in the given order, as int64."""
    idx = np.arange(len(store), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    bad = np.array(sorted(s.index for s in store.skipped if s.index is not None), dtype=np.int64)
    return idx[~np.isin(idx, bad)] if bad.size else idx


def _npy_data_offset(path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
    """Byte offset of the data, shape and dtype of a C-ordered ``.npy`` file (reads its header only)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        if fortran:
            raise ValueError("Fortran-ordered array")
        return handle.tell(), tuple(shape), np.dtype(dtype)


def _pread_into(fd: int, buffer: np.ndarray, offset: int) -> None:
    """Fill ``buffer`` (C-contiguous) from ``fd`` at ``offset``."""
    view = memoryview(buffer).cast("B")
    got = 0
    while got < view.nbytes:
        if hasattr(os, "preadv"):
            n = os.preadv(fd, [view[got:]], offset + got)
        else:  # pragma: no cover - platforms without preadv
            chunk = os.pread(fd, view.nbytes - got, offset + got)
            n = len(chunk)
            view[got : got + n] = chunk
        if n <= 0:
            raise OSError(f"unexpected end of file at byte {offset + got}")
        got += n


class FeatureStore:
    """Read-only view of a finished feature cache.

    ``store[i]`` -> float16 ``(num_frames, n_mels)``; ``store[indices]`` (int array, list, slice or bool mask) ->
    float16 ``(len(indices), num_frames, n_mels)`` in the order given. Only the requested clips are read, with
    positioned reads of contiguous runs (memory stays flat however many clips are read). Pickling sends the folder
    name and metadata only (DataLoader workers reopen the files).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / META_NAME
        meta = read_json(meta_path, "feature cache metadata")
        if meta.get("format") != FORMAT_VERSION:
            raise DataError(f"{meta_path}: cache format {meta.get('format')!r}, this version reads {FORMAT_VERSION}")
        if not meta.get("complete"):
            raise DataError(f"{meta_path}: feature cache is incomplete; rerun compute_features to finish it")
        self.meta: dict[str, Any] = meta
        self.config = LogMelConfig.from_dict(meta["config"])
        self.shard_sizes: list[int] = [int(n) for n in meta["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(self.shard_sizes, dtype=np.int64)])
        for i in range(len(self.shard_sizes)):
            if not (self.directory / shard_name(i)).is_file():
                raise DataError(f"{self.directory / shard_name(i)}: shard missing; rerun compute_features")
        self._offsets: dict[int, int] = {}

    @property
    def key(self) -> str:
        return str(self.meta["key"])

    @property
    def paths(self) -> list[Path]:
        """The audio files, in store order."""
        return [Path(f["path"]) for f in self.meta["files"]]

    @property
    def skipped(self) -> list[Skipped]:
        """Clips that could not be used (``index`` = position in the store), with the problem; their features are
        the log floor. Empty when the cache was built with ``strict=True``."""
        return [skipped_from_json(item) for item in self.meta.get("skipped", [])]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(clips, num_frames, n_mels)``."""
        return (len(self), self.config.num_frames, self.config.n_mels)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.directory)!r}, shape={self.shape})"

    def _offset(self, index: int) -> int:
        """Data offset of shard ``index``, its header checked against the metadata."""
        offset = self._offsets.get(index)
        if offset is None:
            path = self.directory / shard_name(index)
            expected = (self.shard_sizes[index], *self.shape[1:])
            try:
                offset, shape, dtype = _npy_data_offset(path)
            except (OSError, ValueError) as exc:
                raise DataError(
                    f"{path}: unreadable feature shard ({exc}); delete it and rerun compute_features"
                ) from exc
            if shape != expected or dtype != FEATURE_DTYPE:
                raise DataError(f"{path}: shard has shape {shape} {dtype}, expected {expected} float16")
            self._offsets[index] = offset
        return offset

    def _read(self, shard: int, local: np.ndarray) -> np.ndarray:
        """Clips ``local`` (sorted, unique) of one shard, reading each contiguous run at once."""
        offset = self._offset(shard)
        clip_bytes = self.shape[1] * self.shape[2] * np.dtype(FEATURE_DTYPE).itemsize
        out = np.empty((local.size, *self.shape[1:]), dtype=FEATURE_DTYPE)
        breaks = np.flatnonzero(np.diff(local) != 1) + 1
        path = self.directory / shard_name(shard)
        fd = os.open(path, os.O_RDONLY)
        try:
            for lo, hi in zip([0, *breaks.tolist()], [*breaks.tolist(), local.size]):
                _pread_into(fd, out[lo:hi], offset + int(local[lo]) * clip_bytes)
        except OSError as exc:
            raise DataError(f"{path}: cannot read feature shard ({exc}); delete it and rerun compute_features") from exc
        finally:
            os.close(fd)
        return out

    def __getitem__(self, index: int | np.integer | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        n = len(self)
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -n <= i < n:
                raise IndexError(f"clip {i} out of range for a store of {n}")
            i %= n
            s = int(np.searchsorted(self._starts, i, side="right")) - 1
            return self._read(s, np.array([i - self._starts[s]]))[0]
        if isinstance(index, slice):
            idx = np.arange(n)[index]
        else:
            idx = np.asarray(index)
            if idx.dtype == bool:
                if idx.shape != (n,):
                    raise IndexError(f"boolean mask of shape {idx.shape} for a store of {n}")
                idx = np.flatnonzero(idx)
            elif idx.size == 0:
                idx = idx.astype(np.int64)
            elif not np.issubdtype(idx.dtype, np.integer):
                raise IndexError(f"FeatureStore indices must be integers, got dtype {idx.dtype}")
        idx = idx.reshape(-1).astype(np.int64)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for a store of {n}")
        idx = np.where(idx < 0, idx + n, idx)
        out = np.empty((idx.size, *self.shape[1:]), dtype=FEATURE_DTYPE)
        shard_of = np.searchsorted(self._starts, idx, side="right") - 1
        for s in np.unique(shard_of):
            where = np.flatnonzero(shard_of == s)
            local, inverse = np.unique(idx[where] - self._starts[s], return_inverse=True)
            out[where] = self._read(int(s), local)[inverse.reshape(-1)]
        return out
