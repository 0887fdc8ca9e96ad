"""Ready-made training recipes: a method's settings and its scheduler.

A recipe turns "train with method M for E epochs" into the two things the
library needs, `sparsify` settings and a `SparsityScheduler`, using the
papers' schedules scaled to E epochs. `train.py`, the benchmarks, the tuner
and the notebooks all go through `recipe()`, so they agree on what a method
means.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras

from tfsparse import _checks
from tfsparse.callbacks import SparsityScheduler
from tfsparse.defaults import RECOMMENDED, with_recommended
from tfsparse.gates import registry
from tfsparse.gates.base import gates_of

# The recommended settings (`tfsparse.defaults`), under their old name.
DEFAULTS = RECOMMENDED
# The weights' learning-rate schedules `optimizer()` offers.
LR_SCHEDULES = ("constant", "cosine", "step")
# "step": the rate times these factors from these fractions of the training on
# (the BB authors' schedule for VGG: a tenth at half-way, a hundredth at 80 %;
# their LeNet scripts drop the second time at 70 %).
STEP_DROPS = ((0.5, 0.1), (0.8, 0.01))


@dataclasses.dataclass
class Recipe:
    """What `recipe()` returns: settings for `sparsify` and the callback."""

    method: str
    settings: dict
    scheduler: SparsityScheduler


def recipe(
    method: str,
    epochs: int,
    steps_per_epoch: int | None = None,
    ramp: bool = False,
    target_flops: float | None = None,
    target_params: float | None = None,
    pretrained: bool = False,
    budget_reached_fraction: float | None = None,
    budget_ramp_power: float | None = None,
    **settings: Any,
) -> Recipe:
    """The settings and scheduler for training `method` for `epochs` epochs.

    Args:
        method: one of `tfsparse.METHODS`.
        epochs: total training epochs (stages and ramps are scaled to it).
        steps_per_epoch: needed by ramping targeted dropout (step schedule).
        ramp: targeted dropout only: ramp α and γ over training (the paper's
            "ramping targeted dropout").
        target_flops, target_params: a budget instead of the method's penalty
            weight (see `tfsparse.sparsify`): the settings carry it and drop
            λ (or γ), and the scheduler hardens after 75 % of the epochs
            (NPN: at `stage2`), having reached the target half-way there
            (NPN: the target starts falling with the plastic stage, along
            a cubic, and is reached one epoch before hardening). Targeted dropout
            becomes unit-level.
        budget_reached_fraction: with a budget, reach the target after this
            fraction of the epochs instead of half-way to hardening: a
            longer ramp for short pruning stages (MobileNetV2 with three
            pruning epochs had one to fall from 0.9 to 0.3 of the FLOPs, and
            hard-concrete's cost overshot the target in the next).
        budget_ramp_power: with a budget, the shape of the target's fall
            (`SparsityScheduler`'s `budget_ramp_power`; 1 is linear).
        pretrained: the weights start trained (a dense network trained
            before `sparsify`): BB then keeps its KL from the first epoch;
            otherwise it trains without it for the first
            `BetaBernoulliGate.kl_warmup_fraction` of the epochs (each
            family plans its own schedule: `Gate.recipe_plan`).
        **settings: override the method's defaults (`DEFAULTS[method]`);
            for NPN also `k_plastic` (default 7 prune / 1 expand),
            `stage1`/`stage2` (epochs), `expand_size` (gates woken per layer
            and improved epoch; the paper's 1 by default), `expand_fill`
            (φ·k_plastic of a woken gate; default 3, π ≈ 0.95); for the
            other methods `harden_fraction`: harden every gate after this
            fraction of the epochs, so that the rest fine-tunes the weights
            under the masks inference will use (NPN's third stage, offered
            to all; default `None`, never).

    Returns:
        A `Recipe(method, settings, scheduler)`.
    """
    family = registry.family(method)
    _checks.number("epochs", epochs, low=1, integer=True)
    if ramp and not family.rampable:
        rampable = [m for m in registry.methods() if registry.family(m).rampable]
        raise ValueError(f"`ramp` applies to method {rampable}, not to {method!r}.")
    merged = with_recommended(method, settings)
    budget = {
        key: value
        for key, value in (("target_flops", target_flops), ("target_params", target_params))
        if value is not None
    }
    if budget:
        merged = _under_budget(method, settings, budget)
    budget_options = {
        "budget_reached_fraction": budget_reached_fraction,
        "budget_ramp_power": budget_ramp_power,
    }
    for name, value in budget_options.items():
        if value is not None and not budget:
            raise ValueError(
                f"`{name}` needs a budget: pass `target_flops` or `target_params` with it."
            )
    if budget_reached_fraction is not None:
        _checks.number(
            "budget_reached_fraction", budget_reached_fraction, low=0, high=1, low_open=True
        )
    merged, plan = family.recipe_plan(
        epochs,
        merged,
        budgeted=bool(budget),
        pretrained=pretrained,
        ramp=ramp,
        steps_per_epoch=steps_per_epoch,
    )
    if budget_reached_fraction is not None:
        plan["budget_reached_at"] = max(1, round(budget_reached_fraction * epochs))
    if budget_ramp_power is not None:
        plan["budget_ramp_power"] = budget_ramp_power
    return Recipe(method, merged, SparsityScheduler(**plan))


def planned_scheduler(model: keras.Model, epochs: int) -> SparsityScheduler:
    """The scheduler the recipe of `model`'s method gives for `epochs` epochs:
    what `SparsityScheduler()` without a plan runs. NPN gates keep their own
    mode and k_plastic, BB gates their KL weight (`Gate.recipe_settings`); a
    budget the model carries sets the recipe's target."""
    gates = gates_of(model)
    method = registry.method_of(gates)
    # The first gate of a method (a ChannelKeepGate belongs to none).
    owner = next(gate for gate in gates if type(gate).method is not None)
    settings = dict(owner.recipe_settings())
    budget = getattr(model, "budget", None)
    if budget is not None:
        settings[f"target_{budget['kind']}"] = budget["target"]
    return method, recipe(method, epochs, **settings).scheduler


def optimizer(
    learning_rate: float = 1e-3,
    schedule: str = "constant",
    total_steps: int | None = None,
    average_weights: float = 0.0,
    drops=STEP_DROPS,
) -> keras.optimizers.Optimizer:
    """Adam for a sparsified model, at a constant, cosine-decayed or stepped rate.

    `"cosine"` decays the rate from `learning_rate` to 0 over `total_steps`
    steps (the whole training); `"step"` multiplies it by each `drops` factor
    from its fraction of the steps on: by default a tenth half-way through
    them and a hundredth from 80 % on (`STEP_DROPS`; the BB/DBB authors' VGG
    schedule; their LeNet scripts' is `((0.5, 0.1), (0.7, 0.01))`).
    Gates with an `lr_multiplier` take a multiple of the same update, so their
    mask probabilities settle as the rate falls and the last epochs fine-tune
    the weights under nearly fixed masks: on
    mnist-10k, hard-concrete LeNet-300-100 for 30 epochs keeps 6.3 % of the
    FLOPs at 95.6 % test accuracy with rate 4e-3 and cosine decay, against
    9.3 % at 95.4 % with the library's constant 1e-3 (seeds 1-3,
    `bench/records/tuning/`). The library's default stays constant 1e-3, the
    rate its benchmarks were measured at; `tfsparse.tuning` searches both.

    `average_weights` > 0 keeps an exponential moving average of every
    trainable variable (weights and gates) with that momentum and leaves the
    averages in the model when `fit` ends (Keras' `use_ema`), as the L0
    paper's code does with 0.999 (its `beta_ema`).
    """
    _checks.number("learning_rate", learning_rate, low=0, low_open=True)
    _checks.choice("schedule", schedule, LR_SCHEDULES)
    _checks.number("average_weights", average_weights, low=0, high=1, high_open=True)
    averaging = {"use_ema": True, "ema_momentum": average_weights} if average_weights else {}
    if schedule == "constant":
        return keras.optimizers.Adam(learning_rate, **averaging)
    if total_steps is None:
        raise ValueError(
            f"`total_steps` is needed by the {schedule} schedule: the steps of the "
            "whole training (epochs × steps per epoch)."
        )
    _checks.number("total_steps", total_steps, low=1, integer=True)
    if schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps)
    else:
        drops = check_drops(drops)
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(
            [int(fraction * total_steps) for fraction, _ in drops],
            [learning_rate] + [learning_rate * factor for _, factor in drops],
        )
    return keras.optimizers.Adam(rate, **averaging)


def check_drops(drops, name="drops"):
    """`drops` as a tuple of (fraction, factor) float pairs: fractions rising
    within (0, 1), factors > 0 (each the multiple of the initial rate); an
    error names the parameter `name`."""
    error = ValueError(
        f"`{name}` must be (fraction, factor) pairs with fractions rising within (0, 1) "
        f"and factors > 0, e.g. ((0.5, 0.1), (0.7, 0.01)); got {drops!r}."
    )
    try:
        pairs = tuple((float(fraction), float(factor)) for fraction, factor in drops)
    except (TypeError, ValueError):
        raise error from None
    fractions = [fraction for fraction, _ in pairs]
    if (
        not pairs
        or not all(0 < f < 1 for f in fractions)
        or any(b <= a for a, b in zip(fractions, fractions[1:]))
        or not all(factor > 0 for _, factor in pairs)
    ):
        raise error
    return pairs


def _under_budget(method, settings, budget):
    """The recipe's settings with a budget in place of the penalty weight."""
    family = registry.family(method)
    family.check_budget_settings(settings, next(iter(budget)).removeprefix("target_"))
    key = family.budget_replaces
    return {**with_recommended(method, settings, leave_out=key), **budget}
