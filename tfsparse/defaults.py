"""The settings tfsparse recommends for each method.

`sparsify` fills in every setting the caller leaves out from the method's
gate class (`Gate.recommended`, with the measurements behind each value), and
`recipes` builds on the same settings, so the shortest path (`sparsify` +
`SparsityScheduler()` + `fit`) trains what the library recommends. The gate
classes' constructor defaults stay the papers' own, for people who build gates
by hand.
"""

import collections.abc

from tfsparse.gates import registry


class _Recommended(collections.abc.Mapping):
    """Method name → its recommended settings, read from the registered gate
    classes (a family registered later is listed too)."""

    def __getitem__(self, method):
        return dict(registry.family(method).recommended)

    def __iter__(self):
        return iter(registry.methods())

    def __len__(self):
        return len(registry.methods())

    def __repr__(self):
        return repr(dict(self))


RECOMMENDED = _Recommended()


def with_recommended(method, settings, leave_out=None):
    """`settings` over the recommended ones of `method`; `leave_out` names a
    recommended setting not to fill in (the one a budget sets)."""
    recommended = {name: value for name, value in RECOMMENDED[method].items() if name != leave_out}
    return {**recommended, **settings}
