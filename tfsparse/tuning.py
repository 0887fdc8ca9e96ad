"""Search over sparsity settings with keras-tuner.

Users want *the cheapest model that is still accurate enough*. keras-tuner's
multi-objective is an unweighted sum, not a constraint, so the hypermodel
reports one scalar, `score` (minimise):

- a trial whose validation accuracy reaches the target scores its cost as a
  fraction of the dense network's (FLOPs or parameters kept, in [0, 1]);
- a trial below the target scores 1 + the accuracy it is missing, so every
  accurate trial beats every inaccurate one, and among inaccurate ones the
  closest wins.

Besides the method's own settings (`default_space`), a trial searches how the
weights train (`training_space`: Adam's learning rate, constant or with cosine
decay), since that moves the accuracy-cost trade-off as much as λ does.

With keras-tuner's `executions_per_trial`, a trial scores the mean of its
trainings' scores: a setting that misses the target on any of them ranks
below every setting that reaches it on all (a risk-averse reading of "stays
above the target", which the trial-to-trial noise of one training makes
worth paying for). keras-tuner keeps the model of the trial's last training,
so that is the one `get_best_models` returns.

Example:

>>> hypermodel = SparsityHyperModel("npn", "lenet_300_100", splits, epochs=30,
...                                 accuracy_target=0.95)
>>> tuner = keras_tuner.RandomSearch(hypermodel, objective=OBJECTIVE,
...                                  max_trials=20, directory="tuning")
>>> tuner.search(*splits.train, validation_data=splits.val)
"""

import keras
import keras_tuner as kt
import tensorflow as tf

from tfsparse import _checks, data, models, recipes
from tfsparse.epoch_data import fit_by_epochs
from tfsparse.gates import registry
from tfsparse.sparsify import sparsify
from tfsparse.summary import summary

OBJECTIVE = kt.Objective("score", direction="min")
# What the score minimises → the `tfsparse.summary` total that measures it.
COST_FRACTION = {"flops": "flops_fraction", "params": "weights_fraction"}
COSTS = tuple(COST_FRACTION)
BATCH_SIZE = 128


def default_space(method, hp):
    """The settings `method` searches over (names as in `sparsify`): its gate
    class's `search_space` (each setting's default is the library's
    recommendation, so a search that starts from the defaults,
    `first_trial_at_defaults`, begins where an untuned user is)."""
    return registry.family(method).search_space(hp)


def budget_space(cost):
    """A space over one number, the budget (`target_flops` or
    `target_params`, by `cost`): with a budget the method's penalty weight
    is gone, so a search over the target alone traces the accuracy-cost
    curve. Returns `space(method, hp)` for `SparsityHyperModel`."""
    _checks.choice("cost", cost, COSTS)

    def space(method, hp):
        del method
        return {
            f"target_{cost}": hp.Float(f"target_{cost}", 0.02, 1.0, sampling="log", default=0.25)
        }

    return space


def training_space(hp):
    """How the weights train: Adam's learning rate and its schedule
    (`tfsparse.recipes.optimizer`). The defaults, constant 1e-3, are what
    `train.py` and the benchmarks use."""
    return {
        "lr": hp.Float("lr", 3e-4, 1e-2, sampling="log", default=1e-3),
        "lr_schedule": hp.Choice("lr_schedule", list(recipes.LR_SCHEDULES), default="constant"),
    }


def split_training(settings):
    """`{**method settings, lr, lr_schedule}` → `(method settings, optimizer
    keyword arguments)`, so one dict can describe a whole trial."""
    settings = dict(settings)
    training = {
        "learning_rate": settings.pop("lr", 1e-3),
        "schedule": settings.pop("lr_schedule", "constant"),
    }
    return settings, training


