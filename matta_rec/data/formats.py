"""Per-format shard readers: one shard file -> one ``pyarrow.Table``.

Each reader returns the schema's columns that the file holds, typed as close
to the raw representation as the format allows (CSV and TFRecord columns are
parsed with the schema's types; Parquet columns keep the file's types).
Whether the columns are *right* (present, typed, finite, in range) is the job
of :mod:`matta_rec.data.validation`; a reader only raises
:class:`~matta_rec.errors.DataError` when the file cannot be read at all
(empty, truncated, corrupt) or a CSV / TFRecord value cannot be parsed as the
schema's type, naming the file, column and row.

A TFRecord file has no footer: one cut exactly at a record boundary reads
as a shorter, valid file (a cut anywhere else is reported as truncated).

Example:

>>> table = read_shard("logs/dt=2026-11-01/hour=07/part-0.parquet", schema)
>>> table.num_rows
4096
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import uuid
from typing import Callable

import numpy as np
import pyarrow as pa

from matta_rec.errors import DataError
from matta_rec.data import filesystem as fs
from matta_rec.data.schema import Schema
from matta_rec.data.writers import FORMATS, format_of

__all__ = ["read_shard", "read_parquet", "read_csv", "read_tfrecord", "UNREADABLE_FIX"]

UNREADABLE_FIX = (
    "re-write the shard (it is empty, truncated or corrupt), or pass "
    "--set data.skip_bad_shards=true to quarantine it and continue"
)


def _expected_kind(name: str, schema: Schema) -> str:
    if name in schema.feature_names:
        spec = schema.feature(name)
        if spec.kind == "categorical":
            return "int64" if spec.dtype == "int64" else "string"
        return {"numeric": "float", "multi_categorical": "string", "dense": "dense"}[spec.kind]
    return "float"  # labels


def _check_not_empty(path: str) -> "str | pa.Buffer":
    """What the readers read: the local path itself (read in place), or the
    whole object of a remote URI as one buffer (one request)."""
    try:
        if fs.is_uri(path):
            source = fs.read_bytes(path)
            size = source.size
        else:
            source, size = path, os.path.getsize(path)
    except OSError as exc:
        raise DataError(f"cannot open the shard ({exc})", file=path, fix=UNREADABLE_FIX) from exc
    if size == 0:
        raise DataError("the file is empty (0 bytes)", file=path, fix=UNREADABLE_FIX)
    return source


def _binary(source: "str | pa.Buffer"):
    """A readable binary file over a local path or a buffer (each call a new one)."""
    return open(source, "rb") if isinstance(source, str) else pa.BufferReader(source)


def _arrow_input(source: "str | pa.Buffer"):
    """What pyarrow's readers take: the path (its own fast local reads) or a buffer reader."""
    return source if isinstance(source, str) else pa.BufferReader(source)


# ------------------------------------------------------------------- parquet
def read_parquet(path: str, schema: Schema) -> pa.Table:
    """Read the schema's columns of a Parquet shard (other columns are skipped).

    Args:
        path: the shard.
        schema: the feature schema.
    """
    import pyarrow.parquet as pq

    source = _check_not_empty(path)
    try:
        handle = pq.ParquetFile(_arrow_input(source))
        present = set(handle.schema_arrow.names)
        wanted = [c for c in schema.columns if c in present]
        table = handle.read(columns=wanted, use_threads=True)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"not a readable Parquet file: truncated or corrupt ({exc})",
            file=path,
            fix=UNREADABLE_FIX,
        ) from exc
    return table.combine_chunks()


# ----------------------------------------------------------------------- csv
def _csv_header(source: "str | pa.Buffer") -> list[str]:
    with io.TextIOWrapper(_binary(source), encoding="utf-8", newline="") as handle:
        try:
            return next(csv.reader(handle))
        except StopIteration:
            return []


def _first_bad_csv_line(source: "str | pa.Buffer", expected: int) -> tuple[int, int] | None:
    """(0-based data row, column count) of the first row with a wrong column count."""
    with io.TextIOWrapper(_binary(source), encoding="utf-8", newline="", errors="replace") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for row_index, fields in enumerate(reader):
            if len(fields) != expected:
                return row_index, len(fields)
    return None


