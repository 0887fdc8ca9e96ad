"""Runs one benchmark configuration through `tfsparse.training.run` (train.py's run)."""

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shlex
import socket
import sys

from tfsparse import training

# The run's own fields that a benchmark setting may override; every other
# setting is a method setting (`RunConfig.settings`).
_RUN_OPTIONS = {f.name for f in dataclasses.fields(training.RunConfig)} - {
    "model",
    "dataset",
    "method",
    "seed",
    "epochs",
    "run_name",
    "settings",
    "resume",
}
DEFAULT_OUT = os.path.join("bench", "results", "runs")
# The command that started a run, kept in its folder so that `bench.inflight`
# can say how to continue it on another machine.
COMMAND_FILE = "command.txt"
METHODS = training.methods()


def make_config(model, method, dataset, seed, epochs, out_jsonl, label=None, **settings):
    """The `training.RunConfig` that `run_config` trains, with the method's own
    settings and the run options taken from `settings` (for callers that
    build a run's models without training it: `bench.plan`)."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}. Available: {', '.join(METHODS)}.")
    settings = dict(settings)
    label = label or method
    stem = os.path.splitext(os.path.basename(str(dataset)))[0]
    # Where the run goes and how it logs: not part of the recorded configuration.
    logistics = {"out": settings.pop("out", DEFAULT_OUT), "verbose": settings.pop("verbose", 2)}
    options = {key: settings.pop(key) for key in sorted(_RUN_OPTIONS) if key in settings}
    method_settings = dict(settings)
    # The folder is named by everything the run computes (and the records it
    # goes to), so that an interrupted run started again resumes from its
    # checkpoints and a changed configuration starts afresh.
    what = [os.path.basename(str(out_jsonl)), method, epochs, method_settings, options]
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:10]
    config = training.RunConfig(
        model=model,
        dataset=str(dataset),
        method=method,
        seed=seed,
        epochs=epochs,
        run_name=f"{model}-{label}-{stem}-s{seed}-{digest}",
        settings=method_settings,
        resume=True,
        **logistics,
        **options,
    )
    return config, method_settings, options


def run_config(model, method, dataset, seed, epochs, out_jsonl, label=None, **settings):
    """Trains one configuration and appends its record.

    Args:
        model: a name from `tfsparse.models.MODELS`.
        method: `"dense"` or one of `tfsparse.METHODS`.
        dataset: dataset name or `.npz` path (see `tfsparse.data.load`).
        seed: random seed of the run (weights, shuffling, validation split).
        epochs: number of training epochs.
        out_jsonl: path of the .jsonl file to append to (created if needed).
        label: name of the configuration in reports (default: `method`), e.g.
            "npn-expand".
        **settings: `RunConfig` fields (`batch_size`, `lr`, `lr_schedule`,
            `validation_split`, `out`, `verbose`, `pretrain_epochs`, `prune_rate`,
            `prune_level`, `continue_epochs`, `target_flops`, `target_params`, `ramp`,
            `export`) and the method's own settings.

    The run checkpoints every epoch (`RunConfig.resume`) in a folder named by
    its configuration: started again after an interruption, it continues
    from its last finished epoch.

    Returns:
        The record that was appended: the run's results plus `config`
        (the arguments above) and `host` (hostname, CPU count, platform, date).
    """
    config, method_settings, options = make_config(
        model, method, dataset, seed, epochs, out_jsonl, label, **settings
    )
    label = label or method
    _keep_command(os.path.join(config.out, config.run_name))
    results = training.run(config)
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


def launch_command(argv=None) -> str:
    """The command line that started this process, as `python -m <module>`
    where its script is a module of the current directory."""
    argv = list(sys.argv if argv is None else argv)
    script = os.path.relpath(os.path.abspath(argv[0]))
    if script.endswith(".py") and not script.startswith(os.pardir):
        module = script[: -len(".py")].replace(os.sep, ".").removesuffix(".__main__")
        head = ["python", "-m", module]
    else:
        head = ["python", argv[0]]
    return shlex.join(head + argv[1:])


def _keep_command(run_dir):
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, COMMAND_FILE)
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(launch_command() + "\n")
