"""tfmot's magnitude pruning (Keras 2 only) as the comparison baseline.

Runs in its own process, because tensorflow-model-optimization needs legacy
Keras (`tf_keras`, TF_USE_LEGACY_KERAS=1) and tfsparse uses Keras 3:

    TF_USE_LEGACY_KERAS=1 python -m bench.tfmot_baseline --model lenet5_caffe \
        --sparsity 0.9 --out bench/records/tfmot.jsonl

It trains the dense network, prunes it with `prune_low_magnitude` on a
polynomial schedule to the target sparsity while fine-tuning, strips the
wrappers, converts to TFLite with the converter's sparsity option, and
measures size, batch-1 latency (LiteRT interpreter) and test accuracy, next
to the dense network's TFLite file from the same process. Needs the `bench`
extra (`pip install -e '.[bench]'`).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

MNIST = os.path.normpath(
    os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "mnist-10k.npz"
    )
)


def build(model):
    """The reference networks, written again in tf_keras (same shapes as
    tfsparse.models)."""
    layers = keras.layers
    if model == "lenet5_caffe":
        return keras.Sequential(
            [
                layers.InputLayer((28, 28, 1)),
                layers.Conv2D(20, 5, activation="relu"),
                layers.MaxPooling2D(),
                layers.Conv2D(50, 5, activation="relu"),
                layers.MaxPooling2D(),
                layers.Flatten(),
                layers.Dense(500, activation="relu"),
                layers.Dense(10),
            ]
        )
    hidden = {"lenet_300_100": (300, 100), "lenet_500_300": (500, 300)}[model]
    return keras.Sequential(
        [
            layers.InputLayer((28, 28, 1)),
            layers.Flatten(),
            *[layers.Dense(h, activation="relu") for h in hidden],
            layers.Dense(10),
        ]
    )


def load(path):
    with np.load(path) as f:
        x_train, y_train, x_test, y_test = (
            f[k] for k in ("x_train", "y_train", "x_test", "y_test")
        )
    prep = lambda x: (x.astype("float32") / 255.0)[..., None]  # noqa: E731
    return prep(x_train), y_train.astype("int64"), prep(x_test), y_test.astype("int64")


def compile_model(model, lr=1e-3):
    model.compile(
        keras.optimizers.Adam(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def kernel_sparsity(model):
    """Fraction of exact zeros over all kernels (what tfmot pruned)."""
    kernels = [w for layer in model.layers for w in layer.weights if "kernel" in w.name]
    zeros = sum(int(np.sum(w.numpy() == 0)) for w in kernels)
    return zeros / sum(int(np.prod(w.shape)) for w in kernels)


def tflite_bytes(model, sparse):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if sparse:
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    return converter.convert()


def measure(flatbuffer, x_test, y_test, runs):
    with tempfile.NamedTemporaryFile(suffix=".tflite", delete=False) as f:
        f.write(flatbuffer)
    interpreter = Interpreter(model_path=f.name)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    correct = 0
    for i in range(len(x_test)):
        interpreter.set_tensor(inp["index"], x_test[i : i + 1])
        interpreter.invoke()
        correct += int(np.argmax(interpreter.get_tensor(out["index"])) == y_test[i])
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.set_tensor(inp["index"], x_test[:1])
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    os.unlink(f.name)
    return {
        "size_bytes": len(flatbuffer),
        "latency_ms": 1e3 * statistics.median(times),
        "accuracy": correct / len(x_test),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="lenet5_caffe")
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.9])
    p.add_argument("--epochs", type=int, default=15, help="dense training epochs")
    p.add_argument("--prune-epochs", type=int, default=5)
    p.add_argument("--data", default=MNIST)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latency-runs", type=int, default=500)
    p.add_argument("--out", default=os.path.join("bench", "records", "tfmot.jsonl"))
    args = p.parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test = load(args.data)
    dense = compile_model(build(args.model))
    dense.fit(x_train, y_train, epochs=args.epochs, batch_size=128, verbose=0)
    records = [
        {
            "method": "dense (tf_keras)",
            "model": args.model,
            "seed": args.seed,
            **measure(tflite_bytes(dense, False), x_test, y_test, args.latency_runs),
        }
    ]
    steps = -(-len(x_train) // 128) * args.prune_epochs
    trained = dense.get_weights()
    for target in args.sparsity:
        dense.set_weights(trained)  # each target starts from the dense network
        # Masks are updated every `frequency` steps; the last update must fall
        # on end_step, or the target is never reached.
        end_step = max(1, int(0.8 * steps))
        frequency = max(1, end_step // 20)
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=target,
            begin_step=0,
            end_step=end_step - end_step % frequency,
            frequency=frequency,
        )
        pruned = compile_model(
            tfmot.sparsity.keras.prune_low_magnitude(dense, pruning_schedule=schedule)
        )
        pruned.fit(
            x_train,
            y_train,
            epochs=args.prune_epochs,
            batch_size=128,
            verbose=0,
            callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
        )
        stripped = tfmot.sparsity.keras.strip_pruning(pruned)
        records.append(
            {
                "method": f"tfmot {int(round(100 * target))}%",
                "model": args.model,
                "seed": args.seed,
                "sparsity": target,
                "measured_sparsity": kernel_sparsity(stripped),
                **measure(tflite_bytes(stripped, True), x_test, y_test, args.latency_runs),
            }
        )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "a") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
            print(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1:])
