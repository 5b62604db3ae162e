"""The user-context-item relevance model with nested levels (Student ⊂ ... ⊂ TA).

Also Mix'n'Match extraction: :func:`extract` cuts a standalone
:class:`ExtractedRelevanceModel` out of a :class:`NestedRelevanceModel`,
following the sub-model descriptions of :mod:`matta_rec.models.mixnmatch`
(which imports nothing from here).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import keras
from keras import ops

from matta_rec.data.schema import Schema, load_schema
from matta_rec.errors import ConfigError
from matta_rec.features import FeaturePreprocessor, FeatureStats
from matta_rec.layers import MNestedCross, MNestedDense, MNestedFeatureEmbedding, MNestedGAU
from matta_rec.models.config import ModelConfig
from matta_rec.models.mixnmatch import (
    SubmodelInfo,
    SubmodelSpec,
    submodel_architecture,
    submodel_family,
)


def flatten_tokens(tokens):
    """``(B, F, d) -> (B, d * F)`` with column ``j * F + f`` = token ``f``, dim ``j``.

    The flat vector of a ``d_S``-prefix of the tokens is then the first
    ``d_S * F`` entries of the flat TA vector, so nesting survives flattening.
    """
    shape = ops.shape(tokens)
    return ops.reshape(ops.transpose(tokens, (0, 2, 1)), (-1, shape[1] * shape[2]))


def feature_descriptions(schema: Schema, preprocessor: FeaturePreprocessor) -> list[dict]:
    """The per-feature dicts :class:`MNestedFeatureEmbedding` takes."""
    out = []
    for spec in schema.features:
        entry = {"name": spec.name, "kind": spec.kind, "group": spec.group}
        if spec.kind in ("categorical", "multi_categorical"):
            entry["cardinality"] = preprocessor.cardinality(spec.name)
        elif spec.kind == "dense":
            entry["dim"] = spec.dim
        out.append(entry)
    return out


class RelevanceNetwork(keras.Model):
    """Shared machinery: a network built from a resolved architecture dict.

    Subclasses: :class:`NestedRelevanceModel` (all levels, dict output) and
    :class:`ExtractedRelevanceModel` (one level, logit tensor output).  The
    architecture dict is produced by :meth:`ModelConfig.architecture` (or by
    Mix'n'Match for an extracted sub-model): ``levels``, ``d_model`` per
    level, ``blocks`` (each with ``kind`` gau / cross / mlp, ``min_level``,
    per-level widths and ``source``, its index in the nested model),
    ``share_weights`` and ``options``.
    """

    def _build_network(self, schema: Any, stats: Any, architecture: Mapping) -> None:
        self.schema = load_schema(schema.to_dict() if isinstance(schema, Schema) else schema)
        self.stats = FeatureStats.from_dict(
            stats.to_dict() if isinstance(stats, FeatureStats) else stats
        )
        self.architecture = _plain(architecture)
        arch = self.architecture
        self.level_names = tuple(arch["levels"])
        n = len(self.level_names)
        share = bool(arch["share_weights"])
        options = arch["options"]
        d_model = tuple(arch["d_model"])
        if len(d_model) != n:
            raise ValueError(f"architecture d_model needs {n} values, got {d_model}")

        # Every layer runs under the model's dtype policy (its `dtype`
        # argument, else the global policy), so get_config / from_config and
        # .keras files keep it for the whole network.
        dtype = self.dtype_policy
        self.preprocessor = FeaturePreprocessor(
            self.schema, self.stats, dtype=dtype, name="preprocessor"
        )
        features = feature_descriptions(self.schema, self.preprocessor)
        num_tokens = len(features)
        self.embedding = MNestedFeatureEmbedding(
            features,
            output_dim=d_model,
            group_embeddings=bool(options["group_embeddings"]),
            # Architectures saved before share_embeddings existed shared the
            # embeddings exactly when they shared every weight.
            share_weights=bool(arch.get("share_embeddings", share)),
            lookup_l2=float(options.get("embedding_l2", 0.0)),
            dtype=dtype,
            name="embedding",
        )
        self.embedding.build()
        self.blocks = []
        widths = [d * num_tokens for d in d_model]
        for block in arch["blocks"]:
            layer = _make_block(block, options, share, dtype)
            # Without sharing, levels that skip a block own none of its weights.
            runs = [share or level >= block["min_level"] for level in range(n)]
            if block["kind"] == "gau":
                layer.build(
                    tuple((None, num_tokens, d) if r else None for d, r in zip(d_model, runs))
                )
            elif block["kind"] == "cross":
                layer.build(tuple((None, w) if r else None for w, r in zip(widths, runs)))
            else:
                layer.build(tuple((None, w) for w in widths))
                widths = list(block["units"])
            self.blocks.append(layer)
        self.head = MNestedDense(units=(1,) * n, share_weights=share, dtype=dtype, name="head")
        self.head.build(tuple((None, w) for w in widths))
        self.built = True

    @property
    def training_dependent(self) -> bool:
        """Whether training mode changes the forward pass (dropout, batch norm).

        :class:`~matta_rec.training.trainer.MatTATrainer` then scores its
        online metrics with an extra inference-mode forward pass.
        """
        options = self.architecture["options"]
        rates = [options.get(k, 0.0) for k in ("mlp_dropout", "gau_dropout", "cross_dropout")]
        return any(rates) or options.get("mlp_norm") == "batch"

    # ---------------------------------------------------------------- call
    def _level_logits(self, features: Mapping[str, Any]) -> tuple:
        """Logits ``[B]`` of every level, in level order."""
        return self.logits_from_processed(self.preprocessor(features))

    def logits_from_processed(self, processed: Mapping[str, Any]) -> tuple:
        """Logits ``[B]`` of every level from already preprocessed features.

        ``processed`` is the output of ``self.preprocessor`` (e.g. computed
        in a ``tf.data`` pipeline); returns a tuple in level order.
        """
        tokens = self.embedding(processed)
        flat = None
        cross_x0 = None
        for block, layer in zip(self.architecture["blocks"], self.blocks):
            kind, first = block["kind"], block["min_level"]
            if kind == "gau":
                tokens = _run(layer, tokens, first)
                continue
            if flat is None:
                flat = tuple(flatten_tokens(t) for t in tokens)
            if kind == "cross":
                if cross_x0 is None:
                    cross_x0 = flat
                x0 = tuple(x if i >= first else None for i, x in enumerate(cross_x0))
                x = tuple(v if i >= first else None for i, v in enumerate(flat))
                out = layer(x0, x)
                flat = tuple(v if o is None else o for v, o in zip(flat, out))
            else:
                flat = _run(layer, flat, first)
        if flat is None:
            flat = tuple(flatten_tokens(t) for t in tokens)
        logits = self.head(flat)
        return tuple(ops.reshape(logit, (-1,)) for logit in logits)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.schema.feature_names


def _make_block(block: Mapping, options: Mapping, share: bool, dtype: Any):
    """The (unbuilt) nested layer of one architecture block."""
    kind, source = block["kind"], block["source"]
    if kind == "gau":
        return MNestedGAU(
            units=tuple(block["units"]),
            shared_dim=tuple(block["shared_dims"]),
            activation=options["gau_activation"],
            use_norm=bool(options["gau_norm"]),
            share_weights=share,
            dropout=float(options.get("gau_dropout", 0.0)),
            # a block only larger levels run: drawn whole at their shape
            init_per_level=block["min_level"] == 0,
            dtype=dtype,
            name=f"gau_{source}",
        )
    if kind == "cross":
        return MNestedCross(
            projection_dim=tuple(block["projection_dims"]),
            diag_scale=float(options["cross_diag_scale"]),
            share_weights=share,
            dropout=float(options.get("cross_dropout", 0.0)),
            init_per_level=block["min_level"] == 0,
            dtype=dtype,
            name=f"cross_{source}",
        )
    if kind == "mlp":
        return MNestedDense(
            units=tuple(block["units"]),
            activation=options["mlp_activation"],
            share_weights=share,
            normalization=options.get("mlp_norm"),
            dropout=float(options.get("mlp_dropout", 0.0)),
            dtype=dtype,
            name=f"mlp_{source}",
        )
    raise ValueError(f"unknown block kind {kind!r} in architecture")


def _run(layer, values: tuple, first: int) -> tuple:
    """Run ``layer`` for levels ``>= first``; other levels pass through."""
    inputs = tuple(v if i >= first else None for i, v in enumerate(values))
    outputs = layer(inputs)
    return tuple(v if o is None else o for v, o in zip(values, outputs))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@keras.saving.register_keras_serializable(package="matta_rec")
class NestedRelevanceModel(RelevanceNetwork):
    """The nested user-context-item relevance model (MatTA, paper Section 3.2).

    Raw features -> :class:`~matta_rec.features.FeaturePreprocessor` -> one
    token per feature (d_model-nested embeddings, user / context / item
    group vectors) -> nested GAU blocks over the tokens -> tokens flattened
    (the Student's flat vector is a prefix of the TA's) -> nested DCN-v2
    cross layers -> nested MLP -> one logit per level.  Every level reads a
    prefix of the next level's weights (``config.share_weights``); blocks
    added for a larger level (depth nesting) are skipped by smaller levels.

    Args:
        schema: the feature :class:`~matta_rec.data.schema.Schema` (or its
            dict / YAML path).
        stats: :class:`~matta_rec.features.FeatureStats` (or its dict).
        config: :class:`ModelConfig` (or its dict); defaults to ``ModelConfig()``.
        **kwargs: base ``keras.Model`` arguments (``name``, ``trainable``,
            ``dtype``: the dtype policy of every layer of the network,
            e.g. ``"mixed_bfloat16"``; defaults to the global policy).

    Call arguments:
        features: dict ``{feature_name: raw tensor}`` (see the schema).

    Returns:
        Dict ``{level_name: logit [B]}`` in level order, in the policy's
        compute dtype (float32 by default).

    Example:

    ```python
    model = NestedRelevanceModel(schema, stats, ModelConfig())
    out = model(features)                 # {"student": [B], "ta": [B]}
    student = model.extract("student")    # standalone keras.Model -> logit [B]
    for info in model.list_submodels():
        print(info.name, info.params, info.flops)
    ```
    """

    def __init__(self, schema: Any, stats: Any, config: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("name", "nested_relevance_model")
        super().__init__(**kwargs)
        if config is None:
            config = ModelConfig()
        elif not isinstance(config, ModelConfig):
            config = ModelConfig.from_dict(config, source="NestedRelevanceModel.config")
        self.config = config
        self._build_network(schema, stats, config.architecture())

    def get_config(self) -> dict:
        config = super().get_config()  # name, trainable, dtype (the policy)
        config.update(
            {
                "schema": self.schema.to_dict(),
                "stats": self.stats.to_dict(),
                "config": self.config.to_dict(),
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> "NestedRelevanceModel":
        model_config = config.get("config")
        if (isinstance(model_config, Mapping) and "share_embeddings" not in model_config
                and model_config.get("share_weights") is False):
            # Saved before share_embeddings existed: an unshared model then
            # had per-level embeddings too.
            config = {**config, "config": {**model_config, "share_embeddings": False}}
        return cls(**config)

    @property
    def levels(self) -> tuple[str, ...]:
        return self.level_names

    def call(self, features: Mapping[str, Any]) -> dict:
        return dict(zip(self.level_names, self._level_logits(features)))

    def extract(self, spec: Any) -> "ExtractedRelevanceModel":
        """Standalone sub-model for ``spec`` (a :class:`SubmodelSpec` or its string).

        See :func:`extract`.
        """
        return extract(self, spec)

    def list_submodels(self) -> list[SubmodelInfo]:
        """The Mix'n'Match family: see :func:`list_submodels`."""
        return list_submodels(self)


@keras.saving.register_keras_serializable(package="matta_rec")
class ExtractedRelevanceModel(RelevanceNetwork):
    """A standalone one-level relevance model: raw features -> logit ``[B]``.

    Built at concrete sizes (every weight has exactly the shape of a model
    trained at that size) by :func:`extract`, which copies the sliced weights
    of a :class:`NestedRelevanceModel` into it.

    Args:
        schema: the feature schema (object, dict or YAML path).
        stats: the :class:`~matta_rec.features.FeatureStats` (or its dict).
        architecture: one-level architecture dict (see
            :class:`RelevanceNetwork`).
        spec: name of the :class:`SubmodelSpec` it was extracted with.
        **kwargs: base ``keras.Model`` arguments (``dtype``: the dtype policy
            of every layer; :func:`extract` passes the nested model's).

    Call arguments:
        features: dict ``{feature_name: raw tensor}``.

    Returns:
        The logit ``[B]`` in the policy's compute dtype (float32 by default).
    """

    def __init__(
        self, schema: Any, stats: Any, architecture: Mapping, spec: str = "student", **kwargs: Any
    ) -> None:
        kwargs.setdefault("name", "extracted_relevance_model")
        super().__init__(**kwargs)
        if len(architecture.get("levels", ())) != 1:
            raise ValueError(
                "ExtractedRelevanceModel takes a one-level architecture; got levels "
                f"{architecture.get('levels')!r}"
            )
        self.spec = str(spec)
        self._build_network(schema, stats, architecture)

    def get_config(self) -> dict:
        config = super().get_config()  # name, trainable, dtype (the policy)
        config.update(
            {
                "schema": self.schema.to_dict(),
                "stats": self.stats.to_dict(),
                "architecture": self.architecture,
                "spec": self.spec,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict) -> "ExtractedRelevanceModel":
        return cls(**config)

    def call(self, features: Mapping[str, Any]):
        return self._level_logits(features)[0]


# ------------------------------------------------------------ extraction
_SUFFIX = re.compile(r"_level\d+$")


def extract(model: NestedRelevanceModel, spec: Any) -> ExtractedRelevanceModel:
    """A standalone, physically smaller copy of one sub-network of ``model``.

    Args:
        model: a :class:`NestedRelevanceModel`.
        spec: a :class:`~matta_rec.models.mixnmatch.SubmodelSpec` or its
            string (see :mod:`matta_rec.models.mixnmatch`).

    Returns:
        An :class:`ExtractedRelevanceModel` mapping raw features to a logit
        ``[B]``, under ``model``'s dtype policy.  It holds its own
        preprocessor and only the sliced weights, so its parameter count is
        that of a model built at those sizes; its output equals the nested
        model's path for ``spec``.

    Example:

    ```python
    student = extract(model, "student")     # same as model.extract("student")
    wnw = extract(model, "wnw:2")
    ```
    """
    spec = SubmodelSpec.parse(spec)
    arch = model.architecture
    shared = bool(arch["share_weights"])
    if not shared and spec.kind != "level":
        raise ConfigError(
            f"sub-model {spec.name!r} mixes levels, which needs share_weights: true; "
            "a model trained without parameter sharing only has its levels "
            f"{list(arch['levels'])}"
        )
    d, choices = spec.resolve(arch)
    sub_arch = submodel_architecture(arch, spec)
    sub = ExtractedRelevanceModel(
        model.schema,
        model.stats,
        sub_arch,
        spec=spec.name,
        dtype=model.dtype_policy,
        name=_model_name(spec.name),
    )
    n = len(arch["levels"])
    _copy_prefix(sub.embedding, model.embedding, d, n, model.embedding.share_weights)
    kept = [(layer, level) for layer, level in zip(model.blocks, choices) if level is not None]
    for target, (source, level) in zip(sub.blocks, kept):
        _copy_prefix(target, source, level, n, shared)
    head_level = d if spec.kind == "level" else n - 1
    _copy_prefix(sub.head, model.head, head_level, n, shared)
    return sub


def list_submodels(model: NestedRelevanceModel) -> list[SubmodelInfo]:
    """The Mix'n'Match family of ``model`` with parameter counts and FLOPs.

    See :func:`~matta_rec.models.mixnmatch.submodel_family`.
    """
    return submodel_family(model.architecture, model.embedding.features)


def _model_name(spec_name: str) -> str:
    return "submodel_" + re.sub(r"[^A-Za-z0-9_]+", "_", spec_name).strip("_")


def _level_variables(layer, level: int, num_levels: int, shared: bool) -> list:
    """The variables level ``level`` reads from ``layer``, in the layer's order.

    A variable with the level's suffix (``_level<k>``; none for the TA) is
    the level's own: every variable of an unshared layer, and per-level
    statistics (batch norm moving mean / variance) of a shared one.  A
    shared layer's other variables have no suffix and every level reads
    (a prefix of) them.
    """
    suffix = "" if level == num_levels - 1 else f"_level{level}"
    versions: dict = {}  # path without suffix -> {suffix: variable}
    for v in layer.weights:
        found = _SUFFIX.search(v.path)
        own = found.group(0) if found else ""
        versions.setdefault(v.path[: len(v.path) - len(own)], {})[own] = v
    out = []
    for by_suffix in versions.values():
        if suffix in by_suffix:
            out.append(by_suffix[suffix])
        elif shared and "" in by_suffix:
            out.append(by_suffix[""])
    return out


def _copy_prefix(target_layer, source_layer, level: int, num_levels: int, shared: bool) -> None:
    sources = _level_variables(source_layer, level, num_levels, shared)
    targets = list(target_layer.weights)
    if len(sources) != len(targets):
        raise RuntimeError(
            f"cannot map weights of '{source_layer.name}' onto '{target_layer.name}': "
            f"{len(sources)} vs {len(targets)} variables"
        )
    for target, source in zip(targets, sources):
        if _SUFFIX.sub("", source.name) != target.name:
            raise RuntimeError(f"variable order mismatch: {source.path} vs {target.path}")
        if len(target.shape) != len(source.shape) or any(
            t > s for t, s in zip(target.shape, source.shape)
        ):
            raise RuntimeError(
                f"{target.path} {tuple(target.shape)} does not fit in {source.path} "
                f"{tuple(source.shape)}"
            )
        value = source.value[tuple(slice(0, n) for n in target.shape)]
        target.assign(value)
