"""Random streams named, not numbered: every consumer of randomness derives its seed from the run's seed and a
name (``"fit", method, stage, iteration``), so adding a stage or a method never shifts another one's stream and no
magic offsets (``seed + 7001``) have to be kept apart by hand."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *names: str | int) -> int:
    """A seed in ``[0, 2**63)`` for the stream ``names`` under the run seed ``seed``; stable across Python runs,
    platforms and versions (a hash of the text, not Python's salted ``hash``).

    >>> derive_seed(0, "fit", "baseline", "end-to-end") == derive_seed(0, "fit", "baseline", "end-to-end")
    True
    >>> derive_seed(0, "a") != derive_seed(1, "a") and derive_seed(0, "a", 1) != derive_seed(0, "a", 2)
    True
    """
    text = "\x1f".join([str(int(seed)), *(str(name) for name in names)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def generator(seed: int, *names: str | int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed`."""
    return torch.Generator().manual_seed(derive_seed(seed, *names))
