"""The ``thce`` command line: parse, call the library, print. Nothing in the library imports this module."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from tqdm import tqdm

from thce.errors import ThceError

# Subcommand modules, one per mode, each with ``register(subparsers)`` setting ``func=handler`` (``handler(args) ->
# exit status``); listed in the order `thce --help` shows them. They import lazily, when the parser is built.
COMMAND_MODULES = ("thce.cli.experiment", "thce.cli.sweep", "thce.cli.report", "thce.cli.data", "thce.cli.toy", "thce.cli.detect")


class _TqdmHandler(logging.Handler):
    """Log lines that do not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def _setup_logging(verbose: int) -> None:
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("thce")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    if verbose == 0:  # per-epoch lines are the heartbeat of long runs
        logging.getLogger("thce.train").setLevel(logging.INFO)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thce", description="Rare acoustic event detection with imbalanced data (triple-header cross-entropy)."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Training allocates activation tensors of hundreds of MB per batch; glibc serves them with fresh mmaps, so
    # every batch page-faults them in again, 4 KiB at a time. PyTorch's own switch backs such allocations with
    # transparent huge pages (512x fewer faults per byte). Read once, at torch's first allocation.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
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
