"""Method names → gate families.

A sparsity method in tfsparse is one gate class: the class declares what the
rest of the library asks of a method (its name, the levels it gates at, its
recommended settings, how each gate is configured, what it continues from;
see `Gate`'s "the method" attributes), and one `register` call makes
`tfsparse.sparsify(model, name)` place it. Nothing outside `tfsparse.gates`
branches on a method's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tfsparse import _checks

if TYPE_CHECKING:  # base imports the registry at run time.
    from tfsparse.gates.base import Gate

_FAMILIES = {}


def register(family: type[Gate]) -> type[Gate]:
    """Registers a `Gate` subclass under its `method` name (a class
    decorator). Registering another class under a taken name is an error."""
    from tfsparse.gates.base import Gate

    if not (isinstance(family, type) and issubclass(family, Gate)):
        raise TypeError(f"Only Gate subclasses can be registered; got {family!r}.")
    name = family.method
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"{family.__name__} needs a `method` name (a non-empty string) to be registered."
        )
    if _FAMILIES.get(name, family) is not family:
        raise ValueError(f"method={name!r} is already registered to {_FAMILIES[name].__name__}.")
    _FAMILIES[name] = family
    return family


def unregister(method: str) -> type:
    """Removes a registered method (a test's or a plugin's); returns its class."""
    return _FAMILIES.pop(_checks.choice("method", method, methods()))


def methods() -> tuple[str, ...]:
    """The registered method names, in registration order."""
    return tuple(_FAMILIES)


def family(method: str) -> type[Gate]:
    """The gate class of a method name (errors list the registered ones)."""
    return _FAMILIES[_checks.choice("method", method, methods())]


def successor(method: str) -> str | None:
    """The method whose family continues `method`'s (`Gate.continues`: "dbb"
    for "bb"), or None."""
    previous = family(method)
    found = [f.method for f in _FAMILIES.values() if f.continues is previous]
    return found[0] if found else None


def method_of(gates):
    """The method name whose gates `gates` are. A family that continues
    another (`Gate.continues`: DBB from BB) absorbs it: a model that went
    BB → DBB keeps BB gates where DBB's per-example factor would read several
    inputs, and is a "dbb" model."""
    found = [f for f in _FAMILIES.values() if any(type(gate) is f for gate in gates)]
    if not found:
        raise ValueError(
            "The model has no tfsparse gate: sparsify it first "
            "(`tfsparse.sparsify(model, method, ...)`)."
        )
    leading = [f for f in found if not any(other.continues is f for other in found)]
    if len(leading) > 1:
        raise ValueError(
            f"The model mixes the gates of several methods "
            f"({[f.method for f in leading]}): give SparsityScheduler its plan "
            "explicitly."
        )
    return leading[0].method
