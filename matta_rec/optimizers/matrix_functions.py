"""Inverse p-th roots of symmetric positive semi-definite matrices, for Shampoo.

This module holds only the matrix math (pure TensorFlow ops, usable inside
`tf.function`, under `tf.distribute` and under XLA); the optimizer's
bookkeeping lives in `matta_rec.optimizers.shampoo`.

Every function works on a batch of matrices `[..., d, d]` and returns, next to
the root, a boolean `ok` per matrix plus a boolean `empty` per matrix:

* `ok` is False when the input or the result is not finite, or when the
  coupled-Newton iteration did not reach its tolerance. The caller keeps its
  previous root for that matrix and counts a failure.
* `empty` is True when the matrix is (numerically) zero: no statistics yet.
  Such a matrix has no meaningful root; the caller keeps its previous root
  and does not count a failure. `ok` is False for empty matrices too.

The regularisation is relative: the root is taken of `A + epsilon * lmax * I`
where `lmax` is the largest eigenvalue of `A`, so the conditioning of the
regularised matrix is at most `1 / epsilon` whatever the scale of `A`.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = [
    "stacked_matmul",
    "inverse_pth_root",
    "inverse_pth_root_eigh",
    "inverse_pth_root_newton",
    "max_eigenvalue",
]


def stacked_matmul(a, b, transpose_a=False, transpose_b=False):
    """`tf.matmul` of two stacks of matrices `[n, ., .]`, as `n` 2-D matmuls.

    Same result as `tf.matmul(a, b, ...)`. On CPU, TensorFlow's (oneDNN)
    batched matmul costs 1.5x (192 x 192) to 10x (a few rows) the CPU time of
    2-D matmuls on the small stacks Shampoo multiplies every step, so a stack
    with a static size is cut into 2-D products (a lone matrix is reshaped,
    not sliced); other shapes go to `tf.matmul`.

    Args:
        a: float tensor `[n, p, q]` (`[n, q, p]` with `transpose_a`).
        b: float tensor `[n, q, r]` (`[n, r, q]` with `transpose_b`).
        transpose_a: multiply by `a`'s transposes.
        transpose_b: multiply by `b`'s transposes.

    Returns:
        `[n, p, r]`.
    """
    n = a.shape[0] if a.shape.rank == 3 else None
    if n is None or b.shape.rank != 3 or b.shape[0] != n or not a.shape[1:].is_fully_defined():
        return tf.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    if n == 1:
        product = tf.matmul(
            tf.reshape(a, a.shape[1:]), tf.reshape(b, b.shape[1:]), transpose_a=transpose_a, transpose_b=transpose_b
        )
        return tf.reshape(product, [1] + product.shape.as_list())
    left = tf.unstack(a, num=n)
    right = left if b is a else tf.unstack(b, num=n)  # `G G^T`: one unstack
    products = [tf.matmul(x, y, transpose_a=transpose_a, transpose_b=transpose_b) for x, y in zip(left, right)]
    return tf.stack(products)


def _all_finite(x, axes=(-2, -1)):
    return tf.reduce_all(tf.math.is_finite(x), axis=axes)


def _sanitise(matrices):
    """Replaces non-finite matrices of a batch by the identity.

    Returns the sanitised batch (so that decompositions never see NaN or inf)
    and the per-matrix finiteness mask.
    """
    finite = _all_finite(matrices)
    eye = tf.eye(tf.shape(matrices)[-1], batch_shape=tf.shape(matrices)[:-2], dtype=matrices.dtype)
    safe = tf.where(finite[..., None, None], matrices, eye)
    # Symmetrise: accumulated statistics drift from symmetry by round-off.
    safe = 0.5 * (safe + tf.linalg.matrix_transpose(safe))
    return safe, finite


def inverse_pth_root_eigh(matrices, p, epsilon, compute_dtype=tf.float64):
    """`(A + epsilon * lmax(A) * I) ** (-1/p)` by eigendecomposition.

    The decomposition runs in `compute_dtype` (float64 by default: float32
    eigendecompositions lose the small eigenvalues beyond condition numbers
    of about 1e6). Negative eigenvalues from round-off are clipped to 0.

    Args:
        matrices: float tensor `[..., d, d]`, symmetric PSD.
        p: positive float, the root (4 gives the inverse fourth root).
        epsilon: positive float, regularisation relative to the largest
            eigenvalue.
        compute_dtype: dtype the decomposition runs in.

    Returns:
        `(roots, ok, empty)`: roots in the input dtype, `ok` and `empty`
        booleans of shape `[...]`.
    """
    in_dtype = matrices.dtype
    safe, finite = _sanitise(tf.cast(matrices, compute_dtype))
    eigenvalues, eigenvectors = tf.linalg.eigh(safe)
    eigenvalues = tf.maximum(eigenvalues, tf.zeros([], compute_dtype))
    lmax = tf.reduce_max(eigenvalues, axis=-1)
    empty = tf.logical_and(finite, tf.logical_not(lmax > 0))
    # For empty matrices use a harmless shift so the arithmetic stays finite;
    # their result is discarded by the caller anyway.
    shift = tf.where(lmax > 0, lmax * tf.cast(epsilon, compute_dtype), tf.ones_like(lmax))
    powered = tf.pow(eigenvalues + shift[..., None], tf.cast(-1.0 / p, compute_dtype))
    roots = tf.matmul(eigenvectors * powered[..., None, :], eigenvectors, transpose_b=True)
    ok = tf.logical_and(finite, tf.logical_not(empty))
    ok = tf.logical_and(ok, _all_finite(roots))
    ok = tf.logical_and(ok, tf.reduce_all(tf.math.is_finite(eigenvalues), axis=-1))
    return tf.cast(roots, in_dtype), ok, empty


def max_eigenvalue(matrices, iterations=40):
    """Largest eigenvalue of symmetric PSD matrices `[..., d, d]` by power iteration.

    Starts from the all-ones vector plus a small ramp (so that it is not
    orthogonal to the top eigenvector of the usual statistics matrices).
    """
    d = tf.shape(matrices)[-1]
    v = tf.ones(tf.concat([tf.shape(matrices)[:-1], [1]], 0), matrices.dtype)
    ramp = tf.cast(tf.range(d), matrices.dtype)[:, None] / tf.cast(d, matrices.dtype)
    v = v + 0.01 * ramp
    v = v / tf.norm(v, axis=-2, keepdims=True)

    def body(i, v):
        w = tf.matmul(matrices, v)
        n = tf.norm(w, axis=-2, keepdims=True)
        return i + 1, tf.math.divide_no_nan(w, n)

    _, v = tf.while_loop(lambda i, v: i < iterations, body, (tf.constant(0), v))
    return tf.squeeze(tf.matmul(v, tf.matmul(matrices, v), transpose_a=True), [-2, -1])


def inverse_pth_root_newton(
    matrices,
    p,
    epsilon,
    iterations=100,
    tolerance=1e-6,
    compute_dtype=tf.float64,
):
    """`(A + epsilon * lmax(A) * I) ** (-1/p)` by the coupled Newton iteration.

    Matmul-only (Guo & Higham 2006, as in the public Shampoo implementations):
    with `M_0 = z A`, `X_0 = z**(1/p) I` and `T_k = ((p + 1) I - M_k) / p`,
    iterate `X_{k+1} = X_k T_k`, `M_{k+1} = T_k**p M_k`; `M_k -> I` and
    `X_k -> A**(-1/p)`. `z = (1 + p) / (2 ||A||_F)`.

    Args:
        matrices: float tensor `[..., d, d]`, symmetric PSD.
        p: positive integer, the root.
        epsilon: positive float, regularisation relative to the largest
            eigenvalue (estimated by power iteration).
        iterations: maximum number of Newton steps.
        tolerance: a matrix whose `max |M_k - I|` stays above this is a
            failure (`ok` False).
        compute_dtype: dtype of the iteration.

    Returns:
        `(roots, ok, empty)` as `inverse_pth_root_eigh`.
    """
    if int(p) != p or p < 1:
        raise ValueError(f"The coupled Newton iteration needs an integer root p >= 1. Received: p={p}")
    p = int(p)
    in_dtype = matrices.dtype
    safe, finite = _sanitise(tf.cast(matrices, compute_dtype))
    d = tf.shape(safe)[-1]
    lmax = max_eigenvalue(safe)
    empty = tf.logical_and(finite, tf.logical_not(lmax > 0))
    lmax = tf.where(lmax > 0, lmax, tf.ones_like(lmax))
    eye = tf.eye(d, batch_shape=tf.shape(safe)[:-2], dtype=compute_dtype)
    reg = safe + (tf.cast(epsilon, compute_dtype) * lmax)[..., None, None] * eye
    # The Frobenius norm bounds the spectral norm from above whatever the
    # power iteration's error, which keeps the iteration in its basin.
    norm = tf.norm(reg, axis=[-2, -1])
    z = (1.0 + p) / (2.0 * norm)
    m = reg * z[..., None, None]
    x = eye * tf.pow(z, 1.0 / p)[..., None, None]
    alpha = tf.cast(-1.0 / p, compute_dtype)

    def error_of(m):
        return tf.reduce_max(tf.abs(m - eye), axis=[-2, -1])

    def body(i, x, m, err, running):
        t = (1.0 - alpha) * eye + alpha * m
        x_new = tf.matmul(x, t)
        t_p = t
        for _ in range(p - 1):
            t_p = tf.matmul(t_p, t)
        m_new = tf.matmul(t_p, m)
        err_new = error_of(m_new)
        # The error is not monotone in the first steps; a matrix whose error
        # grows by more than 20% is diverging and stops where it was.
        step = tf.logical_and(running, err_new < 1.2 * err)
        x = tf.where(step[..., None, None], x_new, x)
        m = tf.where(step[..., None, None], m_new, m)
        err = tf.where(step, err_new, err)
        running = tf.logical_and(step, err > tolerance)
        return i + 1, x, m, err, running

    def cond(i, x, m, err, running):
        return tf.logical_and(i < iterations, tf.reduce_any(running))

    err0 = error_of(m)
    _, x, m, err, _ = tf.while_loop(cond, body, (tf.constant(0), x, m, err0, err0 > tolerance))
    ok = tf.logical_and(finite, tf.logical_not(empty))
    ok = tf.logical_and(ok, err <= tolerance)
    ok = tf.logical_and(ok, _all_finite(x))
    return tf.cast(x, in_dtype), ok, empty


def inverse_pth_root(matrices, p, epsilon, method="eigh", **kwargs):
    """Dispatches to `inverse_pth_root_eigh` or `inverse_pth_root_newton`."""
    if method == "eigh":
        return inverse_pth_root_eigh(matrices, p, epsilon, **kwargs)
    if method == "newton":
        return inverse_pth_root_newton(matrices, p, epsilon, **kwargs)
    raise ValueError(f"Unknown root method {method!r}; expected 'eigh' or 'newton'.")
