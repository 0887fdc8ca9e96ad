"""EpochData: each epoch's order and random layers come from (seed, epoch)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsparse.epoch_data import EpochData


def _spied_model(seen, dropped):
    """A model that records each batch it trains on (its first column) and
    each training-time Dropout mask."""

    def record(store):
        return lambda t: store.append(t.numpy().copy()) or 0

    class Spy(keras.layers.Layer):
        def call(self, x, training=False):
            tf.py_function(record(seen), [x[:, 0]], tf.int32)
            return x

    class MaskSpy(keras.layers.Layer):
        def call(self, x, training=False):
            if training:
                tf.py_function(record(dropped), [tf.cast(x == 0, tf.int32)], tf.int32)
            return x

    inputs = keras.Input((2,))
    hidden = MaskSpy()(keras.layers.Dropout(0.5, seed=1)(Spy()(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile("sgd", "mse")
    return model


def _data(n=10):
    x = np.stack([np.arange(n), np.ones(n)], axis=1).astype("float32")
    return x, np.zeros((n, 1), "float32")


def test_each_epoch_has_its_own_order_drawn_from_the_seed_and_the_epoch():
    keras.utils.set_random_seed(0)  # under which Keras' own shuffle repeats one order
    seen, dropped = [], []
    data = EpochData(*_data(), batch_size=4, seed=3)
    _spied_model(seen, dropped).fit(
        data.dataset(), epochs=3, shuffle=False, verbose=0, callbacks=[data]
    )
    orders = [data.order(e).numpy().tolist() for e in range(3)]
    assert len({tuple(o) for o in orders}) == 3
    trained = np.concatenate(seen).astype(int).tolist()
    assert trained == orders[0] + orders[1] + orders[2]  # batches of 4, 4, 2 per epoch
    assert [len(b) for b in seen] == [4, 4, 2] * 3
    # The same seed gives the same orders; another seed others.
    assert EpochData(*_data(), batch_size=4, seed=3).order(2).numpy().tolist() == orders[2]
    assert EpochData(*_data(), batch_size=4, seed=4).order(2).numpy().tolist() != orders[2]


def test_an_epoch_trains_the_same_whether_the_fit_starts_there_or_before():
    """A resumed fit (initial_epoch=k, as BackupAndRestore sets it) sees the
    batches and Dropout masks of epoch k that an uninterrupted fit saw."""
    runs = []
    for initial_epoch in (0, 2):
        keras.utils.set_random_seed(0)
        seen, dropped = [], []
        data = EpochData(*_data(), batch_size=4, seed=3)
        model = _spied_model(seen, dropped)
        model.fit(
            data.dataset(),
            epochs=3,
            initial_epoch=initial_epoch,
            shuffle=False,
            verbose=0,
            callbacks=[data],
        )
        runs.append((seen[-3:], dropped[-3:]))  # epoch 2's three batches
    (seen_all, masks_all), (seen_resumed, masks_resumed) = runs
    for a, b in zip(seen_all + masks_all, seen_resumed + masks_resumed):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments_name_the_parameter():
    x, y = _data()
    with pytest.raises(ValueError, match="differ in length"):
        EpochData(x, y[:5], batch_size=4, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        EpochData(x, y, batch_size=0, seed=0)
