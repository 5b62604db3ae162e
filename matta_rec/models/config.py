"""Architecture config of the nested relevance model.

A :class:`ModelConfig` gives the Student's sizes and, per nesting level, how
much larger that level is.  :meth:`ModelConfig.architecture` resolves it into
concrete per-level sizes of every block (a plain, JSON-safe dict that the
model and Mix'n'Match extraction share).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from matta_rec.errors import ConfigError

ACTIVATIONS = ("relu", "swish", "silu", "gelu", "tanh", "sigmoid", "linear", "elu", "selu")
MLP_NORMS = (None, "batch", "layer")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of the nested relevance model: Student sizes plus expansion factors.

    Blocks, in order: ``gau_blocks`` GAU blocks over the feature tokens, then
    ``cross_layers`` DCN-v2 cross layers over the flattened tokens, then one
    MLP layer per entry of ``mlp_units``, then a one-unit logit head.  Level
    ``i`` (``levels[i]``) has ``d_model = round(d_model * d_model_factors[i])``
    and every hidden width (GAU expanded width and shared dim, cross
    projection dim, MLP units) multiplied by ``width_factors[i]``.  Depth
    nesting: ``extra_gau_blocks[i]`` / ``extra_cross_layers[i]`` blocks are
    added (after the Student's blocks of the same kind) that only levels
    ``>= i`` run.

    Args:
        levels: level names, smallest first.  With more than one level the
            first is ``"student"`` and the last ``"ta"``.
        d_model: the Student's token width.
        gau_blocks: number of GAU blocks the Student runs (0 for none).
        gau_expansion: GAU expanded width = ``round(gau_expansion * d_model)``.
        gau_shared_dim: the Student's GAU query/key width.
        gau_activation: activation of the GAU projections.
        gau_norm: RMS-normalise tokens at the start of each GAU block.
        cross_layers: number of DCN-v2 cross layers the Student runs.
        cross_projection_dim: low-rank width of the Student's cross layers
            (``None``: full rank).
        cross_diag_scale: non-negative value added to the cross kernels' diagonal.
        mlp_units: the Student's MLP hidden widths.
        mlp_activation: activation of the MLP hidden layers.
        width_factors: per level, multiplier of every hidden width.
        d_model_factors: per level, multiplier of ``d_model``.
        extra_gau_blocks: per level, GAU blocks first run at that level.
        extra_cross_layers: per level, cross layers first run at that level.
        group_embeddings: add a learnt user / context / item vector to tokens.
        share_weights: ``True`` nests every level in the TA's variables
            (MatTA); ``False`` gives each level independent variables of the
            same shapes (paper Table 4 ablation; no Mix'n'Match).
        share_embeddings: with ``share_weights: false``, keep the embedding
            layer (categorical tables, numeric / dense projections, group
            vectors) shared and nested, as the paper's Table 4 "without
            parameter sharing" row does (its embedding table is shared
            between Student and TA); ``false`` unshares it too.  Must be
            ``true`` with ``share_weights: true``.  Default ``true``.
        mlp_dropout: dropout rate after each MLP hidden layer's activation
            (training only), in ``[0, 1)``.  Default 0.
        gau_dropout: dropout rate on each GAU block's residual branch.
            Default 0.
        cross_dropout: dropout rate on each cross layer's cross term.
            Default 0.
        mlp_norm: ``null`` (default), ``batch`` or ``layer``: normalise each
            MLP hidden layer's pre-activation.  Batch norm: each level's
            statistics come from its own activations, every level keeps its
            own moving mean / variance, scale / offset are nested; the
            batch statistics are all-reduced across replicas under
            ``tf.distribute``.  Layer norm has no statistics to keep and
            suits Mix'n'Match paths that mix levels (a wide-narrow-wide path
            reuses a level's moving statistics on inputs of another width).
        embedding_l2: L2 penalty on the embedding rows a batch looks up
            (``embedding_l2 * sum(row ** 2) / batch size``, categorical
            features; a row shared by the levels counts once), added to the
            training loss.  Default 0.
        source: bring your own model instead of the built-in one: a
            ``.keras`` file (loaded with its weights: a warm start) or a
            ``package.module:function`` factory, M-nested into a TA by
            :func:`matta_rec.nestify` with ``width_factors`` /
            ``d_model_factors`` / ``levels`` / ``share_weights``.
            ``null`` (default): the built-in model.
        source_preprocessing: put the schema's preprocessing in front of a
            ``source`` model (it then takes ids and normalised floats);
            ``false`` when it takes the raw features itself.
        extra_layers: TA-only residual blocks added to a ``source`` model
            (after its last hidden Dense).

    Example:

    >>> cfg = ModelConfig()                       # Student d 8, TA d 16, +1 GAU block
    >>> cfg.with_levels(("student",)).levels      # a plain Student-sized model
    ('student',)
    >>> ModelConfig(levels=("student", "medium", "ta"), width_factors=(1, 1.5, 2),
    ...             d_model_factors=(1, 1.5, 2), extra_gau_blocks=(0, 0, 1),
    ...             extra_cross_layers=(0, 0, 0))
    """

    levels: tuple[str, ...] = ("student", "ta")
    d_model: int = 8
    gau_blocks: int = 1
    gau_expansion: float = 2.0
    gau_shared_dim: int = 8
    gau_activation: str = "swish"
    gau_norm: bool = True
    cross_layers: int = 1
    cross_projection_dim: int | None = None
    cross_diag_scale: float = 0.0
    mlp_units: tuple[int, ...] = (64, 32)
    mlp_activation: str = "relu"
    width_factors: tuple[float, ...] = (1.0, 2.0)
    d_model_factors: tuple[float, ...] = (1.0, 2.0)
    extra_gau_blocks: tuple[int, ...] = (0, 1)
    extra_cross_layers: tuple[int, ...] = (0, 0)
    group_embeddings: bool = True
    share_weights: bool = True
    share_embeddings: bool = True
    mlp_dropout: float = 0.0
    gau_dropout: float = 0.0
    cross_dropout: float = 0.0
    mlp_norm: str | None = None
    embedding_l2: float = 0.0
    source: str | None = None
    source_preprocessing: bool = True
    extra_layers: int = 0

    def __post_init__(self) -> None:
        for name in ("levels", "mlp_units", "width_factors", "d_model_factors",
                     "extra_gau_blocks", "extra_cross_layers"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self._validate()

    # ----------------------------------------------------------- validation
    def _validate(self) -> None:
        def fail(message: str, key: str) -> None:
            raise ConfigError(message, key=key)

        levels = self.levels
        if not isinstance(levels, tuple) or not levels or not all(
            isinstance(n, str) and n for n in levels
        ):
            fail("levels must be a non-empty list of names, e.g. [student, ta]", "levels")
        if len(set(levels)) != len(levels):
            fail(f"level names must be unique, got {list(levels)}", "levels")
        if len(levels) > 1 and (levels[0] != "student" or levels[-1] != "ta"):
            fail(
                f"with several levels the first must be 'student' and the last 'ta', "
                f"got {list(levels)}",
                "levels",
            )
        for name in ("d_model", "gau_shared_dim"):
            if not _pos_int(getattr(self, name)):
                fail(f"{name} must be a positive integer, got {getattr(self, name)!r}", name)
        for name in ("gau_blocks", "cross_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                fail(f"{name} must be an integer >= 0, got {value!r}", name)
        if not _number(self.gau_expansion) or self.gau_expansion <= 0:
            fail(f"gau_expansion must be > 0, got {self.gau_expansion!r}", "gau_expansion")
        if self.cross_projection_dim is not None and not _pos_int(self.cross_projection_dim):
            fail("cross_projection_dim must be a positive integer or null", "cross_projection_dim")
        if not _number(self.cross_diag_scale) or self.cross_diag_scale < 0:
            fail("cross_diag_scale must be a number >= 0", "cross_diag_scale")
        if not isinstance(self.mlp_units, tuple) or not all(_pos_int(u) for u in self.mlp_units):
            fail(f"mlp_units must be a list of positive integers, got {self.mlp_units!r}",
                 "mlp_units")
        for name in ("gau_activation", "mlp_activation"):
            if getattr(self, name) not in ACTIVATIONS:
                fail(f"{name} must be one of {list(ACTIVATIONS)}, got {getattr(self, name)!r}",
                     name)
        for name in ("gau_norm", "group_embeddings", "share_weights", "share_embeddings"):
            if not isinstance(getattr(self, name), bool):
                fail(f"{name} must be true or false", name)
        if self.share_weights and not self.share_embeddings:
            fail("share_embeddings: false needs share_weights: false (with shared weights "
                 "the embeddings are shared too); set --set model.share_weights=false",
                 "share_embeddings")
        for name in ("mlp_dropout", "gau_dropout", "cross_dropout"):
            value = getattr(self, name)
            if not _number(value) or not 0 <= value < 1:
                fail(f"{name} must be a number in [0, 1), got {value!r}", name)
        if self.mlp_norm not in MLP_NORMS:
            fail(f"mlp_norm must be one of {list(MLP_NORMS)}, got {self.mlp_norm!r}", "mlp_norm")
        if self.source is not None and (not isinstance(self.source, str) or not self.source):
            fail(f"source must be a .keras path or package.module:function, got {self.source!r}",
                 "source")
        if isinstance(self.extra_layers, bool) or not isinstance(self.extra_layers, int) \
                or self.extra_layers < 0:
            fail(f"extra_layers must be an integer >= 0, got {self.extra_layers!r}",
                 "extra_layers")
        if not _number(self.embedding_l2) or not self.embedding_l2 >= 0:
            fail(f"embedding_l2 must be a number >= 0, got {self.embedding_l2!r}",
                 "embedding_l2")
        n = len(levels)
        for name in ("width_factors", "d_model_factors"):
            values = getattr(self, name)
            if not isinstance(values, tuple) or len(values) != n:
                fail(f"{name} needs one value per level ({n}: {list(levels)}), got {values!r}",
                     name)
            if not all(_number(v) and v > 0 for v in values):
                fail(f"{name} must be positive numbers, got {list(values)}", name)
            if any(a > b for a, b in zip(values, values[1:])):
                fail(f"{name} must be non-decreasing from Student to TA, got {list(values)}",
                     name)
        for name in ("extra_gau_blocks", "extra_cross_layers"):
            values = getattr(self, name)
            if not isinstance(values, tuple) or len(values) != n:
                fail(f"{name} needs one value per level ({n}: {list(levels)}), got {values!r}",
                     name)
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
                fail(f"{name} must be integers >= 0, got {list(values)}", name)

    # -------------------------------------------------------------- helpers
    def with_levels(self, names: Sequence[str]) -> "ModelConfig":
        """The config restricted to ``names`` (a sub-sequence of ``levels``).

        ``with_levels(("student",))`` is a plain Student-sized model and
        ``with_levels(("ta",))`` a plain TA-sized one (including its extra
        blocks): the shapes of that level of this config.
        """
        names = tuple(names)
        unknown = [n for n in names if n not in self.levels]
        if unknown or not names:
            raise ConfigError(
                f"with_levels: {list(names)} must be a non-empty subset of {list(self.levels)}",
                key="levels",
            )
        index = [self.levels.index(n) for n in names]
        if index != sorted(index):
            raise ConfigError(
                f"with_levels: keep the order of {list(self.levels)}, got {list(names)}",
                key="levels",
            )

        def pick(values):
            return tuple(values[i] for i in index)

        def extras(values):
            # Blocks first run by a dropped level are run by the next kept one.
            out = []
            start = 0
            for i in index:
                out.append(sum(values[start : i + 1]))
                start = i + 1
            return tuple(out)

        return dataclasses.replace(
            self,
            levels=names,
            width_factors=pick(self.width_factors),
            d_model_factors=pick(self.d_model_factors),
            extra_gau_blocks=extras(self.extra_gau_blocks),
            extra_cross_layers=extras(self.extra_cross_layers),
        )

    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "ModelConfig":
        from matta_rec.utils.config import from_dict

        if isinstance(data, ModelConfig):
            return data
        return from_dict(cls, data, source=source)

    def architecture(self) -> dict:
        """Concrete per-level sizes of every block (see :func:`architecture_levels`)."""
        n = len(self.levels)

        def scaled(base: int, factors) -> list:
            return [max(1, int(round(base * f))) for f in factors]

        d_model = scaled(self.d_model, self.d_model_factors)
        hidden = max(1, int(round(self.gau_expansion * self.d_model)))
        blocks: list[dict] = []

        def gau_block(min_level: int) -> dict:
            return {
                "kind": "gau",
                "min_level": min_level,
                "units": scaled(hidden, self.width_factors),
                "shared_dims": scaled(self.gau_shared_dim, self.width_factors),
            }

        def cross_block(min_level: int) -> dict:
            dims = (
                [None] * n
                if self.cross_projection_dim is None
                else scaled(self.cross_projection_dim, self.width_factors)
            )
            return {"kind": "cross", "min_level": min_level, "projection_dims": dims}

        for count, extra, make in (
            (self.gau_blocks, self.extra_gau_blocks, gau_block),
            (self.cross_layers, self.extra_cross_layers, cross_block),
        ):
            blocks += [make(0) for _ in range(count)]
            for level, k in enumerate(extra):
                blocks += [make(level) for _ in range(k)]
        for units in self.mlp_units:
            blocks.append(
                {"kind": "mlp", "min_level": 0, "units": scaled(units, self.width_factors)}
            )
        for i, block in enumerate(blocks):
            block["source"] = i
        return {
            "levels": list(self.levels),
            "d_model": d_model,
            "blocks": blocks,
            "share_weights": self.share_weights,
            "share_embeddings": self.share_weights or self.share_embeddings,
            "options": {
                "gau_activation": self.gau_activation,
                "gau_norm": self.gau_norm,
                "cross_diag_scale": float(self.cross_diag_scale),
                "mlp_activation": self.mlp_activation,
                "group_embeddings": self.group_embeddings,
                "mlp_dropout": float(self.mlp_dropout),
                "gau_dropout": float(self.gau_dropout),
                "cross_dropout": float(self.cross_dropout),
                "mlp_norm": self.mlp_norm,
                "embedding_l2": float(self.embedding_l2),
            },
        }


def _pos_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
