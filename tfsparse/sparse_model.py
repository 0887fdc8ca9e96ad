"""A Keras model whose train step also runs the ARM estimator of NPN gates."""

import keras
import tensorflow as tf
from keras.src.backend.tensorflow.trainer import _collective_all_reduce_multi_worker
from keras.src.losses import loss as loss_module

from tfsparse.gates.base import gates_of
from tfsparse.gates.npn import ARM, NPNGate


@keras.saving.register_keras_serializable(package="tfsparse")
class SparseModel(keras.Model):
    """`keras.Model` with a train step that serves every gate family.

    It is an ordinary Functional model (build it with `inputs=`/`outputs=`, or
    subclass it); `tfsparse.sparsify` returns one. The only difference from
    `keras.Model` is `train_step`: when the model holds NPN gates with
    `estimator="arm"`, each step draws one uniform vector per gate, runs the
    usual forward pass with z = 1[u < π] (its loss f₂ trains the weights), runs
    a second forward pass with the antithetic mask 1[u > 1 − π] (loss f₁), and
    adds k·(f₁ − f₂)·(u − ½) to each φ's gradient. It also applies each gate's
    `lr_multiplier` (the update of the gate's variables is scaled after the
    optimizer step, which works for any optimizer). Without ARM gates and
    multipliers it is `keras.Model.train_step` unchanged.

    It also makes `fit` and `evaluate` work under
    `tf.distribute.MultiWorkerMirroredStrategy`, where Keras 3.15 fails for
    every model (tensorflow/tensorflow#72388): Keras averages each worker's
    batch to build the model, which the collective strategy cannot do
    eagerly, and reduces scalar logs along an axis 0 they do not have.
    """

    def train_step(self, data):
        return _reducible_logs(self.distribute_strategy, self._gated_train_step(data))

    def test_step(self, data):
        return _reducible_logs(self.distribute_strategy, super().test_step(data))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Building only needs the shapes of one batch: take this worker's
        # first replica instead of Keras' cross-worker average.
        if iterator is None or not _multi_worker(self.distribute_strategy):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            data_batch = tf.nest.map_structure(self._first_replica, next(batches))
            break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def _first_replica(self, value):
        if isinstance(value, tf.distribute.DistributedValues):
            return self.distribute_strategy.experimental_local_results(value)[0]
        return value

    def _gated_train_step(self, data):
        gates = gates_of(self)
        arm_gates = [g for g in gates if isinstance(g, NPNGate) and g.estimator == ARM]
        boosted = [(v, g.lr_multiplier) for g in gates if g.lr_multiplier != 1.0
                   for v in g.trainable_weights]
        if not arm_gates and not boosted:
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        noise = [keras.random.uniform(g.mask_shape, seed=g.seed_generator) for g in arm_gates]
        try:
            for gate, u in zip(arm_gates, noise):
                gate._arm_noise, gate._arm_antithetic = u, False
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self._compute_loss(x=x, y=y, y_pred=y_pred,
                                          sample_weight=sample_weight, training=True)
                self._loss_tracker.update_state(
                    loss_module.unscale_loss_for_distribution(loss),
                    sample_weight=tf.shape(tf.nest.flatten(x)[0])[0])
                scaled_loss = self.optimizer.scale_loss(loss)
            if arm_gates:
                for gate in arm_gates:
                    gate._arm_antithetic = True
                # The penalties of both passes are equal, so f₁ − f₂ is the
                # difference of the data losses.
                antithetic_loss = self._compute_loss(
                    x=x, y=y, y_pred=self(x, training=True), sample_weight=sample_weight,
                    training=True)
        finally:
            for gate in arm_gates:
                gate._arm_noise, gate._arm_antithetic = None, False

        weights = self.trainable_weights
        gradients = tape.gradient(scaled_loss, weights)
        if arm_gates:
            self._add_arm_gradients(weights, gradients, arm_gates, noise,
                                    tf.stop_gradient(antithetic_loss), tf.stop_gradient(loss))
        before = [tf.identity(v) for v, _ in boosted]
        self.optimizer.apply_gradients(zip(gradients, weights))
        for (variable, multiplier), old in zip(boosted, before):
            new = old + multiplier * (variable - old)
            if variable.constraint is not None:
                new = variable.constraint(new)
            variable.assign(new)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _add_arm_gradients(self, weights, gradients, gates, noise, f1, f2):
        position = {id(w): i for i, w in enumerate(weights)}
        for gate, u in zip(gates, noise):
            i = position.get(id(gate.phi))
            if i is None:  # the gate is frozen (trainable=False)
                continue
            arm = self.optimizer.scale_loss(gate.arm_gradient(u, f1, f2))
            gradients[i] = arm if gradients[i] is None else gradients[i] + arm


def _multi_worker(strategy):
    return strategy is not None and _collective_all_reduce_multi_worker(strategy)


def _reducible_logs(strategy, logs):
    """Gives scalar logs a length-1 axis under a multi-worker strategy, where
    Keras reduces logs with `strategy.reduce("MEAN", value, axis=0)`; the
    reduction removes the axis again, so callbacks see the usual scalars."""
    if not _multi_worker(strategy):
        return logs
    return tf.nest.map_structure(
        lambda v: tf.reshape(v, [1]) if getattr(v, "shape", None) == () else v, logs)
