"""Export a trained detector for deployment: ONNX or TorchScript, checked against PyTorch.

What the exported model computes is :class:`thce.detection.inference.LogMelScores`, the module ``thce detect``
scores windows with (normalisation is *inside*, so a deployment needs only the log-mel front end):

- ``inputs="logmel"`` (ONNX and TorchScript): ``logmel`` float32 ``(batch, frames, n_mels)``, natural-log mel
  energies exactly as :class:`thce.audio.LogMel` computes them for one window of the training clip length (1000 x
  64 for the paper's 10 s clips) -> training-split normalisation ``(x - mean) / std`` -> network -> ``scores``
  float32 ``(batch, L)``, sigmoid outputs in [0, 1], one column per class. The batch axis is dynamic, the others
  fixed.
- ``inputs="audio"`` (TorchScript only): ``audio`` float32 ``(batch, samples)``, mono at the model's rate (16 kHz),
  exactly one window long (``features.duration_s * sample_rate_hz`` samples) -> the same log-mel -> as above.
  ONNX has no counterpart because ``torch.stft`` does not export to every ONNX runtime in the same way.

A JSON file beside the model (``<out>.json``) records the input shape and features, the classes, the normaliser,
the validation thresholds (EER per class) and the measured parity. :func:`export_run` checks the file it wrote
against the PyTorch model on log-mel windows of noise and tones and raises when the largest absolute difference
exceeds ``PARITY_TOLERANCE`` (TorchScript always; ONNX when onnxruntime is installed).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from thce.audio.logmel import LogMel, LogMelConfig
from thce.detection.inference import AudioScores, logmel_scores
from thce.detection.outputs import check_export_out
from thce.detection.thresholds import class_thresholds
from thce.errors import ConfigError, ThceError
from thce.io import atomic_write, output_error, write_json

log = logging.getLogger(__name__)

INPUTS = ("logmel", "audio")
#: Largest accepted absolute difference between exported and PyTorch scores.
PARITY_TOLERANCE = 1e-4


@dataclass
class ExportResult:
    """What :func:`export_run` wrote: ``path`` (model), ``metadata_path`` (JSON), ``inputs`` (logmel/audio),
    ``max_abs_diff`` (parity against PyTorch, ``None`` if not checked) and the ``metadata`` itself."""

    path: Path
    metadata_path: Path
    inputs: str
    max_abs_diff: float | None
    metadata: dict[str, Any]


def scoring_module(loaded: Any, *, inputs: str = "logmel") -> nn.Module:
    """The eval-mode module to export for a :class:`thce.checkpoint.LoadedDetector` (see the module docstring):
    :class:`thce.detection.inference.LogMelScores`, the module detection scores windows with, with the log-mel in front
    (:class:`thce.detection.inference.AudioScores`) for ``inputs="audio"``."""
    if inputs not in INPUTS:
        raise ConfigError(f"inputs: expected one of {', '.join(INPUTS)}, got {inputs!r}")
    scores = logmel_scores(loaded)
    module: nn.Module = scores if inputs == "logmel" else AudioScores(LogMel(loaded.config.features), scores)
    return module.eval()


def example_inputs(features: LogMelConfig, *, inputs: str, batch: int = 3, seed: int = 0) -> Tensor:
    """Realistic test inputs: windows of noise at different levels plus tones, as audio ``(batch, samples)`` or
    log-mel ``(batch, frames, n_mels)``."""
    gen = torch.Generator().manual_seed(seed)
    n = features.clip_samples
    t = torch.arange(n, dtype=torch.float32) / features.sample_rate_hz
    audio = torch.stack(
        [
            10.0 ** (-1.0 - i) * torch.randn(n, generator=gen) + 0.3 * torch.sin(2 * torch.pi * (300.0 + 700.0 * i) * t)
            for i in range(batch)
        ]
    )
    if inputs == "audio":
        return audio
    with torch.inference_mode():
        return LogMel(features)(audio).clone()


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """torch's exporters print progress and warn about tracing; the library must not print (they go to the log)."""
    buffer = io.StringIO()
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buffer):
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_logger.setLevel(level)
        if buffer.getvalue().strip():
            log.debug("exporter output:\n%s", buffer.getvalue())


