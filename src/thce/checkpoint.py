"""Self-contained model checkpoints: weights plus what is needed to use them (config, classes, normaliser,
validation scores for thresholds). Written atomically; read with ``torch.load(weights_only=True)``, never unpickled.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thce import methods
from thce.config import ExperimentConfig, config_from_dict
from thce.data.normaliser import Normaliser
from thce.errors import ConfigError, DataError
from thce.io import atomic_write
from thce.models import ClusterLayer, EventDetector
from thce.rundir import checkpoint_path


@dataclass
class LoadedDetector:
    """A trained detector ready for inference.

    Attributes:
        model: the network in eval mode, ``(B, frames, mels) -> logits (B, L)``.
        config: the experiment config it was trained with (features, model, ...).
        classes: the L event names.
        normaliser: the training split's per-band mean and std.
        method: the method (a network of :data:`thce.methods.METHODS`: baseline, proposed1, lmle, focal, ...).
        val_scores: (n_val, L) sigmoid scores on the validation split, for choosing thresholds (a frame-level
            run: one row per output frame of the validation clips).
        val_class_index: (n_val,) class of each validation clip (L = background), or of each frame.
        frames: a frame-level run's ``{"hop_s": seconds per output frame, "post_processing": per-class thresholds
            and median filters chosen on validation event F}``; ``None`` for a clip-level run.
    """

    model: EventDetector
    config: ExperimentConfig
    classes: tuple[str, ...]
    normaliser: Normaliser
    method: str
    val_scores: np.ndarray
    val_class_index: np.ndarray
    frames: dict[str, Any] | None = None


def save_checkpoint(
    path: Path,
    model: EventDetector,
    *,
    config: ExperimentConfig,
    method: str,
    classes: tuple[str, ...],
    normaliser: Normaliser,
    val_scores: np.ndarray,
    val_class_index: np.ndarray,
    train_class_counts: np.ndarray,
    frames: dict[str, Any] | None = None,
) -> Path:
    """Write the state dict and plain metadata (lists, numbers, strings) atomically.

    ``train_class_counts`` (L + 1,) rebuilds the losses of :mod:`thce.losses.imbalance` that score outputs.
    ``frames``: a frame-level run's frame hop and post-processing (:attr:`LoadedDetector.frames`)."""
    meta = {
        "format": 1,
        "method": method,
        "classes": list(classes),
        "config": config.to_dict(),
        "normaliser": normaliser.to_dict(),
        "val_scores": np.asarray(val_scores, dtype=np.float32).tolist(),
        "val_class_index": np.asarray(val_class_index, dtype=np.int64).tolist(),
        "train_class_counts": np.asarray(train_class_counts, dtype=np.int64).tolist(),
    }
    if frames is not None:
        meta["frames"] = frames
    with atomic_write(path, "wb") as handle:
        torch.save({"state_dict": model.state_dict(), "meta": meta}, handle)
    return path


def build_detector(
    config: ExperimentConfig, state_dict: dict[str, Any], num_events: int, method: str, train_class_counts: list[int]
) -> EventDetector:
    """The architecture of ``method`` for ``config`` (built by the registry :mod:`thce.methods`, as in training),
    with ``state_dict`` loaded, in eval mode. A saved cluster layer is rebuilt with the saved number of clusters."""
    encoder = methods.build_method_encoder(config, method)
    cluster_layer = None
    if "cluster_layer.cluster_class" in state_dict:
        scale = config.embedding.alpha if config.embedding.normalise_w else None
        cluster_layer = ClusterLayer(encoder.embedding_dim, state_dict["cluster_layer.cluster_class"], scale=scale)
    model = methods.build_detector(
        config, method, encoder, num_events=num_events, train_class_counts=train_class_counts,
        cluster_layer=cluster_layer,
    )  # fmt: skip
    model.load_state_dict(state_dict)
    return model.eval()


