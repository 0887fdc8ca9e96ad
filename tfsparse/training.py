"""One training run as a library call: the run behind `train.py`, the benchmarks and the tuner.

    config = RunConfig(model="lenet_300_100", dataset="digits", method="hard_concrete",
                       epochs=20, target_flops=0.3)
    results = run(config)

A run loads the data, builds the reference network, optionally pretrains it dense,
sparsifies it with the method's recipe, fits it (then, with `continue_epochs`, fits
the method that continues from this one's gates), optionally magnitude-prunes it,
evaluates, saves `<out>/<run_name>/model.keras` and `results.json`, and with `export`
compacts and exports it. Every step is a function of its own so that callers can
reuse one piece (`build_model`, `compile_model`, `fit`) without the rest.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
from typing import Any

import keras

from tfsparse import _checks, data, models, recipes
from tfsparse._versions import versions
from tfsparse.callbacks import SparsityScheduler
from tfsparse.compact import compact
from tfsparse.epoch_data import fit_by_epochs
from tfsparse.export import export
from tfsparse.gates import gates_of, registry
from tfsparse.gates.base import UNIT
from tfsparse.pruning import prune_by_magnitude
from tfsparse.resume import PhaseCheckpoints
from tfsparse.sparsify import check_settings, sparsify
from tfsparse.summary import summary
from tfsparse.weight_decay import plain_decay, set_kernel_regularizer

DENSE = "dense"
VERBOSITIES = (0, 1, 2)
PRUNE_LEVELS = (None, "weight", "unit")


def methods() -> tuple[str, ...]:
    """`"dense"` (no gates) and every registered sparsity method."""
    return (DENSE, *registry.methods())


@dataclasses.dataclass
class RunConfig:
    """Everything that determines one run; checked when it is made.

    Attributes:
        model: a name from `tfsparse.models.MODELS`.
        dataset: a name `tfsparse.data.load` knows, or a `.npz` path.
        method: `"dense"` or one of `tfsparse.METHODS`.
        epochs: training epochs of the (first) sparse phase, at least 1.
        batch_size: examples per step.
        lr: Adam's learning rate.
        lr_schedule: `"constant"`, `"cosine"` (decays to 0 over each phase) or
            `"step"` (a tenth from half-way through each phase, a hundredth from 80 %,
            or as `lr_drops` says).
        lr_drops: with `lr_schedule="step"`, (fraction, factor) pairs: the rate
            times factor from that fraction of each phase on (default
            `tfsparse.recipes.STEP_DROPS`).
        seed: seeds weights, gates, shuffling and the validation split.
        validation_split: fraction of the training set held out; 0 trains on all.
        out: parent folder of the run folder.
        run_name: the run folder's name (default `<model>-<dataset>-<timestamp>`).
        verbose: Keras `fit` verbosity (0, 1 or 2).
        weight_decay: an L2 penalty ½·weight_decay·Σw² on every kernel (what
            PyTorch's `weight_decay` does to plain gradients; the papers' codes use it).
            Under hard-concrete unit gates each Dense/Conv weight counts with
            the probability that the gates keep it, the L0 paper's expected L2
            (`SparseModel.decay_weights_under_gates`).
        average_weights: momentum of a moving average of every trainable variable
            that replaces them when each phase's `fit` ends (0: none; the L0
            paper's code uses 0.999).
        settings: the method's own settings (`tfsparse.recipes.recipe`'s keywords,
            e.g. `{"lam": 0.1}`).
        target_flops, target_params: a budget instead of a penalty weight: keep this
            fraction (in (0, 1]) of the dense multiply-adds or weights.
        pretrain_epochs: train the dense network this long before inserting gates.
        ramp: targeted dropout: ramp α and γ over training.
        prune_rate: magnitude-prune this fraction at the end (any model).
        prune_level: level of `prune_rate` (default: the `level` the method's
            recipe gives sparsify, e.g. `"unit"` for targeted dropout under a
            budget; else `"weight"`).
        continue_epochs: then train for this many epochs the method that starts from
            this one's gates (`registry.successor`: DBB after BB).
        export: compact the trained model and export SavedModel + TFLite.
        resume: checkpoint every epoch under `<out>/<run_name>/checkpoints`, so
            that the same configuration started again with the same `run_name`
            continues from the last finished epoch (`tfsparse.resume`); needs a
            `run_name`.
    """

    model: str
    dataset: str
    method: str = DENSE
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"
    lr_drops: tuple | None = None
    seed: int = 0
    validation_split: float = 0.1
    out: str = "saved_models"
    run_name: str | None = None
    verbose: int = 1
    weight_decay: float = 0.0
    average_weights: float = 0.0
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    target_flops: float | None = None
    target_params: float | None = None
    pretrain_epochs: int = 0
    ramp: bool = False
    prune_rate: float | None = None
    prune_level: str | None = None
    continue_epochs: int = 0
    export: bool = False
    resume: bool = False

    def __post_init__(self):
        _checks.choice("model", self.model, tuple(models.MODELS))
        _checks.choice("method", self.method, methods())
        _checks.number("epochs", self.epochs, low=1, integer=True)
        _checks.number("batch_size", self.batch_size, low=1, integer=True)
        _checks.number("lr", self.lr, low=0, low_open=True)
        _checks.number("weight_decay", self.weight_decay, low=0)
        _checks.number("average_weights", self.average_weights, low=0, high=1, high_open=True)
        _checks.choice("lr_schedule", self.lr_schedule, recipes.LR_SCHEDULES)
        if self.lr_drops is not None:
            if self.lr_schedule != "step":
                raise ValueError(
                    "`lr_drops` applies to lr_schedule='step' only; got "
                    f"lr_schedule={self.lr_schedule!r}."
                )
            self.lr_drops = recipes.check_drops(self.lr_drops, "lr_drops")
        _checks.number("seed", self.seed, integer=True)
        _checks.number("validation_split", self.validation_split, low=0, high=1, high_open=True)
        _checks.choice("verbose", self.verbose, VERBOSITIES)
        _checks.number("pretrain_epochs", self.pretrain_epochs, low=0, integer=True)
        _checks.number("continue_epochs", self.continue_epochs, low=0, integer=True)
        if self.prune_rate is not None:
            _checks.number("prune_rate", self.prune_rate, low=0, high=1)
        _checks.choice("prune_level", self.prune_level, PRUNE_LEVELS)
        if not isinstance(self.settings, dict):
            raise TypeError(f"`settings` must be a dict, got {type(self.settings).__name__}.")
        if self.continue_epochs and (
            self.method == DENSE or registry.successor(self.method) is None
        ):
            followed = ", ".join(m for m in registry.methods() if registry.successor(m))
            raise ValueError(
                f"`continue_epochs` needs a method that another continues from ({followed}); "
                f"got `method` {self.method!r}."
            )
        if self.method == DENSE:
            given = {
                "settings": self.settings,
                "target_flops": self.target_flops,
                "target_params": self.target_params,
                "pretrain_epochs": self.pretrain_epochs,
                "ramp": self.ramp,
            }
            for name, value in given.items():
                if value:
                    raise ValueError(
                        f"`{name}` belongs to a sparsity method; `method` is 'dense' "
                        f"(one of {', '.join(registry.methods())} takes it)."
                    )
        else:
            # The method's settings as sparsify will get them: an unknown
            # one fails now, not after the data is loaded and pretrained on.
            check_settings(self.method, self.recipe().settings)
        if self.resume and self.run_name is None:
            raise ValueError(
                "`resume` continues the run named `run_name`: give one (the default "
                "name has the time in it, so a second start would not find the first)."
            )
        if self.run_name is None:
            stem = os.path.splitext(os.path.basename(str(self.dataset)))[0]
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            self.run_name = f"{self.model}-{stem}-{stamp}"

    def recipe(self, steps_per_epoch: int = 1) -> recipes.Recipe:
        """The method's recipe for this run (`tfsparse.recipes.recipe`): the
        settings `sparsify` gets and the scheduler; `steps_per_epoch` only
        shapes step-based ramps."""
        return recipes.recipe(
            self.method,
            self.epochs,
            steps_per_epoch=steps_per_epoch,
            ramp=self.ramp,
            pretrained=bool(self.pretrain_epochs),
            target_flops=self.target_flops,
            target_params=self.target_params,
            **self.settings,
        )

    def replace(self, **changes) -> RunConfig:
        """A copy with `changes` (checked again)."""
        return dataclasses.replace(self, **changes)


def parse_settings(pairs: list[str], flag: str = "--set") -> dict[str, Any]:
    """`["lam=0.1", "mode=expand"]` → `{"lam": 0.1, "mode": "expand"}`.

    Values are read as JSON where they parse (numbers, true/false, lists),
    otherwise kept as strings. `flag` names the option in errors.
    """
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def build_model(config: RunConfig, splits: data.Splits) -> keras.Model:
    """The plain reference network `config.model`, for `splits`' input shape and
    classes, with `config.weight_decay` on its kernels; uncompiled, it outputs logits."""
    builder = models.get(config.model)
    model = builder(input_shape=splits.input_shape, num_classes=splits.num_classes)
    if config.weight_decay:
        regularizer = plain_decay(config.weight_decay)
        for layer in model.layers:
            if getattr(layer, "kernel", None) is not None and hasattr(layer, "kernel_regularizer"):
                set_kernel_regularizer(layer, regularizer)
    return model


def pretrained_dense(config: RunConfig, splits: data.Splits) -> tuple[keras.Model, list[float]]:
    """`config.model`, trained `config.pretrain_epochs` first when asked (as the
    BB paper does); returns it and each pretraining epoch's wall time."""
    dense = build_model(config, splits)
    if not config.pretrain_epochs:
        return dense, []
    pretrain = config.replace(epochs=config.pretrain_epochs)
    _, times = fit(compile_model(dense, pretrain, splits), splits, pretrain, phase="pretrain")
    return dense, times


