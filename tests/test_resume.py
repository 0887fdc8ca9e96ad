"""A run interrupted mid-schedule and resumed with BackupAndRestore ends exactly
like the uninterrupted run (same gate parameters, scheduled values, units)."""

import keras
import numpy as np
import pytest

import tfsparse
from tests.helpers.interrupt import Interrupt
from tfsparse import recipes


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(192, 10)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int64") + (x[:, 2] > 0.5)
    return x, y


def _train(method, settings, backup_dir=None, interrupt_at=None, epochs=8, **recipe_args):
    keras.utils.set_random_seed(0)
    dense = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(12, activation="relu", name="hidden"),
            keras.layers.Dense(3, name="logits"),
        ]
    )
    x, y = _data()
    plan = recipes.recipe(method, epochs, steps_per_epoch=6, **recipe_args, **settings)
    model = tfsparse.sparsify(dense, method, dataset_size=len(x), seed=0, **plan.settings)
    # SGD with momentum, for the gates too, so that a difference shows as the
    # size it has (Adam divides by √v and turns a tiny one into a full step).
    # The gates' optimizer state is checkpointed too. Runs under TensorFlow's
    # default threading: 50 of 50 reruns of the NPN cases passed once the ARM
    # step ordered its updates after the antithetic pass (test_arm_order.py).
    model.compile(
        keras.optimizers.SGD(0.1, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        gate_optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
    )
    callbacks = [plan.scheduler]
    if backup_dir is not None:
        callbacks.insert(0, keras.callbacks.BackupAndRestore(str(backup_dir)))
    if interrupt_at is not None:
        callbacks.append(Interrupt(interrupt_at))
    model.fit(
        x,
        y,
        validation_data=(x, y),
        batch_size=32,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )
    return model


@pytest.mark.parametrize(
    "method, settings, recipe_args",
    [
        ("npn", {"lam": 0.5}, {}),  # plastic stage
        ("npn", {"mode": "expand", "init_size": 2, "lam": 0.0}, {}),  # expansion
        ("targeted_dropout", {"alpha": 0.9, "gamma": 0.9}, {"ramp": True}),
        ("hard_concrete", {"lam": 0.2}, {}),
    ],
)
def test_resume_matches_uninterrupted(tmp_path, method, settings, recipe_args):
    reference = _train(method, settings, **recipe_args)
    with pytest.raises(KeyboardInterrupt):
        _train(method, settings, backup_dir=tmp_path, interrupt_at=4, **recipe_args)
    resumed = _train(method, settings, backup_dir=tmp_path, **recipe_args)
    for a, b in zip(reference.weights, resumed.weights):
        # Identical arithmetic on identical inputs; allow float32 rounding.
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)
    assert tfsparse.active_units(reference) == tfsparse.active_units(resumed)
