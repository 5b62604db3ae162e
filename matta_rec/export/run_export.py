"""Export the chosen sizes of a training run, and write ``manifest.json``.

For each size (``student``, ``ta``, any Mix'n'Match spec such as ``wnw:2``,
every member of the model's family with ``all``, or the members on the
(FLOPs, held-out AucLoss) Pareto front with ``all-pareto``) the run's nested
model is cut down with ``model.extract(spec)`` (only the sliced weights) and
exported with :func:`~matta_rec.export.savedmodel.export_model` to
``EXPORT_BASE/<size_name>/<version>/``.  All sizes of one export share the
version number and the raw-feature signature.

``EXPORT_BASE/manifest.json``::

    {"format_version": 1, "updated_at": "...", "run": RUN_DIR, "version": N,
     "sizes": [{"name": "student", "spec": "student", "version": N,
                "path": "student/N", "params": ..., "saved_params": ...,
                "flops": ..., "size_bytes": ..., "latency_ms": <batch 1 median>,
                "latency": {"1": {...}, "256": {...}}, "run": RUN_DIR,
                "exported_at": "...", "holdout_auc_loss": ...}, ...],
     "holdout": {"source": "...", "rows": R, "label": "event"},
     "pareto": {"axes": ["flops", "holdout_auc_loss"],
                "members": [{"spec", "flops", "holdout_auc_loss", "dominated"}, ...]}}

``sizes`` holds the latest export of every size ever exported to the base.
``holdout_auc_loss`` and ``holdout`` are there when the run's held-out
shards were found (see :mod:`matta_rec.export.holdout`); ``pareto`` lists
every family member of the latest ``all-pareto`` export, dominated ones too.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from matta_rec.errors import MattaError
from matta_rec.export.holdout import NEEDS_HOLDOUT, holdout_auc_losses, locate_holdout
from matta_rec.export.latency import measure_latency
from matta_rec.export.publish import ExportError, existing_versions, local_export_base
from matta_rec.export.savedmodel import export_model
from matta_rec.export.warmup import rows_to_arrays
from matta_rec.utils.files import write_file_atomic
from matta_rec.utils.pareto import non_dominated

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
ALL = "all"
ALL_PARETO = "all-pareto"
DEFAULT_SIZES = ("student", "ta")


def servable_submodel(model, spec):
    """The size ``spec`` of a nested model as a raw-features -> logit model.

    The built-in model's ``extract`` gives that directly; a nestified user
    model (:func:`matta_rec.nestify`) extracts the user's own graph (which
    may end in a sigmoid and take preprocessed inputs), so its
    ``serving_model`` wraps the extraction in the preprocessing and returns
    the logit.
    """
    serving = getattr(model, "serving_model", None)
    return serving(spec) if callable(serving) else model.extract(spec)


def size_dir_name(spec_name: str) -> str:
    """Folder (and TF Serving model) name of a size: ``wnw:2@ta`` -> ``wnw-2-at-ta``."""
    # A block dropped from a mix spec ("-") must stay visible in the name.
    name = re.sub(r"(?<=[:,])-(?=,|$)", "none", spec_name).replace("@", "-at-")
    name = re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-")
    return name or "model"


def saved_model_bytes(path: str) -> int:
    """Size on disk of a SavedModel directory (all files; one that vanishes meanwhile counts 0)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:  # removed while walking (a version being replaced): not there
                pass
    return total


def saved_model_params(path: str) -> int | None:
    """Number of numeric scalars stored in a SavedModel's variables (what it physically holds).

    Args:
        path: a SavedModel directory.

    Returns:
        The count, or ``None`` when the SavedModel stores no numeric
        variables (no ``variables/`` checkpoint, or only string ones).
    """
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
    except tf.errors.OpError:  # NotFoundError / DataLossError: a SavedModel without variables
        return None
    dtypes = reader.get_variable_to_dtype_map()
    total = 0
    for name, shape in reader.get_variable_to_shape_map().items():
        if name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH") or dtypes[name] == tf.string:
            continue
        total += int(np.prod(shape)) if shape else 1
    return total or None


