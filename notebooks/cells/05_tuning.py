# %% [markdown]
# # Tuning sparsity with keras-tuner: the cheapest model that is accurate enough
#
# A sparsity method has knobs (the L0 strength λ, how fast the gates learn, ...) whose
# best values depend on the network and the data. `tfsparse.tuning.SparsityHyperModel`
# turns "find the cheapest model that still reaches a target accuracy" into one number
# that keras-tuner can minimise, `score`: a trial that reaches the validation-accuracy
# target scores the fraction of the dense FLOPs it keeps (in [0, 1]); a trial below it
# scores 1 + the accuracy it misses, so every accurate trial beats every inaccurate one.
#
# This page runs a small `keras_tuner.RandomSearch` over hard-concrete L0 settings for
# LeNet-300-100, prints the trials, plots validation error against FLOPs with the
# Pareto front, and evaluates the best model on the test set.
#
# Data: the committed outputs come from a full run on `mnist-10k.npz` (the first 10,000
# MNIST training images, 10 % held out for validation, which the tuner sees; the
# official test set, which only the final check reads): 6 trials of 15 epochs (a few
# minutes on a 2-core CPU). A real search would run more trials for longer (`tune.py`).
# With `TFSPARSE_FAST=1` (the tests) it runs 2 trials of 2 epochs on scikit-learn's 8×8
# digits instead, with a lower target.

# %%
import os
import tempfile
import warnings

import keras
import keras_tuner as kt
import matplotlib.pyplot as plt
import numpy as np

import tfsparse
from tfsparse import data, plots, tuning

FAST = os.environ.get("TFSPARSE_FAST") == "1"
DATASET = "digits" if FAST else os.path.join("..", "..", "shared", "data", "mnist-10k.npz")
METHOD = "hard_concrete"
TRIALS = 2 if FAST else 6
EPOCHS = 2 if FAST else 15
ACCURACY_TARGET = 0.5 if FAST else 0.94
keras.utils.set_random_seed(0)
splits = data.load(DATASET, validation_split=0.1)
splits

# %% [markdown]
# ## 1. The hypermodel and its search space
#
# Each trial builds a fresh LeNet-300-100, `sparsify`s it with the trial's settings,
# trains it with the method's recipe (`tfsparse.recipes`) and reports `score`,
# `val_accuracy` and `cost_fraction` (FLOPs kept, from `tfsparse.summary`). The search
# space is `tuning.default_space`: λ, the initial drop rate and the gates' learning-rate
# multiplier.

# %%
hypermodel = tuning.SparsityHyperModel(METHOD, "lenet_300_100", splits, epochs=EPOCHS,
                                       accuracy_target=ACCURACY_TARGET, cost="flops")
tuner = kt.RandomSearch(hypermodel, objective=tuning.OBJECTIVE, max_trials=TRIALS, seed=0,
                        directory=tempfile.mkdtemp(prefix="tfsparse-tuning-"),
                        project_name=METHOD, overwrite=True)
tuner.search_space_summary()

# %%
tuner.search(*splits.train, validation_data=splits.val, verbose=0)

# %% [markdown]
# ## 2. The trials
#
# Sorted by score (best first): a score below 1 means the trial reached the target and
# is the fraction of the dense FLOPs it keeps.

# %%
rows = []
for trial in tuner.oracle.trials.values():
    if trial.status != "COMPLETED":
        continue
    last = trial.metrics.get_last_value
    rows.append({"trial": trial.trial_id, **trial.hyperparameters.values,
                 "val_accuracy": last("val_accuracy"), "flops_kept": last("cost_fraction"),
                 "score": last("score")})
rows.sort(key=lambda row: row["score"])

columns = list(rows[0])
print("  ".join(f"{c:>14s}" for c in columns))
for row in rows:
    print("  ".join(f"{row[c]:>14.4g}" if isinstance(row[c], float) else f"{row[c]:>14}"
                    for c in columns))

# %% [markdown]
# ## 3. Error against cost, and the Pareto front
#
# Each point is a trial; the dashed line joins the trials that no other trial beats on
# both FLOPs and error (`tfsparse.plots.pareto_front`); the dotted line is the error the
# target allows.

# %%
costs = np.array([row["flops_kept"] for row in rows])
errors = np.array([100 * (1 - row["val_accuracy"]) for row in rows])
front = plots.pareto_front(costs, errors)

fig, ax = plt.subplots(figsize=(6.5, 4))
reached = np.array([row["val_accuracy"] >= ACCURACY_TARGET for row in rows])
ax.scatter(costs[reached], errors[reached], label="reaches the target")
ax.scatter(costs[~reached], errors[~reached], marker="x", label="misses the target")
ax.plot(costs[front], errors[front], "k--", lw=1, label="Pareto front")
ax.axhline(100 * (1 - ACCURACY_TARGET), color="grey", ls=":", lw=1, label="error target")
for row, cost, error in zip(rows, costs, errors):
    ax.annotate(row["trial"], (cost, error), fontsize=7, xytext=(3, 3),
                textcoords="offset points")
ax.set_xlabel("FLOPs kept (fraction of dense)")
ax.set_ylabel("validation error (%)")
ax.set_title(f"{METHOD} on LeNet-300-100: {len(rows)} trials of {EPOCHS} epochs")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. The best model on the test set
#
# keras-tuner rebuilds the best trial's model and loads its trained weights (not the
# optimizer's state, which it does not need: hence the warning it would print).

# %%
best_trial = tuner.oracle.get_best_trials(1)[0]
best_row = next(row for row in rows if row["trial"] == best_trial.trial_id)
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
    best = tuner.get_best_models(1)[0]
best_val_accuracy = best.evaluate(*splits.val, verbose=0)[1]
best_accuracy = best.evaluate(*splits.test, verbose=0)[1]
print(f"best trial {best_trial.trial_id}:", best_trial.hyperparameters.values)
print(f"reloaded best model: validation accuracy {best_val_accuracy:.4f} (the trial "
      f"reported {best_row['val_accuracy']:.4f}), test accuracy {best_accuracy:.4f}")
best_figures = tfsparse.summary(best)

# %% [markdown]
# ## What we learned

# %%
print(f"{len(rows)} trials, {int(reached.sum())} reached validation accuracy "
      f"{ACCURACY_TARGET}; {len(front)} on the Pareto front")
print(f"best trial {best_row['trial']}: score {best_row['score']:.4f}, validation accuracy "
      f"{best_row['val_accuracy']:.4f}, FLOPs kept {100 * best_row['flops_kept']:.1f} %")
print(f"FLOPs kept across trials: {100 * costs.min():.1f} % to {100 * costs.max():.1f} %")
print(f"best model on the test set: accuracy {best_accuracy:.4f}, units "
      f"{'-'.join(map(str, best_figures['units_total']))} -> "
      f"{'-'.join(map(str, best_figures['units_kept']))}, weights kept "
      f"{100 * best_figures['total']['weights_fraction']:.1f} %")
