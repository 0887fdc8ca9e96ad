# %% [markdown]
# # tfsparse quick start: from an ordinary Keras model to a small TFLite file
#
# This page takes a plain Keras LeNet-300-100, inserts hard-concrete L0 gates with
# `tfsparse.sparsify`, trains it with `model.fit`, shows what survived with
# `tfsparse.summary`, removes the closed units with `tfsparse.compact` and exports the
# result to SavedModel and TFLite, checked with the LiteRT interpreter.
#
# Data: the committed outputs come from a full run on `mnist-10k.npz` (the first 10,000
# MNIST training images, official test set). With `TFSPARSE_FAST=1` (the tests) it trains
# briefly on scikit-learn's digits instead.

# %%
import os
import tempfile

import keras
import matplotlib.pyplot as plt
import numpy as np

import tfsparse
from tfsparse import data, models, recipes

FAST = os.environ.get("TFSPARSE_FAST") == "1"
DATASET = "digits" if FAST else os.path.join("..", "..", "shared", "data", "mnist-10k.npz")
EPOCHS = 3 if FAST else 100
keras.utils.set_random_seed(0)
splits = data.load(DATASET, validation_split=0.1)
splits

# %% [markdown]
# ## 1. An ordinary Keras model, trained briefly

# %%
dense = models.lenet_300_100(splits.input_shape, splits.num_classes)
dense.compile(keras.optimizers.Adam(1e-3),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
dense.fit(*splits.train, epochs=2 if FAST else 10, batch_size=128, verbose=0)
dense_accuracy = dense.evaluate(*splits.test, verbose=0)[1]
print(f"dense test accuracy {dense_accuracy:.4f}")

# %% [markdown]
# ## 2. Sparsify and fit
# `recipes.recipe` gives the method's defaults and its `SparsityScheduler`; the scheduler
# writes the active units of every gate into the Keras logs.

# %%
plan = recipes.recipe("hard_concrete", EPOCHS)
sparse = tfsparse.sparsify(dense, "hard_concrete", dataset_size=len(splits.train[0]),
                           seed=0, **plan.settings)
sparse.compile(keras.optimizers.Adam(1e-3),
               keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
history = sparse.fit(*splits.train, validation_data=splits.val, epochs=EPOCHS, batch_size=128,
                     callbacks=[plan.scheduler], verbose=0)
sparse_accuracy = sparse.evaluate(*splits.test, verbose=0)[1]
print(f"sparse test accuracy {sparse_accuracy:.4f}")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for key, values in history.history.items():
    if key.startswith("active/"):
        ax.plot(values, label=key[len("active/"):])
ax.set_xlabel("epoch"); ax.set_ylabel("active units"); ax.set_yscale("log"); ax.legend()
ax.set_title("Units that survive, per gate")
plt.show()

# %% [markdown]
# ## 3. What survived

# %%
before = tfsparse.summary(sparse)

# %% [markdown]
# ## 4. Compact: a plain Keras model without the closed units

# %%
small = tfsparse.compact(sparse)
after = tfsparse.summary(small)
x = splits.test[0][:512]
gap = np.abs(small.predict(x, verbose=0) - sparse.predict(x, verbose=0)).max()
print(f"max |compact - gated| on 512 test images: {gap:.2e}")
print([type(layer).__name__ for layer in small.layers])

# %% [markdown]
# ## 5. Export to SavedModel and TFLite, check on the LiteRT interpreter

# %%
out = tempfile.mkdtemp()
report = tfsparse.export(small, os.path.join(out, "small"), test_data=splits.test)
dense_report = tfsparse.export(dense, os.path.join(out, "dense"), test_data=splits.test)
for name, r in (("dense", dense_report), ("sparse", report)):
    t = r["tflite"]
    print(f"{name:6s} tflite {r['sizes_bytes']['tflite'] / 1024:8.1f} KiB, "
          f"latency {t['latency_ms']:.4f} ms, parity {t['parity']['max_abs_diff']:.1e}, "
          f"accuracy {t['accuracy']:.4f}")

# %% [markdown]
# ## What we learned

# %%
print(f"units kept: {before['units_kept']} of {before['units_total']}")
print(f"weights kept: {100 * before['total']['weights_fraction']:.1f} %, "
      f"FLOPs kept: {100 * before['total']['flops_fraction']:.1f} % "
      f"(the compact model has {after['total']['weights_total']:,} weights)")
print(f"accuracy: dense {dense_accuracy:.4f} -> sparse {sparse_accuracy:.4f}")
print(f"TFLite file: {dense_report['sizes_bytes']['tflite'] / report['sizes_bytes']['tflite']:.1f}x "
      f"smaller, latency {dense_report['tflite']['latency_ms'] / report['tflite']['latency_ms']:.1f}x lower")
