"""Trains one network on one dataset and saves the model and its results.

    python train.py --model lenet_300_100 --dataset digits --epochs 15
    python train.py --model lenet5_caffe --dataset path/to/mnist.npz --epochs 15
    python train.py --model lenet_300_100 --dataset digits --method npn --set lam=0.1
    python train.py --model lenet5_caffe --dataset mnist.npz --method bb \
        --pretrain-epochs 10 --continue-epochs 20 --export
    python train.py --model lenet_300_100 --dataset digits \
        --method targeted_dropout --ramp --prune-rate 0.9

A run writes `<out>/<run-name>/model.keras` and `<out>/<run-name>/results.json`.
Every step is a function (`parse_args`, `build_model`, `compile_model`, `fit`,
`run`) so that the benchmarks and notebooks reuse exactly this code path.
"""

import argparse
import datetime
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

import keras  # noqa: E402

import tfsparse  # noqa: E402
from tfsparse import data, models, recipes  # noqa: E402
from tfsparse._versions import versions  # noqa: E402
from tfsparse.gates import registry  # noqa: E402

METHODS = ("dense",) + tfsparse.METHODS


def parse_args(argv=None):
    """Parses the command line.

    Args:
        argv: list of arguments without the program name (default:
            `sys.argv[1:]`).

    Returns:
        An `argparse.Namespace`; `run_name` is filled in when not given.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, choices=sorted(models.MODELS))
    p.add_argument(
        "--dataset",
        required=True,
        help=f"one of {', '.join(data.TFDS_NAMES + data.OFFLINE_NAMES)}, or a .npz path",
    )
    p.add_argument("--method", default="dense", choices=METHODS)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument(
        "--lr-schedule",
        default="constant",
        choices=recipes.LR_SCHEDULES,
        help="cosine: decay the rate to 0 over each training phase (tfsparse.recipes.optimizer)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--validation-split",
        type=float,
        default=0.1,
        help="fraction of the training set held out for validation; 0 trains on all of it",
    )
    p.add_argument("--out", default="saved_models", help="parent folder of the run folder")
    p.add_argument("--run-name", default=None, help="default: <model>-<dataset>-<timestamp>")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras fit verbosity")
    m = p.add_argument_group("sparsity methods")
    m.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method setting (repeatable), e.g. --set lam=0.1 --set mode=expand "
        "--set init_size=3; see tfsparse.recipes.DEFAULTS",
    )
    m.add_argument(
        "--target-flops",
        type=float,
        default=None,
        metavar="F",
        help="a budget instead of a penalty weight: keep this fraction of the "
        "dense multiply-adds (0 < F <= 1; tfsparse.budget)",
    )
    m.add_argument(
        "--target-params",
        type=float,
        default=None,
        metavar="P",
        help="the same for the number of weights",
    )
    m.add_argument(
        "--pretrain-epochs",
        type=int,
        default=0,
        help="train the dense network this long before inserting gates",
    )
    m.add_argument("--ramp", action="store_true", help="targeted dropout: ramp alpha and gamma")
    m.add_argument(
        "--prune-rate",
        type=float,
        default=None,
        help="targeted dropout / any model: magnitude-prune this fraction at the end",
    )
    m.add_argument(
        "--prune-level",
        default=None,
        choices=("weight", "unit"),
        help="level of --prune-rate (default: the method's level, else weight)",
    )
    m.add_argument(
        "--continue-epochs",
        "--dbb-epochs",
        dest="continue_epochs",
        type=int,
        default=0,
        help="then continue for this many epochs with the method that starts from this "
        "one's gates (after bb: DBB, BB's a, b frozen)",
    )
    m.add_argument(
        "--export",
        action="store_true",
        help="compact the trained model and export SavedModel + TFLite",
    )
    args = p.parse_args(argv)
    try:
        args.settings = parse_settings(args.set)
    except ValueError as error:
        p.error(str(error))
    if args.continue_epochs and (
        args.method == "dense" or registry.successor(args.method) is None
    ):
        followed = [m for m in registry.methods() if registry.successor(m)]
        p.error(
            f"--continue-epochs (--dbb-epochs) needs a method another continues from: "
            f"{', '.join(followed)}; got --method {args.method}"
        )
    if args.prune_rate is not None and not 0.0 <= args.prune_rate <= 1.0:
        p.error("--prune-rate must be in [0, 1]")
    if args.epochs < 1:
        p.error("--epochs must be at least 1")
    if not 0.0 <= args.validation_split < 1.0:
        p.error("--validation-split must be in [0, 1)")
    if args.run_name is None:
        stem = os.path.splitext(os.path.basename(args.dataset))[0]
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.run_name = f"{args.model}-{stem}-{stamp}"
    return args


def parse_settings(pairs, flag="--set"):
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


def build_model(args, splits):
    """Builds the plain reference network named by `args.model`.

    Args:
        args: parsed arguments (`args.model`).
        splits: the `tfsparse.data.Splits` (gives input shape and classes).

    Returns:
        An uncompiled `keras.Model` that outputs logits.
    """
    builder = models.get(args.model)
    return builder(input_shape=splits.input_shape, num_classes=splits.num_classes)


def build_sparse(args, splits):
    """The network of `args.model` with `args.method`'s gates and scheduler.

    With `--pretrain-epochs` the dense network is trained first and its
    weights carried into the sparse one (as the BB paper does).

    Returns:
        `(model, callbacks)`; the model is a compiled `tfsparse.SparseModel`.
    """
    dense = build_model(args, splits)
    if args.pretrain_epochs:
        pretrain = argparse.Namespace(**{**vars(args), "epochs": args.pretrain_epochs})
        fit(compile_model(dense, pretrain, splits), splits, pretrain)
    steps = data.steps_per_epoch(len(splits.train[0]), args.batch_size)
    plan = recipes.recipe(
        args.method,
        args.epochs,
        steps_per_epoch=steps,
        ramp=args.ramp,
        pretrained=bool(args.pretrain_epochs),
        target_flops=args.target_flops,
        target_params=args.target_params,
        **args.settings,
    )
    sparse = tfsparse.sparsify(
        dense, args.method, dataset_size=len(splits.train[0]), seed=args.seed, **plan.settings
    )
    return compile_model(sparse, args, splits), [plan.scheduler]


def compile_model(model, args, splits=None):
    """Compiles with Adam (`args.lr`, `args.lr_schedule`), cross-entropy on
    logits, and accuracy. A cosine schedule decays over `args.epochs` epochs
    of `splits.train`."""
    total_steps = None
    if splits is not None:
        total_steps = args.epochs * data.steps_per_epoch(len(splits.train[0]), args.batch_size)
    model.compile(
        optimizer=recipes.optimizer(args.lr, args.lr_schedule, total_steps),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every epoch (training plus validation), in seconds."""

    def __init__(self):
        super().__init__()
        self.times = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def fit(model, splits, args, callbacks=()):
    """Trains a compiled model on `splits.train`, validating on `splits.val`.

    Args:
        model: a compiled model.
        splits: the `tfsparse.data.Splits`.
        args: parsed arguments (`epochs`, `batch_size`, `verbose`).
        callbacks: extra Keras callbacks (e.g. a sparsity scheduler).

    Returns:
        `(history, epoch_times)`: the Keras `History` and the wall time of
        each epoch in seconds.
    """
    timer = EpochTimer()
    x_val, y_val = splits.val
    # An empty validation split (validation_split=0) means: no validation at all.
    validation_data = (x_val, y_val) if len(x_val) else None
    history = model.fit(
        *splits.train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=validation_data,
        callbacks=[*callbacks, timer],
        verbose=getattr(args, "verbose", 1),
    )
    return history, timer.times