def build_sparse(
    config: RunConfig, splits: data.Splits, dense: keras.Model | None = None
) -> tuple[keras.Model, list[keras.callbacks.Callback]]:
    """`config.model` with `config.method`'s gates, compiled, and its scheduler.

    `dense` is the network to gate, its weights carried into the sparse one;
    by default `pretrained_dense(config, splits)`'s.
    """
    if dense is None:
        dense, _ = pretrained_dense(config, splits)
    plan = config.recipe(data.steps_per_epoch(len(splits.train[0]), config.batch_size))
    sparse = sparsify(
        dense,
        config.method,
        dataset_size=len(splits.train[0]),
        seed=config.seed,
        **plan.settings,
    )
    _decay_under_gates(sparse, config, config.method)
    return compile_model(sparse, config, splits), [plan.scheduler]


def _decay_under_gates(sparse, config, method):
    """Moves `config.weight_decay` under the unit gates where the method's
    code charges weights that way (`Gate.decays_weights_under_gates`: the L0
    paper's hard-concrete gates); other methods, and gates on single weights,
    keep the plain L2."""
    if not (config.weight_decay and registry.family(method).decays_weights_under_gates):
        return
    if any(gate.structure == UNIT for gate in gates_of(sparse)):
        sparse.decay_weights_under_gates(config.weight_decay)


