"""Tests of matta_rec.optimizers: Shampoo, its matrix roots, blocking, get()."""

import json
import os
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from matta_rec.errors import ConfigError
from matta_rec.optimizers import Shampoo, get
from matta_rec.optimizers import matrix_functions as mf
from matta_rec.optimizers.partition import make_plan, matrix_view_shape


# ----------------------------------------------------------------- references


def np_root(a, p, eps):
    """(A + eps * lmax I)^(-1/p) in float64 NumPy, independent of the package."""
    w, q = np.linalg.eigh(np.asarray(a, np.float64))
    w = np.maximum(w, 0.0)
    return (q * (w + eps * w.max()) ** (-1.0 / p)) @ q.T


def raw_shampoo_reference(w0, grads, lr, beta2, eps, p=4):
    """Shampoo with frequency 1, no grafting, no momentum, in NumPy float64."""
    w = np.asarray(w0, np.float64).copy()
    left = np.zeros((w.shape[0],) * 2)
    right = np.zeros((w.shape[1],) * 2)
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, np.float64)
        if beta2 == 1.0:
            left, right, corr = left + g @ g.T, right + g.T @ g, 1.0
        else:
            left = beta2 * left + (1 - beta2) * g @ g.T
            right = beta2 * right + (1 - beta2) * g.T @ g
            corr = 1 - beta2**t
        w -= lr * np_root(left / corr, p, eps) @ g @ np_root(right / corr, p, eps)
    return w


def run(opt, w0, grads):
    w = keras.Variable(np.asarray(w0, np.float32))
    for g in grads:
        opt.apply([tf.constant(np.asarray(g, np.float32))], [w])
    return w.numpy()