def run(args, build=None):
    """Loads data, builds, trains, evaluates and saves one run.

    Args:
        args: parsed arguments (see `parse_args`).
        build: optional `build(args, splits) -> (model, callbacks)`; the
            default builds `build_model(args, splits)` with no extra callbacks.
            The benchmark registry passes the method's own builder here.

    Returns:
        The results dict, also written to `<out>/<run_name>/results.json`.
    """
    keras.utils.set_random_seed(args.seed)
    splits = data.load(args.dataset, validation_split=args.validation_split, seed=args.seed)
    if build is None and args.method != "dense":
        model, callbacks = build_sparse(args, splits)
    elif build is None:
        model, callbacks = build_model(args, splits), []
    else:
        model, callbacks = build(args, splits)
    if not model.compiled:  # A method's builder may compile with its own optimizer.
        compile_model(model, args, splits)

    start = time.perf_counter()
    history, epoch_times = fit(model, splits, args, callbacks)
    first_phase = None
    if args.continue_epochs:
        # The first method's own figures, before the next continues from it.
        first_phase = {
            "method": args.method,
            "epochs": len(epoch_times),
            "test_error": 1.0
            - float(model.evaluate(*splits.test, batch_size=args.batch_size, verbose=0)[1]),
            "time_per_epoch": [round(t, 4) for t in epoch_times],
            "sparsity": tfsparse.summary(model, print_fn=None),
        }
        model, more_history, more_times = continue_training(model, splits, args)
        for key, values in more_history.history.items():
            history.history.setdefault(key, []).extend(values)
        epoch_times += more_times
    total_time = time.perf_counter() - start
    if args.prune_rate is not None:
        level = args.prune_level or args.settings.get("level", "weight")
        tfsparse.prune_by_magnitude(model, args.prune_rate, level=level)
    test_loss, test_accuracy = model.evaluate(*splits.test, batch_size=args.batch_size, verbose=0)

    run_dir = os.path.join(args.out, args.run_name)
    os.makedirs(run_dir, exist_ok=True)
    model_path = os.path.join(run_dir, "model.keras")
    model.save(model_path)

    results = {
        "run_name": args.run_name,
        "dataset": splits.name,
        "model": args.model,
        "method": args.method,
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
        "args": vars(args),
        "model_path": model_path,
    }
    # With a batch, input-dependent gates (DBB) also report per-example figures.
    results["sparsity"] = tfsparse.summary(model, print_fn=None, x=splits.test[0][:1000])
    if first_phase is not None:
        results["first_phase"] = first_phase
    if args.export:
        results["export"] = export_before_after(model, splits, run_dir)
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=_jsonable)
    return results


