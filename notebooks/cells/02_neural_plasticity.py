# %% [markdown]
# # Neural plasticity networks: one knob k to prune, to grow and to freeze
#
# An NPN gate keeps each unit with probability π = σ(k·φ). The single number k sets how
# plastic the network is: k = 0 is dropout at rate 0.5 (φ learns nothing), a moderate k
# (7 here) lets φ learn which units matter, and a huge k (5000, "∞") makes the gate a
# deterministic switch 1[φ > 0]. `tfsparse.recipes.recipe("npn", ...)` trains in the
# paper's three stages: k = ∞ (ordinary training), k = k_plastic (units are pruned, or
# woken in *expand* mode), k = ∞ again with the gates hardened (frozen).
#
# This page trains LeNet-300-100 both ways side by side (prune from 784-300-100; expand
# from 3 units per hidden layer), plots the active units of every gate over the epochs
# with the three stages marked, shows how hardening turns the probabilities π into 0/1
# switches, and samples one gate's masks at k = 0, 7 and ∞.
#
# Data: the committed outputs come from a full run on `mnist-10k.npz` (the first 10,000
# MNIST training images, 10 % held out for validation; the official test set), 100 epochs
# per model, a few minutes on a 2-core CPU. With `TFSPARSE_FAST=1` (the tests) it trains
# for a few epochs on scikit-learn's 8×8 digits instead.

# %%
import os

import keras
import matplotlib.pyplot as plt
import numpy as np

import tfsparse
from tfsparse import data, models, recipes
from tfsparse.gates import NPNGate, gates_of

FAST = os.environ.get("TFSPARSE_FAST") == "1"
DATASET = "digits" if FAST else os.path.join("..", "..", "shared", "data", "mnist-10k.npz")
EPOCHS = 6 if FAST else 100
keras.utils.set_random_seed(0)
splits = data.load(DATASET, validation_split=0.1)
N = len(splits.train[0])
splits

# %% [markdown]
# ## 1. Two recipes: prune and expand
#
# Both use gates that learn 10× faster than the weights (`lr_multiplier=10`, as in the
# benchmarks: 10,000 images give few steps per epoch). *Prune* starts with every unit
# open (π ≈ 0.95) and k_plastic = 7. *Expand* starts with 3 open units per hidden layer
# (the rest hibernate), the same λ and k_plastic (the paper's k = 1 left the input pixels
# unpruned in our runs); during the plastic stage every epoch whose
# validation loss improves wakes 5 more units per layer, as long as every woken unit is
# still open. The input pixels are never grown: that gate prunes in both.
#
# `train` below is an ordinary `fit`, split in two at the hardening epoch only so that we
# can look at π just before the gates are frozen. The `SparsityScheduler` assigns k from
# the epoch number, so the second `fit(initial_epoch=...)` continues the same schedule.

# %%
plans = {
    "prune": recipes.recipe("npn", EPOCHS, lam=0.05, lr_multiplier=10.0),
    "expand": recipes.recipe("npn", EPOCHS, mode="expand", init_size=3, lam=0.05,
                             k_plastic=7.0, expand_size=5, lr_multiplier=10.0),
}
for name, plan in plans.items():
    print(f"{name:6s} settings {plan.settings}, hardened from epoch {plan.scheduler.harden_at}")


def train(plan, seed=0):
    dense = models.lenet_300_100(splits.input_shape, splits.num_classes)
    model = tfsparse.sparsify(dense, "npn", dataset_size=N, seed=seed, **plan.settings)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    fit = dict(validation_data=splits.val, batch_size=128, callbacks=[plan.scheduler],
               verbose=0)
    harden_at = plan.scheduler.harden_at
    first = model.fit(*splits.train, epochs=harden_at, **fit)
    pi_plastic = {g.name: np.asarray(g.probability()) for g in gates_of(model)}
    second = model.fit(*splits.train, initial_epoch=harden_at, epochs=EPOCHS, **fit)
    history = {key: first.history[key] + second.history[key] for key in first.history}
    return model, history, pi_plastic


results = {}
for name, plan in plans.items():
    keras.utils.set_random_seed(0)
    model, history, pi_plastic = train(plan)
    accuracy = model.evaluate(*splits.test, verbose=0)[1]
    figures = tfsparse.summary(model, print_fn=None)
    results[name] = dict(model=model, history=history, pi_plastic=pi_plastic,
                         accuracy=accuracy, figures=figures)
    print(f"{name:6s} test accuracy {accuracy:.4f}, units {figures['units_total']} -> "
          f"{figures['units_kept']}, weights kept "
          f"{100 * figures['total']['weights_fraction']:.1f} %")

# %% [markdown]
# ## 2. Active units per gate, with the three stages
#
# The scheduler logs k and `active/<gate>` at the end of every epoch, so both come
# straight out of the `History`. Dashed lines mark the epochs where k changes.

# %%
def stage_boundaries(k):
    return [epoch for epoch in range(1, len(k)) if k[epoch] != k[epoch - 1]]


fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for ax, (name, result) in zip(axes, results.items()):
    history = result["history"]
    epochs = np.arange(1, len(history["k"]) + 1)
    for key, values in history.items():
        if key.startswith("active/"):
            ax.plot(epochs, values, label=key[len("active/"):])
    bounds = stage_boundaries(history["k"])
    starts = [0] + bounds
    ends = bounds + [len(epochs)]
    for start, end in zip(starts, ends):
        if start:
            ax.axvline(start + 0.5, color="grey", ls="--", lw=1)
        k = history["k"][start]
        label = "k = ∞" if k >= 1000 else f"k = {k:g}"
        if start and start == starts[-1] and k >= 1000:
            label += "\nhardened"
        ax.text((start + end) / 2 + 0.5, 0.03, label, ha="center", va="bottom", fontsize=8,
                transform=ax.get_xaxis_transform())
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_title(f"{name}: test accuracy {result['accuracy']:.4f}")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("active units")
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Hardening: from probabilities to switches
#
# At the end of the plastic stage π = σ(7·φ) is spread out: units the penalty pushes
# down sit anywhere between 0 and 1, and training samples them as coin flips. Once k
# returns to 5000 every π is 0 or 1, and hardening freezes that mask. Here the prune
# model's gates: π just before hardening against π at the end.

