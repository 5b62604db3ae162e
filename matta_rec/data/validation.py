"""Validate one shard against the schema and convert it to raw numpy columns.

A whole shard is checked before any of its rows is used. Each problem raises
one :class:`~matta_rec.errors.DataError` naming the file, the column,
the first offending row (0-based, within the shard) and the fix:

* missing column, wrong type (e.g. text where a number is expected);
* null values, unless the feature has a ``default`` (which then replaces
  them);
* NaN / infinite numeric, dense or label values;
* a dense vector whose length is not the schema's ``dim``;
* a target outside ``[0, 1]``, an event that is not 0/1, a negative weight;
* a shard with no rows.

Example:

>>> table = read_shard(path, schema)
>>> shard = validate_table(table, schema, path)
>>> shard.num_rows, sorted(shard.labels)
(4096, ['event', 'target'])
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from matta_rec.errors import DataError
from matta_rec.data.schema import FeatureSpec, Schema

__all__ = ["ShardColumns", "validate_table", "LABEL_KEYS"]

#: Fixed label keys of a batch, in this order.
LABEL_KEYS = ("target", "event", "weight")

_STRING_FIX = "write it as text (strings), or set 'dtype: int64' in the schema for integer ids"


@dataclasses.dataclass
class ShardColumns:
    """A validated shard: raw numpy columns in batch layout.

    Args:
        features: ``{feature name: array}`` with raw dtypes (strings as
            ``object`` arrays, int64, float32 ``[n]`` or ``[n, dim]``).
        labels: ``{"target" | "event" | "weight": float32 [n]}``.
        num_rows: number of rows.
    """

    features: dict
    labels: dict
    num_rows: int

    def slice(self, start: int, stop: int) -> "ShardColumns":
        return ShardColumns(
            {k: v[start:stop] for k, v in self.features.items()},
            {k: v[start:stop] for k, v in self.labels.items()},
            max(0, min(stop, self.num_rows) - start),
        )


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _first_null(array: pa.Array) -> int:
    return _first(np.asarray(array.is_null().to_numpy(zero_copy_only=False)))


def _is_string_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_number_type(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t)


def _wrong_type(path: str, name: str, got: pa.DataType, expected: str, fix: str) -> DataError:
    return DataError(
        f"wrong type: expected {expected}, the file has {got}",
        file=path,
        column=name,
        fix=fix,
    )


def _fill_nulls(array: pa.Array, spec: FeatureSpec, path: str) -> pa.Array:
    if array.null_count == 0:
        return array
    if spec.default is None:
        row = _first_null(array)
        raise DataError(
            f"null (missing) value; {array.null_count} null(s) in this shard",
            file=path,
            column=spec.name,
            row=row,
            fix=f"fill the column upstream, or give feature '{spec.name}' a 'default:' "
            "in the schema to replace nulls",
        )
    default = spec.default
    if spec.kind == "dense":
        vector = [float(default)] * spec.dim if np.isscalar(default) else list(default)
        if len(vector) != spec.dim:
            raise DataError(
                f"the schema's default has {len(vector)} values, dim is {spec.dim}",
                file=path,
                column=spec.name,
                fix=f"set the default of '{spec.name}' to one number or {spec.dim} numbers",
            )
        return pc.fill_null(array, pa.scalar(vector, type=array.type))
    if spec.kind in ("categorical", "multi_categorical") and array.type != pa.int64():
        default = str(default)
    return pc.fill_null(array, pa.scalar(default).cast(array.type))


def _non_finite(values: np.ndarray, path: str, name: str, what: str) -> None:
    finite = np.isfinite(values)
    if not finite.all():
        bad = ~finite
        row = _first(bad if bad.ndim == 1 else bad.any(axis=1))
        value = values[row] if values.ndim == 1 else values[row][~finite[row]][0]
        raise DataError(
            f"non-finite value {value} ({int(bad.sum())} in this shard)",
            file=path,
            column=name,
            row=row,
            fix=f"replace NaN / inf in the {what} upstream",
        )


def _strings(array: pa.Array, strings: str) -> np.ndarray:
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if strings == "arrow":
        if not pa.types.is_string(array.type):
            array = pc.cast(array, pa.string())
        return array
    if strings == "bytes":
        array = pc.cast(array, pa.binary() if not pa.types.is_large_string(array.type) else pa.large_binary())
    return array.to_numpy(zero_copy_only=False)


def _feature(array: pa.Array, spec: FeatureSpec, path: str, strings: str) -> np.ndarray:
    name, t = spec.name, array.type
    if spec.kind == "multi_categorical" or (spec.kind == "categorical" and spec.dtype == "string"):
        if not _is_string_type(t):
            fix = (
                f"write '{name}' as text" + ("" if spec.kind != "categorical" else f", or {_STRING_FIX}")
            )
            if spec.kind == "multi_categorical":
                fix = f"write '{name}' as text with tokens joined by '{spec.separator}'"
            raise _wrong_type(path, name, t, f"text (string) for a {spec.kind} feature", fix)
        array = _fill_nulls(array, spec, path)
        return _strings(array, strings)
    if spec.kind == "categorical":  # int64 ids
        if not pa.types.is_integer(t):
            raise _wrong_type(
                path, name, t, "integers for a categorical feature with 'dtype: int64'",
                f"write '{name}' as int64, or remove 'dtype: int64' from the schema for text ids",
            )
        array = _fill_nulls(array, spec, path)
        return array.cast(pa.int64()).to_numpy(zero_copy_only=False)
    if spec.kind == "numeric":
        if not _is_number_type(t):
            raise _wrong_type(
                path, name, t, "numbers (float32) for a numeric feature",
                f"write '{name}' as float32, or declare it categorical in the schema",
            )
        array = _fill_nulls(array, spec, path)
        values = array.cast(pa.float32(), safe=False).to_numpy(zero_copy_only=False)
        _non_finite(values, path, name, "numeric feature")
        return values
    # dense
    is_list = (
        pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t) or pa.types.is_large_list_view(t)
    )
    if not is_list or not _is_number_type(t.value_type):
        raise _wrong_type(
            path, name, t, f"a list of {spec.dim} numbers for a dense feature",
            f"write '{name}' as list<float32> of length {spec.dim} (CSV: numbers joined by "
            f"'{spec.separator}'; TFRecord: a float_list)",
        )
    array = _fill_nulls(array, spec, path)
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    wrong = lengths != spec.dim
    if wrong.any():
        row = _first(wrong)
        raise DataError(
            f"vector of length {int(lengths[row])}, the schema says dim {spec.dim}",
            file=path,
            column=name,
            row=row,
            fix=f"write {spec.dim} numbers per row, or change 'dim' of '{name}' in the schema",
        )
    flat = pc.list_flatten(array)
    if flat.null_count:
        row = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0]) // spec.dim
        raise DataError(
            "null inside a vector",
            file=path,
            column=name,
            row=row,
            fix=f"write {spec.dim} numbers in every vector of '{name}'",
        )
    values = flat.cast(pa.float32(), safe=False).to_numpy(zero_copy_only=False)
    values = values.reshape(len(array), spec.dim)
    _non_finite(values, path, name, "dense feature")
    return values


def _label(array: pa.Array, key: str, name: str, path: str) -> np.ndarray:
    t = array.type
    if not (_is_number_type(t) or pa.types.is_boolean(t)):
        raise _wrong_type(
            path, name, t, f"numbers (float32) for the {key} label",
            f"write '{name}' as float32" + (" in [0, 1]" if key != "weight" else ""),
        )
    if array.null_count:
        raise DataError(
            f"null (missing) {key} label; {array.null_count} null(s) in this shard",
            file=path,
            column=name,
            row=_first_null(array),
            fix=f"drop unlabelled rows upstream or fill '{name}'",
        )
    values = array.cast(pa.float32(), safe=False).to_numpy(zero_copy_only=False)
    _non_finite(values, path, name, f"{key} label")
    if key == "target":
        bad = (values < 0) | (values > 1)
        if bad.any():
            row = _first(bad)
            raise DataError(
                f"target {values[row]} is outside [0, 1] ({int(bad.sum())} rows in this shard)",
                file=path,
                column=name,
                row=row,
                fix="the target must be a Teacher probability in [0, 1] or a 0/1 label; "
                "apply a sigmoid to logits upstream",
            )
    elif key == "event":
        bad = (values != 0) & (values != 1)
        if bad.any():
            row = _first(bad)
            raise DataError(
                f"event {values[row]} is not 0 or 1 ({int(bad.sum())} rows in this shard)",
                file=path,
                column=name,
                row=row,
                fix="the event label must be a 0/1 outcome (e.g. click)",
            )
    else:
        bad = values < 0
        if bad.any():
            row = _first(bad)
            raise DataError(
                f"weight {values[row]} is negative ({int(bad.sum())} rows in this shard)",
                file=path,
                column=name,
                row=row,
                fix="weights must be finite and non-negative",
            )
    return values


def validate_table(
    table: pa.Table, schema: Schema, path: str, *, strings: str = "str"
) -> ShardColumns:
    """Check a shard read by :mod:`matta_rec.data.formats` and convert it.

    Args:
        table: the shard's columns (extra columns are ignored).
        schema: the feature schema.
        path: the shard path, for error messages.
        strings: ``"str"`` for ``object`` arrays of ``str``, ``"bytes"`` for
            ``object`` arrays of UTF-8 ``bytes``, or ``"arrow"`` to keep
            ``pyarrow.StringArray`` columns (no Python object per value: the
            fastest way into ``tf.string``).

    Returns:
        A :class:`ShardColumns`.

    Raises:
        DataError: naming file, column, row and the fix.
    """
    if strings not in ("str", "bytes", "arrow"):
        raise ValueError(f"strings must be 'str', 'bytes' or 'arrow', got {strings!r}")
    names = set(table.column_names)
    missing = [c for c in schema.columns if c not in names]
    if missing:
        name = missing[0]
        role = "feature" if name in schema.feature_names else "label"
        others = f" (also missing: {missing[1:]})" if len(missing) > 1 else ""
        raise DataError(
            f"missing {role} column{others}; the shard has {sorted(names)}",
            file=path,
            column=name,
            fix=f"write column '{name}' into every shard, or remove it from the schema "
            f"{schema.source}",
        )
    n = table.num_rows
    if n == 0:
        raise DataError(
            "the shard has no rows",
            file=path,
            fix="do not publish empty shards, or pass --set data.skip_bad_shards=true to "
            "quarantine them",
        )
    features: dict[str, Any] = {}
    for spec in schema.features:
        column = table.column(spec.name)
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        features[spec.name] = _feature(array, spec, path, strings)
    labels = {}
    for key, name in zip(LABEL_KEYS, (schema.labels.target, schema.labels.event, schema.labels.weight)):
        if name is None:
            continue
        column = table.column(name)
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        labels[key] = _label(array, key, name, path)
    return ShardColumns(features, labels, n)
