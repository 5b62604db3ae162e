"""Load models to evaluate and score a log stream with them.

A *model reference* (``--models`` / ``--baseline``) is one of:

* a SavedModel version directory (holds ``saved_model.pb``), e.g.
  ``exports/student/3``: any SavedModel whose ``serving_default`` signature
  takes raw features by schema name and returns ``probability`` (or
  ``logit``) works, also one not made by ``matta_rec``;
* a size directory of TF Serving versions, e.g. ``exports/student``: the
  highest numeric version is used;
* an export base with ``manifest.json``: every size it lists (parameter
  count, FLOPs, size on disk and latency come from the manifest);
* a training run directory (``metrics.json`` / ``model.keras``): its Student
  head, through :func:`matta_rec.training.load_run`; ``RUN_DIR#ta`` picks
  another level.

Any reference may be prefixed by ``NAME=`` to set the name shown in reports
(``prod=/models/ranker/17``).

Example:

>>> handles = resolve_model("exports", schema)           # every exported size
>>> baseline = resolve_model("prod=/models/ranker", schema)[0]
>>> rows = score_stream(handles + [baseline], "logs/", schema, label="event")
>>> rows.predictions["student"][:3]
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from matta_rec.errors import DataError, MattaError
from matta_rec.data.schema import Schema
from matta_rec.utils.timing import time_calls

__all__ = [
    "ModelHandle",
    "ScoredRows",
    "resolve_model",
    "resolve_models",
    "score_batches",
    "score_stream",
    "label_column",
]

LABEL_CHOICES = ("auto", "event", "teacher")


def _is_savedmodel(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb")) or os.path.isfile(
        os.path.join(path, "saved_model.pbtxt")
    )


def _versions(path: str) -> list[int]:
    out = []
    for entry in os.listdir(path):
        if entry.isdigit() and _is_savedmodel(os.path.join(path, entry)):
            out.append(int(entry))
    return sorted(out)


def _is_run_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "model.keras")) or (
        os.path.isfile(os.path.join(path, "config.yaml"))
        and os.path.isfile(os.path.join(path, "preprocessing.json"))
    )


@dataclasses.dataclass
class ModelHandle:
    """A model to score, with what is known of its size and cost.

    Args:
        name: name shown in reports (unique within an evaluation).
        kind: ``"savedmodel"`` or ``"run"``.
        path: the SavedModel version directory, or the run directory.
        level: for a run, the nesting level scored (``"student"`` ...).
        version: TF Serving version number, when known.
        params: parameter count (manifest, run, or the SavedModel's variables).
        flops: FLOPs per example from the manifest, when known.
        latency_ms: latency from the manifest, when known.
        size_bytes: size on disk from the manifest (or measured).
        run_dir: the training run the model came from, when known.
        info: the raw manifest entry (or ``{}``).
    """

    name: str
    kind: str
    path: str
    level: str | None = None
    version: int | None = None
    params: int | None = None
    flops: float | None = None
    latency_ms: float | None = None
    size_bytes: int | None = None
    run_dir: str | None = None
    info: dict = dataclasses.field(default_factory=dict)
    _fn: Any = dataclasses.field(default=None, repr=False, compare=False)
    _inputs: dict | None = dataclasses.field(default=None, repr=False, compare=False)
    _output: str | None = dataclasses.field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------ loading
    def load(self, schema: Schema) -> "ModelHandle":
        """Load the model (once) and check its inputs against ``schema``."""
        if self._fn is not None:
            return self
        if self.kind == "savedmodel":
            self._load_savedmodel(schema)
        elif self.kind == "run":
            self._load_run(schema)
        else:  # pragma: no cover - constructed internally
            raise MattaError(f"unknown model kind {self.kind!r}")
        return self

    def _load_savedmodel(self, schema: Schema) -> None:
        import tensorflow as tf

        from matta_rec.export.run_export import saved_model_bytes, saved_model_params

        try:
            loaded = tf.saved_model.load(self.path)
        except Exception as exc:  # noqa: BLE001 - TF raises many types
            raise MattaError(
                f"model '{self.name}': cannot load the SavedModel at {self.path} ({exc}); "
                "pass a SavedModel version directory, a size directory or an export base"
            ) from exc
        signatures = getattr(loaded, "signatures", {})
        if "serving_default" not in signatures:
            raise MattaError(
                f"model '{self.name}': the SavedModel at {self.path} has no 'serving_default' "
                f"signature (it has {sorted(signatures)}); export it with a serving_default "
                "endpoint taking the raw features"
            )
        fn = signatures["serving_default"]
        _, kw_specs = fn.structured_input_signature
        raw = schema.raw_signature()
        inputs = {}
        for key, spec in kw_specs.items():
            name = spec.name or key
            if name not in raw and key in raw:
                name = key
            if name not in raw:
                raise MattaError(
                    f"model '{self.name}' ({self.path}): its serving_default input '{key}' is "
                    f"not a feature of the schema {schema.source}; evaluate it with the schema "
                    "it was trained on"
                )
            want = raw[name]
            if spec.dtype != want.dtype:
                raise MattaError(
                    f"model '{self.name}' ({self.path}): input '{key}' has dtype "
                    f"{spec.dtype.name} but the schema's raw dtype of '{name}' is "
                    f"{want.dtype.name}; export the model with schema.raw_signature()"
                )
            if spec.shape.rank is not None and spec.shape.rank != want.shape.rank:
                raise MattaError(
                    f"model '{self.name}' ({self.path}): input '{key}' has shape {spec.shape} "
                    f"but the schema gives {want.shape} for '{name}'"
                )
            inputs[key] = (name, spec.dtype)
        outputs = fn.structured_outputs
        if "probability" in outputs:
            self._output = "probability"
        elif "logit" in outputs:
            self._output = "logit"
        else:
            raise MattaError(
                f"model '{self.name}' ({self.path}): serving_default returns {sorted(outputs)}; "
                "it must return 'probability' (or 'logit')"
            )
        self._fn = fn
        self._inputs = inputs
        if self.params is None:
            variables = getattr(loaded, "trainable_variables", None) or getattr(
                loaded, "variables", None
            )
            if variables:
                self.params = int(sum(int(np.prod(v.shape)) for v in variables))
            else:
                self.params = saved_model_params(self.path)
        if self.size_bytes is None:
            self.size_bytes = saved_model_bytes(self.path)
        self._loaded = loaded  # keep the resources alive

    def _load_run(self, schema: Schema) -> None:
        import tensorflow as tf

        from matta_rec.training import load_run

        run = load_run(self.path)
        model = run.model
        levels = _levels_of(run)
        if levels and self.level not in levels:
            raise MattaError(
                f"run {self.path} has levels {list(levels)}, not '{self.level}'; use "
                f"RUN_DIR#<level> with one of them"
            )
        raw = schema.raw_signature()
        self._inputs = {name: (name, spec.dtype) for name, spec in raw.items()}
        level = self.level

        # One trace per model: the raw signature has a dynamic batch dimension.
        @tf.function(input_signature=[raw])
        def call(features):
            out = model(features, training=False)
            logit = out[level] if isinstance(out, Mapping) else out
            return {"logit": tf.reshape(tf.cast(logit, tf.float32), [-1])}

        self._fn = lambda **features: call(features)
        self._output = "logit"
        if self.params is None:
            self.params = _run_level_params(model, level)
        self.run_dir = self.path

    # ------------------------------------------------------------ scoring
    def predict(self, features: Mapping[str, Any]) -> np.ndarray:
        """Probabilities (float64 ``[B]``) for one batch of raw features."""
        import tensorflow as tf

        if self._fn is None:
            raise MattaError(f"model '{self.name}' is not loaded; call load(schema) first")
        kwargs = {}
        for key, (name, dtype) in self._inputs.items():
            if name not in features:
                raise DataError(
                    f"the batch has no column '{name}' that model '{self.name}' needs",
                    column=name,
                    fix="evaluate on data with every schema feature",
                )
            kwargs[key] = tf.convert_to_tensor(features[name], dtype=dtype)
        out = self._fn(**kwargs)
        value = np.asarray(out[self._output], dtype=np.float64).reshape(-1)
        if self._output == "logit":
            value = 1.0 / (1.0 + np.exp(-value))
        return value

    def measure_latency(self, features: Mapping[str, Any], rows: int = 1, repeats: int = 30) -> float:
        """Median wall time (ms) of one call on ``rows`` rows of ``features``."""
        batch = {k: np.asarray(v)[:rows] for k, v in features.items()}
        return time_calls(lambda: self.predict(batch), repeats, warmup=1).median_ms

    def describe(self) -> dict:
        """JSON-safe description (no loaded objects)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "path": self.path,
            "level": self.level,
            "spec": self.info.get("spec"),
            "version": self.version,
            "params": self.params,
            "flops": self.flops,
            "latency_ms": self.latency_ms,
            "size_bytes": self.size_bytes,
            "run_dir": self.run_dir,
        }