def next_version(export_base: str, size_names: Iterable[str]) -> int:
    """One more than the highest version of any of the sizes (1 if none)."""
    found = [v for name in size_names for v in existing_versions(os.path.join(export_base, name))]
    return max(found) + 1 if found else 1


def read_manifest(export_base: str) -> dict:
    path = os.path.join(export_base, MANIFEST)
    if not os.path.exists(path):
        return {"format_version": MANIFEST_VERSION, "sizes": []}
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise ExportError(
            f"{path} is not valid JSON ({exc}); move it away or fix it before exporting"
        ) from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("sizes", []), list):
        raise ExportError(f"{path} is not a matta_rec export manifest (no 'sizes' list)")
    return dict(data)


def _level_names(model) -> tuple[str, ...]:
    from matta_rec.models import model_levels

    levels = model_levels(model)
    if levels is None:
        raise ExportError("the run's model does not name its levels; is it a NestedRelevanceModel?")
    return levels


@dataclasses.dataclass
class Size:
    """One size to export.

    Args:
        spec: its :class:`~matta_rec.models.SubmodelSpec`.
        info: its ``SubmodelInfo`` (params, FLOPs) when it is a family member.
        pareto: it came from ``all-pareto`` (kept only when not dominated).
    """

    spec: Any
    info: Any = None
    pareto: bool = False

    @property
    def name(self) -> str:
        return self.spec.name


def _split_sizes(sizes: Sequence[str] | str) -> list[str]:
    if isinstance(sizes, str):
        sizes = [s for s in sizes.split(",") if s.strip()]
    sizes = [str(s).strip() for s in sizes]
    if not sizes:
        raise ExportError("no sizes to export; pass e.g. --sizes student,ta")
    return sizes


def _check_dir_names(chosen: Sequence[Size]) -> None:
    dirs = {}
    for size in chosen:
        d = size_dir_name(size.name)
        if d in dirs:
            raise ExportError(
                f"sizes {dirs[d]!r} and {size.name!r} map to the same folder '{d}'; export "
                "them separately"
            )
        dirs[d] = size.name


def resolve_sizes(model, sizes: Sequence[str] | str) -> list[Size]:
    """The requested sizes as :class:`Size` objects, validated against the model.

    ``all`` is every member of the model's family (``model.list_submodels()``);
    ``all-pareto`` is the same members marked :attr:`Size.pareto`, to be
    filtered by :func:`pareto_sizes` once their held-out AucLoss is known.
    A size named explicitly is never filtered.
    """
    from matta_rec.models import SubmodelSpec

    sizes = _split_sizes(sizes)
    family = {info.name: info for info in model.list_submodels()}
    levels = _level_names(model)
    if tuple(sizes) == DEFAULT_SIZES:
        # A one-level run (mode student / ta) only has its own size.
        sizes = [s for s in sizes if s in levels] or list(levels)
    chosen: dict[str, Size] = {}
    for text in sizes:
        if text in (ALL, ALL_PARETO):
            found = [Size(info.spec, info, pareto=text == ALL_PARETO) for info in family.values()]
        else:
            try:
                spec = SubmodelSpec.parse(text)
            except MattaError as exc:
                raise ExportError(f"--sizes: {exc}") from exc
            found = [Size(spec, family.get(spec.name))]
        for size in found:
            if size.name in chosen:
                chosen[size.name].pareto &= size.pareto  # named explicitly: always kept
                continue
            architecture = getattr(model, "architecture", None)
            if architecture is not None:
                try:
                    size.spec.resolve(architecture)
                except MattaError as exc:
                    raise ExportError(f"--sizes {text!r}: {exc}") from exc
            chosen[size.name] = size
    _check_dir_names(list(chosen.values()))
    return list(chosen.values())


