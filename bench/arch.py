"""Issue 19: the networks people deploy, on Fashion-MNIST, against Torch-Pruning.

    python -m bench.arch [--quick] [--seeds 0] [--models resnet20 mobilenet_v2_050 vit]
                         [--no-torch] [--torch-at LABEL ...] [--torch-threads N]
                         [--no-train] [--render-only] [--page README.md]

For each network, trains its suite (`bench/suites.py`; `arch` for ResNet-20
and MobileNetV2: the dense network and every method at a FLOPs budget through
its recipe; `vit_fashion`, issue 18's, for the ViT; resuming: configurations
already recorded are skipped; `--no-train` skips training and measures only
what is recorded, for a suite that spans sessions), then compacts every
saved model, exports it to TFLite and times it at batch 1 against the dense
network's file in the same invocation (`bench.export_bench.measure_seed`).
Then Torch-Pruning's side (`bench/torch_side/pruning.py`, in `.venv-torch`:
`make torch-env`) trains the same architecture in PyTorch on the same split,
prunes it to the multiply-adds that tfsparse's best method reached (the
lowest test error among the methods within a third of the dense
multiply-adds, the issue's target; the lowest of all if none is; or those
of the rows `--torch-at` names), fine-tunes
it (`NETWORKS`: training and fine-tuning together as many epochs as
tfsparse's runs) and times it against its dense network in torch; its record
goes to `arch_torch.jsonl`, one per row matched, and is not repeated. It
trains on every core; beside a TensorFlow run that oversubscribes the machine
(about 6x slower), so pass `--torch-threads 1` there.

Writes `arch.md` (the table), `arch_measured.jsonl` (the measured rows; the
rows of networks and seeds not measured in this invocation are kept) and
`arch_<model>.png` (test error against multiply-adds kept, Pareto front, the
Torch-Pruning point marked) next to the records, and with `--page` the
generated block of that page.

`--quick` runs the whole pipeline in minutes into `bench/results/arch_quick/`:
2,000 training and 500 test images, every schedule at a tenth of its epochs
(at least one), 20 latency runs.
"""

import argparse
import collections
import hashlib
import json
import os
import subprocess
import tempfile

import numpy as np

from bench import export_bench, suites
from bench.report import load_records, replace_block, replace_rows
from tfsparse import data, plots

SUITE = "arch"
Network = collections.namedtuple("Network", "suite torch_name epochs finetune_epochs")
# The ViT's runs are issue 18's (15 epochs, hardened after 11): Torch-Pruning
# trains it as long and fine-tunes the last 4, so both sides prune at the
# same epoch and train as many in all.
VIT_FINETUNE_EPOCHS = 4
# tfsparse's model → the suite that trains it, the same network in
# bench/torch_side/models.py, and Torch-Pruning's training and fine-tuning
# epochs (together as many as tfsparse's runs train).
NETWORKS = {
    **{
        model: Network(
            SUITE, torch_name, suites.ARCH_EPOCHS[model], suites.ARCH_FINETUNE_EPOCHS[model]
        )
        for model, torch_name in (("resnet20", "resnet20"), ("mobilenet_v2_050", "mobilenet_v2"))
    },
    "vit": Network(
        "vit_fashion", "vit", suites.VIT_EPOCHS - VIT_FINETUNE_EPOCHS, VIT_FINETUNE_EPOCHS
    ),
}
TORCH_PYTHON = os.path.join(".venv-torch", "bin", "python")
TORCH_SCRIPT = os.path.join("bench", "torch_side", "pruning.py")
QUICK_RECORDS = os.path.join("bench", "results", "arch_quick")
PAGE_START = "<!-- arch:start (python -m bench.arch --page README.md) -->"
PAGE_END = "<!-- arch:end -->"


def quick_dataset(folder, train=2000, test=500):
    """The first `train` and `test` Fashion-MNIST images as an .npz in `folder`."""
    path = os.path.join(folder, "fashion-mnist-quick.npz")
    with np.load(suites.FASHION) as f:
        np.savez(
            path,
            x_train=f["x_train"][:train],
            y_train=f["y_train"][:train],
            x_test=f["x_test"][:test],
            y_test=f["y_test"][:test],
        )
    return path


