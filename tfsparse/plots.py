"""Plots shared by the tuner, the benchmarks and the notebooks."""

import numpy as np


def pareto_front(costs, errors):
    """Indices of the points no other point beats on both cost and error
    (lower is better for both), sorted by cost."""
    order = np.lexsort((np.asarray(errors), np.asarray(costs)))
    front, best = [], np.inf
    for i in order:
        if errors[i] < best:
            front.append(int(i))
            best = errors[i]
    return front


def plot_tradeoff(path, costs, errors, labels=None, xlabel="FLOPs kept (fraction of dense)",
                  ylabel="error (%)", title=None, target=None, xscale="linear"):
    """Scatter of error against cost with the Pareto front marked; saves a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    costs, errors = np.asarray(costs, float), np.asarray(errors, float)
    fig, ax = plt.subplots(figsize=(6, 4))
    groups = sorted(set(labels)) if labels is not None else [None]
    for group in groups:
        pick = [i for i in range(len(costs)) if labels is None or labels[i] == group]
        ax.scatter(costs[pick], errors[pick], label=group, alpha=0.8)
    front = pareto_front(costs, errors)
    ax.plot(costs[front], errors[front], "k--", lw=1, label="Pareto front")
    if target is not None:
        ax.axhline(target, color="grey", lw=0.8, ls=":", label="error target")
    ax.set_xscale(xscale)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
