"""Accuracy after magnitude pruning, with and without targeted dropout.

The experiment of Gomez et al. (2019), Figures 2-3, on MNIST: train the same
network under four regimes, then prune it post hoc (no fine-tuning) at
increasing rates and measure test accuracy.

Regimes:
    none       no dropout;
    dropout    standard dropout 0.5 after each hidden fully connected layer
               (`fc*`; conv feature maps are left alone);
    targeted   targeted dropout, α = γ = 0.5 by default (the paper's
               default; `--alpha`, `--gamma` change it, e.g. γ = 0.9 to target
               90 % pruning: then the file names carry `_a<α>_g<γ>`);
    ramping    ramping targeted dropout to α = 0.99 and γ = 0.99 (weight
               level) or 0.90 (unit level). γ reaches 0.95·γ at half of the
               ramp and γ at its end, α rises linearly; the ramp lasts
               `--ramp-fraction` of training (default 0.4: the official code
               ramps over 40,000 steps of its ~100,000-step ResNet-32 runs,
               256 epochs of 50,000 images at batch 128).

Pruning (`tfsparse.pruning.prune_by_magnitude`): per column at weight level
(0, 50, 75, 90, 95, 99 %), whole units by L2 norm at unit level (0, 25, 50,
75, 90 %); the classifier is never pruned.

Writes `<out>/td_curve_<model>_<level>.json` and `.png`.

Usage (from the repository root):

    python -m bench.targeted_dropout_curve --model lenet_300_100 --level weight \\
        --epochs 20 --out bench/results/td_curve
    python -m bench.targeted_dropout_curve --epochs 1 --limit 1000   # smoke run
"""

import argparse
import datetime
import json
import math
import os
import platform
import socket
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfsparse  # noqa: E402
from tfsparse import models  # noqa: E402
from tfsparse.callbacks import SparsityScheduler  # noqa: E402
from tfsparse.epoch_data import fit_by_epochs  # noqa: E402
from tfsparse.pruning import magnitude_sparsity, prune_by_magnitude  # noqa: E402
from tfsparse.schedules import targeted_dropout_ramp  # noqa: E402

DATA = os.path.normpath(
    os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "mnist-10k.npz"
    )
)
RATES = {"weight": [0.0, 0.5, 0.75, 0.9, 0.95, 0.99], "unit": [0.0, 0.25, 0.5, 0.75, 0.9]}
RAMP_GAMMA = {"weight": 0.99, "unit": 0.90}
REGIMES = ("none", "dropout", "targeted", "ramping")
MODELS = ("lenet_300_100", "lenet5_caffe")


# ------------------------------------------------------------------- models
def build(regime, args, input_shape, total_steps):
    """(model, callbacks, settings) for one regime."""
    builder = getattr(models, args.model)
    if regime == "dropout":

        def factory(name):
            if name.startswith("fc"):
                return keras.layers.Dropout(0.5, name=f"{name}_dropout")
            return None

        return builder(input_shape, 10, gate_factory=factory), [], {"rate": 0.5}
    model = builder(input_shape, 10)
    if regime == "none":
        return model, [], {}
    if regime == "targeted":
        settings = {"alpha": args.alpha, "gamma": args.gamma}
        return (
            tfsparse.sparsify(
                model, "targeted_dropout", level=args.level, seed=args.seed, **settings
            ),
            [],
            settings,
        )
    alpha, gamma = 0.99, RAMP_GAMMA[args.level]
    ramp_steps = max(1, round(args.ramp_fraction * total_steps))
    settings = {"alpha": alpha, "gamma": gamma, "ramp_steps": ramp_steps}
    sparse = tfsparse.sparsify(
        model, "targeted_dropout", level=args.level, seed=args.seed, alpha=alpha, gamma=gamma
    )
    scheduler = SparsityScheduler(schedules=targeted_dropout_ramp(alpha, gamma, ramp_steps))
    return sparse, [scheduler], settings


# --------------------------------------------------------------------- data
def load(path, limit):
    with np.load(path) as data:
        x_train, y_train = data["x_train"], data["y_train"]
        x_test, y_test = data["x_test"], data["y_test"]
    if limit:
        x_train, y_train, x_test, y_test = (
            x_train[:limit],
            y_train[:limit],
            x_test[:limit],
            y_test[:limit],
        )

    def images(x):
        return (x.astype("float32") / 255.0)[..., None]

    return ((images(x_train), y_train.astype("int32")), (images(x_test), y_test.astype("int32")))


