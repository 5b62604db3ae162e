"""Shampoo: Kronecker-factored preconditioning with grafting, for Keras 3.

The optimizer's bookkeeping (state, frequencies, grafting, momentum, failure
handling) lives here; the matrix math is in `matrix_functions` and the
variable-to-blocks layout in `partition`. TensorFlow backend only (the package
is TF-only): the update is made of TF ops, so it runs eagerly, inside
`tf.function`, under XLA and under `tf.distribute` strategies, where every
replica receives the all-reduced gradient and recomputes the same roots.

A training step updates all the variables of a device set in one call
(`_update_variables`) rather than one `update_step` per variable: the blocks
of one shape share each elementwise op and every skip is counted in one
assignment. On CPU a small model's step costs per op, not per flop, and that
is what keeps Shampoo's step near Adam's at small batches. That takes two
hooks of Keras's TensorFlow optimizer: they, and every other Keras internal
Shampoo uses, are in `keras_internals` (with the Keras versions verified).
"""

from __future__ import annotations

import collections
import re
import warnings

import keras
import numpy as np
import tensorflow as tf

from matta_rec.optimizers import keras_internals, matrix_functions, weight_decay as decay
from matta_rec.optimizers.partition import BlockGroup, make_plan
from matta_rec.optimizers.preconditioner_state import PreconditionerState

GRAFTING_TYPES = ("adam", "adagrad", "rmsprop", "sgd")
ROOT_METHODS = ("eigh", "newton")
LARGE_DIM_POLICIES = ("diagonal", "one_sided")
WEIGHT_DECAY_EXCLUDES = ("embeddings_and_vectors", None)
_DEFAULTS = {"beta_1": 0.9, "beta_2": 0.999}


def _read(variable):
    """The current value of a Keras (or tf) variable as a tensor."""
    return tf.convert_to_tensor(variable.value if isinstance(variable, keras.Variable) else variable)


def _identity_initializer(shape, dtype=None):
    return tf.eye(shape[-1], batch_shape=shape[:-2], dtype=dtype or "float32")


