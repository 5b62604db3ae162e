"""Mix'n'Match: which sub-models a nested model holds, and their sizes.

With shared weights every combination of prefix widths is a valid network:
a layer can read the first ``n`` inputs of its kernel whatever width the
previous layer chose.  A :class:`SubmodelSpec` picks, per block of the nested
model, which level's width to use (or to drop the block), plus the
``d_model`` level; :func:`submodel_architecture` resolves it into the
one-level architecture of that sub-model and :func:`submodel_family` lists
the family with parameter counts and FLOPs.

This module only describes sub-models (plain dicts and dataclasses, no
Keras).  Cutting one out of a model, weights and all, is
:meth:`NestedRelevanceModel.extract
<matta_rec.models.relevance.NestedRelevanceModel.extract>`, which reads
these descriptions: the import goes one way, relevance -> mixnmatch.

Spec strings (:meth:`SubmodelSpec.parse`, :attr:`SubmodelSpec.name`):

* ``"student"``, ``"ta"``, ``"medium"``...: the path of that level (its
  widths, its ``d_model``, the blocks it runs).
* ``"wnw:K"``: wide-narrow-wide (paper Section 4.2.3): every block is kept
  (TA-only ones too); the ``K`` outermost blocks, ``ceil(K/2)`` at the
  bottom and ``floor(K/2)`` at the top, use the TA's widths, the others the
  Student's; ``d_model`` is the Student's.  ``"wnw:K@LEVEL"`` uses the
  ``d_model`` of ``LEVEL``.
* ``"mix@LEVEL:B1,B2,..."``: explicit: ``d_model`` of ``LEVEL`` and one
  entry per block, a level name or ``-`` to drop the block (GAU and cross
  blocks only: they keep their input's width).

Blocks are numbered in the nested model's order: GAU blocks, cross layers,
MLP layers (see :meth:`ModelConfig.architecture`); the logit head always
follows.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping, Sequence

from matta_rec.errors import ConfigError

@dataclasses.dataclass(frozen=True)
class SubmodelSpec:
    """Which sub-network of a nested model to use.

    Build one with :meth:`parse`, :meth:`for_level`,
    :meth:`wide_narrow_wide` or :meth:`mix`.

    Args:
        kind: ``"level"``, ``"wnw"`` or ``"mix"``.
        level: the level name (kind ``"level"``).
        k: number of wide outer blocks (kind ``"wnw"``).
        d_model: level whose ``d_model`` is used (``"wnw"``, ``"mix"``;
            ``None`` for ``"wnw"`` means the Student's).
        blocks: per block, a level name or ``None`` to drop it (``"mix"``).

    Example:

    >>> SubmodelSpec.parse("wnw:2").name
    'wnw:2'
    >>> SubmodelSpec.mix("student", ["ta", "student", None, "ta"]).name
    'mix@student:ta,student,-,ta'
    """

    kind: str
    level: str | None = None
    k: int | None = None
    d_model: str | None = None
    blocks: tuple | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("level", "wnw", "mix"):
            raise ConfigError(f"SubmodelSpec kind must be level, wnw or mix, got {self.kind!r}")
        if self.kind == "level" and not (isinstance(self.level, str) and self.level):
            raise ConfigError("a level SubmodelSpec needs a level name")
        if self.kind == "wnw" and (
            isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0
        ):
            raise ConfigError(f"wnw:K needs an integer K >= 0, got {self.k!r}")
        if self.kind == "mix":
            if not isinstance(self.d_model, str) or not self.blocks:
                raise ConfigError("a mix SubmodelSpec needs d_model and one entry per block")
            object.__setattr__(self, "blocks", tuple(self.blocks))

    # --------------------------------------------------------- constructors
    @classmethod
    def for_level(cls, level: str) -> "SubmodelSpec":
        return cls(kind="level", level=level)

    @classmethod
    def wide_narrow_wide(cls, k: int, d_model: str | None = None) -> "SubmodelSpec":
        return cls(kind="wnw", k=k, d_model=d_model)

    @classmethod
    def mix(cls, d_model: str, blocks: Sequence[str | None]) -> "SubmodelSpec":
        return cls(kind="mix", d_model=d_model, blocks=tuple(blocks))

    @classmethod
    def parse(cls, text: "str | SubmodelSpec") -> "SubmodelSpec":
        """Parse ``"LEVEL"``, ``"wnw:K[@LEVEL]"`` or ``"mix@LEVEL:B1,B2,..."``."""
        if isinstance(text, SubmodelSpec):
            return text
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(
                f"sub-model spec must be a string like 'student', 'wnw:2' or "
                f"'mix@student:ta,student,-'; got {text!r}"
            )
        text = text.strip()
        match = re.fullmatch(r"wnw:(\d+)(?:@([^:@,]+))?", text)
        if match:
            return cls.wide_narrow_wide(int(match.group(1)), match.group(2))
        match = re.fullmatch(r"mix@([^:@,]+):(.+)", text)
        if match:
            blocks = [b.strip() for b in match.group(2).split(",")]
            if any(not b for b in blocks):
                raise ConfigError(f"empty block entry in sub-model spec {text!r}")
            return cls.mix(match.group(1), [None if b == "-" else b for b in blocks])
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", text) and not text.startswith(("wnw", "mix")):
            return cls.for_level(text)
        raise ConfigError(
            f"cannot parse sub-model spec {text!r}; expected a level name, "
            "'wnw:K', 'wnw:K@LEVEL' or 'mix@LEVEL:B1,B2,...' (B = level or '-')"
        )

    @property
    def name(self) -> str:
        """Canonical string; ``SubmodelSpec.parse(spec.name) == spec``."""
        if self.kind == "level":
            return self.level
        if self.kind == "wnw":
            return f"wnw:{self.k}" + (f"@{self.d_model}" if self.d_model else "")
        return f"mix@{self.d_model}:" + ",".join("-" if b is None else b for b in self.blocks)

    def __str__(self) -> str:
        return self.name

    # ------------------------------------------------------------ resolving
    def resolve(self, architecture: Mapping) -> tuple[int, tuple]:
        """``(d_model level index, per-block level index or None)`` for a nested model."""
        levels = list(architecture["levels"])
        blocks = architecture["blocks"]

        def index(name: str) -> int:
            if name not in levels:
                raise ConfigError(
                    f"sub-model spec {self.name!r}: unknown level {name!r}; the model's "
                    f"levels are {levels}"
                )
            return levels.index(name)

        if self.kind == "level":
            level = index(self.level)
            return level, tuple(level if b["min_level"] <= level else None for b in blocks)
        if self.kind == "wnw":
            n = len(blocks)
            if self.k > n:
                raise ConfigError(
                    f"sub-model spec {self.name!r}: K must be at most the number of "
                    f"blocks ({n})"
                )
            bottom, top = math.ceil(self.k / 2), self.k // 2
            wide, narrow = len(levels) - 1, 0
            choices = tuple(wide if i < bottom or i >= n - top else narrow for i in range(n))
            d = 0 if self.d_model is None else index(self.d_model)
            return d, choices
        if len(self.blocks) != len(blocks):
            raise ConfigError(
                f"sub-model spec {self.name!r} lists {len(self.blocks)} blocks; the model "
                f"has {len(blocks)}: {[b['kind'] + '_' + str(b['source']) for b in blocks]}"
            )
        for entry, block in zip(self.blocks, blocks):
            if entry is None and block["kind"] == "mlp":
                raise ConfigError(
                    f"sub-model spec {self.name!r} drops MLP block {block['source']}; only "
                    "GAU and cross blocks (whose output width equals their input) can be dropped"
                )
        return index(self.d_model), tuple(None if b is None else index(b) for b in self.blocks)


@dataclasses.dataclass(frozen=True)
class SubmodelInfo:
    """One member of a nested model's Mix'n'Match family.

    Args:
        name: the spec's canonical name.
        spec: the :class:`SubmodelSpec`.
        params: parameter count of the extracted model.
        flops: FLOPs per example of its dense / attention matmuls (two per
            multiply-add; lookups and element-wise ops are not counted).
    """

    name: str
    spec: SubmodelSpec
    params: int
    flops: int


# ---------------------------------------------------------------- sizes
def submodel_architecture(architecture: Mapping, spec: Any) -> dict:
    """The one-level architecture dict of ``spec`` cut out of ``architecture``."""
    spec = SubmodelSpec.parse(spec)
    d, choices = spec.resolve(architecture)
    blocks = []
    for block, level in zip(architecture["blocks"], choices):
        if level is None:
            continue
        out = {"kind": block["kind"], "min_level": 0, "source": block["source"]}
        for key in ("units", "shared_dims", "projection_dims"):
            if key in block:
                out[key] = [block[key][level]]
        blocks.append(out)
    return {
        "levels": [spec.name],
        "d_model": [architecture["d_model"][d]],
        "blocks": blocks,
        "share_weights": True,
        "share_embeddings": True,
        "options": dict(architecture["options"]),
    }


def count_params(architecture: Mapping, features: Sequence[Mapping], level: int = 0) -> int:
    """Parameters of level ``level`` of ``architecture`` (as if built alone).

    Counted as ``keras.Model.count_params`` does: batch norm's moving mean
    and variance (non-trainable) included.
    """
    d = architecture["d_model"][level]
    options = architecture["options"]
    total = 0
    for f in features:
        if f["kind"] in ("categorical", "multi_categorical"):
            total += f["cardinality"] * d
        elif f["kind"] == "numeric":
            total += 2 * d
        else:
            total += f["dim"] * d + d
    if options["group_embeddings"]:
        total += 3 * d
    width = d * len(features)
    # Scale and offset of an MLP norm, plus batch norm's moving mean / variance.
    norm = {None: 0, "layer": 2, "batch": 4}[options.get("mlp_norm")]
    for block in _level_blocks(architecture, level):
        if block["kind"] == "gau":
            e, s = block["units"][level], block["shared_dims"][level]
            total += 2 * (d * e + e) + (d * s + s) + (e * d + d) + 4 * s
        elif block["kind"] == "cross":
            r = block["projection_dims"][level]
            total += (width * width if r is None else 2 * width * r) + width
        else:
            u = block["units"][level]
            total += width * u + u + norm * u
            width = u
    return total + width + 1


def count_flops(architecture: Mapping, features: Sequence[Mapping], level: int = 0) -> int:
    """Matmul FLOPs per example of level ``level`` (2 per multiply-add)."""
    d = architecture["d_model"][level]
    t = len(features)
    flops = sum(2 * f["dim"] * d for f in features if f["kind"] == "dense")
    width = d * t
    for block in _level_blocks(architecture, level):
        if block["kind"] == "gau":
            e, s = block["units"][level], block["shared_dims"][level]
            flops += t * (2 * 2 * d * e + 2 * d * s + 2 * e * d) + 2 * t * t * (s + e)
        elif block["kind"] == "cross":
            r = block["projection_dims"][level]
            flops += 2 * width * width if r is None else 4 * width * r
        else:
            u = block["units"][level]
            flops += 2 * width * u
            width = u
    return flops + 2 * width


def _level_blocks(architecture: Mapping, level: int) -> list:
    return [b for b in architecture["blocks"] if b["min_level"] <= level]


def submodel_family(architecture: Mapping, features: Sequence[Mapping]) -> list[SubmodelInfo]:
    """The Mix'n'Match family of a nested architecture, with sizes and FLOPs.

    Every level's own path, then (with shared weights) the wide-narrow-wide
    family ``wnw:K`` for ``K = 0 .. number of blocks`` with the Student's
    ``d_model`` and, when it differs, with the TA's (``wnw:K@ta``).  Entries
    whose network equals an earlier one are left out.

    Args:
        architecture: the nested model's architecture dict
            (:meth:`ModelConfig.architecture`).
        features: the per-feature dicts of its embedding
            (``model.embedding.features``).

    Returns:
        A list of :class:`SubmodelInfo`, levels first.
    """
    arch = architecture
    levels = list(arch["levels"])
    specs = [SubmodelSpec.for_level(name) for name in levels]
    if arch["share_weights"] and len(levels) > 1:
        n = len(arch["blocks"])
        d_choices = [None] + ([levels[-1]] if arch["d_model"][-1] != arch["d_model"][0] else [])
        for d in d_choices:
            specs += [SubmodelSpec.wide_narrow_wide(k, d) for k in range(n + 1)]
    out, seen = [], set()
    for spec in specs:
        sub = submodel_architecture(arch, spec)
        key = repr((sub["d_model"], [(b["source"], b.get("units"), b.get("shared_dims"),
                                      b.get("projection_dims")) for b in sub["blocks"]]))
        if key in seen:
            continue
        seen.add(key)
        out.append(
            SubmodelInfo(
                name=spec.name,
                spec=spec,
                params=count_params(sub, features),
                flops=count_flops(sub, features),
            )
        )
    return out