def _locate_conversion_error(path: str, schema: Schema, present: list[str],
                             source: "str | pa.Buffer | None" = None) -> DataError:
    """Re-read a CSV as text and find the first value not parseable as its type."""
    import pyarrow.csv as pcsv
    import pyarrow.compute as pc

    table = pcsv.read_csv(
        _arrow_input(path if source is None else source),
        convert_options=pcsv.ConvertOptions(
            include_columns=present,
            column_types={c: pa.string() for c in present},
            strings_can_be_null=True,
        ),
    )
    for name in present:
        kind = _expected_kind(name, schema)
        if kind == "string":
            continue
        target = pa.int64() if kind == "int64" else pa.float32()
        text = table.column(name).combine_chunks()
        if kind == "dense":
            sep = schema.feature(name).separator
            flat_rows = pc.split_pattern(text, sep)
            ok = _row_ok(flat_rows, lambda arr: pc.cast(arr, pa.list_(target)))
        else:
            ok = _row_ok(text, lambda arr: pc.cast(arr, target))
        if ok is not None:
            row = int(np.flatnonzero(~ok)[0])
            value = text[row].as_py()
            type_name = {"int64": "an integer", "float": "a number", "dense": "numbers"}[kind]
            return DataError(
                f"value {value!r} (line {row + 2} of the file) is not {type_name}; wrong type "
                f"for a {_describe(name, schema)} column",
                file=path,
                column=name,
                row=row,
                fix=f"write column '{name}' as {_describe_raw(name, schema)}, or correct the "
                "schema",
            )
    return DataError(
        "the CSV cannot be parsed with the schema's column types",
        file=path,
        fix=UNREADABLE_FIX,
    )


def _row_ok(array: pa.Array, cast: Callable) -> np.ndarray | None:
    """Boolean mask of rows that ``cast`` accepts, or ``None`` when all are fine."""
    try:
        cast(array)
        return None
    except pa.ArrowException:
        pass
    ok = np.ones(len(array), dtype=bool)
    # Bisect down to single rows: O(bad rows * log n) casts, only on the error path.
    stack = [(0, len(array))]
    while stack:
        lo, hi = stack.pop()
        try:
            cast(array.slice(lo, hi - lo))
        except pa.ArrowException:
            if hi - lo == 1:
                ok[lo] = False
                return ok  # the first bad row is enough
            mid = (lo + hi) // 2
            stack.append((mid, hi))
            stack.append((lo, mid))
    return ok


def _describe(name: str, schema: Schema) -> str:
    if name in schema.feature_names:
        return f"'{schema.feature(name).kind}' feature"
    return "label"


def _describe_raw(name: str, schema: Schema) -> str:
    kind = _expected_kind(name, schema)
    if kind == "dense":
        spec = schema.feature(name)
        return f"{spec.dim} numbers joined by '{spec.separator}'"
    return {"int64": "integers", "float": "numbers", "string": "text"}[kind]