def _levels_of(run) -> tuple[str, ...]:
    """Level names of a loaded run: what its model says, else what its config trains."""
    from matta_rec.models import model_levels

    return model_levels(run.model) or tuple(run.config.model_for_mode().levels)


def _run_level_params(model, level: str) -> int | None:
    """Parameters of one level of a run's model (``None`` when it cannot say)."""
    family = getattr(model, "list_submodels", None)
    if family is not None:
        try:
            for info in family():
                if info.name == level:
                    return int(info.params)
        except (MattaError, KeyError, ValueError):
            # A model from a custom model_builder may carry an architecture the
            # Mix'n'Match description does not cover (unknown block kind or
            # key): it has no family, so count the whole model below.
            pass
    try:
        return int(model.count_params())
    except ValueError:  # Keras: a model not built yet has no weights to count
        return None


# --------------------------------------------------------------- resolving
def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        for key in ("p50_ms", "median_ms", "ms", "p50", "mean_ms", "value"):
            if key in value:
                return _num(value[key])
    return None


def _manifest_sizes(manifest: Mapping, source: str) -> list[tuple[str, dict]]:
    sizes = manifest.get("sizes", manifest.get("models"))
    if isinstance(sizes, Mapping):
        return [(str(k), dict(v or {})) for k, v in sizes.items()]
    if isinstance(sizes, list):
        out = []
        for i, entry in enumerate(sizes):
            if not isinstance(entry, Mapping) or "name" not in entry:
                raise MattaError(
                    f"{source}: sizes[{i}] has no 'name'; re-export with matta-rec export"
                )
            out.append((str(entry["name"]), dict(entry)))
        return out
    raise MattaError(f"{source}: no 'sizes' list; re-export with matta-rec export")


