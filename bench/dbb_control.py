"""A control for DBB's excess over BB: from one BB network, (A) the DBB phase
as it is, (B) the same phase with DBB's per-example factor held at 1
(γ = 0, β = 1, σ at its floor, none of them trained), so that BB's sampled
masks alone gate the weights while they retrain, (C) the phase with the
shift β starting at 10, the authors' code's initial value, where tfsparse
starts it at 1, and (D) the phase without the noise on the shift (σ at its
floor, not trained). LeNet-500-300 on mnist-10k, 10 + 100 + 30 epochs, the BB
code's LeNet schedule; one line per seed, with each arm's test error and
expected FLOPs per test example (a fraction of the dense network's).

    python -m bench.dbb_control 0 1 2 [--arms dbb dbb_beta_init_10] [--out ...]
"""

import argparse
import json

import keras
import numpy as np

from bench.suites import MNIST
from tfsparse import data, summary
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


def start_beta_at_ten(model):
    """The authors' initial shift: h starts clipped at 1 for almost every
    example, so the phase starts as BB and β comes down as it trains."""
    for gate in gates_of(model):
        if isinstance(gate, DependentBetaBernoulliGate):
            gate.beta.assign(np.full(gate.beta.shape, 10.0, "float32"))


def without_noise(model):
    """σ at its floor and not trained: γ and β learn, but no noise is drawn
    on the shift (the factor is still a relaxed Bernoulli of h)."""
    for gate in gates_of(model):
        if isinstance(gate, DependentBetaBernoulliGate):
            gate.sigma_raw.assign(np.full(gate.sigma_raw.shape, -10.0, "float32"))
            gate.sigma_raw.trainable = False


# Each arm's name in the records, and what it changes before the phase trains.
ARMS = {
    "dbb": None,
    "dbb_factor_held_at_1": hold_factor_at_one,
    "dbb_beta_init_10": start_beta_at_ten,
    "dbb_without_noise": without_noise,
}


def flops_per_example(model, splits):
    return summary(model, print_fn=None, x=splits.test[0][:1000])["total"][
        "flops_expected_fraction"
    ]


def dbb_phase(model, splits, config, prepare):
    """`training.continue_training` with `prepare`; returns the test error,
    the validation accuracy and the expected FLOPs per test example."""
    following, _, _ = T.continue_training(model, splits, config, prepare=prepare)
    val = following.evaluate(*splits.val, batch_size=100, verbose=0)[1]
    return test_error(following, splits), val, flops_per_example(following, splits)


def run(seed, out, arms=tuple(ARMS)):
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
    row = {"seed": seed, "bb": test_error(model, splits)}
    val_acc = {"bb": model.evaluate(*splits.val, verbose=0)[1]}
    flops = {"bb": flops_per_example(model, splits)}
    weights = model.get_weights()
    for arm in arms:
        # Every arm starts from the same BB network and the same random state.
        model.set_weights(weights)
        keras.utils.set_random_seed(seed + 1000)
        row[arm], val_acc[arm], flops[arm] = dbb_phase(model, splits, config, ARMS[arm])
    row.update(val_acc=val_acc, flops_per_example=flops)
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("seeds", nargs="+", type=int)
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    p.add_argument("--out", default="bench/records/dbb_control.jsonl")
    args = p.parse_args(argv)
    for seed in args.seeds:
        print(run(seed, args.out, args.arms), flush=True)


if __name__ == "__main__":
    main()
