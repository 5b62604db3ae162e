"""Preconditioner heatmaps: a Shampoo factor as a matrix, dumped or plotted.

The paper's Figure 4 shows the Shampoo preconditioner of a nested layer, where
the Student and TA blocks stand out. `plot_preconditioner` draws the same
picture for any variable a built `Shampoo` optimizer preconditions:

```python
from matta_rec.optimizers.heatmaps import dump_preconditioner, plot_preconditioner
dump_preconditioner(optimizer, "dense_1/kernel", "kernel_preconditioner.npz")
plot_preconditioner(optimizer, "dense_1/kernel", "kernel_preconditioner.png",
                    side="right", boundaries=[student_width])
```

A factor of a blocked side is assembled block-diagonally over the chunks of
that side (cross-chunk entries are not modelled by blocked Shampoo and are
left at 0), summed over the blocks of the other side for the statistics and
averaged for the roots. Use a `block_size` at least as large as the layer to
see its whole factor. Everything here reads the optimizer through its public
`Shampoo.preconditioner_state(variable)`.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "preconditioner_arrays",
    "assemble_factor",
    "correlation",
    "dump_preconditioner",
    "plot_preconditioner",
]

KINDS = ("statistics", "root")
SIDES = ("left", "right")


def preconditioner_arrays(optimizer, variable):
    """Raw state of one variable as a dict of arrays (what `dump_preconditioner` writes).

    Args:
        optimizer: a built `Shampoo`.
        variable: the variable, its path or a unique suffix of its path.

    Returns:
        `{"shape"}` for a diagonal variable; otherwise also `matrix_shape`,
        `num_chunks`, `chunk` and `stats_left` / `stats_right` / `root_left`
        / `root_right` (`[num_blocks, chunk, chunk]`, sides without a factor
        left out).
    """
    state = optimizer.preconditioner_state(variable)
    plan = state.plan
    out = {"shape": np.array(plan.shape, np.int64)}
    if state.kind == "diagonal":
        return out
    out.update(
        matrix_shape=np.array(plan.matrix_shape, np.int64),
        num_chunks=np.array(plan.num_chunks, np.int64),
        chunk=np.array(plan.chunk, np.int64),
    )
    for name, array in (
        ("stats_left", state.statistics_left),
        ("stats_right", state.statistics_right),
        ("root_left", state.root_left),
        ("root_right", state.root_right),
    ):
        if array is not None:
            out[name] = array
    return out


def assemble_factor(optimizer, variable, side="right", kind="statistics"):
    """One side's factor as a `[d, d]` float64 array (see the module docstring).

    Args:
        optimizer: a built `Shampoo`.
        variable: the variable, its path or a unique suffix of its path.
        side: `"left"` (rows of the matrix view) or `"right"` (columns; the
            output units of a Dense kernel).
        kind: `"statistics"` (`sum/EMA of G G^T`) or `"root"` (the inverse
            root the update uses).
    """
    if side not in SIDES:
        raise ValueError(f"`side` must be one of {SIDES}. Received: side={side!r}")
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind!r}")
    arrays = preconditioner_arrays(optimizer, variable)
    key = f"{'stats' if kind == 'statistics' else 'root'}_{side}"
    if key not in arrays:
        raise ValueError(
            f"The {side} side of variable {variable!r} (shape {tuple(arrays['shape'])}) has no Kronecker "
            "factor (rank <= 1, too long a side, or an embedding table)."
        )
    blocks = arrays[key].astype(np.float64)
    (kr, kc), (cr, cc) = arrays["num_chunks"], arrays["chunk"]
    m, n = arrays["matrix_shape"]
    blocks = blocks.reshape(kr, kc, *blocks.shape[1:])
    if side == "left":
        per_chunk = blocks.sum(axis=1) if kind == "statistics" else blocks.mean(axis=1)
        k, c, d = kr, cr, m
    else:
        per_chunk = blocks.sum(axis=0) if kind == "statistics" else blocks.mean(axis=0)
        k, c, d = kc, cc, n
    full = np.zeros((k * c, k * c))
    for j in range(k):
        full[j * c : (j + 1) * c, j * c : (j + 1) * c] = per_chunk[j]
    return full[:d, :d]


def correlation(matrix):
    """`|S_ij| / sqrt(S_ii S_jj)`: the factor as correlations in [0, 1]."""
    matrix = np.asarray(matrix, np.float64)
    diag = np.sqrt(np.clip(np.diag(matrix), 0, None))
    denom = np.outer(diag, diag)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(denom > 0, np.abs(matrix) / denom, 0.0)
    return np.clip(out, 0.0, 1.0)


def dump_preconditioner(optimizer, variable, path):
    """Writes the variable's raw state and assembled factors to `path` (.npz or .npy).

    `.npz`: the arrays of `preconditioner_arrays` plus `full_<kind>_<side>`
    (`assemble_factor`) for every side present. `.npy`: the assembled
    statistics of the right side if it has one, else of the left side.

    Returns:
        the path written.
    """
    path = str(path)
    arrays = preconditioner_arrays(optimizer, variable)
    full = {}
    for side in SIDES:
        if f"stats_{side}" in arrays:
            for kind in KINDS:
                full[f"full_{kind}_{side}"] = assemble_factor(optimizer, variable, side, kind)
    if path.endswith(".npy"):
        if not full:
            name = optimizer.preconditioner_state(variable).path
            raise ValueError(f"Variable {name!r} has no Kronecker factor to dump.")
        key = "full_statistics_right" if "full_statistics_right" in full else "full_statistics_left"
        np.save(path, full[key])
        return path
    if not path.endswith(".npz"):
        path += ".npz"
    np.savez(path, **arrays, **full)
    return path


def plot_preconditioner(
    optimizer,
    variable,
    path,
    side=None,
    kind="statistics",
    normalize="correlation",
    boundaries=None,
    title=None,
):
    """Draws one side's factor as a heatmap PNG (the paper's Figure 4).

    Args:
        optimizer: a built `Shampoo`.
        variable: the variable, its path or a unique suffix of its path.
        path: the PNG to write.
        side: `"left"` or `"right"`; `None` picks the right side when it has
            a factor (a Dense kernel's output units), else the left.
        kind: `"statistics"` or `"root"`.
        normalize: `"correlation"` (`|S_ij| / sqrt(S_ii S_jj)`, lighter is
            more correlated), `"abs"` (`|S_ij|`) or `None` (signed values).
        boundaries: indices where to draw lines, e.g. `[student_width]` to
            show the Student block of a nested layer.
        title: figure title; defaults to the variable path and side.

    Returns:
        `(path, matrix)`: the PNG path and the plotted array.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    state = optimizer.preconditioner_state(variable)
    if side is None:
        side = "right" if state.statistics_right is not None else "left"
    matrix = assemble_factor(optimizer, variable, side, kind)
    if normalize == "correlation":
        shown, cmap, vmin, vmax = correlation(matrix), "magma", 0.0, 1.0
    elif normalize == "abs":
        shown, cmap, vmin, vmax = np.abs(matrix), "magma", None, None
    elif normalize is None:
        lim = float(np.abs(matrix).max()) or 1.0
        shown, cmap, vmin, vmax = matrix, "RdBu_r", -lim, lim
    else:
        raise ValueError(f"`normalize` must be 'correlation', 'abs' or None. Received: normalize={normalize!r}")
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    for b in boundaries or ():
        ax.axhline(b - 0.5, color="cyan", linewidth=0.8)
        ax.axvline(b - 0.5, color="cyan", linewidth=0.8)
    fig.colorbar(im, ax=ax, label=normalize or kind)
    ax.set_title(title or f"Shampoo {kind} ({side}) of {state.path}")
    ax.set_xlabel("unit")
    ax.set_ylabel("unit")
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
    return str(path), shown
