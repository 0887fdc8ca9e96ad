"""Benchmarks on ../shared/data/mnist-10k.npz (see bench/dashboard.py).

    python -m bench [--quick]            # the README's dashboard, end to end
    python -m bench.suites NAME          # one suite of training runs
    python -m bench.table --readme README.md
"""
