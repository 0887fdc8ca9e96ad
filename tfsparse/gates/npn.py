"""Neural Plasticity Network gates (Li & Ji, 2019)."""

import math

import keras
import numpy as np
from keras import ops

from tfsparse import _checks, schedules
from tfsparse.gates import registry
from tfsparse.gates.base import UNIT, Gate
from tfsparse.gates.hard_concrete import BETA, l0_search_space, sample_hard_concrete

PRUNE = "prune"
EXPAND = "expand"
ARM = "arm"
HARD_CONCRETE = "hard_concrete"
# φ of a hibernating gate is −40/k: closed for every k the schedule uses.
HIBERNATE_LOGIT = -40.0
# φ of an open gate is 3/k: π = σ(3) ≈ 0.95 at k = k_plastic.
OPEN_LOGIT = 3.0


@registry.register
@keras.saving.register_keras_serializable(package="tfsparse")
class NPNGate(Gate):
    """Stochastic binary gate whose plasticity is set by one number k.

    Each unit has a parameter φ and is open with probability π = σ(k·φ).
    k = 0 makes every π exactly 0.5 and gives φ no gradient (dropout at rate
    0.5); a very large k makes the gate deterministic, 1[φ > 0] (ordinary
    training of the open units). `k` is a scheduled value: the paper trains in
    three stages, k = 5000, then k = k_plastic, then k = 5000 again with the
    gates hardened (`tfsparse.schedules.npn_stages`).

    The penalty is λ · Σ π · group_size / N. Inference keeps units with
    π ≥ 0.5 and scales them by π.

    Two gradient estimators for φ:

    - `"arm"` (the paper's): the mask is z = 1[u < π] with one u ~ U(0, 1)
      per unit and batch; φ's gradient is k·(f₁ − f₂)·(u − ½), where f₂ is the
      batch loss of that pass and f₁ the loss of a second pass with the
      antithetic mask 1[u > 1 − π]. The second pass needs the whole model's
      loss, so it runs in `tfsparse.SparseModel.train_step`; in any other
      training loop φ learns from the penalty alone.
    - `"hard_concrete"`: one pass, a hard-concrete relaxation with logit k·φ
      and one draw per example (cheaper, biased).

    Args:
        lam: λ, the L0 strength (≥ 0).
        k: initial value of the scheduled `k` (≥ 0). Defaults to `k_plastic`.
        k_plastic: the k of the plastic stage; φ is initialised relative to
            it (open gates at 3/k_plastic, hibernating ones at −40/k_plastic).
        mode: `"prune"` (every gate starts open, π ≈ 0.95) or `"expand"` (only
            the first `init_size` gates start open; `wake_next` opens more).
        init_size: number of gates open at the start in expand mode.
        estimator: `"arm"` or `"hard_concrete"`.
        structure, dataset_size, group_size, seed: see `Gate`.

    References:
        - [Li & Ji, 2019. Neural Plasticity Networks](
          https://arxiv.org/abs/1908.08118)
        - [Yin & Zhou, 2019. ARM: Augment-REINFORCE-Merge gradient for
          stochastic binary networks](https://arxiv.org/abs/1807.11143)
    """

    # A budget replaces the L0 penalty (see tfsparse.budget).
    budget_replaces = "lam"
    per_gate_settings = ("lam",)
    per_hidden_gate_settings = ("init_size",)
    method = "npn"
    # As hard-concrete's (measured on mnist-10k).
    recommended = {"lam": 0.05, "lr_multiplier": 10.0}
    # The recipe's plastic-stage k by mode (the paper's LeNet runs), and its
    # stage boundaries as fractions of training (the paper: 100 and 350 of
    # 500 epochs).
    k_plastic_by_mode = {PRUNE: 7.0, EXPAND: 1.0}
    stage1_fraction = 0.2
    stage2_fraction = 0.7

    @classmethod
    def search_space(cls, hp):
        """λ, the gates' rate and the plastic stage's k."""
        return {
            **l0_search_space(cls, hp),
            "k_plastic": hp.Float(
                "k_plastic", 1.0, 20.0, sampling="log", default=cls.k_plastic_by_mode[PRUNE]
            ),
        }

    @classmethod
    def recipe_plan(cls, epochs, settings, budgeted=False, **context):
        """The paper's three stages scaled to `epochs`: k deterministic, then
        plastic from `stage1` (expansion in expand mode; with a budget the
        target falls through the plastic stage along a cubic and is reached
        one epoch before hardening), then hardening at `stage2`.
        Recipe settings: `k_plastic` (default by mode), `stage1`, `stage2`
        (epochs), `expand_size` (gates woken per layer and improved epoch;
        the paper's 1), `expand_fill` (φ·k_plastic of a woken gate)."""
        if "harden_fraction" in settings:
            raise ValueError(
                "`harden_fraction` does not apply to NPN, which hardens at "
                "`stage2` (an epoch; default 70 % of `epochs`)."
            )
        settings = dict(settings)
        expand = settings.get("mode") == EXPAND
        k_plastic = settings.setdefault(
            "k_plastic", cls.k_plastic_by_mode[EXPAND if expand else PRUNE]
        )
        stage1 = settings.pop("stage1", round(cls.stage1_fraction * epochs))
        stage2 = settings.pop("stage2", round(cls.stage2_fraction * epochs))
        plan = {
            "schedules": {"k": schedules.npn_stages(k_plastic, stage1, stage2)},
            "harden_at": stage2,
            "expand_between": (stage1, stage2) if expand else None,
            "expand_size": settings.pop("expand_size", 1),
            # A woken gate starts open like the initial ones (π ≈ 0.95 at
            # k_plastic). The paper's fill of 0 (π = 0.5) leaves it on the
            # threshold: the first update closes half of them, and a closed
            # woken gate stops that layer's growth for good.
            "expand_fill": settings.pop("expand_fill", OPEN_LOGIT),
            # The target falls while the gates are plastic (a deterministic
            # gate cannot follow it), fast while the network is wide and
            # slowly near the end, as NPN's own λ-driven runs shrink: reached
            # half-way through the stage along a line, the same FLOPs cost
            # 0.3 point more error on LeNet-300-100 (docs/budgets.md).
            "budget_starts_at": stage1 if budgeted else None,
            "budget_reached_at": max(stage1 + 1, stage2 - 1) if budgeted else None,
            "budget_ramp_power": 3.0 if budgeted else 1.0,
        }
        return settings, plan

    def __init__(
        self,
        lam=0.1,
        k=None,
        k_plastic=7.0,
        mode=PRUNE,
        init_size=None,
        estimator=ARM,
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
        self.lam = _checks.number("lam", lam, low=0)
        self.k_plastic = _checks.number("k_plastic", k_plastic, low=0, low_open=True)
        self.initial_k = _checks.number("k", self.k_plastic if k is None else k, low=0)
        self.mode = _checks.choice("mode", mode, (PRUNE, EXPAND))
        self.estimator = _checks.choice("estimator", estimator, (ARM, HARD_CONCRETE))
        if mode == EXPAND:
            if init_size is None:
                raise ValueError(
                    "`init_size` is required with mode='expand': the "
                    "number of gates open at the start (an integer ≥ 1)."
                )
            _checks.number("init_size", init_size, low=1, integer=True)
        elif init_size is not None:
            raise ValueError(
                "`init_size` is only accepted with mode='expand'; "
                f"got init_size={init_size!r} with mode={mode!r}."
            )
        self.init_size = init_size
        # Set by SparseModel.train_step while it traces the ARM passes.
        self._pass_noise = None
        self._second_pass = False

    def build_gate(self, mask_shape):
        size = int(np.prod(mask_shape))
        awake = size if self.mode == PRUNE else min(self.init_size, size)
        self.phi = self.add_weight(
            name="phi", shape=mask_shape, initializer=self._phi_initializer(awake)
        )
        self.k = self.add_scheduled("k", self.initial_k)
        # How many gates (in flat order) have been woken; expand mode grows it.
        self.awake = self.add_weight(
            name="awake", shape=(), initializer=keras.initializers.Constant(awake), trainable=False
        )
        # Best monitored loss so far, for the expansion rule; a variable so
        # that it is checkpointed with the model and a resumed run agrees.
        self.expansion_best = self.add_weight(
            name="expansion_best",
            shape=(),
            initializer=keras.initializers.Constant(float("inf")),
            trainable=False,
        )

    def _phi_initializer(self, awake):
        rng = np.random.default_rng(self.seed)

        def initializer(shape, dtype=None):
            size = int(np.prod(shape))
            values = np.full(size, HIBERNATE_LOGIT / self.k_plastic)
            values[:awake] = OPEN_LOGIT / self.k_plastic
            values += rng.normal(0.0, 0.01, size)
            return ops.convert_to_tensor(values.reshape(shape), dtype=dtype or "float32")

        return initializer

    def probability(self):
        """π = σ(k·φ), the probability that each gate is open."""
        return ops.sigmoid(self.k * self.phi)

    def open_probability(self):
        return self.probability()

    def keep_score(self):
        # σ(k·φ) orders the units as φ does for any k > 0; φ does not saturate.
        return self.phi

    def sample_mask(self, inputs):
        if self.estimator == HARD_CONCRETE:
            return sample_hard_concrete(
                self.k * self.phi, self.noise_shape(inputs), BETA, self.seed_generator
            )
        pi = ops.stop_gradient(self.probability())
        u = self._pass_noise
        if u is None:
            u = self.pass_noise()
        if self._second_pass:
            return ops.cast(u > 1.0 - pi, "float32")
        return ops.cast(u < pi, "float32")

    # ARM's two passes (see Gate's paired-pass contract): the first with
    # z = 1[u < π], the second with the antithetic z = 1[u > 1 − π].
    @property
    def pairs_passes(self):
        return self.estimator == ARM

    def pass_noise(self):
        return keras.random.uniform(self.mask_shape, seed=self.seed_generator)

    def start_pass(self, noise, second):
        self._pass_noise, self._second_pass = noise, second

    def end_passes(self):
        self._pass_noise, self._second_pass = None, False

    def paired_gradients(self, noise, second_loss, first_loss):
        return [(self.phi, self.arm_gradient(noise, second_loss, first_loss))]

    def arm_gradient(self, u, f1, f2):
        """φ's ARM gradient for one draw `u` and the losses f₁ (antithetic
        pass) and f₂ (main pass); zero once hardened."""
        return (1.0 - self.hardened) * self.k * (f1 - f2) * (u - 0.5)

    def deterministic_mask(self):
        pi = self.probability()
        return ops.where(pi >= 0.5, pi, ops.zeros_like(pi))

    def regularization(self):
        return self.lam * self.group_size * ops.sum(self.probability())

    def wake_next(self, fill=0.0, count=1):
        """Expand mode: wakes the next `count` hibernating gates (φ =
        fill/k_plastic) if every gate woken so far is still open. Returns the
        number woken. Call eagerly (the scheduler does, after validation)."""
        awake = int(self.awake.numpy())
        size = int(np.prod(self.mask_shape))
        n_active = int(ops.sum(ops.cast(self.active(), "int32")))
        if awake >= size or n_active < awake or bool(self.hardened.numpy()):
            return 0
        woken = min(count, size - awake)
        phi = np.array(self.phi.numpy()).reshape(-1)
        phi[awake : awake + woken] = fill / self.k_plastic
        self.phi.assign(phi.reshape(self.mask_shape))
        self.awake.assign(awake + woken)
        return woken

    @classmethod
    def site_settings(cls, settings, grows, index, site=0):
        """Expand mode grows hidden units only (input features and attention
        heads start open and prune); a list `init_size` has one entry per
        hidden-unit gate."""
        settings = cls.one_site(settings, site)
        if settings.get("mode", PRUNE) != EXPAND:
            return settings
        if not grows:
            return {**settings, "mode": PRUNE, "init_size": None}
        sizes = settings.get("init_size")
        if not isinstance(sizes, (list, tuple)):
            return settings
        if index >= len(sizes):
            raise ValueError(
                f"`init_size` has {len(sizes)} entries but the model has more hidden-unit gates."
            )
        return {**settings, "init_size": sizes[index]}

    def grow(self, monitored, fill, size):
        """Expand mode: wakes `size` more units (`wake_next`) when the
        monitored value beat its best so far."""
        if self.mode != EXPAND or math.isnan(monitored):
            return 0
        if monitored >= float(self.expansion_best.numpy()):
            return 0
        woken = self.wake_next(fill, size)
        self.expansion_best.assign(monitored)
        return woken

    def recipe_settings(self):
        return {"mode": self.mode, "k_plastic": self.k_plastic}

    def get_config(self):
        config = super().get_config()
        config.update(
            lam=self.lam,
            k=self.initial_k,
            k_plastic=self.k_plastic,
            mode=self.mode,
            init_size=self.init_size,
            estimator=self.estimator,
        )
        return config