def read_csv(path: str, schema: Schema) -> pa.Table:
    """Read a CSV shard (header row, comma-separated) with the schema's types.

    Dense vectors are ``separator``-joined numbers in one field and come back
    as ``list<float32>``. An empty numeric field is a null; an empty text field
    is the empty string (CSV cannot tell it from a null).

    Args:
        path: the shard.
        schema: the feature schema.
    """
    import pyarrow.csv as pcsv
    import pyarrow.compute as pc

    source = _check_not_empty(path)
    try:
        header = _csv_header(source)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(
            f"not a readable CSV file ({exc})", file=path, fix=UNREADABLE_FIX
        ) from exc
    present = [c for c in schema.columns if c in header]
    types = {}
    for name in present:
        kind = _expected_kind(name, schema)
        types[name] = {
            "string": pa.string(),
            "int64": pa.int64(),
            "float": pa.float32(),
            "dense": pa.string(),
        }[kind]
    try:
        table = pcsv.read_csv(
            _arrow_input(source),
            convert_options=pcsv.ConvertOptions(
                include_columns=present,
                column_types=types,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        message = str(exc)
        if "conversion error" in message:
            raise _locate_conversion_error(path, schema, present, source) from exc
        bad = None
        if "columns" in message:
            bad = _first_bad_csv_line(source, len(header))
        if bad is not None:
            row, count = bad
            raise DataError(
                f"line {row + 2} has {count} fields, the header has {len(header)}: the file "
                "is truncated or corrupt",
                file=path,
                row=row,
                fix=UNREADABLE_FIX,
            ) from exc
        raise DataError(
            f"not a readable CSV file ({message})", file=path, fix=UNREADABLE_FIX
        ) from exc
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"not a readable CSV file ({exc})", file=path, fix=UNREADABLE_FIX) from exc
    table = table.combine_chunks()
    for name in present:
        if _expected_kind(name, schema) != "dense":
            continue
        spec = schema.feature(name)
        text = table.column(name).combine_chunks()
        # Empty field = null vector (the writer writes a null vector as "").
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
        split = pc.split_pattern(text, spec.separator)
        try:
            vectors = pc.cast(split, pa.list_(pa.float32()))
        except pa.ArrowException as exc:
            raise _locate_conversion_error(path, schema, present, source) from exc
        table = table.set_column(table.schema.get_field_index(name), name, vectors)
    return table


# ------------------------------------------------------------------ tfrecord
_TF_TYPES = {"string": "string", "int64": "int64", "float": "float32", "dense": "float32"}


def _tf_types(schema: Schema) -> dict:
    """``{column: tf dtype name}`` the schema expects in a ``tf.Example``."""
    return {name: _TF_TYPES[_expected_kind(name, schema)] for name in schema.columns}


def _record_iterator():
    """``tf_record_iterator`` without its deprecation notice, or ``None``."""
    try:
        from tensorflow.python.lib.io import tf_record
        from tensorflow.python.util import deprecation
    except ImportError:  # pragma: no cover - depends on TF internals
        return None
    function = getattr(tf_record, "tf_record_iterator", None)
    if function is None:  # pragma: no cover
        return None

    def iterate(path):
        with deprecation.silence():
            yield from function(path)

    return iterate


def _read_records(path: str, tf_path: str | None = None, size: int | None = None):
    """Every record of a TFRecord file (``tf_path``: where TensorFlow reads
    it, default ``path``; ``size``: its bytes, default read from disk)."""
    import tensorflow as tf

    tf_path = path if tf_path is None else tf_path
    batches = []
    try:
        iterator = _record_iterator()
        if iterator is not None:
            # The C++ record reader (checks every CRC): several times faster per
            # shard than building a TFRecordDataset pipeline eagerly.
            records = list(iterator(tf_path))
            if records:
                batches.append(tf.constant(records, dtype=tf.string))
        else:
            for batch in tf.data.TFRecordDataset(tf_path, buffer_size=1 << 22).batch(1 << 16):
                batches.append(batch)
    except (tf.errors.DataLossError, tf.errors.OutOfRangeError, tf.errors.InvalidArgumentError) as exc:
        raise DataError(
            f"not a readable TFRecord file: truncated or corrupt ({exc.message.replace(tf_path, path)})",
            file=path,
            fix=UNREADABLE_FIX,
        ) from exc
    records = (
        tf.constant([], dtype=tf.string)
        if not batches
        else (tf.concat(batches, axis=0) if len(batches) > 1 else batches[0])
    )
    # TFRecordDataset stops quietly at a cut-off last record; a record takes
    # its length + 16 framing bytes, so compare with the file size.
    spanned = int(tf.reduce_sum(tf.strings.length(records, unit="BYTE"))) + 16 * int(records.shape[0])
    size = os.path.getsize(path) if size is None else size
    if spanned != size:
        raise DataError(
            f"the file is truncated: its {int(records.shape[0])} complete records span {spanned} "
            f"of its {size} bytes, record {int(records.shape[0])} is cut off",
            file=path,
            row=int(records.shape[0]),
            fix=UNREADABLE_FIX,
        )
    return records


def _parse(records, features: dict) -> dict:
    import tensorflow as tf

    specs = {
        name: tf.io.RaggedFeature(dtype=getattr(tf, dtype), row_splits_dtype=tf.int64)
        for name, dtype in features.items()
    }
    return tf.io.parse_example(records, specs)


def _first_bad_record(records, name: str, dtype: str) -> int:
    import tensorflow as tf

    n = int(records.shape[0])
    lo, hi = 0, n
    while hi - lo > 1:  # bisect: the error path only
        mid = (lo + hi) // 2
        try:
            _parse(records[lo:mid], {name: dtype})
            lo = mid
        except tf.errors.InvalidArgumentError:
            hi = mid
    return lo


def _first_non_utf8(values: np.ndarray) -> int | None:
    """Row of the first ``bytes`` value that is not UTF-8 (the error path only)."""
    for row, value in enumerate(values):
        if isinstance(value, bytes):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return row
    return None


def _dense_array(values: np.ndarray, splits: np.ndarray) -> pa.ListArray:
    """A dense feature's list column from parsed values and row splits (a
    row without values is a null)."""
    lengths = np.diff(splits)
    mask = pa.array(lengths == 0) if (lengths == 0).any() else None
    return pa.ListArray.from_arrays(
        pa.array(splits.astype(np.int32)), pa.array(values, type=pa.float32()), mask=mask
    )


def _table(columns: dict, n: int) -> pa.Table:
    """The shard's table; with no column present, a table that still has
    the shard's ``n`` rows."""
    return pa.table(columns) if columns else pa.table({"__rows__": pa.nulls(n)}).drop(["__rows__"])


_SHARD_DECODERS: dict = {}


def _shard_decoder(columns: dict):
    """A traced ``path -> columns`` for one schema's ``{column: (dtype, shape)}``.

    Reads every record of the shard with ``TFRecordDataset`` (CRC checked),
    parses them with ``tf.io.parse_example`` into fixed-length features (one
    value per scalar, ``dim`` values per dense vector, no default: a missing,
    repeated or differently typed value fails the call) and lays each string
    column out as one UTF-8 buffer plus per-value byte lengths: one call that
    runs in C++ without holding the GIL (the stream's read-ahead thread
    decodes while the consumer runs), and no Python object per value.
    Fixed-length parsing is cheaper than ragged parsing (docs/benchmarks.md,
    Input throughput).
    """
    import tensorflow as tf

    key = tuple(sorted(columns.items()))
    decoder = _SHARD_DECODERS.get(key)
    if decoder is not None:
        return decoder
    specs = {
        name: tf.io.FixedLenFeature(shape, getattr(tf, dtype)) for name, (dtype, shape) in columns.items()
    }

    @tf.function(input_signature=[tf.TensorSpec((), tf.string)], autograph=False)
    def decode(path):
        records = (
            tf.data.TFRecordDataset(path, buffer_size=1 << 22).batch(1 << 40).get_single_element()
        )
        parsed = tf.io.parse_example(records, specs)
        out = {}
        for name, values in parsed.items():
            if values.dtype == tf.string:
                out[name] = (tf.strings.reduce_join(values), tf.strings.length(values, unit="BYTE"))
            else:
                out[name] = (values,)
        spanned = tf.reduce_sum(tf.cast(tf.strings.length(records, unit="BYTE"), tf.int64))
        return out, spanned, tf.shape(records, out_type=tf.int64)[0]

    _SHARD_DECODERS[key] = decode
    return decode


def _read_tfrecord_fast(path: str, schema: Schema, wanted: dict,
                        tf_path: str | None = None, size: int | None = None) -> pa.Table | None:
    """The common case of :func:`read_tfrecord`, or ``None`` to take the
    value-by-value path (which names the file, column and row of a problem):
    any read or parse error, a truncated file, a column stored with another
    type, a missing or repeated value, a vector of another length, text that
    is not UTF-8. ``tf_path`` / ``size`` as for :func:`_read_records`."""
    import tensorflow as tf

    kinds = {name: _expected_kind(name, schema) for name in schema.columns}
    shapes = {
        name: (schema.feature(name).dim,) if kinds[name] == "dense" else () for name in schema.columns
    }
    try:
        columns, spanned, n = _shard_decoder(
            {name: (dtype, shapes[name]) for name, dtype in wanted.items()}
        )(tf.constant(path if tf_path is None else tf_path))
    except tf.errors.OpError:
        return None
    n = int(n)
    if int(spanned) + 16 * n != (os.path.getsize(path) if size is None else size):
        return None
    out = {}
    for name in schema.columns:
        kind = kinds[name]
        if kind == "dense":
            dim = shapes[name][0]
            out[name] = pa.FixedSizeListArray.from_arrays(
                pa.array(columns[name][0].numpy().reshape(-1), type=pa.float32()), dim
            ).cast(pa.list_(pa.float32()))
        elif kind == "string":
            data, lengths = columns[name]
            data = data.numpy()
            if len(data) >= 1 << 31:
                return None
            offsets = np.zeros(n + 1, np.int32)
            np.cumsum(lengths.numpy(), out=offsets[1:])
            array = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
            try:
                array.validate(full=True)  # UTF-8
            except pa.ArrowException:
                return None
            out[name] = array
        else:
            arrow_type = {"int64": pa.int64(), "float": pa.float32()}[kind]
            out[name] = pa.array(columns[name][0].numpy(), type=arrow_type)
    return _table(out, n)


def read_tfrecord(path: str, schema: Schema) -> pa.Table:
    """Read a TFRecord shard of ``tf.Example`` protos with the schema's types.

    A feature missing from an Example is a null; a feature missing from every
    Example is a missing column. Numeric and label columns may be stored as
    ``float_list`` or ``int64_list``.

    A well-formed shard (one value per scalar feature, the schema's types,
    UTF-8 text) is decoded in one traced TensorFlow call; anything else is
    read value by value, which is slower but names the row of a problem.

    A shard on an object store (TensorFlow cannot open ``s3://``) is read
    through :mod:`matta_rec.data.filesystem` and handed to TensorFlow as an
    in-memory file (``ram://``), so CRCs are checked the same way; errors
    name the URI.

    Args:
        path: the shard (a local path or a URI).
        schema: the feature schema.
    """
    source = _check_not_empty(path)
    wanted = _tf_types(schema)
    if isinstance(source, str):
        table = _read_tfrecord_fast(path, schema, wanted)
        return table if table is not None else _read_tfrecord_by_value(path, schema, wanted)
    import tensorflow as tf

    ram = f"ram://matta_rec/{uuid.uuid4().hex}/{posixpath.basename(path)}"
    try:
        tf.io.write_file(ram, tf.constant(source.to_pybytes()))
        table = _read_tfrecord_fast(path, schema, wanted, ram, source.size)
        if table is None:
            table = _read_tfrecord_by_value(path, schema, wanted, ram, source.size)
        return table
    finally:
        if tf.io.gfile.exists(ram):
            tf.io.gfile.remove(ram)


def _read_tfrecord_by_value(path: str, schema: Schema, wanted: dict,
                            tf_path: str | None = None, size: int | None = None) -> pa.Table:
    """:func:`read_tfrecord` value by value: int64-stored numbers, missing
    values, and every error with its file, column and row."""
    import tensorflow as tf

    records = _read_records(path, tf_path, size)
    try:
        parsed = _parse(records, wanted)
    except tf.errors.InvalidArgumentError:
        parsed = {}
        for name, dtype in wanted.items():
            alternatives = [dtype] + (["int64"] if dtype == "float32" else [])
            for alt in alternatives:
                try:
                    parsed[name] = _parse(records, {name: alt})[name]
                    break
                except tf.errors.InvalidArgumentError:
                    continue
            else:
                row = _first_bad_record(records, name, dtype)
                raise DataError(
                    f"record {row} stores the wrong type for a {_describe(name, schema)} "
                    f"(expected a {'bytes_list' if dtype == 'string' else dtype.replace('32', '') + '_list'})",
                    file=path,
                    column=name,
                    row=row,
                    fix=f"write column '{name}' as {_describe_raw(name, schema)}, or correct "
                    "the schema",
                )
    n = int(records.shape[0])
    columns = {}
    for name in schema.columns:
        ragged = parsed[name]
        values = ragged.flat_values.numpy()
        splits = ragged.row_splits.numpy()
        if n and splits[-1] == 0:
            continue  # absent everywhere: a missing column
        lengths = np.diff(splits)
        kind = _expected_kind(name, schema)
        if values.dtype == np.int64 and kind in ("float", "dense"):
            values = values.astype(np.float32)
        if kind == "dense":
            columns[name] = _dense_array(values, splits)
            continue
        if (lengths > 1).any():
            row = int(np.flatnonzero(lengths > 1)[0])
            raise DataError(
                f"record {row} holds {int(lengths[row])} values; a {_describe(name, schema)} "
                "column takes one value per row",
                file=path,
                column=name,
                row=row,
                fix=f"write one value per row in column '{name}', or declare it as a dense "
                "feature with 'dim'",
            )
        arrow_type = {"string": pa.string(), "int64": pa.int64(), "float": pa.float32()}[kind]
        if kind == "string":
            values = values.astype(object)
        missing = None
        if (lengths == 0).any():
            full = np.empty(n, dtype=values.dtype)
            missing = lengths == 0
            full[~missing] = values
            full[missing] = "" if kind == "string" else 0
            values = full
        try:
            columns[name] = pa.array(values, type=arrow_type, mask=missing)
        except pa.ArrowException as exc:
            raise DataError(
                f"value is not valid UTF-8 text ({exc})", file=path, column=name,
                row=_first_non_utf8(values), fix=f"write column '{name}' as UTF-8 text",
            ) from exc
    return _table(columns, n)


_READERS = {"parquet": read_parquet, "csv": read_csv, "tfrecord": read_tfrecord}


def read_shard(path: str, schema: Schema, format: str | None = None) -> pa.Table:
    """Read one shard with the reader of its format.

    Args:
        path: the shard file.
        schema: the feature schema.
        format: ``"parquet"``, ``"csv"`` or ``"tfrecord"``; by default from the
            extension.

    Returns:
        A ``pyarrow.Table`` with the schema columns found in the file.
    """
    fmt = format or format_of(path)
    if fmt not in FORMATS:
        raise DataError(
            f"unknown shard format {fmt!r}",
            file=path,
            fix="name shards *.parquet, *.csv or *.tfrecord",
        )
    return _READERS[fmt](path, schema)
