"""What DBB's per-example factor adds to its network: each recorded BB → DBB
run's test error as trained, and with the factor set to 1 for every example
(γ = 0, β = 1, so that BB's mask alone gates the weights the DBB phase
trained), beside the BB phase's own error.

    python -m bench.dbb_factor [--records bench/records/paper.jsonl] [--model lenet_500_300]

Reads the runs' saved models (`model_path` in each record), so it measures
the runs trained on this machine. In a network with batch normalization after
a DBB gate, a factor of 1 also shifts the statistics that layer learned, so
the comparison says less there.
"""

import argparse

import keras
import numpy as np

from bench.report import load_records
from tfsparse import data
from tfsparse.gates import gates_of
from tfsparse.gates.dependent_beta_bernoulli import DependentBetaBernoulliGate


def test_error(model, x, y):
    logits = model.predict(x, batch_size=1000, verbose=0)
    return 100 * float(np.mean(np.argmax(logits, -1) != y))


def without_factor(model):
    """Sets each DBB gate's factor h = γ·(normalized input) + β to 1."""
    gates = [g for g in gates_of(model) if isinstance(g, DependentBetaBernoulliGate)]
    if not gates:
        raise ValueError("The model has no DependentBetaBernoulliGate.")
    for gate in gates:
        gate.gamma.assign(np.zeros(gate.gamma.shape, "float32"))
        gate.beta.assign(np.ones(gate.beta.shape, "float32"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", default="bench/records/paper.jsonl")
    p.add_argument("--model", default=None, help="only the runs of this model")
    args = p.parse_args(argv)
    print("| run | BB phase (%) | DBB (%) | DBB with factor 1 (%) |")
    print("| --- | ---: | ---: | ---: |")
    for record in load_records(args.records):
        if "first_phase" not in record or args.model not in (None, record["model"]):
            continue
        # The test split of an .npz file does not depend on the validation split.
        x, y = data.load(record["config"]["dataset"], validation_split=0.0).test
        model = keras.models.load_model(record["model_path"], compile=False)
        trained = test_error(model, x, y)
        without_factor(model)
        print(
            f"| {record['run_name']} | {100 * record['first_phase']['test_error']:.2f} "
            f"| {trained:.2f} | {test_error(model, x, y):.2f} |"
        )


if __name__ == "__main__":
    main()
