"""Summarizes a benchmark .jsonl file as a markdown table.

    python -m bench.report bench/results/quick.jsonl [--out table.md]

One row per (dataset, model, method): number of seeds, test error mean ± std
over seeds (sample std; 0 for a single seed), parameters, mean time per epoch.
"""

import argparse
import json
import os
import statistics


def load_records(path, missing_ok=False):
    """Reads one JSON record per non-empty line ([] for a file that does not
    exist yet, with `missing_ok`)."""
    if missing_ok and not os.path.exists(path):
        return []
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
    args = p.parse_args(argv)
    for path in args.jsonl:
        report(path, args.out)


if __name__ == "__main__":
    main()


def replace_block(path, start, end, body):
    """Rewrites the part of a Markdown page between the marker lines `start`
    and `end` (kept) with `body`: a generated table inside a written page."""
    with open(path) as f:
        page = f.read()
    if start not in page or end not in page:
        raise ValueError(f"{path} has no generated-block markers ({start!r} ... {end!r}).")
    head, rest = page.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + "\n".join([start, "", body.strip(), "", end]) + tail)


def replace_rows(previous, measured, key):
    """`previous` rows without those `measured` again (same `key(row)`), then
    the `measured` ones: a row whose saved model is not in this checkout
    stays as it was measured (its ratio is to the dense file timed in its own
    invocation)."""
    again = {key(r) for r in measured}
    return [r for r in previous if key(r) not in again] + list(measured)
