"""Runs one benchmark configuration through train.py's own functions."""

import datetime
import json
import os
import platform
import socket

import train

# Options of train.py that a benchmark setting may override; every other
# setting is handed to the method's builder as `args.settings`.
_TRAIN_OPTIONS = ("batch_size", "lr", "validation_split", "out", "verbose")
DEFAULT_OUT = os.path.join("bench", "results", "runs")


def _dense(args, splits):
    """The unmodified network: the baseline every method is compared with."""
    return train.build_model(args, splits), []


# Method name -> `build(args, splits) -> (model, callbacks)`. The model may come
# back compiled (with the method's own optimizer); otherwise train.py compiles it.
# Method-specific settings arrive as the dict `args.settings`.
METHODS = {
    "dense": _dense,
}


def run_config(model, method, dataset, seed, epochs, out_jsonl, **settings):
    """Trains one configuration and appends its record to a .jsonl file.

    Args:
        model: a name from `tfsparse.models.MODELS`.
        method: a key of `METHODS`.
        dataset: dataset name or `.npz` path (see `tfsparse.data.load`).
        seed: random seed of the run (weights, shuffling, validation split).
        epochs: number of training epochs.
        out_jsonl: path of the .jsonl file to append to (created if needed).
        **settings: train.py options (`batch_size`, `lr`, `validation_split`,
            `out`, `verbose`) and the method's own settings.

    Returns:
        The record that was appended: train.py's results plus `config`
        (the arguments above) and `host` (hostname, CPU count, platform, date).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}. Available: {', '.join(METHODS)}.")
    settings = dict(settings)
    stem = os.path.splitext(os.path.basename(str(dataset)))[0]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    argv = [
        "--model", model,
        "--dataset", str(dataset),
        "--seed", str(seed),
        "--epochs", str(epochs),
        "--run-name", f"{model}-{method}-{stem}-s{seed}-{stamp}",
        "--out", str(settings.pop("out", DEFAULT_OUT)),
        "--verbose", str(settings.pop("verbose", 2)),  # One line per epoch in logs.
    ]
    for key in _TRAIN_OPTIONS:
        if key in settings:
            argv += [f"--{key.replace('_', '-')}", str(settings.pop(key))]
    args = train.parse_args(argv)
    # The method is set after parsing: the registry here may know methods that
    # train.py's command line does not offer yet.
    args.method = method
    args.settings = settings

    results = train.run(args, build=METHODS[method])
    record = {
        **results,
        "config": {
            "model": model,
            "method": method,
            "dataset": str(dataset),
            "seed": seed,
            "epochs": epochs,
            "settings": settings,
        },
        "host": {
            "hostname": socket.gethostname(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        },
    }
    parent = os.path.dirname(os.fspath(out_jsonl))
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(out_jsonl, "a") as f:
        f.write(json.dumps(record) + "\n")
    return record
