"""The dashboard: one table per network and its plots, from the records.

    python -m bench.table [--records bench/records] [--out bench/records/dashboard.md]
    python -m bench.table --page docs/benchmarks.md   # also rewrites the docs' dashboard

Reads the suites' training records (`<suite>.jsonl`), the TFLite
measurements (`export.jsonl`, from `bench.export_bench`) and the step times
(`timing.jsonl`, from `bench.timing`) and writes a markdown table per network
plus, per network, `dashboard_tradeoff_<model>.png` (test error against FLOPs
kept, one point per method and seed, Pareto front dashed) and
`dashboard_units_<model>.png` (units kept per layer, seed 0).

Every time figure is a ratio to the dense network measured in the same
invocation: TFLite latency in the same `export_bench` process, training time
(per step, so per epoch) in the same interleaved `timing` rounds. The suites'
own epoch times are in the records but not compared: other work shared the
machine while they ran.
"""

import argparse
import os
import statistics

from bench import report
from bench.export_bench import SUITE_FILES
from bench.report import load_records

# Row order of the tables, and the `bench.timing` variant timing each method.
METHODS = (
    "dense",
    "hard_concrete",
    "npn-prune",
    "npn-expand",
    "bb",
    "dbb",
    "td-weight",
    "td-unit",
    "tfmot 90%",
    "tfmot 95%",
)
TIMING_VARIANT = {
    "dense": "dense",
    "hard_concrete": "hard_concrete",
    "npn-prune": "npn (ARM)",
    "npn-expand": "npn (ARM)",
    "bb": "bb",
    "dbb": "dbb",
    "td-weight": "targeted_dropout (weight)",
    "td-unit": "targeted_dropout (unit)",
}
# The saved model of a BB→DBB run is the DBB one.
EXPORT_LABEL = {"dbb": "bb+dbb"}
MODELS = ("lenet_300_100", "lenet_500_300", "lenet5_caffe")
# Weight-level sparsity: FLOPs count nonzero weights, which dense kernels still
# multiply; such rows are marked and never win the FLOPs verdict.
UNSTRUCTURED = ("td-weight", "tfmot")


def variants(record):
    """(label, figures) pairs a record stands for: a BB→DBB run gives its BB
    phase as well as the final DBB model."""
    label = record.get("config", {}).get("label") or record["method"]
    final = {"error": 100 * record["test_error"], "sparsity": record["sparsity"]}
    first = record.get("first_phase")
    if first is None:
        return [(label, final)]
    bb = {"error": 100 * first["test_error"], "sparsity": first["sparsity"]}
    return [("bb", bb), ("dbb", final)]


def runs(records_dir):
    """{(model, method): {seed: figures}} from the training records; figures
    are error (%) and sparsity (`tfsparse.summary`)."""
    out = {}
    for name in SUITE_FILES:
        for record in load_records(os.path.join(records_dir, name), missing_ok=True):
            seed = record["config"]["seed"]
            for label, figures in variants(record):
                out.setdefault((record["model"], label), {}).setdefault(seed, figures)
    return out


def _mean_std(values):
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def hidden_units(sparsity):
    """[(layer, kept, total)] of the Dense/Conv layers but the last (the
    classifier), from `tfsparse.summary`'s layer rows."""
    layers = [
        (r["name"], r["units_kept"], r["units_total"])
        for r in sparsity["layers"]
        if r["units_total"] is not None
        and r["weights_total"] > 0
        and ("Dense" in r["type"] or "Conv" in r["type"])
    ]
    return layers[:-1]


def _units_text(sparsity):
    if sparsity.get("units_total"):  # unit gates, input features included
        kept, total = sparsity["units_kept"], sparsity["units_total"]
    else:
        layers = hidden_units(sparsity)
        kept, total = [k for _, k, _ in layers], [t for _, _, t in layers]
    return "-".join(map(str, total)) + " → " + "-".join(map(str, kept))


