"""The shortest path: `sparsify` with no settings, `SparsityScheduler()` with
no arguments and a normal `fit` prune, because both read the library's
recommendations (`tfsparse.defaults`, `tfsparse.recipes`)."""

import keras
import numpy as np
import pytest

import tfsparse
from tfsparse import data, defaults, models, recipes
from tfsparse.gates import gates_of


def _digits():
    return data.load("digits")


# NPN: the method whose recipe has the most to plan (its three stages). That
# the short path trains what each method's recipe trains is the test below.
@pytest.mark.parametrize("method", ["npn"])
def test_the_short_path_prunes_digits(method):
    splits = _digits()
    (x, y), val = splits.train, splits.val
    dense = models.lenet_300_100(splits.input_shape, 10)
    sparse = tfsparse.sparsify(dense, method, dataset_size=len(x), verbose=0)
    sparse.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    # Keras' own batch size (32): 51 steps per epoch.
    scheduler = tfsparse.SparsityScheduler()
    history = sparse.fit(x, y, validation_data=val, epochs=30, verbose=0, callbacks=[scheduler])
    small = tfsparse.compact(sparse)
    before = tfsparse.summary(dense, print_fn=None)["total"]
    after = tfsparse.summary(small, print_fn=None)["total"]
    # Measured: 57 % of the FLOPs kept (hard-concrete: 58 %).
    assert after["flops_kept"] < 0.7 * before["flops_total"], after
    assert small.count_params() < 0.7 * dense.count_params()
    assert history.history["val_accuracy"][-1] > 0.85
    if method == "npn":
        # It ran NPN's recipe for 30 epochs: stages at 6 and 21, hardened.
        assert "hardening at epoch 21" in scheduler.describe()
        assert all(gate.hardened.numpy() for gate in gates_of(sparse))


def test_sparsify_fills_in_the_recommended_settings():
    dense = models.lenet_300_100((8, 8, 1), 10)
    gate = gates_of(tfsparse.sparsify(dense, "hard_concrete", dataset_size=10, verbose=0))[0]
    recommended = defaults.RECOMMENDED["hard_concrete"]
    assert gate.lam == pytest.approx(recommended["lam"])
    assert gate.lr_multiplier == recommended["lr_multiplier"]
    assert recipes.DEFAULTS is defaults.RECOMMENDED
    # A setting given wins over the recommendation.
    gate = gates_of(
        tfsparse.sparsify(dense, "hard_concrete", dataset_size=10, lam=0.2, verbose=0)
    )[0]
    assert gate.lam == pytest.approx(0.2)


def test_the_planned_scheduler_is_the_recipe_scheduler():
    dense = models.lenet_300_100((8, 8, 1), 10)
    sparse = tfsparse.sparsify(dense, "npn", dataset_size=10, target_flops=0.3, verbose=0)
    method, plan = recipes.planned_scheduler(sparse, 40)
    expected = recipes.recipe("npn", 40, target_flops=0.3).scheduler
    assert method == "npn"
    assert (
        (plan.harden_at, plan.budget_reached_at, plan.budget_ramp_power)
        == (expected.harden_at, expected.budget_reached_at, expected.budget_ramp_power)
        == (28, 27, 3.0)
    )
    assert set(plan.schedules) == {"k"}
    # The unplanned scheduler round-trips as unplanned; an explicit one as it is.
    assert tfsparse.SparsityScheduler(**tfsparse.SparsityScheduler().get_config()).planned
    assert not tfsparse.SparsityScheduler(schedules={}).planned


def test_a_model_without_gates_cannot_plan():
    dense = models.lenet_300_100((8, 8, 1), 10)
    dense.compile("adam", "sparse_categorical_crossentropy")
    x, y = np.zeros((4, 8, 8, 1), "float32"), np.zeros(4, "int64")
    with pytest.raises(ValueError, match="no tfsparse gate"):
        dense.fit(x, y, epochs=1, verbose=0, callbacks=[tfsparse.SparsityScheduler()])


@pytest.mark.parametrize("method", ["hard_concrete", "npn", "bb", "targeted_dropout"])
def test_the_short_path_is_the_recipe(method):
    """`sparsify` without settings + `SparsityScheduler()` trains exactly what
    `recipes.recipe(method, epochs)` trains: the same weights, bit for bit."""
    splits = _digits()
    x, y = splits.train[0][:256], splits.train[1][:256]

    def trained(short):
        keras.utils.set_random_seed(0)
        dense = models.lenet_300_100(splits.input_shape, 10)
        plan = recipes.recipe(method, 3)
        settings = {} if short else plan.settings
        sparse = tfsparse.sparsify(
            dense, method, dataset_size=len(x), seed=0, verbose=0, **settings
        )
        sparse.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        scheduler = tfsparse.SparsityScheduler() if short else plan.scheduler
        sparse.fit(x, y, epochs=3, batch_size=64, shuffle=False, verbose=0, callbacks=[scheduler])
        return [w.numpy() for w in sparse.weights]

    for short, recipe in zip(trained(True), trained(False)):
        np.testing.assert_array_equal(short, recipe)


def test_bb_trains_without_its_kl_first_unless_pretrained():
    """BB's plan: KL weight 0 for the first tenth of the epochs, then the
    gates' own weight (from the model for `SparsityScheduler()`); none when
    the weights start pretrained."""
    x, _ = _digits().train
    sparse = tfsparse.sparsify(
        models.lenet_300_100((8, 8, 1), 10), "bb", dataset_size=len(x), kl_weight=2.5, verbose=0
    )
    _, scheduler = recipes.planned_scheduler(sparse, 60)
    kl = scheduler.schedules["kl_weight"]
    assert [kl(epoch) for epoch in (0, 5, 6, 59)] == [0.0, 0.0, 2.5, 2.5]
    assert recipes.recipe("bb", 60, pretrained=True).scheduler.schedules == {}
