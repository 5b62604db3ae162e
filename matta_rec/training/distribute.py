"""Distribution: the ``tf.distribute`` strategy of a run and its training step.

``default`` and ``mirrored`` (one host): the process reads the stream once
and each global batch is split into contiguous slices, one per replica,
inside ``strategy.run`` (:func:`make_train_step`).

``multi_worker``: worker ``i`` of ``N`` reads only its own shards
(:func:`assign_shards`: round-robin in time order, recorded in
``RUN_DIR/workers.json`` so an assigned shard never moves when the list
grows) in local batches of ``batch_size / N`` rows; global batch ``k`` is the
concatenation of the workers' local batches ``k`` (time order across workers
is not kept).  Each step the workers first :func:`exchange` how many rows
they hold (and whether they met an error or a stop signal), so they agree
when the stream is over; a worker whose part ran out, or whose last batch is
short, pads its local batch with zero-weight rows, so every step has the
same shape everywhere and every row is trained exactly once
(:func:`make_worker_train_step`).  A collective waits at most
``distribute.collective_timeout_s`` seconds of the run config (default 300),
so when a worker dies the others fail instead of hanging.

In both cases the per-replica losses are divided by the *global* batch
weight, so the all-reduced gradient equals the single-device one, and the
scores are all-gathered so every worker computes the same online metrics.

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
from matta_rec.training.config import DEFAULT_COLLECTIVE_TIMEOUT_S

__all__ = ["make_strategy", "task_of", "is_chief", "make_train_step", "worker_of",
           "input_context", "assign_shards", "exchange", "worker_values",
           "make_worker_train_step"]

_STRATEGIES: dict = {}
_GATHERS: dict = {}  # id(strategy) -> compiled all-gather of exchange()

def make_strategy(name: str, source: str = "<config>",
                  collective_timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S):
    """The ``tf.distribute`` strategy of ``strategy: default|mirrored|multi_worker``.

    ``mirrored`` uses every GPU, or every logical CPU device when there is
    no GPU; ``multi_worker`` reads the cluster from ``TF_CONFIG`` and bounds
    every collective by ``collective_timeout_s``.  Call it
    before any other TensorFlow op (``multi_worker`` must configure the
    runtime first).

    Args:
        name: ``"default"``, ``"mirrored"`` or ``"multi_worker"``.
        source: the config file, named in errors.
        collective_timeout_s: ``multi_worker`` only: seconds a collective
            may wait for the other workers (``distribute.collective_timeout_s``
            of the run config).

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
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=float(collective_timeout_s))
        _STRATEGIES[name] = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=options)
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


