"""Compacted TFLite files against the dense network's, side by side.

    python -m bench.export_bench [--models ...] [--seeds 0 1 2] [--tfmot 0.9 0.95]

Takes the trained models that the suites saved (records in bench/records/),
compacts each with `tfsparse.compact`, exports it with `tfsparse.export`
(float32 TFLite, LiteRT interpreter), and appends size and median batch-1
latency as ratios to the dense network's TFLite file measured in the same
invocation. With `--tfmot`, tfmot's magnitude pruning to those sparsities
(its own process, tf_keras, same seed) is measured in the same invocation
too. Each row names the saved model it measured; a (model, seed) is measured
again when a saved model has no row of its own yet (a new or retrained run)
or a tfmot sparsity is missing. Rows of models that are no longer on disk
(trained in another checkout) are kept: their ratios were measured side by
side with their own dense reference.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import keras

import tfsparse
from bench.report import load_records
from bench.suites import MNIST, RECORDS
from tfsparse import data, models

SUITE_FILES = ("l0_npn.jsonl", "bb_dbb.jsonl", "targeted_dropout.jsonl", "cross.jsonl")
MODELS = ("lenet_300_100", "lenet_500_300", "lenet5_caffe")


def saved_models(model, seed, records=RECORDS, files=SUITE_FILES):
    """(label, path) of every saved model of `model` and `seed` in the
    records `files`."""
    found = {}
    for name in files:
        for record in load_records(os.path.join(records, name), missing_ok=True):
            config = record["config"]
            if config["model"] == model and config["seed"] == seed:
                if os.path.exists(record["model_path"]):
                    found.setdefault(config["label"], record["model_path"])
    return found


def measure(label, model_path, splits, runs, workdir):
    model = keras.models.load_model(model_path)
    small = tfsparse.compact(model)
    report = tfsparse.export(
        small,
        os.path.join(workdir, label.replace("+", "_")),
        test_data=splits.test,
        latency_runs=runs,
    )
    figures = tfsparse.summary(small, print_fn=None)
    return {
        "label": label,
        "model_path": model_path,
        "size_bytes": report["sizes_bytes"]["tflite"],
        "latency_ms": report["tflite"]["latency_ms"],
        "accuracy": report["tflite"]["accuracy"],
        "parity": report["tflite"]["parity"]["max_abs_diff"],
        "parity_ok": report["tflite"]["parity"]["ok"],
        "params": int(small.count_params()),
        "flops": figures["total"]["flops_kept"],
    }


def tfmot_records(model, seed, sparsities, runs, dataset=MNIST, epochs=15, prune_epochs=5):
    out = tempfile.mktemp(suffix=".jsonl")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.tfmot_baseline",
            "--model",
            model,
            "--seed",
            str(seed),
            "--sparsity",
            *map(str, sparsities),
            "--epochs",
            str(epochs),
            "--prune-epochs",
            str(prune_epochs),
            "--data",
            dataset,
            "--latency-runs",
            str(runs),
            "--out",
            out,
        ],
        check=True,
        env=env,
    )
    records = load_records(out)
    os.unlink(out)
    return records


def reference(model, seed, paths, splits, runs, workdir):
    """The dense network's TFLite figures for the ratios: its trained model's
    when saved, otherwise (a checkout without it) an untrained network of the
    same architecture, whose size and latency are the same (its accuracy is
    meaningless, so it yields no row)."""
    if "dense" in paths:
        return measure("dense", paths["dense"], splits, runs, workdir), True
    network = models.get(model)(splits.input_shape, splits.num_classes)
    report = tfsparse.export(
        network, os.path.join(workdir, "dense-reference"), test_data=splits.test, latency_runs=runs
    )
    return {
        "label": "dense",
        "size_bytes": report["sizes_bytes"]["tflite"],
        "latency_ms": report["tflite"]["latency_ms"],
    }, False


def measure_seed(
    model,
    seed,
    records=RECORDS,
    runs=500,
    tfmot=(),
    dataset=MNIST,
    tfmot_epochs=(15, 5),
    labels=None,
    files=SUITE_FILES,
):
    """Rows for the saved models of (`model`, `seed`) in the records `files`
    named in `labels` (all by default) and for tfmot's sparsities, with size
    and latency ratios to the dense network's TFLite file measured in this
    same call."""
    paths = saved_models(model, seed, records, files)
    if labels is not None:
        paths = {k: v for k, v in paths.items() if k in labels or k == "dense"}
    splits = data.load(dataset, validation_split=0.1, seed=seed)
    with tempfile.TemporaryDirectory() as workdir:
        dense, trained = reference(model, seed, paths, splits, runs, workdir)
        measured = [dense] if trained else []
        measured += [
            measure(label, path, splits, runs, workdir)
            for label, path in paths.items()
            if label != "dense"
        ]
    if tfmot:
        for r in tfmot_records(model, seed, tfmot, runs, dataset, *tfmot_epochs):
            measured.append(
                {
                    "label": r["method"],
                    "size_bytes": r["size_bytes"],
                    "latency_ms": r["latency_ms"],
                    "accuracy": r["accuracy"],
                    "sparsity": r.get("sparsity"),
                    "measured_sparsity": r.get("measured_sparsity"),
                }
            )
    for m in measured:
        m.update(
            model=model,
            seed=seed,
            size_ratio=dense["size_bytes"] / m["size_bytes"],
            speedup=dense["latency_ms"] / m["latency_ms"],
        )
    return measured


def to_measure(model, seed, rows, records, tfmot):
    """(labels of saved models without a row of their own, whether tfmot
    rows are missing) for (`model`, `seed`)."""
    have = {
        r["label"]: r.get("model_path") for r in rows if (r["model"], r["seed"]) == (model, seed)
    }
    stale = {
        label
        for label, path in saved_models(model, seed, records).items()
        if have.get(label, None) != path
    }
    wanted = {"dense (tf_keras)"} | {f"tfmot {int(round(100 * s))}%" for s in tfmot}
    return stale, bool(tfmot) and not wanted <= set(have)


def run(
    models=MODELS,
    seeds=(0,),
    records=RECORDS,
    runs=500,
    tfmot=(),
    dataset=MNIST,
    tfmot_epochs=(15, 5),
    out=None,
):
    """Measures, per (model, seed), the saved models that have no row of
    their own yet and any missing tfmot sparsity (see the module docstring);
    returns all rows of `out`."""
    out = out or os.path.join(records, "export.jsonl")
    rows = load_records(out, missing_ok=True)
    for seed in seeds:
        for model in models:
            stale, tfmot_missing = to_measure(model, seed, rows, records, tfmot)
            if not stale and not tfmot_missing:
                continue
            fresh = measure_seed(
                model,
                seed,
                records,
                runs,
                tfmot if tfmot_missing else (),
                dataset,
                tfmot_epochs,
                labels=stale,
            )
            replaced = {m["label"] for m in fresh}
            rows = [
                r
                for r in rows
                if (r["model"], r["seed"]) != (model, seed) or r["label"] not in replaced
            ] + fresh
            with open(out + ".tmp", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            os.replace(out + ".tmp", out)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--runs", type=int, default=500, help="latency repetitions")
    p.add_argument(
        "--tfmot",
        nargs="+",
        type=float,
        default=(),
        help="tfmot sparsities to compare (e.g. 0.9 0.95)",
    )
    p.add_argument("--out", default=os.path.join(RECORDS, "export.jsonl"))
    args = p.parse_args(argv)
    rows = run(args.models, args.seeds, runs=args.runs, tfmot=args.tfmot, out=args.out)
    print("| model | seed | method | TFLite KiB | smaller | latency (ms) | faster | accuracy |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['model']} | {r['seed']} | {r['label']} | {r['size_bytes'] / 1024:.1f} | "
            f"{r['size_ratio']:.1f}× | {r['latency_ms']:.4f} | {r['speedup']:.1f}× | "
            f"{100 * r['accuracy']:.2f} % |"
        )


if __name__ == "__main__":
    main()
