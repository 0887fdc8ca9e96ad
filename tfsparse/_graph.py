"""Reading and replaying the layer graph of Sequential and Functional models.

Every use of Keras' private graph and layer-tree attributes sits in this
module, so that a Keras release that changes them is mended in one file;
`setup.cfg` bounds Keras to the minor releases it is tested on.
"""

import collections

import keras
from keras.src.backend.common import global_state

from tfsparse import composites


def all_layers(model):
    """Every layer inside `model`, nested ones and sublayers (a kernel
    gate inside a SparseDense) included, depth first; not `model` itself."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def is_graph_model(op):
    """Whether `op` is a Sequential or Functional model (a graph to inline)."""
    if isinstance(op, keras.Sequential):
        return getattr(op, "_functional", None) is not None
    return (
        isinstance(op, keras.Model)
        and hasattr(op, "_nodes_by_depth")
        and hasattr(op, "_run_through_graph")
    )


def functional_of(model):
    """The Functional graph behind `model` (a built Sequential has one)."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model (Sequential or Functional); got "
            f"{type(model).__name__}."
        )
    if isinstance(model, keras.Sequential):
        if getattr(model, "_functional", None) is None:
            raise ValueError(
                f"Sequential model {model.name!r} is not built: give it an "
                "`keras.Input` (or call it once) before sparsifying."
            )
        return model._functional
    if is_graph_model(model):
        return model
    raise TypeError(
        f"{type(model).__name__} {model.name!r} is a subclassed model: only "
        "Sequential and Functional models can be rewritten. Either build it "
        "as a Functional model (a `tfsparse.SparseModel(inputs, outputs)` "
        "keeps the gated train step), or put `tfsparse.gates` layers into "
        "its `call` by hand."
    )


def nodes_in_order(graph):
    """The graph's call nodes in topological order (inputs first)."""
    ordered = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        ordered.extend(
            n for n in graph._nodes_by_depth[depth] if n.operation is not None and not n.is_input
        )
    return ordered


def consumers(graph):
    """Dict id(tensor) → list of the nodes that read it."""
    result = collections.defaultdict(list)
    for node in nodes_in_order(graph):
        for tensor in node.input_tensors:
            result[id(tensor)].append(node)
    return result


def producer(tensor):
    """The operation that computes `tensor`."""
    return tensor._keras_history.operation


def producer_node(tensor):
    """The call node that computes `tensor` (None for a model input)."""
    operation, node_index, _ = tensor._keras_history
    nodes = operation._inbound_nodes
    node = nodes[node_index] if node_index < len(nodes) else None
    return None if node is None or node.is_input else node


def node_kwarg(node, name, default=None):
    """A keyword argument of a call node (e.g. a gate's `offset`)."""
    return node.arguments.kwargs.get(name, default)


def call_like(node, operation, tensor_map):
    """Calls `operation` with `node`'s arguments, its tensors replaced through
    `tensor_map` (id(old tensor) → new tensor)."""
    args, kwargs = node.arguments.fill_in(tensor_map)
    return operation(*args, **kwargs)


def rebuild_inputs(graph):
    """Fresh `keras.Input`s like the graph's (same names, shapes, dtypes)."""
    return [
        keras.Input(batch_shape=t.shape, dtype=t.dtype, name=producer(t).name)
        for t in graph.inputs
    ]


def make_model(graph, inputs, outputs, name, model_class=keras.Model):
    """A Functional model with `graph`'s input and output structure."""
    inputs_struct = (
        inputs[0]
        if len(inputs) == 1
        else keras.tree.pack_sequence_as(graph._inputs_struct, inputs)
    )
    outputs_struct = keras.tree.pack_sequence_as(graph._outputs_struct, outputs)
    return model_class(inputs=inputs_struct, outputs=outputs_struct, name=name)


# ---------------------------------------------------------------- flattening
def has_nested_models(graph):
    """Whether `graph` holds a nested model or a composite layer to replay."""
    return any(
        is_graph_model(node.operation) or composites.unroller(node.operation)
        for node in nodes_in_order(graph)
    )


def flattened(model):
    """`model` with every nested Sequential/Functional model inlined and every
    composite layer replayed as its parts (`tfsparse.composites`): a
    Functional model of copies of the layers (weights copied; `model` is not
    touched), or `model`'s own graph when there is nothing to flatten.

    Raises:
        TypeError: a nested model is subclassed (its graph is not known).
    """
    graph = functional_of(model)
    if not has_nested_models(graph):
        return graph
    copier = _Copier()
    inputs = rebuild_inputs(graph)
    outputs = _inline(graph, inputs, copier)
    flat = make_model(graph, inputs, outputs, model.name)
    copier.copy_weights()
    return flat


def _inline(graph, inputs, copier, prefix=""):
    tensor_map = {id(old): new for old, new in zip(graph.inputs, inputs)}
    for node in nodes_in_order(graph):
        op = node.operation
        if isinstance(op, keras.Model) and not is_graph_model(op):
            functional_of(op)  # raises the subclassed-model error
        unroll = composites.unroller(op)
        if is_graph_model(op):
            args, _ = node.arguments.fill_in(tensor_map)
            outputs = _inline(
                functional_of(op), keras.tree.flatten(args[0]), copier, prefix=f"{op.name}_"
            )
        elif unroll is not None:
            _refuse_masked(node)
            args, kwargs = node.arguments.fill_in(tensor_map)
            outputs = unroll(op, args, kwargs, lambda layer, name: copier(layer, "", name))
        else:
            outputs = call_like(node, copier(op, prefix), tensor_map)
        for old, new in zip(node.outputs, keras.tree.flatten(outputs)):
            tensor_map[id(old)] = new
    return [tensor_map[id(t)] for t in graph.outputs]


def _refuse_masked(node):
    """A composite layer reads a Keras mask in its own way, which its parts
    would not replay: refused where a masking layer feeds it directly."""
    for tensor in node.input_tensors:
        source = producer(tensor)
        if getattr(source, "mask_zero", False) or isinstance(source, keras.layers.Masking):
            raise ValueError(
                f"{node.operation.name!r} reads the Keras mask of {source.name!r}; tfsparse "
                "cannot replay a composite layer with a mask (use mask_zero=False)."
            )


class _Copier:
    """Copies layers once each (a shared layer stays shared), with unique
    names; stateless operations (`keras.ops` on Keras tensors) are reused."""

    def __init__(self):
        self.taken = set()
        self.copies = {}
        self.pending = []

    def __call__(self, op, prefix, name=None):
        if not isinstance(op, keras.layers.Layer):
            return op
        if id(op) not in self.copies:
            config = op.get_config()
            name = name or config.get("name", op.name)
            if prefix and name in self.taken:
                name = prefix + name
            base, i = name, 1
            while name in self.taken:
                name, i = f"{base}_{i}", i + 1
            self.taken.add(name)
            config["name"] = name
            self.copies[id(op)] = op.__class__.from_config(config)
            self.pending.append((self.copies[id(op)], op))
        return self.copies[id(op)]

    def copy_weights(self):
        for new, old in self.pending:
            new.set_weights(old.get_weights())


# ------------------------------------------------------ one forward pass
def forward_pass_cache():
    """A dict that lives for one outermost layer call (one forward pass of a
    model), or None outside a call. Gates called at several places of a graph
    keep their sampled mask here so that every place sees the same mask."""
    context = global_state.get_global_attribute("current_call_ctx")
    if context is None:
        return None
    cache = getattr(context, "tfsparse_masks", None)
    if cache is None:
        cache = {}
        context.tfsparse_masks = cache
    return cache
