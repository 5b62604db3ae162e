"""Map plain YAML / dicts onto validated dataclasses.

Every config in the package is a (possibly nested) dataclass with one default
per option.  :func:`from_dict` builds one from a mapping and reports unknown
keys and wrong types with the dotted key path and the file they came from.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any, Mapping, TypeVar

import yaml

from matta_rec.errors import ConfigError

T = TypeVar("T")


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping, with a clear error for a missing or bad file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError("file not found", source=path)
    with open(path, "r", encoding="utf-8") as handle:
        try:
            data = yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML ({exc})", source=path) from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError("expected a mapping at the top level", source=path)
    return dict(data)


def from_dict(cls: type[T], data: Mapping | None, source: str = "<dict>", key: str = "") -> T:
    """Build dataclass ``cls`` from ``data``.

    Nested dataclass fields are built recursively; tuples are accepted from
    YAML lists; ints are accepted where floats are expected.  Unknown keys are
    an error (a typo must not silently fall back to a default).
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping for {cls.__name__}", source=source, key=key or None)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {sorted(unknown)}; allowed: {sorted(fields)}",
            source=source,
            key=key or None,
        )
    kwargs = {}
    for name, value in data.items():
        path = f"{key}.{name}" if key else name
        kwargs[name] = _coerce(hints[name], value, source, path)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc), source=source, key=key or None) from exc


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) -> plain dict / list values, YAML-safe."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, source, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            f"value {value!r} does not fit {hint}", source=source, key=key
        )
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, source, key)
    if hint is Any:
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list, got {value!r}", source=source, key=key)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [_coerce(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value)]
        elif origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(
                    f"expected {len(args)} values, got {len(value)}", source=source, key=key
                )
            items = [_coerce(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
        else:
            inner = args[0] if args else Any
            items = [_coerce(inner, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else list(items)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a mapping, got {value!r}", source=source, key=key)
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(
                f"expected one of {list(args)}, got {value!r}", source=source, key=key
            )
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"expected a number, got {value!r}", source=source, key=key)
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {value!r}", source=source, key=key)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {value!r}", source=source, key=key)
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {value!r}", source=source, key=key)
        return value
    return value
