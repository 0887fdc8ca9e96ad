"""Targeted dropout (Gomez et al., 2019): dropout aimed at the weights or units
that magnitude pruning would remove, so that the trained network does not
depend on them and can be pruned after training without fine-tuning.

The gate acts on a kernel (the input of its call is the kernel, as in
`tfsparse.layers.SparseDense`/`SparseConv2D`). The kernel is viewed as a
matrix [rows, units]: a Dense kernel as it is, a Conv2D kernel [kh, kw, in,
out] as [kh·kw·in, out].

Candidate count. With n values to rank (the rows of one column at weight
level, the columns at unit level) the candidates are the ⌊γ·n⌋ smallest, as in
the official code (for-ai/TD, `models/utils/dropouts.py`: the threshold is the
sorted magnitudes at index `int(γ·n)` and the candidates are the values
strictly below it). γ·n is computed with a relative tolerance of 1e-6, so that
the float32 rounding of γ cannot lose a candidate (γ = 0.29, n = 100 gives 29,
where `int(0.29 * 100)` is 28). Values tied with the threshold are not
candidates, which only matters for exact ties (e.g. weights already pruned to
zero: they are the smallest, so they fill the first candidate places and
their dropout changes nothing).
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfsparse import _checks, schedules
from tfsparse.gates import registry
from tfsparse.gates.base import UNIT, WEIGHT, Gate

# Relative slack on γ·n before the floor (see the module docstring).
COUNT_TOLERANCE = 1e-6


def candidate_count(fraction, n):
    """⌊fraction·n⌋ as a Python int (NumPy / eager side of the same rule
    that the gate applies to tensors)."""
    return min(int(np.floor(float(fraction) * n * (1.0 + COUNT_TOLERANCE))), n)


def _count_tensor(fraction, n):
    """⌊fraction·n⌋ as an int32 tensor in [0, n]; `fraction` may be a tensor."""
    count = ops.floor(ops.cast(fraction, "float32") * (float(n) * (1.0 + COUNT_TOLERANCE)))
    return ops.clip(ops.cast(count, "int32"), 0, n)


def smallest_mask(values, fraction, axis=0):
    """Boolean tensor: `values` strictly below the ⌊fraction·n⌋-th smallest
    along `axis` (n = the length of that axis); all of them when the count is n.

    One sort along `axis`; `fraction` may be a (scheduled) tensor.
    """
    values = ops.convert_to_tensor(values)
    n = int(values.shape[axis])
    count = _count_tensor(fraction, n)
    ordered = ops.sort(values, axis=axis)
    # A row of +inf after the largest value: index n means "every value".
    pad_shape = list(values.shape)
    pad_shape[axis] = 1
    ordered = ops.concatenate(
        [ordered, ops.full(pad_shape, float("inf"), dtype=ordered.dtype)], axis=axis
    )
    threshold = ops.take(ordered, ops.expand_dims(count, 0), axis=axis)
    return values < threshold


@registry.register
@keras.saving.register_keras_serializable(package="tfsparse")
class TargetedDropoutGate(Gate):
    """Targeted dropout on a kernel (Gomez et al., 2019).

    The kernel, viewed as [rows, units] (a conv kernel [kh, kw, in, out] as
    [kh·kw·in, out]), is ranked by magnitude at every training step:

    - weight level (`structure="weight"`): in each column, the ⌊γ·rows⌋
      weights with the smallest |w| are *candidates*;
    - unit level (`structure="unit"`): the ⌊γ·units⌋ columns with the
      smallest L2 norm are candidates.

    Each candidate (a weight, or a whole column) is dropped independently with
    probability α; kept weights are *not* rescaled. The ranking does not carry
    gradients (it is a comparison of stopped magnitudes); the kernel itself
    does, through the mask as in ordinary dropout. There is no penalty.

    α and γ are scheduled values (non-trainable variables `alpha`, `gamma`):
    `SparsityScheduler` with `tfsparse.schedules.targeted_dropout_ramp`
    ramps them as the paper's "ramping targeted dropout".

    The gate also holds a non-trainable `keep` mask (ones when built, shape
    `mask_shape`: the kernel's shape at weight level, `(units,)` at unit level)
    that `tfsparse.pruning.prune_by_magnitude` sets to 0 on pruned weights or
    units. Inference multiplies the kernel by `keep` only (no dropout, no
    random op); training multiplies it by `keep` × the dropout mask, so pruned
    weights stay at zero if training goes on.

    Note: the official code (for-ai/TD) removes *all* candidates at evaluation
    time in some of its variants; here inference applies no targeted removal
    until `prune_by_magnitude` is called (`prune_by_magnitude(model, gamma)`
    gives that evaluation).

    Args:
        alpha: α, the drop probability of a candidate, in [0, 1] (scheduled
            value `alpha`).
        gamma: γ, the targeted fraction, in [0, 1] (scheduled value `gamma`).
        structure: `"weight"` (default) or `"unit"`.
        seed: seed of the gate's random generator.
        **kwargs: `Gate` / `Layer` arguments (`dataset_size`, `group_size`,
            `name`, ...). They do not affect this gate (it has no penalty).

    Call arguments:
        inputs: the kernel (any rank ≥ 1, fully known shape).
        training: Python boolean; `True` draws the dropout mask.

    Examples:
        >>> from tfsparse.layers import SparseDense
        >>> layer = SparseDense(
        ...     300, activation="relu",
        ...     kernel_gate=TargetedDropoutGate(alpha=0.5, gamma=0.5))

    References:
        - [Gomez et al., 2019. Learning Sparse Networks Using Targeted
          Dropout](https://arxiv.org/abs/1905.13678)
    """

    # A budget sets γ: the fraction of units dropped (tfsparse.budget).
    budget_replaces = "gamma"
    method = "targeted_dropout"
    # Always on kernels: weight level drops single weights, unit level whole
    # kernel columns.
    levels = (WEIGHT, UNIT)
    kernel_levels = (WEIGHT, UNIT)
    # At unit level a `ChannelKeepGate` on each channel group closes the units
    # hardening prunes (see `prepare_hardening`).
    group_keep_levels = (UNIT,)
    needs_dataset_size = False
    # The paper's α = γ = 0.5.
    recommended = {"alpha": 0.5, "gamma": 0.5}

    def hold_pruned(self, kept):
        """`keep` (and a hardened `hard_mask`) are zeroed where pruning removed
        weights, so they stay zero if training continues."""
        kept = np.asarray(kept, "float32")
        self.keep.assign(np.asarray(self.keep) * kept)
        if float(np.asarray(self.hardened)) > 0:
            self.hard_mask.assign(np.asarray(self.hard_mask) * kept)

    @classmethod
    def search_space(cls, hp):
        return {
            "alpha": hp.Float("alpha", 0.1, 0.99, default=cls.recommended["alpha"]),
            "gamma": hp.Float("gamma", 0.1, 0.99, default=cls.recommended["gamma"]),
        }

    @classmethod
    def settings_under_budget(cls, settings, level, kind):
        cls.check_budget_settings(settings, kind)
        if level != UNIT:
            raise ValueError(
                "A budget drives unit-level targeted dropout only; pass "
                "level='unit' (weight-level dropout keeps every unit)."
            )
        return dict(settings)

    @classmethod
    def aim_at_budget(cls, model, budget):
        """No constraint to train: γ, the fraction of units dropped, is set
        once so that the kept units cost the target (`tfsparse.budget`)."""
        from tfsparse import budget as budget_lib  # budget imports the gates.
        from tfsparse.gates.base import gates_of
        from tfsparse.gates.channel_keep import ChannelKeepGate

        kind, target = budget
        rate = budget_lib.uniform_drop_rate(model, target, kind, ChannelKeepGate, cls.method)
        for gate in (g for g in gates_of(model) if isinstance(g, cls)):
            gate.initial_gamma = rate
            gate.gamma.assign(rate)
            if gate.harden_fraction is None:  # the caller's own stands
                gate.harden_fraction = schedules.BUDGET_HARDEN_FRACTION

    @classmethod
    def prepare_hardening(cls, model, gates):
        """Hardening targeted dropout prunes what it targeted, as the paper
        prunes after training: in each gated layer the γ fraction of smallest
        weights (per column, `tfsparse.prune_by_magnitude`) or, at unit
        level, of weakest units, ranked over each channel group together
        (`tfsparse.pruning.prune_unit_groups`: the layers of a residual
        stream lose the same channels, and a `ChannelKeepGate` closes them
        after BatchNormalization, so that compaction removes them); a layer
        whose units no compaction removes (they reach a LayerNormalization)
        is left whole. Under a budget γ was set so that the kept units cost
        the target, and the recipe hardens after 75 % of the epochs: the
        rest fine-tunes the pruned network."""
        from tfsparse import pruning  # pruning imports the gates.

        owners = {
            id(getattr(layer, "kernel_gate", None)): layer
            for layer in pruning.prunable_layers(model, include_classifier=True)
        }
        for gate in gates:
            if id(gate) not in owners:
                raise ValueError(f"Targeted dropout gate {gate.name!r} has no layer in the model.")
        for gate in gates:
            if gate.structure == WEIGHT:
                pruning.prune_by_magnitude(owners[id(gate)], float(np.asarray(gate.gamma)))
        units = [owners[id(gate)] for gate in gates if gate.structure == UNIT]
        if units:
            pruning.prune_unit_groups(
                model,
                lambda layer: float(np.asarray(layer.kernel_gate.gamma)),
                units,
                removable_only=True,
            )

    # The paper's "ramping targeted dropout" (`recipe_plan`'s `ramp`).
    rampable = True

    @classmethod
    def recipe_plan(
        cls, epochs, settings, budgeted=False, ramp=False, steps_per_epoch=None, **context
    ):
        """`ramp`: the paper's "ramping targeted dropout" (α and γ rise over
        training, a step schedule). Under a budget the dropout is unit level
        (the budget sets γ, the fraction of units)."""
        if ramp and budgeted:
            raise ValueError(
                "`ramp` and a budget (`target_flops`/`target_params`) cannot be combined "
                "for targeted dropout: the ramp raises γ over training, the budget fixes it."
            )
        settings, plan = super().recipe_plan(epochs, settings, budgeted)
        if budgeted:
            settings["level"] = UNIT
        if ramp:
            if steps_per_epoch is None:
                raise ValueError("Ramping targeted dropout needs `steps_per_epoch`.")
            plan["schedules"] = schedules.targeted_dropout_ramp(
                settings["alpha"], settings["gamma"], epochs * steps_per_epoch
            )
        return settings, plan

    def __init__(
        self, alpha=0.5, gamma=0.5, structure=WEIGHT, seed=None, harden_fraction=None, **kwargs
    ):
        super().__init__(structure=structure, seed=seed, **kwargs)
        self.initial_alpha = float(_checks.number("alpha", alpha, low=0, high=1))
        self.initial_gamma = float(_checks.number("gamma", gamma, low=0, high=1))
        # Set by a budget: the recipe (and `SparsityScheduler()`) then prunes
        # and hardens the gate after this fraction of the epochs.
        self.harden_fraction = (
            None
            if harden_fraction is None
            else float(_checks.number("harden_fraction", harden_fraction, low=0, high=1))
        )

    def build(self, input_shape):
        if self.built:
            # Loading a `.keras` file builds the gate from its build config
            # when SparseDense/SparseConv2D deserialize it, and then again
            # from the layer's own build: the second call must be a no-op.
            if tuple(input_shape) != self.kernel_shape:
                raise ValueError(
                    f"TargetedDropoutGate {self.name!r} was built for a kernel of shape "
                    f"{self.kernel_shape}; got {tuple(input_shape)}."
                )
            return
        if any(d is None for d in input_shape):
            raise ValueError(
                f"TargetedDropoutGate {self.name!r} acts on a kernel and needs a fully "
                f"known input shape; got {tuple(input_shape)}. Use it as the "
                "`kernel_gate` of tfsparse.layers.SparseDense / SparseConv2D."
            )
        self.kernel_shape = tuple(int(d) for d in input_shape)
        super().build(input_shape)

    def build_gate(self, mask_shape):
        self.keep = self.add_weight(
            name="keep", shape=mask_shape, initializer="ones", trainable=False
        )
        self.alpha = self.add_scheduled("alpha", self.initial_alpha)
        self.gamma = self.add_scheduled("gamma", self.initial_gamma)

    # ---------------------------------------------------------------- masks
    def candidates(self, kernel):
        """Boolean candidates for dropout, from the magnitudes of `kernel`
        (already multiplied by `keep`): of shape [rows, units] at weight level,
        `(units,)` at unit level."""
        units = self.kernel_shape[-1]
        w = ops.stop_gradient(ops.cast(ops.reshape(kernel, (-1, units)), "float32"))
        if self.structure == WEIGHT:
            return smallest_mask(ops.abs(w), self.gamma, axis=0)
        norms = ops.sqrt(ops.sum(ops.square(w), axis=0))
        return smallest_mask(norms, self.gamma, axis=0)

    def sample_mask(self, inputs):
        """keep × targeted-dropout mask (1 = kept), of shape `mask_shape`."""
        keep = ops.convert_to_tensor(self.keep)
        # Rank the kernel as it is used: pruned weights (keep = 0) count as 0.
        # A unit-level `keep` of shape (units,) broadcasts over the columns.
        candidates = self.candidates(inputs * ops.cast(keep, inputs.dtype))
        draw = self._uniform(candidates.shape)
        dropped = ops.logical_and(candidates, draw < ops.cast(self.alpha, draw.dtype))
        mask = 1.0 - ops.cast(dropped, keep.dtype)
        if self.structure == WEIGHT:
            mask = ops.reshape(mask, self.mask_shape)
        return keep * mask

    def _uniform(self, shape):
        # keras.random.uniform lets TensorFlow pick the algorithm ("auto_select");
        # under XLA on CPU that choice measured 10-30x slower than Philox for a
        # kernel-sized draw (9-16 ms vs 0.3-0.9 ms for 256x128) and dominated a
        # jit-compiled train step. Same seed generator, Philox named explicitly.
        seed = self.seed_generator.next()
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), "int32")
        return tf.random.stateless_uniform(shape, seed=seed, alg="philox")

    def deterministic_mask(self):
        return ops.convert_to_tensor(self.keep)

    def regularization(self):
        return ops.zeros((), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            alpha=self.initial_alpha,
            gamma=self.initial_gamma,
            harden_fraction=self.harden_fraction,
        )
        return config

    def recipe_settings(self):
        """A budget's hardening, for `SparsityScheduler()`'s plan."""
        return {} if self.harden_fraction is None else {"harden_fraction": self.harden_fraction}