def pareto_sizes(chosen: Sequence[Size], auc_loss: Mapping[str, float]) -> tuple[list[Size], list]:
    """Drop the ``all-pareto`` members dominated on (FLOPs, held-out AucLoss).

    Domination is decided among the ``all-pareto`` members (the whole
    family); sizes named explicitly are kept whatever their place.

    Args:
        chosen: what :func:`resolve_sizes` returned.
        auc_loss: ``{size name: held-out AucLoss}`` of every pareto member.

    Returns:
        ``(kept sizes, [{"spec", "flops", "holdout_auc_loss", "dominated"}, ...])``
        (the second lists every ``all-pareto`` member, for the manifest).
    """
    members = [s for s in chosen if s.pareto]
    front = {members[i].name for i in non_dominated(
        [(int(s.info.flops), float(auc_loss[s.name])) for s in members])}
    table = [{"spec": s.name, "flops": int(s.info.flops),
              "holdout_auc_loss": float(auc_loss[s.name]), "dominated": s.name not in front}
             for s in members]
    return [s for s in chosen if not s.pareto or s.name in front], table


def _size_facts(model, spec, info) -> tuple[int | None, int | None]:
    """Parameters and FLOPs of a size: its family entry, else counted from its architecture."""
    if info is not None:
        return int(info.params), int(info.flops)
    from matta_rec.models import count_flops, count_params, submodel_architecture

    architecture = getattr(model, "architecture", None)
    features = getattr(getattr(model, "embedding", None), "features", None)
    if architecture is None or features is None:
        return None, None  # a model that does not describe its architecture: facts unknown
    # resolve_sizes already resolved the spec against this architecture.
    sub = submodel_architecture(architecture, spec)
    return int(count_params(sub, features)), int(count_flops(sub, features))


def stream_rows(data, schema, rows: int) -> dict | None:
    """The first ``rows`` rows of a log stream as raw numpy arrays."""
    from matta_rec.data.reader import LogStream

    stream = LogStream(data, schema, batch_size=rows)
    for features, _ in stream.iter_numpy():
        return {k: np.asarray(v) for k, v in features.items()}
    return None


def run_rows(run, rows: int, data=None) -> dict:
    """Real raw rows for warmup / latency: from ``data`` or the run's own record."""
    if data is not None:
        found = stream_rows(data, run.schema, rows)
        if found is None:
            raise ExportError(f"--data {data!r} holds no rows to build warmup requests from")
        return found
    from matta_rec.training.run_dir import RunPaths

    example = RunPaths(run.run_dir).example_rows()
    if example:
        return {k: np.asarray(v) for k, v in example.items()}
    raise ExportError(
        f"run {run.run_dir} keeps no example rows (no checkpoints/state-*.json); pass "
        "--data with the training log shards to build warmup requests"
    )


def _check_version(version) -> None:
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 0):
        raise ExportError(f"--version must be a non-negative integer, got {version!r}")


def _pick_version(export_base: str, names: Sequence[str], version, overwrite: bool) -> int:
    """The version to write: the given one (refused if taken) or the next free one."""
    if version is None:
        version = next_version(export_base, names)
    clashes = [n for n in names if os.path.exists(os.path.join(export_base, n, str(version)))]
    if clashes and not overwrite:
        raise ExportError(
            f"version {version} already exists for {clashes} under {export_base}; pick "
            "another --version (or leave it out for the next one) or pass --overwrite"
        )
    return version


