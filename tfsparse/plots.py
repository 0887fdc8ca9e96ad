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


def plot_tradeoff(
    path,
    costs,
    errors,
    labels=None,
    xlabel="FLOPs kept (fraction of dense)",
    ylabel="error (%)",
    title=None,
    target=None,
    xscale="linear",
    yscale="linear",
):
    """Scatter of error against cost with the Pareto front marked; saves a PNG.
    Log scales (`xscale`/`yscale="log"`) keep a search's failed trials (all
    units closed, 90 % error) from squashing the region that matters; points
    at zero cost are left out on a log axis."""
    import matplotlib
    import matplotlib.ticker

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
    ax.set_yscale(yscale)
    for axis, scale in ((ax.xaxis, xscale), (ax.yaxis, yscale)):
        if scale == "log":  # ticks at 1, 2, 5 × 10^k, written as plain numbers
            axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
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
