"""The run directory: the one place that knows its layout (the name of every file in it), what marks a run
started and finished, and how a run folder is opened (locked, refused over another run, resumed). Everything here
is checked before anything heavy (torch) is imported, so mistakes fail at once: a new run refused over an old one
(``thce experiment``), and the checkpoint ``thce detect``/``export`` look for.

Layout of ``RUN_DIR`` (``thce experiment --out``)::

    config.toml       the resolved config (paths absolute): written once the data is ready, so a run that failed
                      before training leaves nothing that blocks the corrected rerun
    metrics.csv       one row per epoch
    checkpoints/      <method>.pt, and resume/ (per-stage state of an unfinished run, Algorithm 1's clusterings)
    val_scores.npz, scores.npz, clips.json, results.json   written at the end, results.json last
    report.md, det.png, embedding.png, skipped.csv, data/ (synthetic clips), cache/ (features)
    seed_<s>/         the runs of a --seeds run (the folder then holds their summary)
    .thce.lock        while a process writes the folder (:mod:`thce.locks`)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thce.errors import ConfigError, DataError
from thce.io import read_json, write_json
from thce.locks import folder_lock, taking_turns

if TYPE_CHECKING:
    from thce.config import ExperimentConfig

CONFIG = "config.toml"
METRICS = "metrics.csv"
CHECKPOINTS = "checkpoints"
RESUME = "checkpoints/resume"
#: In :data:`RESUME`: the seconds each stage took so far (a resumed run adds its own, so ``timing_s`` stays the total).
SPENT = "timing_s.json"
RESULTS = "results.json"
SCORES = "scores.npz"
VAL_SCORES = "val_scores.npz"
CLIPS = "clips.json"
REPORT = "report.md"
DET_FIGURE = "det.png"
EMBEDDING_FIGURE = "embedding.png"
SKIPPED = "skipped.csv"
#: A frame-level run's per-clip event counts of its test clips (:func:`thce.detection.frame_events.clip_counts`).
EVENT_COUNTS = "event_counts.npz"

#: What a run directory holds once a run started in it (``seed_N/``: a ``--seeds`` run).
RUN_MARKERS = (RESULTS, CHECKPOINTS, METRICS, CONFIG)
#: What a new run replaces, with ``overwrite`` (``checkpoints/*.pt`` too; caches and synthetic data are kept).
RUN_OUTPUTS = (RESULTS, SCORES, VAL_SCORES, EVENT_COUNTS, CLIPS, REPORT, DET_FIGURE, EMBEDDING_FIGURE, SKIPPED)
#: Files of a finished run (``results.json`` is written last of them).
FINISHED_FILES = (VAL_SCORES, SCORES, CLIPS, RESULTS)
#: What a user looks for in a run directory, in that order (``thce experiment`` lists them at the end).
LISTING = (RESULTS, REPORT, DET_FIGURE, EMBEDDING_FIGURE, METRICS, CONFIG, SCORES, CHECKPOINTS, SKIPPED)

#: Config keys that say where and how fast a run computes, not what: runs that differ only in them are the same
#: experiment (a sweep points ``data.cache_dir`` at its shared cache; parallel lanes set ``train.num_threads``).
ENVIRONMENT_KEYS = ("data.cache_dir", "train.num_threads")


def seed_dirs(run_dir: Path) -> list[Path]:
    """The ``seed_N/`` run directories of a ``--seeds`` run, in seed order."""
    found = [p for p in run_dir.glob("seed_*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def run_markers(out_dir: Path, *, ignore: tuple[str, ...] = ()) -> list[str]:
    """What in ``out_dir`` shows a run started there (:data:`RUN_MARKERS` but ``ignore``, ``seed_N/`` folders
    holding a run)."""
    found = [name for name in RUN_MARKERS if name not in ignore and (out_dir / name).exists()]
    return found + [p.name + "/" for p in seed_dirs(out_dir) if run_markers(p)]


def finished_run(run_dir: Path, *, with_config: bool = False) -> bool:
    """Whether ``run_dir`` holds a finished run's :data:`FINISHED_FILES` (and its config.toml, ``with_config``)."""
    names = (*FINISHED_FILES, CONFIG) if with_config else FINISHED_FILES
    return all((run_dir / name).is_file() for name in names)


