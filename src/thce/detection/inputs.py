"""The audio inputs of ``thce detect``: files, folders (searched recursively for audio extensions) and globs."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from thce.audio.read import AUDIO_EXTENSIONS
from thce.errors import ConfigError


def expand_inputs(items: Sequence[str | os.PathLike]) -> list[str]:
    """Each item, in order: a file as given (whatever its extension: it is checked when opened); a folder -> its
    audio files (:data:`~thce.audio.read.AUDIO_EXTENSIONS`, any case) at any depth, sorted, hidden ones skipped;
    anything else with ``*``, ``?`` or ``[`` -> the glob's matches (``**`` recursive), sorted, folders expanded as
    above. Duplicates are kept once.

    Raises:
        ConfigError: a folder or glob that holds no audio file, naming it.
    """
    out: list[str] = []
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            found = _audio_in(path)
            if not found:
                raise ConfigError(f"{text}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
            out += found
        elif path.exists():
            out.append(text)
        elif any(c in text for c in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            found = []
            for m in matches:
                found += _audio_in(Path(m)) if Path(m).is_dir() else [m]
            if not found:
                raise ConfigError(f"{text}: the pattern matches no file")
            out += found
        else:  # a missing file: opening it gives the same words as any unreadable file (and --skip-bad lists it)
            out.append(text)
    return list(dict.fromkeys(out))


def _audio_in(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            os.path.join(root, f) for f in sorted(files)
            if not f.startswith(".") and Path(f).suffix.lower() in AUDIO_EXTENSIONS
        ]  # fmt: skip
    return found
