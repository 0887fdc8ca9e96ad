"""How long a benchmark suite will take on this machine, measured before it runs.

    python -m bench.plan arch vit_fashion [--models resnet20 ...] [--labels dense ...]
                         [--steps 20] [--threads N] [--jit-compile]

An issue's budget (issue 19: its suite in about 4 hours at one seed) is the
wall time of a whole suite, too long to find out by running it. For every run
of the named suites this builds each phase's model as `tfsparse.training.run`
builds it (the dense pretraining, the method with its recipe's scheduler, the
method that continues it), untrained, and times it on the suite's own data:
the median step of a fit over `--steps` batches, after a warm-up fit that
traces it (`bench.timing`'s clock), and one pass over the validation split.
A phase's projection is epochs × (steps per epoch × step + validation pass);
a run's, the sum of its phases; a suite's, the sum of its runs.

What it leaves out: building and tracing each model (seconds to a minute),
the test evaluation, compaction, export and latency timing after training,
and Torch-Pruning's side (`bench.arch`'s torch records keep their
`train_seconds`). It times each phase as it starts, with its gates
stochastic; a phase that hardens part-way may run its last epochs faster.
Run it on an otherwise idle machine. `--threads 1` times each run on one
core: two runs side by side on two cores take about half the summed time if
they do not slow each other (measure that before relying on it).
`--jit-compile` times every phase with its train and test steps compiled by
XLA, which Keras leaves off on a machine without an accelerator.

Appends one line per run to `--out` (`bench/records/plan.jsonl`) and prints a
table with the totals per network and suite.
"""

import argparse
import datetime
import json
import os
import platform
import time

import tensorflow as tf

from bench import run, suites, timing
from tfsparse import data, training

PLAN = os.path.join(suites.RECORDS, "plan.jsonl")


def run_phases(config, splits):
    """(phase, compiled model, epochs, callbacks) of `config`'s run, in the
    order `training.run` trains them, built as it builds them but untrained."""
    if config.method == training.DENSE:
        dense = training.compile_model(training.build_model(config, splits), config, splits)
        return [("train", dense, config.epochs, [])]
    phases = []
    if config.pretrain_epochs:
        pretrain = config.replace(epochs=config.pretrain_epochs)
        dense = training.compile_model(training.build_model(config, splits), pretrain, splits)
        phases.append(("pretrain", dense, pretrain.epochs, []))
    sparse, callbacks = training.build_sparse(config, splits, training.build_model(config, splits))
    phases.append(("train", sparse, config.epochs, callbacks))
    if config.continue_epochs:
        following, continued, more = training.build_continuation(sparse, splits, config)
        phases.append(("continue", following, continued.epochs, more))
    return phases


