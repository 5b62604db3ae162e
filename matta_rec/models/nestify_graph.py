"""M-nesting a user's Keras graph: the twin of each layer and the traced nested graph.

:func:`trace_nested` replays the layer graph of a functional or Sequential
Keras model with one tensor per level (Student first, TA last) on every
edge.  Each layer with weights that :func:`matta_rec.nestify` knows becomes
its M-nested twin (same name, the original as the Student slice); a
weightless layer is shared and runs once per level (once for all when every
level reads the same tensor); a layer with weights that reads one tensor for
all levels is shared as it is.  Anything else is refused with a
:class:`~matta_rec.errors.ConfigError` naming the layer.

:func:`level_variables` pairs a twin's variables with those of the plain
layer of one level (warm start and extraction use it).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import keras
from keras import tree

from matta_rec.errors import ConfigError
from matta_rec.layers import (
    MNestedBatchNormalization,
    MNestedCross,
    MNestedDense,
    MNestedEmbedding,
    MNestedGAU,
    MNestedLayerNormalization,
    ResidualDenseBlock,
)

_SUFFIX = re.compile(r"_level(\d+)$")
# Layers that only move values around: a final sigmoid may sit behind them.
_SHAPE_ONLY = ("Reshape", "Flatten")


def scaled(base: int, factor: float) -> int:
    """``max(1, round(base * factor))``: a width at one level."""
    return max(1, int(round(base * factor)))


@dataclasses.dataclass
class Plan:
    """What nestify does to a model: its levels and the widening per level.

    Args:
        levels: level names, Student first.
        width_factors: per level, multiplier of hidden widths (Dense units,
            cross projection dims, GAU widths).
        d_model_factors: per level, multiplier of ``Embedding`` widths.
        extra_layers: TA-only residual blocks after the last hidden Dense.
        layers: names of the layers to widen (``None``: every one it can).
        share_weights: nest the levels in one set of variables.
    """

    levels: tuple
    width_factors: tuple
    d_model_factors: tuple
    extra_layers: int
    layers: tuple | None
    share_weights: bool

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    @property
    def extra_level(self) -> int | None:
        """The level that runs the extra layers (the TA), if any."""
        if not self.extra_layers or (self.num_levels == 1 and self.levels[0] != "ta"):
            return None
        return self.num_levels - 1


class PerLevel:
    """One symbolic tensor per level on an edge of the traced graph."""

    def __init__(self, values: Sequence):
        self.values = tuple(values)

    @property
    def shared(self) -> bool:
        return all(v is self.values[0] for v in self.values)

    def pick(self, level: int):
        return self.values[level]


def graph_of(model) -> keras.Model:
    """The functional graph of ``model`` (a Sequential is viewed as one)."""
    if isinstance(model, keras.Sequential):
        if not model.built or not getattr(model, "inputs", None):
            raise ConfigError(
                f"nestify needs a built Sequential model: give '{model.name}' an input, "
                "e.g. keras.Sequential([keras.Input(shape=(n,)), ...])"
            )
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if not hasattr(model, "_nodes_by_depth") or not getattr(model, "inputs", None):
        raise ConfigError(
            f"nestify takes a Keras functional or Sequential model; '{model.name}' "
            f"({type(model).__name__}) is a subclassed model whose layer graph is not "
            "known: rebuild it with the functional API (keras.Model(inputs, outputs))"
        )
    if len(model.outputs) != 1:
        raise ConfigError(
            f"nestify needs a model with one output (the ranking logit or probability); "
            f"'{model.name}' has {len(model.outputs)}"
        )
    return model


def producer(tensor):
    """``(operation, node)`` that produced a symbolic tensor."""
    operation, node_index, _ = tensor._keras_history
    return operation, operation._inbound_nodes[node_index]


def final_sigmoid(graph) -> tuple[str | None, str | None]:
    """How the model's output is squashed: ``("dense", name)`` for a final
    ``Dense(..., activation="sigmoid")``, ``("activation", name)`` for a final
    ``Activation("sigmoid")`` layer, ``(None, None)`` for logits."""
    tensor = graph.outputs[0]
    while True:
        op, node = producer(tensor)
        kind = type(op).__name__
        activation = getattr(op, "activation", None)
        is_sigmoid = activation is keras.activations.sigmoid
        if kind == "Dense" and is_sigmoid:
            return "dense", op.name
        if kind == "Activation" and is_sigmoid:
            return "activation", op.name
        if kind == "Sigmoid":
            raise ConfigError(
                f"'{graph.name}' ends with keras.ops.sigmoid, which nestify cannot restore "
                "in the extracted model: write keras.layers.Activation('sigmoid') or "
                "Dense(1, activation='sigmoid') instead"
            )
        if kind in _SHAPE_ONLY and len(node.input_tensors) == 1:
            tensor = node.input_tensors[0]
            continue
        return None, None


def is_feature_cross(op) -> bool:
    """Whether ``op`` is ``keras_rs.layers.FeatureCross`` (DCN-v2's cross layer).

    Checked by name, so that nestify needs no ``keras_rs`` import: its
    :class:`~matta_rec.layers.MNestedCross` twin takes the same arguments and
    holds the same variables in the same order.
    """
    kind = type(op)
    return kind.__name__ == "FeatureCross" and kind.__module__.split(".")[0] == "keras_rs"


def nestable(op) -> bool:
    """Whether nestify has an M-nested twin for this layer."""
    kind = type(op)
    if kind in (keras.layers.Dense, keras.layers.Embedding) or is_feature_cross(op):
        return True
    if kind is keras.layers.LayerNormalization:
        return op.axis in (-1, [-1]) and not op.rms_scaling
    if kind is keras.layers.BatchNormalization:
        return op.axis == -1 and not op.renorm and not op.synchronized
    if kind in (MNestedCross, MNestedGAU):
        return op.num_levels == 1
    return False


def head_layers(graph) -> set:
    """Names of the layers that compute the output (their width stays)."""
    heads, stack, seen = set(), list(graph.outputs), set()
    while stack:
        tensor = stack.pop()
        op, node = producer(tensor)
        if id(op) in seen or isinstance(op, keras.layers.InputLayer):
            continue
        seen.add(id(op))
        if nestable(op) or getattr(op, "weights", None):
            heads.add(op.name)
        else:
            stack.extend(node.input_tensors)
    return heads


def make_twin(op, plan: Plan, widen: bool, strip_sigmoid: bool):
    """The M-nested twin of a nestable layer ``op`` (same name and dtype)."""
    n, share = plan.num_levels, plan.share_weights
    common = {"name": op.name, "dtype": op.dtype_policy}
    kind = type(op)
    if kind is keras.layers.Dense:
        config = op.get_config()
        factors = plan.width_factors if widen else (1.0,) * n
        activation = None if strip_sigmoid else config["activation"]
        return MNestedDense(
            units=tuple(scaled(op.units, f) for f in factors), activation=activation,
            use_bias=op.use_bias, share_weights=share,
            **{key: config.get(key) for key in (
                "kernel_initializer", "bias_initializer", "kernel_regularizer",
                "bias_regularizer", "activity_regularizer", "kernel_constraint",
                "bias_constraint")},
            **common,
        )
    if kind is keras.layers.Embedding:
        config = op.get_config()
        factors = plan.d_model_factors if widen else (1.0,) * n
        return MNestedEmbedding(
            op.input_dim, output_dim=tuple(scaled(op.output_dim, f) for f in factors),
            mask_zero=op.mask_zero, share_weights=share,
            **{key: config[key] for key in (
                "embeddings_initializer", "embeddings_regularizer", "embeddings_constraint")},
            **common,
        )
    if is_feature_cross(op):
        config = op.get_config()
        factors = plan.width_factors if widen else (1.0,) * n
        dim = config["projection_dim"]
        return MNestedCross(
            [None if dim is None else scaled(dim, f) for f in factors],
            share_weights=share,
            **{key: config[key] for key in (
                "diag_scale", "use_bias", "pre_activation", "kernel_initializer",
                "bias_initializer", "kernel_regularizer", "bias_regularizer")},
            **common,
        )
    if kind in (keras.layers.LayerNormalization, keras.layers.BatchNormalization):
        config = op.get_config()
        keys = ["epsilon", "center", "scale", "beta_initializer", "gamma_initializer",
                "beta_regularizer", "gamma_regularizer"]
        if kind is keras.layers.BatchNormalization:
            keys += ["momentum", "moving_mean_initializer", "moving_variance_initializer"]
            twin = MNestedBatchNormalization
        else:
            twin = MNestedLayerNormalization
        return twin(n, share_weights=share, **{key: config[key] for key in keys}, **common)
    config = op.get_config()
    factors = plan.width_factors if widen else (1.0,) * n
    config.update(share_weights=share, name=op.name)
    if kind is MNestedCross:
        dim = op.projection_dim[0]
        config["projection_dim"] = [None if dim is None else scaled(dim, f) for f in factors]
    else:
        config["units"] = [scaled(op.units[0], f) for f in factors]
        config["shared_dim"] = [scaled(op.shared_dim[0], f) for f in factors]
    return kind.from_config(config)


def _per_level_arg(value):
    """A twin's input: one tensor when every level reads the same one."""
    if isinstance(value, PerLevel):
        return value.values[0] if value.shared else value.values
    return value


def _call_twin(twin, op, args, kwargs):
    if isinstance(twin, MNestedCross):
        x0 = _per_level_arg(args[0])
        x = args[1] if len(args) > 1 else kwargs.get("x")
        # Twin of an MNestedCross or of a keras_rs FeatureCross (same call).
        return twin(x0) if x is None else twin(x0, _per_level_arg(x))
    return twin(_per_level_arg(args[0]))


def _call_per_level(op, args, kwargs, plan: Plan, graph_name: str):
    """Run a shared layer once per level (once when all levels agree)."""
    leaves = [leaf for leaf in tree.flatten((args, kwargs)) if isinstance(leaf, PerLevel)]
    if all(leaf.shared for leaf in leaves):
        levels = [0]
    else:
        levels = range(plan.num_levels)
    outputs = []
    for level in levels:
        pick = lambda v: v.pick(level) if isinstance(v, PerLevel) else v  # noqa: E731
        try:
            outputs.append(op(*tree.map_structure(pick, args), **tree.map_structure(pick, kwargs)))
        except Exception as exc:  # the layer cannot take the widened inputs
            raise ConfigError(
                f"layer '{op.name}' ({type(op).__name__}) of '{graph_name}' cannot be "
                f"nested: at level '{plan.levels[level]}' it fails on the widened inputs "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
                "Widen only the layers before it that it can follow, e.g. "
                "nestify(model, layers=[...]) without the layers that feed it"
            ) from exc
    if len(outputs) == 1:
        outputs = outputs * plan.num_levels
    return outputs


def trace_nested(template, plan: Plan):
    """Build the nested graph of ``template``.

    Returns:
        ``(inputs, logits, twins, extras, sigmoid)``: the template's input
        structure, one symbolic logit ``[B]`` per level, ``{layer name:
        twin}``, the TA-only extra layers and :func:`final_sigmoid`'s answer.
    """
    graph = graph_of(template)
    sigmoid = final_sigmoid(graph)
    heads = head_layers(graph)
    names = [op.name for op in graph.operations]
    if plan.layers is not None:
        unknown = sorted(set(plan.layers) - set(names))
        if unknown:
            raise ConfigError(f"nestify(layers=...): no layers {unknown} in '{graph.name}'; "
                              f"its layers are {names}")
    last_hidden = [op.name for op in graph.operations
                   if type(op) is keras.layers.Dense and op.name not in heads]
    if plan.extra_level is not None and not last_hidden:
        raise ConfigError(f"extra_layers={plan.extra_layers} go after the last hidden Dense "
                          f"layer, and '{graph.name}' has none: use extra_layers=0")
    values = {id(t): PerLevel((t,) * plan.num_levels) for t in graph.inputs}
    twins, extras = {}, []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            op = node.operation
            if op is None or node.is_input:
                continue
            lookup = lambda t: values[id(t)] if isinstance(t, keras.KerasTensor) else t  # noqa
            args = tree.map_structure(lookup, node.arguments.args)
            kwargs = tree.map_structure(lookup, node.arguments.kwargs)
            if sigmoid == ("activation", op.name):
                outputs = [args[0].values]
            elif nestable(op):
                widen = op.name not in heads and (plan.layers is None or op.name in plan.layers)
                twin = make_twin(op, plan, widen, sigmoid == ("dense", op.name))
                twins[op.name] = twin
                outputs = [_call_twin(twin, op, args, kwargs)]
            else:
                leaves = [x for x in tree.flatten((args, kwargs)) if isinstance(x, PerLevel)]
                if op.weights and not all(x.shared for x in leaves):
                    raise ConfigError(
                        f"layer '{op.name}' ({type(op).__name__}) of '{graph.name}' has "
                        "weights and reads a widened input, and nestify has no M-nested "
                        "twin for it (it nests Dense, Embedding, LayerNormalization, "
                        "BatchNormalization, keras_rs FeatureCross, MNestedCross, "
                        "MNestedGAU): keep its inputs at "
                        "their width with nestify(model, layers=[...]) listing only the "
                        "layers to widen"
                    )
                per_level = _call_per_level(op, args, kwargs, plan, graph.name)
                outputs = [tuple(tree.flatten(o)) for o in per_level]
                outputs = list(zip(*outputs)) if len(node.outputs) > 1 else [
                    tuple(o[0] for o in outputs)]
            for tensor, value in zip(node.outputs, outputs):
                values[id(tensor)] = PerLevel(value)
            if plan.extra_level is not None and op.name == last_hidden[-1]:
                extras = _add_extras(values, node, op, plan)
    logits = _logits(values[id(graph.outputs[0])], graph, plan)
    return template_input(template), logits, twins, extras, sigmoid


def _add_extras(values, node, op, plan: Plan) -> list:
    """Insert the TA-only residual blocks after the last hidden Dense."""
    value = values[id(node.outputs[0])]
    level = plan.extra_level
    x = value.values[level]
    blocks = []
    activation = keras.activations.serialize(op.activation) if op.activation else "relu"
    for k in range(plan.extra_layers):
        block = ResidualDenseBlock(units=x.shape[-1], activation=activation,
                                   name=f"{op.name}_ta_extra_{k}", dtype=op.dtype_policy)
        x = block(x)
        blocks.append(block)
    values[id(node.outputs[0])] = PerLevel(
        tuple(x if i == level else v for i, v in enumerate(value.values)))
    return blocks


def _logits(value: PerLevel, graph, plan: Plan) -> tuple:
    reference = tuple(graph.outputs[0].shape[1:])
    out = []
    for level, tensor in enumerate(value.values):
        if tuple(tensor.shape[1:]) != reference:
            raise ConfigError(
                f"the output of '{graph.name}' at level '{plan.levels[level]}' has shape "
                f"{tuple(tensor.shape)}, not the original's {tuple(graph.outputs[0].shape)}: "
                "its last layers must not be widened (list the layers to widen with "
                "nestify(model, layers=[...]))"
            )
        out.append(keras.ops.reshape(tensor, (-1,)))
    return tuple(out)


def template_input(template):
    """The input structure of a model (a Sequential's single input tensor)."""
    if isinstance(template, keras.Sequential):
        return template.inputs[0]
    return template.input


def level_variables(twin, level: int) -> list:
    """The variables level ``level`` of ``twin`` uses, in the plain layer's order.

    Shared variables carry no suffix; a level's own (statistics, or all of
    them without sharing) end in ``_level<k>`` and replace the TA's of the
    same name.  Every variable is returned whole: the level uses its prefix.
    """
    last = twin.num_levels - 1
    base, own = [], {}
    for variable in twin.weights:
        match = _SUFFIX.search(variable.name)
        if match is None:
            base.append(variable)
        elif int(match.group(1)) == level:
            own[_SUFFIX.sub("", variable.path)] = variable
    if level == last:
        return base
    return [own.get(v.path, v) for v in base]