def _from_manifest_entry(base: str, size: str, entry: dict, name: str, manifest: Mapping) -> ModelHandle:
    size_dir = os.path.join(base, size)
    version = entry.get("version")
    path = entry.get("path")
    if path and not os.path.isabs(path):
        path = os.path.join(base, path)
    if not path or not _is_savedmodel(path):
        if version is not None and _is_savedmodel(os.path.join(size_dir, str(version))):
            path = os.path.join(size_dir, str(version))
        elif os.path.isdir(size_dir) and _versions(size_dir):
            version = _versions(size_dir)[-1]
            path = os.path.join(size_dir, str(version))
        else:
            raise MattaError(
                f"{os.path.join(base, 'manifest.json')}: size '{size}' has no SavedModel under "
                f"{size_dir}; re-export it (matta-rec export)"
            )
    latency = None
    for key in ("latency_ms", "latency"):
        if key in entry:
            latency = _num(entry[key])
            break
    size_bytes = None
    for key in ("size_bytes", "bytes", "size_on_disk", "disk_bytes"):
        if key in entry:
            size_bytes = _num(entry[key])
            break
    params = _num(entry.get("params"))
    flops = _num(entry.get("flops"))
    run_dir = entry.get("run") or entry.get("run_dir") or manifest.get("run") or manifest.get("run_dir")
    return ModelHandle(
        name=name,
        kind="savedmodel",
        path=path,
        version=int(version) if str(version or "").isdigit() else _version_of(path),
        params=int(params) if params is not None else None,
        flops=flops,
        latency_ms=latency,
        size_bytes=int(size_bytes) if size_bytes is not None else None,
        run_dir=str(run_dir) if isinstance(run_dir, str) else None,
        info=entry,
    )