def _measure_holdout(run, chosen: list[Size], subs: dict, data, say) -> tuple[list, dict]:
    """Held-out AucLoss of the sizes; the ``all-pareto`` members filtered by it.

    Returns:
        ``(kept sizes, facts)``: ``facts`` is ``{}`` when no held-out rows
        were found (and no size needs them), else ``{"auc_loss": {name:
        loss}, "holdout": {...}}`` with the ``all-pareto`` table when asked.
    """
    needs = any(s.pareto for s in chosen)
    found = locate_holdout(run, data, allow_data=needs)
    if found is None:
        if needs:
            raise ExportError(NEEDS_HOLDOUT)
        if (run.metrics.get("holdout") or {}).get("shards"):
            say("held-out AucLoss not measured: the run's held-out shards were not found; "
                "pass --data with the training logs' folder to measure it")
        return chosen, {}
    say(f"measuring held-out AucLoss of {len(chosen)} size(s) on {found.source}")
    scores = holdout_auc_losses({s.name: subs[s.name] for s in chosen}, found.files, run.schema)
    holdout = {"source": found.source, "rows": scores.rows, "label": scores.label}
    facts = {"auc_loss": scores.auc_loss, "holdout": holdout}
    if needs:
        kept, table = pareto_sizes(chosen, scores.auc_loss)
        facts["pareto"] = {"axes": ["flops", "holdout_auc_loss"], "members": table}
        dropped = [row["spec"] for row in table if row["dominated"]]
        say(f"all-pareto: {len(table) - len(dropped)} of {len(table)} members on the front"
            + (f"; dominated: {', '.join(dropped)}" if dropped else ""))
        chosen = kept
    return chosen, facts


def _export_size(run, size: Size, sub, target: str, rows: dict, feeds: dict, *,
                 overwrite: bool, latency_repeats: int, batch_sizes) -> dict:
    """Export one extracted size to ``target``, check it serves like ``sub``;
    its facts for the manifest entry."""
    import tensorflow as tf

    expected = np.asarray(sub(feeds, training=False)).reshape(-1)
    params, flops = _size_facts(run.model, size.spec, size.info)
    name = os.path.basename(os.path.dirname(target))
    path = export_model(
        sub, run.schema, target, warmup=rows, overwrite=overwrite, model_name=name,
        metadata={"size": name, "spec": size.name, "run": run.run_dir, "params": params,
                  "flops": flops},
    )
    loaded = tf.saved_model.load(path)
    served = loaded.signatures["serving_default"](**feeds)["logit"].numpy()
    if not np.allclose(served, expected, atol=1e-4, rtol=1e-4):
        raise ExportError(
            f"size {size.name}: the SavedModel at {path} disagrees with the in-process "
            f"model (max |diff| {np.max(np.abs(served - expected)):.3g}); not publishing "
            "it in the manifest"
        )
    entry = {
        "params": params if params is not None else int(sub.count_params()),
        "saved_params": saved_model_params(path),
        "flops": flops,
        "size_bytes": saved_model_bytes(path),
        "run": run.run_dir,
        "exported_at": _now(),
    }
    if latency_repeats:
        latency = measure_latency(loaded, rows, batch_sizes=batch_sizes, repeats=latency_repeats)
        entry["latency"] = {str(b): r for b, r in latency.items()}
        entry["latency_ms"] = latency[min(latency)]["median_ms"]
    return entry


def _describe(entry: Mapping) -> str:
    text = (f"  params {entry['params']:,}  flops {entry['flops']}  "
            f"{entry['size_bytes'] / 1024:.0f} KiB")
    if "holdout_auc_loss" in entry:
        text += f"  held-out AucLoss {entry['holdout_auc_loss']:.4f}"
    if "latency_ms" in entry:
        text += f"  latency {entry['latency_ms']:.2f} ms"
    return text


def _write_manifest(export_base: str, manifest: dict, entries: list, run_dir: str,
                    version: int, facts: Mapping) -> dict:
    """Merge this export's entries into the manifest and write it atomically."""
    new = {e["name"] for e in entries}
    kept = [e for e in manifest.get("sizes", []) if e.get("name") not in new]
    manifest = {
        **{k: v for k, v in manifest.items() if k not in ("holdout", "pareto")},
        "format_version": MANIFEST_VERSION,
        "updated_at": _now(),
        "run": run_dir,
        "version": version,
        "sizes": sorted(kept + entries, key=lambda e: (e.get("flops") or 0, e["name"])),
        **{k: facts[k] for k in ("holdout", "pareto") if k in facts},
    }
    write_file_atomic(os.path.join(export_base, MANIFEST), json.dumps(manifest, indent=1))
    return manifest


