"""python -m bench: run benchmark configurations, then print the report."""

import argparse
import itertools
import os

from bench import report, run

QUICK_JSONL = os.path.join("bench", "results", "quick.jsonl")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: dense lenet_300_100 on digits, 2 epochs, into {QUICK_JSONL}",
    )
    p.add_argument("--model", nargs="+", default=["lenet_300_100"])
    p.add_argument("--method", nargs="+", default=["dense"], choices=sorted(run.METHODS))
    p.add_argument("--dataset", default="digits")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", default=os.path.join("bench", "results", "bench.jsonl"))
    args = p.parse_args(argv)

    if args.quick:
        # Start fresh so the printed table describes this smoke run only.
        if os.path.exists(QUICK_JSONL):
            os.remove(QUICK_JSONL)
        args.model, args.method, args.dataset = ["lenet_300_100"], ["dense"], "digits"
        args.seeds, args.epochs, args.out = [0], 2, QUICK_JSONL

    for model, method, seed in itertools.product(args.model, args.method, args.seeds):
        run.run_config(model, method, args.dataset, seed, args.epochs, args.out)
    report.report(args.out)


if __name__ == "__main__":
    main()
