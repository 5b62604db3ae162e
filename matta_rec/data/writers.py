"""Write one log shard (Parquet, CSV or TFRecord of ``tf.Example``).

A shard is written to a hidden temporary name in the destination folder and
then renamed, so a :class:`~matta_rec.data.reader.LogStream` in follow mode
never sees half a shard (the reader ignores names starting with ``.``).

Raw representation per feature kind (see :mod:`matta_rec.data.schema`):

=====================  ==================  ==================  =====================
kind                   Parquet             CSV                 TFRecord (tf.Example)
=====================  ==================  ==================  =====================
categorical            string (or int64)   text (or integer)   bytes_list (int64_list)
numeric                float32             number              float_list
multi_categorical      string, tokens      text, tokens        bytes_list (1 value),
                       joined by sep       joined by sep       tokens joined by sep
dense                  list<float32>       numbers joined      float_list of ``dim``
                                           by ``separator``    values
labels                 float32             number              float_list
=====================  ==================  ==================  =====================

Columns that are not in the schema are written too (Parquet / CSV with the
type numpy infers, TFRecord as float / int64 / bytes lists).  A ``None``
value (or NaN-free null in an object array) is written as a null: a Parquet
null, an empty CSV field, a missing ``tf.Example`` feature.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from matta_rec.data.schema import FeatureSpec, Schema, load_schema
from matta_rec.utils.files import write_atomic

FORMATS = ("parquet", "csv", "tfrecord")
_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tfrecord": "tfrecord",
    ".tfrecords": "tfrecord",
}


def format_of(path: str) -> str | None:
    """Shard format from a file name (``None`` if the extension is not a shard's)."""
    return _EXTENSIONS.get(os.path.splitext(str(path))[1].lower())


def write_shard(
    path: str | os.PathLike,
    columns: Mapping[str, Any],
    schema: "Schema | str | os.PathLike | Mapping",
    format: str | None = None,
) -> str:
    """Write one shard atomically and return its path.

    Args:
        path: destination file. Missing parent folders are created.
        columns: ``{column name: values}``; every feature and label column of
            ``schema`` must be present and all columns must have the same
            number of rows. Values are numpy arrays or lists: categorical
            strings (or ints for ``dtype: int64``), numeric floats,
            multi_categorical strings already joined by the separator or
            lists of tokens, dense ``[rows, dim]`` arrays or lists of
            vectors, labels floats. ``None`` entries are written as nulls.
        schema: a :class:`Schema`, a YAML path or a dict.
        format: ``"parquet"``, ``"csv"`` or ``"tfrecord"``; by default taken
            from the extension of ``path``.

    Returns:
        ``path`` as a string.

    Example:

    >>> write_shard("logs/dt=2026-11-01/hour=07/part-0.parquet",
    ...             {"user_id": ["u1", "u2"], "user_age": [31.0, 45.0],
    ...              "teacher_prob": [0.2, 0.9]}, schema)
    'logs/dt=2026-11-01/hour=07/part-0.parquet'
    """
    path = os.fspath(path)
    schema = load_schema(schema)
    if format is None:
        format = format_of(path)
        if format is None:
            raise ValueError(
                f"cannot tell the shard format of '{path}' from its extension; use "
                "a name ending in .parquet, .csv or .tfrecord, or pass "
                f"format= one of {list(FORMATS)}"
            )
    if format not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {format!r}")
    if not isinstance(columns, Mapping):
        raise TypeError(
            f"columns must be a mapping of column name -> values, got {type(columns).__name__}"
        )
    missing = [c for c in schema.columns if c not in columns]
    if missing:
        raise ValueError(
            f"columns {missing} of schema {schema.source} are missing; write_shard "
            f"needs every feature and label column: {list(schema.columns)}"
        )
    prepared = {name: _prepare(name, values, schema) for name, values in columns.items()}
    lengths = {name: len(v["values"]) for name, v in prepared.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"all columns must have the same number of rows, got {lengths}")

    writer = {"parquet": _write_parquet, "csv": _write_csv, "tfrecord": _write_tfrecord}[format]
    write_atomic(path, lambda tmp: writer(tmp, prepared))
    return path


# ----------------------------------------------------------------- preparing
def _spec_of(name: str, schema: Schema) -> tuple[str, FeatureSpec | None]:
    """(kind, spec): kind is a feature kind, ``"label"`` or ``"extra"``."""
    if name in schema.feature_names:
        spec = schema.feature(name)
        return spec.kind, spec
    if name in schema.labels.columns:
        return "label", None
    return "extra", None


def _null_mask(values: Any) -> np.ndarray | None:
    if isinstance(values, np.ndarray) and values.dtype != object:
        return None
    mask = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    return mask if mask.any() else None


def _prepare(name: str, values: Any, schema: Schema) -> dict:
    """Normalise one column to numpy plus a null mask and its kind."""
    kind, spec = _spec_of(name, schema)
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"column '{name}': expected an array or list of values, got {values!r}")
    nulls = _null_mask(values)
    if kind == "dense":
        dim = spec.dim
        if nulls is not None:
            filled = [np.zeros(dim, np.float32) if v is None else v for v in values]
        else:
            filled = values
        arr = np.asarray(filled, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != dim:
            raise ValueError(
                f"column '{name}' is dense with dim {dim}: expected a [rows, {dim}] "
                f"array, got shape {arr.shape}"
            )
        return {"kind": kind, "spec": spec, "values": arr, "nulls": nulls}
    if kind == "multi_categorical":
        sep = spec.separator
        out = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            if v is None:
                out[i] = ""
            elif isinstance(v, (str, bytes)):
                out[i] = v.decode() if isinstance(v, bytes) else v
            else:
                out[i] = sep.join(str(t) for t in v)
        return {"kind": kind, "spec": spec, "values": out, "nulls": nulls}
    if kind == "categorical":
        if spec.dtype == "int64":
            filled = [0 if v is None else v for v in values] if nulls is not None else values
            arr = np.asarray(filled, dtype=np.int64)
        else:
            arr = np.empty(len(values), dtype=object)
            for i, v in enumerate(values):
                arr[i] = "" if v is None else (v.decode() if isinstance(v, bytes) else str(v))
        return {"kind": kind, "spec": spec, "values": arr, "nulls": nulls}
    if kind in ("numeric", "label"):
        filled = [np.nan if v is None else v for v in values] if nulls is not None else values
        arr = np.asarray(filled, dtype=np.float32)
        if arr.ndim != 1:
            raise ValueError(f"column '{name}': expected one number per row, got shape {arr.shape}")
        return {"kind": kind, "spec": spec, "values": arr, "nulls": nulls}
    # Column not in the schema: keep numpy's type.
    if nulls is not None:
        arr = np.asarray(values, dtype=object)
    else:
        arr = np.asarray(values)
    if arr.dtype.kind in "US":
        arr = arr.astype(object)
    return {"kind": kind, "spec": spec, "values": arr, "nulls": nulls}


# ------------------------------------------------------------------- parquet
def _arrow_array(col: dict):
    import pyarrow as pa

    values, nulls, kind = col["values"], col["nulls"], col["kind"]
    if kind == "dense":
        dim = values.shape[1]
        flat = pa.array(values.reshape(-1), type=pa.float32())
        offsets = pa.array(np.arange(0, (len(values) + 1) * dim, dim, dtype=np.int32))
        if nulls is not None:
            return pa.ListArray.from_arrays(offsets, flat, mask=pa.array(nulls))
        return pa.ListArray.from_arrays(offsets, flat)
    if kind in ("numeric", "label"):
        return pa.array(values, type=pa.float32(), mask=nulls)
    if kind == "categorical" and col["spec"].dtype == "int64":
        return pa.array(values, type=pa.int64(), mask=nulls)
    if kind in ("categorical", "multi_categorical"):
        return pa.array(values, type=pa.string(), mask=nulls)
    if values.dtype == object:
        return pa.array(list(values))
    return pa.array(values)


def _write_parquet(path: str, prepared: Mapping[str, dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({name: _arrow_array(col) for name, col in prepared.items()})
    pq.write_table(table, path)


# ----------------------------------------------------------------------- csv
def _csv_array(col: dict):
    """Arrow array for CSV: dense vectors become separator-joined text."""
    import pyarrow as pa

    if col["kind"] != "dense":
        return _arrow_array(col)
    sep = col["spec"].separator
    values = col["values"]
    # repr-exact float32 text; vectorised per element, joined per row.
    text = np.char.mod("%.9g", values.astype(np.float64))
    joined = np.empty(len(values), dtype=object)
    for i in range(len(values)):
        joined[i] = sep.join(text[i])
    return pa.array(joined, type=pa.string(), mask=col["nulls"])


def _write_csv(path: str, prepared: Mapping[str, dict]) -> None:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    table = pa.table({name: _csv_array(col) for name, col in prepared.items()})
    pcsv.write_csv(table, path)


# ------------------------------------------------------------------ tfrecord
# tf.Example protos are encoded directly (protobuf wire format) rather than
# built as Python proto objects, which is ~10x faster per row:
#   Example    { Features features = 1; }
#   Features   { map<string, Feature> feature = 1; }   (entries: key = 1, value = 2)
#   Feature    { oneof { BytesList = 1; FloatList = 2; Int64List = 3; } }
#   *List      { repeated value = 1 [packed for float / int64]; }
def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # negative int64 are encoded as 10-byte two's complement
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + _varint(len(payload)) + payload


def _entry(name: bytes, feature: bytes) -> bytes:
    """One ``Features.feature`` map entry, with its ``Features`` field header."""
    return _field(0x0A, _field(0x0A, name) + _field(0x12, feature))


def _float_entries(name: bytes, values: np.ndarray) -> list[bytes]:
    """Entries for float rows ``[n]`` or ``[n, dim]``: all have the same prefix."""
    flat = np.ascontiguousarray(values, dtype="<f4").reshape(len(values), -1)
    dim = flat.shape[1]
    probe = _entry(name, _field(0x12, _field(0x0A, b"\0" * 4 * dim)))
    prefix = probe[: len(probe) - 4 * dim]
    rows = flat.view(np.uint8).reshape(len(values), 4 * dim)
    return [prefix + row for row in map(bytes, rows)]


def _int_entries(name: bytes, values: np.ndarray) -> list[bytes]:
    return [_entry(name, _field(0x1A, _field(0x0A, _varint(int(v))))) for v in values.tolist()]


def _bytes_entries(name: bytes, values) -> list[bytes]:
    out = []
    for v in values:
        data = v if isinstance(v, bytes) else str(v).encode("utf-8")
        out.append(_entry(name, _field(0x0A, _field(0x0A, data))))
    return out


def _write_tfrecord(path: str, prepared: Mapping[str, dict]) -> None:
    import tensorflow as tf

    n = len(next(iter(prepared.values()))["values"]) if prepared else 0
    columns = []
    for name, col in prepared.items():
        values, nulls, kind = col["values"], col["nulls"], col["kind"]
        key = name.encode("utf-8")
        if kind in ("dense", "numeric", "label") or values.dtype.kind == "f":
            entries = _float_entries(key, values)
        elif values.dtype.kind in "iub":
            entries = _int_entries(key, values)
        else:
            entries = _bytes_entries(key, values.tolist())
        if nulls is not None:  # a null is a feature missing from the Example
            entries = [b"" if null else e for e, null in zip(entries, nulls.tolist())]
        columns.append(entries)
    with tf.io.TFRecordWriter(path) as writer:
        for row in zip(*columns) if columns else ():
            features = b"".join(row)
            writer.write(_field(0x0A, features))
