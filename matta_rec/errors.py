"""Errors raised for bad configuration and bad log data.

Every error names where the problem is (file, column / key, row where it
applies) and how to fix it, so a user can act on it without reading code.
"""

from __future__ import annotations


class MattaError(ValueError):
    """Base class of the package's user-facing errors."""


class ConfigError(MattaError):
    """A YAML file (schema, run config, pipeline config) is malformed.

    Args:
        message: what is wrong and how to fix it.
        source: the file (or ``"<dict>"``).
        key: the dotted key path inside the file, e.g. ``features.user_id.kind``.
    """

    def __init__(self, message: str, source: str | None = None, key: str | None = None):
        self.source = source
        self.key = key
        where = []
        if source:
            where.append(str(source))
        if key:
            where.append(f"key '{key}'")
        prefix = (": ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)


class SchemaError(ConfigError):
    """The feature schema YAML file is malformed."""


class DataError(MattaError):
    """A log shard does not match the schema.

    Args:
        message: what is wrong.
        file: the shard path.
        column: the offending column, if one.
        row: the 0-based row index inside the shard, if one.
        fix: what the user should do about it.
    """

    def __init__(
        self,
        message: str,
        file: str | None = None,
        column: str | None = None,
        row: int | None = None,
        fix: str | None = None,
    ):
        self.file = None if file is None else str(file)
        self.column = column
        self.row = row
        self.fix = fix
        parts = []
        if file is not None:
            parts.append(f"file '{file}'")
        if column is not None:
            parts.append(f"column '{column}'")
        if row is not None:
            parts.append(f"row {row}")
        text = (", ".join(parts) + ": " if parts else "") + message
        if fix:
            text += f". Fix: {fix}"
        super().__init__(text)
