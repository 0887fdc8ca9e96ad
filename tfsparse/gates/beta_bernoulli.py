"""Beta-Bernoulli dropout, BB (Lee et al., 2018); its input-dependent
variant DBB is in `tfsparse.gates.dependent_beta_bernoulli`.

BB gives each unit k a keep-probability π_k with prior Beta(α, 1) and
approximate posterior Kumaraswamy(a_k, b_k); a unit's mask is a relaxed
Bernoulli(π_k) draw. The KL divergence between the two has a closed form,
which is the penalty. With a tiny α the prior puts almost all its mass near
π = 0, so units that the data does not need are driven to E[π] ≈ 0 and are
pruned.

The defaults are those of the authors' TensorFlow code
(OpenXAIProject/Variational_Dropouts, `src/model/bbdropout.py`,
`src/model/layers.py`).
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp
from keras import ops

from tfsparse import _checks, schedules
from tfsparse.gates import registry
from tfsparse.gates.base import UNIT, Gate

tfd = tfp.distributions

EULER_GAMMA = 0.5772156649015329
# Prior Beta(α, 1): the authors' α.
ALPHA = 1e-4
# a = softplus(a_raw): −1 for the LeNets (E[π] ≈ 0.24 at the start), the
# authors use 2 for VGG (E[π] ≈ 0.68).
A_RAW_INIT = -1.0
# b = softplus(0.5413) = 1.0000.
B_RAW_INIT = 0.5413
TEMPERATURE = 0.1
THRESHOLD = 1e-3
# The paper's objective: the KL at full weight.
KL_WEIGHT = 1.0
# The raw parameters are clipped before softplus, as in the authors' code:
# a_raw ≥ −10 and b_raw in [−10, 50], so that a, b ≥ softplus(−10) ≈ 4.5e-5
# and b ≤ 50 (the digamma, logs and samples stay finite). a has no upper
# bound: nothing overflows as a grows. σ_raw of DBB is clipped like b_raw.
RAW_MIN = -10.0
RAW_MAX = 50.0
# Uniform draws are kept in [ε, 1−ε] (1 − 1e-7 is still below 1 in float32)
# so that the inverse CDF and its gradient stay finite.
UNIFORM_EPS = 1e-7
# Probabilities passed to the relaxed Bernoulli are kept in [ε, 1−ε]: its
# logits then stay within ±13.8.
PROB_EPS = 1e-6


# ---------------------------------------------------------------- helpers
def kl_kumaraswamy_beta(a, b, alpha):
    """KL[Kumaraswamy(a, b) ‖ Beta(α, 1)], elementwise, in closed form.

    The paper's expression is
    (1 − α/a)(−γ_E − ψ(b) − 1/b) + log(a·b/α) − (b−1)/b. Since
    ψ(b) + 1/b = ψ(b + 1), the first factor is −(γ_E + ψ(b + 1)) = −H_b (the
    harmonic number), which avoids the cancellation of two terms ≈ 1/b when
    b is small; the log is split for the same reason.

    Args:
        a, b: concentrations of the Kumaraswamy (positive tensors).
        alpha: concentration α of the Beta(α, 1) prior (positive).

    Returns:
        The KL divergence, same shape as `a`/`b`, in nats.
    """
    a = tf.convert_to_tensor(a)
    b = tf.convert_to_tensor(b, dtype=a.dtype)
    alpha = tf.cast(alpha, a.dtype)
    harmonic = tf.math.digamma(b + 1.0) + EULER_GAMMA
    return (
        (alpha / a - 1.0) * harmonic
        + tf.math.log(a)
        + tf.math.log(b)
        - tf.math.log(alpha)
        - 1.0
        + 1.0 / b
    )


def kumaraswamy_sample(a, b, u):
    """Draws π ~ Kumaraswamy(a, b) by the inverse CDF of a uniform `u`.

    π = (1 − (1 − u)^(1/b))^(1/a), computed as
    exp(log(−expm1(log1p(−u)/b)) / a). TFP's own inverse CDF computes
    log1p(−exp(t)), which is −inf (and its gradient NaN) once exp(t) rounds
    to 1, i.e. for u below ~6e-8·b in float32; this form is finite for every
    u in (0, 1).
    """
    log_pi = ops.log(-ops.expm1(ops.log1p(-u) / b)) / a
    return ops.exp(log_pi)


def relaxed_bernoulli_sample(probs, temperature, u):
    """A reparameterized draw of tfd.RelaxedBernoulli(temperature, probs).

    `probs` is clipped to [ε, 1−ε] so that the distribution's logits are
    finite. The draw is sigmoid((logits + log u − log(1−u)) / temperature)
    with `u` a (clamped) uniform of the shape of `probs`: the distribution's
    own reparameterization, written with a plain sigmoid because TFP's
    `sample()` goes through its Sigmoid bijector, whose gradient is NaN once
    the argument exceeds ~88 in float32 (at temperature 0.1, whenever
    logits + noise > 8.8).
    """
    probs = ops.clip(probs, PROB_EPS, 1.0 - PROB_EPS)
    distribution = tfd.RelaxedBernoulli(temperature, probs=probs)
    noise = ops.log(u) - ops.log1p(-u)
    return ops.sigmoid((distribution.logits_parameter() + noise) / temperature)


def _uniform(shape, seed_generator):
    return keras.random.uniform(
        shape, minval=UNIFORM_EPS, maxval=1.0 - UNIFORM_EPS, seed=seed_generator
    )


def _f32(x):
    return ops.cast(x, "float32")


# ------------------------------------------------------------------- BB
@registry.register
@keras.saving.register_keras_serializable(package="tfsparse")
class BetaBernoulliGate(Gate):
    """Beta-Bernoulli dropout on the channels (last axis) of its input.

    Each channel k has a keep-probability π_k with prior Beta(α, 1) and
    variational posterior q(π_k) = Kumaraswamy(a_k, b_k), a = softplus(a_raw),
    b = softplus(b_raw) (trainable). A training call draws one π ~ q per step
    (shape `[C]`) and one relaxed mask z ~ RelaxedBernoulli(temperature, π)
    per example (shape `[B, 1, …, 1, C]`), and adds the penalty
    kl_weight · Σ_k KL[q(π_k) ‖ Beta(α, 1)] / N. Inference multiplies
    channel k by E[π_k] (the Kumaraswamy mean) when E[π_k] > threshold and by
    0 otherwise; no random op runs.

    The distributions are TFP's `tfd.Kumaraswamy` (`posterior()`),
    `tfd.Beta` (`prior()`) and `tfd.RelaxedBernoulli` (which gives the
    mask's logits). Both draws are reparameterized from clamped uniforms in
    forms whose values and gradients stay finite for every a, b in range
    (`kumaraswamy_sample`, `relaxed_bernoulli_sample` say why TFP's own
    `sample()` is not used).

    The penalty is a KL divergence, so it is not weighted by `group_size`
    (which only informs the summary).

    Args:
        alpha: α of the Beta(α, 1) prior (> 0); small values prune more.
        a_raw_init: initial a_raw, a = softplus(a_raw); −1 (the authors'
            LeNet value, E[π] ≈ 0.24 at the start) or 2 (their VGG value,
            E[π] ≈ 0.68). At least −10.
        b_raw_init: initial b_raw; 0.5413 gives b = 1. In [−10, 50].
        temperature: temperature of the relaxed Bernoulli (scheduled value
            `temperature`).
        threshold: inference keeps a channel when E[π] > threshold, in
            [0, 1).
        kl_weight: initial factor on the KL (scheduled value `kl_weight`, for
            a KL warm-up), ≥ 0.
        structure: `"unit"` only (one π per channel).
        dataset_size, group_size, seed, lr_multiplier: see `Gate`.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tensor whose last axis holds the channels.
        training: Python boolean; `True` samples a mask and adds the KL.

    Examples:
        >>> x = keras.Input((784,))
        >>> h = BetaBernoulliGate(dataset_size=60000, name="input_gate")(x)
        >>> h = keras.layers.Dense(500, activation="relu")(h)
        >>> h = BetaBernoulliGate(dataset_size=60000)(h)

    References:
        - [Lee et al., 2018. Adaptive Network Sparsification with Dependent
          Variational Beta-Bernoulli Dropout](https://arxiv.org/abs/1805.10896)
        - [Nalisnick & Smyth, 2017. Stick-Breaking Variational
          Autoencoders](https://arxiv.org/abs/1605.06197) (the
          Kumaraswamy–Beta KL)
    """

    structure_choices = (UNIT,)
    method = "bb"
    # E[π] must fall under 1e-3 to prune: measured on LeNet-500-300 (mnist-10k),
    # gates at 10× the weights' rate kept 394-380-261 units after 60 epochs,
    # at 50× 183-117-67 after 100.
    recommended = {"lr_multiplier": 50.0}
    # Recipes train BB without its KL for this fraction of the epochs unless
    # the weights start pretrained. With the KL from the first step (and the
    # gates' 50× rate) every unit of LeNet-300-100 closed within 60 epochs on
    # mnist-10k (88.7 % test error); with 6 epochs without it 196-138-76
    # stayed, 14.4 % of the FLOPs at 3.64 % (dense 4.21). The paper pretrains
    # the network instead (`train.py --pretrain-epochs`).
    kl_warmup_fraction = 0.1

    @classmethod
    def search_space(cls, hp):
        """The gates' rate. DBB continues a trained BB model: BB's rate is its
        default too."""
        default = cls.recommended.get(
            "lr_multiplier", BetaBernoulliGate.recommended["lr_multiplier"]
        )
        return {
            "lr_multiplier": hp.Choice("lr_multiplier", [10.0, 30.0, 50.0, 100.0], default=default)
        }

    @classmethod
    def recipe_plan(cls, epochs, settings, budgeted=False, pretrained=False, **context):
        settings, plan = super().recipe_plan(epochs, settings, budgeted)
        if cls.kl_warmup_fraction and not pretrained:
            warmup = round(cls.kl_warmup_fraction * epochs)
            plan["schedules"] = {
                "kl_weight": schedules.Stages(
                    [warmup], [0.0, settings.get("kl_weight", KL_WEIGHT)]
                )
            }
        return settings, plan

    def __init__(
        self,
        alpha=ALPHA,
        a_raw_init=A_RAW_INIT,
        b_raw_init=B_RAW_INIT,
        temperature=TEMPERATURE,
        threshold=THRESHOLD,
        kl_weight=KL_WEIGHT,
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
        self.alpha = float(_checks.number("alpha", alpha, low=0, low_open=True))
        self.a_raw_init = float(_checks.number("a_raw_init", a_raw_init, low=RAW_MIN))
        self.b_raw_init = float(
            _checks.number("b_raw_init", b_raw_init, low=RAW_MIN, high=RAW_MAX)
        )
        self.initial_temperature = float(
            _checks.number("temperature", temperature, low=0, low_open=True)
        )
        self.threshold = float(
            _checks.number("threshold", threshold, low=0, high=1, high_open=True)
        )
        self.initial_kl_weight = float(_checks.number("kl_weight", kl_weight, low=0))

    # ------------------------------------------------------------- build
    def build_gate(self, mask_shape):
        self._build_bb(mask_shape, trainable=True)
        self.temperature = self.add_scheduled("temperature", self.initial_temperature)
        self.kl_weight = self.add_scheduled("kl_weight", self.initial_kl_weight)

    def _build_bb(self, mask_shape, trainable):
        # autocast=False: under mixed precision the probabilities and the KL
        # are still computed from float32 parameters.
        self.a_raw = self.add_weight(
            name="a_raw",
            shape=mask_shape,
            dtype="float32",
            trainable=trainable,
            initializer=keras.initializers.Constant(self.a_raw_init),
            autocast=False,
        )
        self.b_raw = self.add_weight(
            name="b_raw",
            shape=mask_shape,
            dtype="float32",
            trainable=trainable,
            initializer=keras.initializers.Constant(self.b_raw_init),
            autocast=False,
        )

    # -------------------------------------------------------- posterior
    def concentrations(self):
        """(a, b) of the Kumaraswamy posterior, float32 tensors of shape [C]."""
        a = ops.softplus(ops.maximum(self.a_raw, RAW_MIN))
        b = ops.softplus(ops.clip(self.b_raw, RAW_MIN, RAW_MAX))
        return a, b

    def posterior(self):
        """q(π) = `tfd.Kumaraswamy(a, b)`, batch shape [C]."""
        a, b = self.concentrations()
        return tfd.Kumaraswamy(concentration1=a, concentration0=b)

    def prior(self):
        """p(π) = `tfd.Beta(α, 1)`."""
        return tfd.Beta(tf.constant(self.alpha, "float32"), tf.constant(1.0, "float32"))

    def expected_pi(self):
        """E_q[π] per channel (the Kumaraswamy mean b·B(1 + 1/a, b))."""
        return self.posterior().mean()

    def open_probability(self):
        return self.expected_pi()

    def sample_pi(self):
        """One draw π ~ q, shape [C]."""
        a, b = self.concentrations()
        return kumaraswamy_sample(a, b, _uniform(self.mask_shape, self.seed_generator))

    # ---------------------------------------------------- gate contract
    def sample_mask(self, inputs):
        # One π per step, one relaxed z per example and channel.
        pi = self.sample_pi()
        u = _uniform(self.noise_shape(inputs), self.seed_generator)
        return relaxed_bernoulli_sample(pi, _f32(self.temperature), u)

    def deterministic_mask(self):
        mean = self.expected_pi()
        return ops.where(mean > self.threshold, mean, ops.zeros_like(mean))

    def bb_kl(self):
        """Σ_k KL[Kumaraswamy(a_k, b_k) ‖ Beta(α, 1)] (no weight, no 1/N)."""
        a, b = self.concentrations()
        return ops.sum(kl_kumaraswamy_beta(a, b, self.alpha))

    def regularization(self):
        return _f32(self.kl_weight) * self.bb_kl()

    def penalty(self):
        # Same as `Gate.penalty`, but `hardened` is cast first: under a mixed
        # precision policy it is autocast to float16 while the KL is float32.
        hardened = _f32(self.hardened)
        return (1.0 - hardened) * self.regularization() / float(self.dataset_size)

    def expected_active(self, inputs=None):
        """Mean number of channels kept per example at inference (for BB the
        same for every example, so `inputs` is ignored)."""
        del inputs
        return ops.sum(ops.cast(self.active(), "float32"))

    def recipe_settings(self):
        return {"kl_weight": self.initial_kl_weight}

    def get_config(self):
        config = super().get_config()
        config.update(
            alpha=self.alpha,
            a_raw_init=self.a_raw_init,
            b_raw_init=self.b_raw_init,
            temperature=self.initial_temperature,
            threshold=self.threshold,
            kl_weight=self.initial_kl_weight,
        )
        return config