def _version_of(path: str) -> int | None:
    tail = os.path.basename(os.path.normpath(path))
    return int(tail) if tail.isdigit() else None


def _with_parent_manifest(handle: ModelHandle) -> ModelHandle:
    """Fill size facts of a single SavedModel from its export base's manifest, if any."""
    size_dir = os.path.dirname(os.path.normpath(handle.path))
    base = os.path.dirname(size_dir)
    manifest_path = os.path.join(base, "manifest.json")
    if not os.path.isfile(manifest_path):
        return handle
    try:
        with open(manifest_path, "r", encoding="utf-8") as fh:
            manifest = json.load(fh)
        entries = _manifest_sizes(manifest, manifest_path)
    except (OSError, json.JSONDecodeError, MattaError):
        return handle
    for size, entry in entries:
        if size != os.path.basename(size_dir):
            continue
        found = _from_manifest_entry(base, size, entry, handle.name, manifest)
        if os.path.normpath(found.path) != os.path.normpath(handle.path):
            return handle  # the manifest describes another version
        return found
    return handle


def resolve_model(reference: str, schema: Schema | None = None) -> list[ModelHandle]:
    """Turn one ``--models`` / ``--baseline`` reference into model handles.

    Args:
        reference: ``[NAME=]PATH[#LEVEL]`` (see the module docstring).
        schema: unused for resolution; kept for symmetry with loading.

    Returns:
        One handle, or one per size for an export base with a manifest.

    Raises:
        MattaError: the path does not exist or is none of the known layouts.

    Example:

    >>> [h.name for h in resolve_model("exports")]
    ['student', 'wnw-1', 'ta']
    """
    ref = str(reference)
    name = None
    match = re.match(r"^([A-Za-z0-9_.:+-]+)=(.+)$", ref)
    if match and not os.path.exists(ref):
        name, ref = match.group(1), match.group(2)
    level = None
    if "#" in ref and not os.path.exists(ref):
        ref, level = ref.rsplit("#", 1)
    path = os.path.normpath(ref)
    if not os.path.exists(path):
        raise MattaError(
            f"model path '{ref}' does not exist; pass a SavedModel directory, an export base "
            "with manifest.json, or a training run directory"
        )
    if _is_savedmodel(path):
        if level:
            raise MattaError(f"'{reference}': '#level' applies to run directories only")
        version = _version_of(path)
        default = os.path.basename(os.path.dirname(path)) if version is not None else os.path.basename(path)
        return [_with_parent_manifest(
            ModelHandle(name=name or default, kind="savedmodel", path=path, version=version))]
    if not os.path.isdir(path):
        raise MattaError(f"model path '{ref}' is a file; pass a directory")
    manifest_path = os.path.join(path, "manifest.json")
    if os.path.isfile(manifest_path):
        if level:
            raise MattaError(f"'{reference}': '#level' applies to run directories only")
        try:
            with open(manifest_path, "r", encoding="utf-8") as handle:
                manifest = json.load(handle)
        except json.JSONDecodeError as exc:
            raise MattaError(f"{manifest_path}: not valid JSON ({exc}); re-export") from exc
        entries = _manifest_sizes(manifest, manifest_path)
        prefix = f"{name}/" if name else ""
        handles = [
            _from_manifest_entry(path, size, entry, prefix + size, manifest)
            for size, entry in entries
        ]
        # Smallest first, so tables and plots read along the size axis.
        return sorted(handles, key=lambda h: (h.params is None, h.params or 0, h.name))
    versions = _versions(path)
    if versions:
        if level:
            raise MattaError(f"'{reference}': '#level' applies to run directories only")
        return [_with_parent_manifest(
            ModelHandle(
                name=name or os.path.basename(path),
                kind="savedmodel",
                path=os.path.join(path, str(versions[-1])),
                version=versions[-1],
            )
        )]
    if _is_run_dir(path):
        level = level or "student"
        default = os.path.basename(path) + ("" if level == "student" else f"#{level}")
        return [ModelHandle(name=name or default, kind="run", path=path, level=level, run_dir=path)]
    raise MattaError(
        f"'{ref}' is not a SavedModel (no saved_model.pb), a size directory (no numeric "
        "version sub-directories), an export base (no manifest.json) or a training run "
        "(no model.keras); point --models/--baseline at one of these"
    )


