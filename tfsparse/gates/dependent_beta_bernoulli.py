"""Dependent Beta-Bernoulli dropout, DBB (Lee et al., 2018).

DBB multiplies the BB mask (`tfsparse.gates.beta_bernoulli`) by an
input-dependent factor: a per-example keep-probability computed from a
batch-normalised summary of the gate's input, so different examples switch
off different units. A compacted model keeps that factor as a
`DynamicBetaBernoulliMask` layer.

The defaults are those of the authors' TensorFlow code
(OpenXAIProject/Variational_Dropouts, `src/model/dbbdropout.py`).
"""

import math

import keras
from keras import ops

from tfsparse import _checks
from tfsparse.gates import registry
from tfsparse.gates.base import SEED_STATE, UNIT
from tfsparse.gates.beta_bernoulli import (
    A_RAW_INIT,
    ALPHA,
    B_RAW_INIT,
    KL_WEIGHT,
    RAW_MAX,
    RAW_MIN,
    TEMPERATURE,
    THRESHOLD,
    BetaBernoulliGate,
    _f32,
    _uniform,
    relaxed_bernoulli_sample,
)

# DBB: prior N(0, 5) on the shift β. The authors' code writes it as
# ρ = sqrt(5), a standard deviation, so 5 is the *variance*.
PRIOR_VARIANCE = 5.0
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3


def kl_normal(loc, scale, prior_variance):
    """KL[N(loc, scale²) ‖ N(0, prior_variance)], elementwise.

    Exact (it includes the constant −½ that the authors' code leaves out;
    the constant changes no gradient), so it is ≥ 0.
    """
    loc = ops.convert_to_tensor(loc)
    scale = ops.convert_to_tensor(scale, dtype=loc.dtype)
    variance = float(prior_variance)
    return (
        0.5 * math.log(variance)
        - ops.log(scale)
        + (ops.square(scale) + ops.square(loc)) / (2.0 * variance)
        - 0.5
    )


def _to_mask_shape(per_example, rank):
    """[B, C] → [B, 1, …, 1, C] for an input of the given rank."""
    for _ in range(rank - 2):
        per_example = ops.expand_dims(per_example, 1)
    return per_example


def _spatial_mean(inputs):
    """Mean over every axis but the batch and the channel axis, in float32."""
    x = _f32(inputs)
    rank = len(inputs.shape)
    if rank > 2:
        x = ops.mean(x, axis=tuple(range(1, rank - 1)))
    return x


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return value


