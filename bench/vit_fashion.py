"""Issue 18's benchmark: the small ViT on Fashion-MNIST, dense against
hard-concrete and NPN head and feed-forward gates (and, for issue 19, BB→DBB
and unit-level targeted dropout).

    python -m bench.vit_fashion [--seeds 0] [--runs 300] [--no-train] [--page docs/benchmarks.md]

Trains the `vit_fashion` suite (resuming: configurations already recorded in
`bench/records/vit_fashion.jsonl` are skipped), then compacts every saved
model, exports it to TFLite and measures batch-1 latency against the dense
network's file in the same invocation (`bench.export_bench.measure_seed`),
and writes `bench/records/vit_fashion.md` (rows measured before whose saved
model is absent stay as they were): test error, heads and feed-forward
units kept per block, multiply-adds of the attention and feed-forward
layers and of the whole network, TFLite latency and speed-up.
"""

import argparse
import json
import os

import keras

import tfsparse
from bench import export_bench, suites
from bench.report import load_records, replace_block, replace_rows

SUITE = "vit_fashion"
PAGE_START = "<!-- vit:start (python -m bench.vit_fashion --page docs/benchmarks.md) -->"
PAGE_END = "<!-- vit:end -->"


def blocks(small):
    """[(heads kept, units kept)] per transformer block of a compact ViT."""
    out = []
    for i in range(1, len(small.layers)):
        try:
            attention = small.get_layer(f"block{i}_attention")
        except ValueError:
            return out
        # Every head closed: the branch became a constant (no `num_heads`).
        out.append((getattr(attention, "num_heads", 0), small.get_layer(f"block{i}_fc1").units))
    return out


def block_flops(summary):
    """Multiply-adds (kept, total) of the attention and feed-forward layers."""
    rows = [
        r
        for r in summary["layers"]
        if r["name"].startswith("block")
        and r["name"].split("_", 1)[1] in ("attention", "fc1", "fc2")
    ]
    return sum(r["flops_kept"] for r in rows), sum(r["flops_total"] for r in rows)


def rows(seed, records, runs, dataset=suites.FASHION):
    path = os.path.join(records, f"{SUITE}.jsonl")
    trained = {r["config"]["label"]: r for r in load_records(path) if r["config"]["seed"] == seed}
    measured = export_bench.measure_seed(
        "vit", seed, records, runs, dataset=dataset, files=(f"{SUITE}.jsonl",)
    )
    out = []
    for m in measured:
        record = trained[m["label"]]
        small = tfsparse.compact(keras.models.load_model(record["model_path"]))
        figures = tfsparse.summary(small, print_fn=None)
        kept, total = block_flops(record["sparsity"]) if record.get("sparsity") else (1, 1)
        out.append(
            {
                "label": m["label"],
                "seed": seed,
                "error": 100 * record["test_error"],
                "blocks": blocks(small),
                "block_flops_fraction": kept / total,
                "flops": figures["total"]["flops_kept"],
                "latency_ms": m["latency_ms"],
                "speedup": m["speedup"],
                "parity_ok": m["parity_ok"],
            }
        )
    return out


def merged(previous, measured):
    """The rows just `measured`, and those measured before whose saved model
    is not in this checkout (each ratio stays to the dense file timed in its
    own invocation), in seed and suite order."""
    rows = replace_rows(previous, measured, key=lambda r: (r["label"], r["seed"]))
    order = [label for label, *_ in suites.SUITES[SUITE]]
    return sorted(rows, key=lambda r: (r["seed"], order.index(r["label"])))


def to_markdown(table):
    lines = [
        "| method | seed | test error (%) | heads kept per block | FF units kept per block |"
        " attention + FF MACs kept | MACs | TFLite ms | faster |",
        "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in table:
        heads = " ".join(str(h) for h, _ in r["blocks"])
        units = " ".join(str(u) for _, u in r["blocks"])
        lines.append(
            f"| {r['label']} | {r['seed']} | {r['error']:.2f} | {heads} | {units} | "
            f"{r['block_flops_fraction']:.3f} | {r['flops']:,} | "
            f"{r['latency_ms']:.3f} | {r['speedup']:.2f}× |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--runs", type=int, default=300, help="latency repetitions")
    p.add_argument("--records", default=suites.RECORDS)
    # A smoke run: `--dataset digits --epochs-scale 0.07 --records /tmp/vit`.
    p.add_argument("--dataset", default=suites.FASHION)
    p.add_argument("--epochs-scale", type=float, default=1.0)
    p.add_argument("--page", help="a Markdown page with the vit markers to rewrite")
    p.add_argument(
        "--no-train", action="store_true", help="measure only the runs already recorded"
    )
    args = p.parse_args(argv)
    if not args.no_train:
        suites.run_suite(
            SUITE,
            args.seeds,
            records=args.records,
            dataset=args.dataset,
            epochs_scale=args.epochs_scale,
        )
    measured = [
        r for seed in args.seeds for r in rows(seed, args.records, args.runs, args.dataset)
    ]
    latency = os.path.join(args.records, f"{SUITE}_latency.jsonl")
    table = merged(load_records(latency, missing_ok=True), measured)
    with open(latency, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in table)
    markdown = to_markdown(table)
    with open(os.path.join(args.records, f"{SUITE}.md"), "w") as f:
        f.write(markdown)
    if args.page:
        replace_block(args.page, PAGE_START, PAGE_END, markdown)
    print(markdown, end="")


if __name__ == "__main__":
    main()