@contextmanager
def open_run(
    out_dir: str | Path, *, resume: bool, overwrite: bool, config_path: str | Path | None = None
) -> Iterator[Path]:
    """Hold ``out_dir`` for this process (:func:`thce.locks.folder_lock`; a second process is refused at once)
    and check that a run may start there (:func:`check_new_run`), for the duration of the block."""
    with folder_lock(out_dir) as folder:
        check_new_run(folder, resume=resume, overwrite=overwrite, config_path=config_path)
        yield folder


def check_new_run(
    out_dir: str | Path, *, resume: bool, overwrite: bool, config_path: str | Path | None = None
) -> None:
    """Refuse to start a run in a directory that holds one (finished or not) unless ``resume`` or ``overwrite``,
    and to take ``config_path`` from ``out_dir/config.toml`` where no run is (the run writes its resolved config
    there, which would replace the user's file).

    Raises:
        ConfigError: both flags, a run found without either (the message says which flag does what), or the
            config read from where the run writes its own.
        OutputError: ``out_dir`` cannot be written (not a directory, read-only, ...).
    """
    from thce.io import check_output_path

    out_dir = Path(out_dir)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite: choose one (continue the run in the directory, or replace it)")
    check_output_path(out_dir, directory=True)
    written = out_dir / CONFIG
    if config_path is not None and written.is_file() and Path(config_path).is_file():
        if written.samefile(config_path) and not run_markers(out_dir, ignore=(CONFIG,)):
            raise ConfigError(f"{config_path}: is where the run in {out_dir} writes its resolved config, which would "
                              "replace it; copy the config elsewhere or choose another --out")  # fmt: skip
    if resume or overwrite or not out_dir.is_dir():
        return
    found = run_markers(out_dir)
    if found:
        raise ConfigError(
            f"{out_dir}: holds a run ({', '.join(found)}); pass --resume to continue it, --overwrite to replace it, "
            "or choose another --out"
        )


def clear_run_outputs(out_dir: Path) -> None:
    """Remove what an earlier run wrote that a new run replaces (results, reports, checkpoints)."""
    for name in RUN_OUTPUTS:
        (out_dir / name).unlink(missing_ok=True)
    for stale in (out_dir / CHECKPOINTS).glob("*.pt"):
        stale.unlink()


