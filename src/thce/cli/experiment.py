"""``thce experiment`` and ``thce demo``: run the methods of a config and write a run directory."""

from __future__ import annotations

import argparse
import logging
import os
from importlib import resources
from pathlib import Path

from thce.cli.progress import ProgressBars
from thce.errors import ThceError


def packaged_config(name: str) -> Path:
    """Path of a config shipped with the package (``configs/NAME.toml``)."""
    path = Path(str(resources.files("thce") / "configs" / f"{name}.toml"))
    if not path.is_file():
        raise ThceError(f"no packaged config named {name!r}")
    return path


def run(
    config_path: Path,
    out: Path,
    overrides: list[str],
    quiet: bool,
    seeds: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    jobs: int = 1,
) -> int:
    from thce.rundir import open_run

    if seeds < 1:
        raise ThceError(f"--seeds: must be >= 1, got {seeds}")
    if jobs < 1:
        raise ThceError(f"--jobs: must be >= 1, got {jobs}")
    if os.environ.get("RANK", "0") != "0":  # other torchrun ranks: rank 0 holds the folder
        if jobs > 1:
            raise ThceError("--jobs: under torchrun each method is spread over the ranks; leave --jobs out")
        return _run(config_path, out, overrides, quiet, seeds, resume, overwrite)
    # at once, before torch is imported: a second process, or a run in the way, is refused
    with open_run(out, resume=resume, overwrite=overwrite, config_path=config_path):
        return _run(config_path, out, overrides, quiet, seeds, resume, overwrite, jobs)


def _run(
    config_path: Path,
    out: Path,
    overrides: list[str],
    quiet: bool,
    seeds: int,
    resume: bool,
    overwrite: bool,
    jobs: int = 1,
) -> int:
    from thce.config import load_config
    from thce.devices import check_device
    from thce.distributed import init_distributed, shutdown
    from thce.experiment import run_experiment, run_seeds
    from thce.report import eer_table_markdown, event_table_markdown, seeds_table_markdown

    config = load_config(config_path, overrides)
    device_set = any(o.split("=", 1)[0].strip() == "train.device" for o in overrides)
    check_device(config.train.device, source="--set train.device" if device_set else f"{config_path}: train.device",
                 allow_auto=True)  # fmt: skip
    dist = init_distributed(config.train.device)  # under torchrun: join the job (one process per device)
    if not dist.is_main:  # one rank reports
        for handler in logging.getLogger("thce").handlers:
            handler.setLevel(logging.WARNING)
    with ProgressBars(enabled=not quiet and dist.is_main) as bars:
        if seeds == 1:
            results = run_experiment(
                config, out, progress=bars, resume=resume, overwrite=overwrite, dist=dist, jobs=jobs
            )
        else:
            results = run_seeds(
                config, out, seeds=seeds, progress=bars, resume=resume, overwrite=overwrite, dist=dist, jobs=jobs
            )
    shutdown(dist)  # not on errors: a failed rank exits at once and torchrun stops the others
    if not dist.is_main:
        return 0
    print(eer_table_markdown(results))
    events = event_table_markdown(results)
    if events:
        print(events)
    if seeds > 1:
        print(seeds_table_markdown(results))
    print(f"\nRun directory: {out} ({_listing(Path(out))})")
    return 0


def _listing(run_dir: Path) -> str:
    """What the run directory holds at its top level, in the order a user looks for it (``seed_N/`` folders of a
    ``--seeds`` run summarised as one entry)."""
    from thce.rundir import LISTING

    shown = [f"{name}/" if (run_dir / name).is_dir() else name for name in LISTING if (run_dir / name).exists()]
    seeds = sorted(p.name for p in run_dir.glob("seed_*") if p.is_dir())
    if seeds:
        shown.append(f"{seeds[0]}/ .. {seeds[-1]}/ (one run each)" if len(seeds) > 1 else f"{seeds[0]}/")
    return ", ".join(shown)


def register(subparsers: argparse._SubParsersAction) -> None:
    exp = subparsers.add_parser("experiment", help="run the methods of a config; write a run directory")
    exp.add_argument("config", type=Path, help="experiment config (TOML)")
    exp.add_argument("--out", type=Path, required=True, help="run directory")
    exp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set embedding.alpha=8 (repeatable)")
    exp.add_argument("--seeds", type=int, default=1,
                     help="repeat with seeds seed..seed+N-1 (own data, split, init); report mean, std, bootstrap CI")
    exp.add_argument("--resume", action="store_true",
                     help="continue a killed run in --out after its last completed epoch (same config)")
    exp.add_argument("--overwrite", action="store_true",
                     help="replace the run in --out (results, checkpoints); without it or --resume, a directory "
                          "holding a run is refused")
    exp.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="train the methods in N processes side by side (same results; on a CPU two processes "
                          "of one thread beat one of two); threads per process: train.num_threads, else the cores "
                          "shared out")
    exp.set_defaults(
        func=lambda args: run(
            args.config, args.out, args.overrides, args.quiet, args.seeds, args.resume, args.overwrite, args.jobs
        )
    )

    demo = subparsers.add_parser("demo", help="the paper's comparison on built-in synthetic scenes (CPU, minutes)")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory (default: runs/demo)")
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a value of the demo config")
    demo.add_argument("--resume", action="store_true", help="continue a killed demo run")
    demo.add_argument("--overwrite", action="store_true", help="replace an earlier demo run in --out")
    demo.set_defaults(
        func=lambda args: run(
            packaged_config("demo"), args.out, args.overrides, args.quiet, resume=args.resume, overwrite=args.overwrite
        )
    )