@registry.register
@keras.saving.register_keras_serializable(package="tfsparse")
class DependentBetaBernoulliGate(BetaBernoulliGate):
    """Dependent Beta-Bernoulli dropout: a BB gate times a per-example mask.

    On top of the BB gate (see `BetaBernoulliGate`), each example gets a
    keep-probability per channel computed from its own activations:
    h = γ·(m − μ)/sqrt(σ_B² + ε) + β, where m is the gate's input averaged over
    the spatial axes (the input itself for a rank-2 input), with its gradient
    stopped, and μ, σ_B² the batch statistics in training and moving
    averages at inference (as in `keras.layers.BatchNormalization`; the
    moving averages are updated in training calls with `momentum`).

    Training: one draw ε ~ N(0, 1) per channel and step is added as
    softplus(σ_raw)·ε to h (a sample of the shift from its posterior
    N(β, σ²)), h is clipped to [1e-6, 1 − 1e-6] and z_D ~
    RelaxedBernoulli(temperature, h) is drawn per example; the mask is
    z_BB·z_D. The penalty is
    kl_weight · (Σ KL[q(π) ‖ Beta(α, 1)] + Σ KL[N(β, σ²) ‖ N(0, 5)]) / N;
    the prior N(0, 5) has *variance* 5 (the authors' code writes its standard
    deviation as sqrt(5)). With `freeze_bb=True` the first term is a
    constant (a and b receive no gradient).

    Inference (the authors' rule): with s_k = E[π_k] where kept by BB (else
    0) and d = clip(h, 0, 1) computed with the moving statistics, the mask is
    s_k·d where s_k·d > threshold, else 0, per example.

    `mask()`/`deterministic_mask()` and `active()` describe the static BB
    part (continuing a hardened BB gate, its hardened mask: the units a
    budget's projection closed stay closed); `inference_mask(inputs)` is the
    per-example mask;
    `compacted_layer(kept)` returns the `DynamicBetaBernoulliMask` that a
    compacted model keeps.

    The paper trains DBB starting from a trained BB model with a, b frozen:
    `DependentBetaBernoulliGate.from_bb(bb_gate)` or
    `tfsparse.sparsify(bb_model, "dbb", ...)`.

    Args:
        alpha, a_raw_init, b_raw_init, temperature, threshold, kl_weight: see
            `BetaBernoulliGate` (the temperature is used by both relaxed
            Bernoullis).
        freeze_bb: if True, a_raw and b_raw are not trainable and their
            gradient is stopped (DBB continues from a trained BB). Set it to
            False to learn BB and DBB together from scratch.
        gamma_init: initial scale γ of the normalisation.
        beta_init: initial shift β. The authors' code defaults to 10, which
            clips h to 1 for almost every example (the gate starts as the BB
            gate, and β must first travel down); with 1, the examples whose
            activation is below the batch mean get h < 1 from the first
            step. At inference right after creation (moving mean 0, variance
            1) a non-negative input gives h ≥ β, so with β ≥ 1 the DBB gate
            computes exactly its BB gate's function. Measured on
            LeNet-500-300 (`bench.dbb_control`, 30-epoch phases): from 10 the
            factor closed almost nothing and the error was no lower.
        sigma_raw_init: initial σ_raw, σ = softplus(σ_raw); 0 gives
            σ = log 2 ≈ 0.69, the centre of the authors' random
            initialisation. In [−10, 50].
        prior_variance: variance of the N(0, ·) prior on β (5).
        momentum: momentum of the moving mean and variance, in [0, 1).
        epsilon: added to the variance in the normalisation (> 0).
        structure, dataset_size, group_size, seed, lr_multiplier: see `Gate`.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tensor whose last axis holds the channels.
        training: Python boolean; `True` samples both masks, updates the
            moving statistics and adds the KL.

    Examples:
        >>> bb = model.get_layer("dense_1_gate")          # a trained BB gate
        >>> dbb = DependentBetaBernoulliGate.from_bb(bb)  # built, a, b copied

    References:
        - [Lee et al., 2018. Adaptive Network Sparsification with Dependent
          Variational Beta-Bernoulli Dropout](https://arxiv.org/abs/1805.10896)
    """

    input_dependent = True
    method = "dbb"
    recommended = {}
    # `sparsify(model, "dbb")` on a model with BB gates replaces each by a
    # DBB gate that starts from its posterior.
    continues = BetaBernoulliGate
    # DBB continues trained weights (a BB phase, or a dense network).
    kl_warmup_fraction = None
    # Constructor arguments that BB does not have (from_bb drops them when it
    # copies the settings of another DBB gate).
    _dbb_arguments = (
        "freeze_bb",
        "gamma_init",
        "beta_init",
        "sigma_raw_init",
        "prior_variance",
        "momentum",
        "epsilon",
    )

    def __init__(
        self,
        alpha=ALPHA,
        a_raw_init=A_RAW_INIT,
        b_raw_init=B_RAW_INIT,
        temperature=TEMPERATURE,
        threshold=THRESHOLD,
        kl_weight=KL_WEIGHT,
        freeze_bb=True,
        gamma_init=1.0,
        beta_init=1.0,
        sigma_raw_init=0.0,
        prior_variance=PRIOR_VARIANCE,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        structure=UNIT,
        dataset_size=1,
        group_size=1,
        seed=None,
        **kwargs,
    ):
        super().__init__(
            alpha=alpha,
            a_raw_init=a_raw_init,
            b_raw_init=b_raw_init,
            temperature=temperature,
            threshold=threshold,
            kl_weight=kl_weight,
            structure=structure,
            dataset_size=dataset_size,
            group_size=group_size,
            seed=seed,
            **kwargs,
        )
        self.freeze_bb = _check_bool("freeze_bb", freeze_bb)
        self.gamma_init = float(_checks.number("gamma_init", gamma_init))
        self.beta_init = float(_checks.number("beta_init", beta_init))
        self.sigma_raw_init = float(
            _checks.number("sigma_raw_init", sigma_raw_init, low=RAW_MIN, high=RAW_MAX)
        )
        self.prior_variance = float(
            _checks.number("prior_variance", prior_variance, low=0, low_open=True)
        )
        self.momentum = float(_checks.number("momentum", momentum, low=0, high=1, high_open=True))
        self.epsilon = float(_checks.number("epsilon", epsilon, low=0, low_open=True))

    @classmethod
    def for_several_inputs(cls, **settings):
        """A static BB gate: the per-example factor needs the one input it reads."""
        return BetaBernoulliGate(
            **{key: value for key, value in settings.items() if key not in cls._dbb_arguments}
        )

    @classmethod
    def from_bb(cls, bb_gate, **settings):
        """A DBB gate that continues from `bb_gate`.

        It takes `bb_gate`'s settings (α, inits, temperature, threshold,
        kl_weight, dataset_size, group_size, lr_multiplier, dtype), overridden
        by `settings`. If `bb_gate` is built, the new gate is built for the
        same channels and its a_raw, b_raw are copied (`load_bb_weights`);
        otherwise call `load_bb_weights` once both are built.
        """
        if not isinstance(bb_gate, BetaBernoulliGate):
            raise TypeError(
                f"`bb_gate` must be a BetaBernoulliGate, got {type(bb_gate).__name__}."
            )
        config = bb_gate.get_config()
        for key in ("name", "seed", "trainable"):
            config.pop(key, None)
        if isinstance(bb_gate, DependentBetaBernoulliGate):
            for key in DependentBetaBernoulliGate._dbb_arguments:
                config.pop(key, None)
        config.update(settings)
        dbb = cls(**config)
        if bb_gate.built:
            dbb.build((None,) + tuple(bb_gate.mask_shape))
            dbb.load_bb_weights(bb_gate)
        return dbb

    @classmethod
    def continuing(cls, previous, **settings):
        return cls.from_bb(previous, **settings)

    def load_previous(self, previous):
        self.load_bb_weights(previous)

    @classmethod
    def settings_from_scratch(cls, settings):
        """DBB straight on a network: there is no trained BB to keep frozen."""
        return {"freeze_bb": False, **settings}

    def load_bb_weights(self, bb_gate):
        """Copies a_raw and b_raw from a built BB gate with the same channels
        (call eagerly, after this gate is built)."""
        if not isinstance(bb_gate, BetaBernoulliGate):
            raise TypeError(
                f"`bb_gate` must be a BetaBernoulliGate, got {type(bb_gate).__name__}."
            )
        if not (self.built and bb_gate.built):
            raise ValueError(
                "load_bb_weights needs both gates built (call the model or `build` first)."
            )
        if tuple(self.mask_shape) != tuple(bb_gate.mask_shape):
            raise ValueError(
                f"BB gate {bb_gate.name!r} has mask shape "
                f"{tuple(bb_gate.mask_shape)}, this gate "
                f"{tuple(self.mask_shape)}."
            )
        self.a_raw.assign(bb_gate.a_raw)
        self.b_raw.assign(bb_gate.b_raw)
        # A hardened BB gate's units are decided (a budget's projection may
        # have closed units that E[π] keeps, or reopened one it drops): DBB
        # keeps those decisions, not E[π]'s rule, or it undoes the budget.
        hardened = bool(bb_gate.hardened.numpy())
        self.bb_hard_mask.assign(
            ops.cast(bb_gate.hard_mask, "float32") if hardened else -ops.ones(self.mask_shape)
        )

    def load_own_variables(self, store):
        # A gate saved before `bb_hard_mask` existed holds every other
        # variable, in the same order: it continued no hardened BB gate.
        variables = self._trainable_variables + self._non_trainable_variables
        saved = {key: store[key] for key in store.keys()}
        if len(saved) - (SEED_STATE in saved) == len(variables) - 1:
            values = [saved.pop(str(index)) for index in range(len(variables) - 1)]
            slot = next(i for i, v in enumerate(variables) if v is self.bb_hard_mask)
            values.insert(slot, -ops.ones(self.mask_shape))
            saved.update((str(index), value) for index, value in enumerate(values))
        super().load_own_variables(saved)

    # ------------------------------------------------------------- build
    def build_gate(self, mask_shape):
        self._build_bb(mask_shape, trainable=not self.freeze_bb)
        self.temperature = self.add_scheduled("temperature", self.initial_temperature)
        self.kl_weight = self.add_scheduled("kl_weight", self.initial_kl_weight)

        def weight(name, value, trainable=True):
            # Replicas average their updates of the moving statistics, so
            # that every worker of a distributed run keeps the same ones.
            return self.add_weight(
                name=name,
                shape=mask_shape,
                dtype="float32",
                initializer=keras.initializers.Constant(value),
                trainable=trainable,
                autocast=False,
                aggregation="none" if trainable else "mean",
            )

        self.gamma = weight("gamma", self.gamma_init)
        self.beta = weight("beta", self.beta_init)
        self.sigma_raw = weight("sigma_raw", self.sigma_raw_init)
        self.moving_mean = weight("moving_mean", 0.0, trainable=False)
        self.moving_variance = weight("moving_variance", 1.0, trainable=False)
        # The hardened mask of the BB gate this one continues (`load_bb_weights`);
        # negative: none, the static part follows E[π].
        self.bb_hard_mask = weight("bb_hard_mask", -1.0, trainable=False)

    def concentrations(self):
        a, b = super().concentrations()
        if self.freeze_bb:
            a, b = ops.stop_gradient(a), ops.stop_gradient(b)
        return a, b

    def _continues_hardened_bb(self):
        return self.bb_hard_mask >= 0

    def deterministic_mask(self):
        return ops.where(
            self._continues_hardened_bb(), self.bb_hard_mask, super().deterministic_mask()
        )

    def sigma(self):
        """σ = softplus(σ_raw), the posterior std of the shift β."""
        return ops.softplus(ops.clip(self.sigma_raw, RAW_MIN, RAW_MAX))

    # ---------------------------------------------------- dynamic part
    def _normalize(self, pooled, mean, variance):
        return self.gamma * (pooled - mean) * ops.rsqrt(variance + self.epsilon) + self.beta

    def open_probability(self):
        """E[π] (1 or 0 for the units of a hardened BB gate it continues) ×
        the per-example factor of an average example: the pooled input is
        normalized by its statistics, so its mean maps to β."""
        kept = ops.cast(self.bb_hard_mask > 0, "float32")
        static = ops.where(self._continues_hardened_bb(), kept, self.expected_pi())
        return static * ops.clip(self.beta, 0.0, 1.0)

    def dynamic_mask(self, inputs):
        """The per-example factor d = clip(h, 0, 1) at inference, [B, C]."""
        pooled = ops.stop_gradient(_spatial_mean(inputs))
        h = self._normalize(pooled, self.moving_mean, self.moving_variance)
        return ops.clip(h, 0.0, 1.0)

    def sample_mask(self, inputs):
        # After a hardened BB gate its mask is fixed, as BB's fine-tuning had it.
        z_bb = ops.where(
            self._continues_hardened_bb(), self.bb_hard_mask, super().sample_mask(inputs)
        )
        # The dynamic factor sees the activations but does not train them.
        pooled = ops.stop_gradient(_spatial_mean(inputs))
        mean, variance = ops.moments(pooled, axes=[0])
        self.moving_mean.assign(self.momentum * self.moving_mean + (1.0 - self.momentum) * mean)
        self.moving_variance.assign(
            self.momentum * self.moving_variance + (1.0 - self.momentum) * variance
        )
        h = self._normalize(pooled, mean, variance)
        # One draw per channel and step: a sample of the shift from N(β, σ²).
        noise = keras.random.normal(self.mask_shape, seed=self.seed_generator)
        h = h + self.sigma() * noise
        u = _uniform(ops.shape(h), self.seed_generator)
        z_d = relaxed_bernoulli_sample(h, _f32(self.temperature), u)
        return z_bb * _to_mask_shape(z_d, len(inputs.shape))

    def hardened_mask(self, inputs):
        return self.hard_mask * _to_mask_shape(self.dynamic_mask(inputs), len(inputs.shape))

    def inference_mask(self, inputs):
        static = _f32(self.mask())
        z = static * self.dynamic_mask(inputs)
        z = ops.where(z > self.threshold, z, ops.zeros_like(z))
        return _to_mask_shape(z, len(inputs.shape))

    def dbb_kl(self):
        """Σ_k KL[N(β_k, σ_k²) ‖ N(0, prior_variance)] (no weight, no 1/N)."""
        return ops.sum(kl_normal(self.beta, self.sigma(), self.prior_variance))

    def regularization(self):
        return _f32(self.kl_weight) * (self.bb_kl() + self.dbb_kl())

    def expected_active(self, inputs):
        """Mean number of channels whose inference mask is > 0, per example
        of the batch `inputs` (for reporting)."""
        z = self.inference_mask(inputs)
        rank = len(inputs.shape)
        if rank > 2:
            z = ops.reshape(z, (-1, z.shape[-1]))
        return ops.mean(ops.sum(ops.cast(z > 0, "float32"), axis=-1))

    def compacted_layer(self, kept, input_scale=None, apply_static=False):
        """The per-example mask of a compacted model, for channels `kept`.

        By default the layer does what `tfsparse.compact` needs: it takes the
        gate's unscaled input on the `kept` channels and multiplies it by the
        per-example part only, `inference_mask / mask()` (the static E[π]
        goes into the consumers' kernel rows).

        Args:
            kept: indices of the channels the compacted model keeps (the
                static survivors, `np.flatnonzero(gate.active())`).
            input_scale: optional positive factor per kept channel that the
                incoming tensor already carries (a multiplier folded into an
                earlier layer, e.g. this gate's own E[π] folded into the
                producer through a ReLU, or an upstream gate's). It is divided
                out before the normalisation and stays on the output.
            apply_static: also multiply by the static E[π] (then the output
                is the gated model's output on those channels).

        Returns:
            A built `DynamicBetaBernoulliMask` holding this gate's frozen
            statistics, γ, β and E[π] for `kept`.
        """
        kept = [int(k) for k in kept]
        channels = int(self.mask_shape[-1])
        if any(k < 0 or k >= channels for k in kept):
            raise ValueError(f"`kept` must hold channel indices in [0, {channels}); got {kept}.")
        layer = DynamicBetaBernoulliMask(
            units=len(kept),
            epsilon=self.epsilon,
            threshold=self.threshold,
            apply_static=apply_static,
            name=f"{self.name}_dynamic",
        )
        layer.build((None, len(kept)))
        values = {
            "gamma": self.gamma,
            "beta": self.beta,
            "moving_mean": self.moving_mean,
            "moving_variance": self.moving_variance,
            "static": _f32(self.mask()),
        }
        for name, source in values.items():
            source = ops.convert_to_tensor(source)
            getattr(layer, name).assign(ops.take(source, kept, axis=0))
        if input_scale is not None:
            scale = ops.convert_to_numpy(ops.convert_to_tensor(input_scale, "float32"))
            if scale.shape != (len(kept),) or not (scale > 0).all():
                raise ValueError(
                    f"`input_scale` must hold {len(kept)} positive factors "
                    f"(one per kept channel); got {input_scale!r}."
                )
            layer.input_scale.assign(scale)
        return layer

    def get_config(self):
        config = super().get_config()
        config.update(
            freeze_bb=self.freeze_bb,
            gamma_init=self.gamma_init,
            beta_init=self.beta_init,
            sigma_raw_init=self.sigma_raw_init,
            prior_variance=self.prior_variance,
            momentum=self.momentum,
            epsilon=self.epsilon,
        )
        return config


