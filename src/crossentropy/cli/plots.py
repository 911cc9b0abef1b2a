"""The figures ``crossentropy fit`` writes: training-loss curves, reliability
diagrams and confusion matrices, one panel (or line) per fitted loss.

Drawn with Matplotlib's object-oriented API on the Agg canvas, so nothing here
touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["loss_curves", "reliability_diagrams", "confusion_matrices"]

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


def _figure(width, height):
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    fig.savefig(path, facecolor="white")
    return str(path)


def loss_curves(curves: dict, path, *, title="Training loss") -> str:
    """``curves``: label -> objective after each L-BFGS iteration (index 0 is
    the starting point). Left: the objective; right: its distance to the final
    value, on a log scale, which shows the rate of convergence."""
    fig = _figure(11, 4.2)
    left, right = fig.subplots(1, 2)
    for i, (label, values) in enumerate(curves.items()):
        v = np.asarray(values, dtype=np.float64)
        it = np.arange(v.size)
        color = _COLORS[i % len(_COLORS)]
        left.plot(it, v, color=color, lw=1.8, label=f"{label} (final {v[-1]:.4g})")
        gap = v - v.min()
        keep = gap > 0
        right.semilogy(it[keep], gap[keep], color=color, lw=1.8, label=label)
    left.set_yscale("log")
    left.set_title("Training objective (mean loss + L2 penalty)")
    left.set_xlabel("L-BFGS iteration")
    left.set_ylabel("objective (log scale)")
    left.legend(frameon=False)
    right.set_title("Distance to the final objective")
    right.set_xlabel("L-BFGS iteration")
    right.set_ylabel("objective - final objective (log scale)")
    right.legend(frameon=False)
    for ax in (left, right):
        ax.grid(True, which="major", alpha=0.3)
    fig.suptitle(title, fontsize=13, fontweight="bold")
    return _save(fig, path)


def reliability_diagrams(results: dict, path, *, title="Reliability on the test set") -> str:
    """``results``: label -> ``(ece, bins)`` from
    :func:`crossentropy.models.expected_calibration_error`. Top row: accuracy
    per confidence bin against the diagonal of perfect calibration; bottom
    row: how many test samples fall in each bin."""
    k = len(results)
    fig = _figure(4.6 * k + 0.6, 6.0)
    axes = fig.subplots(2, k, squeeze=False, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for j, (label, (ece, bins)) in enumerate(results.items()):
        top, bottom = axes[0, j], axes[1, j]
        edges = bins["edges"]
        width = np.diff(edges)
        centers = edges[:-1] + width / 2
        count = bins["count"]
        full = count > 0
        acc = np.where(full, bins["accuracy"], 0.0)
        conf = np.where(full, bins["confidence"], 0.0)
        color = "#4c72b0"
        top.bar(centers[full], acc[full], width=width[full], color=color, alpha=0.85,
                edgecolor="white", label="accuracy in the bin")
        # the gap from each bin's accuracy to its mean confidence (Guo et al. 2017)
        top.bar(centers[full], (conf - acc)[full], bottom=acc[full], width=width[full],
                color="#f4a58255", edgecolor="#c0392b", hatch="//", lw=0.6,
                label="gap to the bin's mean confidence")
        top.plot([0, 1], [0, 1], ls="--", color="0.2", lw=1.2, label="perfect calibration")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_title(f"{label}\nECE = {ece:.4f}")
        top.set_ylabel("accuracy" if j == 0 else "")
        top.grid(True, alpha=0.3)
        if j == 0:
            handles, labels = top.get_legend_handles_labels()
        bottom.bar(centers, count, width=width, color=color, alpha=0.75, edgecolor="white")
        bottom.set_xlabel("confidence (top predicted probability)")
        bottom.set_ylabel("samples" if j == 0 else "")
        bottom.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=13, fontweight="bold")
    fig.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False)
    return _save(fig, path)


def confusion_matrices(matrices: dict, classes, path, *, title="Confusion matrices on the test set") -> str:
    """``matrices``: label -> ``(counts, accuracy)`` with ``counts[i, j]`` the
    test samples of true class ``classes[i]`` predicted as ``classes[j]``."""
    k = len(matrices)
    n = len(classes)
    names = [str(c) for c in classes]
    longest = max(map(len, names))
    side = max(3.6, min(0.42 * n + 1.8, 9.0))
    fig = _figure((side + 0.9) * k, side + 0.8 + 0.05 * min(longest, 20))
    axes = fig.subplots(1, k, squeeze=False)[0]
    for ax, (label, (cm, accuracy)) in zip(axes, matrices.items()):
        cm = np.asarray(cm)
        im = ax.imshow(cm, cmap="Blues", vmin=0, interpolation="nearest")
        if n <= 25:
            high = cm.max() / 2 if cm.size else 0
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8 if n > 12 else 10,
                            color="white" if cm[i, j] > high else "black")
        ticks = np.arange(n)
        step = max(1, n // 25)
        ax.set_xticks(ticks[::step], [names[t] for t in ticks[::step]])
        if longest > 3:
            ax.tick_params(axis="x", labelrotation=35)
            for t in ax.get_xticklabels():
                t.set_ha("right")
                t.set_rotation_mode("anchor")
        ax.set_yticks(ticks[::step], [names[t] for t in ticks[::step]])
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{label}\naccuracy {100 * accuracy:.1f}%")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="test samples")
    fig.suptitle(title, fontsize=13, fontweight="bold")
    return _save(fig, path)