def export_run(
    run_dir: str | os.PathLike,
    export_base: str | os.PathLike,
    sizes: Sequence[str] | str = DEFAULT_SIZES,
    version: int | None = None,
    overwrite: bool = False,
    *,
    data=None,
    warmup_rows: int = 64,
    latency_repeats: int = 30,
    batch_sizes: Sequence[int] = (1, 256),
    log=None,
) -> dict:
    """Export sizes of a training run as TF Serving versions.

    Args:
        run_dir: a directory written by ``matta-rec train``.
        export_base: the folder TF Serving watches (``EXPORT_BASE``).
        sizes: size names / Mix'n'Match specs (``"student"``, ``"ta"``,
            ``"wnw:2"``...), a comma-separated string, ``"all"`` for every
            member of the model's family (``model.list_submodels()``) or
            ``"all-pareto"`` for the members no other member beats on both
            FLOPs and held-out AucLoss.  The default exports the Student and
            the TA (the one level of a one-level run).
        version: integer version; default: one more than the highest
            version any of the chosen sizes already has.
        overwrite: replace existing versions instead of refusing.
        data: log shards to take warmup / latency rows from (default: the
            example rows the run recorded with its checkpoints).  The run's
            held-out shards are looked up under its root; for
            ``all-pareto`` of a run that held nothing out, ``data`` is the
            held-out set itself.
        warmup_rows: rows used for warmup requests and latency batches.
        latency_repeats: timed calls per batch size (median reported);
            0 skips the latency measurement.
        batch_sizes: latency batch sizes.
        log: ``log(message)`` progress callback.

    Returns:
        The manifest (also written to ``EXPORT_BASE/manifest.json``); each
        size's ``holdout_auc_loss`` is there when the held-out rows were found.

    Raises:
        ExportError: bad sizes or version, an existing version without
            ``overwrite``, ``all-pareto`` without held-out rows, a SavedModel
            that does not serve like the in-process model.

    Example:

    >>> manifest = export_run("runs/sample", "exports", sizes="student,wnw:1,ta")
    >>> [s["name"] for s in manifest["sizes"]]
    """
    import tensorflow as tf

    from matta_rec.training import load_run

    say = log or (lambda message: None)
    run_dir = os.path.abspath(os.fspath(run_dir))
    export_base = local_export_base(export_base)
    _check_version(version)
    run = load_run(run_dir)
    chosen = resolve_sizes(run.model, sizes)
    manifest = read_manifest(export_base)  # fail on a broken manifest before exporting
    rows = rows_to_arrays(run_rows(run, warmup_rows, data), run.schema)
    feeds = {k: tf.constant(v) for k, v in rows.items()}
    subs = {s.name: servable_submodel(run.model, s.spec) for s in chosen}
    chosen, facts = _measure_holdout(run, chosen, subs, data, say)
    names = [size_dir_name(s.name) for s in chosen]
    version = _pick_version(export_base, names, version, overwrite)

    entries = []
    for size, name in zip(chosen, names):
        say(f"exporting {size.name} -> {name}/{version}")
        facts_of_size = _export_size(run, size, subs[size.name],
                                     os.path.join(export_base, name, str(version)), rows, feeds,
                                     overwrite=overwrite, latency_repeats=latency_repeats,
                                     batch_sizes=batch_sizes)
        entry = {"name": name, "spec": size.name, "version": version,
                 "path": os.path.join(name, str(version)), **facts_of_size}
        if size.name in facts.get("auc_loss", {}):
            entry["holdout_auc_loss"] = facts["auc_loss"][size.name]
        entries.append(entry)
        say(_describe(entry))
    return _write_manifest(export_base, manifest, entries, run_dir, version, facts)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
