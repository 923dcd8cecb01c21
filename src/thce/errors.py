"""Exceptions for user mistakes: the CLI prints their message (which names the file and the problem), no traceback."""

from __future__ import annotations

import os


class ThceError(Exception):
    """Base class of errors caused by user input (bad file, bad config value, ...)."""


class ConfigError(ThceError, ValueError):
    """A configuration key or value is wrong."""


class DataError(ThceError, ValueError):
    """A data file (audio, manifest, cache) is missing, unreadable or inconsistent."""


class AudioError(DataError):
    """An audio file cannot be used. ``str(error)`` is ``"<path>: <problem>"``; ``problem`` alone is what lists of
    skipped files show (the same words wherever the file was opened, see :mod:`thce.audio.read`)."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"{os.fspath(path)}: {problem}")
        self.path = os.fspath(path)
        self.problem = problem

    def __reduce__(self) -> tuple[type[AudioError], tuple[str, str]]:  # pickles (feature workers send errors)
        return (type(self), (self.path, self.problem))


class OutputError(ThceError):
    """An output path cannot be written (not a directory, read-only, no permission, disk full, ...) or would
    replace something that is not ours to replace (a directory, a device, a file of another kind)."""