def time_phase(model, callbacks, splits, batch_size, steps):
    """(seconds per training step, seconds per pass over the validation split)."""
    x, y = splits.train
    fit = dict(batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    model.fit(x[: 3 * batch_size], y[: 3 * batch_size], callbacks=list(callbacks), **fit)
    clock = timing.StepClock()
    end = steps * batch_size
    model.fit(x[:end], y[:end], callbacks=[*callbacks, clock], **fit)
    step = timing.median_step(clock.stamps)
    x_val, y_val = splits.val
    if not len(x_val):
        return step, 0.0
    # Warmed up in the timed pass's batch size, so that it traces nothing.
    evaluate = dict(batch_size=batch_size, verbose=0)
    model.evaluate(x_val[: 2 * batch_size], y_val[: 2 * batch_size], **evaluate)
    start = time.perf_counter()
    model.evaluate(x_val, y_val, **evaluate)
    return step, time.perf_counter() - start


def plan_run(label, model, method, epochs, settings, dataset, seed=0, steps=20, jit_compile=False):
    """The projected wall time of one suite run, by phase (see the module docstring)."""
    config, _, _ = run.make_config(model, method, dataset, seed, epochs, PLAN, label, **settings)
    splits = data.load(config.dataset, validation_split=config.validation_split, seed=seed)
    steps_per_epoch = data.steps_per_epoch(len(splits.train[0]), config.batch_size)
    steps = max(3, min(steps, steps_per_epoch))
    phases = []
    for phase, network, phase_epochs, callbacks in run_phases(config, splits):
        if jit_compile:  # read when fit first builds the train step
            network.jit_compile = True
        step, validation = time_phase(network, callbacks, splits, config.batch_size, steps)
        epoch = steps_per_epoch * step + validation
        phases.append(
            {
                "phase": phase,
                "epochs": phase_epochs,
                "step_seconds": step,
                "steps_per_epoch": steps_per_epoch,
                "validation_seconds": validation,
                "epoch_seconds": epoch,
                "hours": phase_epochs * epoch / 3600,
            }
        )
    return {
        "label": label,
        "model": model,
        "method": method,
        "seed": seed,
        "phases": phases,
        "hours": sum(p["hours"] for p in phases),
    }


def plan_suite(
    name, models=None, seed=0, steps=20, out=None, measured=None, labels=None, jit_compile=False
):
    """One `plan_run` row per run of suite `name` (of `models` and `labels`,
    if given), each appended to `out` (with `measured`: how it was measured) as it
    comes, so that a stopped plan keeps the runs it timed."""
    dataset = suites.DATASETS.get(name, suites.MNIST)
    rows = []
    for label, model, method, epochs, settings in suites.SUITES[name]:
        if (models and model not in models) or (labels and label not in labels):
            continue
        row = {
            "suite": name,
            **plan_run(label, model, method, epochs, settings, dataset, seed, steps, jit_compile),
        }
        rows.append(row)
        if out:
            os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
            with open(out, "a") as f:
                f.write(json.dumps({**row, **(measured or {})}) + "\n")
        print(f"{name} {model} {label}: {row['hours']:.2f} h", flush=True)
    return rows


def table(rows):
    """Markdown: one line per run, then the totals per network and overall."""
    lines = [
        "| suite | network | run | phases (epochs) | s / step | s / epoch | projected h |",
        "| --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    totals = {}
    for r in rows:
        phases = ", ".join(f"{p['phase']} {p['epochs']}" for p in r["phases"])
        steps = " / ".join(f"{p['step_seconds']:.3f}" for p in r["phases"])
        epochs = " / ".join(f"{p['epoch_seconds']:.0f}" for p in r["phases"])
        lines.append(
            f"| {r['suite']} | {r['model']} | {r['label']} | {phases} | {steps} | {epochs} "
            f"| {r['hours']:.2f} |"
        )
        totals[r["model"]] = totals.get(r["model"], 0.0) + r["hours"]
    for model, hours in totals.items():
        lines.append(f"| | {model} | all runs | | | | {hours:.2f} |")
    lines.append(f"| | all | | | | | **{sum(totals.values()):.2f}** |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("suites", nargs="+", choices=sorted(suites.SUITES))
    p.add_argument("--models", nargs="*", default=None, help="networks to plan (default: all)")
    p.add_argument("--labels", nargs="*", default=None, help="runs to plan (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20, help="timed steps per phase (at least 3)")
    p.add_argument(
        "--threads", type=int, default=None, help="TensorFlow's threads (default: its own)"
    )
    p.add_argument("--jit-compile", action="store_true", help="time the steps compiled by XLA")
    p.add_argument("--out", default=PLAN)
    args = p.parse_args(argv)
    if args.steps < 3:
        p.error("--steps must be at least 3")
    if args.labels:
        known = sorted({entry[0] for name in args.suites for entry in suites.SUITES[name]})
        unknown = sorted(set(args.labels) - set(known))
        if unknown:
            p.error(f"--labels: {', '.join(unknown)} not in the suites' runs: {', '.join(known)}")
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be at least 1")
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    measured = {
        "threads": args.threads,
        "steps": args.steps,
        "jit_compile": args.jit_compile,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    rows = []
    for name in args.suites:
        rows += plan_suite(
            name,
            models=args.models,
            labels=args.labels,
            seed=args.seed,
            steps=args.steps,
            out=args.out,
            measured=measured,
            jit_compile=args.jit_compile,
        )
    print(table(rows))


if __name__ == "__main__":
    main()
