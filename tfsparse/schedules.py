"""Values over training: pure functions of the epoch or of the global step.

A schedule never keeps state, so a run resumed from a checkpoint (whose
optimizer knows its step and whose callbacks know the epoch) continues exactly
where it stopped. `SparsityScheduler` assigns the values to the gates'
scheduled variables.
"""

import bisect

import keras

from tfsparse import _checks

EPOCH = "epoch"
STEP = "step"
# The paper's "deterministic" k: σ(5000·φ) is a step function in float32.
K_DETERMINISTIC = 5000.0


class Schedule:
    """Base class: `schedule(t)` is the value at epoch or step `t`."""

    def __init__(self, unit=EPOCH):
        self.unit = _checks.choice("unit", unit, (EPOCH, STEP))

    def __call__(self, t):
        raise NotImplementedError

    def get_config(self):
        return {"unit": self.unit}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfsparse")
class Constant(Schedule):
    """The same value at every epoch (or step)."""

    def __init__(self, value, unit=EPOCH):
        super().__init__(unit)
        self.value = float(_checks.number("value", value))

    def __call__(self, t):
        return self.value

    def get_config(self):
        return {**super().get_config(), "value": self.value}


@keras.saving.register_keras_serializable(package="tfsparse")
class Stages(Schedule):
    """A value per stage: `values[i]` from `boundaries[i-1]` (inclusive) on.

    Example: NPN's three stages over 500 epochs are
    `Stages([100, 350], [5000, 7, 5000])`.
    """

    def __init__(self, boundaries, values, unit=EPOCH):
        super().__init__(unit)
        boundaries = [int(_checks.number("boundaries", b, low=0)) for b in boundaries]
        if boundaries != sorted(boundaries):
            raise ValueError(f"`boundaries` must be increasing; got {boundaries}.")
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                "`values` must have one more entry than `boundaries`; got "
                f"{len(values)} values for {len(boundaries)} boundaries."
            )
        self.boundaries = boundaries
        self.values = [float(_checks.number("values", v)) for v in values]

    def __call__(self, t):
        return self.values[bisect.bisect_right(self.boundaries, t)]

    def get_config(self):
        return {**super().get_config(), "boundaries": self.boundaries, "values": self.values}


@keras.saving.register_keras_serializable(package="tfsparse")
class Linear(Schedule):
    """Piecewise-linear through `points` [(t, value), ...]; flat outside them.

    Example: a KL warm-up over the first 1,000 steps is
    `Linear([(0, 0.0), (1000, 1.0)], unit="step")`.
    """

    def __init__(self, points, unit=STEP):
        super().__init__(unit)
        points = [
            (float(_checks.number("points", t, low=0)), float(_checks.number("points", v)))
            for t, v in points
        ]
        if not points or [t for t, _ in points] != sorted(t for t, _ in points):
            raise ValueError(
                "`points` must be a non-empty list of (t, value) pairs with "
                f"increasing t; got {points}."
            )
        self.points = points

    def __call__(self, t):
        times = [p[0] for p in self.points]
        i = bisect.bisect_right(times, t)
        if i == 0:
            return self.points[0][1]
        if i == len(self.points):
            return self.points[-1][1]
        (t0, v0), (t1, v1) = self.points[i - 1], self.points[i]
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    def get_config(self):
        return {**super().get_config(), "points": [list(p) for p in self.points]}


# With a budget, recipes harden the gates after this fraction of the epochs
# (the target is reached half-way there); the rest fine-tunes under the masks.
BUDGET_HARDEN_FRACTION = 0.75


def harden_epoch(epochs, fraction):
    """The epoch at whose start the gates harden, after `fraction` of
    `epochs` (`None`: never)."""
    if fraction is None:
        return None
    _checks.number("harden_fraction", fraction, low=0, high=1, low_open=True)
    return round(fraction * epochs)


def npn_stages(k_plastic, stage1, stage2):
    """NPN's k over epochs: deterministic, plastic from `stage1`, then
    deterministic again (hardening) from `stage2`."""
    _checks.number("k_plastic", k_plastic, low=0)
    if not 0 <= stage1 <= stage2:
        raise ValueError(f"Need 0 ≤ stage1 ≤ stage2; got stage1={stage1}, stage2={stage2}.")
    return Stages([stage1, stage2], [K_DETERMINISTIC, k_plastic, K_DETERMINISTIC])


def targeted_dropout_ramp(alpha, gamma, total_steps):
    """Ramping targeted dropout over `total_steps` steps: γ rises linearly to
    0.95·γ over the first half and to γ over the second; α rises linearly to
    α. Returns the two schedules as a dict for `SparsityScheduler`."""
    _checks.number("alpha", alpha, low=0, high=1)
    _checks.number("gamma", gamma, low=0, high=1)
    _checks.number("total_steps", total_steps, low=1, integer=True)
    half = total_steps / 2
    return {
        "gamma": Linear([(0, 0.0), (half, 0.95 * gamma), (total_steps, gamma)]),
        "alpha": Linear([(0, 0.0), (total_steps, alpha)]),
    }


def get(schedule):
    """A Schedule from a Schedule, a number (constant) or a serialized dict."""
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, dict):
        return keras.saving.deserialize_keras_object(schedule)
    if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
        return Constant(schedule)
    raise TypeError(
        "A schedule must be a tfsparse.schedules.Schedule, a number or a "
        f"serialized schedule dict; got {type(schedule).__name__}."
    )


@keras.saving.register_keras_serializable(package="tfsparse")
class ScaledLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """A Keras learning-rate schedule (or its serialized dict) times `factor`:
    the rate of the optimizer that moves gates with an `lr_multiplier` when
    the gates' own rate is a schedule."""

    def __init__(self, schedule, factor):
        self.schedule = (
            keras.optimizers.schedules.deserialize(schedule)
            if isinstance(schedule, dict)
            else schedule
        )
        self.factor = float(_checks.number("factor", factor, low=0, low_open=True))

    def __call__(self, step):
        return self.schedule(step) * self.factor

    def get_config(self):
        return {
            "schedule": keras.optimizers.schedules.serialize(self.schedule),
            "factor": self.factor,
        }
