"""The ``thce`` command line: parse, call the library, print. Nothing in the library imports this module."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from typing import Any

from tqdm import tqdm

from thce.allocator import reuse_freed_memory
from thce.errors import ThceError

# Subcommand modules, one per mode, each with ``register(subparsers)`` setting ``func=handler`` (``handler(args) ->
# exit status``); listed in the order `thce --help` shows them. They import lazily, when the parser is built.
COMMAND_MODULES = ("thce.cli.experiment", "thce.cli.sweep", "thce.cli.report", "thce.cli.data", "thce.cli.toy", "thce.cli.detect")


class _TqdmHandler(logging.Handler):
    """Log lines that do not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def _setup_logging(verbose: int, quiet: bool = False) -> None:
    """``thce`` logs warnings; ``-v`` info, ``-vv`` debug. Per-epoch lines (``thce.training``) show unless ``-q``."""
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("thce")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    _route_warnings(handler, verbose)
    train = logging.getLogger("thce.training")
    if verbose == 0 and not quiet:  # per-epoch lines are the heartbeat of long runs
        train.setLevel(logging.INFO)
    elif quiet and verbose == 0:
        train.setLevel(logging.WARNING)
    else:
        train.setLevel(logging.NOTSET)


def _route_warnings(handler: logging.Handler, verbose: int) -> None:
    """Python warnings come from other packages (thce's own are log lines): pkg_resources' deprecation from the eval
    extra, matplotlib's missing glyphs for non-Latin file names, ... They are for developers: shown as log lines
    with ``-v``, kept out of the terminal otherwise. ``python -W`` / ``PYTHONWARNINGS`` still decide if given."""
    if sys.warnoptions:
        return
    if verbose:
        logging.captureWarnings(True)
        captured = logging.getLogger("py.warnings")
        captured.handlers[:] = [handler]
        captured.propagate = False
    else:
        warnings.simplefilter("ignore")


def _add_output_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``-v``/``-q``, before the subcommand (``top``) or after it (stored apart, then added to the top-level ones)."""
    prefix = "" if top else "sub_"
    parser.add_argument("-v", "--verbose", dest=f"{prefix}verbose", action="count", default=0,
                        help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", dest=f"{prefix}quiet", action="store_true",
                        help="no progress bars, no per-epoch log lines")  # fmt: skip


def _leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of ``parser``'s subcommands that have no subcommands themselves (``experiment``, ``data import
    folder``, ...)."""
    leaves = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                leaves += _leaf_parsers(sub) or [sub]
    return leaves


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thce", description="Rare acoustic event detection with imbalanced data (triple-header cross-entropy)."
    )
    parser.add_argument("--version", action=_Version,
                        help="print thce's and torch's versions (and the git commit of a checkout)")
    _add_output_flags(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for leaf in _leaf_parsers(parser):  # `thce experiment cfg.toml -q` as well as `thce -q experiment cfg.toml`
        _add_output_flags(leaf, top=False)
    return parser


class _Version(argparse.Action):
    """``--version``: print :func:`thce.machine.version_line` and exit (computed only when asked: it runs git)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from thce.machine import version_line

        print(version_line())
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    # activation maps of tens to hundreds of MB per batch: from the heap, reused, not mmapped afresh each batch
    # (thce.allocator; about 2x training throughput for the paper's CNN on CPU)
    reuse_freed_memory()
    args = build_parser().parse_args(argv)
    args.verbose += getattr(args, "sub_verbose", 0)
    args.quiet = args.quiet or getattr(args, "sub_quiet", False)
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args))
    except ThceError as error:
        print(f"thce: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("thce: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
