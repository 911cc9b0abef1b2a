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


MIN_BIN_SAMPLES = 10  # a bin with fewer test samples than this is drawn hollow: its accuracy is noise
_UNDER, _OVER = "#2b6cb0", "#c53030"  # accuracy above confidence (under-confident) / below it


def reliability_diagrams(results: dict, path, *, title="Reliability on the test set") -> str:
    """``results``: label -> ``(ece, bins)`` from
    :func:`crossentropy.models.expected_calibration_error`.

    Top row: each bin's accuracy against its mean confidence, drawn by
    scikit-learn's ``CalibrationDisplay`` from the bins the ECE sums over,
    with the gap to the diagonal as a bar from the diagonal, blue where the
    model is under-confident (accuracy above confidence) and red where it is
    over-confident, on the two shaded halves that say so; a bin of fewer than
    MIN_BIN_SAMPLES samples is a hollow marker with a pale bar. Bottom row:
    the samples in each bin, on one log scale for every panel."""
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from sklearn.calibration import CalibrationDisplay

    k = len(results)
    fig = _figure(3.9 * k + 0.4, 5.9)
    axes = fig.subplots(2, k, squeeze=False, sharex=True, sharey="row",
                        gridspec_kw={"height_ratios": [3, 1.1]})
    top_count = max(int(np.max(bins["count"])) for _, bins in results.values())
    for j, (label, (ece, bins)) in enumerate(results.items()):
        top, bottom = axes[0, j], axes[1, j]
        edges, count = bins["edges"], bins["count"]
        width = np.diff(edges)
        full = count > 0
        acc, conf = bins["accuracy"][full], bins["confidence"][full]
        few = count[full] < MIN_BIN_SAMPLES
        top.fill_between([0, 1], [0, 1], [1, 1], color=_UNDER, alpha=0.06, lw=0)
        top.fill_between([0, 1], [0, 0], [0, 1], color=_OVER, alpha=0.06, lw=0)
        gap = acc - conf
        colors = [to_rgba(_UNDER if g >= 0 else _OVER, 0.25 if f else 0.7) for g, f in zip(gap, few)]
        top.bar(conf, gap, bottom=conf, width=width[full] * 0.6, color=colors, lw=0)
        top.text(0.03, 0.97, "under-confident", color=_UNDER, fontsize=8, va="top")
        top.text(0.97, 0.03, "over-confident", color=_OVER, fontsize=8, ha="right")
        CalibrationDisplay(acc, conf, None, estimator_name=label).plot(
            ax=top, ref_line=True, color="0.15", marker="", lw=1.2, zorder=3)
        top.scatter(conf[~few], acc[~few], s=22, color="0.15", zorder=4)
        top.scatter(conf[few], acc[few], s=22, facecolor="white", edgecolor="0.15", zorder=4)
        if top.get_legend() is not None:
            top.get_legend().remove()
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_aspect("auto")
        top.set_title(f"{label}\nECE = {ece:.4f}", fontsize=11)
        top.set_xlabel("")
        top.set_ylabel("accuracy in the bin" if j == 0 else "")
        top.grid(True, alpha=0.25)
        bottom.bar(edges[:-1] + width / 2, count, width=width * 0.9,
                   color=np.where(count < MIN_BIN_SAMPLES, "0.75", "0.4"))
        bottom.set_yscale("log")
        bottom.set_ylim(0.8, top_count * 1.6)
        bottom.set_xlabel("confidence (top predicted probability)")
        bottom.set_ylabel("test samples\n(log scale)" if j == 0 else "")
        bottom.grid(True, alpha=0.25)
    handles = [
        Line2D([], [], color="0.15", marker="o", lw=1.2, label="accuracy per bin"),
        Line2D([], [], color="black", ls=":", lw=1.2, label="perfect calibration"),
        Patch(color=_UNDER, alpha=0.7, label="under-confident: accuracy > confidence"),
        Patch(color=_OVER, alpha=0.7, label="over-confident: accuracy < confidence"),
        Line2D([], [], color="0.15", marker="o", markerfacecolor="white", lw=0,
               label=f"bin of < {MIN_BIN_SAMPLES} samples (pale bars: unreliable)"),
    ]
    fig.suptitle(title, fontsize=13, fontweight="bold")
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False, fontsize=9)
    return _save(fig, path)


def confusion_matrices(matrices: dict, classes, path, *, title="Confusion matrices on the test set") -> str:
    """``matrices``: label -> ``(counts, accuracy)`` with ``counts[i, j]`` the
    test samples of true class ``classes[i]`` predicted as ``classes[j]``.

    One panel per loss, side by side on one colour scale, drawn by
    scikit-learn's ``ConfusionMatrixDisplay``: each row normalised to the
    share of its true class (so classes of any size read alike), in percent,
    with the zero cells left blank so that the confusions stand out; the
    colour scale stops at the largest confusion (off the diagonal), so that
    a 2% confusion is visible; the diagonal (correct predictions) is grey,
    off that scale, so that no confusion looks like a correct prediction."""
    from matplotlib.patches import Rectangle
    from sklearn.metrics import ConfusionMatrixDisplay

    k, n = len(matrices), len(classes)
    names = [str(c) for c in classes]
    longest = max(map(len, names))
    side = max(3.4, min(0.36 * n + 1.6, 7.5))
    fig = _figure(side * k + 1.2, side + 0.9 + 0.05 * min(longest, 20))
    axes = fig.subplots(1, k, squeeze=False)[0]
    shares = {}
    for label, (cm, _) in matrices.items():
        cm = np.asarray(cm, dtype=np.float64)
        totals = cm.sum(axis=1, keepdims=True)
        shares[label] = 100 * np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    off = [s[~np.eye(n, dtype=bool)] for s in shares.values()]
    vmax = max(5.0, max((float(o.max()) for o in off if o.size), default=5.0))
    small = n > 12
    for ax, (label, (cm, accuracy)) in zip(axes, matrices.items()):
        share = shares[label]
        disp = ConfusionMatrixDisplay(share, display_labels=names)
        disp.plot(ax=ax, cmap="Reds", colorbar=False, values_format=".0f",
                  im_kw={"vmin": 0, "vmax": vmax}, text_kw={"fontsize": 7 if small else 9},
                  xticks_rotation=35 if longest > 3 else "horizontal")
        for (i, j), text in np.ndenumerate(disp.text_):
            text.set_color("white" if i != j and share[i, j] > vmax / 2 else "black")
            if np.asarray(cm)[i, j] == 0:
                text.set_visible(False)
            if i == j:  # the diagonal in grey: its share is not on the errors' colour scale
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.85", edgecolor="white", zorder=2))
                text.set_zorder(3)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class" if ax is axes[0] else "")
        ax.set_title(f"{label}\naccuracy {100 * accuracy:.1f}%, {int(np.sum(cm)) - int(np.trace(cm))} errors",
                     fontsize=11)
    fig.colorbar(axes[-1].images[0], ax=list(axes), fraction=0.03, pad=0.02, extend="max",
                 label=f"misclassified, % of the true class (up to {vmax:.0f}%)")
    fig.suptitle(title + ": each row in % of its true class; grey: correct, red: confused, blank: none",
                 fontsize=12, fontweight="bold")
    return _save(fig, path)
