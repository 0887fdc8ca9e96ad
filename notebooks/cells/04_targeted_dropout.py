# %% [markdown]
# # Targeted dropout: train a network that survives magnitude pruning
#
# Magnitude pruning after training removes the smallest weights and hopes the network
# did not need them. Targeted dropout (Gomez et al., 2019) makes that true during
# training: at every step, the γ fraction of each kernel column with the smallest |w|
# are candidates, and each candidate is dropped with probability α. The network learns
# not to rely on its small weights, so removing them afterwards costs little.
#
# This page trains LeNet-300-100 under four regimes and prunes each one post hoc (no
# fine-tuning) at 0, 50, 75, 90, 95 and 99 % of the weights of every hidden-layer
# column (`tfsparse.prune_by_magnitude`; the classifier is never pruned):
#
# - **none**: no dropout;
# - **dropout**: standard dropout 0.5 after each hidden layer (plain Keras `Dropout`);
# - **targeted**: targeted dropout α = γ = 0.5 (`sparsify(..., "targeted_dropout")`);
# - **ramping**: α and γ ramped from 0 to 0.99 over training
#   (`recipe(..., ramp=True)`: γ reaches 0.95·0.99 halfway, α rises linearly).
#
# Then it looks at the magnitudes of the first hidden layer's weights, which explain
# the curves.
#
# Data: the committed outputs come from a full run on `mnist-10k.npz` (the first 10,000
# MNIST training images, 10 % held out; the official test set), 20 epochs per regime
# (a few minutes on a 2-core CPU). With `TFSPARSE_FAST=1` (the tests) it trains for a
# few epochs on scikit-learn's 8×8 digits instead.

# %%
import math
import os

import keras
import matplotlib.pyplot as plt
import numpy as np

import tfsparse
from tfsparse import data, models, recipes

FAST = os.environ.get("TFSPARSE_FAST") == "1"
DATASET = "digits" if FAST else os.path.join("..", "..", "shared", "data", "mnist-10k.npz")
EPOCHS = 3 if FAST else 20
BATCH = 128
RATES = [0.0, 0.5, 0.75, 0.9, 0.95, 0.99]
keras.utils.set_random_seed(0)
splits = data.load(DATASET, validation_split=0.1)
STEPS_PER_EPOCH = math.ceil(len(splits.train[0]) / BATCH)
splits

# %% [markdown]
# ## 1. Four ways to train the same network

# %%
def build(regime):
    """(model, callbacks) for one regime; the weights start from the same seed."""
    keras.utils.set_random_seed(0)
    if regime == "dropout":
        def after_hidden(name):  # called with "input", "fc1", "fc2"
            if name.startswith("fc"):
                return keras.layers.Dropout(0.5, name=f"{name}_dropout")
            return None
        return models.lenet_300_100(splits.input_shape, splits.num_classes,
                                    gate_factory=after_hidden), []
    dense = models.lenet_300_100(splits.input_shape, splits.num_classes)
    if regime == "none":
        return dense, []
    if regime == "targeted":
        plan = recipes.recipe("targeted_dropout", EPOCHS, alpha=0.5, gamma=0.5)
    else:
        plan = recipes.recipe("targeted_dropout", EPOCHS, steps_per_epoch=STEPS_PER_EPOCH,
                              ramp=True, alpha=0.99, gamma=0.99)
    sparse = tfsparse.sparsify(dense, "targeted_dropout", seed=0, **plan.settings)
    return sparse, [plan.scheduler]


def prune_curve(model):
    """Test accuracy after pruning each rate of every hidden column, from the same
    trained weights (restored before each rate: pruning works in place), and the
    pruned `fc1` kernel at each rate."""
    trained = model.get_weights()
    curve, kernels = [], []
    for rate in RATES:
        model.set_weights(trained)
        tfsparse.prune_by_magnitude(model, rate)
        curve.append(model.evaluate(*splits.test, batch_size=1024, verbose=0)[1])
        kernels.append(np.asarray(model.get_layer("fc1").kernel))
    model.set_weights(trained)
    return curve, kernels


results = {}
for regime in ("none", "dropout", "targeted", "ramping"):
    model, callbacks = build(regime)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(*splits.train, epochs=EPOCHS, batch_size=BATCH,
                        callbacks=callbacks, verbose=0)
    curve, fc1_pruned = prune_curve(model)
    results[regime] = dict(model=model, history=history.history, curve=curve,
                           fc1=fc1_pruned[0], fc1_pruned=fc1_pruned)
    print(f"{regime:>8s}: " + "  ".join(f"{100 * r:g}% → {a:.4f}"
                                        for r, a in zip(RATES, results[regime]["curve"])))

