"""Trains one network on one dataset and saves the model and its results.

    python train.py --model lenet_300_100 --dataset digits --epochs 15
    python train.py --model lenet5_caffe --dataset path/to/mnist.npz --epochs 15
    python train.py --model lenet_300_100 --dataset digits --method npn --set lam=0.1
    python train.py --model lenet5_caffe --dataset mnist.npz --method bb \
        --pretrain-epochs 10 --continue-epochs 20 --export
    python train.py --model lenet_300_100 --dataset digits \
        --method targeted_dropout --ramp --prune-rate 0.9

A run writes `<out>/<run-name>/model.keras` and `<out>/<run-name>/results.json`.
This file is the command line only: it turns the options into a
`tfsparse.training.RunConfig` and calls `tfsparse.training.run`, the function the
benchmarks and the tuner call too.
"""

import argparse
import dataclasses
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported.

from tfsparse import data, models, recipes  # noqa: E402
from tfsparse.training import RunConfig, methods, parse_settings, run  # noqa: E402

METHODS = methods()
_FIELDS = {field.name for field in dataclasses.fields(RunConfig)}


def parse_args(argv=None):
    """Parses the command line into a checked `RunConfig`.

    Args:
        argv: list of arguments without the program name (default:
            `sys.argv[1:]`).

    Returns:
        A `tfsparse.training.RunConfig`; `run_name` is filled in when not given.
        A bad option exits with argparse's usage error, naming the option.
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
        "--weight-decay",
        type=float,
        default=0.0,
        help="L2 penalty ½·wd·Σw² on every kernel (as PyTorch's weight_decay); under "
        "hard-concrete unit gates each weight counts with the chance the gates keep it",
    )
    p.add_argument(
        "--average-weights",
        type=float,
        default=0.0,
        help="momentum of a moving average of the weights and gates that replaces "
        "them when training ends (0: none; the L0 paper's code: 0.999)",
    )
    p.add_argument(
        "--lr-schedule",
        default="constant",
        choices=recipes.LR_SCHEDULES,
        help="cosine: decay the rate to 0 over each training phase; step: a tenth from "
        "half-way, a hundredth from 80 %% (tfsparse.recipes.optimizer)",
    )
    p.add_argument(
        "--lr-drops",
        nargs="+",
        type=_drop,
        default=None,
        metavar="FRACTION:FACTOR",
        help="with --lr-schedule step: the rate times FACTOR from FRACTION of each phase on "
        "(default 0.5:0.1 0.8:0.01; the BB authors' LeNet scripts: 0.5:0.1 0.7:0.01)",
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
    p.add_argument(
        "--resume",
        action="store_true",
        help="checkpoint every epoch; the same command started again continues "
        "where it stopped (needs --run-name)",
    )
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
        settings = parse_settings(args.set)
        options = {k: v for k, v in vars(args).items() if k in _FIELDS}
        return RunConfig(**options, settings=settings)
    except (TypeError, ValueError) as error:
        p.error(_as_options(str(error)))


def _drop(text):
    """'0.7:0.01' → (0.7, 0.01), for --lr-drops."""
    fraction, _, factor = text.partition(":")
    try:
        return float(fraction), float(factor)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not FRACTION:FACTOR (e.g. 0.7:0.01)"
        ) from None


def _as_options(message):
    """A configuration error in the command line's words: `prune_rate` → --prune-rate."""
    return re.sub(
        r"`(\w+)`",
        lambda m: "--" + m[1].replace("_", "-") if m[1] in _FIELDS else m[0],
        message,
    )


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