def compile_model(
    model: keras.Model, config: RunConfig, splits: data.Splits | None = None
) -> keras.Model:
    """Compiles with Adam (`config.lr`, `config.lr_schedule`), cross-entropy on
    logits and accuracy. A cosine or step schedule runs over `config.epochs`
    epochs of `splits.train`."""
    total_steps = None
    if splits is not None:
        total_steps = config.epochs * data.steps_per_epoch(len(splits.train[0]), config.batch_size)
    model.compile(
        optimizer=recipes.optimizer(
            config.lr,
            config.lr_schedule,
            total_steps,
            config.average_weights,
            drops=config.lr_drops or recipes.STEP_DROPS,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def fit(
    model: keras.Model,
    splits: data.Splits,
    config: RunConfig,
    callbacks: tuple[keras.callbacks.Callback, ...] | list = (),
    phase: str = "train",
) -> tuple[keras.callbacks.History, list[float]]:
    """Trains a compiled model for `config.epochs` on `splits.train`, validating on
    `splits.val` (none when it is empty); returns the `History` and each epoch's
    wall time in seconds. With `config.resume` the run's `phase` is checkpointed
    every epoch, resumes where it stopped and, once finished, is loaded instead
    of trained again (`tfsparse.resume`)."""
    checkpoints = PhaseCheckpoints(config)
    recorder = checkpoints.recorder(phase)
    history = keras.callbacks.History()
    if checkpoints.finished(phase):
        checkpoints.restore(phase, model)
        recorder.load_all()
    else:
        x_val, y_val = splits.val
        # Each epoch's order and random layers come from (seed, epoch): Keras'
        # own shuffle repeats one order under a fixed seed (tfsparse.epoch_data).
        fit_by_epochs(
            model,
            *splits.train,
            batch_size=config.batch_size,
            seed=config.seed,
            epochs=config.epochs,
            validation_data=(x_val, y_val) if len(x_val) else None,
            # The backup first, so that it restores before the scheduler plans;
            # the recorder last, so that it sees the scheduler's logs.
            callbacks=[*checkpoints.callbacks(phase), *callbacks, recorder],
            verbose=config.verbose,
        )
        checkpoints.finish(phase, model)
    history.history = recorder.history
    return history, recorder.times


def build_continuation(
    model: keras.Model, splits: data.Splits, config: RunConfig, prepare=None
) -> tuple[keras.Model, RunConfig, list[keras.callbacks.Callback]]:
    """The second phase's model, compiled: the method that continues
    `config.method`'s gates in `model` (the BB paper's DBB, from the BB
    posteriors, kept frozen); with the phase's configuration and callbacks.
    `prepare`, if given, is called on the new gated model before it compiles
    (a benchmark's control changes it there)."""
    following = sparsify(
        model,
        registry.successor(config.method),
        dataset_size=len(splits.train[0]),
        seed=config.seed,
    )
    _decay_under_gates(following, config, registry.successor(config.method))
    if prepare is not None:
        prepare(following)
    continued = config.replace(epochs=config.continue_epochs, continue_epochs=0)
    compile_model(following, continued, splits)
    return following, continued, [SparsityScheduler()]


def continue_training(
    model: keras.Model, splits: data.Splits, config: RunConfig, prepare=None
) -> tuple[keras.Model, keras.callbacks.History, list[float]]:
    """The second phase: `build_continuation`'s model trained for
    `config.continue_epochs` epochs from the trained first phase's gates."""
    following, continued, callbacks = build_continuation(model, splits, config, prepare)
    history, times = fit(following, splits, continued, callbacks, phase="continue")
    return following, history, times


def export_before_after(model: keras.Model, splits: data.Splits, run_dir: str) -> dict:
    """Exports the trained model as it is (`before`) and compacted (`after`), each
    with its TFLite check; returns both reports with their summaries."""
    reports = {}
    for name, network in (("before", model), ("after", compact(model))):
        report = export(network, os.path.join(run_dir, f"export_{name}"), test_data=splits.test)
        report["summary"] = summary(network, print_fn=None)["total"]
        reports[name] = report
    return reports


def run(config: RunConfig) -> dict[str, Any]:
    """Loads, builds, trains, evaluates and saves one run.

    Returns:
        The results (also written to `<out>/<run_name>/results.json`): test error,
        accuracy and loss, parameter count, per-epoch times, the training history,
        the sparsity summary, `versions`, `args` (the configuration), `model_path`;
        with `pretrain_epochs` each pretraining epoch's time as
        `pretrain_time_per_epoch`; with `continue_epochs` the first phase's
        figures as `first_phase`; with `export` the before/after export
        reports as `export`.
    """
    keras.utils.set_random_seed(config.seed)
    checkpoints = PhaseCheckpoints.start(config)
    splits = data.load(config.dataset, validation_split=config.validation_split, seed=config.seed)
    pretrain_times = []
    if config.method == DENSE:
        model, callbacks = compile_model(build_model(config, splits), config, splits), []
    else:
        dense, pretrain_times = pretrained_dense(config, splits)
        model, callbacks = build_sparse(config, splits, dense)

    start = time.perf_counter()
    history, epoch_times = fit(model, splits, config, callbacks)
    first_phase = None
    if config.continue_epochs:
        first_phase = _phase_record(model, splits, config, epoch_times)
        model, more_history, more_times = continue_training(model, splits, config)
        for key, values in more_history.history.items():
            history.history.setdefault(key, []).extend(values)
        epoch_times += more_times
    total_time = time.perf_counter() - start
    if checkpoints.resumed:
        # This process trained only part of the run: count every epoch's time.
        total_time = sum(epoch_times)
    if config.prune_rate is not None:
        level = config.prune_level
        if level is None:
            planned = {} if config.method == DENSE else config.recipe().settings
            level = planned.get("level", "weight")
        prune_by_magnitude(model, config.prune_rate, level=level)
    test_loss, test_accuracy = model.evaluate(
        *splits.test, batch_size=config.batch_size, verbose=0
    )

    run_dir = os.path.join(config.out, config.run_name)
    os.makedirs(run_dir, exist_ok=True)
    model_path = os.path.join(run_dir, "model.keras")
    model.save(model_path)
    results = {
        "run_name": config.run_name,
        "dataset": splits.name,
        "model": config.model,
        "method": config.method,
        "params": int(model.count_params()),
        "test_accuracy": float(test_accuracy),
        "test_error": 1.0 - float(test_accuracy),
        "test_loss": float(test_loss),
        "epochs": len(epoch_times),
        "time_per_epoch": [round(t, 4) for t in epoch_times],
        "total_time": round(total_time, 4),
        "train_size": int(len(splits.train[1])),
        "val_size": int(len(splits.val[1])),
        "test_size": int(len(splits.test[1])),
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "versions": versions(),
        "args": dataclasses.asdict(config),
        "model_path": model_path,
        # With a batch, input-dependent gates (DBB) also report per-example figures.
        "sparsity": summary(model, print_fn=None, x=splits.test[0][:1000]),
    }
    if pretrain_times:
        # Not in `total_time`, which counts the method's own training.
        results["pretrain_time_per_epoch"] = [round(t, 4) for t in pretrain_times]
    if checkpoints.resumed:
        results["resumed"] = True
    if first_phase is not None:
        results["first_phase"] = first_phase
    if config.export:
        results["export"] = export_before_after(model, splits, run_dir)
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=_jsonable)
    checkpoints.remove()
    return results


def _phase_record(model, splits, config, epoch_times):
    """The first method's own figures, before the next one continues from it."""
    accuracy = model.evaluate(*splits.test, batch_size=config.batch_size, verbose=0)[1]
    return {
        "method": config.method,
        "epochs": len(epoch_times),
        "test_error": 1.0 - float(accuracy),
        "time_per_epoch": [round(t, 4) for t in epoch_times],
        "sparsity": summary(model, print_fn=None),
    }


def _jsonable(value):
    """numpy scalars and arrays in results → plain JSON."""
    return value.tolist() if hasattr(value, "tolist") else str(value)