def _explicit_name(reference: str) -> bool:
    match = re.match(r"^([A-Za-z0-9_.:+-]+)=(.+)$", str(reference))
    return bool(match) and not os.path.exists(str(reference))


def _longer_name(handle: ModelHandle, parts: int) -> str:
    """The handle's name prefixed by ``parts`` parent folders of its model."""
    path = os.path.normpath(handle.path)
    if handle.kind == "savedmodel" and handle.version is not None:
        path = os.path.dirname(path)  # drop the version folder
    tail = path.split(os.sep)[-(parts + 1):-1]
    suffix = handle.name.rsplit("#", 1)
    name = os.path.basename(path) + (f"#{suffix[1]}" if len(suffix) == 2 else "")
    return "/".join(tail + [name])


def resolve_models(references: Sequence[str], schema: Schema | None = None) -> list[ModelHandle]:
    """Resolve several references and make the names unique.

    Names given as ``NAME=`` are kept.  Default names that collide (e.g. two
    runs both called ``seed-0``) get their parent folders prepended
    (``shampoo_only/seed-0``); a name that is still taken gets ``-2``, ``-3``...

    Args:
        references: model references (see :func:`resolve_model`).
        schema: passed through.

    Example:

    >>> [h.name for h in resolve_models(["runs/a/seed-0", "runs/b/seed-0"])]
    ['a/seed-0', 'b/seed-0']
    """
    out: list[tuple[ModelHandle, bool]] = []
    for ref in references:
        explicit = _explicit_name(ref)
        out.extend((handle, explicit) for handle in resolve_model(ref, schema))
    for parts in (1, 2, 3):
        counts: dict[str, int] = {}
        for handle, _ in out:
            counts[handle.name] = counts.get(handle.name, 0) + 1
        clashing = [(h, e) for h, e in out if counts[h.name] > 1 and not e]
        if not clashing:
            break
        for handle, _ in clashing:
            handle.name = _longer_name(handle, parts)
    seen: dict[str, int] = {}
    for handle, _ in out:
        count = seen.get(handle.name, 0) + 1
        seen[handle.name] = count
        if count > 1:
            handle.name = f"{handle.name}-{count}"
    return [handle for handle, _ in out]


# ----------------------------------------------------------------- scoring
def label_column(schema: Schema, label: str) -> str:
    """Which label key (``"event"`` or ``"target"``) ``--label`` means.

    Args:
        schema: the schema.
        label: ``"event"`` (0/1 outcomes), ``"teacher"`` (soft Teacher
            probabilities in ``labels.target``) or ``"auto"`` (event when the
            schema has one, else teacher).

    Example:

    >>> label_column(schema, "teacher")
    'target'
    """
    if label not in LABEL_CHOICES:
        raise MattaError(f"--label must be one of {list(LABEL_CHOICES)}, got {label!r}")
    if label == "auto":
        return "event" if schema.labels.event else "target"
    if label == "event":
        if not schema.labels.event:
            raise MattaError(
                f"schema {schema.source} has no labels.event column; use --label teacher "
                "to evaluate against the Teacher probabilities"
            )
        return "event"
    return "target"


@dataclasses.dataclass
class ScoredRows:
    """Labels, weights and every model's probabilities on the same rows.

    Attributes:
        labels: float64 ``[n]`` (0/1 events or soft Teacher labels).
        weights: float64 ``[n]`` or ``None``.
        predictions: ``{model name: float64 [n]}`` probabilities.
        label: ``"event"`` or ``"target"``.
        rows: ``n``.
        latency_ms: ``{model name: measured median ms of a 1-row call}``.
    """

    labels: np.ndarray
    weights: np.ndarray | None
    predictions: dict
    label: str
    rows: int
    latency_ms: dict = dataclasses.field(default_factory=dict)