def rows(records_dir, model, trained=None):
    """The table rows of one network (dicts; None where not measured);
    `trained` is `runs(records_dir)` when the caller has it already."""
    trained = runs(records_dir) if trained is None else trained
    exports = [
        r
        for r in load_records(os.path.join(records_dir, "export.jsonl"), missing_ok=True)
        if r["model"] == model
    ]
    timing = {
        r["variant"]: r["ratio"]
        for r in load_records(os.path.join(records_dir, "timing.jsonl"), missing_ok=True)
        if r["model"] == model
    }
    out = []
    for method in METHODS:
        by_seed = trained.get((model, method), {})
        measured = [r for r in exports if r["label"] == EXPORT_LABEL.get(method, method)]
        if not by_seed and not measured:
            continue
        row = {"method": method, "seeds": len(by_seed) or len(measured)}
        if by_seed:
            figures = [by_seed[s] for s in sorted(by_seed)]
            row["error"] = _mean_std(f["error"] for f in figures)
            total = [f["sparsity"]["total"] for f in figures]
            row["weights_kept"] = statistics.fmean(t["weights_fraction"] for t in total)
            row["flops_kept"] = statistics.fmean(t["flops_fraction"] for t in total)
            row["flops_per_example"] = statistics.fmean(
                t.get("flops_expected_fraction", t["flops_fraction"]) for t in total
            )
            row["units"] = _units_text(figures[0]["sparsity"])
        else:  # tfmot: accuracy from its TFLite file, weights kept by construction
            row["error"] = _mean_std(100 * (1 - r["accuracy"]) for r in measured)
            sparsity = measured[0].get("measured_sparsity") or measured[0]["sparsity"]
            row["weights_kept"] = row["flops_kept"] = 1 - sparsity
            row["flops_per_example"], row["units"] = None, None
        row["size_ratio"] = (
            statistics.fmean(r["size_ratio"] for r in measured) if measured else None
        )
        row["speedup"] = statistics.fmean(r["speedup"] for r in measured) if measured else None
        row["tflite_seeds"] = len(measured)
        row["step_time"] = timing.get(TIMING_VARIANT.get(method))
        out.append(row)
    return out


def _times(fraction):
    """1 / fraction as "N×" (every unit closed: "all units closed")."""
    return f"{1 / fraction:.1f}×" if fraction > 0 else "all units closed"


def _fmt(value, pattern, missing="—"):
    return missing if value is None else pattern.format(value)


