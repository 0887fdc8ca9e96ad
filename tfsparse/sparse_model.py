"""A Keras model whose train step serves every gate family: gates have their
own optimizer, gates that pair passes (NPN's ARM estimator) get their second
pass, and a budget's
Lagrange multipliers are trained by ascent."""

import keras
import tensorflow as tf
from keras.src.backend.tensorflow.trainer import _collective_all_reduce_multi_worker
from keras.src.losses import loss as loss_module

from tfsparse import _checks, schedules
from tfsparse import budget as budget_lib
from tfsparse.gates.base import gates_of
from tfsparse.weight_decay import GatedWeightDecay

ADAMS = (keras.optimizers.Adam, keras.optimizers.AdamW)
# The multipliers λ₁, λ₂ move this many times as far per step as the gates'
# optimizer moves a variable at multiplier 1: a budget must bind within a few
# hundred steps (CoFi trains its multipliers at 10× its masks' rate, over far
# more steps).
BUDGET_LR_MULTIPLIER = 100.0


@keras.saving.register_keras_serializable(package="tfsparse")
class SparseModel(keras.Model):
    """`keras.Model` with a train step that serves every gate family.

    It is an ordinary Functional model (build it with `inputs=`/`outputs=`, or
    subclass it); `tfsparse.sparsify` returns one. It differs from
    `keras.Model` in `compile` and `train_step`:

    - **Gates have their own optimizer.** The gates' variables (and a
      budget's multipliers) are updated by `gate_optimizer`, Adam by default,
      so gates move the same way whether the weights train with Adam or SGD
      (a raw SGD step on a gate's logit is tiny; Adam normalizes it, as CoFi
      does for its masks). When the weights use Adam, the gates' Adam takes
      the same learning rate (schedule included), which gives exactly the
      updates of one Adam over all variables; otherwise it runs at 1e-3.
      Gates with an `lr_multiplier` (and a budget's multipliers, at
      `BUDGET_LR_MULTIPLIER`) are trained by copies of the gate optimizer at
      that multiple of its learning rate (`boosted_gate_optimizers`).
    - **Paired passes** (`Gate.pairs_passes`; NPN's ARM estimator): each
      step draws one noise per such gate and runs the usual forward pass (its
      loss trains the weights) and a second one with the same noise, then
      adds the gate's `paired_gradients` from the two losses. For NPN with
      `estimator="arm"` the passes use z = 1[u < π] (loss f₂) and the
      antithetic 1[u > 1 − π] (loss f₁), and φ's gradient gets
      k·(f₁ − f₂)·(u − ½).
    - **Budgets** (`budget={"kind": "flops" | "params", "target": t}`, as
      `tfsparse.sparsify(..., target_flops=t)` sets): the loss gets
      λ₁·(c − t) + λ₂·max(c − t, 0)², c the expected cost fraction
      (`tfsparse.budget.CostModel`; its pull on a gate is the gate's units'
      dense cost, `CostModel.constraint`), and λ₁, λ₂ ascend their gradient,
      stay at or above 0, and λ₁ restarts at 0 whenever c ≤ t. The
      term is left out (and λ₁, λ₂ get no gradient) while `budget_engaged` is 0:
      `SparsityScheduler` engages it when the target's ramp starts and
      releases it at hardening. The logs show `cost` (c) and `cost_target`
      each step and epoch.
    - **Weight decay under the gates** (`decay_weights_under_gates(wd)`;
      `tfsparse.weight_decay`): the loss gets ½·wd·Σ P(kept)·w² over the
      Dense/Conv kernels in place of their L2 regularizers (the L0 paper's
      expected L2), counted wherever they were: in `fit`'s and `evaluate`'s
      loss (`compute_loss`).

    It also makes `fit` and `evaluate` work under
    `tf.distribute.MultiWorkerMirroredStrategy`, where Keras 3.15 fails for
    every model (tensorflow/tensorflow#72388): Keras averages each worker's
    batch to build the model, which the collective strategy cannot do
    eagerly, and reduces scalar logs along an axis 0 they do not have.

    Args:
        inputs, outputs, name: as for a Functional `keras.Model`.
        budget: optional dict `{"kind": "flops" | "params", "target": t}`
            with 0 < t ≤ 1.
        weight_decay: wd for `decay_weights_under_gates` (0: none).
    """

    def __init__(self, *args, **kwargs):
        budget = kwargs.pop("budget", None)
        weight_decay = kwargs.pop("weight_decay", 0.0)
        super().__init__(*args, **kwargs)
        self.gate_optimizer = None
        self.boosted_gate_optimizers = []
        self._boosted_rates = []
        self._attach_budget(budget)
        self.gated_weight_decay = None
        if weight_decay:
            self.decay_weights_under_gates(weight_decay)

    # ---------------------------------------------------------- weight decay
    def decay_weights_under_gates(self, weight_decay):
        """Charges ½·weight_decay·Σ P(kept)·w² over the Dense/Conv kernels
        (`tfsparse.weight_decay.GatedWeightDecay`) in place of their L2
        regularizers of that strength, which it takes off (any other
        regularizer on them is an error). Call it before `compile`.
        `tfsparse.compact` puts the plain L2 it stands for back on the
        compact kernels; `keras.models.clone_model`, which rebuilds from the
        layers' configs, gives a copy without decay."""
        self.gated_weight_decay = GatedWeightDecay(self, weight_decay, self.cost_model)
        self.gated_weight_decay.remove_plain_decay()

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if self.gated_weight_decay is None:
            return loss
        # Added as the kernels' L2 regularizers were: divided among replicas.
        return loss + self._aggregate_additional_loss(self.gated_weight_decay())

    # ---------------------------------------------------------------- budget
    def _attach_budget(self, budget):
        self.budget = None if budget is None else dict(budget)
        self._cost_model = None
        if budget is None:
            return
        if not isinstance(budget, dict) or set(budget) != {"kind", "target"}:
            raise ValueError(
                "`budget` must be a dict with exactly the keys 'kind' and 'target'; "
                f"got {budget!r}."
            )
        kind = _checks.choice("budget['kind']", budget["kind"], budget_lib.KINDS)
        kind, target = budget_lib.check_target(
            budget["target"] if kind == "flops" else None,
            budget["target"] if kind == "params" else None,
        )
        self.budget = {"kind": kind, "target": target}
        # λ₁, λ₂: trained by ascent. The current target (the scheduler lowers
        # it from 1 to `target`; without a scheduler it is `target` at once).
        self.budget_multipliers = self.add_weight(
            name="budget_multipliers", shape=(2,), initializer="zeros"
        )
        self.budget_target = self.add_weight(
            name="budget_target",
            shape=(),
            trainable=False,
            initializer=keras.initializers.Constant(target),
        )
        # The expected cost when the target's ramp starts (the scheduler
        # lowers the target from it); NaN until the scheduler records it.
        self.budget_start = self.add_weight(
            name="budget_start",
            shape=(),
            trainable=False,
            initializer=keras.initializers.Constant(float("nan")),
        )
        # 1 while the Lagrangian is in the loss, 0 while the gates cannot
        # move the cost (NPN's deterministic stage, after hardening): there
        # the multipliers would only wind up against a gap nothing closes.
        self.budget_engaged = self.add_weight(
            name="budget_engaged",
            shape=(),
            trainable=False,
            initializer=keras.initializers.Constant(1.0),
        )

    def load_own_variables(self, store):
        # A budgeted model saved before `budget_engaged` existed holds the
        # other three budget variables in the same order; the flag keeps its
        # initial value (engaged), which inference never reads.
        own = self._trainable_variables + self._non_trainable_variables
        if self.budget is None or len(store.keys()) != len(own) - 1:
            return super().load_own_variables(store)
        for i, variable in enumerate(own[:-1]):  # budget_engaged is the last
            variable.assign(store[str(i)])

    @property
    def cost_model(self):
        """The `tfsparse.budget.CostModel` of the budget's kind (built once)."""
        if self._cost_model is None:
            kind = self.budget["kind"] if self.budget else "flops"
            self._cost_model = budget_lib.CostModel(self, kind)
        return self._cost_model

    def _budget_term(self):
        """(Lagrangian term, expected cost fraction). The budget is an upper
        bound, so the quadratic term only acts over it."""
        cost = self.cost_model.constraint()
        gap = cost - self.budget_target
        over = tf.nn.relu(gap)
        lambdas = self.budget_multipliers
        term = lambdas[0] * gap + lambdas[1] * over * over
        return self.budget_engaged * term, cost

    def _restart_multipliers(self, cost):
        """Keeps λ₁, λ₂ ≥ 0 (the multipliers of an inequality) and sets λ₁
        back to 0 whenever the cost is within the target: the dual restarts
        of Gallego-Posada et al. 2022 ("Controlled Sparsity via Constrained
        Optimization"). Ascent alone winds λ₁ up while the cost lags a
        falling target; once the target stops, the cost went on falling
        below it (NPN on LeNet-300-100: 0.066 against 0.096), λ₁ turned
        negative, and Adam, which normalises the tiny pull on a closed gate
        to a full step, reopened closed units by the dozen (fc1: 69 → 106)."""
        over = tf.cast(cost > self.budget_target, self.budget_multipliers.dtype)
        self.budget_multipliers.assign(tf.nn.relu(self.budget_multipliers) * tf.stack([over, 1.0]))

    def get_config(self):
        config = super().get_config()
        if self.budget is not None:
            config["budget"] = dict(self.budget)
        if self.gated_weight_decay is not None:
            config["weight_decay"] = self.gated_weight_decay.weight_decay
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        budget = config.pop("budget", None)
        weight_decay = config.pop("weight_decay", 0.0)
        model = super().from_config(config, custom_objects=custom_objects)
        model._attach_budget(budget)
        model.gated_weight_decay = None
        if weight_decay:
            model.decay_weights_under_gates(weight_decay)
        return model

    # --------------------------------------------------------------- compile
    def compile(self, optimizer="rmsprop", *args, gate_optimizer=None, **kwargs):
        """`keras.Model.compile`, plus `gate_optimizer` (an optimizer or its
        name) for the gates' variables and a budget's multipliers; default:
        Adam (see the class docstring)."""
        super().compile(optimizer, *args, **kwargs)
        self.gate_optimizer = (
            keras.optimizers.get(gate_optimizer)
            if gate_optimizer is not None
            else _default_gate_optimizer(self.optimizer)
        )
        # Variables with an `lr_multiplier` get an optimizer of their own at
        # that multiple of the gates' rate: the same steps as scaling each
        # update afterwards (optimizers' steps are linear in the rate), with
        # each variable written once per step by one optimizer.
        self._boosted_rates = sorted(set(self._rate_groups()) - {1.0})
        self.boosted_gate_optimizers = [
            _scaled_optimizer(self.gate_optimizer, multiplier)
            for multiplier in self._boosted_rates
        ]
        # Both optimizers are built now so that a checkpoint (BackupAndRestore)
        # always holds the same state to restore. The weights' optimizer is
        # built over every trainable variable, as Keras builds it, so that its
        # parameter averaging (`use_ema`) covers the gates too and
        # `fit` can finalize it with the model's trainable variables.
        if self.built:
            if not self.optimizer.built:
                self.optimizer.build(self.trainable_variables)
            for optimizer, variables in self._optimizer_groups():
                if not optimizer.built:
                    optimizer.build(variables)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and self.gate_optimizer is not None:
            config["gate_optimizer"] = keras.optimizers.serialize(self.gate_optimizer)
        return config

    def compile_from_config(self, config):
        """Compiles a loaded model as it was compiled, gate optimizer included,
        so that `keras.models.load_model` restores every optimizer's state
        (Keras skips compiling a model whose `compile` is overridden)."""
        self.compile(**keras.saving.deserialize_keras_object(config))

    # ------------------------------------------------------------ train step
    def train_step(self, data):
        return _reducible_logs(self.distribute_strategy, self._gated_train_step(data))

    def test_step(self, data):
        return _reducible_logs(self.distribute_strategy, super().test_step(data))

    def _gate_variables(self):
        """The variables the gate optimizers train: the gates', and a
        budget's multipliers (last)."""
        variables = [v for g in gates_of(self) for v in g.trainable_weights]
        if self.budget is not None:
            variables.append(self.budget_multipliers)
        return variables

    def _rate_groups(self):
        """{learning-rate multiplier: the gate variables that take it}."""
        groups = {}
        for gate in gates_of(self):
            groups.setdefault(gate.lr_multiplier, []).extend(gate.trainable_weights)
        if self.budget is not None:
            groups.setdefault(BUDGET_LR_MULTIPLIER, []).append(self.budget_multipliers)
        return groups

    def _optimizer_groups(self):
        """[(optimizer, variables)]: each gate optimizer with the variables it trains."""
        optimizers = {1.0: self.gate_optimizer}
        optimizers.update(zip(self._boosted_rates, self.boosted_gate_optimizers))
        out = []
        for multiplier, variables in self._rate_groups().items():
            optimizer = optimizers.get(multiplier)
            if optimizer is None:
                raise ValueError(
                    f"A gate's lr_multiplier={multiplier} has no optimizer: "
                    "compile the model again after adding gates."
                )
            out.append((optimizer, variables))
        return out

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
        if not gates and self.budget is None and self.gated_weight_decay is None:
            return super().train_step(data)
        if self.gate_optimizer is None:
            raise ValueError("Compile the SparseModel before fitting it.")
        paired = [g for g in gates if g.pairs_passes]
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        noise = [g.pass_noise() for g in paired]
        cost = None
        try:
            for gate, u in zip(paired, noise):
                gate.start_pass(u, second=False)
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self._compute_loss(
                    x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
                )
                # Paired gates (ARM) compare this pass's loss with the second
                # pass's, which has no budget term: the term must stay out.
                first_loss = loss
                if self.budget is not None:
                    term, cost = self._budget_term()
                    # Keras divides the data loss by the replicas and sums
                    # their gradients: model-wide terms are divided likewise.
                    loss = loss + loss_module.scale_loss_for_distribution(term)
                self._loss_tracker.update_state(
                    loss_module.unscale_loss_for_distribution(loss),
                    sample_weight=tf.shape(tf.nest.flatten(x)[0])[0],
                )
                scaled_loss = self.optimizer.scale_loss(loss)
            if paired:
                for gate, u in zip(paired, noise):
                    gate.start_pass(u, second=True)
                # The penalties of both passes are equal, so f₁ − f₂ is the
                # difference of the data losses.
                second_loss = self._compute_loss(
                    x=x,
                    y=y,
                    y_pred=self(x, training=True),
                    sample_weight=sample_weight,
                    training=True,
                )
        finally:
            for gate in paired:
                gate.end_passes()

        gate_variables = self._gate_variables()
        owned = {id(v) for v in gate_variables}
        weights = [v for v in self.trainable_weights if id(v) not in owned]
        gradients = tape.gradient(scaled_loss, weights + gate_variables)
        weight_gradients = gradients[: len(weights)]
        gate_gradients = self._unscaled(gradients[len(weights) :])
        if paired:
            self._add_paired_gradients(
                gate_variables,
                gate_gradients,
                paired,
                noise,
                tf.stop_gradient(second_loss),
                tf.stop_gradient(first_loss),
            )
        if self.budget is not None:  # the multipliers ascend
            gate_gradients[-1] = -gate_gradients[-1]
        # No variable may change before both passes have read it. The
        # automatic control dependencies say so, but Grappler's dependency
        # optimizer can drop that order when an optimizer's IdentityN links
        # every update to every gradient (bench/grappler_read_order.py shows
        # it without tfsparse): φ's ARM term made the antithetic pass's reads
        # look ordered, and the same happens to the budget's λ, which the
        # forward pass reads for the gates' gradients only
        # (tests/test_arm_order.py checks both graphs).
        with tf.control_dependencies([scaled_loss] + ([second_loss] if paired else [])):
            self._apply_updates(weights, weight_gradients, gate_variables, gate_gradients)
        if cost is not None:
            self._restart_multipliers(cost)
        logs = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        if cost is not None:
            logs = {**logs, "cost": cost, "cost_target": tf.identity(self.budget_target)}
        return logs

    def _apply_updates(self, weights, weight_gradients, gate_variables, gate_gradients):
        gradient_of = {id(v): g for v, g in zip(gate_variables, gate_gradients)}
        for optimizer, variables in self._optimizer_groups():
            present = [
                (gradient_of[id(v)], v) for v in variables if gradient_of.get(id(v)) is not None
            ]
            if present:
                optimizer.apply_gradients(present)
        if weights:
            self.optimizer.apply_gradients(zip(weight_gradients, weights))

    def _unscaled(self, gradients):
        """Gate gradients without a mixed-precision loss scale (the gates'
        own optimizer does not know it); non-finite steps are skipped."""
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            return list(gradients)
        optimizer = self.optimizer  # the scale `scale_loss` used (before this step's update)
        scale = optimizer.dynamic_scale if optimizer.built else optimizer.initial_scale
        unscaled = [None if g is None else g / tf.cast(scale, g.dtype) for g in gradients]
        finite = tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(g)) for g in unscaled if g is not None]
        )
        return [None if g is None else tf.where(finite, g, tf.zeros_like(g)) for g in unscaled]

    def _add_paired_gradients(self, variables, gradients, gates, noise, second, first):
        position = {id(w): i for i, w in enumerate(variables)}
        for gate, u in zip(gates, noise):
            for variable, term in gate.paired_gradients(u, second, first):
                i = position.get(id(variable))
                if i is None:  # the gate is frozen (trainable=False)
                    continue
                gradients[i] = term if gradients[i] is None else gradients[i] + term


