"""Training step time of every method as a ratio to the dense network.

    python -m bench.timing [--models lenet_300_100 lenet5_caffe] [--rounds 5]

All variants of one network are built first, warmed up (tracing), then timed
in interleaved rounds of `--steps` training steps each (batch 128, real
mnist-10k images), so that every ratio compares runs measured side by side on
the same machine in the same invocation. Run it on an otherwise idle machine.
"""

import argparse
import json
import os
import platform
import statistics
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


def build(model_name, variant, splits):
    keras.utils.set_random_seed(0)
    model = models.get(model_name)(splits.input_shape, splits.num_classes)
    if VARIANTS[variant] is not None:
        method, settings = VARIANTS[variant]
        plan = recipes.recipe(method, 10, **settings)
        model = tfsparse.sparsify(model, method, dataset_size=len(splits.train[0]),
                                  seed=0, **plan.settings)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def time_steps(model, x, y):
    start = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=1, shuffle=False, verbose=0)
    return (time.perf_counter() - start) / (len(x) // 128)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+",
                   default=["lenet_300_100", "lenet_500_300", "lenet5_caffe"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--dataset", default=MNIST)
    p.add_argument("--out", default=os.path.join(RECORDS, "timing.jsonl"))
    args = p.parse_args(argv)
    splits = data.load(args.dataset, validation_split=0.1)
    x, y = splits.train[0][:128 * args.steps], splits.train[1][:128 * args.steps]
    rows = []
    for model_name in args.models:
        built = {v: build(model_name, v, splits) for v in VARIANTS}
        for model in built.values():
            time_steps(model, x[:256], y[:256])  # trace and warm up
        times = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant, model in built.items():
                times[variant].append(time_steps(model, x, y))
        dense = statistics.median(times["dense"])
        for variant, values in times.items():
            step = statistics.median(values)
            rows.append({"model": model_name, "variant": variant, "step_ms": 1e3 * step,
                         "ratio": step / dense, "rounds": args.rounds,
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
