"""The settings tfsparse recommends for each method.

`sparsify` fills in every setting the caller leaves out from here, and
`recipes` builds on the same table, so the shortest path (`sparsify` +
`SparsityScheduler()` + `fit`) trains what the library recommends. The gate
classes keep the papers' own defaults for people who build gates by hand.
"""

# Measured on mnist-10k (10,000 training images, 79 steps per epoch): gates
# learn 10× faster than weights so that they settle within a hundred epochs
# (the papers had 469 steps per epoch on full MNIST).
RECOMMENDED = {
    "hard_concrete": {"lam": 0.05, "init_drop_rate": 0.2, "lr_multiplier": 10.0},
    "npn": {"lam": 0.05, "lr_multiplier": 10.0},
    # BB's E[π] must fall under 1e-3 to prune: measured on LeNet-500-300, 10×
    # kept 394-380-261 after 60 epochs, 50× 183-117-67 after 100.
    "bb": {"lr_multiplier": 50.0},
    "dbb": {},
    "targeted_dropout": {"alpha": 0.5, "gamma": 0.5},
}


def with_recommended(method, settings, leave_out=None):
    """`settings` over the recommended ones of `method`; `leave_out` names a
    recommended setting not to fill in (the one a budget sets)."""
    recommended = {name: value for name, value in RECOMMENDED[method].items()
                   if name != leave_out}
    return {**recommended, **settings}
