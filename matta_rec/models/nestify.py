"""Bring your own model: M-nestify a user's Keras ranking model into a TA.

:func:`nestify` takes a Keras functional or Sequential model (the servable
Student a team already has) and returns a :class:`NestifiedModel`: the same
layer graph with every chosen layer replaced by its M-nested twin (paper
Section 3.2), one logit per level, trainable by
:class:`~matta_rec.training.trainer.MatTATrainer`, from which
:meth:`NestifiedModel.extract` cuts plain Keras models with the user's own
layer graph back out.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import os
import re
from typing import Any, Mapping, Sequence

import keras
import numpy as np
from keras import ops, tree

from matta_rec.errors import ConfigError
from matta_rec.models.mixnmatch import SubmodelInfo, SubmodelSpec
from matta_rec.models.nestify_graph import (
    Plan,
    graph_of,
    level_variables,
    trace_nested,
)

# Config keys holding a width that nestify scales, per layer class.
_WIDTH_KEYS = {"Dense": ("units",), "Embedding": ("output_dim",),
               "MNestedCross": ("projection_dim",), "FeatureCross": ("projection_dim",),
               "MNestedGAU": ("units", "shared_dim")}


def _factors(value: Any, levels: Sequence[str], name: str) -> tuple:
    """Per-level factors from one TA factor or a per-level sequence."""
    n = len(levels)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        factors = (1.0,) * (n - 1) + (float(value),) if n > 1 else (float(value),)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        factors = tuple(value)
    else:
        factors = ()
    if len(factors) != n or not all(
        isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0 for f in factors
    ):
        raise ConfigError(f"nestify: {name} must be a positive number (the TA's) or one "
                          f"positive number per level {list(levels)}; got {value!r}")
    if any(a > b for a, b in zip(factors, factors[1:])):
        raise ConfigError(f"nestify: {name} must be non-decreasing from the Student to the "
                          f"TA, got {list(factors)}")
    return tuple(float(f) for f in factors)


def _plain_source(model: Any) -> dict:
    if isinstance(model, Mapping):
        return copy.deepcopy(dict(model))
    if not isinstance(model, keras.Model):
        raise ConfigError(f"nestify takes a keras.Model, got {type(model).__name__}")
    graph_of(model)  # refuse subclassed / unbuilt models up front
    return keras.saving.serialize_keras_object(model)


@keras.saving.register_keras_serializable(package="matta_rec")
class NestifiedModel(keras.Model):
    """A user's Keras model M-nested into Student ⊂ ... ⊂ TA (see :func:`nestify`).

    Args:
        source: the user's model, or its ``keras.saving.serialize_keras_object``
            dict (what ``get_config`` stores; weights are not part of it).
        levels: level names, Student first.
        width_factors: per level (or the TA's alone) multiplier of hidden
            widths.
        d_model_factors: per level (or the TA's alone) multiplier of
            ``Embedding`` widths.
        extra_layers: number of TA-only residual blocks.
        layers: names of the layers to widen; ``None``: all it can.
        share_weights: nest every level in the TA's variables.
        preprocessing: ``None`` or ``{"schema": ..., "stats": ...}`` to put a
            :class:`~matta_rec.features.FeaturePreprocessor` in front.
        **kwargs: base ``keras.Model`` arguments.

    Call arguments:
        inputs: the user's model inputs, or with ``preprocessing`` the raw
            features dict of the schema.

    Returns:
        Dict ``{level: logit [B]}`` in level order.
    """

    def __init__(self, source: Any, *, levels: Sequence[str] = ("student", "ta"),
                 width_factors: Any = 2.0, d_model_factors: Any = 1.0, extra_layers: int = 0,
                 layers: Sequence[str] | None = None, share_weights: bool = True,
                 preprocessing: Mapping | None = None, **kwargs: Any) -> None:
        self.source = _plain_source(source)
        kwargs.setdefault("name", f"nestified_{self.source.get('config', {}).get('name', 'model')}")
        super().__init__(**kwargs)
        levels = tuple(levels)
        if not levels or len(set(levels)) != len(levels) or not all(
            isinstance(name, str) and name for name in levels
        ):
            raise ConfigError(f"nestify: levels must be unique non-empty names, got {levels!r}")
        if isinstance(extra_layers, bool) or not isinstance(extra_layers, int) or extra_layers < 0:
            raise ConfigError(f"nestify: extra_layers must be an integer >= 0, got "
                              f"{extra_layers!r}")
        if not isinstance(share_weights, bool):
            raise ConfigError(f"nestify: share_weights must be True or False, got "
                              f"{share_weights!r}")
        self.plan = Plan(levels=levels,
                         width_factors=_factors(width_factors, levels, "width_factor"),
                         d_model_factors=_factors(d_model_factors, levels, "d_model_factor"),
                         extra_layers=extra_layers,
                         layers=None if layers is None else tuple(layers),
                         share_weights=share_weights)
        template = keras.saving.deserialize_keras_object(copy.deepcopy(self.source))
        inputs, logits, twins, extras, sigmoid = trace_nested(template, self.plan)
        self.input_names = [t._keras_history.operation.name for t in tree.flatten(inputs)]
        self.network = keras.Model(inputs, dict(zip(levels, logits)), name="network")
        self.twin_names = sorted(twins)
        self.extra_names = [layer.name for layer in extras]
        self.final_sigmoid = sigmoid
        self.preprocessing = _jsonable_preprocessing(preprocessing)
        self.preprocessor = None
        if preprocessing is not None:
            from matta_rec.data.schema import load_schema
            from matta_rec.features import FeaturePreprocessor, FeatureStats

            self.preprocessor = FeaturePreprocessor(
                load_schema(self.preprocessing["schema"]),
                FeatureStats.from_dict(self.preprocessing["stats"]), name="preprocessor")
        self.built = True

    # ------------------------------------------------------------ keras API
    def get_config(self) -> dict:
        config = super().get_config()
        plan = self.plan
        config.update({
            "source": self.source, "levels": list(plan.levels),
            "width_factors": list(plan.width_factors),
            "d_model_factors": list(plan.d_model_factors),
            "extra_layers": plan.extra_layers,
            "layers": None if plan.layers is None else list(plan.layers),
            "share_weights": plan.share_weights,
            "preprocessing": self.preprocessing,
        })
        return config

    @classmethod
    def from_config(cls, config: dict) -> "NestifiedModel":
        return cls(**config)

    @property
    def levels(self) -> tuple[str, ...]:
        return self.plan.levels

    def call(self, inputs: Any, training: Any = None) -> dict:
        if self.preprocessor is not None:
            inputs = self.adapt(self.preprocessor(inputs))
        return self.network(inputs, training=training)

    def adapt(self, processed: Mapping[str, Any]) -> Any:
        """The user's model inputs from preprocessed features (by input name)."""
        structure = self.network.input
        missing = [name for name in self.input_names if name not in processed]
        if missing:
            raise ConfigError(
                f"the model's inputs {missing} are not features of the schema "
                f"({sorted(processed)}): name each keras.Input after the schema feature it "
                "takes, e.g. keras.Input(shape=(), name='user_id')")

        def fit(tensor):
            value = processed[tensor._keras_history.operation.name]
            value = ops.cast(value, tensor.dtype)
            if None not in tensor.shape[1:] and tuple(value.shape[1:]) != tuple(tensor.shape[1:]):
                value = ops.reshape(value, (-1,) + tuple(tensor.shape[1:]))
            return value

        return tree.map_structure(fit, structure)

    # ------------------------------------------------------------ weights
    def twin(self, name: str):
        """The nested twin (or shared layer) named ``name`` in the network."""
        return self.network.get_layer(name)

    def warm_start(self, model: keras.Model) -> "NestifiedModel":
        """Load a trained user model's weights into the Student slice.

        Every layer of ``model`` (the user's architecture, e.g. the model in
        production) is matched by name: a nested twin gets the weights as
        the top-left prefix of every level's variables (the Student's slice;
        a level's own variables, such as batch-norm statistics or unshared
        weights, get them too, so every level starts from the Student; the
        TA keeps its other entries), a shared layer gets them whole.  With
        Student factors 1, the Student then computes exactly what ``model``
        does (and with all factors 1 and no extra layers, every level).

        Returns:
            ``self``.
        """
        if self.plan.width_factors[0] != 1.0 or self.plan.d_model_factors[0] != 1.0:
            raise ConfigError("warm_start needs the Student at the user's sizes (factors 1 at "
                              f"level '{self.levels[0]}')")
        for layer in graph_of(model).layers:
            if not layer.weights:
                continue
            target = self.twin(layer.name)
            if layer.name in self.twin_names:
                per_level = [level_variables(target, k) for k in range(target.num_levels)]
            else:
                per_level = [list(target.weights)]
            for variables in per_level:
                for value, variable in _paired(list(layer.weights), variables, layer.name):
                    full = np.array(variable.numpy())
                    full[tuple(slice(0, n) for n in value.shape)] = np.asarray(value)
                    variable.assign(full)
        return self

    # ------------------------------------------------------------ extraction
    def extract(self, spec: Any = "student", *, logits: bool = False) -> keras.Model:
        """A plain Keras model of one level, in the user's own architecture.

        Args:
            spec: a level name (``"student"``, ``"ta"``...) or its
                :class:`~matta_rec.models.SubmodelSpec`.
            logits: leave out the final sigmoid (the model then returns the
                logit, as our exporter wants); by default it is restored.

        Returns:
            For the Student: a model built from the user's config (same
            layer graph, names and shapes: ``get_config()`` equal to the
            original's) holding the Student slice of every weight.  For a
            larger level: the same graph with that level's widths (and the
            TA-only blocks for the TA).  Its inputs are the user's model's.
        """
        level = self._level_index(spec)
        config = self._level_source(level, logits)
        plain = keras.saving.deserialize_keras_object(config)
        if self.plan.extra_level == level and self.extra_names:
            plain = self._with_extras(plain)
        for layer in graph_of(plain).layers:
            if not layer.weights:
                continue
            source = self.twin(layer.name)
            variables = (level_variables(source, level) if layer.name in self.twin_names
                         else list(source.weights))
            for target, value in _paired(list(layer.weights), variables, layer.name):
                target.assign(value[tuple(slice(0, n) for n in target.shape)])
        return plain

    def serving_model(self, spec: Any = "student") -> keras.Model:
        """``extract(spec, logits=True)`` behind this model's preprocessing:
        raw features -> logit ``[B]``, what
        :func:`~matta_rec.export.savedmodel.export_model` takes."""
        return _ServingModel(self.extract(spec, logits=True), self,
                             name=f"serving_{self._level_name(spec)}")

    def list_submodels(self) -> list[SubmodelInfo]:
        """Every level as a :class:`SubmodelInfo` (params, dense-matmul FLOPs)."""
        out = []
        for name in self.levels:
            plain = self.extract(name)
            out.append(SubmodelInfo(name=name, spec=SubmodelSpec.for_level(name),
                                    params=int(plain.count_params()), flops=_dense_flops(plain)))
        return out

    def _level_name(self, spec: Any) -> str:
        return self.levels[self._level_index(spec)]

    def _level_index(self, spec: Any) -> int:
        parsed = SubmodelSpec.parse(spec)
        if parsed.kind != "level" or parsed.level not in self.levels:
            raise ConfigError(
                f"a nestified model extracts its levels {list(self.levels)}; got {parsed.name!r} "
                "(Mix'n'Match across blocks is for NestedRelevanceModel)")
        return self.levels.index(parsed.level)

    def _level_source(self, level: int, logits: bool) -> dict:
        """The user's config at ``level``'s widths."""
        config = copy.deepcopy(self.source)
        kind, name = self.final_sigmoid
        for entry in config["config"]["layers"]:
            layer_config = entry.get("config", {})
            if logits and kind is not None and layer_config.get("name") == name:
                layer_config["activation"] = "linear"
            twin_name = layer_config.get("name")
            if twin_name in self.twin_names and entry.get("class_name") in _WIDTH_KEYS:
                _set_widths(entry, self.twin(twin_name), level)
            # Build shapes are the original's (and lists after a .keras round
            # trip): the layers are built again when the graph is rebuilt.
            entry.pop("build_config", None)
        return config

    def _with_extras(self, plain: keras.Model) -> keras.Model:
        """``plain`` with the TA-only blocks after the last hidden Dense."""
        after = self.extra_names[0].rsplit("_ta_extra_", 1)[0]
        blocks = [self.twin(name) for name in self.extra_names]

        def clone_block(block):
            return type(block).from_config(block.get_config())

        if isinstance(plain, keras.Sequential):
            layers = []
            for layer in plain.layers:
                layers.append(layer)
                if layer.name == after:
                    layers += [clone_block(b) for b in blocks]
            return keras.Sequential([keras.Input(batch_shape=plain.inputs[0].shape,
                                                 dtype=plain.inputs[0].dtype,
                                                 name=plain.inputs[0].name)] + layers,
                                    name=plain.name)

        def call(layer, *args, **kwargs):
            out = layer(*args, **kwargs)
            if layer.name == after:
                for block in blocks:
                    out = clone_block(block)(out)
            return out

        return keras.models.clone_model(plain, call_function=call)


def _set_widths(entry: dict, twin, level: int) -> None:
    """Write the twin's widths at ``level`` into a layer's config entry."""
    config = entry["config"]
    kind = entry["class_name"]
    if kind == "Dense":
        config["units"] = twin.units[level]
    elif kind == "Embedding":
        config["output_dim"] = twin.output_dim[level]
    elif kind == "MNestedCross":
        config["projection_dim"] = [twin.projection_dim[level]]
    elif kind == "FeatureCross":  # keras_rs
        config["projection_dim"] = twin.projection_dim[level]
    else:
        config["units"] = [twin.units[level]]
        config["shared_dim"] = [twin.shared_dim[level]]


def _paired(small: list, large: list, layer_name: str) -> list:
    """``[(plain variable, nested variable)]`` matched in order; names are
    checked (level suffixes aside) and each plain shape must be a prefix."""
    if len(small) != len(large):
        raise ConfigError(f"layer '{layer_name}': {len(small)} variables vs {len(large)}; "
                          "is this the model that was nestified?")
    pairs = []
    for plain, nested in zip(small, large):
        if re.sub(r"_level\d+$", "", nested.name) != plain.name:
            raise ConfigError(f"layer '{layer_name}': variable {plain.name!r} does not match "
                              f"{nested.name!r}")
        if len(plain.shape) != len(nested.shape) or any(
            p > n for p, n in zip(plain.shape, nested.shape)
        ):
            raise ConfigError(f"layer '{layer_name}': {plain.name} {tuple(plain.shape)} does "
                              f"not fit in {tuple(nested.shape)}")
        pairs.append((plain, nested))
    return pairs


def _dense_flops(model: keras.Model) -> int:
    """FLOPs per example of the model's 2-D kernels (2 per multiply-add)."""
    total = 0
    for layer in graph_of(model).layers:
        if isinstance(layer, (keras.layers.Embedding, keras.layers.InputLayer)):
            continue
        tokens = 1
        try:
            shape = layer.input.shape if not isinstance(layer.input, (list, tuple)) else None
            if shape is not None and len(shape) > 2:
                tokens = int(np.prod([d for d in shape[1:-1] if d]))
        except (AttributeError, ValueError):
            pass
        for variable in layer.weights:
            if len(variable.shape) == 2 and variable.trainable:
                total += 2 * tokens * int(variable.shape[0]) * int(variable.shape[1])
    return total


def _jsonable_preprocessing(preprocessing: Mapping | None) -> dict | None:
    if preprocessing is None:
        return None
    out = {}
    for key in ("schema", "stats"):
        if key not in preprocessing:
            raise ConfigError("nestify: preprocessing must be {'schema': ..., 'stats': ...}, "
                              f"got keys {sorted(preprocessing)}")
        value = preprocessing[key]
        out[key] = value.to_dict() if hasattr(value, "to_dict") else value
    return out


class _ServingModel(keras.Model):
    """Raw features -> (preprocessing) -> a plain extracted model -> logit ``[B]``."""

    def __init__(self, plain: keras.Model, nested: NestifiedModel, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plain = plain
        self.preprocessor = nested.preprocessor
        self._adapt = nested.adapt if nested.preprocessor is not None else None

    def call(self, inputs: Any):
        if self.preprocessor is not None:
            inputs = self._adapt(self.preprocessor(inputs))
        return ops.reshape(self.plain(inputs), (-1,))


def nestify(model: Any, *, width_factor: Any = 2.0, d_model_factor: Any = 1.0,
            extra_layers: int = 0, layers: Sequence[str] | None = None,
            levels: Sequence[str] = ("student", "ta"), share_weights: bool = True,
            preprocessing: Mapping | None = None, warm_start: bool = True,
            name: str | None = None) -> NestifiedModel:
    """M-nestify a Keras ranking model: the model becomes the Student of a TA.

    Every chosen ``Dense`` / ``Embedding`` / ``MNestedCross`` / ``MNestedGAU``
    and every last-axis ``LayerNormalization`` / ``BatchNormalization``
    becomes its M-nested twin (:class:`~matta_rec.layers.MNestedDense`...)
    under the same name, with the original as the Student slice.  Each level
    runs its own forward pass on its slices, so ``Flatten`` /
    ``Concatenate`` / pooling after widened layers stay correct; weightless
    layers are shared; a layer with weights that reads only un-widened
    tensors is shared as it is.  A layer that cannot follow (a ``Reshape``
    with hard-coded widths, an unknown layer with weights reading a widened
    tensor) is refused with a :class:`~matta_rec.errors.ConfigError` naming
    it.  The layers computing the output keep their width, and a final
    sigmoid (``Dense(..., activation="sigmoid")`` or ``Activation("sigmoid")``)
    is left out of training, which runs on logits; :meth:`NestifiedModel.extract`
    puts it back.

    ``extra_layers`` (depth nesting, paper Section 3.2.2): that many
    :class:`~matta_rec.layers.ResidualDenseBlock` layers at the TA's width,
    run by the TA only, inserted right after the last hidden ``Dense`` (the
    last ``Dense`` that is not an output layer: the top of the MLP tower),
    named ``<that layer>_ta_extra_<k>``.  Their output projection starts at
    zero, so they start neutral: the TA begins as the widened Student.

    Args:
        model: a built Keras functional or Sequential model with one output
            (a logit or a probability).
        width_factor: the TA's multiplier of hidden widths (Dense units,
            cross projection dims, GAU widths), or one per level.
        d_model_factor: the TA's multiplier of ``Embedding`` widths, or one
            per level.
        extra_layers: TA-only residual blocks (see above).
        layers: names of the layers to widen (``None``: every nestable
            layer except the output ones).  Layers not listed keep their
            width, and become twins only to read a widened input.
        levels: level names, Student first (``("student", "ta")``).
        share_weights: ``True`` nests every level in the TA's variables
            (MatTA); ``False`` gives each level its own (an ablation).
        preprocessing: ``{"schema": ..., "stats": ...}`` to put
            :class:`~matta_rec.features.FeaturePreprocessor` in front: the
            nested model then takes the schema's raw features and feeds the
            user's inputs, matched by ``keras.Input`` name, the preprocessed
            ones (ids, normalised numbers).
        warm_start: load ``model``'s current weights into the Student slice
            (its trained weights, when it is the model in production).
        name: the nested model's name.

    Returns:
        A :class:`NestifiedModel` returning ``{level: logit [B]}``.

    Example:

    ```python
    nested = matta_rec.nestify(user_model, width_factor=2.0, extra_layers=1)
    trainer = MatTATrainer(nested, LossConfig())
    trainer.compile(optimizer="adam"); trainer.fit(dataset)
    student = nested.extract("student")   # user_model's architecture, trained
    ```
    """
    kwargs = {} if name is None else {"name": name}
    nested = NestifiedModel(model, levels=levels, width_factors=width_factor,
                            d_model_factors=d_model_factor, extra_layers=extra_layers,
                            layers=layers, share_weights=share_weights,
                            preprocessing=preprocessing, **kwargs)
    if warm_start and isinstance(model, keras.Model) and nested.plan.width_factors[0] == 1.0 \
            and nested.plan.d_model_factors[0] == 1.0:
        nested.warm_start(model)
    return nested


def load_source(source: str, schema: Any = None, stats: Any = None) -> keras.Model:
    """The user's model named by a ``model.source`` config entry.

    Args:
        source: a ``.keras`` file (loaded with its weights: a warm start from
            production) or ``package.module:function``, a factory called
            with the keyword arguments ``schema`` and ``stats`` that its
            signature names (size tables with
            ``FeaturePreprocessor(schema, stats).cardinality(name)``).
        schema: the run's :class:`~matta_rec.data.schema.Schema`.
        stats: the run's :class:`~matta_rec.features.FeatureStats`.

    Returns:
        The built Keras model.

    Raises:
        ConfigError: naming ``model.source`` when it cannot be loaded.
    """
    fix = "set --set model.source=PATH.keras or --set model.source=package.module:function"
    if source.endswith(".keras"):
        if not os.path.exists(source):
            raise ConfigError(f"no model file {source!r}; {fix}", key="model.source")
        return keras.saving.load_model(source)
    module_name, _, function_name = source.partition(":")
    if not module_name or not function_name:
        raise ConfigError(f"{source!r} is neither a .keras file nor package.module:function; "
                          f"{fix}", key="model.source")
    try:
        factory = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {source!r} ({exc}); put its package on PYTHONPATH "
                          f"or {fix}", key="model.source") from exc
    accepted = inspect.signature(factory).parameters
    given = {key: value for key, value in (("schema", schema), ("stats", stats))
             if key in accepted}
    model = factory(**given)
    if not isinstance(model, keras.Model):
        raise ConfigError(f"{source!r} returned {type(model).__name__}, not a keras.Model",
                          key="model.source")
    return model


def nestify_from_config(model_config: Any, schema: Any, stats: Any) -> NestifiedModel:
    """The nested model of a run whose ``model.source`` names a user model.

    Reads ``model_config.source`` (see :func:`load_source`),
    ``source_preprocessing`` (default ``True``: our preprocessing in front),
    ``extra_layers`` (default 0), and ``levels`` / ``width_factors`` /
    ``d_model_factors`` / ``share_weights`` as for the built-in model.
    """
    user = load_source(model_config.source, schema, stats)
    preprocessing = None
    if getattr(model_config, "source_preprocessing", True):
        preprocessing = {"schema": schema, "stats": stats}
    return nestify(user, width_factor=tuple(model_config.width_factors),
                   d_model_factor=tuple(model_config.d_model_factors),
                   extra_layers=int(getattr(model_config, "extra_layers", 0)),
                   levels=tuple(model_config.levels),
                   share_weights=bool(getattr(model_config, "share_weights", True)),
                   preprocessing=preprocessing)


__all__ = ["NestifiedModel", "nestify", "load_source", "nestify_from_config"]
