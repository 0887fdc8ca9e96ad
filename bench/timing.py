"""Training step time of every method as a ratio to the dense network.

    python -m bench.timing [--models lenet_300_100 lenet5_caffe] [--rounds 15]

All variants of one network are built first and warmed up (tracing). Then,
in each of `--rounds` rounds, every variant fits `--steps` batches of 128 real
mnist-10k images, in a shuffled order. A callback stamps the start of every
step; a fit's step time is the median of the differences between consecutive
stamps, so `fit`'s start-up cost and the odd slow step are left out while
Keras' own per-step work (what a user pays in `model.fit`) stays in. A
variant's ratio is the median over rounds of its step time divided by the
dense network's *in the same round*: the machine's load drifts over seconds,
so only measurements taken side by side are compared. The spread of the
per-round ratios (25th-75th percentile) is recorded with the median. Run it
on an otherwise idle machine.
"""

import argparse
import json
import os
import platform
import random
import time

import keras
import numpy as np

import tfsparse
from bench.suites import MNIST, RECORDS
from tfsparse import data, models, recipes

BATCH = 128
VARIANTS = {
    "dense": None,
    "hard_concrete": ("hard_concrete", {}),
    "hard_concrete (one mask per example)": ("hard_concrete", {"per_example": True}),
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
        model = tfsparse.sparsify(
            model, method, dataset_size=len(splits.train[0]), seed=0, **plan.settings
        )
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


class StepClock(keras.callbacks.Callback):
    """Stamps the start of every training step (time.perf_counter)."""

    def __init__(self):
        super().__init__()
        self.stamps = []

    def on_train_batch_begin(self, batch, logs=None):
        self.stamps.append(time.perf_counter())


def step_seconds(model, x, y):
    """Median seconds per step of one fit over (x, y) in batches of 128."""
    clock = StepClock()
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[clock])
    return median_step(clock.stamps)


def median_step(stamps):
    """Median gap between consecutive step stamps, the first gap left out
    (it still carries the fit's start-up)."""
    gaps = np.diff(np.asarray(stamps, dtype=float))[1:]
    if len(gaps) == 0:
        raise ValueError("a timing fit needs at least 3 steps")
    return float(np.median(gaps))


def paired_ratios(seconds, reference="dense"):
    """{variant: per-round ratios to `reference`} from {variant: [seconds per
    round]}: each round's time divided by the reference's of the same round."""
    base = np.asarray(seconds[reference])
    return {v: np.asarray(s) / base for v, s in seconds.items()}


def time_model(model_name, variants, splits, rounds, steps, jit=False, order=None):
    """Rows (one per variant) for one network; see the module docstring."""
    order = order or random.Random(0)
    x, y = splits.train[0][: BATCH * steps], splits.train[1][: BATCH * steps]
    built = {
        v: build(model_name, v, splits, True if jit else "auto")
        for v in ["dense"] + [v for v in variants if v != "dense"]
    }
    for model in built.values():
        step_seconds(model, x[: BATCH * 3], y[: BATCH * 3])  # trace and warm up
    seconds = {v: [] for v in built}
    for _ in range(rounds):
        for variant in order.sample(list(built), len(built)):
            seconds[variant].append(step_seconds(built[variant], x, y))
    ratios = paired_ratios(seconds)
    return [
        {
            "model": model_name,
            "variant": v,
            "step_ms": 1e3 * float(np.median(seconds[v])),
            "ratio": float(np.median(ratios[v])),
            "ratio_iqr": [
                float(np.percentile(ratios[v], 25)),
                float(np.percentile(ratios[v], 75)),
            ],
            "rounds": rounds,
            "steps": steps,
            "jit_compile": jit,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        }
        for v in built
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--models", nargs="+", default=["lenet_300_100", "lenet_500_300", "lenet5_caffe"]
    )
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=40, help="steps per timed fit (at least 3)")
    p.add_argument("--dataset", default=MNIST)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--jit", action="store_true", help="compile every variant with XLA")
    p.add_argument("--out", default=os.path.join(RECORDS, "timing.jsonl"))
    args = p.parse_args(argv)
    if args.steps < 3 or args.rounds < 1:
        p.error("--steps must be at least 3 and --rounds at least 1")
    splits = data.load(args.dataset, validation_split=0.1)
    steps = min(args.steps, len(splits.train[0]) // BATCH)
    rows = []
    for model_name in args.models:
        rows += time_model(model_name, args.variants, splits, args.rounds, steps, args.jit)
    with open(args.out, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    print("| model | method | ms / step | × dense | 25-75 % of rounds |")
    print("| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        low, high = r["ratio_iqr"]
        print(
            f"| {r['model']} | {r['variant']} | {r['step_ms']:.2f} | {r['ratio']:.2f} | "
            f"{low:.2f}-{high:.2f} |"
        )


if __name__ == "__main__":
    main()
