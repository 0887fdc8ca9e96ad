"""Compacted TFLite files against the dense network's, side by side.

    python -m bench.export_bench [--models ...] [--seeds 0 1 2] [--tfmot 0.9 0.95]

Takes the trained models that the suites saved (records in bench/records/),
compacts each with `tfsparse.compact`, exports it with `tfsparse.export`
(float32 TFLite, LiteRT interpreter), and appends size and median batch-1
latency as ratios to the dense network's TFLite file measured in the same
invocation. With `--tfmot`, tfmot's magnitude pruning to those sparsities
(its own process, tf_keras, same seed) is measured in the same invocation
too. A (model, seed) whose rows in `--out` already cover every saved model
and tfmot sparsity is skipped; otherwise all of its rows are measured again.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import keras

import tfsparse
from tfsparse import data

from bench.report import load_records
from bench.suites import MNIST, RECORDS

SUITE_FILES = ("l0_npn.jsonl", "bb_dbb.jsonl", "targeted_dropout.jsonl", "cross.jsonl")
MODELS = ("lenet_300_100", "lenet_500_300", "lenet5_caffe")


def saved_models(model, seed, records=RECORDS):
    """(label, path) of every saved model of `model` and `seed` in the records."""
    found = {}
    for name in SUITE_FILES:
        for record in load_records(os.path.join(records, name), missing_ok=True):
            config = record["config"]
            if config["model"] == model and config["seed"] == seed:
                if os.path.exists(record["model_path"]):
                    found.setdefault(config["label"], record["model_path"])
    return found


def measure(label, model_path, splits, runs, workdir):
    model = keras.models.load_model(model_path)
    small = tfsparse.compact(model)
    report = tfsparse.export(small, os.path.join(workdir, label.replace("+", "_")),
                             test_data=splits.test, latency_runs=runs)
    figures = tfsparse.summary(small, print_fn=None)
    return {"label": label, "size_bytes": report["sizes_bytes"]["tflite"],
            "latency_ms": report["tflite"]["latency_ms"],
            "accuracy": report["tflite"]["accuracy"],
            "parity": report["tflite"]["parity"]["max_abs_diff"],
            "parity_ok": report["tflite"]["parity"]["ok"],
            "params": int(small.count_params()),
            "flops": figures["total"]["flops_kept"]}


def tfmot_records(model, seed, sparsities, runs, dataset=MNIST, epochs=15, prune_epochs=5):
    out = tempfile.mktemp(suffix=".jsonl")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    subprocess.run([sys.executable, "-m", "bench.tfmot_baseline", "--model", model,
                    "--seed", str(seed), "--sparsity", *map(str, sparsities),
                    "--epochs", str(epochs), "--prune-epochs", str(prune_epochs),
                    "--data", dataset, "--latency-runs", str(runs), "--out", out],
                   check=True, env=env)
    records = load_records(out)
    os.unlink(out)
    return records


def measure_seed(model, seed, records=RECORDS, runs=500, tfmot=(), dataset=MNIST,
                 tfmot_epochs=(15, 5)):
    """Rows for every saved model of (`model`, `seed`), with size and latency
    ratios to the dense network's TFLite file measured here; [] without a
    dense run."""
    paths = saved_models(model, seed, records)
    if "dense" not in paths:
        print(f"no dense run of {model} (seed {seed}) in {records}: run the suites first")
        return []
    splits = data.load(dataset, validation_split=0.1, seed=seed)
    with tempfile.TemporaryDirectory() as workdir:
        measured = [measure(label, path, splits, runs, workdir)
                    for label, path in paths.items()]
    if tfmot:
        for r in tfmot_records(model, seed, tfmot, runs, dataset, *tfmot_epochs):
            measured.append({"label": r["method"], "size_bytes": r["size_bytes"],
                             "latency_ms": r["latency_ms"], "accuracy": r["accuracy"],
                             "sparsity": r.get("sparsity"),
                             "measured_sparsity": r.get("measured_sparsity")})
    dense = next(m for m in measured if m["label"] == "dense")
    for m in measured:
        m.update(model=model, seed=seed, size_ratio=dense["size_bytes"] / m["size_bytes"],
                 speedup=dense["latency_ms"] / m["latency_ms"])
    return measured


def expected_labels(model, seed, records, tfmot):
    """The rows a complete measurement of (`model`, `seed`) has."""
    labels = set(saved_models(model, seed, records))
    if tfmot:
        labels |= {"dense (tf_keras)"} | {f"tfmot {int(round(100 * s))}%" for s in tfmot}
    return labels


def run(models=MODELS, seeds=(0,), records=RECORDS, runs=500, tfmot=(), dataset=MNIST,
        tfmot_epochs=(15, 5), out=None):
    """Measures every (model, seed) whose rows in `out` miss a saved model
    or a tfmot sparsity (all of its rows again, so that the ratios come from
    one invocation); returns all rows of `out`."""
    out = out or os.path.join(records, "export.jsonl")
    rows = load_records(out, missing_ok=True)
    for seed in seeds:
        for model in models:
            have = {r["label"] for r in rows if (r["model"], r["seed"]) == (model, seed)}
            if expected_labels(model, seed, records, tfmot) <= have:
                continue
            fresh = measure_seed(model, seed, records, runs, tfmot, dataset, tfmot_epochs)
            rows = [r for r in rows if (r["model"], r["seed"]) != (model, seed)] + fresh
            with open(out + ".tmp", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            os.replace(out + ".tmp", out)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--runs", type=int, default=500, help="latency repetitions")
    p.add_argument("--tfmot", nargs="+", type=float, default=(),
                   help="tfmot sparsities to compare (e.g. 0.9 0.95)")
    p.add_argument("--out", default=os.path.join(RECORDS, "export.jsonl"))
    args = p.parse_args(argv)
    rows = run(args.models, args.seeds, runs=args.runs, tfmot=args.tfmot, out=args.out)
    print("| model | seed | method | TFLite KiB | smaller | latency (ms) | faster | accuracy |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['seed']} | {r['label']} | {r['size_bytes'] / 1024:.1f} | "
              f"{r['size_ratio']:.1f}× | {r['latency_ms']:.4f} | {r['speedup']:.1f}× | "
              f"{100 * r['accuracy']:.2f} % |")


if __name__ == "__main__":
    main()
