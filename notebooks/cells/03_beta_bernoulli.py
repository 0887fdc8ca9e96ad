# %% [markdown]
# # Beta-Bernoulli dropout: a posterior per unit, then a mask per example
#
# Beta-Bernoulli (BB) dropout gives every unit a keep-probability π with a sparse
# Beta(α, 1) prior and learns its posterior; units whose expected π falls below a
# threshold (10⁻³) are pruned. Dependent BB (DBB) then keeps the BB posteriors frozen
# and learns, on top, a per-example factor computed from the unit's own activation, so
# that each input switches off a different subset of the surviving units.
#
# This page follows the paper's recipe on LeNet-500-300: pretrain the dense network
# briefly, `sparsify` it with BB gates and train, look at E[π] of every unit before and
# after training, then `tfsparse.sparsify(bb_model, "dbb")` and train again. It compares
# BB and DBB (accuracy, units), shows how many units DBB keeps per example, and which
# input pixels the input gate keeps.
#
# Data: the committed outputs come from a full run on `mnist-10k.npz` (the first 10,000
# MNIST training images, 10 % held out for validation; the official test set): 10 dense
# epochs, 100 BB epochs (gates at 50× the weights' learning rate) and 30 DBB epochs, as in the benchmarks (about two minutes on a
# 2-core CPU). With `TFSPARSE_FAST=1` (the tests) it trains for a few epochs on
# scikit-learn's 8×8 digits instead.

# %%
import os

import keras
import matplotlib.pyplot as plt
import numpy as np

import tfsparse
from tfsparse import data, models, recipes
from tfsparse.gates import gates_of

FAST = os.environ.get("TFSPARSE_FAST") == "1"
DATASET = "digits" if FAST else os.path.join("..", "..", "shared", "data", "mnist-10k.npz")
PRETRAIN_EPOCHS = 2 if FAST else 10
EPOCHS = 3 if FAST else 100
DBB_EPOCHS = 2 if FAST else 30
keras.utils.set_random_seed(0)
splits = data.load(DATASET, validation_split=0.1)
N = len(splits.train[0])
x_test, y_test = splits.test
splits


# %%
def compile_model(model):
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def accuracy(model):
    return model.evaluate(x_test, y_test, verbose=0)[1]


# %% [markdown]
# ## 1. Pretrain the dense network, then sparsify with BB gates

# %%
dense = compile_model(models.lenet_500_300(splits.input_shape, splits.num_classes))
dense.fit(*splits.train, epochs=PRETRAIN_EPOCHS, batch_size=128, verbose=0)
dense_accuracy = accuracy(dense)
print(f"dense test accuracy after {PRETRAIN_EPOCHS} epochs: {dense_accuracy:.4f}")

# BB's gates need many steps to push E[π] under 1e-3: they learn 50× as fast as the weights.
plan = recipes.recipe("bb", EPOCHS, lr_multiplier=50.0)
bb = compile_model(tfsparse.sparsify(dense, "bb", dataset_size=N, seed=0, **plan.settings))
bb_gates = gates_of(bb)
pi_before = {g.name: np.asarray(g.expected_pi()) for g in bb_gates}
history = bb.fit(*splits.train, validation_data=splits.val, epochs=EPOCHS, batch_size=128,
                 callbacks=[plan.scheduler], verbose=0)
pi_after = {g.name: np.asarray(g.expected_pi()) for g in bb_gates}
bb_accuracy = accuracy(bb)
print(f"BB test accuracy after {EPOCHS} epochs: {bb_accuracy:.4f}")

# %% [markdown]
# ## 2. E[π] per unit, before and after training
#
# Every unit starts at the same E[π] ≈ 0.24 (the authors' LeNet initialisation); the KL
# to the sparse prior then drives the units the data does not need towards 0. Each
# curve is one gate's E[π] sorted from the largest; the dotted line is the pruning
# threshold. The right panel is the number of units above it, epoch by epoch, from the
# `active/<gate>` entries the `SparsityScheduler` writes into the history.

# %%
fig, axes = plt.subplots(1, len(bb_gates) + 1, figsize=(13, 3.2))
for ax, gate in zip(axes, bb_gates):
    threshold = gate.threshold
    ax.plot(np.sort(pi_before[gate.name])[::-1], label="before training")
    ax.plot(np.sort(pi_after[gate.name])[::-1], label="after training")
    ax.axhline(threshold, color="grey", ls=":", lw=1, label="threshold")
    ax.set_yscale("log")
    ax.set_title(f"{gate.name}: {int(np.sum(pi_after[gate.name] > threshold))}"
                 f"/{gate.mask_shape[0]} kept", fontsize=10)
    ax.set_xlabel("unit (sorted)")
axes[0].set_ylabel("E[π]")
axes[0].legend(fontsize=8)
for key, values in history.history.items():
    if key.startswith("active/"):
        axes[-1].plot(np.arange(1, len(values) + 1), values, label=key[len("active/"):])