def _jsonable(value):
    """numpy scalars and arrays in results → plain JSON."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def continue_training(model, splits, args):
    """The second phase: the method that continues `args.method`'s gates
    (`registry.successor`; the BB paper's DBB, starting from the trained BB
    posteriors, kept frozen), trained for `args.continue_epochs` epochs."""
    method = registry.successor(args.method)
    following = tfsparse.sparsify(model, method, dataset_size=len(splits.train[0]), seed=args.seed)
    phase = argparse.Namespace(**{**vars(args), "epochs": args.continue_epochs})
    compile_model(following, phase, splits)
    history, times = fit(following, splits, phase, [tfsparse.SparsityScheduler()])
    return following, history, times


def export_before_after(model, splits, run_dir):
    """Exports the trained model as it is (`before`) and compacted (`after`),
    each with its TFLite check; returns both reports and their summaries."""
    small = tfsparse.compact(model)
    reports = {}
    for name, network in (("before", model), ("after", small)):
        report = tfsparse.export(
            network, os.path.join(run_dir, f"export_{name}"), test_data=splits.test
        )
        report["summary"] = tfsparse.summary(network, print_fn=None)["total"]
        reports[name] = report
    return reports


def export_table(reports):
    """The before/after table that `make demo` prints."""
    rows = [("", "before (gated)", "after (compact)")]
    get = {
        "weights": lambda r: f"{int(r['summary']['weights_total']):,}",
        "FLOPs (multiply-adds)": lambda r: f"{int(r['summary']['flops_total']):,}",
        "TFLite size (KiB)": lambda r: f"{r['sizes_bytes']['tflite'] / 1024:.1f}",
        "TFLite latency (ms, batch 1)": lambda r: f"{r['tflite']['latency_ms']:.4f}",
        "TFLite test accuracy": lambda r: f"{100 * r['tflite']['accuracy']:.2f} %",
        "TFLite = Keras (max abs diff)": lambda r: f"{r['tflite']['parity']['max_abs_diff']:.1e}",
    }
    for label, fn in get.items():
        rows.append((label, fn(reports["before"]), fn(reports["after"])))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:>16}  {c:>16}" for a, b, c in rows)


def summary_line(results):
    """One line describing a finished run."""
    times = results["time_per_epoch"]
    return (
        f"{results['run_name']}: {results['model']} ({results['method']}) on "
        f"{results['dataset']}: test error {100 * results['test_error']:.2f} % "
        f"({results['params']:,} params, {results['epochs']} epochs, "
        f"{sum(times) / len(times):.2f} s/epoch) -> {results['model_path']}"
    )


def main(argv=None):
    """Command-line entry point; returns the results dict."""
    results = run(parse_args(argv))
    print(summary_line(results))
    if "sparsity" in results and results["sparsity"]["units_total"]:
        kept, total = results["sparsity"]["units_kept"], results["sparsity"]["units_total"]
        print("units kept: " + "-".join(map(str, total)) + " -> " + "-".join(map(str, kept)))
    if "export" in results:
        print(export_table(results["export"]))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
