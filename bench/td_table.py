"""Markdown table of the targeted-dropout curves (bench/records/td_curve/*.json).

    python -m bench.td_table
"""

import glob
import json
import os

from bench.suites import RECORDS


def main():
    for path in sorted(glob.glob(os.path.join(RECORDS, "td_curve", "*.json"))):
        record = json.load(open(path))
        rates = " / ".join(f"{100 * r:g} %" for r in record["rates"])
        print(f"\n**{record['model']}, {record['level']} level, {record['epochs']} epochs** "
              f"(test accuracy % after pruning {rates}):\n")
        print("| regime | " + " | ".join(f"{100 * r:g} %" for r in record["rates"]) + " |")
        print("| --- |" + " ---: |" * len(record["rates"]))
        for regime, result in record["regimes"].items():
            print(f"| {regime} | " + " | ".join(f"{100 * a:.2f}" for a in result["accuracy"])
                  + " |")


if __name__ == "__main__":
    main()
