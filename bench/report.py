"""Summarizes a benchmark .jsonl file as a markdown table.

    python -m bench.report bench/results/quick.jsonl [--out table.md]

One row per (dataset, model, method): number of seeds, test error mean ± std
over seeds (sample std; 0 for a single seed), parameters, mean time per epoch.
"""

import argparse
import json
import statistics


def load_records(path):
    """Reads one JSON record per non-empty line."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def summarize(records):
    """Groups records by (dataset, model, method) and aggregates over seeds.

    Returns:
        A list of row dicts in first-seen order.
    """
    groups = {}
    for r in records:
        label = r.get("config", {}).get("label") or r["method"]
        groups.setdefault((r["dataset"], r["model"], label), []).append(r)
    rows = []
    for (dataset, model, method), rs in groups.items():
        errors = [100.0 * r["test_error"] for r in rs]
        epoch_times = [t for r in rs for t in r["time_per_epoch"]]
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "method": method,
                "runs": len(rs),
                "error_mean": statistics.fmean(errors),
                "error_std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
                "params": rs[0]["params"],
                "time_per_epoch": statistics.fmean(epoch_times) if epoch_times else float("nan"),
            }
        )
    return rows


def to_markdown(rows):
    """Formats `summarize` rows as a markdown table."""
    lines = [
        "| dataset | model | method | runs | test error (%) | params | s / epoch |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['method']} | {r['runs']} | "
            f"{r['error_mean']:.2f} ± {r['error_std']:.2f} | {r['params']:,} | "
            f"{r['time_per_epoch']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _units(sparsity):
    kept, total = sparsity.get("units_kept") or [], sparsity.get("units_total") or []
    if not total:
        return "—"
    return "-".join(map(str, total)) + " → " + "-".join(map(str, kept))


def _variants(record):
    """(label, figures) pairs a record stands for: a BB→DBB run gives its BB
    phase as well as the final DBB model."""
    label = record.get("config", {}).get("label") or record["method"]
    final = {"error": 100 * record["test_error"], "sparsity": record["sparsity"],
             "epoch_time": statistics.median(record["time_per_epoch"])}
    first = record.get("first_phase")
    if first is None:
        return [(label, final)]
    bb = {"error": 100 * first["test_error"], "sparsity": first["sparsity"],
          "epoch_time": statistics.median(first["time_per_epoch"])}
    return [("bb", bb), ("dbb", final)]


def sparsity_rows(records):
    """One row per (model, label): error mean ± std over seeds, units kept (of
    the first seed),
    weights and FLOPs kept (DBB: also expected per-example FLOPs)."""
    groups, seen = {}, set()
    for record in records:
        for label, figures in _variants(record):
            key = (record["model"], label, record.get("config", {}).get("seed"))
            if key in seen:  # the same baseline recorded by two suites
                continue
            seen.add(key)
            groups.setdefault(key[:2], []).append(figures)
    rows = []
    for (model, label), runs in groups.items():
        errors = [f["error"] for f in runs]
        rows.append({
            "model": model, "method": label, "runs": len(runs),
            "error_mean": statistics.fmean(errors),
            "error_std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
            "units": _units(runs[0]["sparsity"]),
            "weights_kept": statistics.fmean(f["sparsity"]["total"]["weights_fraction"]
                                             for f in runs),
            "flops_kept": statistics.fmean(f["sparsity"]["total"]["flops_fraction"]
                                           for f in runs),
            # Per-example FLOPs (DBB); runs without the figure count their static one.
            "flops_expected": statistics.fmean(
                f["sparsity"]["total"].get("flops_expected_fraction",
                                           f["sparsity"]["total"]["flops_fraction"])
                for f in runs),
        })
    return rows


def sparsity_markdown(rows):
    lines = ["| model | method | seeds | test error (%) | units kept | weights kept | "
             "FLOPs kept | FLOPs speed-up |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        flops = r["flops_kept"]
        speedup = f"{1 / flops:.1f}×"
        if r["flops_expected"] < flops - 1e-6:
            speedup += f" ({1 / r['flops_expected']:.1f}× per example)"
        lines.append(f"| {r['model']} | {r['method']} | {r['runs']} | "
                     f"{r['error_mean']:.2f} ± {r['error_std']:.2f} | {r['units']} | "
                     f"{100 * r['weights_kept']:.1f} % | {100 * flops:.1f} % | {speedup} |")
    return "\n".join(lines) + "\n"


def plot_sparsity(rows, path):
    """Error against FLOPs kept, one point per (model, method), Pareto front
    per model; saved as a PNG."""
    from tfsparse.plots import plot_tradeoff
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        plot_tradeoff(path.replace(".png", f"_{model}.png"),
                      [r["flops_expected"] or r["flops_kept"] for r in mine],
                      [r["error_mean"] for r in mine], labels=[r["method"] for r in mine],
                      title=f"{model} on mnist-10k", ylabel="test error (%)")


def report(path, out=None):
    """Prints the table for `path` (and writes it to `out` if given); returns it."""
    table = to_markdown(summarize(load_records(path)))
    print(table, end="")
    if out:
        with open(out, "w") as f:
            f.write(table)
    return table


def main(argv=None):
    p = argparse.ArgumentParser(description="Summarize benchmark .jsonl files.")
    p.add_argument("jsonl", nargs="+")
    p.add_argument("--out", help="also write the markdown table here")
    p.add_argument("--sparsity", action="store_true",
                   help="the sparsity table (units, weights, FLOPs) instead")
    p.add_argument("--plot", help="with --sparsity: PNG path prefix for error-vs-FLOPs plots")
    args = p.parse_args(argv)
    if not args.sparsity:
        for path in args.jsonl:
            report(path, args.out)
        return
    rows = sparsity_rows([r for path in args.jsonl for r in load_records(path)])
    table = sparsity_markdown(rows)
    print(table, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(table)
    if args.plot:
        plot_sparsity(rows, args.plot)


if __name__ == "__main__":
    main()