# ------------------------------------------------------------ multi_worker
def worker_of(strategy) -> tuple[int, int]:
    """``(worker index, number of workers)`` of this process; ``(0, 1)`` on one host.

    Workers are the cluster's ``chief`` (index 0, when there is one) and
    ``worker`` tasks, numbered as ``tf.distribute`` numbers its input
    pipelines.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 0, 1
    spec = resolver.cluster_spec().as_dict()
    chiefs = len(spec.get("chief", []))
    count = chiefs + len(spec.get("worker", []))
    task_type, task_id = task_of(strategy)
    if count == 0 or task_type not in ("chief", "worker"):
        return 0, 1
    return (task_id if task_type == "chief" else chiefs + task_id), count


def input_context(strategy):
    """The ``tf.distribute.InputContext`` of this worker's input pipeline.

    ``input_pipeline_id`` / ``num_input_pipelines`` are :func:`worker_of`;
    ``get_per_replica_batch_size(batch_size)`` is a replica's share.
    """
    import tensorflow as tf

    index, count = worker_of(strategy)
    return tf.distribute.InputContext(num_input_pipelines=count, input_pipeline_id=index,
                                      num_replicas_in_sync=strategy.num_replicas_in_sync)


def assign_shards(train, workers: int, recorded=None) -> list:
    """The shard -> worker assignment of a multi-worker run.

    Shards are numbered in the order they were first seen (time order within
    one listing) and shard ``k`` goes to worker ``k % workers``.  Recorded
    shards keep their worker, so an assigned shard never moves when the list
    grows; new shards are numbered after them.

    Args:
        train: the training shard names present now (reading order).
        workers: number of workers.
        recorded: the assignment recorded so far (``[[name, worker], ...]``).

    Returns:
        ``[[name, worker], ...]`` in first-sight order (recorded shards that
        are gone stay listed).

    Example:

    >>> assign_shards(["h00", "h01", "h02"], 2)
    [['h00', 0], ['h01', 1], ['h02', 0]]
    >>> assign_shards(["h01", "h02", "h03"], 2, [['h00', 0], ['h01', 1], ['h02', 0]])[-1]
    ['h03', 1]
    """
    out = [[str(name), int(worker)] for name, worker in (recorded or [])]
    seen = {name for name, _ in out}
    for name in train:
        if name not in seen:
            out.append([name, len(out) % workers])
            seen.add(name)
    return out


def worker_values(strategy, tree, replica_zero_only: bool = False):
    """This worker's ``tree`` of tensors as the per-replica input of ``strategy.run``.

    The worker's local replicas get equal contiguous slices of the leading
    dimension (one replica per worker on CPU hosts: the whole tree); with
    ``replica_zero_only`` the first local replica gets the whole tree and the
    others zeros.
    """
    import tensorflow as tf

    local = max(len(strategy.extended.worker_devices), 1)

    def value(ctx):
        index = ctx.replica_id_in_sync_group % local
        if local == 1:
            return tree
        if replica_zero_only:
            return tree if index == 0 else tf.nest.map_structure(tf.zeros_like, tree)
        return tf.nest.map_structure(lambda t: tf.split(t, local)[index], tree)

    return strategy.experimental_distribute_values_from_function(value)


def exchange(strategy, values) -> "np.ndarray":
    """All-gather one small float vector per worker: ``[workers, k]`` on every worker.

    A collective: every worker must call it at the same point.  Used as the
    per-step agreement (rows held, error, stop signal) and, with any values,
    as a barrier.
    """
    import numpy as np
    import tensorflow as tf

    _, workers = worker_of(strategy)
    gather = _GATHERS.get(id(strategy))
    if gather is None:
        gather = _GATHERS[id(strategy)] = tf.function(lambda v: strategy.gather(v, axis=0))
    vector = tf.constant(np.asarray(values, np.float32).reshape(1, -1))
    gathered = gather(worker_values(strategy, vector, replica_zero_only=True))
    table = np.asarray(gathered.numpy(), np.float64)
    return table.reshape(workers, -1, table.shape[-1]).sum(axis=1)


def make_worker_train_step(strategy, trainer, label_key: str):
    """One compiled multi-worker step over per-worker local batches.

    Call arguments of the returned ``step(features, labels)``: this worker's
    local batch, padded to the local batch size, as :func:`worker_values`;
    ``labels["weight"]`` is 0 on padding rows.  The loss of each replica is
    divided by the weight of the whole global batch (all-reduced), so
    padding adds nothing and the summed gradient is the single-device one.

    Returns:
        ``step -> (logs, distill_weight, logits, labels)``: the trainer's
        metric results, ``w_D``, and the scores (before the update) and
        labels of the global batch, all-gathered in worker order (padding
        included: worker ``j``'s rows are ``[j*L, (j+1)*L)``).
    """
    import tensorflow as tf

    from matta_rec.training.trainer import split_labels

    def replica_fn(features, labels):
        _, weights = split_labels(labels, label_key)
        ctx = tf.distribute.get_replica_context()
        denominator = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(weights))
        logs, logits = trainer.train_batch(features, labels, denominator=denominator)
        gathered = {k: ctx.all_gather(v, axis=0) for k, v in logits.items()}
        rows = {k: ctx.all_gather(tf.reshape(tf.cast(v, tf.float32), [-1]), axis=0)
                for k, v in labels.items()}
        return logs["distill_weight"], gathered, rows

    @tf.function
    def train_step(features, labels):
        weight, logits, rows = strategy.run(replica_fn, args=(features, labels))
        first = lambda v: strategy.experimental_local_results(v)[0]  # noqa: E731
        logs = {m.name: m.result() for m in trainer.metrics}
        return (logs, first(weight), {k: first(v) for k, v in logits.items()},
                {k: first(v) for k, v in rows.items()})

    return train_step
