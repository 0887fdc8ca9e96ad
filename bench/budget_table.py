"""Issue 24's table and plot: FLOPs budgets against the hand-tuned λ rows.

    python -m bench.budget_table [--records bench/records] [--page docs/budgets.md]

Reads `budgets.jsonl` (from `python -m bench.suites budgets`) and the λ-driven
runs of the same networks (`l0_npn.jsonl`, the dashboard's rows) and writes
`budgets.md` (reached FLOPs fraction, its deviation from the target and the
test error, per network, method and target; then each λ row beside the budget
runs at the λ row's FLOPs: those whose target is that FLOPs fraction, or else
the curve interpolated there) and `budgets_<model>.png`
(test error against FLOPs kept, budget runs joined by a line, λ rows as
crosses) next to the records. `--page` also rewrites the generated block of
the documentation's budgets page.
"""

import argparse
import collections
import os
import statistics

import numpy as np

from bench.report import load_records, replace_block

BUDGETS = "budgets.jsonl"
LAMBDA_SUITES = ("l0_npn.jsonl", "budgets.jsonl")
PAGE_START = "<!-- budgets:start (python -m bench.budget_table --page docs/budgets.md) -->"
PAGE_END = "<!-- budgets:end -->"
# A budget run's family, to compare it with the λ rows of the same method.
FAMILY = {"hard_concrete": "hard_concrete", "npn": "npn-prune"}
# Figures over a row's seeds: the mean FLOPs kept and test error (%), the
# error's standard deviation (0 for one seed) and the number of seeds.
Mean = collections.namedtuple("Mean", "flops error std seeds")
Point = collections.namedtuple("Point", "target " + " ".join(Mean._fields))


def _target(record):
    return record.get("config", {}).get("options", {}).get("target_flops")


def _label(record):
    return record.get("config", {}).get("label") or record["method"]


def _figures(record):
    total = record["sparsity"]["total"] if record.get("sparsity") else None
    flops = total["flops_fraction"] if total else 1.0
    return flops, 100 * record["test_error"]


def _mean(figures):
    errors = [e for _, e in figures]
    return Mean(
        statistics.fmean(f for f, _ in figures),
        statistics.fmean(errors),
        statistics.stdev(errors) if len(errors) > 1 else 0.0,
        len(errors),
    )


def budget_runs(records_dir):
    """{(model, family): [Point]} sorted by target, over the recorded seeds."""
    groups = {}
    for record in load_records(os.path.join(records_dir, BUDGETS), missing_ok=True):
        target = _target(record)
        if target is None:
            continue
        key = (record["model"], FAMILY[record["method"]], target)
        groups.setdefault(key, []).append(_figures(record))
    out = {}
    for (model, family, target), figures in sorted(groups.items()):
        out.setdefault((model, family), []).append(Point(target, *_mean(figures)))
    return out


def lambda_rows(records_dir, models):
    """{(model, label): Mean} over seeds: the λ-driven runs and the dense
    baselines of `models`."""
    groups = {}
    for name in LAMBDA_SUITES:
        for record in load_records(os.path.join(records_dir, name), missing_ok=True):
            if record["model"] not in models or _target(record) is not None:
                continue
            groups.setdefault((record["model"], _label(record)), []).append(_figures(record))
    return {key: _mean(figures) for key, figures in groups.items()}


def error_at(curve, flops):
    """The budget curve's error at `flops`, interpolated in log FLOPs (None
    outside the curve's range)."""
    points = sorted((p.flops, p.error) for p in curve)
    xs = np.log([f for f, _ in points])
    if not points or not xs[0] <= np.log(flops) <= xs[-1]:
        return None
    return float(np.interp(np.log(flops), xs, [e for _, e in points]))


def to_markdown(curves, lambdas):
    lines = [
        "| model | method | target | FLOPs kept | off target | test error (%) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for (model, family), curve in curves.items():
        for p in curve:
            lines.append(
                f"| {model} | {family} | {p.target:g} | {p.flops:.4f} | "
                f"{100 * (p.flops / p.target - 1):+.1f} % | {_spread(p)} |"
            )
    lines += [
        "",
        "| model | λ row | FLOPs kept | test error (%) | budget runs at that FLOPs (%) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for (model, label), row in sorted(lambdas.items()):
        budget = "" if label == "dense" else at_lambda(curves.get((model, label), []), row.flops)
        lines.append(f"| {model} | {label} | {row.flops:.4f} | {_spread(row)} | {budget} |")
    return "\n".join(lines) + "\n"


def _spread(row):
    """Error (%), ± its standard deviation and the seeds when there are several."""
    if row.seeds == 1:
        return f"{row.error:.2f}"
    return f"{row.error:.2f} ± {row.std:.2f} ({row.seeds} seeds)"


def at_lambda(curve, flops):
    """The budget runs' error at a λ row's `flops`: the runs that targeted
    that fraction (to the 4 decimals the suite writes), else the curve
    interpolated there."""
    exact = [p for p in curve if abs(p.target - flops) < 5e-5]
    if exact:
        return _spread(exact[0])
    at = error_at(curve, flops)
    return f"{at:.2f} (interpolated)" if at is not None else "outside the targets' range"


def plot(curves, lambdas, model, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (m, family), curve in curves.items():
        if m != model:
            continue
        (line,) = ax.plot(
            [p.flops for p in curve],
            [p.error for p in curve],
            "o-",
            label=f"{family}, FLOPs target",
        )
        for label, row in ((k[1], v) for k, v in lambdas.items() if k[0] == model):
            if label == family:
                ax.plot(
                    row.flops,
                    row.error,
                    "x",
                    color=line.get_color(),
                    markersize=10,
                    label=f"{family}, hand-tuned λ",
                )
    dense = lambdas.get((model, "dense"))
    if dense:
        ax.axhline(dense.error, color="gray", linestyle=":", label="dense")
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs kept (fraction of dense)")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"{model}: budgets against λ (mnist-10k)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", default=os.path.join("bench", "records"))
    p.add_argument("--page", default=None, help="a Markdown page with the budgets markers")
    args = p.parse_args(argv)
    curves = budget_runs(args.records)
    models = sorted({model for model, _ in curves})
    lambdas = lambda_rows(args.records, models)
    table = to_markdown(curves, lambdas)
    with open(os.path.join(args.records, "budgets.md"), "w") as f:
        f.write(table)
    images = []
    for model in models:
        image = os.path.join(args.records, f"budgets_{model}.png")
        plot(curves, lambdas, model, image)
        images.append(f"![budgets on {model}]({image})")
    if args.page:
        replace_block(args.page, PAGE_START, PAGE_END, table + "\n" + "\n".join(images))
    print(table, end="")


if __name__ == "__main__":
    main()
