"""Benchmarks on ../shared/data/mnist-10k.npz (see bench/dashboard.py).

python -m bench [--quick]            # the dashboard (docs/benchmarks.md), end to end
python -m bench.suites NAME          # one suite of training runs
python -m bench.table --page docs/benchmarks.md
"""
