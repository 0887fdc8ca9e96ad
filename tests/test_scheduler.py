"""SparsityScheduler and the schedules it drives."""

import keras
import numpy as np
import pytest

import tfsparse
from tfsparse import recipes, schedules
from tfsparse.callbacks import SparsityScheduler


def _digits_like(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0)
    return x, y


def _mlp():
    return keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(16, activation="relu", name="dense"),
            keras.layers.Dense(8, activation="relu", name="dense_1"),
            keras.layers.Dense(3, name="logits"),
        ]
    )


def _compile(model):
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def test_stages_and_linear_are_pure_functions():
    k = schedules.npn_stages(7.0, 2, 5)
    assert [k(e) for e in range(7)] == [5000, 5000, 7, 7, 7, 5000, 5000]
    ramp = schedules.Linear([(0, 0.0), (10, 1.0)])
    assert [ramp(t) for t in (0, 5, 10, 20)] == [0.0, 0.5, 1.0, 1.0]
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(k))
    assert [clone(e) for e in range(7)] == [k(e) for e in range(7)]


def test_scheduler_assigns_k_hardens_and_logs():
    x, y = _digits_like()
    model = _compile(tfsparse.sparsify(_mlp(), "npn", dataset_size=len(x), lam=0.5, seed=0))
    scheduler = SparsityScheduler(schedules={"k": schedules.npn_stages(7.0, 1, 3)}, harden_at=3)
    seen = []
    spy = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: seen.append(float(model.get_layer("dense_gate").k.numpy()))
    )
    history = model.fit(x, y, epochs=4, verbose=0, callbacks=[scheduler, spy])
    assert seen == [5000.0, 7.0, 7.0, 5000.0]
    assert history.history["k"] == seen
    for gate in tfsparse.gates.gates_of(model):
        assert gate.hardened.numpy() == 1.0
        assert history.history[f"active/{gate.name}"][-1] == int(np.sum(gate.active()))


def test_recipe_hardens_hard_concrete_so_training_uses_the_inference_masks():
    x, y = _digits_like()
    plan = recipes.recipe("hard_concrete", 4, harden_fraction=0.5)
    assert plan.scheduler.harden_at == 2 and "harden_fraction" not in plan.settings
    model = _compile(
        tfsparse.sparsify(_mlp(), "hard_concrete", dataset_size=len(x), seed=0, **plan.settings)
    )
    frozen = []
    spy = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: (
            frozen.append([np.array(g.mask()) for g in tfsparse.gates.gates_of(model)])
            if e == 2
            else None
        )
    )
    model.fit(x, y, epochs=4, verbose=0, callbacks=[plan.scheduler, spy])
    for gate, mask in zip(tfsparse.gates.gates_of(model), frozen[0]):
        assert gate.hardened.numpy() == 1.0
        np.testing.assert_array_equal(np.array(gate.mask()), mask)  # no longer moves
    # Hardened, a training step sees exactly the model that inference runs.
    np.testing.assert_allclose(model(x, training=True), model(x, training=False), rtol=1e-6)


def test_cosine_optimizer_settles_weights_and_gates_by_the_last_step():
    x, y = _digits_like(64)
    model = tfsparse.sparsify(_mlp(), "hard_concrete", dataset_size=64, seed=0, lr_multiplier=10.0)
    model.compile(
        recipes.optimizer(4e-3, "cosine", total_steps=8),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    assert float(model.optimizer.learning_rate) == pytest.approx(4e-3)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)  # 8 steps: the whole decay
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-12)
    # The gates' boosted update is a multiple of the weights', so past the
    # decay neither moves: the masks that inference uses are settled.
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for variable, value in zip(model.trainable_variables, before):
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)
    assert float(recipes.optimizer(4e-3).learning_rate) == pytest.approx(4e-3)  # constant


def test_the_step_rate_drops_tenfold_at_half_and_at_80_percent_for_weights_and_gates():
    x, y = _digits_like(64)
    model = tfsparse.sparsify(_mlp(), "hard_concrete", dataset_size=64, seed=0, lr_multiplier=10.0)
    model.compile(
        recipes.optimizer(1e-2, "step", total_steps=20),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rates = []
    for _ in range(5):  # 4 steps an epoch
        rates.append(float(model.optimizer.learning_rate))
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    # Read at steps 0, 4, 8, 12, 16 of 20: drops after step 10 and step 16.
    np.testing.assert_allclose(rates, [1e-2, 1e-2, 1e-2, 1e-3, 1e-3], rtol=1e-6)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)  # step 20
    (boosted,) = model.boosted_gate_optimizers
    assert float(boosted.learning_rate) == pytest.approx(1e-3)  # 10× the weights' rate


def test_the_step_rate_drops_where_it_is_told():
    # The BB authors' LeNet schedule: a tenth from 50 %, a hundredth from 70 %.
    optimizer = recipes.optimizer(1e-2, "step", total_steps=20, drops=((0.5, 0.1), (0.7, 0.01)))
    rates = []
    for step in (0, 10, 11, 14, 15, 19):
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    np.testing.assert_allclose(rates, [1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-6)


def test_step_schedule_follows_optimizer_iterations():
    x, y = _digits_like(64)
    model = _compile(tfsparse.sparsify(_mlp(), "hard_concrete", dataset_size=64))
    temperature = schedules.Linear([(0, 2.0), (8, 0.5)], unit="step")
    history = model.fit(
        x,
        y,
        batch_size=16,
        epochs=3,
        verbose=0,
        callbacks=[SparsityScheduler({"temperature": temperature})],
    )
    # The value logged at an epoch's end is the one assigned before its last
    # step: step 3 (epoch 0), 7 (epoch 1), 11 (epoch 2, past the line's end):
    # 2 − 1.5·3/8, 2 − 1.5·7/8, 0.5.
    np.testing.assert_allclose(history.history["temperature"], [1.4375, 0.6875, 0.5], rtol=1e-6)


def test_unknown_schedule_name_is_an_error():
    x, y = _digits_like(32)
    model = _compile(tfsparse.sparsify(_mlp(), "npn", dataset_size=32))
    with pytest.raises(ValueError, match="tempreature"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[SparsityScheduler({"tempreature": 0.5})])


def test_a_scheduler_on_a_model_without_gates_is_an_error():
    x, y = _digits_like(32)
    with pytest.raises(ValueError, match="no gates"):
        _compile(_mlp()).fit(x, y, epochs=1, verbose=0, callbacks=[SparsityScheduler(harden_at=1)])


def test_expand_mode_grows_and_prune_mode_shrinks():
    x, y = _digits_like(512)
    grow = _compile(
        tfsparse.sparsify(
            _mlp(),
            "npn",
            dataset_size=512,
            mode="expand",
            init_size=3,
            k_plastic=1.0,
            lam=0.0,
            seed=0,
        )
    )
    scheduler = SparsityScheduler(
        schedules={"k": schedules.npn_stages(1.0, 1, 50)}, expand_between=(1, 50)
    )
    history = grow.fit(x, y, validation_data=(x, y), epochs=6, verbose=0, callbacks=[scheduler])
    active = history.history["active/dense_gate"]
    assert active[0] == 3 and active[-1] > 3

    shrink = _compile(tfsparse.sparsify(_mlp(), "npn", dataset_size=512, lam=20.0, seed=0))
    scheduler = SparsityScheduler(schedules={"k": schedules.npn_stages(7.0, 0, 50)})
    history = shrink.fit(x, y, epochs=6, verbose=0, callbacks=[scheduler])
    assert history.history["active/dense_gate"][-1] < 16
