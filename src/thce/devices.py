"""Which torch devices this machine has, and the check of a requested one before any work is done."""

from __future__ import annotations

import torch

from thce.errors import ConfigError


def available_devices() -> list[str]:
    """The devices torch can use here, e.g. ``["cpu", "cuda:0", "cuda:1"]``."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def check_device(name: str, *, source: str, allow_auto: bool = False) -> str:
    """Return ``name`` if torch can run on it here; else raise :class:`ConfigError` naming ``source`` (the flag or
    config key, e.g. ``--device``), the problem and the devices available. ``auto`` passes with ``allow_auto``."""
    if allow_auto and name == "auto":
        return name
    available = ", ".join(available_devices())
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        auto = ", auto" if allow_auto else ""
        raise ConfigError(f"{source} {name!r}: not a torch device (expected e.g. cpu, cuda, cuda:0{auto}); "
                          f"available here: {available}") from None
    if device.type == "cpu":
        return name
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ConfigError(f"{source} {name!r}: {build} (torch {torch.__version__}); available here: {available}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{source} {name!r}: no such GPU; available here: {available}")
        return name
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"{source} {name!r}: Apple's MPS is not available here; available here: {available}")
        return name
    raise ConfigError(f"{source} {name!r}: device type {device.type!r} is not supported by thce; "
                      f"available here: {available}")
