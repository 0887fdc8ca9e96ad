"""One worker of a two-process MultiWorkerMirroredStrategy run on localhost.

    python multi_worker_check.py INDEX PORT0,PORT1 OUT_DIR

Trains a sparsified LeNet-5 for one epoch per gate family and writes the
final weights to OUT_DIR/worker-INDEX-<method>.npz, plus the epoch's loss.
The test compares the two workers' files: synchronous data-parallel training
must leave both with the same weights.
"""

import json
import os
import sys

index, ports, out_dir = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
os.environ["TF_CONFIG"] = json.dumps(
    {
        "cluster": {"worker": [f"localhost:{port}" for port in ports]},
        "task": {"type": "worker", "index": index},
    }
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfsparse  # noqa: E402
from tfsparse.models import lenet5_caffe  # noqa: E402

# The families whose steps differ most: NPN's two ARM passes, DBB's
# input-dependent gates (with BB's static half), targeted dropout's kernel
# gates. Hard-concrete samples like targeted dropout (one seeded draw).
METHODS = {"npn": {"lr_multiplier": 10.0}, "dbb": {}, "targeted_dropout": {}}


def main():
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(128, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, size=128)
    for method, settings in METHODS.items():
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = tfsparse.sparsify(
                lenet5_caffe(), method, dataset_size=len(x), seed=0, **settings
            )
            model.compile(
                keras.optimizers.SGD(0.05),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        initial = [w.numpy() for w in model.weights]
        history = model.fit(
            x,
            y,
            batch_size=32,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[tfsparse.SparsityScheduler()],
        )
        final = [w.numpy() for w in model.weights]
        np.savez(
            os.path.join(out_dir, f"worker-{index}-{method}.npz"),
            *final,
            loss=np.float32(history.history["loss"][-1]),
            changed=np.float32(max(np.max(np.abs(a - b)) for a, b in zip(final, initial))),
        )


if __name__ == "__main__":
    main()