# %% [markdown]
# The ramp is visible in the history: the `SparsityScheduler` logs the α and γ it
# assigned, at the end of every epoch.

# %%
ramp = results["ramping"]["history"]
print("ramping γ per epoch:", " ".join(f"{g:.2f}" for g in ramp["gamma"]))
print("ramping α per epoch:", " ".join(f"{a:.2f}" for a in ramp["alpha"]))

# %% [markdown]
# ## 2. Accuracy against pruning rate

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
positions = np.arange(len(RATES))
for regime, result in results.items():
    ax.plot(positions, 100 * np.asarray(result["curve"]), marker="o", label=regime)
ax.set_xticks(positions, [f"{100 * r:g} %" for r in RATES])
ax.set_xlabel("weights pruned in every hidden-layer column")
ax.set_ylabel("test accuracy (%)")
ax.set_title("LeNet-300-100, magnitude pruning without fine-tuning")
ax.grid(alpha=0.3)
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# A ramped network is trained with nearly all of its small weights dropped, so its
# unpruned accuracy can even be below its pruned one: the weights it never learned to
# use add noise when they are all put back.

# %% [markdown]
# ## 3. Why: the magnitudes of the weights
#
# Histograms of log₁₀|w| of the first hidden layer (`fc1`, 784×300 on MNIST). Pruning
# a column at rate r removes its ⌊r·rows⌋ smallest weights; what that costs depends on
# how much of the layer's signal those weights carry. Targeted dropout drops exactly
# these weights during training, so the network has a reason to leave them small and
# unused; the ramp moves the targeted fraction up to 99 %.
#
# The two tables measure that directly from the kernels `prune_by_magnitude` left in
# `fc1` at each rate: the share of the layer's L1 norm removed, and how much the
# layer's output x·W on the test images changes, ‖x·(W_pruned − W)‖ / ‖x·W‖ (an input
# pixel that is always 0, like MNIST's border, costs nothing to cut).

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
logs = {regime: np.log10(np.abs(result["fc1"]).ravel() + 1e-12)
        for regime, result in results.items()}
low = min(np.percentile(v, 0.5) for v in logs.values())
high = max(v.max() for v in logs.values())
bins = np.linspace(low, high, 80)
for regime in ("none", "targeted", "ramping"):
    ax.hist(logs[regime], bins=bins, histtype="step", lw=1.5, label=regime)
ax.set_xlabel("log₁₀ |w| (fc1)")
ax.set_ylabel("weights")
ax.legend()
plt.tight_layout()
plt.show()

x = splits.test[0].reshape(len(splits.test[0]), -1)
removed_l1, output_change = {}, {}
for regime, result in results.items():
    kernel = result["fc1"]
    removed_l1[regime] = [1 - np.abs(k).sum() / np.abs(kernel).sum()
                          for k in result["fc1_pruned"]]
    output_change[regime] = [np.linalg.norm(x @ (k - kernel)) / np.linalg.norm(x @ kernel)
                             for k in result["fc1_pruned"]]

for title, table in (("share of fc1's L1 norm removed", removed_l1),
                     ("relative change of fc1's output x·W", output_change)):
    print(f"{title}:\n{'':>8s} " + " ".join(f"{f'{100 * r:g} %':>7s}" for r in RATES[1:]))
    for regime, values in table.items():
        print(f"{regime:>8s} " + " ".join(f"{100 * v:6.1f}%" for v in values[1:]))

# %% [markdown]
# ## What we learned

# %%
i90 = RATES.index(0.9)
for regime, result in results.items():
    curve = result["curve"]
    print(f"{regime:>8s}: unpruned {curve[0]:.4f}, 90 % pruned {curve[i90]:.4f}, "
          f"99 % pruned {curve[-1]:.4f}; 90 % pruning changes fc1's output by "
          f"{100 * output_change[regime][i90]:.1f} %")
best = {rate: max(results, key=lambda regime: results[regime]["curve"][i])
        for i, rate in enumerate(RATES)}
print("most accurate regime per rate: "
      + ", ".join(f"{100 * rate:g} % → {regime}" for rate, regime in best.items()))
