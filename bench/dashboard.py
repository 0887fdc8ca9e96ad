"""The benchmark dashboard (docs/benchmarks.md) in one command.

    python -m bench                 # full: 3 seeds, hours on 2 cores, resumes
    python -m bench --quick         # the same pipeline, 1 seed, epochs / 20: minutes
    python -m bench --render-only   # re-render the table and plots from the records

Steps, each skipping what its records already hold (so an interrupted run
resumes): (1) every suite of `bench.suites` (every method on LeNet-300-100,
LeNet-500-300 and LeNet-5-Caffe) for each seed; (2) `bench.export_bench`:
compacted TFLite size and latency against the dense network's, with tfmot's
magnitude pruning to 90 % and 95 % in its own process; (3) `bench.timing`:
training step times side by side, all networks in one invocation (again
when a network is missing); (4) `bench.table`: markdown and plots.
The full run writes to bench/records/ (committed), the quick one to
bench/results/quick/.
"""

import argparse
import os

from bench import export_bench, suites, table, timing
from bench.report import load_records

SUITE_ORDER = ("l0_npn", "bb_dbb", "targeted_dropout", "cross")
TFMOT_SPARSITIES = (0.9, 0.95)
# runs_dir: where trained models go (None: train.py's bench/results/runs).
FULL = {
    "records": suites.RECORDS,
    "runs_dir": None,
    "seeds": (0, 1, 2),
    "epochs_scale": 1.0,
    "latency_runs": 500,
    "tfmot_epochs": (15, 5),
    "timing": [],
}
QUICK = {
    "records": os.path.join("bench", "results", "quick"),
    "runs_dir": os.path.join("bench", "results", "quick", "runs"),
    "seeds": (0,),
    "epochs_scale": 0.05,
    "latency_runs": 50,
    "tfmot_epochs": (1, 1),
    "timing": ["--rounds", "1", "--steps", "5"],
}


def timed_models(path):
    return {r["model"] for r in load_records(path, missing_ok=True)}


def run(
    mode,
    seeds=None,
    models=table.MODELS,
    dataset=suites.MNIST,
    render_only=False,
    tfmot=TFMOT_SPARSITIES,
    with_timing=True,
):
    """Runs the pipeline with the settings of `mode` (FULL or QUICK); returns
    the markdown of the dashboard."""
    records, seeds = mode["records"], seeds or mode["seeds"]
    os.makedirs(records, exist_ok=True)
    if not render_only:
        for name in SUITE_ORDER:
            suites.run_suite(
                name,
                seeds,
                models=models,
                records=records,
                dataset=dataset,
                epochs_scale=mode["epochs_scale"],
                runs_dir=mode["runs_dir"],
            )
        export_bench.run(
            models,
            seeds,
            records=records,
            runs=mode["latency_runs"],
            tfmot=tfmot,
            dataset=dataset,
            tfmot_epochs=mode["tfmot_epochs"],
        )
        timing_path = os.path.join(records, "timing.jsonl")
        if with_timing and not set(models) <= timed_models(timing_path):
            timing.main(
                ["--models", *models, "--dataset", dataset, "--out", timing_path, *mode["timing"]]
            )
    return table.render(records, models=models)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="1 seed, epochs / 20, short latency and timing runs"
    )
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--models", nargs="+", default=list(table.MODELS))
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args(argv)
    text = run(
        QUICK if args.quick else FULL, args.seeds, args.models, render_only=args.render_only
    )
    print(text, end="")


if __name__ == "__main__":
    main()
