"""Trains each gate family on one device and under MirroredStrategy over two
logical CPUs; prints one JSON line per case. Run in its own process: logical
devices must be set before TensorFlow starts."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfsparse  # noqa: E402
from tfsparse.schedules import K_DETERMINISTIC  # noqa: E402

# (name, method, settings, deterministic): deterministic cases must give the
# same losses and weights on one and two devices.
CASES = [
    (
        "npn_deterministic",
        "npn",
        {"k": K_DETERMINISTIC, "estimator": "hard_concrete", "lam": 0.5},
        True,
    ),
    (
        "npn_deterministic_fast_gates",
        "npn",
        {"k": K_DETERMINISTIC, "estimator": "hard_concrete", "lam": 0.5, "lr_multiplier": 10.0},
        True,
    ),
    ("targeted_dropout_off", "targeted_dropout", {"alpha": 0.0, "gamma": 0.5}, True),
    # Weight decay under deterministic gates: the term is divided among the
    # replicas as the data loss is.
    (
        "npn_deterministic_gated_decay",
        "npn",
        {"k": K_DETERMINISTIC, "estimator": "hard_concrete", "lam": 0.5, "weight_decay": 0.1},
        True,
    ),
    ("hard_concrete", "hard_concrete", {"lam": 0.1}, False),
    ("npn_arm", "npn", {"lam": 0.1}, False),
    ("bb", "bb", {}, False),
    ("dbb", "dbb", {}, False),
    ("targeted_dropout", "targeted_dropout", {"alpha": 0.5, "gamma": 0.5}, False),
]


def build(method, settings):
    settings = dict(settings)
    weight_decay = settings.pop("weight_decay", 0.0)
    keras.utils.set_random_seed(0)
    dense = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(12, activation="relu", name="hidden"),
            keras.layers.Dense(3, name="logits"),
        ]
    )
    model = tfsparse.sparsify(dense, method, dataset_size=64, seed=0, **settings)
    if weight_decay:
        model.decay_weights_under_gates(weight_decay)
    model.compile(
        keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def train(method, settings, strategy=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0)
    if strategy is None:
        model = build(method, settings)
    else:
        with strategy.scope():
            model = build(method, settings)
    history = model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    return history.history["loss"], [w.numpy() for w in model.trainable_weights]


def main():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for name, method, settings, deterministic in CASES:
        try:
            single_loss, single_weights = train(method, settings)
            loss, weights = train(method, settings, strategy)
            result = {
                "case": name,
                "ok": bool(np.all(np.isfinite(loss))),
                "loss": loss,
                "single_loss": single_loss,
                "deterministic": deterministic,
                "max_loss_diff": float(np.max(np.abs(np.subtract(loss, single_loss)))),
                "max_weight_diff": float(
                    max(np.max(np.abs(a - b)) for a, b in zip(weights, single_weights))
                ),
            }
        except Exception as error:  # report, do not hide: the test fails on it
            result = {"case": name, "ok": False, "error": f"{type(error).__name__}: {error}"}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
    sys.exit(0)
