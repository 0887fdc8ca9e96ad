"""Torch-Pruning's side of issue 19's comparison, in its own environment.

    make torch-env
    .venv-torch/bin/python bench/torch_side/pruning.py --model resnet20 \
        --data ../shared/data/fashion-mnist.npz --epochs 6 --finetune-epochs 3 \
        --target-macs 10000000 --dense-macs 40000000 --out bench/records/arch_torch.jsonl

The network of `bench/torch_side/models.py` is trained on the same split as
tfsparse's runs (`tfsparse.data.load`'s validation permutation, written again
here: this process has no TensorFlow), with the same optimizer (Adam 1e-3,
batch 128), then pruned by Torch-Pruning's `MagnitudePruner` with L2 group
importance, step by step until its multiply-adds are at most `--target-macs`
(the count tfsparse's best method reached), then fine-tuned. `--method
group_norm` instead trains `--sparse-epochs` with `GroupNormPruner`'s group
regularization first (DepGraph's sparse-learning recipe).

Multiply-adds are counted as `tfsparse.summary` counts them: a convolution
k·k·(input channels / groups) per output element, a Dense layer its input
width per output, a batch normalization 1 per element, global average pooling
1 per input element (the ViT's mean over tokens too), attention's two
products over tokens (scores, weighted values) tokens² · head width each per
head; additions, activations and layer normalization 0. `--dense-macs` (tfsparse's
count of the same dense network) makes the script check that both counts
agree before it prunes anything: they do for the three networks at 28x28x1
(31,178,752, 23,853,424 at width 0.5, and 7,705,792 for the ViT).

Appends one JSON record: test errors (dense, pruned before and after
fine-tuning), multiply-adds and parameters kept, and the pruned network's
batch-1 CPU latency against the dense one's, timed in this process.
"""

import argparse
import copy
import hashlib
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import MODELS  # noqa: E402


def load(path, validation_split, seed):
    """(train, test) as NCHW float tensors in [0, 1] and int64 labels; the
    validation images of `tfsparse.data.load`'s split (the same permutation,
    written again: this process has no TensorFlow) are left out of training."""
    with np.load(path) as f:
        x_train, y_train, x_test, y_test = (
            f[k] for k in ("x_train", "y_train", "x_test", "y_test")
        )
    n = len(x_train)
    n_val = int(round(n * validation_split))
    train = np.sort(np.random.default_rng(seed).permutation(n)[: n - n_val])

    def tensors(x, y):
        x = torch.from_numpy(x.astype(np.float32) / 255.0)
        x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
        return x.contiguous(), torch.from_numpy(y.astype(np.int64))

    return tensors(x_train[train], y_train[train]), tensors(x_test, y_test)


def labels_digest(labels):
    """SHA-256 of a split's labels in order: `bench/arch.py` compares it with
    tfsparse's split to check that both sides trained on the same images."""
    return hashlib.sha256(np.asarray(labels, dtype=np.int64).tobytes()).hexdigest()


def multiply_adds(model, example):
    """Multiply-adds of one example, counted as tfsparse counts them."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        per_example = output[0].numel()
        if hasattr(module, "multiply_adds"):
            total += module.multiply_adds(inputs, output)
        elif isinstance(module, nn.Conv2d):
            taps = module.kernel_size[0] * module.kernel_size[1]
            total += per_example * taps * module.in_channels // module.groups
        elif isinstance(module, nn.Linear):
            total += per_example * module.in_features
        elif isinstance(module, nn.BatchNorm2d):
            total += per_example
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            total += inputs[0][0].numel()

    counted = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.AdaptiveAvgPool2d)
    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, counted) or hasattr(m, "multiply_adds")
    ]
    model.eval()
    with torch.no_grad():
        model(example[:1])
    for h in handles:
        h.remove()
    return total


def parameters(model):
    """Weights as Keras counts them: batch normalization's moving statistics too."""
    statistics_ = sum(
        b.numel()
        for name, b in model.named_buffers()
        if name.endswith(("running_mean", "running_var"))
    )
    return sum(p.numel() for p in model.parameters()) + statistics_


def train(model, data, epochs, seed, batch_size=128, regularize=None):
    """Adam 1e-3 on shuffled batches; `regularize(model)` after each
    backward pass (GroupNormPruner's sparse learning)."""
    x, y = data
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    generator = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            if regularize is not None:
                regularize(model)
            optimizer.step()


