"""Hard-concrete L0 gates (Louizos, Welling & Kingma, 2018)."""

import math

import keras
from keras import ops

from tfsparse import _checks
from tfsparse.gates import registry
from tfsparse.gates.base import UNIT, WEIGHT, Gate

# Stretch interval (gamma, zeta) and the default temperature from the paper.
GAMMA = -0.1
ZETA = 1.1
BETA = 2.0 / 3.0
# Uniform draws are kept away from 0 and 1 so that the logit stays finite.
EPSILON = 1e-6


def sample_hard_concrete(log_alpha, shape, temperature, seed):
    """Draws z = clip(s·(ζ−γ)+γ, 0, 1) with s a binary-concrete sample."""
    u = keras.random.uniform(shape, minval=EPSILON, maxval=1.0 - EPSILON, seed=seed)
    s = ops.sigmoid((ops.log(u) - ops.log(1.0 - u) + log_alpha) / temperature)
    return ops.clip(s * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def hard_concrete_mean_mask(log_alpha):
    """The test-time gate: clip(σ(log α)·(ζ−γ)+γ, 0, 1)."""
    return ops.clip(ops.sigmoid(log_alpha) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def prob_nonzero(log_alpha, temperature):
    """P(z ≠ 0) = σ(log α − β·log(−γ/ζ)), the expected L0 norm per gate."""
    return ops.sigmoid(log_alpha - temperature * math.log(-GAMMA / ZETA))


@keras.saving.register_keras_serializable(package="tfsparse")
class ClipValue(keras.constraints.Constraint):
    """Keeps a variable inside [min_value, max_value] after each update."""

    def __init__(self, min_value, max_value):
        self.min_value = min_value
        self.max_value = max_value

    def __call__(self, w):
        return ops.clip(w, self.min_value, self.max_value)

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value}


def l0_search_space(family, hp):
    """The search over an L0 family's λ and gate learning-rate multiplier.
    The multiplier's choices start at 3: at ×1 the gates of a 20-50 epoch
    trial on a small dataset barely move (a first 20-trial search on
    mnist-10k spent 7 trials there, all at the dense network's FLOPs)."""
    return {
        "lam": hp.Float("lam", 0.01, 0.5, sampling="log", default=family.recommended["lam"]),
        "lr_multiplier": hp.Choice(
            "lr_multiplier", [3.0, 10.0, 30.0], default=family.recommended["lr_multiplier"]
        ),
    }


@registry.register
@keras.saving.register_keras_serializable(package="tfsparse")
class HardConcreteGate(Gate):
    """L0 gate with a hard-concrete relaxation (Louizos et al., 2018).

    Each mask value has a trainable log α. Training draws
    z = clip(σ((log u − log(1−u) + log α)/β)·(ζ−γ)+γ, 0, 1), by default one
    draw per batch (shared by its examples), and adds the expected L0 norm
    λ · Σ P(z ≠ 0) · group_size / N. Inference uses
    clip(σ(log α)·(ζ−γ)+γ, 0, 1), which is exactly 0 for closed gates.

    Args:
        lam: λ, the strength of the L0 penalty (≥ 0).
        init_drop_rate: initial probability p of a closed gate; log α starts
            at N(log((1−p)/p), 0.01).
        temperature: β of the concrete distribution (scheduled value
            `temperature`).
        per_example: False (default) draws one mask per batch, as the
            official code does by default (`local_rep=False`); True draws one
            per example and unit: lower-variance gradients, which pay off when
            training has few steps (on scikit-learn's digits, 12 steps per
            epoch, `make demo` prunes twice as many weights with them), but
            elementwise work that grows with the batch (on LeNet-300-100 a
            training step costs about 1.6× dense instead of 1.2×,
            `bench.timing`). Weight gates always draw one per batch.
        structure, dataset_size, group_size, seed: see `Gate`.

    Examples:
        >>> x = keras.Input((784,))
        >>> h = keras.layers.Dense(300, activation="relu")(x)
        >>> h = HardConcreteGate(lam=0.1, dataset_size=60000, group_size=785)(h)

    References:
        - [Louizos et al., 2018. Learning Sparse Neural Networks through L0
          Regularization](https://arxiv.org/abs/1712.01312)
    """

    # A budget replaces the L0 penalty (see tfsparse.budget).
    budget_replaces = "lam"
    per_gate_settings = ("lam", "init_drop_rate")
    method = "hard_concrete"
    # The official code charges its L2 under the gates, Σ P(z ≠ 0)·½·wd·‖w‖²
    # (its `_reg_w`; tfsparse.weight_decay).
    decays_weights_under_gates = True
    levels = (UNIT, WEIGHT)
    # Measured on mnist-10k (10,000 training images, 79 steps per epoch):
    # gates learn 10× faster than weights so that they settle within a
    # hundred epochs (the paper had 469 steps per epoch on full MNIST).
    recommended = {"lam": 0.05, "init_drop_rate": 0.2, "lr_multiplier": 10.0}

    @classmethod
    def search_space(cls, hp):
        """λ and the gates' rate, the initial drop rate, the concrete
        temperature β (the paper fixes 2/3; a colder gate is closer to its
        binary test-time value) and per-example or per-batch masks."""
        return {
            **l0_search_space(cls, hp),
            "init_drop_rate": hp.Float(
                "init_drop_rate", 0.05, 0.5, default=cls.recommended["init_drop_rate"]
            ),
            "temperature": hp.Float("temperature", 0.1, 1.0, sampling="log", default=BETA),
            "per_example": hp.Boolean("per_example", default=False),
        }

    def __init__(
        self,
        lam=0.1,
        init_drop_rate=0.5,
        temperature=BETA,
        per_example=False,
        structure=UNIT,
        dataset_size=1,
        group_size=1,
        seed=None,
        **kwargs,
    ):
        super().__init__(
            structure=structure,
            dataset_size=dataset_size,
            group_size=group_size,
            seed=seed,
            **kwargs,
        )
        if not isinstance(per_example, bool):
            raise TypeError(f"`per_example` must be True or False; got {per_example!r}.")
        self.per_example = per_example
        self.lam = _checks.number("lam", lam, low=0)
        self.init_drop_rate = _checks.number(
            "init_drop_rate", init_drop_rate, low=0, high=1, low_open=True, high_open=True
        )
        self.initial_temperature = _checks.number("temperature", temperature, low=0, low_open=True)

    def build_gate(self, mask_shape):
        mean = math.log((1.0 - self.init_drop_rate) / self.init_drop_rate)
        self.log_alpha = self.add_weight(
            name="log_alpha",
            shape=mask_shape,
            initializer=keras.initializers.RandomNormal(mean, 0.01, seed=self.seed),
            constraint=ClipValue(math.log(1e-2), math.log(1e2)),
        )
        self.temperature = self.add_scheduled("temperature", self.initial_temperature)

    def sample_mask(self, inputs):
        return sample_hard_concrete(
            self.log_alpha,
            self.noise_shape(inputs, per_example=self.per_example),
            self.temperature,
            self.seed_generator,
        )

    def deterministic_mask(self):
        return hard_concrete_mean_mask(self.log_alpha)

    def open_probability(self):
        return prob_nonzero(self.log_alpha, self.temperature)

    def regularization(self):
        p_open = prob_nonzero(self.log_alpha, self.temperature)
        return self.lam * self.group_size * ops.sum(p_open)

    def get_config(self):
        config = super().get_config()
        config.update(
            lam=self.lam,
            init_drop_rate=self.init_drop_rate,
            temperature=self.initial_temperature,
            per_example=self.per_example,
        )
        return config
