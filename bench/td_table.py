"""Markdown tables and combined plots of the targeted-dropout curves.

    python -m bench.td_table

Reads bench/records/td_curve/*.json (from `bench.targeted_dropout_curve`;
runs with other α, γ are separate files of the same model, level, epochs and
seed), prints one table per (model, level) with every regime, and draws the
combined accuracy-against-pruning-rate plot `td_curve_<model>_<level>_all.png`.
"""

import glob
import json
import os

from bench.suites import RECORDS
from bench.targeted_dropout_curve import plot

FOLDER = os.path.join(RECORDS, "td_curve")


def _name(regime, result):
    settings = result.get("settings", {})
    if regime == "targeted":
        return f"targeted (α = {settings['alpha']:g}, γ = {settings['gamma']:g})"
    return regime


def combined():
    """{(model, level): record with the regimes of every file merged}."""
    merged = {}
    for path in sorted(glob.glob(os.path.join(FOLDER, "*.json"))):
        with open(path) as f:
            record = json.load(f)
        key = (record["model"], record["level"])
        base = merged.setdefault(key, {**record, "regimes": {}})
        if (record["epochs"], record["seed"]) != (base["epochs"], base["seed"]):
            raise ValueError(f"{path}: other epochs or seed than the first file of {key}")
        for regime, result in record["regimes"].items():
            base["regimes"][_name(regime, result)] = result
    return merged


def main():
    for (model, level), record in combined().items():
        rates = record["rates"]
        print(
            f"\n**{model}, {level} level, {record['epochs']} epochs** (test accuracy % "
            f"after pruning {' / '.join(f'{100 * r:g} %' for r in rates)}):\n"
        )
        print("| regime | " + " | ".join(f"{100 * r:g} %" for r in rates) + " |")
        print("| --- |" + " ---: |" * len(rates))
        for regime, result in record["regimes"].items():
            print(
                f"| {regime} | " + " | ".join(f"{100 * a:.2f}" for a in result["accuracy"]) + " |"
            )
        plot(record, os.path.join(FOLDER, f"td_curve_{model}_{level}_all.png"))


if __name__ == "__main__":
    main()