def compile_trial(method, builder, splits, epochs, settings, seed=None, round_epochs=None):
    """One training of a trial: the network of `builder`, sparsified with
    `method` and compiled, and its scheduler.

    `settings` holds the method's settings over `tfsparse.recipes` defaults
    and maybe `lr`/`lr_schedule`; `round_epochs` is how many epochs this
    training runs (a Hyperband round; default `epochs`), which a cosine decay
    spans. Returns `(model, scheduler)`."""
    method_settings, training = split_training(settings)
    steps = data.steps_per_epoch(len(splits.train[0]), BATCH_SIZE)
    plan = recipes.recipe(method, epochs, steps_per_epoch=steps, **method_settings)
    dense = builder(splits.input_shape, splits.num_classes)
    model = sparsify(dense, method, dataset_size=len(splits.train[0]), seed=seed, **plan.settings)
    model.compile(
        recipes.optimizer(**training, total_steps=(round_epochs or epochs) * steps),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model, plan.scheduler


def first_trial_at_defaults(oracle):
    """Makes `oracle`'s first trial the search space's default values.

    keras-tuner oracles start from random points, so a 20-trial search may
    never come near the library's defaults; starting there means the search
    reports a winner only when it beat the defaults on the objective. Works
    for the RandomSearch and BayesianOptimization oracles (Hyperband runs
    its own brackets). Returns `oracle`."""
    populate = oracle.populate_space

    def populate_space(trial_id):
        if not oracle.trials:
            return {
                "status": kt.engine.trial.TrialStatus.RUNNING,
                "values": oracle.hyperparameters.values,
            }
        return populate(trial_id)

    oracle.populate_space = populate_space
    return oracle


def score(val_accuracy, cost_fraction, accuracy_target):
    """The scalar objective described in the module docstring."""
    if val_accuracy >= accuracy_target:
        return float(cost_fraction)
    return 1.0 + float(accuracy_target - val_accuracy)


class SparsityHyperModel(kt.HyperModel):
    """Builds, sparsifies and trains a network; reports `score` (minimise).

    Args:
        method: one of `tfsparse.METHODS`.
        model: a name from `tfsparse.models.MODELS` or a function
            `builder(input_shape, num_classes) -> keras.Model` (your own).
        splits: a `tfsparse.data.Splits` (input shape, classes, N).
        epochs: training epochs of a trial (Hyperband overrides it).
        accuracy_target: validation accuracy a trial must reach.
        cost: `"flops"` or `"params"`: what the score minimises.
        space: optional `space(method, hp) -> settings dict` replacing
            `default_space`.
        training: optional `training(hp) -> {"lr", "lr_schedule"}` replacing
            `training_space`. To search the method's settings only, hold
            these two at values with `hp.Fixed` in the tuner's
            `hyperparameters` (`tune.py --fix`).
    """

    def __init__(
        self,
        method,
        model,
        splits,
        epochs,
        accuracy_target,
        cost="flops",
        space=None,
        training=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.method = _checks.choice("method", method, registry.methods())
        self.builder = models.get(model) if isinstance(model, str) else model
        if not callable(self.builder):
            raise TypeError(
                f"`model` must be a model name or a builder function; got {type(model).__name__}."
            )
        self.splits = splits
        self.epochs = _checks.number("epochs", epochs, low=1, integer=True)
        self.accuracy_target = _checks.number("accuracy_target", accuracy_target, low=0, high=1)
        self.cost = _checks.choice("cost", cost, COSTS)
        self.space = space or default_space
        self.training = training or training_space

    def build(self, hp):
        settings = {**self.space(self.method, hp), **self.training(hp)}
        model, scheduler = compile_trial(
            self.method,
            self.builder,
            self.splits,
            self.epochs,
            settings,
            round_epochs=self._epochs_this_round(hp),
        )
        # The scheduler is rebuilt per trial from the same settings, so
        # nothing stateful crosses keras-tuner's deep copies.
        model._tfsparse_scheduler = scheduler
        return model

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        kwargs.setdefault("epochs", self.epochs)
        kwargs.setdefault("batch_size", BATCH_SIZE)
        kwargs.setdefault("verbose", 0)
        callbacks = [model._tfsparse_scheduler, *(callbacks or [])]
        if len(args) == 2 and not isinstance(args[0], tf.data.Dataset):
            # Arrays: each epoch in its own order (Keras' shuffle repeats one
            # under the fixed seed a search runs with; tfsparse.epoch_data),
            # the same orders for every trial, which differ by settings alone.
            batch_size = kwargs.pop("batch_size")
            kwargs.pop("shuffle", None)
            fit_by_epochs(
                model, *args, batch_size=batch_size, seed=0, callbacks=callbacks, **kwargs
            )
        else:
            model.fit(*args, callbacks=callbacks, **kwargs)
        x_val, y_val = kwargs.get("validation_data") or self.splits.val
        _, val_accuracy = model.evaluate(x_val, y_val, verbose=0)
        figures = summary(model, print_fn=None)
        cost_fraction = figures["total"][COST_FRACTION[self.cost]]
        return {
            "score": score(val_accuracy, cost_fraction, self.accuracy_target),
            "val_accuracy": float(val_accuracy),
            "cost_fraction": float(cost_fraction),
        }

    def _epochs_this_round(self, hp):
        """The epochs this build trains. Hyperband trains a trial in rounds and
        reloads its weights, not its optimizer, between them, so a cosine
        decay spans one round: each round ends on a fine-tuned model, which
        is the one Hyperband's promotion judges."""
        return hp.values.get("tuner/epochs", self.epochs) - hp.values.get("tuner/initial_epoch", 0)