axes[-1].set_xlabel("BB epoch")
axes[-1].set_ylabel("units kept")
axes[-1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. DBB: a mask per example on top of the frozen BB posterior
#
# `sparsify` on a model that holds BB gates replaces each one by a DBB gate that starts
# from its posterior (a, b copied and frozen) and inherits its settings
# (`lr_multiplier` included). Only the per-example part (γ, β, σ) trains.

# %%
dbb_plan = recipes.recipe("dbb", DBB_EPOCHS)
dbb = compile_model(tfsparse.sparsify(bb, "dbb", dataset_size=N, seed=1, **dbb_plan.settings))
dbb_gates = gates_of(dbb)
dbb.fit(*splits.train, validation_data=splits.val, epochs=DBB_EPOCHS, batch_size=128,
        callbacks=[dbb_plan.scheduler], verbose=0)
dbb_accuracy = accuracy(dbb)
print(f"DBB test accuracy after {DBB_EPOCHS} more epochs: {dbb_accuracy:.4f}")

bb_figures = tfsparse.summary(bb, print_fn=None)
dbb_figures = tfsparse.summary(dbb, x=x_test)

# %% [markdown]
# ## 4. Units active per example
#
# A `keras.Model` on the gates' input tensors gives, for every test image, what each DBB
# gate sees; the gate's `inference_mask` on it is that image's mask. The dashed line is
# the number of units the static BB part keeps (the most any example can use).

# %%
probe = keras.Model(dbb.inputs, [gate.input for gate in dbb_gates])
gate_inputs = probe.predict(x_test, verbose=0, batch_size=512)
per_example_masks = {gate.name: keras.ops.convert_to_numpy(gate.inference_mask(value))
                     for gate, value in zip(dbb_gates, gate_inputs)}
active = {name: (mask > 0).sum(axis=-1) for name, mask in per_example_masks.items()}

fig, axes = plt.subplots(1, len(dbb_gates), figsize=(12, 3))
for ax, gate in zip(axes, dbb_gates):
    counts = active[gate.name]
    static = int(np.sum(np.asarray(gate.active())))
    ax.hist(counts, bins=30)
    ax.axvline(static, color="k", ls="--", lw=1, label=f"BB keeps {static}")
    ax.set_title(f"{gate.name}: mean {counts.mean():.1f}", fontsize=10)
    ax.set_xlabel("active units per example")
    ax.legend(fontsize=8)
axes[0].set_ylabel("test images")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Which input pixels survive
#
# The first gate sits on the flattened image, so its mask reshaped to the image size
# is a picture of the pixels the network still reads. Left: BB's E[π] on the kept
# pixels (0 on the pruned ones). Middle: the fraction of test images for which DBB keeps
# each pixel. Right: one test image multiplied by its own DBB mask.

# %%
height, width = splits.input_shape[:2]
input_bb, input_dbb = bb_gates[0], dbb_gates[0]
bb_pixels = np.asarray(input_bb.mask()).reshape(height, width)
dbb_masks = per_example_masks[input_dbb.name]
dbb_pixels = (dbb_masks > 0).mean(axis=0).reshape(height, width)
example = x_test[0].reshape(height, width)

fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
panels = [(bb_pixels, f"BB: E[π] of kept pixels ({int(np.sum(bb_pixels > 0))})", None),
          (dbb_pixels, "DBB: fraction of images keeping it", 1.0),
          (example * dbb_masks[0].reshape(height, width),
           f"test image 0 (label {y_test[0]}) × its DBB mask", None)]
for ax, (image, title, vmax) in zip(axes, panels):
    shown = ax.imshow(image, cmap="viridis", vmin=0.0, vmax=vmax)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.colorbar(shown, ax=ax, fraction=0.046)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What we learned

# %%
dbb_active = [float(active[g.name].mean()) for g in dbb_gates]
print(f"test accuracy: dense (pretrained) {dense_accuracy:.4f}, BB {bb_accuracy:.4f}, "
      f"DBB {dbb_accuracy:.4f}")
print(f"units kept by BB: {'-'.join(map(str, bb_figures['units_total']))} -> "
      f"{'-'.join(map(str, bb_figures['units_kept']))}, weights kept "
      f"{100 * bb_figures['total']['weights_fraction']:.1f} %")
print(f"DBB keeps the same units statically ({'-'.join(map(str, dbb_figures['units_kept']))}) "
      f"and uses on average {' - '.join(f'{a:.1f}' for a in dbb_active)} per example")
for gate in bb_gates:
    print(f"  {gate.name}: E[π] median {np.median(pi_before[gate.name]):.3f} -> "
          f"{np.median(pi_after[gate.name]):.3g}")
print(f"input pixels kept: {int(np.sum(bb_pixels > 0))} of {height * width} "
      f"(BB); DBB reads on average {dbb_active[0]:.1f} per image")
