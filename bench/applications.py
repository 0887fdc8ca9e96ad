"""How much of each `keras.applications` network tfsparse can remove.

For every network: `sparsify` with hard-concrete gates, close half of every
gate's units at random (the other half stays fully open), `compact`, check
that the compact model computes what the gated one does, and record the
multiply-adds and weights left (fractions of the dense network's, counted by
`tfsparse.summary`; 1.0 means nothing could be removed). A network that
`sparsify` or `compact` refuses, or that crashes, is recorded with the error.

With `--export`, the compact model is also exported (`tfsparse.export`:
SavedModel, TFLite, parity on LiteRT) and the parity and file sizes recorded.

    python -m bench.applications [--size 224] [--export] [--out bench/records/applications.jsonl]
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfsparse  # noqa: E402
from tfsparse.gates import gates_of  # noqa: E402

NETWORKS = (
    "VGG16",
    "ResNet50",
    "MobileNetV2",
    "MobileNetV3Small",
    "EfficientNetB0",
    "DenseNet121",
    "ConvNeXtTiny",
)


def calibrate_batch_norm(model, x):
    """Sets every BatchNormalization's moving statistics to those of `x`
    (one pass in training mode with momentum 0): with random weights, the
    defaults (mean 0, variance 1) let the signal vanish through a deep
    network, and a comparison of outputs near 1e-12 would check nothing."""
    layers = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def measure(name, size, export=False, seed=0):
    """The record of one network (see the module docstring)."""
    record = {"network": name, "input_size": size}
    start = time.time()
    builder = getattr(keras.applications, name)
    dense = builder(
        weights=None, input_shape=(size, size, 3), classes=1000, classifier_activation=None
    )
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (2, size, size, 3)).astype("float32")
    calibrate_batch_norm(dense, x)
    try:
        sparse = tfsparse.sparsify(dense, "hard_concrete", dataset_size=1000, verbose=0)
        for gate in gates_of(sparse):
            n = gate.mask_shape[0]
            log_alpha = np.full(n, 4.6)
            log_alpha[rng.permutation(n)[: n // 2]] = -4.6
            gate.log_alpha.assign(log_alpha)
        small = tfsparse.compact(sparse)
    except Exception as error:  # noqa: BLE001 - recorded, this is a survey
        record.update(
            status="refused" if isinstance(error, ValueError) else "crash",
            error=f"{type(error).__name__}: {str(error)[:300]}",
        )
        return record
    gated, compacted = np.asarray(sparse(x, training=False)), np.asarray(small(x))
    before = tfsparse.summary(dense, print_fn=None)["total"]
    after = tfsparse.summary(small, print_fn=None)["total"]
    record.update(
        status="ok",
        gates=len(gates_of(sparse)),
        units=int(sum(g.mask_shape[0] for g in gates_of(sparse))),
        flops_left=after["flops_kept"] / before["flops_total"],
        weights_left=after["weights_kept"] / before["weights_total"],
        max_abs_diff=float(np.abs(gated - compacted).max()),
        output_scale=float(np.abs(gated).max()),
    )
    if export:
        with tempfile.TemporaryDirectory() as directory:
            report = tfsparse.export(
                small, os.path.join(directory, name), test_data=x, latency_runs=20
            )
        record.update(
            tflite_parity=report["tflite"]["parity"], tflite_bytes=report["sizes_bytes"]["tflite"]
        )
    record["seconds"] = round(time.time() - start, 1)
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    parser.add_argument(
        "--export",
        action="store_true",
        help="also export the compact model and check TFLite parity",
    )
    parser.add_argument("--out", default="bench/records/applications.jsonl")
    args = parser.parse_args(argv)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    for name in args.networks:
        record = measure(name, args.size, export=args.export)
        record["tfsparse"] = tfsparse.__version__
        print(json.dumps(record), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
