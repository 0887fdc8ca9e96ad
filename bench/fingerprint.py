"""Fingerprints of short runs, to show that a refactor changed no result.

    python -m bench.fingerprint --out before.json      # at the old commit
    python -m bench.fingerprint --out after.json       # at the new one
    python -m bench.fingerprint --compare before.json after.json

Trains LeNet-300-100 on digits for 3 epochs with each method (λ-driven and
budgeted, BB then DBB, targeted dropout ramped and pruned) through
`bench.run.run_config`, and records each run's test error and a SHA-256 of its
saved weights. Equal hashes mean bit-identical training. (Budgeted runs are not
always bit-identical from one process to the next; see docs/budgets.md.)
"""

import argparse
import hashlib
import json
import sys
import tempfile

import keras

from bench import run

CONFIGS = (
    ("dense", {}),
    ("hard_concrete", {"lam": 0.1}),
    ("npn", {"lam": 0.1}),
    ("bb", {"pretrain_epochs": 1, "continue_epochs": 1}),
    ("targeted_dropout", {"ramp": True, "prune_rate": 0.5}),
    ("hard_concrete", {"target_flops": 0.5}),
    ("targeted_dropout", {"target_flops": 0.5}),
    ("npn", {"target_params": 0.3}),
)


def fingerprints(epochs=3):
    """{configuration: [test error, weights hash]} for every entry of CONFIGS."""
    out = {}
    for method, settings in CONFIGS:
        folder = tempfile.mkdtemp()
        record = run.run_config(
            "lenet_300_100",
            method,
            "digits",
            0,
            epochs,
            f"{folder}/runs.jsonl",
            out=folder,
            verbose=0,
            **settings,
        )
        weights = keras.models.load_model(record["model_path"]).get_weights()
        digest = hashlib.sha256(b"".join(w.tobytes() for w in weights)).hexdigest()[:16]
        out[f"{method} {json.dumps(settings, sort_keys=True)}"] = [record["test_error"], digest]
    return out


def compare(before, after):
    """Lines saying, per configuration, whether the two files agree; and
    whether all did."""
    lines, same = [], True
    for key in sorted(set(before) | set(after)):
        equal = before.get(key) == after.get(key)
        same &= equal
        lines.append(
            f"{'same     ' if equal else 'DIFFERENT'} {key}: {before.get(key)} → {after.get(key)}"
        )
    return lines, same


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="write this run's fingerprints here")
    p.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = p.parse_args(argv)
    if args.compare:
        before, after = (json.load(open(path)) for path in args.compare)
        lines, same = compare(before, after)
        print("\n".join(lines))
        sys.exit(0 if same else 1)
    if not args.out:
        p.error("give --out FILE (or --compare BEFORE AFTER)")
    with open(args.out, "w") as f:
        json.dump(fingerprints(), f, indent=1)


if __name__ == "__main__":
    main()
