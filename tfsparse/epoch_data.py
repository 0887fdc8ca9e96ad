"""Training batches, and the randomness of each epoch, drawn from (seed, epoch) alone.

Keras' `fit` on arrays shuffles with `tf.random.shuffle` inside a tf.data
pipeline. Once `keras.utils.set_random_seed` has fixed the global seed, as
`tfsparse.training.run` does, each epoch's new iterator restarts that op, so
every epoch sees the same order (Keras 3.15, TensorFlow 2.21; the effect of
tensorflow/tensorflow#29558). A process that resumes at epoch k would also
replay epoch 0's order there, and a `Dropout` layer's random state is not in
a checkpoint. `EpochData` draws epoch e's order as a stateless permutation
of (seed, e) and reseeds every random layer outside the gates from
(seed, e, layer) when the epoch begins (a gate's own state is checkpointed
with its weights), so the epochs that a resumed run trains are those an
uninterrupted run would have trained.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from tfsparse import _checks, _graph
from tfsparse.gates.base import Gate


class EpochData(keras.callbacks.Callback):
    """The training set in batches, shuffled per epoch by (seed, epoch).

    Give `fit` the `dataset()` and this callback (it tells the dataset the
    epoch and reseeds the model's random layers as each epoch begins).

    Args:
        x, y: the training arrays (same length).
        batch_size: examples per batch; the last batch holds the rest.
        seed: the run's seed.
    """

    def __init__(self, x, y, batch_size: int, seed: int):
        super().__init__()
        if len(x) != len(y):
            raise ValueError(f"`x` and `y` differ in length: {len(x)} and {len(y)}.")
        self.x, self.y = x, y
        self.batch_size = int(_checks.number("batch_size", batch_size, low=1, integer=True))
        self.seed = int(_checks.number("seed", seed, integer=True))
        self.steps = math.ceil(len(x) / self.batch_size)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")

    def order(self, epoch) -> tf.Tensor:
        """Epoch `epoch`'s order of the training examples."""
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(epoch, tf.int64)])
        return tf.random.experimental.stateless_shuffle(
            tf.range(len(self.x), dtype=tf.int64), seed=seed
        )

    def dataset(self) -> tf.data.Dataset:
        """The batches of the epoch the callback last began (epoch 0 before)."""
        size, total = self.batch_size, len(self.x)

        def batches_of_this_epoch(_):
            # Read when the epoch's iterator starts, after on_epoch_begin.
            order = self.order(self.epoch.read_value())
            starts = tf.data.Dataset.range(0, total, size)
            return starts.map(lambda start: order[start : tf.minimum(start + size, total)])

        indices = tf.data.Dataset.range(1).flat_map(batches_of_this_epoch)
        arrays = tf.data.Dataset.from_tensors((self.x, self.y)).repeat()
        batches = tf.data.Dataset.zip((indices, arrays)).map(
            lambda i, data: (tf.gather(data[0], i), tf.gather(data[1], i)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return batches.apply(tf.data.experimental.assert_cardinality(self.steps)).prefetch(
            tf.data.AUTOTUNE
        )

    def on_train_begin(self, logs=None):
        self._random_layers = _random_layers(self.model)  # the model is fixed for the fit

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)
        for index, layer in enumerate(self._random_layers):
            state = np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0]
            layer.seed_generator.state.assign(
                np.array([state, 0], dtype=layer.seed_generator.state.dtype)
            )


def fit_by_epochs(model, x, y, *, batch_size, seed, callbacks=(), **fit_arguments):
    """`model.fit(x, y, ...)` with each epoch's order and random layers drawn
    from (seed, epoch) (`EpochData`); `fit_arguments` are `fit`'s others
    (`epochs`, `validation_data`, `verbose`, ...). Returns `fit`'s `History`.
    The `EpochData` callback runs after the first of `callbacks` when that is
    a `BackupAndRestore`, so that the epoch it restores is the one seeded."""
    epochs = EpochData(x, y, batch_size, seed)
    callbacks = list(callbacks)
    at = 1 if callbacks and isinstance(callbacks[0], keras.callbacks.BackupAndRestore) else 0
    callbacks.insert(at, epochs)
    fit_arguments.setdefault("validation_batch_size", batch_size)
    return model.fit(epochs.dataset(), shuffle=False, callbacks=callbacks, **fit_arguments)


def _random_layers(model):
    """The layers outside the gates that draw from a `seed_generator`
    (Dropout, GaussianNoise, ...), in a fixed order."""
    return [
        layer
        for layer in _graph.all_layers(model)
        if isinstance(getattr(layer, "seed_generator", None), keras.random.SeedGenerator)
        and not isinstance(layer, Gate)
    ]
