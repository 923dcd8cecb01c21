"""Variants of one config for a sweep: a :class:`Variant` is a set of config assignments (``{"embedding.alpha": 8}``)
with a folder name (its slug); :func:`parse_vary` reads ``thce sweep --vary KEY=V1,V2`` and :func:`product_variants`
makes the cartesian product of a few value lists; :func:`parse_variant` reads one variant that sets several keys
together (``thce sweep --variant 'KEY=V; KEY2=V2'``). :mod:`thce.sweep` runs them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from thce.errors import ConfigError

_SLUG_MAX = 100


def toml_value(value: Any) -> str:
    """A parsed config value written back as an inline TOML value: ``8``, ``true``, ``"a,b"``, ``[8, 16]``.

    >>> toml_value([[5, 2], [20, 2]]), toml_value("2:2:1:26"), toml_value(False)
    ('[[5, 2], [20, 2]]', '"2:2:1:26"', 'false')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {value!r} as a config value")



@dataclass(frozen=True)
class Variant:
    """One point of a sweep: config assignments ``((key, value), ...)``, keys dotted (``embedding.alpha``)."""

    assignments: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, assignments: Mapping[str, Any]) -> Variant:
        """``Variant.of({"embedding.alpha": 8})``."""
        return cls(tuple(assignments.items()))

    @property
    def name(self) -> str:
        """``embedding.alpha=8, model.cnn_dropout=0.0`` (``base`` for no assignment)."""
        return ", ".join(f"{k}={toml_value(v)}" for k, v in self.assignments) or "base"

    @property
    def slug(self) -> str:
        """Directory name: the name with ``__`` between assignments and anything but ``[A-Za-z0-9._=+-]`` as ``_``;
        a long one is cut and ends in a hash of the name."""
        text = "__".join(f"{k}={toml_value(v)}" for k, v in self.assignments) or "base"
        slug = re.sub(r"[^A-Za-z0-9._=+-]", "_", text)
        if len(slug) > _SLUG_MAX:
            slug = slug[: _SLUG_MAX - 9] + "-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        return slug

    def matches(self, assignments: Mapping[str, Any]) -> bool:
        """Whether every ``key = value`` of ``assignments`` is one of this variant's (``8 == 8.0``)."""
        mine = dict(self.assignments)
        return all(k in mine and _same_value(mine[k], v) for k, v in assignments.items())



def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)



def parse_value(raw: str) -> Any:
    """A value as ``--set`` reads it: TOML (``8``, ``true``, ``[8, 16]``, ``"x"``), else the bare text as a string."""
    try:
        return tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return raw.strip()



def split_top_level(text: str, separator: str = ",") -> list[str]:
    """Split at ``separator`` outside brackets, braces and quotes: ``'8,16'`` -> ``['8', '16']``,
    ``'[8,16],[16,32]'`` -> ``['[8,16]', '[16,32]']``, ``'"a,b",c'`` -> ``['"a,b"', 'c']``.

    Raises:
        ValueError: unbalanced brackets or an unterminated quote (the message says which).
    """
    parts, current, stack, quote = [], [], [], ""
    closing = {"[": "]", "{": "}"}
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and quote == '"' and i + 1 < len(text):
                current.append(text[i : i + 2])
                i += 2
                continue
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in closing:
            stack.append(closing[char])
        elif char in "]}":
            if not stack or stack.pop() != char:
                raise ValueError(f"unmatched {char!r}")
        elif char == separator and not stack:
            parts.append("".join(current))
            current = []
            i += 1
            continue
        current.append(char)
        i += 1
    if quote:
        raise ValueError(f"unterminated {quote} quote")
    if stack:
        raise ValueError(f"missing {stack[-1]!r}")
    parts.append("".join(current))
    return parts



def parse_vary(text: str) -> tuple[str, list[Any]]:
    """``"KEY=V1,V2,..."`` -> ``(KEY, [V1, V2, ...])``, each value read as ``--set`` reads one.

    Values are separated by the commas that lie outside brackets, braces and quotes, so a list or a quoted string
    is one value: ``model.cnn_channels=[8,16],[16,32]`` gives two lists, ``data.ratio="2:2:1:26","6:1:2:16"`` two
    strings; a string that holds a comma must be quoted.

    Raises:
        ConfigError: one line starting ``--vary 'TEXT':`` that says what is wrong.
    """
    where = f"--vary {text!r}"
    if "=" not in text:
        raise ConfigError(f"{where}: expected KEY=VALUE1,VALUE2,..., e.g. embedding.alpha=8,16")
    key, raw = (part.strip() for part in text.split("=", 1))
    if not key or not all(key.split(".")):
        raise ConfigError(f"{where}: empty key; expected KEY=VALUE1,VALUE2,... with a dotted key like embedding.alpha")
    if key == "seed":
        raise ConfigError(f"{where}: the seed is the repeat axis of a sweep; use --seeds N")
    try:
        items = split_top_level(raw)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None
    if any(not item.strip() for item in items):
        raise ConfigError(f"{where}: empty value (two commas in a row, or a comma at an end?)")
    values = [parse_value(item) for item in items]
    for i, value in enumerate(values):
        if any(_same_value(value, other) for other in values[:i]):
            raise ConfigError(f"{where}: value {toml_value(value)} listed twice")
    return key, values



def parse_variant(text: str) -> Variant:
    """``"KEY=V; KEY2=V2"`` -> one :class:`Variant` setting the keys together, each value read as ``--set`` reads
    one (a ``;`` inside brackets, braces or quotes belongs to the value).

    >>> parse_variant('baseline.selection="val_auc"; train.balanced_sampling=true').name
    'baseline.selection="val_auc", train.balanced_sampling=true'

    Raises:
        ConfigError: one line starting ``--variant 'TEXT':`` that says what is wrong.
    """
    where = f"--variant {text!r}"
    try:
        items = [item.strip() for item in split_top_level(text, ";")]
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None
    assignments: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        key = key.strip()
        if not _ or not key or not all(key.split(".")) or not raw.strip():
            raise ConfigError(f"{where}: expected KEY=VALUE; KEY=VALUE..., e.g. embedding.alpha=8; embedding.epochs=4")
        if key == "seed":
            raise ConfigError(f"{where}: the seed is the repeat axis of a sweep; use --seeds N")
        if key in assignments:
            raise ConfigError(f"{where}: {key} set twice")
        assignments[key] = parse_value(raw)
    return Variant.of(assignments)


def product_variants(axes: Sequence[tuple[str, Sequence[Any]]]) -> list[Variant]:
    """The cartesian product of ``[(key, values), ...]``, first axis slowest.

    >>> [v.name for v in product_variants([("a", [1, 2]), ("b", [True])])]
    ['a=1, b=true', 'a=2, b=true']
    """
    keys = [key for key, _ in axes]
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise ConfigError(f"--vary {key}: key given twice; list all its values in one --vary")
    for key, values in axes:
        if not values:
            raise ConfigError(f"--vary {key}: no values")
    return [Variant(tuple(zip(keys, combo))) for combo in itertools.product(*(values for _, values in axes))]
