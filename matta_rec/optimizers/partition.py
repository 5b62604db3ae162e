"""How Shampoo sees a variable: matrix view, preconditioned sides, blocks.

A `BlockPlan` is computed once per variable (from static shapes) when the
optimizer is built. It says

* the matrix view of the variable: dimensions of size 1 are dropped; tensors
  of rank > 2 are reshaped to a matrix by merging their leading and trailing
  dimensions at the most balanced split (e.g. a `[3, 3, 64, 128]` kernel is
  seen as `576 x 128`); rank 0 / 1 variables have no matrix view and go on
  the grafted diagonal path;
* which sides get a Kronecker factor: a side longer than
  `max_preconditioner_dim` gets none (with `large_dim_policy="one_sided"`
  the other side is still preconditioned, with `"diagonal"` the whole
  variable goes on the diagonal path);
* the blocks: each preconditioned side of length `d` is cut into
  `k = ceil(d / block_size)` chunks of equal length `ceil(d / k)` (the last
  one padded with zeros), a side without a factor is one chunk. Padding is
  exact: a zero row adds nothing to the statistics and the root of a padded
  factor is block diagonal, so the real part of the update is the one of the
  unpadded block.

`to_blocks` / `from_blocks` move between the variable's shape and the batched
block layout `[num_blocks, rows, cols]` that the optimizer works on (batched
matmuls and decompositions instead of a Python loop over blocks).

A `BlockGroup` goes one step further: the blocks of several variables that
share a block shape are stacked along the block axis, so that one batched op
serves all of them (on CPU a small model's step costs per op, not per flop).
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from matta_rec.optimizers.matrix_functions import stacked_matmul

__all__ = ["BlockGroup", "BlockPlan", "make_plan", "matrix_view_shape"]


def matrix_view_shape(shape):
    """The 2-D view of `shape` (a tuple of ints), or None for vectors/scalars."""
    dims = [int(d) for d in shape if int(d) != 1]
    if len(dims) < 2:
        return None
    if len(dims) == 2:
        return tuple(dims)
    best = None
    for k in range(1, len(dims)):
        m, n = math.prod(dims[:k]), math.prod(dims[k:])
        if best is None or max(m, n) < max(best):
            best = (m, n)
    return best


def _chunks(d, block_size):
    k = -(-d // block_size)
    size = -(-d // k)
    return k, size


@dataclasses.dataclass(frozen=True)
class BlockPlan:
    """Static layout of one variable for Shampoo (see the module docstring).

    Attributes:
        shape: the variable's shape.
        matrix_shape: `(m, n)` of the matrix view, or None (diagonal path).
        precondition: `(left, right)`: whether rows / columns get a factor.
        num_chunks: `(rows, cols)` number of chunks along each side.
        chunk: `(rows, cols)` length of one chunk (padded block shape).
    """

    shape: tuple
    matrix_shape: tuple | None
    precondition: tuple = (False, False)
    num_chunks: tuple = (1, 1)
    chunk: tuple = (0, 0)

    @property
    def diagonal(self):
        """True when the variable has no Kronecker factor at all."""
        return self.matrix_shape is None or not any(self.precondition)

    @property
    def num_blocks(self):
        return self.num_chunks[0] * self.num_chunks[1]

    @property
    def padded_shape(self):
        return (self.num_chunks[0] * self.chunk[0], self.num_chunks[1] * self.chunk[1])

    @property
    def num_preconditioned_sides(self):
        return int(self.precondition[0]) + int(self.precondition[1])

    def block_bounds(self):
        """`[((r0, r1), (c0, c1)), ...]` of the real (unpadded) blocks in the
        matrix view, in the order of the block layout's first axis."""
        m, n = self.matrix_shape
        out = []
        for i in range(self.num_chunks[0]):
            for j in range(self.num_chunks[1]):
                r0, c0 = i * self.chunk[0], j * self.chunk[1]
                out.append(((r0, min(r0 + self.chunk[0], m)), (c0, min(c0 + self.chunk[1], n))))
        return out

    def to_blocks(self, x):
        """Variable-shaped tensor -> `[num_blocks, chunk_rows, chunk_cols]`."""
        m, n = self.matrix_shape
        pm, pn = self.padded_shape
        if self.num_blocks == 1 and (pm, pn) == (m, n):
            return tf.reshape(x, (1, m, n))
        x = tf.reshape(x, (m, n))
        if (pm, pn) != (m, n):
            x = tf.pad(x, [[0, pm - m], [0, pn - n]])
        (kr, kc), (cr, cc) = self.num_chunks, self.chunk
        if kr == 1 and kc == 1:
            return x[None]
        if kc == 1:
            return tf.reshape(x, (kr, cr, cc))
        x = tf.reshape(x, (kr, cr, kc, cc))
        x = tf.transpose(x, (0, 2, 1, 3))
        return tf.reshape(x, (kr * kc, cr, cc))

    def from_blocks(self, b):
        """Inverse of `to_blocks` (drops the padding)."""
        m, n = self.matrix_shape
        (kr, kc), (cr, cc) = self.num_chunks, self.chunk
        pm, pn = self.padded_shape
        if kr == 1 and kc == 1:
            if (pm, pn) == (m, n):
                return tf.reshape(b, self.shape)
            x = b[0]
        elif kc == 1:
            x = tf.reshape(b, (pm, pn))
        else:
            x = tf.reshape(b, (kr, kc, cr, cc))
            x = tf.transpose(x, (0, 2, 1, 3))
            x = tf.reshape(x, (pm, pn))
        if (pm, pn) != (m, n):
            x = x[:m, :n]
        return tf.reshape(x, self.shape)


