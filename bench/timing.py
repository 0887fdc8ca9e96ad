"""Training step time of every method as a ratio to the dense network.

    python -m bench.timing [--models lenet_300_100 lenet5_caffe] [--rounds 5]

All variants of one network are built first, warmed up (tracing), then timed
in interleaved rounds, each variant once per round in a shuffled order (batch
128, real mnist-10k images), so that every ratio compares runs measured side
by side on the same machine in the same invocation. Each round fits
`--steps` and 2·`--steps` steps; a step's time is the difference of the
fastest of each over the rounds, divided by `--steps`: noise from a shared
machine only adds time, and `fit`'s own start-up cost (tens of ms, more than a
whole MLP step) cancels out. Run it on an otherwise idle machine.
"""

import argparse
import json
import os
import platform
import random
import time

import keras

import tfsparse
from tfsparse import data, models, recipes

from bench.suites import MNIST, RECORDS

VARIANTS = {
    "dense": None,
    "hard_concrete": ("hard_concrete", {}),
    "hard_concrete (one mask per batch)": ("hard_concrete", {"per_example": False}),
    "npn (ARM)": ("npn", {}),
    "npn (hard-concrete estimator)": ("npn", {"estimator": "hard_concrete"}),
    "bb": ("bb", {}),
    "dbb": ("dbb", {}),
    "targeted_dropout (weight)": ("targeted_dropout", {"level": "weight"}),
    "targeted_dropout (unit)": ("targeted_dropout", {"level": "unit"}),
}


def build(model_name, variant, splits, jit_compile="auto"):
    keras.utils.set_random_seed(0)
    model = models.get(model_name)(splits.input_shape, splits.num_classes)
    if VARIANTS[variant] is not None:
        method, settings = VARIANTS[variant]
        plan = recipes.recipe(method, 10, **settings)
        model = tfsparse.sparsify(model, method, dataset_size=len(splits.train[0]),
                                  seed=0, **plan.settings)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    return model


def _fit_seconds(model, x, y):
    start = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - start


def fit_times(model, x, y):
    """(seconds for the first half of x's batches, seconds for all of them)."""
    half = len(x) // 2
    return _fit_seconds(model, x[:half], y[:half]), _fit_seconds(model, x, y)


def step_seconds(halves, fulls, steps):
    """Per-step time from repeated (n-step, 2n-step) fit times: the fastest of
    each (noise on a shared machine only adds time), differenced so that
    `fit`'s per-call cost cancels."""
    return (min(fulls) - min(halves)) / steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+",
                   default=["lenet_300_100", "lenet_500_300", "lenet5_caffe"])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=30,
                   help="steps of the shorter fit (the longer has twice as many)")
    p.add_argument("--dataset", default=MNIST)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--jit", action="store_true", help="compile every variant with XLA")
    p.add_argument("--out", default=os.path.join(RECORDS, "timing.jsonl"))
    args = p.parse_args(argv)
    splits = data.load(args.dataset, validation_split=0.1)
    steps = min(args.steps, len(splits.train[0]) // 256)
    x, y = splits.train[0][:256 * steps], splits.train[1][:256 * steps]
    order = random.Random(0)
    rows = []
    for model_name in args.models:
        built = {v: build(model_name, v, splits, True if args.jit else "auto")
                 for v in ["dense"] + [v for v in args.variants if v != "dense"]}
        for model in built.values():
            fit_times(model, x[:256], y[:256])  # trace and warm up
        times = {v: ([], []) for v in built}
        for _ in range(args.rounds):
            for variant in order.sample(list(built), len(built)):
                half, full = fit_times(built[variant], x, y)
                times[variant][0].append(half)
                times[variant][1].append(full)
        step = {v: step_seconds(*t, steps) for v, t in times.items()}
        for variant, seconds in step.items():
            rows.append({"model": model_name, "variant": variant, "step_ms": 1e3 * seconds,
                         "ratio": seconds / step["dense"], "rounds": args.rounds,
                         "jit_compile": args.jit,
                         "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"})
    with open(args.out, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print("| model | method | ms / step | × dense |")
    print("| --- | --- | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['variant']} | {r['step_ms']:.1f} | {r['ratio']:.2f} |")


if __name__ == "__main__":
    main()
