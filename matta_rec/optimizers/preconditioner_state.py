"""`PreconditionerState`: a read-only snapshot of Shampoo's state for one variable.

`Shampoo.preconditioner_state(variable)` returns one. It copies the
optimizer's state to NumPy at the time of the call, so it is safe to keep,
compare and plot (`matta_rec.optimizers.heatmaps`) while training goes on.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from matta_rec.optimizers.partition import BlockPlan

__all__ = ["PreconditionerState", "STATE_KINDS"]

#: `"kronecker"`: at least one side has a Kronecker factor; `"diagonal"`:
#: the variable takes the grafted diagonal step only.
STATE_KINDS = ("kronecker", "diagonal")


@dataclasses.dataclass(frozen=True)
class PreconditionerState:
    """What Shampoo keeps for one variable, as NumPy copies.

    Attributes:
        path: the variable's path (`variable.path`).
        kind: `"kronecker"` or `"diagonal"` (rank <= 1, a side too long with
            `large_dim_policy="diagonal"`, an embedding table, a
            `diagonal_variables` match).
        plan: the `partition.BlockPlan`: matrix view, preconditioned sides and
            blocks (`plan.block_bounds()` gives each block's rows / columns).
        root_exponent: `p` of the roots `L^(-1/p)`, `R^(-1/p)`; None for a
            diagonal variable.
        statistics_left: `[num_blocks, rows, rows]` float32, the row-side
            statistics `sum/EMA of G G^T` of each block, or None (no factor
            on that side).
        statistics_right: `[num_blocks, cols, cols]`, `sum/EMA of G^T G`, or
            None.
        root_left: the inverse roots the update uses on the row side (the
            identity before the first root), same shape, or None.
        root_right: the same on the column side, or None.
        momentum: the momentum accumulator (the variable's shape), or None
            with `beta_1=0`.
        graft_accumulator: the grafted optimizer's second-moment accumulator
            (the variable's shape), or None (`grafting` `"sgd"` or None).

    The optimizer-wide counters `root_failures` and `skipped_updates` are in
    `Shampoo.diagnostics()`: failures are not counted per variable.
    """

    path: str
    kind: str
    plan: BlockPlan
    root_exponent: float | None = None
    statistics_left: np.ndarray | None = None
    statistics_right: np.ndarray | None = None
    root_left: np.ndarray | None = None
    root_right: np.ndarray | None = None
    momentum: np.ndarray | None = None
    graft_accumulator: np.ndarray | None = None

    @property
    def shape(self):
        """The variable's shape."""
        return self.plan.shape

    @property
    def num_blocks(self):
        """Number of blocks (0 for a diagonal variable)."""
        return 0 if self.kind == "diagonal" else self.plan.num_blocks

    @property
    def block_shape(self):
        """`(rows, cols)` of one (padded) block, or None for a diagonal variable."""
        return None if self.kind == "diagonal" else tuple(self.plan.chunk)

    @property
    def preconditioned_sides(self):
        """`(left, right)`: whether the rows / columns have a Kronecker factor."""
        return (self.statistics_left is not None, self.statistics_right is not None)
