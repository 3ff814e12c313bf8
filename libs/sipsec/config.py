"""Service configuration the same way everywhere: environment variables with documented defaults, then flags.

A service describes its settings once, as a frozen dataclass plus a table
``field -> (environment variable, default, help)``; :func:`load_env` builds the dataclass from
the environment and :func:`parse_flags` adds one command-line flag per field (flags override
variables, which override the defaults). A bad value raises :class:`ConfigError` naming the
variable, never a bare ``ValueError`` from deep inside.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import TypeVar

__all__ = ["ConfigError", "EnvTable", "convert", "load_env", "parse_bool", "parse_flags", "split_hostport"]

#: field name -> (environment variable, default as text, one line of help)
EnvTable = Mapping[str, tuple[str, str, str]]

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the variable and the value."""


def parse_bool(raw: str, name: str = "value") -> bool:
    """``1/true/yes/on`` or ``0/false/no/off/''`` (any case); anything else is an error."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def _kind(annotation: object) -> type:
    """The Python type of a dataclass field (annotations are strings under PEP 563)."""
    named = {"int": int, "float": float, "bool": bool, "str": str}
    if isinstance(annotation, str):
        return named.get(annotation, str)
    return annotation if isinstance(annotation, type) and annotation in (int, float, bool) else str


def convert(kind: object, raw: str, name: str = "value") -> object:
    """``raw`` as the field type ``kind`` (int, float, bool or str)."""
    target = _kind(kind)
    if target is bool:
        return parse_bool(raw, name)
    try:
        return target(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {target.__name__}") from None


def load_env(cls: type[T], table: EnvTable, environ: Mapping[str, str] | None = None,
             **overrides: object) -> T:
    """An instance of the dataclass ``cls`` from ``environ`` (default ``os.environ``) and ``table``."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        var, default, _ = table[f.name]
        values[f.name] = convert(f.type, env.get(var, default), var)
    values.update(overrides)
    return cls(**values)


def parse_flags(cls: type[T], table: EnvTable, argv: Sequence[str] | None,
                environ: Mapping[str, str] | None = None, *, prog: str, description: str) -> T:
    """``cls`` from the environment, then one ``--flag`` per field on top (booleans take ``--no-…``).

    Exits with a usage message (status 2) when a variable, a flag or their combination is invalid.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    env = os.environ if environ is None else environ
    for f in fields(cls):  # type: ignore[arg-type]
        var, default, text = table[f.name]
        kind = _kind(f.type)
        try:  # the combination is checked once, after the flags (so --help works on any setup)
            current = convert(kind, env.get(var, default), var)
        except ConfigError as exc:
            parser.error(str(exc))
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{text} [env {var}, now %(default)s]"
        if kind is bool:
            parser.add_argument(flag, default=current, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(flag, default=current, type=kind, help=help_text)
    ns = parser.parse_args(argv)
    try:
        return cls(**vars(ns))
    except ValueError as exc:
        parser.error(str(exc))


def split_hostport(text: str, default_port: int = 5060) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` / ``host`` -> (host, port); a bad port is a ConfigError."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else str(default_port)
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, str(default_port)
    try:
        return host, int(port)
    except ValueError:
        raise ConfigError(f"bad port in {text!r}") from None
