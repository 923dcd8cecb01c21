"""Exceptions for user mistakes: the CLI prints their message (which names the file and the problem), no traceback."""


class ThceError(Exception):
    """Base class of errors caused by user input (bad file, bad config value, ...)."""


class ConfigError(ThceError, ValueError):
    """A configuration key or value is wrong."""


class DataError(ThceError, ValueError):
    """A data file (audio, manifest, cache) is missing, unreadable or inconsistent."""


class OutputError(ThceError):
    """An output path cannot be written (not a directory, read-only, no permission, disk full, ...) or would
    replace something that is not ours to replace (a directory, a device, a file of another kind)."""