def rand(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ------------------------------------------------------------ matrix roots


@pytest.mark.parametrize("cond", [1e2, 1e6, 1e12])
@pytest.mark.parametrize("method", ["eigh", "newton"])
def test_inverse_root_matches_float64_reference(cond, method):
    rng = np.random.default_rng(int(np.log10(cond)))
    d = 24
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a = (q * np.logspace(0, -np.log10(cond), d)) @ q.T
    eps = 1e-6
    got, ok, empty = mf.inverse_pth_root(tf.constant(a[None]), 4, eps, method=method)
    ref = np_root(a, 4, eps)
    assert bool(ok[0]) and not bool(empty[0])
    np.testing.assert_allclose(got[0].numpy(), ref, rtol=0, atol=2e-5 * np.abs(ref).max())


def test_inverse_root_is_not_a_square_root_on_non_commuting_matrices():
    # An implementation converging to -1/2 would pass identity tests; not this one.
    a = rand((6, 9), 3).astype(np.float64)
    a = a @ a.T
    got, ok, _ = mf.inverse_pth_root_eigh(tf.constant(a[None]), 4, 1e-9)
    r = got[0].numpy()
    np.testing.assert_allclose(np.linalg.matrix_power(r, 4) @ (a + 1e-9 * np.linalg.eigvalsh(a).max() * np.eye(6)),
                               np.eye(6), atol=1e-6)


def test_inverse_root_flags_non_finite_and_empty():
    good = np.diag([2.0, 1.0])
    bad = np.array([[np.nan, 0.0], [0.0, 1.0]])
    zero = np.zeros((2, 2))
    for method in ("eigh", "newton"):
        roots, ok, empty = mf.inverse_pth_root(tf.constant(np.stack([good, bad, zero])), 4, 1e-6, method=method)
        assert ok.numpy().tolist() == [True, False, False]
        assert empty.numpy().tolist() == [False, False, True]
        assert np.all(np.isfinite(roots.numpy()))


# --------------------------------------------------------------- partition


def test_partition_views_and_blocks():
    assert matrix_view_shape((7,)) is None
    assert matrix_view_shape((512, 1)) is None
    assert matrix_view_shape((3, 3, 64, 128)) == (576, 128)
    plan = make_plan((10, 7), block_size=4, max_preconditioner_dim=100)
    assert plan.num_chunks == (3, 2) and plan.chunk == (4, 4)
    x = tf.constant(rand((10, 7), 0))
    blocks = plan.to_blocks(x)
    assert blocks.shape == (6, 4, 4)
    np.testing.assert_array_equal(plan.from_blocks(blocks).numpy(), x.numpy())
    (r0, r1), (c0, c1) = plan.block_bounds()[5]
    np.testing.assert_array_equal(blocks[5, : r1 - r0, : c1 - c0].numpy(), x.numpy()[r0:r1, c0:c1])
    one_sided = make_plan((5000, 8), 512, 4096, "one_sided")
    assert one_sided.precondition == (False, True) and one_sided.chunk == (5000, 8)
    assert make_plan((5000, 8), 512, 4096, "diagonal").diagonal
    assert make_plan((100, 8), 512, 4096, "one_sided", first_dim_is_large=True).precondition == (False, True)


def test_block_group_layout_and_stacked_matmul():
    from matta_rec.optimizers.partition import BlockGroup

    a, b = rand((3, 4, 5), 1), rand((3, 5, 2), 2)
    np.testing.assert_allclose(mf.stacked_matmul(tf.constant(a), tf.constant(b)).numpy(), a @ b, rtol=1e-5)
    np.testing.assert_allclose(mf.stacked_matmul(tf.constant(a[:1]), tf.constant(a[:1]), transpose_b=True).numpy(),
                               a[:1] @ a[:1].transpose(0, 2, 1), rtol=1e-5)
    # Members of one block shape: (6, 4) and (2, 3, 4) cut into 3 x 4 blocks, (3, 4) whole.
    plans = [make_plan(s, 4, 100) for s in ((6, 4), (2, 3, 4), (3, 4))]
    group = BlockGroup(plans)
    xs = [tf.constant(rand(p.shape, k)) for k, p in enumerate(plans)]
    blocks = group.to_blocks(xs)
    assert blocks.shape == (5, 3, 4) and group.sizes == [2, 2, 1]
    for x, back in zip(xs, group.from_blocks(blocks)):
        np.testing.assert_array_equal(back.numpy(), x.numpy())
    per_block, per_member = group.all_per_member(tf.constant([True, True, False, True, True]))
    assert per_block.numpy().tolist() == [True, True, False, False, True]
    assert per_member.numpy().tolist() == [True, False, True]
    # A lone block is its matrix: no leading axis.
    lone = BlockGroup([make_plan((3, 4), 4, 100)])
    assert lone.single and lone.to_blocks([xs[2]]).shape == (3, 4)
    assert lone.unstack(lone.stack([tf.zeros((1, 3, 3))]))[0].shape == (1, 3, 3)
    with pytest.raises(ValueError, match="block shape"):
        BlockGroup([make_plan((6, 4), 4, 100), make_plan((8, 8), 4, 100)])


# --------------------------------------------------------- update equations


@pytest.mark.parametrize("beta2", [1.0, 0.9])
def test_raw_update_matches_numpy_float64(beta2):
    w0, grads = rand((6, 4), 0), [rand((6, 4), s) for s in (1, 2, 3)]
    opt = Shampoo(
        learning_rate=0.1, beta_1=0.0, beta_2=beta2, epsilon=1e-6, grafting=None,
        preconditioning_frequency=1, start_preconditioning_step=0,
    )
    got = run(opt, w0, grads)
    ref = raw_shampoo_reference(w0, grads, 0.1, beta2, 1e-6)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # Not a trivial update: it differs from the gradient step.
    assert np.abs(ref - (w0 - 0.1 * sum(grads))).max() > 1e-2


def test_square_full_rank_step_is_the_polar_factor():
    g = rand((5, 5), 7)
    opt = Shampoo(learning_rate=1.0, beta_1=0.0, beta_2=1.0, epsilon=1e-12, grafting=None,
                  preconditioning_frequency=1, start_preconditioning_step=0)
    got = run(opt, np.zeros((5, 5)), [g])
    u, _, vt = np.linalg.svd(g.astype(np.float64))
    np.testing.assert_allclose(-got, u @ vt, atol=2e-4)


def test_exponent_override():
    w0, grads = rand((4, 3), 0), [rand((4, 3), 1)]
    opt = Shampoo(learning_rate=0.1, beta_1=0.0, beta_2=1.0, grafting=None, exponent_override=2,
                  preconditioning_frequency=1, start_preconditioning_step=0)
    np.testing.assert_allclose(run(opt, w0, grads), raw_shampoo_reference(w0, grads, 0.1, 1.0, 1e-6, p=2),
                               rtol=1e-4, atol=1e-5)


def test_blocked_matrix_equals_shampoo_on_each_block():
    shape, steps = (10, 7), 4
    grads = [rand(shape, 10 + s) for s in range(steps)]
    w0 = rand(shape, 9)
    kw = dict(learning_rate=0.05, beta_1=0.9, beta_2=0.99, grafting="adam",
              preconditioning_frequency=2, start_preconditioning_step=1)
    blocked = Shampoo(block_size=4, **kw)
    got = run(blocked, w0, grads)
    plan = blocked.plan_for(keras.Variable(w0))
    assert plan.num_blocks == 6
    expected = np.empty(shape, np.float32)
    for (r0, r1), (c0, c1) in plan.block_bounds():
        whole = Shampoo(block_size=64, **kw)
        expected[r0:r1, c0:c1] = run(whole, w0[r0:r1, c0:c1], [g[r0:r1, c0:c1] for g in grads])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_equals_adam_before_preconditioning_starts():
    w0, grads = rand((6, 5), 0), [rand((6, 5), s) for s in range(1, 6)]
    b0 = rand((5,), 20)
    shampoo = Shampoo(learning_rate=0.01, beta_1=0.9, grafting="adam", grafting_beta2=0.999,
                      grafting_epsilon=1e-7, start_preconditioning_step=1000)
    adam = keras.optimizers.Adam(learning_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    for opt in (shampoo, adam):
        w, b = keras.Variable(w0), keras.Variable(b0)
        for g in grads:
            opt.apply([tf.constant(g), tf.constant(g[0])], [w, b])
        opt.result = (w.numpy(), b.numpy())
    np.testing.assert_allclose(shampoo.result[0], adam.result[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(shampoo.result[1], adam.result[1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("grafting", ["adagrad", "rmsprop", "sgd"])
def test_grafted_diagonal_formulas(grafting):
    # 1-D variables always take the grafted step: check it against the formula.
    w0, grads = rand((7,), 0), [rand((7,), s) for s in range(1, 4)]
    lr, b1, b2, eps = 0.05, 0.5, 0.9, 1e-7
    opt = Shampoo(learning_rate=lr, beta_1=b1, grafting=grafting, grafting_beta2=b2, grafting_epsilon=eps,
                  start_preconditioning_step=0)
    got = run(opt, w0, grads)
    w, m, v = w0.astype(np.float64), 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        d = m / (1 - b1**t)
        if grafting == "adagrad":
            v = v + g**2
            d = d / (np.sqrt(v) + eps)
        elif grafting == "rmsprop":
            v = b2 * v + (1 - b2) * g**2
            d = d / (np.sqrt(v) + eps)
        w = w - lr * d
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)


def test_grafting_gives_each_block_the_grafted_norm():
    w0, g = rand((8, 6), 0), rand((8, 6), 1)
    opt = Shampoo(learning_rate=1.0, beta_1=0.0, grafting="sgd", block_size=4,
                  preconditioning_frequency=1, start_preconditioning_step=0)
    got = run(opt, w0, [g])
    step = w0 - got
    plan = opt.plan_for(keras.Variable(w0))
    for (r0, r1), (c0, c1) in plan.block_bounds():
        np.testing.assert_allclose(np.linalg.norm(step[r0:r1, c0:c1]), np.linalg.norm(g[r0:r1, c0:c1]), rtol=1e-5)
    # ... but not the gradient's direction.
    assert np.abs(step - g).max() > 1e-2


def test_nesterov_and_weight_decay_change_the_step():
    w0, grads = rand((4, 4), 0), [rand((4, 4), s) for s in (1, 2)]
    base = dict(learning_rate=0.1, preconditioning_frequency=1, start_preconditioning_step=0)
    plain = run(Shampoo(**base), w0, grads)
    nesterov = run(Shampoo(nesterov=True, **base), w0, grads)
    decayed = run(Shampoo(weight_decay=0.5, **base), w0, grads)
    assert np.abs(plain - nesterov).max() > 1e-4
    # Decoupled weight decay: w <- w - lr * wd * w before the same step.
    w1 = run(Shampoo(**base), w0, grads[:1])
    w1_decayed = run(Shampoo(weight_decay=0.5, **base), w0, grads[:1])
    np.testing.assert_allclose(w1_decayed, w1 - 0.1 * 0.5 * w0, rtol=1e-5, atol=1e-6)
    assert np.abs(plain - decayed).max() > 1e-3


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(grafting=None, beta_1=0.0, beta_2=1.0, statistics_frequency=2),
        dict(grafting="sgd", nesterov=True, exponent_override=2, large_dim_policy="one_sided",
             max_preconditioner_dim=8),
    ],
)
def test_grouped_update_equals_per_variable_update(kw):
    # Shampoo updates the variables of a step together (blocks of one shape
    # stacked into batched ops); Keras's per-variable `update_step` path
    # (`grouped_updates=False`) must give the same weights, state and counters.
    shapes = {"a": (6, 4), "b": (6, 4), "c": (4, 6), "d": (10, 7), "e": (2, 3, 4), "bias": (5,),
              "user_table": (9, 4), "f": (12, 3)}
    steps = 6
    rng = np.random.default_rng(0)
    grads = [{k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()} for _ in range(steps)]
    grads[3]["a"][0, 0] = np.nan  # skipped and counted
    grads[4]["b"][:] = 1e30  # statistics overflow: not accumulated, counted
    settings = dict(learning_rate=0.05, block_size=4, preconditioning_frequency=2, start_preconditioning_step=2)
    settings.update(kw)
    results = []
    for grouped in (True, False):
        opt = Shampoo(grouped_updates=grouped, **settings)
        variables = [keras.Variable(rand(s, 100 + k), name=name) for k, (name, s) in enumerate(shapes.items())]

        @tf.function
        def step(gs):
            opt.apply(gs, variables)

        for g in grads:
            step([tf.constant(g[k]) for k in shapes])
        state = [v.numpy() for v in variables] + [v.numpy() for v in opt.variables]
        results.append((state, opt.diagnostics(), opt.last_update_groups))
    # Both paths ran: the grouped step stacked "a" and "b" (one block layout)
    # into one group; the per-variable step updated one variable per call.
    grouped_groups, per_variable_groups = results[0][2], results[1][2]
    assert any({"a", "b"} <= set(group) for group in grouped_groups), grouped_groups
    assert len(per_variable_groups) == 1 and len(per_variable_groups[0]) == 1, per_variable_groups
    assert results[0][1] == results[1][1]
    assert results[0][1]["shampoo_skipped_updates"] >= 2
    assert len(results[0][0]) == len(results[1][0])
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_preconditioner_state_is_a_read_only_snapshot():
    opt = Shampoo(learning_rate=0.1, beta_2=1.0, block_size=4, preconditioning_frequency=1,
                  start_preconditioning_step=0)
    w = keras.Variable(rand((10, 7), 0), name="kernel")
    b = keras.Variable(rand((7,), 1), name="bias")
    with pytest.raises(ValueError, match="not built"):
        opt.preconditioner_state(w)
    grads = [rand((10, 7), s) for s in (2, 3)]
    for g in grads:
        opt.apply([tf.constant(g), tf.constant(g[0])], [w, b])
    state = opt.preconditioner_state("kernel")
    assert state.path == w.path and state.kind == "kronecker" and state.shape == (10, 7)
    assert state.num_blocks == 6 and state.block_shape == (4, 4) and state.root_exponent == 4
    assert state.preconditioned_sides == (True, True)
    assert state.statistics_left.shape == state.root_left.shape == (6, 4, 4)
    assert state.momentum.shape == state.graft_accumulator.shape == (10, 7)
    # Block 5 holds rows 8:10 and columns 4:7 (zero-padded): its statistics
    # are the summed G^T G of that block.
    (r0, r1), (c0, c1) = state.plan.block_bounds()[5]
    expected = sum(g[r0:r1, c0:c1].T.astype(np.float64) @ g[r0:r1, c0:c1] for g in grads)
    np.testing.assert_allclose(state.statistics_right[5, : c1 - c0, : c1 - c0], expected, rtol=1e-5)
    assert not np.allclose(state.root_right[5], np.eye(4))
    # A copy: read-only, and it does not follow later steps.
    with pytest.raises(ValueError):
        state.root_left[0, 0, 0] = 1.0
    opt.apply([tf.constant(rand((10, 7), 4)), tf.constant(rand((7,), 5))], [w, b])
    assert not np.array_equal(opt.preconditioner_state(w).statistics_left, state.statistics_left)
    bias = opt.preconditioner_state(b)
    assert bias.kind == "diagonal" and bias.num_blocks == 0 and bias.block_shape is None
    assert bias.root_exponent is None and bias.statistics_left is None and bias.graft_accumulator.shape == (7,)
    with pytest.raises(ValueError, match="No variable.*kernel"):
        opt.preconditioner_state("missing")


def test_keras_internals_missing_fail_loudly(monkeypatch):
    from matta_rec.errors import MattaError
    from matta_rec.optimizers import keras_internals

    keras_internals.check.cache_clear()
    try:
        # A hook whose signature changed, and one that is gone.
        monkeypatch.setattr(keras.optimizers.Optimizer, "_distributed_tf_update_step", lambda self, grads: None)
        expected = f"Keras {keras.__version__}.*_distributed_tf_update_step.*grouped_updates=False"
        with pytest.raises(MattaError, match=expected):
            Shampoo()
        monkeypatch.setattr(keras.optimizers.Optimizer, "_backend_update_step", None)
        with pytest.raises(MattaError, match="`_backend_update_step` is missing"):
            Shampoo()
        # The per-variable path does not use them.
        opt = Shampoo(grouped_updates=False, start_preconditioning_step=0, preconditioning_frequency=1)
        monkeypatch.setattr(keras.optimizers.Optimizer, "_get_variable_index", None)
        keras_internals.check.cache_clear()  # the check runs once per setting and Keras
        with pytest.raises(MattaError, match="_get_variable_index.*verified on Keras 3"):
            Shampoo(grouped_updates=False)
    finally:
        monkeypatch.undo()
        keras_internals.check.cache_clear()
    w = keras.Variable(rand((4, 3), 0))
    opt.apply([tf.constant(rand((4, 3), 1))], [w])
    assert opt.last_update_groups == ((w.path,),)


# ------------------------------------------------------------- robustness


@pytest.mark.parametrize("grafting", ["adam", None])
def test_zero_huge_and_rank_deficient_gradients_keep_weights_finite(grafting):
    u = rand((8, 1), 1)
    grads = [
        np.zeros((8, 5), np.float32),
        u @ rand((1, 5), 2),  # rank 1
        np.full((8, 5), 1e30, np.float32),
        u @ rand((1, 5), 3) * 1e-30,
        rand((8, 5), 4),
    ]
    opt = Shampoo(learning_rate=0.1, grafting=grafting, preconditioning_frequency=1, start_preconditioning_step=0)
    w = keras.Variable(rand((8, 5), 0))
    for g in grads:
        opt.apply([tf.constant(g)], [w])
        assert np.all(np.isfinite(w.numpy()))
    state = opt.preconditioner_state(w)
    for root in (state.root_left, state.root_right):
        assert root.shape[0] == 1 and np.all(np.isfinite(root))


@pytest.mark.parametrize("grafting", ["adam", "sgd"])
def test_nan_gradient_is_replaced_by_zeros_and_counted(grafting):
    kw = dict(learning_rate=0.1, grafting=grafting, preconditioning_frequency=1, start_preconditioning_step=0)
    w0, g1 = rand((4, 3), 0), rand((4, 3), 1)
    bad = rand((4, 3), 2)
    bad[1, 1] = np.nan
    opt = Shampoo(**kw)
    w = keras.Variable(w0)
    b = keras.Variable(w0[0])
    opt.apply([tf.constant(g1), tf.constant(g1[0])], [w, b])
    opt.apply([tf.constant(bad), tf.constant(bad[1])], [w, b])
    assert opt.diagnostics()["shampoo_skipped_updates"] == 2
    # Same as a zero gradient at that step.
    twin = Shampoo(**kw)
    w2, b2 = keras.Variable(w0), keras.Variable(w0[0])
    twin.apply([tf.constant(g1), tf.constant(g1[0])], [w2, b2])
    twin.apply([tf.zeros((4, 3)), tf.zeros((3,))], [w2, b2])
    np.testing.assert_array_equal(w.numpy(), w2.numpy())
    np.testing.assert_array_equal(b.numpy(), b2.numpy())
    assert np.all(np.isfinite(w.numpy())) and np.all(np.isfinite(opt.preconditioner_state(w).statistics_left))


def test_failed_root_keeps_previous_preconditioner_and_counts():
    opt = Shampoo(learning_rate=0.1, preconditioning_frequency=1, start_preconditioning_step=0)
    w = keras.Variable(rand((4, 3), 0))
    opt.apply([tf.constant(rand((4, 3), 1))], [w])
    before = opt.preconditioner_state(w).root_left
    assert not np.allclose(before, np.eye(4))
    # Poison the statistics through the optimizer's (public) variables, named
    # `<variable path>_stats_left` (Shampoo.build).
    (stats,) = [v for v in opt.variables if v.name == f"{w.path.replace('/', '_')}_stats_left"]
    poisoned = stats.numpy()
    poisoned[0, 0, 0] = np.inf
    stats.assign(poisoned)
    opt.apply([tf.constant(rand((4, 3), 2))], [w])
    np.testing.assert_array_equal(opt.preconditioner_state(w).root_left, before)
    assert opt.diagnostics()["shampoo_root_failures"] == 1
    assert np.all(np.isfinite(w.numpy()))


def test_roots_only_change_at_the_preconditioning_frequency():
    opt = Shampoo(learning_rate=0.1, preconditioning_frequency=3, start_preconditioning_step=2)
    w = keras.Variable(rand((4, 3), 0))
    seen = []
    for s in range(8):
        opt.apply([tf.constant(rand((4, 3), s + 1))], [w])
        seen.append(opt.preconditioner_state(w).root_right)
    changed = [s for s in range(1, 8) if not np.array_equal(seen[s], seen[s - 1])]
    assert changed == [2, 5]  # iterations 2 and 5 (start 2, every 3)
    np.testing.assert_array_equal(seen[0], np.eye(3)[None])


def test_statistics_frequency():
    opt = Shampoo(learning_rate=0.1, statistics_frequency=2, preconditioning_frequency=1,
                  start_preconditioning_step=0, beta_2=1.0)
    w = keras.Variable(rand((4, 3), 0))
    grads = [rand((4, 3), s) for s in range(1, 4)]
    for g in grads:
        opt.apply([tf.constant(g)], [w])
    expected = sum(g.T.astype(np.float64) @ g for g in grads[::2])
    np.testing.assert_allclose(opt.preconditioner_state(w).statistics_right[0], expected, rtol=1e-5)


def test_newton_roots_train_like_eigh():
    w0, grads = rand((6, 4), 0), [rand((6, 4), s) for s in (1, 2, 3)]
    kw = dict(learning_rate=0.1, beta_1=0.0, beta_2=1.0, grafting=None,
              preconditioning_frequency=1, start_preconditioning_step=0)
    np.testing.assert_allclose(run(Shampoo(root_method="newton", **kw), w0, grads),
                               raw_shampoo_reference(w0, grads, 0.1, 1.0, 1e-6), rtol=1e-3, atol=1e-4)


def test_embedding_tables_and_sparse_gradients():
    table = keras.Variable(rand((50, 4), 0), name="user_id_table")
    opt = Shampoo(learning_rate=0.1, start_preconditioning_step=0, preconditioning_frequency=1)
    opt.build([table])
    state = opt.preconditioner_state(table)
    assert opt.plan_for(table).diagonal and state.kind == "diagonal"
    assert state.statistics_left is None and state.statistics_right is None and state.root_right is None
    assert not opt.plan_for(keras.Variable(rand((50, 4), 0), name="tables_kernel")).diagonal
    assert not Shampoo(embedding_pattern=None).plan_for(table).diagonal
    one_sided = Shampoo(learning_rate=0.1, start_preconditioning_step=0, preconditioning_frequency=1,
                        large_dim_policy="one_sided")
    dense_twin = Shampoo(**one_sided.get_config())
    sparse = tf.IndexedSlices(tf.constant(rand((3, 4), 1)), tf.constant([3, 7, 3]), tf.constant([50, 4]))
    t1, t2 = keras.Variable(table.numpy(), name="embeddings"), keras.Variable(table.numpy(), name="a_table")
    one_sided.apply([sparse], [t1])
    dense_twin.apply([tf.convert_to_tensor(sparse)], [t2])
    state = one_sided.preconditioner_state(t1)
    assert state.kind == "kronecker" and state.preconditioned_sides == (False, True)
    assert state.statistics_left is None and state.statistics_right.shape == (1, 4, 4)
    np.testing.assert_allclose(t1.numpy(), t2.numpy(), rtol=1e-6)
    moved = np.abs(t1.numpy() - table.numpy()).max(axis=1) > 0
    assert moved.tolist() == [i in (3, 7) for i in range(50)]


@pytest.mark.parametrize("share_weights,share_embeddings", [(True, True), (False, True), (False, False)])
def test_every_embedding_table_of_a_nested_model_takes_the_diagonal_path(share_weights, share_embeddings):
    """Tables are marked by their layer, not matched by name: the per-level
    tables of an unshared model (`user_id_table_level0`,
    `group_embeddings_level0`) take the diagonal step like the shared ones,
    even with the name fallback off."""
    from nested_testlib import make_schema, make_stats, tiny_config

    from matta_rec.models import NestedRelevanceModel

    schema = make_schema()
    config = tiny_config(share_weights=share_weights, share_embeddings=share_embeddings)
    model = NestedRelevanceModel(schema, make_stats(schema), config)
    tables = [v for v in model.trainable_variables if "_table" in v.name or "group_embeddings" in v.name]
    per_level = [v.name for v in tables if v.name.endswith("_level0")]
    assert bool(per_level) == (not share_embeddings)
    assert {"user_id_table_level0", "group_embeddings_level0"} <= set(per_level) or share_embeddings
    for pattern in (r"(embeddings?|_table)$", None):
        opt = Shampoo(embedding_pattern=pattern)
        opt.build(model.trainable_variables)
        for table in tables:
            assert opt.plan_for(table).diagonal, table.path
            assert opt.preconditioner_state(table).kind == "diagonal"
        kernels = [v for v in model.trainable_variables if v.name.startswith("kernel") and min(v.shape) > 1]
        assert kernels and not any(opt.plan_for(v).diagonal for v in kernels)


def test_decoupled_weight_decay_matches_numpy_for_one_step():
    """`w -= lr * wd * w` next to (not inside) the preconditioned step; by
    default embedding tables and vectors are not decayed."""
    from matta_rec.layers.variable_roles import mark_embedding_table

    lr, wd = 0.1, 0.05
    w0, b0, t0 = rand((4, 3), 0), rand((3,), 1), rand((6, 2), 2)
    gw, gb, gt = rand((4, 3), 3), rand((3,), 4), rand((6, 2), 5)
    kw = dict(learning_rate=lr, beta_1=0.0, beta_2=1.0, grafting=None, weight_decay=wd,
              preconditioning_frequency=1, start_preconditioning_step=0)
    for exclude in ("embeddings_and_vectors", None):
        opt = Shampoo(weight_decay_exclude=exclude, **kw)
        w, b = keras.Variable(w0, name="kernel"), keras.Variable(b0, name="bias")
        t = mark_embedding_table(keras.Variable(t0, name="ids"))
        opt.apply([tf.constant(gw), tf.constant(gb), tf.constant(gt)], [w, b, t])
        decayed = 1.0 - lr * wd
        want_w = raw_shampoo_reference(w0 * decayed, [gw], lr, 1.0, 1e-6)
        np.testing.assert_allclose(w.numpy(), want_w, rtol=1e-4, atol=1e-5)
        keep = 1.0 if exclude else decayed
        np.testing.assert_allclose(b.numpy(), b0 * keep - lr * gb, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(t.numpy(), t0 * keep - lr * gt, rtol=1e-5, atol=1e-6)
        assert opt.preconditioner_state(t).kind == "diagonal"
    with pytest.raises(ValueError, match="weight_decay_exclude"):
        Shampoo(weight_decay_exclude="biases")


def test_exclude_defaults_for_keras_optimizers():
    from matta_rec.layers.variable_roles import mark_embedding_table
    from matta_rec.optimizers.weight_decay import exclude_defaults

    w, b = keras.Variable(rand((4, 3), 0), name="kernel"), keras.Variable(rand((3,), 1), name="bias")
    t = mark_embedding_table(keras.Variable(rand((6, 2), 2), name="ids"))
    e = keras.Variable(rand((6, 2), 3), name="embeddings")  # a Keras Embedding's, by name
    opt = keras.optimizers.AdamW(0.1, weight_decay=0.5)
    assert exclude_defaults(opt, [w, b, t, e]) == [b, t, e]
    zeros = [tf.zeros_like(v.value) for v in (w, b, t, e)]
    before = [v.numpy() for v in (w, b, t, e)]
    opt.apply(zeros, [w, b, t, e])
    np.testing.assert_allclose(w.numpy(), before[0] * (1 - 0.1 * 0.5), rtol=1e-6)
    for v, old in zip((b, t, e), before[1:]):
        np.testing.assert_array_equal(v.numpy(), old)
    assert exclude_defaults(keras.optimizers.Adam(0.1), [w]) == []


# ---------------------------------------------------------- serialization


def test_config_round_trip_and_validation():
    opt = Shampoo(learning_rate=0.02, beta_2=1.0, block_size=64, grafting="rmsprop", exponent_override=2,
                  nesterov=True, weight_decay=1e-4, diagonal_variables=["bias"], root_method="newton",
                  weight_decay_exclude=None)
    config = opt.get_config()
    clone = Shampoo.from_config(config)
    assert clone.get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(restored, Shampoo) and restored.get_config() == config
    for bad, message in [
        (dict(beta_1=1.0), "beta_1"),
        (dict(beta_2=0.0), "beta_2"),
        (dict(grouped_updates="yes"), "grouped_updates"),
        (dict(block_size=0), "block_size"),
        (dict(grafting="lion"), "grafting"),
        (dict(root_method="svd"), "root_method"),
        (dict(exponent_override=-1), "exponent_override"),
        (dict(large_dim_policy="drop"), "large_dim_policy"),
        (dict(start_preconditioning_step=-1), "start_preconditioning_step"),
        (dict(embedding_pattern="("), "embedding_pattern"),
    ]:
        with pytest.raises(ValueError, match=message):
            Shampoo(**bad)


def test_deprecated_beta_names_still_accepted():
    def renamed(record):
        return sorted(str(w.message).split("=")[0] for w in record if w.category is DeprecationWarning)

    with pytest.warns(DeprecationWarning) as record:
        old = Shampoo(beta1=0.5, beta2=1.0, name="s")
    assert renamed(record) == ["`Shampoo(beta1", "`Shampoo(beta2"]
    assert "use `beta_1=0.5`" in str(record[0].message)
    assert (old.beta_1, old.beta_2) == (0.5, 1.0)
    config = old.get_config()
    assert "beta1" not in config and "beta2" not in config
    assert config == Shampoo(beta_1=0.5, beta_2=1.0, name="s").get_config()
    # A config saved with the old names (a .keras file of 0.1.0) still loads.
    saved = dict(config)
    saved["beta1"], saved["beta2"] = saved.pop("beta_1"), saved.pop("beta_2")
    del saved["grouped_updates"]  # not in 0.1.0 configs
    with pytest.warns(DeprecationWarning) as record:
        assert Shampoo.from_config(saved).get_config() == config
    assert renamed(record) == ["`Shampoo(beta1", "`Shampoo(beta2"]
    with pytest.warns(DeprecationWarning) as record:
        built = get({"name": "shampoo", "beta1": 0.5, "beta2": 1.0})
    assert len(renamed(record)) == 2
    assert {**built.get_config(), "name": "s"} == config
    with pytest.raises(ValueError, match="Pass `beta_1` only"):
        Shampoo(beta1=0.5, beta_1=0.7)
    with pytest.raises(ValueError, match="beta_2"), pytest.warns(DeprecationWarning):
        Shampoo(beta2=1.5)  # validated under its new name


def test_get_maps_names_and_configs():
    assert isinstance(get("shampoo"), Shampoo)
    assert isinstance(get("Adam", learning_rate=0.01), keras.optimizers.Adam)
    assert isinstance(get({"name": "adagrad", "learning_rate": 1}), keras.optimizers.Adagrad)
    assert isinstance(get({"name": "sgd"}), keras.optimizers.SGD)
    assert isinstance(get("rmsprop"), keras.optimizers.RMSprop)
    s = get({"class_name": "Shampoo", "config": {"block_size": 32}}, learning_rate=0.5)
    assert s.block_size == 32 and float(s.learning_rate.numpy()) == 0.5
    assert get(s) is s
    with pytest.raises(ConfigError, match="Unknown optimizer"):
        get("no_such_optimizer")
    assert isinstance(get("nadam"), keras.optimizers.Nadam)
    with pytest.raises(ConfigError, match="block_size"):
        get({"name": "shampoo", "block_size": 0})


def _small_model():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(5, activation="tanh", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, name="out")(x))


def _data():
    x = rand((32, 6), 40)
    y = (x @ rand((6, 1), 41)).astype(np.float32)
    return x, y


def _shampoo():
    return Shampoo(learning_rate=0.05, preconditioning_frequency=2, start_preconditioning_step=1)


@pytest.mark.slow
def test_checkpoint_restore_continues_like_an_uninterrupted_run(tmp_path):
    x, y = _data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    def make():
        keras.utils.set_random_seed(3)
        model = _small_model()
        model.compile(optimizer=_shampoo(), loss="mse")
        return model

    straight = make()
    straight.fit(ds, epochs=2, verbose=0)

    first = make()
    first.fit(ds, epochs=1, verbose=0)
    ckpt = tf.train.Checkpoint(model=first, optimizer=first.optimizer)
    path = ckpt.save(str(tmp_path / "ckpt"))
    first.save(tmp_path / "model.keras")

    resumed = make()
    resumed.optimizer.build(resumed.trainable_variables)
    tf.train.Checkpoint(model=resumed, optimizer=resumed.optimizer).restore(path).assert_consumed()
    assert int(resumed.optimizer.iterations.numpy()) == 4
    resumed.fit(ds, epochs=1, verbose=0)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.optimizer, Shampoo)
    assert loaded.optimizer.get_config() == first.optimizer.get_config()
    loaded.fit(ds, epochs=1, verbose=0)
    for a, b in zip(straight.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # The same file as 0.1.0 wrote it (`beta1` / `beta2`, no `grouped_updates`) still loads.
    old = tmp_path / "old.keras"
    with zipfile.ZipFile(tmp_path / "model.keras") as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                saved = config["compile_config"]["optimizer"]["config"]
                saved["beta1"], saved["beta2"] = saved.pop("beta_1"), saved.pop("beta_2")
                del saved["grouped_updates"]
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    with pytest.warns(DeprecationWarning) as record:
        loaded_old = keras.models.load_model(old)
    messages = " ".join(str(w.message) for w in record)
    assert "`Shampoo(beta1=...)` is deprecated" in messages and "`Shampoo(beta2=...)` is deprecated" in messages
    assert loaded_old.optimizer.get_config() == first.optimizer.get_config()
    for a, b in zip(loaded.optimizer.variables, loaded_old.optimizer.variables):
        assert a.path == b.path
    loaded_old.fit(ds, epochs=1, verbose=0)
    for a, b in zip(straight.get_weights(), loaded_old.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_mirrored_strategy_update_equals_single_device(mirrored_strategy):
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices (tests/conftest.py)")
    x, y = _data()

    def train(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(5)
            model = _small_model()
            model.compile(optimizer=_shampoo(), loss="mse")
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        model.fit(ds, epochs=3, verbose=0)
        return model.get_weights(), model.optimizer

    single, _ = train(tf.distribute.OneDeviceStrategy(devices[0].name))
    mirrored, opt = train(mirrored_strategy)
    assert int(opt.iterations.numpy()) == 6
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert opt.diagnostics()["shampoo_root_failures"] == 0


@pytest.mark.slow
def test_jit_compiled_fit_matches_eager():
    x, y = _data()
    results = []
    for jit in (True, False):
        keras.utils.set_random_seed(7)
        model = _small_model()
        model.compile(optimizer=_shampoo(), loss="mse", jit_compile=jit, run_eagerly=not jit)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------ convergence


def _steps_to_target(make_opt, x, y, target, max_steps):
    w = keras.Variable(np.zeros((x.shape[1], y.shape[1]), np.float32))
    opt = make_opt()
    xt, yt = tf.constant(x), tf.constant(y)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(xt @ w - yt))
        opt.apply([tape.gradient(loss, w)], [w])
        return loss

    for s in range(max_steps):
        loss = float(step())
        if not np.isfinite(loss):
            return max_steps
        if loss < target:
            return s + 1
    return max_steps


@pytest.mark.slow
def test_shampoo_beats_adam_on_ill_conditioned_least_squares():
    rng = np.random.default_rng(0)
    n, d, k = 256, 16, 8
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    x = (rng.normal(size=(n, d)) * np.logspace(0, -2, d)) @ q.T  # condition number ~1e2
    w_true = rng.normal(size=(d, k)) * 3
    y = x @ w_true
    x, y = x.astype(np.float32), y.astype(np.float32)
    target = 1e-3 * float(np.mean(y**2))
    max_steps = 300
    lrs = [0.003, 0.01, 0.03, 0.1, 0.3]
    adam = min(_steps_to_target(lambda lr=lr: keras.optimizers.Adam(lr), x, y, target, max_steps) for lr in lrs)
    shampoo = min(
        _steps_to_target(
            lambda lr=lr: Shampoo(lr, beta_2=1.0, preconditioning_frequency=5, start_preconditioning_step=1),
            x, y, target, max_steps,
        )
        for lr in lrs
    )
    print(f"steps to target: Shampoo {shampoo}, Adam {adam}")
    assert shampoo < max_steps
    assert shampoo * 2 <= adam


# ---------------------------------------------------------------- inspect


def test_dump_and_plot_preconditioner(tmp_path):
    from matta_rec.optimizers.heatmaps import assemble_factor, correlation, dump_preconditioner, plot_preconditioner

    rng = np.random.default_rng(0)
    w = keras.Variable(np.zeros((5, 6), np.float32), name="kernel")
    opt = Shampoo(learning_rate=0.01, beta_2=1.0, block_size=4, preconditioning_frequency=1,
                  start_preconditioning_step=0)
    grads = []
    for _ in range(20):
        # Units 0-2 and 3-5 are driven by two independent sources: two blocks.
        a, b = rng.normal(size=(5, 1)), rng.normal(size=(5, 1))
        g = np.concatenate([a * [1.0, 0.8, 1.2], b * [1.1, 0.9, 1.0]], axis=1) + 0.05 * rng.normal(size=(5, 6))
        grads.append(g.astype(np.float32))
        opt.apply([tf.constant(grads[-1])], [w])
    full = assemble_factor(opt, "kernel", side="right")
    expected = sum(g.T.astype(np.float64) @ g for g in grads)
    plan = opt.plan_for(w)
    mask = np.zeros((6, 6), bool)
    for j in range(plan.num_chunks[1]):
        c = plan.chunk[1]
        mask[j * c:(j + 1) * c, j * c:(j + 1) * c] = True
    np.testing.assert_allclose(full[mask], expected[mask], rtol=1e-4)
    assert np.all(full[~mask] == 0)
    corr = correlation(full)
    assert corr[0, 1] > 0.9 and corr[4, 5] > 0.9 and corr[0, 4] == 0

    npz = dump_preconditioner(opt, w, tmp_path / "p.npz")
    with np.load(npz) as data:
        assert {"stats_left", "stats_right", "root_left", "root_right", "full_statistics_right"} <= set(data)
        np.testing.assert_allclose(data["full_statistics_right"], full)
    npy = dump_preconditioner(opt, "kernel", tmp_path / "p.npy")
    np.testing.assert_allclose(np.load(npy), full)

    png, shown = plot_preconditioner(opt, w, tmp_path / "p.png", boundaries=[3])
    assert os.path.getsize(png) > 1000 and shown.shape == (6, 6)
    with pytest.raises(ValueError, match="No variable"):
        plot_preconditioner(opt, "missing", tmp_path / "x.png")