@keras.saving.register_keras_serializable(package="matta_rec")
class Shampoo(keras_internals.GroupedUpdateHooks, keras.optimizers.Optimizer):
    """Shampoo with per-block grafting (Gupta et al. 2018; Anil et al. 2020).

    For a weight matrix (or a block of one) with gradient `G`, Shampoo keeps
    `L = sum/EMA of G G^T` and `R = sum/EMA of G^T G` and moves along
    `L^(-1/4) D R^(-1/4)`, where `D` is the (momentum-filtered) gradient.
    The grafted diagonal optimizer gives each block its step size: the
    Shampoo direction of a block is rescaled to the norm of the grafted step
    of that block. Before `start_preconditioning_step` the grafted step is
    used as is (so Shampoo with Adam grafting *is* Adam until then).

    Per step `t` (1-based) and variable:

    1. `m = beta_1 m + (1 - beta_1) G`, `D = m / (1 - beta_1^t)` (with
       Nesterov: `D = (beta_1 m + (1 - beta_1) G) / (1 - beta_1^(t+1))`);
       `D = G` when `beta_1 = 0`.
    2. Grafted step `A(D)`: Adam (`v` an EMA of `G^2` with `grafting_beta2`,
       bias-corrected as `keras.optimizers.Adam`), AdaGrad (`v` the sum of
       `G^2`), RMSprop (`v` an EMA of `G^2`), SGD (`A(D) = D`).
    3. Every `statistics_frequency` steps: `L = beta_2 L + (1 - beta_2) G G^T`
       (the same for `R`), or `L += G G^T` when `beta_2 = 1`. Every
       `preconditioning_frequency` steps from `start_preconditioning_step`:
       the inverse roots of the (bias-corrected) statistics, in float64,
       regularised by `epsilon * lambda_max`. A root that fails (non-finite
       statistics or result, Newton not converged) keeps the previous root and
       increments `root_failures`.
    4. `U = L^(-1/p) D R^(-1/p)` per block, rescaled to `||A(D)||` of the
       block (raw when `grafting=None`); `w -= learning_rate * U`.

    Weight decay (`weight_decay=wd`) is decoupled, as AdamW: before the step
    above, `w -= learning_rate * wd * w` (applied by the base class, outside
    the preconditioned direction). By default (`weight_decay_exclude=
    "embeddings_and_vectors"`) it skips embedding tables and variables of
    rank <= 1 (biases, scales, norm parameters): see
    `matta_rec.optimizers.weight_decay`.

    Variables of rank <= 1 (biases, scales), variables whose every side is
    too long (or one side, with `large_dim_policy="diagonal"`) and embedding
    tables take the grafted diagonal step `A(D)`. Embedding tables are the
    variables their layer marked as such
    (`matta_rec.layers.variable_roles.mark_embedding_table`: every table of
    `matta_rec`'s layers, shared or per level) and, as a fallback for other
    layers, variables whose name matches `embedding_pattern`. Sparse
    gradients (`tf.IndexedSlices`) are densified, as `keras.optimizers.Adam`
    does.

    A gradient with a NaN / inf is replaced by zeros (the step then follows
    the momentum only) and increments `skipped_updates`; a non-finite update
    is never applied (also counted); a statistic that would overflow is not
    accumulated (counted).

    Args:
        learning_rate: float, `LearningRateSchedule` or callable. Defaults to
            `0.001`.
        beta_1: momentum on the gradient, in `[0, 1)`. Defaults to `0.9`.
        beta_2: decay of the Kronecker statistics, in `(0, 1]`; `1.0` sums
            them (AdaGrad-style). Defaults to `0.999`. The names of 0.1.0,
            `beta1` / `beta2`, are accepted (also in saved configs) for one
            more release, with a `DeprecationWarning`.
        epsilon: regularisation of the statistics before the root, relative to
            their largest eigenvalue, `> 0`. Defaults to `1e-6`.
        block_size: largest side of a preconditioned block. Defaults to `512`.
        preconditioning_frequency: steps between two root recomputations.
            Defaults to `100`. A run of a few hundred steps gets only a
            couple of roots at the default: use ~10 there (with
            `start_preconditioning_step` ~10); on the sample logs' ~330-step
            run that is what makes Shampoo better than Adam
            (`docs/benchmarks.md`, Shampoo overhead).
        statistics_frequency: steps between two statistics updates.
            Defaults to `1`.
        start_preconditioning_step: first step using the Shampoo direction;
            grafted steps before it. Defaults to `100`.
        grafting: `"adam"`, `"adagrad"`, `"rmsprop"`, `"sgd"` or `None` (raw
            Shampoo direction). Defaults to `"adam"`.
        grafting_beta2: decay of the Adam / RMSprop grafting accumulator.
            Defaults to `0.999`.
        grafting_epsilon: epsilon of the grafted optimizer. Defaults to `1e-7`.
        exponent_override: `p` for roots `L^(-1/p)` on every side (e.g. `2`
            as Distributed Shampoo). `None`: `2 k` where `k` is the number of
            preconditioned sides, i.e. `-1/4` per side for a matrix (the
            original paper) and `-1/2` for a one-sided factor.
        nesterov: use Nesterov momentum. Defaults to `False`.
        weight_decay: decoupled weight decay (as AdamW):
            `w -= learning_rate * weight_decay * w` each step. Defaults to
            `None`.
        weight_decay_exclude: `"embeddings_and_vectors"` (default): weight
            decay leaves embedding tables and variables of rank <= 1 alone;
            `None`: it applies to every variable except those given to
            `exclude_from_weight_decay` (call it before the first step).
        max_preconditioner_dim: sides longer than this get no Kronecker
            factor. Defaults to `4096`.
        large_dim_policy: `"diagonal"` (the variable takes the grafted step)
            or `"one_sided"` (precondition the other side only) for variables
            with a side longer than `max_preconditioner_dim`. Defaults to
            `"diagonal"`.
        embedding_pattern: regular expression, the fallback for layers that
            do not mark their tables: variables whose name (last path
            component) matches it are embedding tables too. An embedding
            table's first (vocabulary) dimension is treated as too long, so
            it follows `large_dim_policy` (row-sparse gradients keep per-row
            Adam step sizes on the diagonal path). `None` disables the
            fallback (marked tables stay embedding tables). Defaults to
            `r"(embeddings?|_table)$"` (Keras `Embedding` layers are named
            `embeddings`).
        diagonal_variables: list of regular expressions; variables whose
            path matches one take the grafted diagonal step. Defaults to
            `None`.
        root_method: `"eigh"` (float64 eigendecomposition) or `"newton"`
            (coupled Newton iteration in float64). Defaults to `"eigh"`.
        grouped_updates: update all the variables of a device set in one
            call, the blocks of one shape stacked into batched ops (fewer
            ops per step: on CPU a small model's step costs per op). `False`:
            Keras's one `update_step` per variable, the same math without the
            Keras internals the grouped path overrides
            (`keras_internals.py`). Defaults to `True`.
        {{base_optimizer_keyword_args}}

    Example:

    >>> import numpy as np
    >>> opt = Shampoo(learning_rate=0.01, start_preconditioning_step=1,
    ...               preconditioning_frequency=1)
    >>> w = keras.Variable(np.ones((4, 3), "float32"))
    >>> opt.apply([keras.ops.ones((4, 3))], [w])
    >>> int(opt.root_failures.numpy())
    0

    In a model: `model.compile(optimizer=Shampoo(1e-3), loss=...)`. The
    counters `root_failures` and `skipped_updates` are non-trainable
    variables (`optimizer.diagnostics()` returns them as Python ints);
    `optimizer.preconditioner_state(variable)` is a NumPy snapshot of what
    the optimizer keeps for one variable (statistics, roots, blocks).
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        block_size=512,
        preconditioning_frequency=100,
        statistics_frequency=1,
        start_preconditioning_step=100,
        grafting="adam",
        grafting_beta2=0.999,
        grafting_epsilon=1e-7,
        exponent_override=None,
        nesterov=False,
        weight_decay=None,
        weight_decay_exclude="embeddings_and_vectors",
        max_preconditioner_dim=4096,
        large_dim_policy="diagonal",
        embedding_pattern=r"(embeddings?|_table)$",
        diagonal_variables=None,
        root_method="eigh",
        grouped_updates=True,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name=None,
        **kwargs,
    ):
        beta_1, beta_2 = _renamed_betas(kwargs, beta_1, beta_2)
        super().__init__(
            learning_rate=learning_rate,
            name=name,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            **kwargs,
        )
        _validate_arguments(
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            block_size=block_size,
            preconditioning_frequency=preconditioning_frequency,
            statistics_frequency=statistics_frequency,
            start_preconditioning_step=start_preconditioning_step,
            grafting=grafting,
            grafting_beta2=grafting_beta2,
            grafting_epsilon=grafting_epsilon,
            exponent_override=exponent_override,
            max_preconditioner_dim=max_preconditioner_dim,
            large_dim_policy=large_dim_policy,
            embedding_pattern=embedding_pattern,
            diagonal_variables=diagonal_variables,
            root_method=root_method,
            grouped_updates=grouped_updates,
        )
        if weight_decay_exclude not in WEIGHT_DECAY_EXCLUDES:
            raise ValueError(
                f"`weight_decay_exclude` must be one of {WEIGHT_DECAY_EXCLUDES}. "
                f"Received: weight_decay_exclude={weight_decay_exclude!r}"
            )
        keras_internals.check(grouped_updates)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.block_size = block_size
        self.preconditioning_frequency = preconditioning_frequency
        self.statistics_frequency = statistics_frequency
        self.start_preconditioning_step = start_preconditioning_step
        self.grafting = grafting
        self.grafting_beta2 = float(grafting_beta2)
        self.grafting_epsilon = float(grafting_epsilon)
        self.exponent_override = exponent_override
        self.nesterov = bool(nesterov)
        self.max_preconditioner_dim = max_preconditioner_dim
        self.large_dim_policy = large_dim_policy
        self.embedding_pattern = embedding_pattern
        self.weight_decay_exclude = weight_decay_exclude
        self.diagonal_variables = list(diagonal_variables) if diagonal_variables else []
        self.root_method = root_method
        self.grouped_updates = grouped_updates
        self._last_update_groups = ()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "block_size": self.block_size,
                "preconditioning_frequency": self.preconditioning_frequency,
                "statistics_frequency": self.statistics_frequency,
                "start_preconditioning_step": self.start_preconditioning_step,
                "grafting": self.grafting,
                "grafting_beta2": self.grafting_beta2,
                "grafting_epsilon": self.grafting_epsilon,
                "exponent_override": self.exponent_override,
                "nesterov": self.nesterov,
                "max_preconditioner_dim": self.max_preconditioner_dim,
                "large_dim_policy": self.large_dim_policy,
                "embedding_pattern": self.embedding_pattern,
                "weight_decay_exclude": self.weight_decay_exclude,
                "diagonal_variables": list(self.diagonal_variables),
                "root_method": self.root_method,
                "grouped_updates": self.grouped_updates,
            }
        )
        return config

    # ------------------------------------------------------------------ state

    def _variable_path(self, variable):
        return getattr(variable, "path", None) or str(variable.name)

    def plan_for(self, variable):
        """The `partition.BlockPlan` Shampoo uses for `variable`."""
        path = self._variable_path(variable)
        if any(re.search(p, path) for p in self.diagonal_variables):
            return make_plan((), self.block_size, self.max_preconditioner_dim)
        embedding = decay.is_embedding(variable, self.embedding_pattern)
        return make_plan(
            tuple(variable.shape),
            self.block_size,
            self.max_preconditioner_dim,
            self.large_dim_policy,
            first_dim_is_large=embedding,
        )

    def _root_exponent(self, plan):
        if self.exponent_override is not None:
            return self.exponent_override
        return 2 * plan.num_preconditioned_sides

    def build(self, var_list):
        """Creates the optimizer state.

        Per variable: `momentum` (if `beta_1 > 0`), the grafting accumulator
        (Adam / AdaGrad / RMSprop grafting) and, for preconditioned variables,
        the statistics and roots of each preconditioned side, shaped
        `[num_blocks, chunk, chunk]` and named `<variable path>_stats_left`,
        `..._root_left` (`/` replaced by `_`; the same for the right side).
        Plus two int64 counters: `root_failures` and `skipped_updates`.
        `preconditioner_state(variable)` reads a variable's state back.
        """
        if self.built:
            return
        if self.weight_decay is not None and self.weight_decay_exclude is not None:
            self.exclude_from_weight_decay(
                var_list=decay.default_exclusions(var_list, self.embedding_pattern)
            )
        super().build(var_list)
        self.root_failures = self.add_variable((), initializer="zeros", dtype="int64", name="root_failures")
        self.skipped_updates = self.add_variable((), initializer="zeros", dtype="int64", name="skipped_updates")
        n = len(var_list)
        self._plans = [None] * n
        self._momentums = [None] * n
        self._graft_accumulators = [None] * n
        self._stats_left = [None] * n
        self._stats_right = [None] * n
        self._roots_left = [None] * n
        self._roots_right = [None] * n
        self._variable_paths = [None] * n  # strings: a list of variables would be tracked as state
        for var in var_list:
            if self._overwrite_variable_with_gradient(var):
                continue
            i = self._get_variable_index(var)
            plan = self.plan_for(var)
            self._plans[i] = plan
            self._variable_paths[i] = self._variable_path(var)
            if self.beta_1 > 0:
                self._momentums[i] = self.add_variable_from_reference(var, name="momentum")
            if self.grafting in ("adam", "adagrad", "rmsprop"):
                self._graft_accumulators[i] = self.add_variable_from_reference(var, name="graft")
            if plan.diagonal:
                continue
            prefix = self._variable_path(var).replace("/", "_")
            nb, (cr, cc) = plan.num_blocks, plan.chunk
            for side, size, stats, roots in (
                ("left", cr, self._stats_left, self._roots_left),
                ("right", cc, self._stats_right, self._roots_right),
            ):
                if not plan.precondition[0 if side == "left" else 1]:
                    continue
                stats[i] = self.add_variable(
                    (nb, size, size), initializer="zeros", dtype="float32", name=f"{prefix}_stats_{side}"
                )
                roots[i] = self.add_variable(
                    (nb, size, size), initializer=_identity_initializer, dtype="float32", name=f"{prefix}_root_{side}"
                )

    def diagnostics(self):
        """`{"shampoo_root_failures": int, "shampoo_skipped_updates": int}`."""
        if not self.built:
            return {"shampoo_root_failures": 0, "shampoo_skipped_updates": 0}
        return {
            "shampoo_root_failures": int(self.root_failures.numpy()),
            "shampoo_skipped_updates": int(self.skipped_updates.numpy()),
        }

    def preconditioner_state(self, variable):
        """A NumPy snapshot of what Shampoo keeps for one variable.

        Args:
            variable: a trainable variable of the built optimizer, its path
                (`"dense_1/kernel"`) or a unique suffix of it (`"kernel"`).

        Returns:
            A `PreconditionerState` (frozen; its arrays are read-only
            copies): `kind` (`"kronecker"` / `"diagonal"`), the block `plan`,
            `root_exponent`, `statistics_left` / `statistics_right` and
            `root_left` / `root_right` (`[num_blocks, d, d]`, None for a side
            without a factor), `momentum` and `graft_accumulator`.

        Raises:
            ValueError: the optimizer is not built, or no single variable of
                it matches `variable` (the message lists its variables).

        Example:

        >>> import numpy as np
        >>> opt = Shampoo(start_preconditioning_step=0, preconditioning_frequency=1)
        >>> w = keras.Variable(np.ones((4, 3), "float32"), name="kernel")
        >>> opt.apply([keras.ops.ones((4, 3))], [w])
        >>> state = opt.preconditioner_state("kernel")
        >>> state.kind, state.root_left.shape, state.root_right.shape
        ('kronecker', (1, 4, 4), (1, 3, 3))
        """
        i = self._state_index(variable)
        plan = self._plans[i]
        if plan is None:
            raise ValueError(
                f"Variable {self._variable_paths[i] or variable!r} is overwritten with its gradient "
                "(`overwrite_with_gradient`): Shampoo keeps no state for it."
            )

        def snapshot(state):
            if state is None:
                return None
            array = np.array(state.numpy())
            array.setflags(write=False)
            return array

        return PreconditionerState(
            path=self._variable_paths[i],
            kind="diagonal" if plan.diagonal else "kronecker",
            plan=plan,
            root_exponent=None if plan.diagonal else self._root_exponent(plan),
            statistics_left=snapshot(self._stats_left[i]),
            statistics_right=snapshot(self._stats_right[i]),
            root_left=snapshot(self._roots_left[i]),
            root_right=snapshot(self._roots_right[i]),
            momentum=snapshot(self._momentums[i]),
            graft_accumulator=snapshot(self._graft_accumulators[i]),
        )

    def _state_index(self, variable):
        """The index of a variable given itself, its path or a unique path suffix."""
        if not self.built:
            raise ValueError(
                "The optimizer is not built yet: train a step (or call `optimizer.build(variables)`) first."
            )
        if not isinstance(variable, str):
            try:
                return self._get_variable_index(variable)
            except KeyError:
                variable = self._variable_path(variable)
        matches = [
            i
            for i, path in enumerate(self._variable_paths)
            if path is not None and (path == variable or path.endswith("/" + variable))
        ]
        if len(matches) != 1:
            what = "No" if not matches else "More than one"
            raise ValueError(
                f"{what} variable of the optimizer matches {variable!r}; its variables are "
                f"{[p for p in self._variable_paths if p is not None]}."
            )
        return matches[0]

    @property
    def last_update_groups(self):
        """The groups of the last traced update, as tuples of variable paths.

        Each group is the preconditioned variables whose blocks shared the
        batched ops of one update (same block shape, sides and root
        exponent). Recorded when the update runs in Python: every step when
        eager, once per trace inside `tf.function`. With `grouped_updates=True`
        a step's group holds every variable of a device set with that block
        layout; with `False` (one `update_step` per variable) a group has one
        variable. For looking at (and testing) how a step is batched.
        """
        return self._last_update_groups

    def state_bytes(self):
        """Bytes of optimizer state, without the step counter and learning rate."""
        skip = {id(self.iterations)}
        learning_rate = keras_internals.learning_rate_variable(self)
        if learning_rate is not None:
            skip.add(id(learning_rate))
        total = 0
        for v in self.variables:
            if id(v) in skip:
                continue
            total += int(tf.size(v.value)) * tf.as_dtype(v.dtype).size
        return total

    # ----------------------------------------------------------------- update

    def _step_scalars(self, learning_rate):
        """The scalars of one step every variable's update uses: learning
        rate, bias corrections, and the statistics / roots / preconditioning
        gates of the current iteration."""
        it = tf.cast(tf.convert_to_tensor(self.iterations), tf.int64)
        t = tf.cast(it + 1, tf.float32)
        lr = tf.cast(learning_rate, tf.float32)
        if self.beta_1 > 0:
            b1 = tf.constant(self.beta_1, tf.float32)
            scale = 1.0 / (1.0 - tf.pow(b1, t + 1.0 if self.nesterov else t))
        else:
            scale = tf.constant(1.0, tf.float32)
        graft_scale = scale
        if self.grafting == "adam":
            graft_scale = scale * tf.sqrt(1.0 - tf.pow(tf.constant(self.grafting_beta2, tf.float32), t))
        start, pf, sf = self.start_preconditioning_step, self.preconditioning_frequency, self.statistics_frequency
        scalars = {
            "learning_rate": lr,
            "scale": scale,
            "graft_scale": graft_scale,
            "diagonal_lr": lr * graft_scale,
            "statistics_due": tf.equal(it % sf, 0),
            "roots_due": tf.logical_and(it >= start, tf.equal((it - start) % pf, 0)),
            "preconditioning": it >= start,
        }
        if self.beta_2 < 1.0:
            # Bias correction of the statistics: number of updates so far.
            count = tf.cast(it // sf + 1, tf.float32)
            scalars["statistics_correction"] = 1.0 - tf.pow(tf.constant(self.beta_2, tf.float32), count)
        return scalars

    def update_step(self, gradient, variable, learning_rate):
        """The update of one variable (Keras's per-variable API).

        With `grouped_updates=True` training updates all the variables of a
        device set at once (`keras_internals.GroupedUpdateHooks`); this entry
        point is the same update for a single variable, and the one Keras
        calls with `grouped_updates=False`.
        """
        if not isinstance(learning_rate, dict):
            learning_rate = self._step_scalars(learning_rate)
        self._update_variables([gradient], [variable], learning_rate)

    def _update_variables(self, grads, variables, scalars):
        """The update of `variables` (one replica's copies) by `grads`.

        Diagonal variables take the grafted step one by one (as few ops as
        `keras.optimizers.Adam`); preconditioned variables are grouped by
        block shape and root exponent (`partition.BlockGroup`): the
        statistics' averaging and overflow guard, the roots (one
        decomposition per group and side), the grafting norms and the step's
        guard are ops over the stacked blocks of a group; the products
        `G G^T`, `G^T G`, `L^(-1/p) D R^(-1/p)` are 2-D matmuls per block
        (cheaper on CPU than a batched matmul). Every skip is counted in one
        `skipped_updates` assignment.

        Args:
            grads: gradients, one per variable (dense or `tf.IndexedSlices`).
            variables: the variables, in the optimizer's list.
            scalars: the step's scalars (`_step_scalars`).
        """
        applied = []  # boolean tensors: every False entry is one counted skip
        cast_scalars = {}
        groups = {}
        dense, by_dtype = [], {}
        for gradient, variable in zip(grads, variables):
            if isinstance(gradient, tf.IndexedSlices):
                gradient = tf.convert_to_tensor(gradient)
            dtype = tf.float32 if variable.dtype in ("float16", "bfloat16") else tf.as_dtype(variable.dtype)
            by_dtype.setdefault(dtype, []).append(len(dense))
            dense.append(tf.cast(gradient, dtype))
        # A gradient with a NaN / inf is replaced by zeros and counted. One
        # reduction per gradient (NaN / inf propagate into the sum), one
        # finiteness test per dtype and a masked multiply: cheaper on CPU
        # than a `tf.cond` around the update.
        for dtype, positions in by_dtype.items():
            finite = tf.math.is_finite(tf.stack([tf.reduce_sum(dense[k]) for k in positions]))
            applied.append(finite)
            masks = tf.unstack(tf.cast(finite, dtype), num=len(positions))
            for k, mask in zip(positions, masks):
                dense[k] = tf.math.multiply_no_nan(dense[k], mask)
            cast_scalars[dtype] = {
                k: (tf.cast(v, dtype) if v.dtype.is_floating and v.dtype != dtype else v) for k, v in scalars.items()
            }
        for g, variable in zip(dense, variables):
            i = self._get_variable_index(variable)
            dtype = g.dtype
            numerator = self._momentum_direction(i, g)
            graft = self._graft_direction(i, g, numerator)
            plan = self._plans[i]
            if plan.diagonal:
                ok = self._apply_diagonal_step(variable, graft, cast_scalars[dtype])
                if ok is not None:
                    applied.append(ok)
                continue
            key = (plan.chunk, plan.precondition, self._root_exponent(plan))
            groups.setdefault(key, []).append(_Member(i, plan, variable, g, numerator, graft))
        groups = [(BlockGroup([m.plan for m in members]), members, key[2]) for key, members in groups.items()]
        paths = self._variable_paths
        self._last_update_groups = tuple(tuple(paths[m.index] for m in members) for _, members, _ in groups)
        if not groups:
            self.skipped_updates.assign_add(_count_false(applied))
            return
        statistics_skipped = self._update_statistics(groups, scalars)
        self._update_roots(groups, scalars)
        for group, members, _ in groups:
            applied.append(self._apply_shampoo_step(group, members, scalars))
        self.skipped_updates.assign_add(_count_false(applied) + statistics_skipped)

    def _momentum_direction(self, i, g):
        """The momentum-filtered gradient up to the scalar `scale` (bias correction)."""
        if self.beta_1 == 0:
            return g
        m = self._momentums[i]
        self.assign_add(m, (g - _read(m)) * (1.0 - self.beta_1))
        numerator = _read(m)
        if self.nesterov:
            numerator = self.beta_1 * numerator + (1.0 - self.beta_1) * g
        return numerator

    def _graft_direction(self, i, g, numerator):
        """The grafted step up to the scalar `graft_scale` (bias corrections)."""
        if self.grafting in (None, "sgd"):
            return numerator
        v = self._graft_accumulators[i]
        if self.grafting == "adagrad":
            self.assign_add(v, tf.square(g))
        else:
            self.assign_add(v, (tf.square(g) - _read(v)) * (1.0 - self.grafting_beta2))
        # Adam as keras.optimizers.Adam ("epsilon hat"); AdaGrad, RMSprop.
        return numerator / (tf.sqrt(_read(v)) + self.grafting_epsilon)

    def _apply_diagonal_step(self, variable, graft, scalars):
        """`w -= lr * A(D)`; returns the "applied" flag (False: non-finite
        step), or None when the step cannot be non-finite."""
        step = graft * scalars["diagonal_lr"]
        if self.grafting in ("adam", "adagrad", "rmsprop"):
            # `m / (sqrt(v) + eps)` is bounded for a finite gradient: no
            # guard needed (the common path, kept as cheap as Adam's).
            self.assign_sub(variable, step)
            return None
        # A non-finite step (overflow) is not applied, and counted.
        ok = tf.math.is_finite(tf.reduce_sum(step))
        self.assign_sub(variable, _zero_unless(ok, step))
        return ok

    def _sides(self, members):
        """`[(left, statistics, roots)]` per preconditioned side of a group:
        `left` is True for the row side, then the members' state variables
        (all members of a group precondition the same sides)."""
        out = []
        for left, stats, roots in (
            (True, self._stats_left, self._roots_left),
            (False, self._stats_right, self._roots_right),
        ):
            if stats[members[0].index] is not None:
                out.append((left, [stats[m.index] for m in members], [roots[m.index] for m in members]))
        return out

    def _update_statistics(self, groups, scalars):
        """Every `statistics_frequency` steps: `L`, `R` of every group. Returns
        the number of (member, side) statistics not accumulated (overflow)."""

        def update():
            accumulated = []  # one flag per (member, side): False when skipped
            for group, members, _ in groups:
                blocks = tf.cast(group.to_blocks([m.g for m in members]), tf.float32)
                for left, stats, _ in self._sides(members):
                    if left:
                        outer = group.matmul(blocks, blocks, transpose_b=True)
                    else:
                        outer = group.matmul(blocks, blocks, transpose_a=True)
                    # A statistic that would overflow is not accumulated.
                    finite, finite_members = group.all_per_member(tf.math.is_finite(group.block_sums(outer)))
                    outer = _zero_unless(finite, outer)
                    if self.beta_2 == 1.0:
                        delta = outer
                    else:
                        current = group.stack([_read(s) for s in stats], broadcast=True)
                        delta = (outer - current) * (1.0 - self.beta_2)
                    for s, d in zip(stats, group.unstack(delta)):
                        self.assign_add(s, d)
                    accumulated.append(finite_members)
            return _count_false(accumulated)

        if self.statistics_frequency == 1:
            return update()
        return tf.cond(scalars["statistics_due"], update, lambda: tf.constant(0, tf.int64))

    def _update_roots(self, groups, scalars):
        """Every `preconditioning_frequency` steps from
        `start_preconditioning_step`: the inverse roots of every group's
        statistics (one batched decomposition per group and side)."""
        correction = scalars.get("statistics_correction")

        def update():
            failures = []
            for group, members, p in groups:
                for _, stats, roots in self._sides(members):
                    s = group.stack([_read(x) for x in stats])
                    if correction is not None:
                        s = s / correction
                    new, ok, empty = matrix_functions.inverse_pth_root(s, p, self.epsilon, method=self.root_method)
                    kept = tf.where(ok[..., None, None], new, group.stack([_read(r) for r in roots]))
                    for r, value in zip(roots, group.unstack(kept)):
                        self.assign(r, value)
                    failures.append(tf.logical_or(ok, empty))
            self.root_failures.assign_add(_count_false(failures))
            return tf.constant(0, tf.int64)

        tf.cond(scalars["roots_due"], update, lambda: tf.constant(0, tf.int64))

    def _apply_shampoo_step(self, group, members, scalars):
        """`w -= lr * L^(-1/p) D R^(-1/p)` per block, rescaled to the grafted
        norm of the block (the grafted step before preconditioning starts).
        Returns the per-member "applied" flags (False: non-finite step)."""
        directions = tf.cast(group.to_blocks([m.numerator for m in members]), tf.float32)
        blocks = directions
        for left, _, roots in self._sides(members):
            factor = group.stack([_read(r) for r in roots])
            blocks = group.matmul(factor, blocks) if left else group.matmul(blocks, factor)
        diagonal_lr = tf.cast(scalars["diagonal_lr"], tf.float32)
        if self.grafting in (None, "sgd"):
            grafted = directions  # the grafted direction is the momentum itself
        else:
            grafted = tf.cast(group.to_blocks([m.graft for m in members]), tf.float32)
        if self.grafting is None:
            step = blocks * tf.cast(scalars["learning_rate"] * scalars["scale"], tf.float32)
        else:
            step = blocks * (
                tf.math.divide_no_nan(group.block_norms(grafted), group.block_norms(blocks)) * diagonal_lr
            )
        if self.start_preconditioning_step > 0:
            step = tf.where(scalars["preconditioning"], step, grafted * diagonal_lr)
        # A non-finite step (overflow) is not applied, and counted.
        ok, ok_members = group.all_per_member(tf.math.is_finite(group.block_sums(step)))
        step = _zero_unless(ok, step)
        for member, value in zip(members, group.from_blocks(step)):
            self.assign_sub(member.variable, value)
        return ok_members


def _renamed_betas(kwargs, beta_1, beta_2):
    """`(beta_1, beta_2)`, taking the deprecated `beta1` / `beta2` out of `kwargs`.

    The old keywords (and configs saved with them, through `from_config`)
    are accepted for one release with a `DeprecationWarning`.
    """
    values = {"beta_1": beta_1, "beta_2": beta_2}
    for old, new in (("beta1", "beta_1"), ("beta2", "beta_2")):
        if old not in kwargs:
            continue
        value = kwargs.pop(old)
        if values[new] != _DEFAULTS[new] and values[new] != value:
            raise ValueError(
                f"Pass `{new}` only (`{old}` is its deprecated name). Received: {new}={values[new]}, {old}={value}"
            )
        warnings.warn(
            f"`Shampoo({old}=...)` is deprecated and will be removed in the next release: use `{new}={value!r}` "
            "(the spelling of every Keras optimizer, e.g. `keras.optimizers.Adam`).",
            DeprecationWarning,
            stacklevel=3,
        )
        values[new] = value
    return values["beta_1"], values["beta_2"]


def _validate_arguments(
    beta_1,
    beta_2,
    epsilon,
    block_size,
    preconditioning_frequency,
    statistics_frequency,
    start_preconditioning_step,
    grafting,
    grafting_beta2,
    grafting_epsilon,
    exponent_override,
    max_preconditioner_dim,
    large_dim_policy,
    embedding_pattern,
    diagonal_variables,
    root_method,
    grouped_updates,
):
    """Raises a `ValueError` saying what was expected for a bad `Shampoo` argument."""
    if not 0.0 <= beta_1 < 1.0:
        raise ValueError(f"`beta_1` must be in [0, 1). Received: beta_1={beta_1}")
    if not 0.0 < beta_2 <= 1.0:
        raise ValueError(f"`beta_2` must be in (0, 1] (1.0 sums the statistics). Received: beta_2={beta_2}")
    if not epsilon > 0:
        raise ValueError(f"`epsilon` must be a float > 0. Received: epsilon={epsilon}")
    for key, value in (
        ("block_size", block_size),
        ("preconditioning_frequency", preconditioning_frequency),
        ("statistics_frequency", statistics_frequency),
        ("max_preconditioner_dim", max_preconditioner_dim),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{key}` must be an integer >= 1. Received: {key}={value!r}")
    if (
        isinstance(start_preconditioning_step, bool)
        or not isinstance(start_preconditioning_step, int)
        or start_preconditioning_step < 0
    ):
        raise ValueError(
            "`start_preconditioning_step` must be an integer >= 0. "
            f"Received: start_preconditioning_step={start_preconditioning_step!r}"
        )
    if grafting is not None and grafting not in GRAFTING_TYPES:
        raise ValueError(
            f"`grafting` must be one of {GRAFTING_TYPES} or None. Received: grafting={grafting!r}"
        )
    if not 0.0 < grafting_beta2 < 1.0:
        raise ValueError(f"`grafting_beta2` must be in (0, 1). Received: grafting_beta2={grafting_beta2}")
    if not grafting_epsilon > 0:
        raise ValueError(f"`grafting_epsilon` must be > 0. Received: grafting_epsilon={grafting_epsilon}")
    if exponent_override is not None and not exponent_override > 0:
        raise ValueError(
            "`exponent_override` must be None or a number p > 0 (roots L^(-1/p)). "
            f"Received: exponent_override={exponent_override}"
        )
    if large_dim_policy not in LARGE_DIM_POLICIES:
        raise ValueError(
            f"`large_dim_policy` must be one of {LARGE_DIM_POLICIES}. "
            f"Received: large_dim_policy={large_dim_policy!r}"
        )
    if root_method not in ROOT_METHODS:
        raise ValueError(f"`root_method` must be one of {ROOT_METHODS}. Received: root_method={root_method!r}")
    if root_method == "newton" and exponent_override is not None and int(exponent_override) != exponent_override:
        raise ValueError(
            "`root_method='newton'` needs an integer `exponent_override`. "
            f"Received: exponent_override={exponent_override}"
        )
    if embedding_pattern is not None:
        try:
            re.compile(embedding_pattern)
        except (re.error, TypeError) as e:
            raise ValueError(
                f"`embedding_pattern` must be a regular expression or None. "
                f"Received: embedding_pattern={embedding_pattern!r} ({e})"
            ) from None
    if diagonal_variables is not None and (
        isinstance(diagonal_variables, str) or not all(isinstance(p, str) for p in diagonal_variables)
    ):
        raise ValueError(
            "`diagonal_variables` must be a list of regular expressions (strings). "
            f"Received: diagonal_variables={diagonal_variables!r}"
        )
    if not isinstance(grouped_updates, bool):
        raise ValueError(f"`grouped_updates` must be True or False. Received: grouped_updates={grouped_updates!r}")


class _Member(collections.namedtuple("_Member", "index plan variable g numerator graft")):
    """A preconditioned variable in one step's update: its index, plan, the
    variable, its sanitised gradient, momentum direction and grafted direction."""


def _zero_unless(ok, x):
    """`x` where `ok`, else zeros (also where `x` is NaN / inf).

    `ok` is a boolean scalar, or a vector over the first axis of `x` (one flag
    per block of a stack). `multiply_no_nan` by the 0 / 1 flag: the same
    values as a select, at a third of the CPU time of TensorFlow's
    broadcasting `SelectV2` on the tensors of a training step.
    """
    mask = tf.cast(ok, x.dtype)
    if ok.shape.rank:
        mask = tf.reshape(mask, [-1] + [1] * (x.shape.rank - 1))
    return tf.math.multiply_no_nan(x, mask)


def _count_false(flags):
    """Number of False entries of a list of boolean tensors (scalars or vectors)."""
    if not flags:
        return tf.constant(0, tf.int64)
    scalars = [f for f in flags if f.shape.rank == 0]
    parts = ([tf.stack(scalars)] if scalars else []) + [f for f in flags if f.shape.rank != 0]
    stacked = parts[0] if len(parts) == 1 else tf.concat(parts, axis=0)
    total = stacked.shape[0] if stacked.shape[0] is not None else tf.size(stacked, out_type=tf.int64)
    return total - tf.reduce_sum(tf.cast(stacked, tf.int64))


if Shampoo.__doc__ is not None:
    Shampoo.__doc__ = Shampoo.__doc__.replace(
        "{{base_optimizer_keyword_args}}", keras_internals.base_optimizer_keyword_args()
    )