def score_batches(
    handles: Sequence[ModelHandle],
    batches: Iterable,
    schema: Schema,
    *,
    label: str = "auto",
    max_rows: int | None = None,
    measure_latency: bool = True,
) -> ScoredRows:
    """Score ``(features, labels)`` numpy batches with every model.

    Args:
        handles: models (loaded on first use).
        batches: iterable of ``(features, labels)`` dicts as produced by
            ``LogStream.iter_numpy()`` (labels keys ``target`` / ``event`` /
            ``weight``).
        schema: the schema of the data.
        label: ``"auto"``, ``"event"`` or ``"teacher"``.
        max_rows: stop after this many rows (``None`` = all).
        measure_latency: time a 1-row call of each model on the first batch.

    Returns:
        :class:`ScoredRows`.

    Example:

    >>> rows = score_batches(handles, stream.iter_numpy(), schema, label="event")
    """
    key = label_column(schema, label)
    if not handles:
        raise MattaError("no models to evaluate; pass --models")
    names = [h.name for h in handles]
    if len(set(names)) != len(names):
        raise MattaError(f"model names must be unique, got {names}; use NAME=PATH")
    for h in handles:
        h.load(schema)
    preds: dict[str, list] = {h.name: [] for h in handles}
    labels, weights = [], []
    latency: dict[str, float] = {}
    rows = 0
    for batch in batches:
        features, batch_labels = batch[0], batch[1]
        if key not in batch_labels:
            raise MattaError(f"the data's batches carry no '{key}' label; check the schema")
        y = np.asarray(batch_labels[key], dtype=np.float64).reshape(-1)
        if max_rows is not None and rows + y.size > max_rows:
            keep = max_rows - rows
            features = {k: np.asarray(v)[:keep] for k, v in features.items()}
            batch_labels = {k: np.asarray(v)[:keep] for k, v in batch_labels.items()}
            y = y[:keep]
        if y.size == 0:
            break
        if measure_latency and not latency:
            for h in handles:
                latency[h.name] = h.measure_latency(features, rows=1, repeats=20)
        for h in handles:
            p = h.predict(features)
            if p.size != y.size:
                raise MattaError(
                    f"model '{h.name}' returned {p.size} predictions for a batch of {y.size} rows"
                )
            preds[h.name].append(p)
        labels.append(y)
        if "weight" in batch_labels:
            weights.append(np.asarray(batch_labels["weight"], dtype=np.float64).reshape(-1))
        rows += y.size
        if max_rows is not None and rows >= max_rows:
            break
    if rows == 0:
        raise MattaError("the evaluation data has no rows; check --data")
    return ScoredRows(
        labels=np.concatenate(labels),
        weights=np.concatenate(weights) if weights else None,
        predictions={k: np.concatenate(v) for k, v in preds.items()},
        label=key,
        rows=rows,
        latency_ms=latency,
    )


def score_stream(
    handles: Sequence[ModelHandle],
    data: Any,
    schema: Schema,
    *,
    label: str = "auto",
    batch_size: int = 4096,
    max_rows: int | None = None,
    measure_latency: bool = True,
) -> ScoredRows:
    """Read ``data`` with :class:`matta_rec.data.reader.LogStream` and score it.

    Args:
        handles: models to score.
        data: directory, glob, file or list of files of log shards.
        schema: the schema.
        label: ``"auto"``, ``"event"`` or ``"teacher"``.
        batch_size: rows per scoring call.
        max_rows: stop after this many rows.
        measure_latency: time a 1-row call of each model.

    Example:

    >>> rows = score_stream(resolve_model("exports"), "sample_data", schema)
    """
    from matta_rec.data.reader import LogStream

    if not isinstance(batch_size, int) or batch_size <= 0:
        raise MattaError(f"batch_size must be a positive integer, got {batch_size!r}")
    stream = LogStream(data, schema, batch_size=batch_size)
    return score_batches(
        handles,
        stream.iter_numpy(),
        schema,
        label=label,
        max_rows=max_rows,
        measure_latency=measure_latency,
    )


def finite_or_none(value: Any) -> Any:
    """``None`` for NaN / inf floats (JSON-safe), the value otherwise."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