# %%
prune_model = results["prune"]["model"]
prune_gates = gates_of(prune_model)
bins = np.linspace(0, 1, 21)
fig, axes = plt.subplots(1, len(prune_gates), figsize=(11, 3))
for ax, gate in zip(axes, prune_gates):
    before = results["prune"]["pi_plastic"][gate.name]
    after = np.asarray(gate.probability())
    ax.hist(before, bins=bins, alpha=0.6, label="end of plastic stage (k = 7)")
    ax.hist(after, bins=bins, alpha=0.6, label="after hardening (k = ∞)")
    ax.set_yscale("log")
    ax.set_title(f"{gate.name} ({before.size} units)")
    ax.set_xlabel("π")
axes[0].set_ylabel("units")
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()


def undecided(pi):
    """Fraction of units whose gate is still a coin flip (0.05 < π < 0.95)."""
    pi = np.concatenate([np.ravel(p) for p in pi])
    return float(np.mean((pi > 0.05) & (pi < 0.95)))


undecided_before = undecided(results["prune"]["pi_plastic"].values())
undecided_after = undecided([g.probability() for g in prune_gates])
print(f"units with 0.05 < π < 0.95: {100 * undecided_before:.1f} % before hardening, "
      f"{100 * undecided_after:.1f} % after")

# %% [markdown]
# ## 4. What k does to one gate
#
# A fresh `NPNGate` takes the learned φ of the prune model's `fc1_gate`; for k = 0, 7
# and 5000 we draw 200 training masks (`sample_mask`: one Bernoulli(π) draw per unit
# and batch, as the ARM estimator does) and compare the gated layer's output in training
# (h·z) with its inference output (`inference_mask`: h·π on the units with π ≥ 0.5), on
# the `fc1` activations h of 256 test images.

# %%
trained_gate = prune_model.get_layer("fc1_gate")
gate = NPNGate(k_plastic=7.0, seed=0, name="demo_gate")
gate.build((None,) + tuple(trained_gate.mask_shape))
gate.phi.assign(trained_gate.phi)
probe = keras.Model(prune_model.inputs, prune_model.get_layer("fc1").output)
h = probe.predict(splits.test[0][:256], verbose=0)
order = np.argsort(-np.asarray(gate.phi))  # units from most to least wanted

K_VALUES = {"k = 0": 0.0, "k = 7": 7.0, "k = ∞ (5000)": 5000.0}
demo = {}
fig, axes = plt.subplots(1, 3, figsize=(11, 2.8), sharey=True)
for ax, (label, k) in zip(axes, K_VALUES.items()):
    gate.k.assign(k)
    masks = np.stack([np.asarray(gate.sample_mask(h)) for _ in range(200)])
    inference = np.asarray(gate.inference_mask(h))
    train_out = h[None] * masks[:, None, :]
    gap = np.linalg.norm(train_out - h * inference, axis=(1, 2)) / np.linalg.norm(h * inference)
    demo[label] = dict(mean=masks.mean(), variance=masks.var(axis=0).mean(),
                       open_at_inference=int(np.sum(inference > 0)), gap=gap.mean())
    ax.imshow(masks[:40, order], aspect="auto", cmap="Greys", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_title(label)
    ax.set_xlabel("unit (sorted by φ)")
axes[0].set_ylabel("draw")
plt.suptitle("40 sampled training masks of fc1_gate (black = open)", y=1.02)
plt.tight_layout()
plt.show()

print(f"{'':14s} {'mask mean':>10s} {'mask var':>9s} {'open at inference':>18s} "
      f"{'|train - inference| / |inference|':>34s}")
for label, d in demo.items():
    print(f"{label:14s} {d['mean']:10.3f} {d['variance']:9.3f} {d['open_at_inference']:18d} "
          f"{d['gap']:34.3f}")

# %% [markdown]
# At k = 0 every unit is a fair coin (variance 0.25): dropout at rate 0.5, and the
# training output is far from the inference output. At k = 7 the units the network
# wants are almost always open and the unwanted ones almost always closed; only the
# undecided ones still flip. At k = ∞ the mask no longer varies and training computes
# exactly what inference computes: the gate is an ordinary, frozen layer.

# %% [markdown]
# ## What we learned

# %%
for name, result in results.items():
    figures = result["figures"]
    print(f"{name:6s}: units {'-'.join(map(str, figures['units_total']))} -> "
          f"{'-'.join(map(str, figures['units_kept']))}, weights kept "
          f"{100 * figures['total']['weights_fraction']:.1f} %, "
          f"test accuracy {result['accuracy']:.4f}")
k_prune = results["prune"]["history"]["k"]
print(f"stages (prune): k = {k_prune[0]:g} until epoch {stage_boundaries(k_prune)[0]}, "
      f"k = {k_prune[stage_boundaries(k_prune)[0]]:g} until epoch "
      f"{stage_boundaries(k_prune)[1]}, then k = {k_prune[-1]:g}, hardened")
print(f"undecided gates (0.05 < π < 0.95): {100 * undecided_before:.1f} % before "
      f"hardening -> {100 * undecided_after:.1f} % after")
for label, d in demo.items():
    print(f"{label}: mask variance {d['variance']:.3f}, train vs inference output "
          f"differ by {100 * d['gap']:.1f} %")
