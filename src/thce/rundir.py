"""What a run directory holds, checked before anything heavy (torch) is imported, so mistakes fail at once:
a new run refused over an old one (``thce experiment``), and the checkpoint ``thce detect``/``export`` look for."""

from __future__ import annotations

from pathlib import Path

from thce.errors import ConfigError, DataError

#: What a run directory holds once a run started in it (``seed_N/``: a ``--seeds`` run).
RUN_MARKERS = ("results.json", "checkpoints", "metrics.csv", "config.toml")
#: What a new run replaces, with ``overwrite`` (``checkpoints/*.pt`` too; caches and synthetic data are kept).
RUN_OUTPUTS = ("results.json", "scores.npz", "report.md", "det.png", "embedding.png", "skipped.csv")


def seed_dirs(run_dir: Path) -> list[Path]:
    """The ``seed_N/`` run directories of a ``--seeds`` run, in seed order."""
    found = [p for p in run_dir.glob("seed_*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def run_markers(out_dir: Path, *, ignore: tuple[str, ...] = ()) -> list[str]:
    """What in ``out_dir`` shows a run started there (:data:`RUN_MARKERS` but ``ignore``, ``seed_N/`` folders)."""
    found = [name for name in RUN_MARKERS if name not in ignore and (out_dir / name).exists()]
    return found + [p.name + "/" for p in seed_dirs(out_dir)]


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
    written = out_dir / "config.toml"
    if config_path is not None and written.is_file() and Path(config_path).is_file():
        if written.samefile(config_path) and not run_markers(out_dir, ignore=("config.toml",)):
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
    for stale in (out_dir / "checkpoints").glob("*.pt"):
        stale.unlink()


def checkpoint_path(run_dir: str | Path, method: str) -> Path:
    """``RUN_DIR/checkpoints/METHOD.pt`` if it exists; otherwise a :class:`DataError` saying what a run directory
    holds and what was found instead (no folder, a ``--seeds`` run's ``seed_N/``, the checkpoints there are)."""
    run_dir = Path(run_dir)
    path = run_dir / "checkpoints" / f"{method}.pt"
    if path.is_file():
        return path
    if path.exists():
        raise DataError(f"{path}: not a file (a checkpoint is the file `thce experiment` saved there)")
    if not run_dir.exists():
        raise DataError(f"{run_dir}: no such run directory (expected the --out folder of `thce experiment`)")
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: not a run directory but a file (expected the --out folder of `thce experiment`)")
    seeds = seed_dirs(run_dir)
    if seeds and not (run_dir / "checkpoints").is_dir():
        with_method = [p for p in seeds if (p / "checkpoints" / f"{method}.pt").is_file()]
        listed = ", ".join(f"{p.name}/" for p in seeds)
        hint = f"pass one of them, e.g. {with_method[0]}" if with_method else f"none holds checkpoints/{method}.pt yet"
        raise DataError(f"{run_dir}: a --seeds run; its checkpoints are in {listed}: {hint}")
    if not (run_dir / "checkpoints").is_dir():
        raise DataError(f"{run_dir}: no checkpoints/ folder (expected a run directory of `thce experiment`, "
                        f"which saves checkpoints/<method>.pt)")  # fmt: skip
    available = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt") if p.is_file())
    if not available:
        raise DataError(f"{path}: not found; {run_dir / 'checkpoints'} holds no checkpoint yet (the run stopped "
                        f"before a method finished: continue it with `thce experiment ... --out {run_dir} --resume`)")
    raise DataError(f"{path}: no checkpoint for method {method!r}; this run has: {', '.join(available)} (--method)")