# ------------------------------------------------------------------ running
def run_regime(regime, args, train, test):
    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = train, test
    total_steps = args.epochs * math.ceil(len(x_train) / args.batch_size)
    model, callbacks, settings = build(regime, args, x_train.shape[1:], total_steps)
    jit = {"auto": "auto", "on": True, "off": False}[args.jit]
    model.compile(
        keras.optimizers.Adam(args.lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit,
    )
    start = time.time()
    # Each epoch in its own order (Keras' shuffle repeats one under the seed).
    history = fit_by_epochs(
        model,
        x_train,
        y_train,
        batch_size=args.batch_size,
        seed=args.seed,
        epochs=args.epochs,
        callbacks=callbacks,
        verbose=args.verbose,
    )
    seconds = time.time() - start
    trained = model.get_weights()
    accuracy, sparsity = [], []
    for rate in RATES[args.level]:
        model.set_weights(trained)
        prune_by_magnitude(model, rate, level=args.level)
        accuracy.append(float(model.evaluate(x_test, y_test, batch_size=1024, verbose=0)[1]))
        sparsity.append(magnitude_sparsity(model, include_classifier=False))
    print(
        f"{regime:>9}: "
        + "  ".join(f"{r:.0%}→{a:.4f}" for r, a in zip(RATES[args.level], accuracy)),
        flush=True,
    )
    return {
        "settings": settings,
        "accuracy": accuracy,
        "sparsity": sparsity,
        "train_seconds": seconds,
        "final_train_loss": float(history.history["loss"][-1]),
    }


def plot(record, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    rates = [100 * r for r in record["rates"]]
    for regime, result in record["regimes"].items():
        ax.plot(rates, [100 * a for a in result["accuracy"]], marker="o", label=regime)
    ax.set_xlabel(f"{record['level']}s pruned per layer (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{record['model']}, {record['level']}-level pruning, {record['epochs']} epochs")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m bench.targeted_dropout_curve", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--model", choices=MODELS, default="lenet_300_100")
    p.add_argument("--level", choices=("weight", "unit"), default="weight")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument(
        "--out",
        default=os.path.join("bench", "results", "td_curve"),
        help="output folder for the JSON and PNG",
    )
    p.add_argument("--data", default=DATA, help="an .npz in Keras' mnist.npz layout")
    p.add_argument(
        "--limit",
        type=int,
        default=0,
        help="use only the first N training and test images (smoke runs)",
    )
    p.add_argument(
        "--regimes",
        default=",".join(REGIMES),
        help=f"comma-separated subset of {','.join(REGIMES)}",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="α of the targeted regime")
    p.add_argument("--gamma", type=float, default=0.5, help="γ of the targeted regime")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--ramp-fraction",
        type=float,
        default=0.4,
        help="fraction of training over which ramping TD reaches α, γ",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jit", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--verbose", type=int, default=2)
    args = p.parse_args(argv)
    args.regimes = [r.strip() for r in args.regimes.split(",") if r.strip()]
    unknown = sorted(set(args.regimes) - set(REGIMES))
    if unknown:
        p.error(f"unknown regime(s) {unknown}; choose from {', '.join(REGIMES)}")
    for name in ("alpha", "gamma"):
        if not 0 <= getattr(args, name) <= 1:
            p.error(f"--{name} must be in [0, 1]")
    if not 0 < args.ramp_fraction <= 1:
        p.error("--ramp-fraction must be in (0, 1]")
    return args


def main(argv=None):
    args = parse_args(argv)
    train, test = load(args.data, args.limit)
    record = {
        "model": args.model,
        "level": args.level,
        "epochs": args.epochs,
        "limit": args.limit,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "ramp_fraction": args.ramp_fraction,
        "alpha": args.alpha,
        "gamma": args.gamma,
        "train_examples": len(train[0]),
        "test_examples": len(test[0]),
        "rates": RATES[args.level],
        "regimes": {regime: run_regime(regime, args, train, test) for regime in args.regimes},
        "host": {
            "hostname": socket.gethostname(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(),
        },
    }
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"td_curve_{args.model}_{args.level}")
    if (args.alpha, args.gamma) != (0.5, 0.5):
        stem += f"_a{args.alpha:g}_g{args.gamma:g}"
    with open(stem + ".json", "w") as f:
        json.dump(record, f, indent=2)
    plot(record, stem + ".png")
    print(f"wrote {stem}.json and {stem}.png")
    return record


if __name__ == "__main__":
    main()
