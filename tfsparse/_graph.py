"""Reading the layer graph of Sequential and Functional Keras models."""

import keras


def functional_of(model):
    """The Functional graph behind `model` (a built Sequential has one)."""
    if isinstance(model, keras.Sequential):
        if getattr(model, "_functional", None) is None:
            raise ValueError(f"Sequential model {model.name!r} is not built: give it an "
                             "`keras.Input` (or call it once) before sparsifying.")
        return model._functional
    if hasattr(model, "_nodes_by_depth") and hasattr(model, "_run_through_graph"):
        return model
    raise TypeError(f"{type(model).__name__} {getattr(model, 'name', '')!r} is a subclassed "
                    "model: only Sequential and Functional models can be rewritten. Put "
                    "tfsparse gates into its layers yourself (tfsparse.gates).")


def nodes_in_order(graph):
    """The graph's call nodes in topological order (inputs first)."""
    ordered = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        ordered.extend(n for n in graph._nodes_by_depth[depth]
                       if n.operation is not None and not n.is_input)
    return ordered


def consumers(graph):
    """Dict id(operation) → list of operations that take its output."""
    result = {}
    for node in nodes_in_order(graph):
        for tensor in node.input_tensors:
            producer = tensor._keras_history.operation
            result.setdefault(id(producer), []).append(node.operation)
    return result


def producer_of(node):
    """The single operation whose output `node` consumes (None for several)."""
    ops = {id(t._keras_history.operation): t._keras_history.operation
           for t in node.input_tensors}
    return next(iter(ops.values())) if len(ops) == 1 else None
