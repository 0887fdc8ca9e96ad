"""A control for DBB's excess over BB: from one BB network, (A) the DBB phase
as it is, and (B) the same phase with DBB's per-example factor held at 1
(γ = 0, β = 1, σ at its floor, none of them trained), so that BB's sampled
masks alone gate the weights while they retrain. LeNet-500-300 on mnist-10k,
10 + 100 + 30 epochs, the BB code's LeNet schedule; one line per seed.

    python -m bench.dbb_control 0 1 2 [--out bench/records/dbb_control.jsonl]
"""

import argparse
import json

import keras
import numpy as np

from bench.suites import MNIST
from tfsparse import data
from tfsparse import training as T
from tfsparse.gates import gates_of
from tfsparse.gates.dependent_beta_bernoulli import DependentBetaBernoulliGate


def test_error(model, splits):
    return 100 * (1 - model.evaluate(*splits.test, batch_size=100, verbose=0)[1])


def hold_factor_at_one(model):
    """γ = 0, β = 1, σ_raw at its floor, and none of them trained."""
    for gate in gates_of(model):
        if isinstance(gate, DependentBetaBernoulliGate):
            gate.gamma.assign(np.zeros(gate.gamma.shape, "float32"))
            gate.beta.assign(np.ones(gate.beta.shape, "float32"))
            gate.sigma_raw.assign(np.full(gate.sigma_raw.shape, -10.0, "float32"))
            for variable in (gate.gamma, gate.beta, gate.sigma_raw):
                variable.trainable = False


def dbb_phase(model, splits, config, hold):
    """`training.continue_training`, with the factor held at 1 if `hold`;
    returns the test error and the validation accuracy."""
    following, _, _ = T.continue_training(
        model, splits, config, prepare=hold_factor_at_one if hold else None
    )
    val = following.evaluate(*splits.val, batch_size=100, verbose=0)[1]
    return test_error(following, splits), val


def run(seed, out):
    config = T.RunConfig(
        model="lenet_500_300",
        dataset=MNIST,
        method="bb",
        seed=seed,
        epochs=100,
        pretrain_epochs=10,
        continue_epochs=30,
        lr_schedule="step",
        lr_drops=((0.5, 0.1), (0.7, 0.01)),
        settings={"lr_multiplier": 10.0},
        weight_decay=1e-4,
        batch_size=100,
        resume=False,
        out="/tmp/dbb_control",
        verbose=0,
    )
    keras.utils.set_random_seed(seed)
    splits = data.load(config.dataset, validation_split=config.validation_split, seed=seed)
    dense, _ = T.pretrained_dense(config, splits)
    model, callbacks = T.build_sparse(config, splits, dense)
    T.fit(model, splits, config, callbacks)
    bb, bb_val = test_error(model, splits), model.evaluate(*splits.val, verbose=0)[1]
    weights = model.get_weights()
    keras.utils.set_random_seed(seed + 1000)
    dbb, dbb_val = dbb_phase(model, splits, config, hold=False)
    model.set_weights(weights)
    keras.utils.set_random_seed(seed + 1000)
    held, held_val = dbb_phase(model, splits, config, hold=True)
    row = {
        "seed": seed,
        "bb": bb,
        "dbb": dbb,
        "dbb_factor_held_at_1": held,
        "val_acc": {"bb": bb_val, "dbb": dbb_val, "held": held_val},
    }
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("seeds", nargs="+", type=int)
    p.add_argument("--out", default="bench/records/dbb_control.jsonl")
    args = p.parse_args(argv)
    for seed in args.seeds:
        print(run(seed, args.out), flush=True)


if __name__ == "__main__":
    main()