def _default_gate_optimizer(optimizer):
    """Adam at the weights' learning rate (schedule included) when they use
    Adam; Adam at 1e-3 otherwise."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if isinstance(inner, ADAMS):
        config = keras.optimizers.Adam().get_config()
        own = inner.get_config()
        config.update(
            {
                key: own[key]
                for key in ("learning_rate", "beta_1", "beta_2", "epsilon", "amsgrad")
                if key in own
            }
        )
        config["name"] = "gate_adam"
        return keras.optimizers.Adam.from_config(config)
    return keras.optimizers.Adam(1e-3, name="gate_adam")


def _scaled_optimizer(optimizer, factor):
    """A copy of `optimizer` (fresh state) whose learning rate is `factor` times its own."""
    config = optimizer.get_config()
    rate = config["learning_rate"]
    config["learning_rate"] = (
        rate * factor
        if isinstance(rate, (int, float))
        else schedules.ScaledLearningRate(rate, factor)
    )
    config["name"] = f"{config['name']}_x{factor:g}"
    return type(optimizer).from_config(config)


def _multi_worker(strategy):
    return strategy is not None and _collective_all_reduce_multi_worker(strategy)


def _reducible_logs(strategy, logs):
    """Gives scalar logs a length-1 axis under a multi-worker strategy, where
    Keras reduces logs with `strategy.reduce("MEAN", value, axis=0)`; the
    reduction removes the axis again, so callbacks see the usual scalars."""
    if not _multi_worker(strategy):
        return logs
    return tf.nest.map_structure(
        lambda v: tf.reshape(v, [1]) if getattr(v, "shape", None) == () else v, logs
    )