def rows(model, seed, records, runs, dataset):
    """The measured rows of (`model`, `seed`): label, test error (%), compact
    multiply-adds and weights, TFLite size and latency against dense."""
    suite = NETWORKS[model].suite
    trained = {
        r["config"]["label"]: r
        for r in load_records(os.path.join(records, f"{suite}.jsonl"))
        if (r["config"]["model"], r["config"]["seed"]) == (model, seed)
    }
    measured = export_bench.measure_seed(
        model, seed, records, runs, dataset=dataset, files=(f"{suite}.jsonl",)
    )
    out = []
    for m in measured:
        record = trained[m["label"]]
        out.append(
            {
                "model": model,
                "seed": seed,
                "label": m["label"],
                "error": 100 * record["test_error"],
                "flops": m["flops"],
                "params": m["params"],
                "size_bytes": m["size_bytes"],
                "latency_ms": m["latency_ms"],
                "speedup": m["speedup"],
                "parity_ok": m["parity_ok"],
                "epochs": record["epochs"],
            }
        )
    # The dense network's count from the records (every run of a network
    # records it), so that a seed whose dense network was not trained is
    # measured too (its speed-ups against an untrained network's file).
    counts = {r["sparsity"]["total"]["flops_total"] for r in trained.values()}
    if len(counts) != 1:
        raise ValueError(f"the runs of {model} seed {seed} record dense counts {sorted(counts)}")
    (dense_flops,) = counts
    for r in out:
        r["flops_fraction"] = r["flops"] / dense_flops
    return out


def train_labels_digest(dataset, seed):
    """SHA-256 of tfsparse's training labels in order (the torch side's
    `labels_digest` of its own split must equal it)."""
    labels = data.load(dataset, validation_split=0.1, seed=seed).train[1]
    return hashlib.sha256(np.asarray(labels, dtype=np.int64).tobytes()).hexdigest()


# The target: at most a third of the dense multiply-adds.
MACS_TARGET = 1 / 3


def best(measured):
    """tfsparse's best method: the lowest test error among the gated rows
    (not the `dense*` ones) within the multiply-add target (among all gated
    rows if none is)."""
    gated = [r for r in measured if not r["label"].startswith("dense")]
    within = [r for r in gated if r["flops_fraction"] <= MACS_TARGET]
    return min(within or gated, key=lambda r: r["error"])


def matched_row(measured, label=None):
    """The row Torch-Pruning is aimed at: the one labelled `label`, or
    tfsparse's best method (`best`) when `label` is None."""
    if label is None:
        return best(measured)
    found = [r for r in measured if r["label"] == label]
    if not found:
        labels = sorted({r["label"] for r in measured})
        raise ValueError(f"--torch-at {label!r} names no measured row; the rows are {labels}")
    return found[0]


