"""Helpers shared by the reference-network builders."""

from keras import layers


def gate_for(gate_factory, name):
    """Returns the gate layer for `name`, or None."""
    if gate_factory is None:
        return None
    gate = gate_factory(name)
    if gate is not None and not isinstance(gate, layers.Layer):
        raise TypeError(
            f"gate_factory({name!r}) must return a keras.layers.Layer or None; "
            f"got {type(gate).__name__}."
        )
    return gate


def append_gate(stack, gate_factory, name):
    """Appends the gate for `name` to a Sequential layer list, if any."""
    gate = gate_for(gate_factory, name)
    if gate is not None:
        stack.append(gate)


def check_image_shape(input_shape, builder, min_size):
    if len(input_shape) != 3:
        raise ValueError(f"{builder} expects input_shape (H, W, C); got {tuple(input_shape)}.")
    if min(input_shape[:2]) < min_size:
        raise ValueError(
            f"{builder} needs images of at least {min_size}x{min_size}; got "
            f"input_shape {tuple(input_shape)}."
        )