def export_torchscript(module: nn.Module, example: Tensor, out: str | os.PathLike) -> Path:
    """Trace ``module`` on ``example`` and save it atomically, without debug records (:func:`_without_debug_info`);
    returns the path."""
    with _quiet_exporters(), torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
    archive = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(traced, archive)
    with atomic_write(out, "wb") as handle:
        handle.write(_without_debug_info(archive.getvalue()))
    return Path(out)


def _without_debug_info(archive: bytes) -> bytes:
    """A TorchScript archive without its ``*.debug_pkl`` records: the source ranges of the traced code, which name
    the exporting machine's files by absolute path (site-packages, the thce checkout). ``torch.jit.load`` does not
    need them; errors inside the model then come without Python source lines. Every other record is copied as is."""
    source = zipfile.ZipFile(io.BytesIO(archive))
    stripped = io.BytesIO()
    with zipfile.ZipFile(stripped, "w", compression=zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            if not info.filename.endswith(".debug_pkl"):
                target.writestr(info, source.read(info))
    return stripped.getvalue()


def export_onnx(module: nn.Module, example: Tensor, out: str | os.PathLike, *, input_name: str = "logmel") -> Path:
    """Export ``module`` with a dynamic batch axis (torch.export-based exporter, needs onnx and onnxscript) and
    save it atomically; returns the path."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ThceError(f"ONNX export needs the onnx and onnxscript packages ({error}): pip install 'thce[export]'") from None
    out = Path(out)

    def failed(error: Exception) -> ThceError:
        return ThceError(f"{out}: ONNX export failed ({type(error).__name__}: {error}); try --format torchscript")

    try:
        with _quiet_exporters(), torch.no_grad():
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                input_names=[input_name],
                output_names=["scores"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
    except Exception as error:  # torch.export / onnxscript report unsupported operators in many exception types
        raise failed(error) from error
    # the exporter writes a path: stage it in a private folder, then copy it into ``out`` as every output is written
    with tempfile.TemporaryDirectory(prefix="thce-onnx-", ignore_cleanup_errors=True) as staging:
        staged = Path(staging) / "model.onnx"
        try:
            with _quiet_exporters():
                _drop_stack_traces(program)
                program.save(str(staged))
        except OSError as error:  # the temporary folder is full or read-only: say so, not "try torchscript"
            raise output_error(staged, error) from None
        except Exception as error:
            raise failed(error) from error
        copy_into(staged, out)
    return out


#: Node metadata of torch's ONNX exporter that holds the Python stack trace of each operator: absolute paths of the
#: exporting machine's files (home folder, environment), which a model file meant to be shared should not carry.
_STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"


def _drop_stack_traces(program: Any) -> None:
    """Remove :data:`_STACK_TRACE_KEY` from every node (graph and functions) of the ``onnx_ir.Model`` of an
    exported ``torch.onnx.ONNXProgram``."""
    model = getattr(program, "model", None)
    if model is None:
        return
    graphs = [model.graph, *model.functions.values()]
    for graph in graphs:
        for node in graph.all_nodes():
            node.metadata_props.pop(_STACK_TRACE_KEY, None)


def copy_into(source: Path, out: str | os.PathLike) -> Path:
    """Copy the file ``source`` to ``out`` with :func:`thce.io.atomic_write`; returns ``out``."""
    with open(source, "rb") as reader, atomic_write(out, "wb") as handle:
        shutil.copyfileobj(reader, handle)
    return Path(out)


def run_exported(path: str | os.PathLike, fmt: str, x: Tensor) -> np.ndarray | None:
    """Scores of an exported model on ``x``; ``None`` for ONNX when onnxruntime is not installed."""
    if fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream, still supported
            return torch.jit.load(str(path))(x).numpy()
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def export_run(
    run_dir: str | os.PathLike,
    *,
    fmt: str | None = None,
    out: str | os.PathLike,
    method: str = "proposed2",
    inputs: str = "logmel",
    overwrite: bool = False,
) -> ExportResult:
    """Export the ``method`` checkpoint of ``run_dir`` as ``fmt`` (``onnx`` or ``torchscript``; default: from the
    extension of ``out``) to ``out``, write ``<out>.json`` beside it and check parity with PyTorch (module
    docstring). The model is checked before it is written; an existing file that is not such a model (or its
    metadata) is only replaced with ``overwrite``.

    Raises:
        ConfigError: unknown format or input, an extension of the other format, or raw-audio input for ONNX.
        DataError: no such run or checkpoint.
        OutputError: ``out`` cannot be written, or holds a file of another kind (without ``overwrite``).
        ThceError: a missing exporter package, or the exported model disagrees with PyTorch.
    """
    from thce.checkpoint import load_run

    fmt = check_export_out(out, fmt, overwrite=overwrite)
    if inputs not in INPUTS:
        raise ConfigError(f"input: expected one of {', '.join(INPUTS)}, got {inputs!r}")
    if fmt == "onnx" and inputs == "audio":
        raise ConfigError("raw-audio input is exported as TorchScript only; ONNX models take log-mel windows")
    out = Path(out)
    loaded = load_run(run_dir, method)
    module = scoring_module(loaded, inputs=inputs)
    features = loaded.config.features
    example = example_inputs(features, inputs=inputs, batch=2)
    with tempfile.TemporaryDirectory(prefix="thce-export-", ignore_cleanup_errors=True) as staging:
        staged = Path(staging) / out.name  # checked here, then copied: a model that fails parity is not written
        if fmt == "torchscript":
            export_torchscript(module, example, staged)
        else:
            export_onnx(module, example, staged, input_name=inputs)
        check = example_inputs(features, inputs=inputs, batch=3, seed=1)  # another batch size than the example
        with torch.no_grad():
            expected = module(check).numpy()
        got = run_exported(staged, fmt, check)
        max_abs_diff = None if got is None else float(np.max(np.abs(got - expected)))
        if max_abs_diff is not None and not max_abs_diff < PARITY_TOLERANCE:
            raise ThceError(
                f"{out}: the exported model differs from PyTorch by up to {max_abs_diff:.2e} "
                f"(tolerance {PARITY_TOLERANCE:g}); please report this; nothing was written"
            )
        copy_into(staged, out)
    try:
        thresholds = class_thresholds(
            val_scores=loaded.val_scores, val_class_index=loaded.val_class_index, classes=loaded.classes, rule="eer"
        )
        eer_thresholds: dict[str, float] | None = {c: float(t) for c, t in zip(loaded.classes, thresholds)}
    except ThceError:
        eer_thresholds = None
    if inputs == "logmel":
        input_spec = {
            "name": "logmel",
            "shape": ["batch", features.num_frames, features.n_mels],
            "dtype": "float32",
            "description": "natural-log mel energies of one window (thce.audio.LogMel, features below); "
            "not normalised: the model applies the training normalisation itself",
        }
    else:
        input_spec = {
            "name": "audio",
            "shape": ["batch", features.clip_samples],
            "dtype": "float32",
            "description": f"mono audio at {features.sample_rate_hz} Hz, one window of {features.duration_s:g} s",
        }
    metadata = {
        "format": fmt,
        "method": method,
        "run_dir": os.fspath(run_dir),
        "classes": list(loaded.classes),
        "input": input_spec,
        "output": {"name": "scores", "shape": ["batch", len(loaded.classes)], "dtype": "float32",
                   "description": "sigmoid score per class, in [0, 1]"},
        "features": features.to_dict(),
        "normaliser": loaded.normaliser.to_dict(),
        "eer_thresholds": eer_thresholds,
        "parity_max_abs_diff": max_abs_diff,
    }
    if loaded.frames is not None:  # a frame-level run: a score per output frame, and what validation chose for events
        hop_s = loaded.frames["hop_s"]
        frames_out = round(features.duration_s / hop_s)
        metadata["output"] = {
            "name": "scores", "shape": ["batch", frames_out, len(loaded.classes)], "dtype": "float32",
            "description": f"sigmoid score per class of each output frame ({hop_s:g} s each, from the window's start), "
            "in [0, 1]",
        }  # fmt: skip
        metadata["frames"] = {"hop_s": hop_s, "post_processing": loaded.frames["post_processing"]}
    metadata_path = write_json(out.with_name(out.name + ".json"), metadata)
    log.info("exported %s %s to %s (parity %s)", method, fmt, out, max_abs_diff)
    return ExportResult(out, metadata_path, inputs, max_abs_diff, metadata)
