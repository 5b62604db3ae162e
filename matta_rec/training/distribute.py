"""Distribution: the ``tf.distribute`` strategy of a run and its training step.

Every worker reads the same stream; each global batch is split into
contiguous slices, one per replica, inside ``strategy.run``.  The per-replica
losses are divided by the *global* batch weight, so the all-reduced gradient
equals the single-device one, and the scores are all-gathered so every worker
computes the same online metrics.

Example:

>>> strategy = make_strategy("mirrored")
>>> with strategy.scope():
...     trainer = MatTATrainer(model, loss_config)
...     trainer.compile(optimizer=optimizer)
>>> step = make_train_step(strategy, trainer, "target", dataset.element_spec)
>>> logs, distill_weight, logits = step(features, labels)
"""

from __future__ import annotations

import os

from matta_rec.errors import ConfigError

__all__ = ["make_strategy", "task_of", "is_chief", "make_train_step"]

_STRATEGIES: dict = {}


def make_strategy(name: str, source: str = "<config>"):
    """The ``tf.distribute`` strategy of ``strategy: default|mirrored|multi_worker``.

    ``mirrored`` uses every GPU, or every logical CPU device when there is
    no GPU; ``multi_worker`` reads the cluster from ``TF_CONFIG``.  Call it
    before any other TensorFlow op (``multi_worker`` must configure the
    runtime first).

    Args:
        name: ``"default"``, ``"mirrored"`` or ``"multi_worker"``.
        source: the config file, named in errors.

    Returns:
        The strategy (one object per kind and process).

    Raises:
        ConfigError: unknown name, or ``multi_worker`` without ``TF_CONFIG``.
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    # One strategy object per kind and process: two MirroredStrategy objects
    # over the same devices can collide on collective-op instance keys, and
    # TensorFlow allows one MultiWorkerMirroredStrategy per process.
    if name in _STRATEGIES:
        return _STRATEGIES[name]
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        _STRATEGIES[name] = tf.distribute.MirroredStrategy(devices=devices)
        return _STRATEGIES[name]
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ConfigError(
                "strategy multi_worker needs the TF_CONFIG environment variable "
                '({"cluster": {"worker": [host:port, ...]}, "task": {"type": "worker", '
                '"index": i}}) in every worker process; use --set strategy=mirrored on one '
                "machine",
                source=source,
                key="strategy",
            )
        _STRATEGIES[name] = tf.distribute.MultiWorkerMirroredStrategy()
        return _STRATEGIES[name]
    raise ConfigError(f"unknown strategy {name!r}; use --set strategy=default|mirrored|multi_worker",
                      source=source, key="strategy")


def task_of(strategy) -> tuple[str | None, int]:
    """``(task type, task index)`` of this process; ``(None, 0)`` without a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy) -> bool:
    """Whether this process writes the run directory (the chief, else worker 0)."""
    task_type, task_id = task_of(strategy)
    if task_type is None or task_type == "chief":
        return True
    if task_type == "worker" and task_id == 0:
        spec = strategy.cluster_resolver.cluster_spec().as_dict()
        return "chief" not in spec
    return False


def make_train_step(strategy, trainer, label_key: str, element_spec):
    """One compiled training step over the replicas of ``strategy``.

    Args:
        strategy: the run's strategy (the trainer was built in its scope).
        trainer: a compiled :class:`~matta_rec.training.trainer.MatTATrainer`.
        label_key: the label that trains the heads (``loss.label``).
        element_spec: the stream dataset's element spec; its first two
            entries (features, labels) are the step's input signature, so
            every batch size (the last batch is short) shares one trace.

    Returns:
        ``step(features, labels) -> (logs, distill_weight, logits)``: the
        trainer's metric results after the update, ``w_D`` of the step and
        the logits of every level for the whole global batch, scored before
        the update.
    """
    import tensorflow as tf

    from matta_rec.training.trainer import split_labels

    single = strategy.num_replicas_in_sync == 1

    def replica_fn(features, labels):
        full_labels, full_w = split_labels(labels, label_key)
        denominator = (tf.reduce_sum(full_w) if full_w is not None
                       else tf.cast(tf.shape(full_labels)[0], tf.float32))
        if single:
            logs, logits = trainer.train_batch(features, labels, denominator=denominator)
            return logs["distill_weight"], logits
        ctx = tf.distribute.get_replica_context()
        n = ctx.num_replicas_in_sync
        i = ctx.replica_id_in_sync_group
        rows = tf.shape(full_labels)[0]
        per = (rows + n - 1) // n
        lo = tf.minimum(i * per, rows)
        hi = tf.minimum(lo + per, rows)
        cut = lambda t: t[lo:hi]  # noqa: E731
        local_x = tf.nest.map_structure(cut, features)
        local_y = tf.nest.map_structure(cut, labels)
        logs, logits = trainer.train_batch(local_x, local_y, denominator=denominator)
        gathered = {k: ctx.all_gather(v, axis=0) for k, v in logits.items()}
        return logs["distill_weight"], gathered

    @tf.function(input_signature=list(element_spec[:2]))
    def train_step(features, labels):
        weight, logits = strategy.run(replica_fn, args=(features, labels))
        weight = strategy.experimental_local_results(weight)[0]
        logits = {k: strategy.experimental_local_results(v)[0] for k, v in logits.items()}
        logs = {m.name: m.result() for m in trainer.metrics}
        return logs, weight, logits

    return train_step