# ------------------------------------------------------ compacted layer
@keras.saving.register_keras_serializable(package="tfsparse")
class DynamicBetaBernoulliMask(keras.layers.Layer):
    """The inference-time per-example mask of a DBB gate, in plain Keras ops.

    What `tfsparse.compact` keeps of a `DependentBetaBernoulliGate`: the
    static part (which channels survive, and their factor s = E[π]) is
    folded into the neighbouring weights, the per-example part stays as this
    layer (`DependentBetaBernoulliGate.compacted_layer` makes one). For each
    example it computes m = mean of the input over the spatial axes, divided
    by `input_scale` (the factor the input carries, 1 by default),
    d = clip(γ·(m − μ)/sqrt(v + ε) + β, 0, 1) with the frozen moving mean μ
    and variance v, zeroes d where s·d ≤ threshold (the gate's rule) and
    returns input·d, or input·s·d with `apply_static=True`.

    All values are non-trainable weights, so the layer saves, loads and
    converts to TFLite like any Keras layer.

    Args:
        units: number of channels (last axis of the input).
        epsilon: added to the moving variance.
        threshold: the gate's threshold on s·d.
        apply_static: multiply by s as well (default False: s is folded into
            the consumers' kernel rows).
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: tensor `[B, …, units]`.

    Examples:
        >>> layer = dbb_gate.compacted_layer(kept=[0, 3, 4])
        >>> y = layer(x_kept)   # x_kept = the gate's input[..., [0, 3, 4]]

    References:
        - [Lee et al., 2018. Adaptive Network Sparsification with Dependent
          Variational Beta-Bernoulli Dropout](https://arxiv.org/abs/1805.10896)
    """

    # `tfsparse.summary` counts its per-example channels through `factor`.
    per_example_factor = True

    def __init__(
        self, units, epsilon=BN_EPSILON, threshold=THRESHOLD, apply_static=False, **kwargs
    ):
        super().__init__(**kwargs)
        self.units = _checks.number("units", units, low=0, integer=True)
        self.epsilon = float(_checks.number("epsilon", epsilon, low=0, low_open=True))
        self.threshold = float(
            _checks.number("threshold", threshold, low=0, high=1, high_open=True)
        )
        self.apply_static = _check_bool("apply_static", apply_static)

    def build(self, input_shape):
        if input_shape[-1] is not None and int(input_shape[-1]) != self.units:
            raise ValueError(
                f"{self.name!r} expects {self.units} channels, got input shape {input_shape}."
            )

        def weight(name, value):
            return self.add_weight(
                name=name,
                shape=(self.units,),
                dtype="float32",
                initializer=keras.initializers.Constant(value),
                trainable=False,
                autocast=False,
            )

        self.gamma = weight("gamma", 1.0)
        self.beta = weight("beta", 0.0)
        self.moving_mean = weight("moving_mean", 0.0)
        self.moving_variance = weight("moving_variance", 1.0)
        self.static = weight("static", 1.0)
        self.input_scale = weight("input_scale", 1.0)

    def factor(self, inputs):
        """The per-example multiplier, [B, C] (zero where s·d ≤ threshold)."""
        pooled = _spatial_mean(inputs) / self.input_scale
        h = (
            self.gamma
            * (pooled - self.moving_mean)
            * ops.rsqrt(self.moving_variance + self.epsilon)
            + self.beta
        )
        d = ops.clip(h, 0.0, 1.0)
        z = self.static * d
        return ops.where(z > self.threshold, z if self.apply_static else d, ops.zeros_like(d))

    def call(self, inputs):
        d = _to_mask_shape(self.factor(inputs), len(inputs.shape))
        return inputs * ops.cast(d, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            epsilon=self.epsilon,
            threshold=self.threshold,
            apply_static=self.apply_static,
        )
        return config
