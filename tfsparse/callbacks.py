"""`SparsityScheduler`: the one callback that drives every gate in a model."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfsparse import _checks
from tfsparse import schedules as schedules_lib
from tfsparse.gates.base import gates_of


@keras.saving.register_keras_serializable(package="tfsparse")
class SparsityScheduler(keras.callbacks.Callback):
    """Anneals, hardens and logs the gates of a model during `fit`.

    Every scheduled value of every gate (NPN's `k`, temperatures, targeted
    dropout's `alpha`/`gamma`, KL weights, ...) is a non-trainable variable;
    this callback assigns it from a schedule that is a pure function of the
    epoch or of the optimizer's step, so a resumed run (e.g. with
    `keras.callbacks.BackupAndRestore`) continues the schedules exactly (the
    data's order and other layers' random draws are `fit`'s; `tfsparse.training`
    draws them from the seed and the epoch: `tfsparse.epoch_data`).

    It also hardens the gates (freezes their masks) at `harden_at`, wakes
    hibernating NPN gates in expand mode, and writes into `logs` the current
    scheduled values and the number of active units of each gate
    (`active/<gate name>`), so they reach the progress bar, `History`,
    `CSVLogger` and `TensorBoard` (put those after this callback).

    With a budget (`tfsparse.sparsify(..., target_flops=t)`), the target the
    Lagrangian drives to is lowered step by step from the expected cost at
    `budget_starts_at` (an epoch; default 0) to t at `budget_reached_at`
    (default half-way from there to `harden_at`, or to the end of the fit
    without hardening), linearly or along a polynomial that slows as it
    nears t (`budget_ramp_power`). Before `budget_starts_at` and
    from `harden_at` on the Lagrangian is out of the loss and its
    multipliers get no gradient (`SparseModel.budget_engaged`): NPN's recipe
    starts the ramp with its plastic stage, since a deterministic gate
    cannot follow a falling target and the multipliers would only wind up
    against it. At `harden_at` the gates' units with the lowest
    keep scores are closed until the compact model's cost is at most t
    (`tfsparse.budget.CostModel.project`), then every gate is hardened.
    `cost_kept` (the cost of the units the gates keep now, as a fraction)
    joins the logs each epoch, next to the train step's
    `cost` (expected) and `cost_target`; NPN's expansion wakes no gate while
    `cost_kept` is at or over the target.

    Without any of `schedules`, `harden_at`, `expand_between` and
    `budget_reached_at`, the scheduler plans itself when `fit` starts: it
    reads the model's gates and the `epochs` of the fit and runs their
    method's recipe (`tfsparse.recipes.recipe`: NPN's three stages, hardening
    at 75 % of the epochs under a budget, ...), and says what it chose in a
    log line. `SparsityScheduler(schedules={})` is the empty plan (logging
    only).

    Args:
        schedules: dict mapping a scheduled-value name (`"k"`, `"temperature"`,
            `"alpha"`, `"gamma"`, `"kl_weight"`, ...) to a
            `tfsparse.schedules.Schedule` or a constant. A name that no gate
            has is an error.
        harden_at: epoch at whose start every gate is hardened (NPN's third
            stage); `None` never hardens.
        expand_between: `(first, last)` epochs: at the end of each epoch in
            `first ≤ epoch < last` whose `monitor` improved on its best so
            far, every NPN gate in expand mode wakes its next gate.
        monitor: the log entry watched for expansion (default `"val_loss"`).
        expand_fill: φ·k_plastic given to a woken gate (0 → π = 0.5).
        expand_size: gates each layer wakes at a time (the paper: 1).
        budget_starts_at: epoch at which a budget's target starts falling
            and its multipliers start moving.
        budget_reached_at: epoch by which a budget's target is reached.
        budget_ramp_power: shape of the target's fall: with progress p from
            0 to 1 over the ramp, the target is t + (s − t)·(1 − p)^power
            (s the cost at the ramp's start). 1 is linear; 3 is the gradual
            pruning schedule of Zhu & Gupta 2017 (tfmot's
            `PolynomialDecay`), which cuts most while the network is wide
            and slows near the target, where a linear fall still removes
            the most units relative to those left and the cost overshoots.

    Examples:
        >>> scheduler = SparsityScheduler(
        ...     schedules={"k": tfsparse.schedules.npn_stages(7, 100, 350)},
        ...     harden_at=350)
        >>> model.fit(x, y, epochs=500, callbacks=[scheduler])
    """

    def __init__(
        self,
        schedules: dict[str, Any] | None = None,
        harden_at: int | None = None,
        expand_between: tuple[int, int] | None = None,
        monitor: str = "val_loss",
        expand_fill: float = 0.0,
        expand_size: int = 1,
        budget_reached_at: int | None = None,
        budget_starts_at: int | None = None,
        budget_ramp_power: float = 1.0,
    ):
        super().__init__()
        if schedules is not None and not isinstance(schedules, dict):
            raise TypeError(
                "`schedules` must be a dict mapping a scheduled-value name to "
                f"a schedule; got {type(schedules).__name__}."
            )
        self.schedules = {name: schedules_lib.get(s) for name, s in (schedules or {}).items()}
        if harden_at is not None:
            _checks.number("harden_at", harden_at, low=0, integer=True)
        self.harden_at = harden_at
        if expand_between is not None:
            if len(expand_between) != 2 or not 0 <= expand_between[0] <= expand_between[1]:
                raise ValueError(
                    "`expand_between` must be a pair (first, last) of epochs "
                    f"with 0 ≤ first ≤ last; got {expand_between!r}."
                )
            expand_between = tuple(int(e) for e in expand_between)
        self.expand_between = expand_between
        self.monitor = monitor
        self.expand_fill = float(_checks.number("expand_fill", expand_fill))
        self.expand_size = _checks.number("expand_size", expand_size, low=1, integer=True)
        if budget_reached_at is not None:
            _checks.number("budget_reached_at", budget_reached_at, low=0, integer=True)
        self.budget_reached_at = budget_reached_at
        if budget_starts_at is not None:
            _checks.number("budget_starts_at", budget_starts_at, low=0, integer=True)
            if budget_reached_at is not None and budget_starts_at > budget_reached_at:
                raise ValueError(
                    "`budget_starts_at` must be at most `budget_reached_at`; got "
                    f"budget_starts_at={budget_starts_at}, "
                    f"budget_reached_at={budget_reached_at}."
                )
        self.budget_starts_at = budget_starts_at
        self.budget_ramp_power = float(
            _checks.number("budget_ramp_power", budget_ramp_power, low=0, low_open=True)
        )
        self.planned = (
            schedules,
            harden_at,
            expand_between,
            budget_reached_at,
            budget_starts_at,
        ) == (None,) * 5

    def get_config(self):
        if self.planned:  # Plans itself again at its next fit.
            return {"monitor": self.monitor}
        return {
            "schedules": {
                name: keras.saving.serialize_keras_object(s) for name, s in self.schedules.items()
            },
            "harden_at": self.harden_at,
            "expand_between": self.expand_between,
            "monitor": self.monitor,
            "expand_fill": self.expand_fill,
            "expand_size": self.expand_size,
            "budget_reached_at": self.budget_reached_at,
            "budget_starts_at": self.budget_starts_at,
            "budget_ramp_power": self.budget_ramp_power,
        }

    # ------------------------------------------------------------- lifecycle
    def on_train_begin(self, logs=None):
        self._fitting = True
        if self.planned:
            self._plan()
        self._gates = gates_of(self.model)
        if not self._gates:
            raise ValueError(
                f"SparsityScheduler: model {self.model.name!r} has no gates to schedule; "
                "give `fit` the model that `tfsparse.sparsify` returned."
            )
        known = {name for gate in self._gates for name in gate.scheduled}
        unknown = sorted(set(self.schedules) - known)
        if unknown:
            raise ValueError(
                f"No gate in the model has the scheduled value(s) {unknown}; "
                f"the gates have: {sorted(known) or 'none'}."
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._validated = False
        self._assign(schedules_lib.EPOCH, epoch)
        self._assign(schedules_lib.STEP, self._step())
        budget = getattr(self.model, "budget", None)
        hardening = self.harden_at is not None and epoch >= self.harden_at
        if budget is not None:
            self._engage_budget(epoch, hardening)
        if hardening and not all(gate.hardened.numpy() for gate in self._gates):
            self._harden(budget)

    def _engage_budget(self, epoch, hardening):
        """Records the expected cost when the ramp starts, engages the
        Lagrangian between the ramp's start and hardening, sets the target."""
        ramping = epoch >= self._budget_starts_at()
        if ramping and np.isnan(self.model.budget_start.numpy()):
            start = float(self.model.cost_model.expected()) / self.model.cost_model.dense
            self.model.budget_start.assign(min(1.0, start))
        self.model.budget_engaged.assign(1.0 if ramping and not hardening else 0.0)
        self._assign_budget_target(epoch)

    def _budget_starts_at(self):
        return self.budget_starts_at or 0

    def _budget_reached_at(self):
        if self.budget_reached_at is not None:
            return self.budget_reached_at
        begin = self._budget_starts_at()
        end = self.harden_at if self.harden_at is not None else self.params.get("epochs")
        return max(begin + 1, (begin + (end or begin + 2)) // 2)

    def _budget_target(self, epoch, start, target):
        """1 (the dense cost) before `budget_starts_at`, then `start` falling
        to `target` at `budget_reached_at` (`budget_ramp_power`); `epoch` may
        be fractional (the ramp moves every step)."""
        begin, end = self._budget_starts_at(), self._budget_reached_at()
        if epoch < begin:
            return 1.0
        start = max(start, target)
        progress = 1.0 if end <= begin else min(1.0, (epoch - begin) / (end - begin))
        return target + (start - target) * (1.0 - progress) ** self.budget_ramp_power

    def _assign_budget_target(self, epoch):
        self.model.budget_target.assign(
            self._budget_target(
                epoch, float(self.model.budget_start.numpy()), self.model.budget["target"]
            )
        )

    def _harden(self, budget):
        """Hardens every gate; with a budget, first closes the units with the
        lowest keep scores until the kept cost meets the target."""
        for family in dict.fromkeys(type(g) for g in self._gates):
            family.prepare_hardening(self.model, [g for g in self._gates if type(g) is family])
        keep = self.model.cost_model.project(budget["target"]) if budget is not None else None
        for gate in self._gates:
            if not gate.hardened.numpy():
                gate.harden()
        if keep is not None:  # reopened units pass at 1
            for gate, kept in zip(self.model.cost_model.gates, keep):
                mask = gate.hard_mask.numpy()
                gate.hard_mask.assign(np.where(kept, np.where(mask > 0, mask, 1.0), 0.0))

    def on_train_batch_begin(self, batch, logs=None):
        # The budget's target falls every step, not once an epoch: with few
        # pruning epochs a per-epoch target is a cliff the multipliers wind
        # up against.
        steps = self.params.get("steps")
        if (
            getattr(self.model, "budget", None) is not None
            and steps
            and self._budget_starts_at() <= self._epoch < self._budget_reached_at()
        ):
            self._assign_budget_target(self._epoch + batch / steps)
        if any(s.unit == schedules_lib.STEP for s in self.schedules.values()):
            self._assign(schedules_lib.STEP, self._step())

    def on_train_end(self, logs=None):
        self._fitting = False

    def on_test_end(self, logs=None):
        # Expansion happens when fit's validation pass ends, before any
        # callback's on_epoch_end: a BackupAndRestore placed before this
        # callback then still saves the woken gates.
        if getattr(self, "_fitting", False) and logs and self._expanding(self._epoch):
            self._validated = True
            name = self.monitor[4:] if self.monitor.startswith("val_") else self.monitor
            self._expand({self.monitor: logs[name]} if name in logs else logs)

    def on_epoch_end(self, epoch, logs=None):
        if self._expanding(epoch) and not self._validated:
            raise ValueError(
                f"Expansion watches {self.monitor!r} at the end of each "
                "validation pass, but this epoch had none: pass "
                "`validation_data` to fit."
            )
        if logs is None:
            return
        logs.update(self.current_values())
        logs.update(active_units(self.model))
        if getattr(self.model, "budget", None) is not None:
            logs["cost_kept"] = self.model.cost_model.deterministic()[1]

    # -------------------------------------------------------------- helpers
    def _plan(self):
        """Takes the plan of the model's method for this fit's epochs."""
        from tfsparse import recipes  # recipes build schedulers: imported when used

        epochs = self.params.get("epochs")
        if epochs is None:
            raise ValueError(
                "SparsityScheduler() plans from the `epochs` of `fit`, which "
                "did not pass them; give it `harden_at` (and `schedules`)."
            )
        method, plan = recipes.planned_scheduler(self.model, epochs)
        for name in (
            "schedules",
            "harden_at",
            "expand_between",
            "expand_size",
            "expand_fill",
            "budget_reached_at",
            "budget_starts_at",
            "budget_ramp_power",
        ):
            setattr(self, name, getattr(plan, name))
        if self.params.get("verbose", 1):
            print(f"SparsityScheduler: {method} over {epochs} epochs: {plan.describe()}.")

    def describe(self):
        """The plan in words (the log line of a self-planned scheduler)."""
        parts = [f"{name} scheduled ({type(s).__name__})" for name, s in self.schedules.items()]
        if self.expand_between is not None:
            parts.append(
                f"expansion in epochs {self.expand_between[0]}-{self.expand_between[1] - 1}"
            )
        if self.budget_reached_at is not None:
            begin = self._budget_starts_at()
            parts.append(
                f"budget target falling from epoch {begin} to {self.budget_reached_at}"
                if begin
                else f"budget reached by epoch {self.budget_reached_at}"
            )
            if self.budget_ramp_power != 1:
                parts[-1] += f" (along (1 - progress)^{self.budget_ramp_power:g})"
        parts.append(
            f"hardening at epoch {self.harden_at}"
            if self.harden_at is not None
            else "no hardening"
        )
        return ", ".join(parts)

    def _step(self):
        return int(self.model.optimizer.iterations.numpy())

    def _assign(self, unit, t):
        for name, schedule in self.schedules.items():
            if schedule.unit != unit:
                continue
            value = schedule(t)
            for gate in self._gates:
                variable = gate.scheduled.get(name)
                if variable is not None:
                    variable.assign(value)

    def current_values(self):
        """The scheduled values now, one entry per scheduled name."""
        values = {}
        for gate in self._gates:
            for name, variable in gate.scheduled.items():
                if name in self.schedules:
                    values.setdefault(name, float(variable.numpy()))
        return values

    def _expanding(self, epoch):
        return (
            self.expand_between is not None
            and self.expand_between[0] <= epoch < self.expand_between[1]
        )

    def _expand(self, logs):
        if self.monitor not in logs:
            raise ValueError(
                f"Expansion watches {self.monitor!r}, which is not in the logs "
                f"({sorted(logs)}); pass validation data or set `monitor`."
            )
        value = float(logs[self.monitor])
        budget = getattr(self.model, "budget", None)
        if budget is not None and self.model.cost_model.deterministic()[1] >= budget["target"]:
            return  # expansion stops at the budget
        for gate in self._gates:
            gate.grow(value, self.expand_fill, self.expand_size)


def active_units(model: keras.Model) -> dict[str, int]:
    """Dict `active/<gate name>` → number of surviving units (or weights)."""
    counts = {}
    for gate in gates_of(model):
        if gate.built:
            counts[f"active/{gate.name}"] = int(np.sum(gate.active().numpy()))
    return counts
