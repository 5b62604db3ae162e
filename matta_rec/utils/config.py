"""Map plain YAML / dicts onto validated dataclasses.

Every config in the package is a (possibly nested) dataclass with one default
per option.  :func:`from_dict` builds one from a mapping and reports unknown
keys and wrong types with the dotted key path and the file they came from.
:func:`config_keys` lists every option with its default and the description
from the dataclass docstring (for ``--help``).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import types
import typing
from typing import Any, Mapping, NamedTuple, Sequence, TypeVar

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


# ---------------------------------------------------------------- help text
class ConfigKey(NamedTuple):
    """One option of a config dataclass, as ``--help`` lists it.

    Args:
        key: dotted path, e.g. ``loss.ramp.delay_steps``.
        default: the default value (``None`` for a section).
        doc: the plain-text description from the ``Args:`` section.
        section: ``True`` for a nested dataclass (its keys follow it).
    """

    key: str
    default: Any
    doc: str
    section: bool = False


def config_keys(
    cls: type,
    *,
    sections: Mapping[str, type] | None = None,
    skip: Sequence[str] = ("source",),
    prefix: str = "",
) -> list[ConfigKey]:
    """Every option of config dataclass ``cls``, nested sections included, in field order.

    Args:
        cls: the dataclass; ``cls()`` must be valid (every field has a default).
        sections: dotted key -> dataclass for fields declared as a plain
            mapping but holding a config of their own (e.g.
            ``{"model": ModelConfig}``); their keys are listed like a
            nested section's, with that dataclass's defaults.
        skip: top-level field names left out (bookkeeping such as
            ``RunConfig.source``; a nested section's field of the same name
            is listed).
        prefix: prepended to every key (used by the recursion).

    Returns:
        A list of :class:`ConfigKey`; a section's entry precedes its keys.

    Example:

    >>> Ramp = dataclasses.make_dataclass("Ramp", [("steps", int, 0)])
    >>> Ramp.__doc__ = "Ramp.\\n\\n    Args:\\n        steps: ramp length, see ``w_D``."
    >>> Run = dataclasses.make_dataclass(
    ...     "Run", [("ramp", Ramp, dataclasses.field(default_factory=Ramp))])
    >>> for entry in config_keys(Run):
    ...     print(entry.key, entry.default, entry.doc or "-")
    ramp None -
    ramp.steps 0 ramp length, see w_D.
    """
    sections = dict(sections or {})
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    defaults = cls()
    out: list[ConfigKey] = []
    for field in dataclasses.fields(cls):
        if not prefix and field.name in skip:
            continue
        key = f"{prefix}{field.name}"
        doc = docs.get(field.name, "")
        nested = sections.get(key)
        if nested is None and dataclasses.is_dataclass(hints[field.name]):
            nested = hints[field.name]
        if nested is None:
            out.append(ConfigKey(key, to_dict(getattr(defaults, field.name)), doc))
            continue
        out.append(ConfigKey(key, None, doc, section=True))
        inner = {k[len(key) + 1:]: v for k, v in sections.items() if k.startswith(key + ".")}
        out += config_keys(nested, sections=inner, skip=skip, prefix=key + ".")
    return out


def field_docs(cls: type) -> dict[str, str]:
    """The ``Args:`` entries of a class docstring as plain text, one line each.

    Args:
        cls: a class whose docstring has a Google-style ``Args:`` section.

    Returns:
        Field name -> description (continuation lines joined, markup
        removed by :func:`plain_text`; the literals ``None``, ``True`` and
        ``False`` spelled as in YAML: ``null``, ``true``, ``false``).
    """
    doc = inspect.getdoc(cls) or ""
    if "Args:" not in doc:
        return {}
    out: dict[str, str] = {}
    current = None
    for line in doc.split("Args:", 1)[1].splitlines():
        match = re.match(r"^\s{4}(\w+): (.*)$", line)
        if match:
            current = match.group(1)
            out[current] = match.group(2).strip()
        elif current and line.startswith(" " * 8):
            out[current] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break
    return {name: plain_text(text, literals=_YAML_LITERALS) for name, text in out.items()}


_YAML_LITERALS = {"None": "null", "True": "true", "False": "false"}
_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``")
_INTERPRETED = re.compile(r"(?<![\w`])`([^`]+)`(?![\w`])")


def plain_text(text: str, literals: Mapping[str, str] | None = None) -> str:
    """Docstring text without reStructuredText markup, for a terminal.

    ``:class:`~a.b.Name``` becomes ``Name``, ``:func:`a.b``` becomes ``a.b``,
    double-backquoted literals lose their backquotes.

    Args:
        text: reStructuredText (one docstring paragraph).
        literals: double-backquoted literals to spell differently, e.g.
            ``{"None": "null"}``.

    Returns:
        The text with the markup removed and runs of spaces collapsed.

    Example:

    >>> plain_text("``null`` = use :class:`~matta_rec.data.reader.LogStream`")
    'null = use LogStream'
    """
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    literals = literals or {}
    text = _LITERAL.sub(lambda m: literals.get(m.group(1), m.group(1)), text)
    text = _INTERPRETED.sub(r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def yaml_value(value: Any) -> str:
    """``value`` spelled as in a YAML config or a ``--set KEY=VALUE``.

    Args:
        value: a plain value (tuples and dataclasses are converted by :func:`to_dict`).

    Returns:
        One line of YAML flow style.

    Example:

    >>> yaml_value(False), yaml_value(None), yaml_value((1.0, 2.0)), yaml_value({"lr": 0.1})
    ('false', 'null', '[1.0, 2.0]', '{lr: 0.1}')
    """
    text = yaml.safe_dump(to_dict(value), default_flow_style=True, width=1 << 30)
    return text.removesuffix("\n...\n").strip()
