"""The ``thce`` command line: parse, call the library, print. Nothing here is imported by the library."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import resources
from pathlib import Path

from tqdm import tqdm

from thce.errors import ThceError


class _Bars:
    """Turns the library's ``progress(description, done, total)`` calls into one tqdm bar at a time."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.desc = ""

    def __call__(self, desc: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None or desc != self.desc:
            self.close()
            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr, disable=None)
            self.desc = desc
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def _setup_logging(verbose: int) -> None:
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("thce")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    if verbose == 0:  # per-epoch lines are the demo's heartbeat
        logging.getLogger("thce.train").setLevel(logging.INFO)


def packaged_config(name: str) -> Path:
    """Path of a config shipped with the package (``configs/NAME.toml``)."""
    path = Path(str(resources.files("thce") / "configs" / f"{name}.toml"))
    if not path.is_file():
        raise ThceError(f"no packaged config named {name!r}")
    return path


def _run(config_path: Path, out: Path, overrides: list[str], quiet: bool) -> int:
    from thce.config import load_config
    from thce.experiment import run_experiment
    from thce.report import eer_table_markdown

    config = load_config(config_path, overrides)
    bars = _Bars(enabled=not quiet)
    try:
        results = run_experiment(config, out, progress=bars)
    finally:
        bars.close()
    print(eer_table_markdown(results))
    print(f"\nRun directory: {out} (results.json, report.md, det.png, metrics.csv, config.toml, checkpoints/)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="thce", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    exp = sub.add_parser("experiment", help="run the methods of a config; write a run directory")
    exp.add_argument("config", type=Path, help="experiment config (TOML)")
    exp.add_argument("--out", type=Path, required=True, help="run directory")
    exp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set embedding.alpha=8 (repeatable)")

    demo = sub.add_parser("demo", help="the paper's comparison on built-in synthetic scenes (CPU, minutes)")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory (default: runs/demo)")
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        if args.command == "experiment":
            return _run(args.config, args.out, args.overrides, args.quiet)
        if args.command == "demo":
            return _run(packaged_config("demo"), args.out, args.overrides, args.quiet)
    except ThceError as error:
        print(f"thce: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("thce: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
