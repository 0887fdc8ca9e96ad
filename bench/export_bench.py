"""Compacted TFLite files against the dense network's, side by side.

    python -m bench.export_bench [--models lenet5_caffe ...] [--tfmot]

Takes the trained models that the suites saved (records in bench/records/),
compacts each with `tfsparse.compact`, exports it with `tfsparse.export`
(float32 TFLite, LiteRT interpreter), and writes size and median batch-1
latency as ratios to the dense network's TFLite file measured in the same
invocation. With `--tfmot`, tfmot's magnitude pruning at 90 % (its own
process, tf_keras) is measured in the same invocation too.
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

from bench.suites import MNIST, RECORDS

SUITE_FILES = ("l0_npn.jsonl", "bb_dbb.jsonl", "targeted_dropout.jsonl")


def saved_models(model, seed):
    """(label, path) of every saved model of `model` and `seed` in the records."""
    found = {}
    for name in SUITE_FILES:
        path = os.path.join(RECORDS, name)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for record in map(json.loads, f):
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
            "params": int(small.count_params()),
            "flops": figures["total"]["flops_kept"]}


def tfmot_records(model, runs):
    out = tempfile.mktemp(suffix=".jsonl")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    subprocess.run([sys.executable, "-m", "bench.tfmot_baseline", "--model", model,
                    "--sparsity", "0.9", "--latency-runs", str(runs), "--out", out],
                   check=True, env=env)
    with open(out) as f:
        return [json.loads(line) for line in f]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["lenet_300_100", "lenet5_caffe"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=500, help="latency repetitions")
    p.add_argument("--tfmot", action="store_true")
    p.add_argument("--out", default=os.path.join(RECORDS, "export.jsonl"))
    args = p.parse_args(argv)
    splits = data.load(MNIST, validation_split=0.1, seed=args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for model in args.models:
            paths = saved_models(model, args.seed)
            if "dense" not in paths:
                print(f"no dense run of {model} in {RECORDS}: run the suites first")
                continue
            measured = [measure(label, path, splits, args.runs, workdir)
                        for label, path in paths.items()]
            if args.tfmot:
                for r in tfmot_records(model, args.runs):
                    measured.append({"label": r["method"], "size_bytes": r["size_bytes"],
                                     "latency_ms": r["latency_ms"],
                                     "accuracy": r["accuracy"]})
            dense = next(m for m in measured if m["label"] == "dense")
            for m in measured:
                m.update(model=model, seed=args.seed,
                         size_ratio=dense["size_bytes"] / m["size_bytes"],
                         speedup=dense["latency_ms"] / m["latency_ms"])
                rows.append(m)
    with open(args.out, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print("| model | method | TFLite KiB | smaller | latency (ms) | faster | accuracy |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['label']} | {r['size_bytes'] / 1024:.1f} | "
              f"{r['size_ratio']:.1f}× | {r['latency_ms']:.4f} | {r['speedup']:.1f}× | "
              f"{100 * r['accuracy']:.2f} % |")


if __name__ == "__main__":
    main()