def load_checkpoint(path: str | Path) -> LoadedDetector:
    """Read a checkpoint written by :func:`save_checkpoint` (safely: ``weights_only=True``).

    Raises:
        DataError: one line naming ``path``: missing, unreadable, truncated, holding Python objects other than
            tensors (refused, never unpickled), or lacking what a thce checkpoint holds.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found" if not path.exists() else f"{path}: not a file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message is many lines long; what matters is that it was refused
        raise DataError(f"{path}: not a thce checkpoint (it holds Python objects other than tensors and plain "
                        "values, which thce does not unpickle)") from None  # fmt: skip
    except PermissionError as error:
        raise DataError(f"{path}: cannot read the checkpoint ({error.strerror or error})") from None
    except (OSError, RuntimeError, EOFError, ValueError, KeyError, IndexError) as error:  # truncated, not a zip, ...
        raise DataError(f"{path}: not a thce checkpoint or damaged ({_describe(error)})") from None
    if not isinstance(payload, dict):  # e.g. a bare tensor (indexing it with a string only warns, then fails)
        raise DataError(f"{path}: not a thce checkpoint (it holds a {type(payload).__name__}, not a dict of weights "
                        "and metadata)")  # fmt: skip
    try:
        meta = payload["meta"]
        config = config_from_dict(meta["config"], source=f"{path} (config)")
        if not (isinstance(meta["classes"], (list, tuple)) and all(isinstance(c, str) for c in meta["classes"])):
            raise TypeError(f"classes: expected a list of names, got {meta['classes']!r}")
        classes = tuple(meta["classes"])
        model = build_detector(
            config, payload["state_dict"], len(classes), meta["method"], meta["train_class_counts"]
        )
        return LoadedDetector(
            model=model,
            config=config,
            classes=classes,
            normaliser=Normaliser.from_dict(meta["normaliser"]),
            method=meta["method"],
            val_scores=np.asarray(meta["val_scores"], dtype=np.float32).reshape(-1, len(classes)),
            val_class_index=np.asarray(meta["val_class_index"], dtype=np.int64),
            frames=_frames_meta(meta.get("frames"), classes),
        )
    except ConfigError:
        raise  # names the file already (source)
    except (KeyError, TypeError, IndexError, AttributeError, RuntimeError, ValueError) as error:
        raise DataError(f"{path}: not a thce checkpoint or damaged ({_describe(error)})") from None


def _frames_meta(frames: Any, classes: tuple[str, ...]) -> dict[str, Any] | None:
    """A frame-level checkpoint's ``frames`` entry, checked: a positive ``hop_s`` and a threshold and a median
    filter for every class (TypeError/KeyError otherwise, reported as a damaged checkpoint)."""
    if frames is None:
        return None
    hop_s = float(frames["hop_s"])
    post = frames["post_processing"]
    if not hop_s > 0:
        raise ValueError(f"frames.hop_s: expected a positive number, got {hop_s}")
    for key in ("thresholds", "median_filter_s"):
        missing = [c for c in classes if c not in post[key]]
        if missing:
            raise KeyError(f"frames.post_processing.{key} lacks {', '.join(missing)}")
    return {"hop_s": hop_s, "post_processing": post}


def _describe(error: BaseException) -> str:
    """``"KeyError: 'meta'"``: the error's type and the first line of its message (torch's run over many lines)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def load_run(run_dir: str | Path, method: str = "proposed2") -> LoadedDetector:
    """The detector of ``method`` from a run directory (``RUN_DIR/checkpoints/METHOD.pt``); a :class:`DataError`
    if the checkpoint there records another method (a file copied in under another name)."""
    path = checkpoint_path(run_dir, method)
    loaded = load_checkpoint(path)
    if loaded.method != method:
        raise DataError(f"{path}: holds a {loaded.method} checkpoint (its recorded method), not {method}; was it "
                        f"copied in under another name? Use --method {loaded.method} or the run's own file")  # fmt: skip
    return loaded