def torch_record(
    model, seed, measured, records, dataset, epochs, finetune_epochs, at=None, threads=None
):
    """Torch-Pruning's record for (`model`, `seed`), run once (its own
    environment) at the multiply-adds of the row labelled `at` (by default
    tfsparse's best method), training on `threads` threads (default: every
    core)."""
    target = matched_row(measured, at)
    path = os.path.join(records, f"{SUITE}_torch.jsonl")
    key = (model, seed, os.path.basename(dataset), target["label"])
    for r in load_records(path, missing_ok=True):
        if (r["tfsparse_model"], r["seed"], r["data"], r["matched"]) == key:
            return r
    if not os.path.exists(TORCH_PYTHON):
        raise SystemExit(f"{TORCH_PYTHON} is missing: run `make torch-env` (or pass --no-torch).")
    dense = next(r for r in measured if r["label"] == "dense")
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "record.jsonl")
        subprocess.run(
            [
                TORCH_PYTHON,
                TORCH_SCRIPT,
                "--model",
                NETWORKS[model].torch_name,
                "--data",
                dataset,
                "--epochs",
                str(epochs),
                "--finetune-epochs",
                str(finetune_epochs),
                "--target-macs",
                str(target["flops"]),
                "--dense-macs",
                str(dense["flops"]),
                "--seed",
                str(seed),
                "--out",
                out,
                *(["--threads", str(threads)] if threads else []),
            ],
            check=True,
        )
        (record,) = load_records(out)
    if record["train_labels_sha256"] != train_labels_digest(dataset, seed):
        raise RuntimeError("Torch-Pruning's side trained on another split than tfsparse's runs.")
    record.update(tfsparse_model=model, data=os.path.basename(dataset), matched=target["label"])
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def to_markdown(measured, torch_records):
    lines = [
        "| network | method | seed | epochs | test error (%) | multiply-adds kept | weights |"
        " TFLite KB | TFLite ms (batch 1) | faster than dense |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in measured:
        lines.append(
            f"| {r['model']} | {r['label']} | {r['seed']} | {r['epochs']} | {r['error']:.2f} | "
            f"{r['flops_fraction']:.3f} ({r['flops']:,}) | {r['params']:,} | "
            f"{r['size_bytes'] / 1024:.0f} | {r['latency_ms']:.3f} | {r['speedup']:.2f}× |"
        )
    for t in torch_records:
        lines.append(
            f"| {t['tfsparse_model']} | Torch-Pruning ({t['method']}, at {t['matched']}'s "
            f"multiply-adds; dense {100 * t['dense_error']:.2f} %) | {t['seed']} | "
            f"{t['epochs']} + {t['finetune_epochs']} | "
            f"{100 * t['error']:.2f} | {t['macs'] / t['dense_macs']:.3f} ({t['macs']:,}) | "
            f"{t['params']:,} | | {t['latency_ms']:.3f} (torch) | {t['speedup']:.2f}× (torch) |"
        )
    return "\n".join(lines) + "\n"


def plot(model, measured, torch_records, path):
    """Test error against multiply-adds kept, Pareto front of tfsparse's
    runs, Torch-Pruning's point marked."""
    mine = [r for r in measured if r["model"] == model]
    theirs = [t for t in torch_records if t["tfsparse_model"] == model]
    costs = [r["flops_fraction"] for r in mine] + [t["macs"] / t["dense_macs"] for t in theirs]
    errors = [r["error"] for r in mine] + [100 * t["error"] for t in theirs]
    labels = [r["label"] for r in mine] + ["Torch-Pruning"] * len(theirs)
    return plots.plot_tradeoff(
        path, costs, errors, labels, xlabel="multiply-adds kept (fraction of dense)", title=model
    )


def measure(args, records, dataset, scale, runs, measured):
    """Trains what the suites lack for `args.models` and `args.seeds`,
    measures the saved models of those (replacing their rows in `measured`;
    the others stay as they were measured: each row's latency is compared
    with the dense file's in its own invocation) and runs Torch-Pruning's
    side; returns the rows."""
    for model in [] if args.no_train else args.models:
        suites.run_suite(
            NETWORKS[model].suite,
            args.seeds,
            [model],
            records=records,
            dataset=dataset,
            epochs_scale=scale,
            runs_dir=os.path.join(records, "runs") if args.quick else None,
        )
    for model in args.models:
        network = NETWORKS[model]
        for seed in args.seeds:
            mine = rows(model, seed, records, runs, dataset)
            measured = replace_rows(
                measured, mine, key=lambda r: (r["model"], r["seed"], r["label"])
            )
            if not args.no_torch:
                epochs, _ = suites.scaled(network.epochs, {}, scale)
                finetune, _ = suites.scaled(network.finetune_epochs, {}, scale)
                ours = [r for r in measured if (r["model"], r["seed"]) == (model, seed)]
                for at in args.torch_at or [None]:
                    torch_record(
                        model,
                        seed,
                        ours,
                        records,
                        dataset,
                        epochs,
                        finetune,
                        at,
                        threads=args.torch_threads,
                    )
    order = list(NETWORKS)
    return sorted(measured, key=lambda r: (order.index(r["model"]), r["seed"]))


def render(records, dataset, measured, page=None):
    """`arch.md`, the plots and the `page` block from the measured rows and
    Torch-Pruning's records of the same networks and seeds."""
    shown = {(r["model"], r["seed"]) for r in measured}
    torch_records = [
        t
        for t in load_records(os.path.join(records, f"{SUITE}_torch.jsonl"), missing_ok=True)
        if (t["tfsparse_model"], t["seed"]) in shown and t["data"] == os.path.basename(dataset)
    ]
    models = [m for m in NETWORKS if any(r["model"] == m for r in measured)]
    markdown = to_markdown(measured, torch_records)
    with open(os.path.join(records, f"{SUITE}.md"), "w") as f:
        f.write(markdown)
    for model in models:
        plot(model, measured, torch_records, os.path.join(records, f"{SUITE}_{model}.png"))
    if page:
        pictures = "".join(
            f"\n![{model}: error against multiply-adds]({records}/{SUITE}_{model}.png)\n"
            for model in models
        )
        replace_block(page, PAGE_START, PAGE_END, markdown + pictures)
    return markdown


def positive_int(text):
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--models", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    p.add_argument("--quick", action="store_true", help="the whole pipeline in minutes")
    p.add_argument("--no-torch", action="store_true", help="leave Torch-Pruning's side out")
    p.add_argument(
        "--torch-at",
        nargs="+",
        metavar="LABEL",
        help="run Torch-Pruning at the multiply-adds of these rows (default: the best method's)",
    )
    p.add_argument(
        "--torch-threads",
        type=positive_int,
        help="Torch-Pruning's training threads (default: every core; 1 beside a TensorFlow run)",
    )
    p.add_argument(
        "--no-train", action="store_true", help="measure only the runs already recorded"
    )
    p.add_argument(
        "--render-only", action="store_true", help="table and plots of the rows measured before"
    )
    p.add_argument("--runs", type=int, default=300, help="latency repetitions")
    p.add_argument("--records", default=None)
    p.add_argument("--page", help="a Markdown page with the arch markers to rewrite")
    args = p.parse_args(argv)
    records = args.records or (QUICK_RECORDS if args.quick else suites.RECORDS)
    os.makedirs(records, exist_ok=True)
    scale, runs = (0.1, 20) if args.quick else (1.0, args.runs)
    dataset = quick_dataset(records) if args.quick else suites.FASHION
    measured_path = os.path.join(records, f"{SUITE}_measured.jsonl")
    measured = load_records(measured_path, missing_ok=True)
    if not args.render_only:
        measured = measure(args, records, dataset, scale, runs, measured)
        with open(measured_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in measured)
    print(render(records, dataset, measured, args.page), end="")


if __name__ == "__main__":
    main()
