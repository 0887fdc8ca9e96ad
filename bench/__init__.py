"""Benchmarks: train (model, method, dataset, seed) configurations, append one JSON
record per run to a .jsonl file, and summarize it as a markdown table.

    python -m bench --quick                          # smoke run on digits
    python -m bench --model lenet_300_100 --dataset data.npz --seeds 0 1 2 --epochs 30
    python -m bench.report bench/results/quick.jsonl
"""