def markdown(model_rows):
    lines = [
        "| method | seeds | test error (%) | units kept (seed 0) | weights kept | "
        "FLOPs kept | TFLite × smaller | TFLite × faster | training time × dense |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in model_rows:
        mean, std = r["error"]
        flops = f"{100 * r['flops_kept']:.1f} % ({_times(r['flops_kept'])})"
        if r["flops_per_example"] is not None and r["flops_per_example"] < r["flops_kept"] - 1e-6:
            flops += (
                f"; {100 * r['flops_per_example']:.1f} % "
                f"({_times(r['flops_per_example'])}) per example"
            )
        if r["method"].startswith(UNSTRUCTURED):
            flops += " nonzero"
        seeds = str(r["seeds"])
        if r["tflite_seeds"] and r["tflite_seeds"] != r["seeds"]:
            seeds += f" (TFLite: {r['tflite_seeds']})"
        lines.append(
            f"| {r['method']} | {seeds} | {mean:.2f} ± {std:.2f} | "
            f"{_fmt(r['units'], '{}')} | {100 * r['weights_kept']:.1f} % | {flops} | "
            f"{_fmt(r['size_ratio'], '{:.1f}×')} | {_fmt(r['speedup'], '{:.1f}×')} | "
            f"{_fmt(r['step_time'], '{:.2f}')} |"
        )
    return "\n".join(lines) + "\n"


def verdict(model_rows, margin=0.5):
    """One sentence: the method with the fewest FLOPs (per example for DBB)
    whose mean error is within `margin` points of the dense network's, and
    its TFLite latency against tfmot's 90 % model. Unit-level methods only:
    weight-level sparsity saves no multiply-add in a dense kernel."""
    by_method = {r["method"]: r for r in model_rows}
    if "dense" not in by_method:
        return ""
    limit = by_method["dense"]["error"][0] + margin
    within = [
        r
        for r in model_rows
        if r["method"] != "dense"
        and r["error"][0] <= limit
        and not r["method"].startswith(UNSTRUCTURED)
    ]
    if not within:
        return f"No method is within {margin} points of the dense network's error.\n"
    best = min(within, key=lambda r: r["flops_per_example"] or r["flops_kept"])
    flops = best["flops_per_example"] or best["flops_kept"]
    text = (
        f"Fewest FLOPs within {margin} points of dense ({limit:.2f} %): "
        f"**{best['method']}**, {_times(flops)} fewer"
    )
    tfmot = by_method.get("tfmot 90%")
    if tfmot and tfmot["speedup"] and best["speedup"]:
        text += (
            f"; its TFLite file runs {best['speedup'] / tfmot['speedup']:.1f}× faster "
            f"than tfmot's 90 % model"
        )
    return text + ".\n"


def plot_tradeoff(trained, model, path):
    """Error against FLOPs kept (per example for DBB), one point per method
    and seed, with the Pareto front."""
    from tfsparse.plots import plot_tradeoff as draw

    costs, errors, labels = [], [], []
    for (name, method), by_seed in trained.items():
        if name != model:
            continue
        for figures in by_seed.values():
            total = figures["sparsity"]["total"]
            costs.append(total.get("flops_expected_fraction", total["flops_fraction"]))
            errors.append(figures["error"])
            labels.append(method)
    if not costs:
        return None
    return draw(
        path,
        costs,
        errors,
        labels=labels,
        title=f"{model} on mnist-10k",
        ylabel="test error (%)",
        xscale="log",
    )


def plot_units(trained, model, path):
    """Share of units kept per hidden layer (seed 0 of each method), as
    grouped bars; the dense network is 100 % everywhere."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = [
        (m, by_seed[min(by_seed)])
        for (name, m), by_seed in trained.items()
        if name == model and m != "dense"
    ]
    if not methods:
        return None
    layers = hidden_units(methods[0][1]["sparsity"])
    x = np.arange(len(layers))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (method, figures) in enumerate(methods):
        kept = [100 * k / t for _, k, t in hidden_units(figures["sparsity"])]
        ax.bar(x - 0.4 + (i + 0.5) * width, kept, width, label=method)
    ax.set_xticks(x, [f"{name} ({total})" for name, _, total in layers])
    ax.set_ylabel("units kept (% of the layer)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{model}: units kept per layer (seed 0)")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render(records_dir, out=None, models=MODELS):
    """Writes the markdown (to `out`, default `<records_dir>/dashboard.md`)
    and the plots beside it; returns the markdown."""
    out = out or os.path.join(records_dir, "dashboard.md")
    folder = os.path.dirname(out) or "."
    trained = runs(records_dir)
    parts = []
    for model in models:
        model_rows = rows(records_dir, model, trained)
        if not model_rows:
            continue
        parts.append(f"#### {model}\n\n" + markdown(model_rows) + "\n" + verdict(model_rows))
        plot_tradeoff(trained, model, os.path.join(folder, f"dashboard_tradeoff_{model}.png"))
        plot_units(trained, model, os.path.join(folder, f"dashboard_units_{model}.png"))
    text = "\n".join(parts)
    with open(out, "w") as f:
        f.write(text)
    return text


PAGE_START = "<!-- dashboard:start (python -m bench.table --page docs/benchmarks.md) -->"
PAGE_END = "<!-- dashboard:end -->"


def update_page(path, text, plots_dir):
    """Replaces the block between the dashboard markers of a Markdown page
    (the documentation's benchmarks page) with the tables of `text` and links
    to the plots `render` wrote into `plots_dir` (a path from the repository
    root: the documentation site serves bench/records/ at the same path)."""
    images = []
    for model in MODELS:
        for kind, what in (("tradeoff", "error against FLOPs"), ("units", "units kept")):
            image = os.path.join(plots_dir, f"dashboard_{kind}_{model}.png")
            if os.path.exists(image):
                images.append(f"![{model}: {what}]({image})")
    report.replace_block(path, PAGE_START, PAGE_END, text.strip() + "\n\n" + "\n".join(images))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", default=os.path.join("bench", "records"))
    p.add_argument("--out", default=None)
    p.add_argument(
        "--page",
        default=None,
        help="rewrite the dashboard block of this Markdown file (docs/benchmarks.md)",
    )
    args = p.parse_args(argv)
    out = args.out or os.path.join(args.records, "dashboard.md")
    text = render(args.records, out)
    if args.page:
        update_page(args.page, text, os.path.dirname(out) or ".")
    print(text, end="")


if __name__ == "__main__":
    main()
