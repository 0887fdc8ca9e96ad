"""Searches a method's sparsity settings with keras-tuner.

    python tune.py --method npn --model lenet_300_100 --dataset digits \
        --accuracy-target 0.95 --trials 20 --epochs 30

The objective is `score` (see `tfsparse.tuning`): the FLOPs kept by the
cheapest trial whose validation accuracy reaches the target. Prints the trials
as a table, saves the best model compacted and exported under
`<out>/<run-name>/best/`, and draws accuracy against FLOPs with the Pareto
front as `<out>/<run-name>/pareto.png`.
"""

import argparse
import datetime
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

import keras_tuner as kt  # noqa: E402

import tfsparse  # noqa: E402
from tfsparse import data, models, plots, training, tuning  # noqa: E402
from tfsparse.epoch_data import fit_by_epochs  # noqa: E402

TUNERS = {
    "random": kt.RandomSearch,
    "bayesian": kt.BayesianOptimization,
    "hyperband": kt.Hyperband,
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", required=True, choices=tfsparse.METHODS)
    p.add_argument("--model", required=True, choices=sorted(models.MODELS))
    p.add_argument("--dataset", required=True, help="dataset name or .npz path")
    p.add_argument(
        "--accuracy-target",
        type=float,
        required=True,
        help="validation accuracy a trial must reach, in [0, 1]",
    )
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--tuner", default="random", choices=sorted(TUNERS))
    p.add_argument(
        "--initial-points",
        type=int,
        default=5,
        help="bayesian: trials before the Gaussian process takes over, the "
        "defaults' trial included",
    )
    p.add_argument(
        "--executions-per-trial",
        type=int,
        default=1,
        help="trainings (new initial weights and masks each) per trial; the "
        "trial scores the mean of their scores, so settings that miss the "
        "target on any of them rank below those that reach it on all",
    )
    p.add_argument(
        "--fix",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="hold a searched setting at a value (repeatable), e.g. --fix "
        "lr_schedule=constant --fix lr=0.001 to search the method's settings "
        "only; names as in the trials table",
    )
    p.add_argument("--cost", default="flops", choices=tuning.COSTS)
    p.add_argument(
        "--search-target",
        action="store_true",
        help="search the budget (--cost's target fraction) instead of the "
        "method's settings: the accuracy-cost curve in one search",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validation-split", type=float, default=0.1)
    p.add_argument("--out", default="saved_models")
    p.add_argument("--run-name", default=None)
    p.add_argument("--no-export", action="store_true", help="skip TFLite export of the best")
    p.add_argument(
        "--compare-default",
        action="store_true",
        help="also train the method's default settings (tfsparse.recipes) for "
        "the same epochs, for comparison with the best trial",
    )
    p.add_argument(
        "--confirm-seeds",
        nargs="*",
        type=int,
        default=[],
        help="retrain the best trial's settings and the defaults with these "
        "seeds and compare their mean test accuracy and cost",
    )
    args = p.parse_args(argv)
    if not 0 < args.accuracy_target <= 1:
        p.error("--accuracy-target must be in (0, 1]")
    if min(args.trials, args.epochs, args.initial_points, args.executions_per_trial) < 1:
        p.error(
            "--trials, --epochs, --initial-points and --executions-per-trial must be at least 1"
        )
    if not 0 < args.validation_split < 1:
        p.error("--validation-split must be in (0, 1): the search needs validation data")
    try:
        args.fixed = fixed_settings(args.method, args.fix)
    except ValueError as error:
        p.error(str(error))
    if args.run_name is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.run_name = f"tune-{args.method}-{args.model}-{stamp}"
    return args


def fixed_settings(method, pairs):
    """`--fix` pairs → `{name: value}`, each name one that the search space
    of `method` has (values read as JSON where they parse)."""
    fixed = training.parse_settings(pairs, flag="--fix")
    space = kt.HyperParameters()
    tuning.default_space(method, space)
    for cost in tuning.COSTS:
        tuning.budget_space(cost)(method, space)
    tuning.training_space(space)
    unknown = sorted(set(fixed) - set(space.values))
    if unknown:
        raise ValueError(
            f"--fix: {', '.join(unknown)} not searched for {method}; searched: "
            f"{', '.join(space.values)}"
        )
    return fixed


def make_tuner(args, hypermodel, directory):
    """The tuner of `--tuner`. Random and Bayesian searches start with the
    defaults as trial 1; the Bayesian one then fits its Gaussian process after
    `--initial-points` random trials (keras-tuner's default, 3 per searched
    setting, would leave a 20-trial search random for 15 of them)."""
    # `--fix`: a Fixed entry registered first is what the space's own
    # declaration of that name returns.
    fixed = kt.HyperParameters()
    for name, value in args.fixed.items():
        fixed.Fixed(name, value)
    common = dict(
        objective=tuning.OBJECTIVE,
        directory=directory,
        project_name="search",
        seed=args.seed,
        executions_per_trial=args.executions_per_trial,
        hyperparameters=fixed,
        tune_new_entries=True,
        overwrite=True,
    )
    if args.tuner == "hyperband":
        return kt.Hyperband(hypermodel, max_epochs=args.epochs, **common)
    if args.tuner == "bayesian":
        common["num_initial_points"] = args.initial_points
    tuner = TUNERS[args.tuner](hypermodel, max_trials=args.trials, **common)
    tuning.first_trial_at_defaults(tuner.oracle)
    return tuner


def trial_rows(tuner):
    rows = []
    for trial in tuner.oracle.trials.values():
        metrics = trial.metrics.metrics
        if "score" not in metrics:
            continue  # a failed trial
        get = trial.metrics.get_last_value
        rows.append(
            {
                "trial": trial.trial_id,
                **trial.hyperparameters.values,
                "val_accuracy": get("val_accuracy"),
                "cost": get("cost_fraction"),
                "score": get("score"),
            }
        )
    return sorted(rows, key=lambda r: r["score"])


def print_table(rows):
    keys = list(dict.fromkeys(k for row in rows for k in row))
    print(" | ".join(keys))
    for row in rows:
        print(
            " | ".join(
                f"{row.get(k):.4g}" if isinstance(row.get(k), float) else str(row.get(k))
                for k in keys
            )
        )


def is_defaults(values, defaults):
    """Whether a trial's `values` (hyperparameters, maybe with its metrics)
    are the search space's `defaults`."""
    return all(values.get(k) == v for k, v in defaults.items())


def plot_trials(path, rows, defaults, args):
    """Validation error against cost of every trial, the defaults' trial and
    the best (`rows[0]`) marked, with the Pareto front and the target (log
    axes)."""
    plots.plot_tradeoff(
        path,
        [r["cost"] for r in rows],
        [100 * (1 - r["val_accuracy"]) for r in rows],
        labels=[
            "defaults" if is_defaults(r, defaults) else "best" if r is rows[0] else "trials"
            for r in rows
        ],
        xlabel=f"{args.cost} kept (fraction of dense)",
        ylabel="validation error (%)",
        target=100 * (1 - args.accuracy_target),
        title=f"{args.method} on {args.model}: {len(rows)} trials",
        xscale="log",
        yscale="log",
    )


def train_settings(args, splits, settings=None, seed=None):
    """Trains the method once like a trial (same epochs, batch, scheduler) with
    `settings` (the method's, and maybe `lr` and `lr_schedule`) over the
    defaults (none: the defaults themselves); returns its validation and test
    accuracy and cost."""
    import keras

    seed = args.seed if seed is None else seed
    keras.utils.set_random_seed(seed)
    model, scheduler = tuning.compile_trial(
        args.method, models.get(args.model), splits, args.epochs, settings or {}, seed=seed
    )
    fit_by_epochs(
        model,
        *splits.train,
        batch_size=tuning.BATCH_SIZE,
        seed=seed,
        epochs=args.epochs,
        verbose=0,
        validation_data=splits.val,
        callbacks=[scheduler],
    )
    figures = tfsparse.summary(model, print_fn=None)
    return {
        "seed": seed,
        "val_accuracy": float(model.evaluate(*splits.val, verbose=0)[1]),
        "test_accuracy": float(model.evaluate(*splits.test, verbose=0)[1]),
        "cost": figures["total"][tuning.COST_FRACTION[args.cost]],
        "units_kept": figures["units_kept"],
    }


def confirm(args, splits, tuner, hypermodel):
    """Retrains the best trial's settings and the defaults with each seed of
    `--confirm-seeds`, side by side: a search that picks its winner on one
    noisy validation score is only better if the win survives new seeds and
    the test set."""
    best = tuner.get_best_hyperparameters(1)[0]
    settings = {**hypermodel.space(args.method, best), **hypermodel.training(best)}
    runs = {"default": [train_settings(args, splits, None, s) for s in args.confirm_seeds]}
    # When the defaults won the search, the same runs stand for both.
    defaults_won = is_defaults(best.values, tuner.oracle.hyperparameters.values)
    runs["best"] = (
        runs["default"]
        if defaults_won
        else [train_settings(args, splits, settings, s) for s in args.confirm_seeds]
    )
    means = {
        name: {
            key: sum(r[key] for r in rs) / len(rs)
            for key in ("val_accuracy", "test_accuracy", "cost")
        }
        for name, rs in runs.items()
    }
    print(f"over seeds {args.confirm_seeds}:")
    for name, m in means.items():
        print(
            f"  {name:8s} {args.cost} kept {m['cost']:.4f}, val accuracy "
            f"{m['val_accuracy']:.4f}, test accuracy {m['test_accuracy']:.4f}"
        )
    return {"settings": settings, "runs": runs, "means": means}


def main(argv=None):
    args = parse_args(argv)
    splits = data.load(args.dataset, validation_split=args.validation_split, seed=args.seed)
    run_dir = os.path.join(args.out, args.run_name)
    os.makedirs(run_dir, exist_ok=True)
    space = tuning.budget_space(args.cost) if args.search_target else None
    hypermodel = tuning.SparsityHyperModel(
        args.method,
        args.model,
        splits,
        args.epochs,
        args.accuracy_target,
        cost=args.cost,
        space=space,
    )
    tuner = make_tuner(args, hypermodel, run_dir)
    tuner.search(*splits.train, validation_data=splits.val)
    rows = trial_rows(tuner)
    print_table(rows)
    plot_trials(
        os.path.join(run_dir, "pareto.png"), rows, tuner.oracle.hyperparameters.values, args
    )
    best = tuner.get_best_models(1)[0]
    _, test_accuracy = best.evaluate(*splits.test, verbose=0)
    result = {
        "best": rows[0],
        "test_accuracy": float(test_accuracy),
        "trials": rows,
        "summary": tfsparse.summary(best, print_fn=None),
    }
    if args.compare_default:
        result["default"] = train_settings(args, splits)
        print(
            f"default settings: val accuracy {result['default']['val_accuracy']:.4f}, "
            f"{args.cost} kept {result['default']['cost']:.4f}, test accuracy "
            f"{result['default']['test_accuracy']:.4f}"
        )
    if args.confirm_seeds:
        result["confirm"] = confirm(args, splits, tuner, hypermodel)
    if not args.no_export:
        result["export"] = tfsparse.export(
            tfsparse.compact(best), os.path.join(run_dir, "best"), test_data=splits.test
        )
    with open(os.path.join(run_dir, "tuning.json"), "w") as f:
        json.dump(
            result, f, indent=2, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)
        )
    print(
        f"best trial {rows[0]['trial']}: score {rows[0]['score']:.4f}, test accuracy "
        f"{test_accuracy:.4f} -> {run_dir}"
    )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
