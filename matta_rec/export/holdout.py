"""Held-out AucLoss of the sizes being exported (for ``--sizes all-pareto``).

``all-pareto`` keeps the members of the model's Mix'n'Match family that no
other member beats on both FLOPs and held-out AucLoss.  The AucLoss is
measured at export time, on the shards the run held out of training
(``metrics.json`` records them as ``holdout.shards``, relative to the data
root), with the label the evaluation uses by default: ``labels.event`` (0/1)
when the schema has it, else the Teacher probabilities ``labels.target``
(weighted soft-label AUROC), and the stream's ``weight`` when present.

Example:

>>> files = locate_holdout(run, data="logs/", allow_data=True)
>>> losses = holdout_auc_losses({"student": student, "ta": ta}, files.files, run.schema)
>>> losses.auc_loss["student"]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from matta_rec.errors import MattaError
from matta_rec.export.publish import ExportError
from matta_rec.metrics.auc import auroc

NEEDS_HOLDOUT = (
    "all-pareto needs the run's held-out shards: train with --set data.holdout_shards=N "
    "or pass --data HOLDOUT_DIR"
)


@dataclasses.dataclass
class HoldoutFiles:
    """Where the held-out rows come from.

    Args:
        files: shard paths (or the ``--data`` value itself).
        source: how they were found, for the log and the manifest.
    """

    files: Any
    source: str


@dataclasses.dataclass
class HoldoutScores:
    """Held-out AucLoss of each scored size.

    Args:
        auc_loss: ``{size name: 1 - AUROC}``.
        rows: held-out rows scored.
        label: ``"event"`` or ``"target"``.
    """

    auc_loss: dict
    rows: int
    label: str


def locate_holdout(run, data=None, *, allow_data: bool = False) -> HoldoutFiles | None:
    """The run's held-out shards, or ``None`` when they cannot be located.

    The shards recorded in ``run.metrics["holdout"]["shards"]`` are relative
    to the training data root: it is taken from ``holdout.root`` when the
    run records one, else from ``data``.  When the run held nothing out (or
    its shards are not under ``data``) and ``allow_data`` is true, ``data``
    itself is the held-out set (``--data HOLDOUT_DIR``).

    Args:
        run: a :class:`~matta_rec.training.run_dir.LoadedRun`.
        data: the export's ``--data`` (directory, glob, file or list).
        allow_data: use ``data`` as the held-out set when the recorded
            shards are not found under it.

    Returns:
        A :class:`HoldoutFiles`, or ``None``.
    """
    from matta_rec.data import filesystem as fs
    from matta_rec.data.reader import LogStream

    holdout = (run.metrics or {}).get("holdout") or {}
    recorded = [str(s) for s in holdout.get("shards") or []]
    roots = [holdout["root"]] if holdout.get("root") else []
    if data is not None:
        roots.append(LogStream(data, run.schema, batch_size=1).root)
    for root in roots if recorded else []:
        files = [fs.join(root, rel) for rel in recorded]
        if all(fs.kind(f) == "file" for f in files):
            return HoldoutFiles(files, f"the run's {len(files)} held-out shard(s) under {root}")
    if data is not None and allow_data:
        return HoldoutFiles(data, f"--data {data}")
    return None


def _label_key(schema) -> str:
    return "event" if schema.labels.event else "target"


def holdout_auc_losses(models: Mapping[str, Any], files, schema, *,
                       batch_size: int = 4096) -> HoldoutScores:
    """``1 - AUROC`` of each model on the held-out rows (one pass over them).

    Args:
        models: ``{size name: Keras model raw features -> logit [B]}``.
        files: held-out shards (anything :class:`LogStream` reads).
        schema: the run's schema.
        batch_size: rows per scoring batch.

    Returns:
        A :class:`HoldoutScores`.

    Raises:
        ExportError: the shards hold no rows, or the AUROC is undefined
            (only one class in the held-out labels).

    Example:

    >>> holdout_auc_losses({"student": student}, held_out_files, schema).auc_loss
    """
    import tensorflow as tf

    from matta_rec.data.reader import LogStream

    key = _label_key(schema)
    raw = schema.raw_signature()
    fns = {name: tf.function(lambda f, m=m: tf.reshape(m(f, training=False), [-1]),
                             input_signature=[raw]) for name, m in models.items()}
    scores: dict[str, list] = {name: [] for name in models}
    labels, weights = [], []
    for features, y in LogStream(files, schema, batch_size=batch_size).dataset():
        for name, fn in fns.items():
            scores[name].append(fn(features).numpy())
        labels.append(y[key].numpy())
        if "weight" in y:
            weights.append(y["weight"].numpy())
    if not labels:
        raise ExportError(f"the held-out shards {files} hold no rows to measure AucLoss on")
    y_all = np.concatenate(labels).reshape(-1)
    w_all = np.concatenate(weights).reshape(-1) if weights else None
    out = {}
    for name, parts in scores.items():
        try:
            out[name] = 1.0 - auroc(y_all, np.concatenate(parts), w_all)
        except MattaError as exc:
            raise ExportError(f"held-out AucLoss of {name} is undefined: {exc}") from exc
    return HoldoutScores(out, int(len(y_all)), key)
