"""Retrains a method with a few fixed settings over several seeds, like a
`tune.py` trial: how far apart are settings compared with seeds?

    python -m bench.settings_grid --method npn --model lenet_300_100 \
        --settings '{"lam": 0.05, "k_plastic": 7}' '{"lam": 0.035, "k_plastic": 15}' \
        --seeds 1 2 3 --epochs 30 --out bench/records/tuning/npn_grid.jsonl

Each line of `--out` is one (settings, seed) run: validation and test accuracy
and the cost kept (`tune.train_settings`); lines already there are skipped, so
an interrupted grid resumes.
"""

import argparse
import json
import os

import tune
from tfsparse import METHODS, data, models


def settings_object(text):
    """argparse type of `--settings`: a JSON object such as '{"lam": 0.05}'."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object of settings: {text!r}")
    return value


def _run_key(settings, seed):
    """What identifies a run in `--out`."""
    return json.dumps(settings, sort_keys=True), seed


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--model", required=True, choices=sorted(models.MODELS))
    p.add_argument("--dataset", default="../shared/data/mnist-10k.npz")
    p.add_argument(
        "--settings",
        nargs="+",
        required=True,
        type=settings_object,
        help="one JSON object of settings per point, over the method's defaults",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--out", required=True, help=".jsonl file the runs are appended to")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # The trial set-up of tune.py: same split, batch, scheduler and cost.
    tune_args = tune.parse_args(
        [
            "--method",
            args.method,
            "--model",
            args.model,
            "--dataset",
            args.dataset,
            "--accuracy-target",
            "1",
            "--epochs",
            str(args.epochs),
        ]
    )
    splits = data.load(
        args.dataset, validation_split=tune_args.validation_split, seed=tune_args.seed
    )
    done = set()
    if os.path.exists(args.out):
        with open(args.out) as f:
            done = {_run_key(r["settings"], r["seed"]) for r in map(json.loads, f)}
    for settings in args.settings:
        for seed in args.seeds:
            if _run_key(settings, seed) in done:
                continue
            run = tune.train_settings(tune_args, splits, settings, seed=seed)
            record = {
                "method": args.method,
                "model": args.model,
                "epochs": args.epochs,
                "settings": settings,
                **run,
            }
            print(json.dumps(record), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
