"""The shared behaviour of every gate.

A gate multiplies a tensor by a mask. Each method in tfsparse is a family of
gates that differ only in how they sample the mask during training, which
deterministic mask they use at inference and which penalty they add. Everything
else (scheduled values, hardening, the questions that the summary, compaction
and export ask) lives here, so that no other module needs a case per method.
"""

import keras
from keras import ops

from tfsparse import _checks, _graph, schedules

UNIT = "unit"
WEIGHT = "weight"
SEED_STATE = "seed_generator_state"


@keras.saving.register_keras_serializable(package="tfsparse")
class Gate(keras.layers.Layer):
    """Base class of all gates: multiplies its input by a (learned) mask.

    A *unit* gate has one mask value per channel (last axis) of its input: put
    it after a `Dense`/`Conv2D` (or on the network input) and the units it
    closes can be removed from the network by `tfsparse.compact`. A *weight*
    gate has one mask value per element of its input; `tfsparse.layers` apply
    weight gates to their kernels.

    A unit gate may be called at several places of one model (a residual
    stream is read by many layers; `tfsparse.sparsify` calls the stream's one
    gate before each of them): every call of one forward pass uses the same
    mask, and the penalty is added once per pass. With `offset`/`repeat` a
    call masks only a range of its input's channels (a gate's channels inside
    a concatenation).

    Subclasses implement:

    - `build_gate(mask_shape)`: create the gate's own variables.
    - `sample_mask(inputs)`: the stochastic training mask, broadcastable to
      `inputs`.
    - `deterministic_mask()`: the inference multiplier, of shape `mask_shape`.
    - `regularization()`: the penalty summed over the gate, *before* division
      by `dataset_size` (an expected L0 norm, a KL divergence, ...).

    and may override `inference_mask(inputs)` (input-dependent gates) and
    `active()` (when "survives" is not simply "mask > 0").

    Args:
        structure: `"unit"` (one value per channel) or `"weight"` (one value
            per element).
        dataset_size: number of training examples N. Penalties are divided by
            N so that `loss + penalty` is the per-example objective.
        group_size: how many weights each mask value switches off (a unit's
            fan-in plus its bias, say). Penalties that count parameters are
            weighted by it.
        seed: seed of the layer's random generator.
        lr_multiplier: the gate's own parameters move this many times as far
            per optimizer step as the weights (`tfsparse.SparseModel` applies
            it; the papers train gates faster than weights, and a small
            dataset gives few steps per epoch).
        units: number of mask values of a unit gate; defaults to the last
            axis of the input it is first called on. Needed when the calls
            cover only part of their inputs' channels (`offset`, `repeat`).
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: the tensor to mask.
        training: Python boolean; `True` samples a mask (one per forward
            pass, shared by every call of the gate in that pass) and adds the
            penalty with `add_loss`, otherwise the deterministic mask is used
            and no random op runs.
        offset: unit gates: the first channel of `inputs` that the gate
            masks; channels outside `[offset, offset + units * repeat)` pass
            unchanged.
        repeat: unit gates: each mask value covers this many consecutive
            channels (a depthwise convolution with a depth multiplier).
    """

    structure_choices = (UNIT, WEIGHT)
    # Input-dependent gates (DBB) keep a per-example mask after compaction.
    input_dependent = False
    # The setting a budget (`sparsify(..., target_flops=...)`) takes the place
    # of: "lam" for penalties a Lagrangian replaces, None where the penalty
    # stays (a variational method's KL).
    budget_replaces = None
    # Settings a caller may give as a list, one value per gate in the
    # order `sparsify` places them (a per-layer λ, as in the L0 paper's
    # "L0-sep" rows).
    per_gate_settings = ()
    # Whether `recipes.recipe(..., ramp=True)` means something for this
    # family (its `recipe_plan` ramps its own values over training).
    rampable = False
    # Settings given as a list with one value per hidden-unit gate (the
    # gates `site_settings` is told `grows`), read by the family itself.
    per_hidden_gate_settings = ()

    # ---- The method: what `sparsify`, `recipes` and the scheduler ask a
    # family (a registered family is a method; `tfsparse.gates.registry`).
    # The name `sparsify(model, method)` takes.
    method = None
    # The `level`s `sparsify` accepts, the first by default.
    levels = (UNIT,)
    # The levels whose gates go on kernels (`tfsparse.layers.SparseDense`,
    # `SparseConv2D`) instead of on channel groups.
    kernel_levels = (WEIGHT,)
    # Kernel levels at which `sparsify` also puts a `ChannelKeepGate` on each
    # channel group the gated layers write: the family closes whole channels
    # through it (a zeroed kernel column is not a zero channel after a
    # BatchNormalization or in a residual sum).
    group_keep_levels = ()
    # Whether the penalty needs N (`sparsify`'s `dataset_size`).
    needs_dataset_size = True
    # The library's settings for this family (`tfsparse.defaults`): what
    # `sparsify` fills in where the caller gives none (the class's own
    # defaults are the paper's).
    recommended = {}
    # A family whose gates, already in a model, this one replaces and starts
    # from (`continuing`, `load_previous`): DBB continues BB.
    continues = None
    # Whether a run's weight decay counts each weight with the probability
    # that the gates keep it (`SparseModel.decay_weights_under_gates`; the
    # L0 paper's expected L2), instead of as a plain L2 on every kernel.
    decays_weights_under_gates = False

    def __init__(
        self,
        structure=UNIT,
        dataset_size=1,
        group_size=1,
        seed=None,
        lr_multiplier=1.0,
        units=None,
        **kwargs,
    ):
        # Gates compute in float32 whatever the global policy (mixed_float16
        # included): probabilities, logits and penalties need the range.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.structure = _checks.choice("structure", structure, self.structure_choices)
        self.dataset_size = _checks.number("dataset_size", dataset_size, low=1, integer=True)
        self.group_size = _checks.number("group_size", group_size, low=0, low_open=True)
        self.seed = seed
        self.lr_multiplier = float(
            _checks.number("lr_multiplier", lr_multiplier, low=0, low_open=True)
        )
        if units is not None:
            if self.structure != UNIT:
                raise ValueError("`units` is only accepted by unit gates (structure='unit').")
            _checks.number("units", units, low=1, integer=True)
        self.units = units
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._scheduled_names = []
        self.supports_masking = True

    # ------------------------------------------------------------------ build
    def build(self, input_shape):
        if len(input_shape) < 1 or input_shape[-1] is None:
            raise ValueError(
                f"Gate {self.name!r} needs an input with a known last (channel) "
                f"axis; got input shape {input_shape}."
            )
        if self.structure == UNIT:
            self.mask_shape = (int(self.units or input_shape[-1]),)
        else:
            if any(d is None for d in input_shape):
                raise ValueError(
                    f"Weight gate {self.name!r} needs a fully known input shape "
                    f"(a kernel); got {input_shape}."
                )
            self.mask_shape = tuple(int(d) for d in input_shape)
        self.build_gate(self.mask_shape)
        # Hardening freezes the mask: `hardened` switches every call to the
        # snapshot `hard_mask`, whatever the gate's variables do afterwards
        # (an optimizer with momentum keeps moving them for a while).
        self.hardened = self.add_weight(
            name="hardened", shape=(), initializer="zeros", trainable=False
        )
        self.hard_mask = self.add_weight(
            name="hard_mask", shape=self.mask_shape, initializer="ones", trainable=False
        )

    def add_scheduled(self, name, value):
        """Creates a non-trainable scalar that `SparsityScheduler` may assign."""
        variable = self.add_weight(
            name=name, shape=(), initializer=keras.initializers.Constant(value), trainable=False
        )
        self._scheduled_names.append(name)
        return variable

    @property
    def scheduled(self):
        """Dict of the values a schedule may set: name → variable."""
        return {name: getattr(self, name) for name in self._scheduled_names}

    @classmethod
    def for_several_inputs(cls, **settings):
        """The gate this family puts where one gate serves several tensors (a
        residual stream read at many places, a channel range of a
        concatenation, attention heads): the family's own gate, except for
        input-dependent families, whose per-example factor reads one input."""
        return cls(**settings)

    @classmethod
    def site_settings(cls, settings, grows, index, site=0):
        """The settings of one gate `sparsify` places, from the method's
        `settings`: `grows` says whether the gate is on hidden units (not
        input features or attention heads), `index` counts those before it,
        `site` counts every gate before it. A list given for one of
        `per_gate_settings` is read one entry per gate, in `site` order;
        every other setting is the same for every gate."""
        del grows, index
        return cls.one_site(settings, site)

    @classmethod
    def one_site(cls, settings, site):
        """`settings` with each list of `per_gate_settings` replaced by its
        entry for gate number `site`."""
        out = dict(settings)
        for key in cls.per_gate_settings:
            values = settings.get(key)
            if isinstance(values, (list, tuple)):
                if site >= len(values):
                    raise ValueError(
                        f"`{key}` has {len(values)} entries, one per gate, but the "
                        "model has more gates (pass one value, or one per gate in "
                        "the order sparsify's report lists them)."
                    )
                out[key] = values[site]
        return out

    @classmethod
    def settings_from_scratch(cls, settings):
        """The settings of a family that `continues` another when the model
        holds none of that family's gates."""
        return settings

    @classmethod
    def continuing(cls, previous, **settings):
        """A gate of this family that takes the place of `previous` (a gate of
        the family it `continues`)."""
        raise NotImplementedError(f"{cls.__name__} continues no other family.")

    def load_previous(self, previous):
        """Copies what this gate keeps of `previous` (both built)."""
        raise NotImplementedError(f"{type(self).__name__} continues no other family.")

    @classmethod
    def check_budget_settings(cls, settings, kind):
        """A budget (`target_<kind>`) takes the place of `budget_replaces`:
        giving both is an error."""
        key = cls.budget_replaces
        if key is not None and key in settings:
            raise ValueError(
                f"`{key}` and `target_{kind}` are alternatives for "
                f"method={cls.method!r}: the budget sets it."
            )

    @classmethod
    def settings_under_budget(cls, settings, level, kind):
        """`sparsify`'s settings when a budget drives the gates: unit gates
        only, and the penalty the Lagrangian replaces switched off."""
        cls.check_budget_settings(settings, kind)
        if level != UNIT:
            raise ValueError(f"A budget needs unit gates; got level={level!r}.")
        if cls.budget_replaces is None:
            return dict(settings)
        return {**settings, cls.budget_replaces: 0.0}

    @classmethod
    def aim_at_budget(cls, model, budget):
        """Makes a freshly sparsified `model` meet `budget` (`(kind, target)`):
        by default a Lagrangian constraint on the gates' expected cost,
        trained with the weights (`SparseModel`)."""
        kind, target = budget
        model._attach_budget({"kind": kind, "target": target})

    @classmethod
    def prepare_hardening(cls, model, gates):
        """Called by `SparsityScheduler` with this family's `gates` of
        `model` just before they harden; by default nothing. Targeted
        dropout prunes there what it targeted."""
        del model, gates

    @classmethod
    def recipe_plan(cls, epochs, settings, budgeted=False, **context):
        """This family's part of `tfsparse.recipes.recipe`: `(settings for
        sparsify, keyword arguments of SparsityScheduler)` for `epochs`
        epochs, from the recommended settings merged with the caller's.
        By default the gates harden after the recipe setting
        `harden_fraction` of the epochs (75 % under a budget, else never).
        `context` holds the recipe's `pretrained`, `ramp` and
        `steps_per_epoch`, for the families that use them."""
        del context
        settings = dict(settings)
        fraction = settings.pop(
            "harden_fraction", schedules.BUDGET_HARDEN_FRACTION if budgeted else None
        )
        return settings, {"schedules": {}, "harden_at": schedules.harden_epoch(epochs, fraction)}

    @classmethod
    def search_space(cls, hp):
        """The settings `tfsparse.tuning` searches for this family, as
        keras-tuner hyperparameters drawn from `hp` (defaults: the
        recommended values)."""
        raise NotImplementedError(
            f"{cls.__name__} defines no search_space(hp) for tfsparse.tuning."
        )

    # ---- A paired second forward pass (NPN's ARM estimator). For each gate
    # whose `pairs_passes` is true, `SparseModel.train_step` draws
    # `pass_noise()` once per step, runs the usual pass after
    # `start_pass(noise, second=False)` (its loss trains the weights) and a
    # second one after `start_pass(noise, second=True)`, calls `end_passes()`,
    # and adds `paired_gradients(noise, second_loss, first_loss)` to the
    # gradients. The train step knows the contract, not the families.
    @property
    def pairs_passes(self):
        return False

    def pass_noise(self):
        """The noise one step's two passes share."""
        raise NotImplementedError(f"{type(self).__name__} does not pair passes.")

    def start_pass(self, noise, second):
        """Makes the next traced calls use `noise`, as the first or second pass."""
        raise NotImplementedError(f"{type(self).__name__} does not pair passes.")

    def end_passes(self):
        """Forgets the step's noise (calls outside `train_step` draw their own)."""

    def paired_gradients(self, noise, second_loss, first_loss):
        """`[(variable, gradient term)]` from the two passes' losses."""
        raise NotImplementedError(f"{type(self).__name__} does not pair passes.")

    def hold_pruned(self, kept):
        """Called by `tfsparse.pruning` after magnitude pruning zeroed part of
        the kernel this gate masks; `kept` (bool, `mask_shape`) is what
        survived. A family that can keep the pruned weights at zero through
        further training records it; by default nothing is held."""
        del kept

    def grow(self, monitored, fill, size):
        """Called by `SparsityScheduler` after each validation pass of its
        expansion window with the monitored value (lower is better): a
        family that grows (NPN's expand mode) wakes units when it improved.
        Returns the number of units woken; none by default."""
        del monitored, fill, size
        return 0

    # ------------------------------------------------------ subclass contract
    def build_gate(self, mask_shape):
        raise NotImplementedError

    def sample_mask(self, inputs):
        raise NotImplementedError

    def deterministic_mask(self):
        raise NotImplementedError

    def regularization(self):
        raise NotImplementedError

    # ----------------------------------------------------- shared questions
    def mask(self):
        """The deterministic multiplier, of shape `mask_shape`."""
        return ops.where(self.hardened > 0, self.hard_mask, self.deterministic_mask())

    def active(self):
        """Boolean tensor: which units (or weights) survive."""
        return self.mask() > 0

    def penalty(self):
        """The regularizer added to the loss: `regularization() / dataset_size`,
        zero once the gate is hardened."""
        return (1.0 - self.hardened) * self.regularization() / float(self.dataset_size)

    def open_probability(self):
        """Differentiable probability that each unit is kept (float32, shape
        `mask_shape`): what a budget (`sparsify(..., target_flops=...)`)
        counts as a unit's expected share of the cost."""
        raise NotImplementedError(
            f"{type(self).__name__} defines no open_probability(), which budgets need."
        )

    def keep_score(self):
        """Per unit, a score that orders the units as the gate would keep
        them (higher: kept first); the budget's projection at hardening
        closes the lowest. Default: `open_probability()`. A gate whose
        probability saturates (NPN's σ(k·φ) at a hardening k of thousands is
        0 or 1 for nearly every unit) overrides it with an unsaturated score
        in the same order."""
        return self.open_probability()

    def inference_mask(self, inputs):
        """The mask used when `training=False`; per example for DBB."""
        del inputs
        return self.mask()

    def harden(self):
        """Freezes the current deterministic mask for good (call eagerly)."""
        self.hard_mask.assign(ops.cast(self.deterministic_mask(), self.hard_mask.dtype))
        self.hardened.assign(1.0)

    def hardened_mask(self, inputs):
        """The training mask once hardened: the frozen snapshot. Input-dependent
        gates override it to keep their (deterministic) per-example factor."""
        del inputs
        return self.hard_mask

    def compacted_layer(self, kept, input_scale=None):
        """For input-dependent gates: a layer of plain Keras ops for a
        compacted model. It takes the gate's *unscaled* input restricted to
        the `kept` channels (indices) and multiplies it by the per-example
        factor only, `inference_mask(x) / mask()` (the static multiplier is
        folded into the weights by `tfsparse.compact`); the layer sets
        `per_example_factor = True` and gives that factor as
        `factor(inputs)`, which `tfsparse.summary` reads. `input_scale`, when
        given, is a per-kept-channel factor the input already carries from an
        upstream gate and must be divided out before the factor is computed.
        Static gates return None."""
        del kept, input_scale
        return None

    # ------------------------------------------------------------------- call
    def call(self, inputs, training=False, offset=0, repeat=1):
        partial = self._check_range(inputs, offset, repeat)
        if training:
            mask = self._pass_mask(inputs)
        else:
            mask = self.inference_mask(inputs)
        if partial:
            mask = _spread(mask, len(inputs.shape), int(inputs.shape[-1]), offset, repeat)
        return inputs * ops.cast(mask, inputs.dtype)

    def _pass_mask(self, inputs):
        """The training mask of this forward pass: sampled (and the penalty
        added) at the gate's first call, reused by its later calls."""
        cache = _graph.forward_pass_cache()
        if cache is not None and id(self) in cache:
            return _to_rank(cache[id(self)], len(inputs.shape))
        mask = ops.where(self.hardened > 0, self.hardened_mask(inputs), self.sample_mask(inputs))
        self.add_loss(self.penalty())
        if cache is not None:
            cache[id(self)] = mask
        return mask

    def _check_range(self, inputs, offset, repeat):
        """Whether a call masks only part of its input's channels."""
        if self.structure != UNIT:
            if (offset, repeat) != (0, 1):
                raise ValueError(
                    f"Weight gate {self.name!r}: `offset` and `repeat` apply to unit gates only."
                )
            return False
        units, width = int(self.mask_shape[0]), int(inputs.shape[-1])
        _checks.number("offset", offset, low=0, integer=True)
        _checks.number("repeat", repeat, low=1, integer=True)
        if offset + units * repeat > width:
            raise ValueError(
                f"Gate {self.name!r} ({units} units, offset={offset}, "
                f"repeat={repeat}) does not fit an input of {width} channels."
            )
        partial = (offset, repeat, units) != (0, 1, width)
        if partial and self.input_dependent:
            raise ValueError(
                f"Input-dependent gate {self.name!r} must mask all of its "
                "input's channels (offset=0, repeat=1, units = channels)."
            )
        return partial

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_mask(self, inputs, mask=None):
        return mask

    # The random generator's state is saved with the weights, so that a run
    # resumed from a checkpoint draws the same masks as an uninterrupted one
    # (Keras does not save SeedGenerator states by itself).
    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[SEED_STATE] = self.seed_generator.state.numpy()

    def load_own_variables(self, store):
        if SEED_STATE in store.keys():
            self.seed_generator.state.assign(store[SEED_STATE])
        super().load_own_variables({k: store[k] for k in store.keys() if k != SEED_STATE})

    def recipe_settings(self):
        """The settings of this gate its method's recipe plans with (what
        `SparsityScheduler()` reads from the model); none by default."""
        return {}

    def get_config(self):
        config = super().get_config()
        config.update(
            structure=self.structure,
            dataset_size=self.dataset_size,
            group_size=self.group_size,
            seed=self.seed,
            lr_multiplier=self.lr_multiplier,
            units=self.units,
        )
        return config

    # ---------------------------------------------------------------- helpers
    def noise_shape(self, inputs, per_example=True):
        """Shape of one independent draw per example and per mask value."""
        if self.structure == WEIGHT or not per_example:
            return self.mask_shape
        rank = len(inputs.shape)
        batch = ops.shape(inputs)[0]
        return (batch,) + (1,) * (rank - 2) + self.mask_shape


def _to_rank(mask, rank):
    """A per-example mask (batch, 1, ..., channels) reshaped for an input of
    another rank (one gate called on a feature map and on a pooled vector)."""
    if len(mask.shape) <= 1 or len(mask.shape) == rank:
        return mask
    return ops.reshape(mask, (ops.shape(mask)[0],) + (1,) * (rank - 2) + (mask.shape[-1],))


def _spread(mask, rank, width, offset, repeat):
    """The multiplier of every input channel: the mask on its range, 1 elsewhere."""
    if repeat != 1:
        mask = ops.repeat(mask, repeat, axis=-1)
    after = width - offset - int(mask.shape[-1])
    if len(mask.shape) > 1:
        mask = _to_rank(mask, rank)
    pad = [(0, 0)] * (len(mask.shape) - 1) + [(offset, after)]
    return ops.pad(mask, pad, constant_values=1.0)


def gates_of(model):
    """All gates inside `model` (nested layers included), in layer order."""
    return [layer for layer in _graph.all_layers(model) if isinstance(layer, Gate)]
