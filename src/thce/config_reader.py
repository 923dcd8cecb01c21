"""The one reader of config tables: a plain dict (a TOML table, a JSON object) -> a config dataclass.

Every config is a frozen dataclass validated on construction (``__post_init__`` calls ``validate``); this module
turns a table into one, with one-line errors that name the key with its section: an unknown key (with the closest
known one), a missing required key, a value of the wrong type. :func:`thce.config.load_config` reads whole
experiment files through it; ``LogMelConfig.from_dict``, ``SynthConfig.from_dict`` and
:func:`thce.losses.imbalance.loss_config` read one section each.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Example:
...     rate: float = 1.0
...     sizes: tuple[int, ...] = ()
>>> read_table(Example, {"rate": 2, "sizes": [3, 4]}, "example")
Example(rate=2.0, sizes=(3, 4))
>>> read_table(Example, {"rates": 2}, "example")
Traceback (most recent call last):
    ...
thce.errors.ConfigError: unknown config key 'example.rates'; did you mean 'rate'?
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from thce.errors import ConfigError

T = TypeVar("T")


def _full(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def check_keys(
    cls: type, table: Mapping[str, Any], section: str = "", *, keys: collections.abc.Iterable[str] | None = None
) -> None:
    """Raise :class:`ConfigError` for the first key of ``table`` that is not a field of the dataclass ``cls``
    (naming ``section.key`` and the closest field) or for a field without a default that ``table`` lacks. ``keys``:
    the keys ``table`` may hold when they are not ``cls``'s fields (tables its caller reads into one field)."""
    names = [f.name for f in dataclasses.fields(cls) if f.init] if keys is None else list(keys)
    for key in table:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key {_full(section, key)!r}{hint}")
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.init and required and f.name not in table:
            raise ConfigError(f"missing config key {_full(section, f.name)!r}")


def read_table(cls: type[T], table: Mapping[str, Any], section: str = "") -> T:
    """``cls(**table)`` after :func:`check_keys` and each value checked against its field's type (lists become
    tuples, integers floats where a float is due, nested tables nested configs); errors name ``section.key``."""
    check_keys(cls, table, section)
    hints = typing.get_type_hints(cls)
    kwargs = {key: coerce(value, hints[key], _full(section, key)) for key, value in table.items()}
    return cls(**kwargs)


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` (from TOML) against a field's type and convert lists to tuples; errors name the key."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{key}: unexpected value {value!r}")
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return read_table(annotation, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table like {{name = value}}, got {value!r}")
        return {str(k): coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if annotation is Any:
        return value
    raise ConfigError(f"{key}: unsupported config type {annotation!r}")
