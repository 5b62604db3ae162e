"""TF Serving warmup requests (``assets.extra/tf_serving_warmup_requests``).

TF Serving replays the records of this TFRecord file when it loads a version,
before the version takes traffic, so the first real requests do not pay for
graph initialisation.  Each record is a
``tensorflow_serving.apis.prediction_log_pb2.PredictionLog`` holding a
``PredictLog`` whose ``PredictRequest`` carries raw feature tensors.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

import numpy as np

from matta_rec.data.schema import Schema

WARMUP_FILE = "tf_serving_warmup_requests"
ASSETS_EXTRA = "assets.extra"
DEFAULT_BATCH_SIZES = (1, 2, 8, 32, 128)


def _feature_array(spec, values) -> np.ndarray:
    if spec.raw_dtype == "string":
        arr = np.asarray(values)
        if arr.dtype.kind == "S":
            return arr
        return np.array(
            [v if isinstance(v, bytes) else ("" if v is None else str(v)).encode("utf-8")
             for v in arr.reshape(-1).tolist()],
            dtype=object,
        )
    if spec.raw_dtype == "int64":
        return np.asarray(values, dtype=np.int64)
    arr = np.asarray(values)
    if spec.kind == "dense" and arr.dtype == object and arr.ndim == 1 and len(arr):
        arr = np.stack([np.asarray(v, np.float32) for v in arr])
    return arr.astype(np.float32)


def rows_to_arrays(rows: Mapping, schema: Schema) -> dict[str, np.ndarray]:
    """Raw feature arrays in the dtypes of the serving signature."""
    out = {}
    for spec in schema.features:
        if spec.name not in rows:
            from matta_rec.export.publish import ExportError

            raise ExportError(
                f"warmup rows lack feature '{spec.name}'; pass rows holding every schema feature"
            )
        out[spec.name] = _feature_array(spec, rows[spec.name])
    return out


def _num_rows(arrays: Mapping[str, np.ndarray]) -> int:
    return min(len(v) for v in arrays.values()) if arrays else 0


def build_warmup_requests(
    rows: Mapping,
    schema: Schema,
    model_name: str,
    *,
    signature_name: str = "serving_default",
    batch_sizes: Iterable[int] = DEFAULT_BATCH_SIZES,
) -> list:
    """``PredictionLog`` records carrying real raw rows.

    Args:
        rows: ``{feature_name: array}`` of raw rows (e.g. the first rows of the
            training stream).
        schema: the feature schema (sets each tensor's dtype and name).
        model_name: TF Serving model name (``model_spec.name``), i.e. the size
            directory name.
        signature_name: signature the requests target.
        batch_sizes: one request per batch size, each made of consecutive rows
            (sizes larger than the available rows are capped; duplicates dropped).

    Returns:
        A list of ``PredictionLog`` protos.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    arrays = rows_to_arrays(rows, schema)
    n = _num_rows(arrays)
    if n == 0:
        return []
    logs, seen, start = [], set(), 0
    for size in batch_sizes:
        size = min(int(size), n)
        if size <= 0 or size in seen:
            continue
        seen.add(size)
        if start + size > n:
            start = 0
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
        )
        for name, values in arrays.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(values[start : start + size]))
        start += size
        logs.append(
            prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
        )
    return logs


def write_warmup(version_dir: str, logs: Iterable) -> str:
    """Write records to ``version_dir/assets.extra/tf_serving_warmup_requests``."""
    import tensorflow as tf

    folder = os.path.join(version_dir, ASSETS_EXTRA)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_warmup(path: str) -> list:
    """Read the ``PredictionLog`` records of a warmup file (or version dir)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    if os.path.isdir(path):
        path = os.path.join(path, ASSETS_EXTRA, WARMUP_FILE)
    logs = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    return logs


def request_inputs(log) -> dict[str, np.ndarray]:
    """The input arrays of one warmup ``PredictionLog``."""
    import tensorflow as tf

    return {k: tf.make_ndarray(v) for k, v in log.predict_log.request.inputs.items()}
