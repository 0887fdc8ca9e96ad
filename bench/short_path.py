"""The shortest path against the recipe, trained side by side.

For each method: LeNet-300-100 on mnist-10k, once by the shortest path
(`sparsify(dense, method, dataset_size=N)` with no settings, then
`fit(..., callbacks=[SparsityScheduler()])`) and once through
`tfsparse.recipes.recipe(method, epochs)` (its settings to `sparsify`, its
scheduler to `fit`); the same seed, optimizer (Adam 1e-3), batch size (128)
and epochs. Records the FLOPs and weights the compact model keeps and the test
error; each finished run is appended to the records, and a rerun skips it.

    python -m bench.short_path [--epochs 60] [--methods hard_concrete npn bb]
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tfsparse  # noqa: E402
from bench.suites import MNIST, RECORDS  # noqa: E402
from tfsparse import data, models, recipes  # noqa: E402

# The default runs. Left out (run them with --methods): targeted dropout, whose
# compact model keeps every unit at weight level (its default) because what it
# removes is decided after training by `prune_by_magnitude`; and DBB, which is
# meant to continue a trained BB network rather than start from a dense one.
METHODS = ("hard_concrete", "npn", "bb")
PATHS = ("short", "recipe")


def train(method, path, splits, epochs, batch_size=128, seed=0):
    keras.utils.set_random_seed(seed)
    dense = models.lenet_300_100(splits.input_shape, splits.num_classes)
    n = len(splits.train[0])
    if path == "short":
        sparse = tfsparse.sparsify(dense, method, dataset_size=n, seed=seed, verbose=0)
        scheduler = tfsparse.SparsityScheduler()
    else:
        plan = recipes.recipe(method, epochs, steps_per_epoch=data.steps_per_epoch(n, batch_size))
        sparse = tfsparse.sparsify(
            dense, method, dataset_size=n, seed=seed, verbose=0, **plan.settings
        )
        scheduler = plan.scheduler
    sparse.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.time()
    sparse.fit(
        *splits.train,
        validation_data=splits.val,
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
        callbacks=[scheduler],
    )
    seconds = time.time() - start
    small = tfsparse.compact(sparse)
    figures = tfsparse.summary(small, print_fn=None)
    dense_figures = tfsparse.summary(dense, print_fn=None)
    small.compile(
        metrics=["accuracy"], loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    accuracy = small.evaluate(*splits.test, verbose=0)[1]
    return {
        "method": method,
        "path": path,
        "epochs": epochs,
        "seed": seed,
        "flops_kept": figures["total"]["flops_total"] / dense_figures["total"]["flops_total"],
        "weights_kept": (
            figures["total"]["weights_total"] / dense_figures["total"]["weights_total"]
        ),
        "units": tfsparse.summary(sparse, print_fn=None)["units_kept"],
        "test_error": 100.0 * (1.0 - accuracy),
        "seconds": round(seconds, 1),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=tfsparse.METHODS)
    p.add_argument("--dataset", default=MNIST)
    p.add_argument("--out", default=os.path.join(RECORDS, "short_path.jsonl"))
    args = p.parse_args(argv)
    done = set()
    if os.path.exists(args.out):
        with open(args.out) as f:
            done = {(r["method"], r["path"], r["epochs"]) for r in map(json.loads, f)}
    splits = data.load(args.dataset)
    for method in args.methods:
        for path in PATHS:
            if (method, path, args.epochs) in done:
                continue
            record = train(method, path, splits, args.epochs)
            print(json.dumps(record), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