def checkpoint_path(run_dir: str | Path, method: str) -> Path:
    """``RUN_DIR/checkpoints/METHOD.pt`` if it exists; otherwise a :class:`DataError` saying what a run directory
    holds and what was found instead (no folder, a ``--seeds`` run's ``seed_N/``, the checkpoints there are)."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINTS / f"{method}.pt"
    if path.is_file():
        return path
    if path.exists():
        raise DataError(f"{path}: not a file (a checkpoint is the file `thce experiment` saved there)")
    if not run_dir.exists():
        raise DataError(f"{run_dir}: no such run directory (expected the --out folder of `thce experiment`)")
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: not a run directory but a file (expected the --out folder of `thce experiment`)")
    seeds = seed_dirs(run_dir)
    if seeds and not (run_dir / CHECKPOINTS).is_dir():
        with_method = [p for p in seeds if (p / CHECKPOINTS / f"{method}.pt").is_file()]
        listed = ", ".join(f"{p.name}/" for p in seeds)
        hint = f"pass one of them, e.g. {with_method[0]}" if with_method else f"none holds checkpoints/{method}.pt yet"
        raise DataError(f"{run_dir}: a --seeds run; its checkpoints are in {listed}: {hint}")
    if not (run_dir / CHECKPOINTS).is_dir():
        raise DataError(f"{run_dir}: no checkpoints/ folder (expected a run directory of `thce experiment`, "
                        f"which saves checkpoints/<method>.pt)")  # fmt: skip
    available = sorted(p.stem for p in (run_dir / CHECKPOINTS).glob("*.pt") if p.is_file())
    if not available and (run_dir / RESULTS).is_file():
        trained = sorted(p.stem for p in (run_dir / CHECKPOINTS).iterdir() if p.is_file())
        raise DataError(f"{path}: not found; the run in {run_dir} finished without training a network (it saved "
                        f"{', '.join(trained) or 'no model'}), and detect and export need one: run a config whose "
                        "methods include one, e.g. proposed2")  # fmt: skip
    if not available:
        raise DataError(f"{path}: not found; {run_dir / 'checkpoints'} holds no checkpoint yet (the run stopped "
                        f"before a method finished: continue it with `thce experiment ... --out {run_dir} --resume`)")
    raise DataError(f"{path}: no checkpoint for method {method!r}; this run has: {', '.join(available)} (--method)")


# ------------------------------------------------------------------- whether two runs are the same experiment


def experiment_settings(config: ExperimentConfig) -> dict[str, Any]:
    """The config as a dict without :data:`ENVIRONMENT_KEYS`: equal for runs of the same experiment. An unset
    setting that falls back to another reads as that one (a stage's ``learning_rate`` as ``train.learning_rate``,
    ``detector.head_only_selection`` as ``detector.selection``), so a run made before such a key was varied matches
    the variant that sets it to the value the run trained with."""
    table = config.to_dict()
    for key in ENVIRONMENT_KEYS:
        section, name = key.split(".")
        table.get(section, {}).pop(name, None)
    run_rate = table["train"]["learning_rate"]
    for section, values in table.items():
        if section in ("train", "model") or not isinstance(values, dict):
            continue  # model.encoder_learning_rate: None means the stage's rate, not train's
        for name, value in values.items():
            if name.endswith("learning_rate") and value is None:
                values[name] = run_rate
    if table["detector"].get("head_only_selection") is None:
        table["detector"]["head_only_selection"] = table["detector"]["selection"]
    return table


def same_clips(run_dirs: Sequence[Path], split: str) -> str | None:
    """``None`` when the runs scored the same ``split`` clips in the same order, else why not (one line).

    Equal paths in ``clips.json`` are the same clips. Synthetic clips written by different runs have different
    paths; they are the same clips when the runs' configs (``config.toml``) have the same synthetic data -- equal
    ``synth`` and ``data`` settings (the cache folder aside) and seed -- and the names relative to each run's clip
    folder (the common folder of its clips) agree.
    """
    from thce.config import load_config
    clips = [read_json(d / CLIPS, what="clip list") for d in run_dirs]
    if all(c[split] == clips[0][split] for c in clips[1:]):
        return None
    different = f"the runs scored different {split} clips (clips.json)"
    configs = [d / CONFIG for d in run_dirs]
    if not all(path.is_file() for path in configs):
        return different
    data = [_synthetic_data(load_config(path)) for path in configs]
    if data[0] is None or any(d != data[0] for d in data[1:]):
        return different
    relative = [_relative_clips(c, split) for c in clips]
    return None if all(r == relative[0] for r in relative[1:]) else different


def _synthetic_data(config: ExperimentConfig) -> dict[str, Any] | None:
    """What fixes a run's synthetic clips (``synth`` and ``data`` settings, seed); ``None`` for real data."""
    if config.data.source != "synth":
        return None
    table = experiment_settings(config)
    return {"seed": table["seed"], "synth": table["synth"], "data": table["data"]}


def _relative_clips(clips: Mapping[str, Sequence[str]], split: str) -> list[str]:
    """The ``split`` paths of a ``clips.json`` relative to the common folder of all its paths."""
    every = [p for paths in clips.values() for p in paths]
    root = os.path.commonpath(every) if len(every) > 1 else os.path.dirname(every[0]) if every else ""
    return [os.path.relpath(p, root) for p in clips[split]]


def read_spent(resume_dir: Path) -> dict[str, float]:
    """Seconds per stage that earlier processes of a run spent (:data:`SPENT`; empty when there were none)."""
    path = Path(resume_dir) / SPENT
    if not path.is_file():
        return {}
    return {str(stage): float(seconds) for stage, seconds in read_json(path, what="stage timing").items()}


def save_spent(resume_dir: Path, timing: dict[str, float]) -> None:
    """Record ``timing`` (seconds per stage, totals so far) for a later resume of the run, over what is recorded of
    other stages (the worker processes of ``thce experiment --jobs`` each time their own)."""
    resume_dir = Path(resume_dir)
    if resume_dir.is_dir():
        with taking_turns(resume_dir / f"{SPENT}.lock"):
            totals = {**read_spent(resume_dir), **timing}
            write_json(resume_dir / SPENT, {stage: round(seconds, 3) for stage, seconds in totals.items()})