class BlockGroup:
    """Variables whose blocks have the same shape, stacked along the block axis.

    The members' block layouts (`BlockPlan.to_blocks`) are concatenated in
    member order into one `[num_blocks, rows, cols]` stack, on which one op
    serves every block. A group of a single block (a lone matrix, the common
    case) is laid out as the `[rows, cols]` matrix itself: no concat, split or
    leading axis, and its matmuls are 2-D.

    Optimizer state kept per member as `[num_blocks_k, d, d]` goes in with
    `stack` and comes back with `unstack`.

    Args:
        plans: the members' `BlockPlan`s; all preconditioned, with one `chunk`.
    """

    def __init__(self, plans):
        plans = tuple(plans)
        if not plans:
            raise ValueError("A BlockGroup needs at least one BlockPlan.")
        if any(p.diagonal for p in plans):
            raise ValueError("A BlockGroup holds preconditioned variables only (a plan is diagonal).")
        if len({p.chunk for p in plans}) != 1:
            raise ValueError(f"The plans of a BlockGroup must share one block shape. Received: {[p.chunk for p in plans]}")
        self.plans = plans
        self.sizes = [p.num_blocks for p in plans]
        self.num_blocks = sum(self.sizes)
        self.single = self.num_blocks == 1
        self._segment_ids = None
        if len(plans) > 1 and self.num_blocks > len(plans):
            self._segment_ids = [k for k, n in enumerate(self.sizes) for _ in range(n)]

    def to_blocks(self, tensors):
        """Variable-shaped tensors (one per member) -> the group's layout."""
        if self.single:
            (plan,), (x,) = self.plans, tensors
            return x if tuple(x.shape) == plan.matrix_shape else tf.reshape(x, plan.matrix_shape)
        return self.stack(plan.to_blocks(x) for plan, x in zip(self.plans, tensors))

    def from_blocks(self, blocks):
        """Inverse of `to_blocks`: the list of variable-shaped tensors."""
        if self.single:
            plan = self.plans[0]
            return [blocks if tuple(blocks.shape) == plan.shape else tf.reshape(blocks, plan.shape)]
        return [plan.from_blocks(b) for plan, b in zip(self.plans, self.unstack(blocks))]

    def stack(self, per_member, broadcast=False):
        """Per-member `[num_blocks_k, r, c]` tensors -> the group's layout.

        With `broadcast=True` a single block keeps its `[1, r, c]` shape (for
        elementwise ops against the layout, which broadcast; saves a reshape).
        """
        per_member = list(per_member)
        if self.single:
            (x,) = per_member
            return x if broadcast else tf.reshape(x, x.shape[1:])
        return per_member[0] if len(per_member) == 1 else tf.concat(per_member, axis=0)

    def unstack(self, stacked):
        """Inverse of `stack`: per-member `[num_blocks_k, r, c]` tensors."""
        if self.single:
            return [stacked if stacked.shape.rank == 3 else tf.reshape(stacked, [1] + stacked.shape.as_list())]
        return [stacked] if len(self.plans) == 1 else tf.split(stacked, self.sizes, axis=0)

    def matmul(self, a, b, transpose_a=False, transpose_b=False):
        """`tf.matmul` of two layouts, block by block (2-D products)."""
        if self.single:
            return tf.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
        return stacked_matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)

    def block_sums(self, x):
        """Sum over each block of a layout: a scalar, or `[num_blocks]`."""
        return tf.reduce_sum(x) if self.single else tf.reduce_sum(x, axis=[-2, -1])

    def block_norms(self, x):
        """Frobenius norm of each block of a layout: a scalar, or `[num_blocks, 1, 1]`."""
        return tf.norm(x) if self.single else tf.norm(x, axis=[-2, -1], keepdims=True)

    def all_per_member(self, flags):
        """`(per_block, per_member)` of block flags (`block_sums`'s shape): a
        block's entry is True when the flags of all blocks of its member are;
        `per_member` is that value once per member (a scalar or a vector)."""
        if self.single or len(self.plans) == self.num_blocks:
            return flags, flags
        if self._segment_ids is None:  # one member of several blocks
            every = tf.reduce_all(flags)
            return every, every
        per_member = (
            tf.math.unsorted_segment_min(tf.cast(flags, tf.int32), self._segment_ids, len(self.plans)) > 0
        )
        return tf.gather(per_member, self._segment_ids), per_member


def make_plan(
    shape,
    block_size,
    max_preconditioner_dim,
    large_dim_policy="diagonal",
    first_dim_is_large=False,
):
    """Computes the `BlockPlan` of a variable of the given shape.

    Args:
        shape: the variable's shape (tuple of ints).
        block_size: largest side of a block.
        max_preconditioner_dim: sides longer than this get no factor.
        large_dim_policy: `"diagonal"` or `"one_sided"` (see module doc).
        first_dim_is_large: treat the first dimension as longer than
            `max_preconditioner_dim` (embedding tables: sparse row updates).
    """
    shape = tuple(int(d) for d in shape)
    view = matrix_view_shape(shape)
    if view is None:
        return BlockPlan(shape=shape, matrix_shape=None)
    m, n = view
    left = m <= max_preconditioner_dim and not first_dim_is_large
    right = n <= max_preconditioner_dim
    if not (left and right) and large_dim_policy == "diagonal":
        left = right = False
    if not (left or right):
        return BlockPlan(shape=shape, matrix_shape=view)
    kr, cr = _chunks(m, block_size) if left else (1, m)
    kc, cc = _chunks(n, block_size) if right else (1, n)
    return BlockPlan(
        shape=shape,
        matrix_shape=view,
        precondition=(left, right),
        num_chunks=(kr, kc),
        chunk=(cr, cc),
    )
