"""Probe (issue 24): a budget's multipliers ascended by plain SGD instead of Adam.

    python -m bench.probe_sgd_multipliers --eta 1 --seeds 0 1 2 3 4 5

`SparseModel` ascends λ₁, λ₂ with a copy of the gate optimizer (Adam) at
`BUDGET_LR_MULTIPLIER` times its rate; Adam's normalised steps move λ at about
the same speed whatever the gap between cost and target. This probe swaps
that copy for `keras.optimizers.SGD(eta)`, whose steps are `eta` times the
gap, and trains NPN on LeNet-300-100 at the λ row's FLOPs (the `budgets`
suite's `npn-t0.0958`), appending to `bench/records/budgets_probe_sgd_multipliers.jsonl`.
It patches the library for its own process only; nothing else uses it.
"""

import argparse
import os

import keras

from bench import run, suites
from tfsparse import sparse_model

RECORDS = os.path.join(suites.RECORDS, "budgets_probe_sgd_multipliers.jsonl")


def with_sgd_multipliers(eta):
    """Makes `SparseModel.compile` give the multipliers SGD at rate `eta`."""
    scaled = sparse_model._scaled_optimizer

    def optimizer_for(optimizer, factor):
        if factor == sparse_model.BUDGET_LR_MULTIPLIER:
            return keras.optimizers.SGD(eta)
        return scaled(optimizer, factor)

    sparse_model._scaled_optimizer = optimizer_for


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = p.parse_args(argv)
    with_sgd_multipliers(args.eta)
    for seed in args.seeds:
        run.run_config(
            "lenet_300_100",
            "npn",
            suites.MNIST,
            seed,
            100,
            RECORDS,
            label=f"npn-t0.0958-sgd{args.eta:g}",
            verbose=0,
            target_flops=0.0958,
            **suites.FAST_GATES,
        )


if __name__ == "__main__":
    main()