def error(model, data, batch_size=500):
    x, y = data
    model.eval()
    wrong = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            wrong += (
                (model(x[start : start + batch_size]).argmax(1) != y[start : start + batch_size])
                .sum()
                .item()
            )
    return wrong / len(x)


def latency_ms(model, example, runs):
    """Median batch-1 forward time on one CPU thread, in milliseconds."""
    model.eval()
    one = example[:1]
    with torch.no_grad():
        for _ in range(20):
            model(one)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model(one)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def prune(model, example, target, method, sparse_data, sparse_epochs, seed, steps=1000):
    """Prunes `model` in place, `steps` small steps towards 95 % of every
    prunable group, stopping at the first step whose multiply-adds are at
    most `target`; returns the steps taken. Attention keeps its heads and
    narrows them all alike (Torch-Pruning's default for `num_heads`, pruning
    head dimensions; its `prune_num_heads` removes at least one head per
    step, so 4 heads are gone within the first steps of an iterative run),
    and the model's own parameters (the ViT's position table) lose channels
    with the stream they are added to."""
    attention = [m for m in model.modules() if hasattr(m, "heads") and hasattr(m, "qkv")]
    own = [(p, p.dim() - 1) for p in model.parameters(recurse=False)]
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    pruner_class = (
        tp.pruner.GroupNormPruner if method == "group_norm" else tp.pruner.MagnitudePruner
    )
    pruner = pruner_class(
        model,
        example[:1],
        importance=importance,
        pruning_ratio=0.95,
        iterative_steps=steps,
        ignored_layers=[model.logits],
        num_heads={m.qkv: m.heads for m in attention},
        unwrapped_parameters=own or None,
    )
    if method == "group_norm" and sparse_epochs:
        pruner.update_regularizer()
        train(model, sparse_data, sparse_epochs, seed, regularize=pruner.regularize)
    for step in range(1, steps + 1):
        pruner.step()
        if multiply_adds(model, example) <= target:
            return step
    raise RuntimeError(
        f"Torch-Pruning stopped at {multiply_adds(model, example)} multiply-adds, "
        f"above the target {target}."
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, choices=sorted(MODELS))
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--finetune-epochs", type=int, required=True)
    p.add_argument("--target-macs", type=int, required=True)
    p.add_argument("--dense-macs", type=int, help="tfsparse's count of the dense network")
    p.add_argument("--method", default="magnitude", choices=("magnitude", "group_norm"))
    p.add_argument("--sparse-epochs", type=int, default=0)
    p.add_argument("--validation-split", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=200, help="latency repetitions")
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="torch's threads while training (default: every core; fewer beside another job, "
        "which every core would oversubscribe); latency is timed on one",
    )
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    train_data, test_data = load(args.data, args.validation_split, args.seed)
    example = test_data[0]
    model = MODELS[args.model](in_channels=example.shape[1])
    dense_macs = multiply_adds(model, example)
    if args.dense_macs is not None and args.dense_macs != dense_macs:
        raise SystemExit(
            f"--dense-macs {args.dense_macs} (tfsparse) differs from this network's {dense_macs}: "
            "the two architectures are not the same."
        )
    start = time.time()
    train(model, train_data, args.epochs, args.seed)
    dense = copy.deepcopy(model)
    record = {"model": args.model, "method": args.method, "seed": args.seed, "epochs": args.epochs}
    record["train_labels_sha256"] = labels_digest(train_data[1].numpy())
    record["dense_error"] = error(model, test_data)
    record["steps"] = prune(
        model, example, args.target_macs, args.method, train_data, args.sparse_epochs, args.seed
    )
    record["pruned_error_before_finetuning"] = error(model, test_data)
    train(model, train_data, args.finetune_epochs, args.seed + 1)
    record["error"] = error(model, test_data)
    record["train_seconds"] = time.time() - start
    torch.set_num_threads(1)
    dense_ms, pruned_ms = (
        latency_ms(dense, example, args.runs),
        latency_ms(model, example, args.runs),
    )
    record.update(
        {
            "dense_macs": dense_macs,
            "macs": multiply_adds(model, example),
            "target_macs": args.target_macs,
            "dense_params": parameters(dense),
            "params": parameters(model),
            "dense_latency_ms": dense_ms,
            "latency_ms": pruned_ms,
            "speedup": dense_ms / pruned_ms,
            "finetune_epochs": args.finetune_epochs,
            "sparse_epochs": args.sparse_epochs,
            "versions": {
                "torch": torch.__version__,
                "torch_pruning": tp.__version__,
                "python": platform.python_version(),
            },
        }
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
