"""Runs one benchmark configuration through train.py's own functions."""

import datetime
import json
import os
import platform
import socket

import train

# Options of train.py that a benchmark setting may override; flags are passed
# when true. Every other setting is a method setting (`--set key=value`).
_TRAIN_OPTIONS = (
    "batch_size",
    "lr",
    "lr_schedule",
    "validation_split",
    "out",
    "verbose",
    "pretrain_epochs",
    "prune_rate",
    "prune_level",
    "dbb_epochs",
    "target_flops",
    "target_params",
)
_TRAIN_FLAGS = ("ramp", "export")
DEFAULT_OUT = os.path.join("bench", "results", "runs")
METHODS = train.METHODS


def run_config(model, method, dataset, seed, epochs, out_jsonl, label=None, **settings):
    """Trains one configuration through train.py and appends its record.

    Args:
        model: a name from `tfsparse.models.MODELS`.
        method: `"dense"` or one of `tfsparse.METHODS`.
        dataset: dataset name or `.npz` path (see `tfsparse.data.load`).
        seed: random seed of the run (weights, shuffling, validation split).
        epochs: number of training epochs.
        out_jsonl: path of the .jsonl file to append to (created if needed).
        label: name of the configuration in reports (default: `method`), e.g.
            "npn-expand".
        **settings: train.py options (`batch_size`, `lr`, `lr_schedule`, `validation_split`,
            `out`, `verbose`, `pretrain_epochs`, `prune_rate`, `prune_level`,
            `dbb_epochs`, `ramp`, `export`) and the method's own settings.

    Returns:
        The record that was appended: train.py's results plus `config`
        (the arguments above) and `host` (hostname, CPU count, platform, date).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}. Available: {', '.join(METHODS)}.")
    settings = dict(settings)
    label = label or method
    stem = os.path.splitext(os.path.basename(str(dataset)))[0]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    argv = [
        "--model",
        model,
        "--dataset",
        str(dataset),
        "--method",
        method,
        "--seed",
        str(seed),
        "--epochs",
        str(epochs),
        "--run-name",
        f"{model}-{label}-{stem}-s{seed}-{stamp}",
        "--out",
        str(settings.pop("out", DEFAULT_OUT)),
        "--verbose",
        str(settings.pop("verbose", 2)),  # One line per epoch in logs.
    ]
    options = {key: settings.pop(key) for key in _TRAIN_OPTIONS if key in settings}
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    for key in _TRAIN_FLAGS:
        if settings.pop(key, False):
            argv.append(f"--{key}")
    method_settings = dict(settings)
    for key, value in method_settings.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    args = train.parse_args(argv)
    results = train.run(args)
    record = {
        **results,
        "config": {
            "model": model,
            "method": method,
            "label": label,
            "dataset": str(dataset),
            "seed": seed,
            "epochs": epochs,
            "settings": method_settings,
            "options": options,
        },
        "host": {
            "hostname": socket.gethostname(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(),
        },
    }
    parent = os.path.dirname(os.fspath(out_jsonl))
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(out_jsonl, "a") as f:
        f.write(json.dumps(record) + "\n")
    return record
