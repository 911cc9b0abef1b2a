"""The ``crossentropy`` command.

``crossentropy fit``      fit maximum-likelihood classifiers with several losses, compare them
``crossentropy predict``  apply a saved model to a table
``crossentropy check``    every loss's analytic gradient against finite differences and PyTorch
``crossentropy bench``    run the benchmark scripts of a source checkout (``--quick``)

The user guide, with the saved-model format, is ``docs/cli.md``. Bad input
(a missing file, a column that is not there, a single class, non-numeric
features, an unknown option) prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from ._datasets import DataError, Dataset, from_columns, read_table, write_csv

__all__ = ["main"]

PROG = "crossentropy"
BUNDLED = {
    "digits": "load_digits",
    "iris": "load_iris",
    "wine": "load_wine",
    "breast_cancer": "load_breast_cancer",
}
DEFAULT_DATA = "digits"
ECE_BINS = 15


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block, no traceback
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


# ---------------------------------------------------------------------------
# argument types
# ---------------------------------------------------------------------------


def _float_in(low, high, *, low_open=False, high_open=False):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if not ok or v != v:
            lo, hi = ("(" if low_open else "[") + f"{low:g}", f"{high:g}" + (")" if high_open else "]")
            raise argparse.ArgumentTypeError(f"{text} is not in {lo}, {hi}")
        return v

    return parse


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Maximum-likelihood classifiers with the cross-entropy family of losses.",
        epilog="User guide: docs/cli.md",
    )
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    f = sub.add_parser(
        "fit",
        help="fit classifiers with several losses and compare them on a held-out test set",
        description=(
            "Fit a linear softmax (or, for two classes, logistic) model by penalised maximum "
            "likelihood with each loss, on standardised features, and compare them on a "
            "held-out test set. Without --loss it fits three: cross-entropy, cross-entropy "
            "with label smoothing 0.1, and focal loss with gamma 2."
        ),
    )
    f.add_argument(
        "data", nargs="?", default=None, metavar="DATA",
        help=f"a CSV/TSV (or Parquet, with pyarrow) file, or a bundled dataset: "
        f"{', '.join(BUNDLED)} (default: {DEFAULT_DATA})",
    )
    f.add_argument("--target", metavar="COL", help="the label column (default: 'target', "
                   "'label', 'class' or 'y' if present, else the last column)")
    f.add_argument(
        "--loss", action="append", choices=("cross_entropy", "focal"), metavar="LOSS",
        help="cross_entropy or focal; repeat to fit several (default: the three above)",
    )
    f.add_argument("--label-smoothing", type=_float_in(0, 1, high_open=True), metavar="E",
                   help="label smoothing for every --loss (default 0; without --loss: the "
                   "smoothing of the second default model, 0.1)")
    f.add_argument("--gamma", type=_float_in(0, float("inf")), metavar="G",
                   help="focal-loss exponent (default 2)")
    f.add_argument("--C", type=_float_in(0, float("inf"), low_open=True), default=1.0, metavar="C",
                   help="inverse L2 strength on the coefficients, as scikit-learn's C (default 1)")
    f.add_argument("--class-weight", choices=("balanced",), default=None,
                   help="weight classes inversely to their frequency")
    f.add_argument("--test-size", type=_float_in(0, 1, low_open=True, high_open=True), default=0.25,
                   metavar="F", help="fraction of rows held out for testing (default 0.25)")
    f.add_argument("--seed", type=int, default=0, help="seed of the train/test split (default 0)")
    f.add_argument("--max-iter", type=_positive_int, default=1000, metavar="N",
                   help="most L-BFGS iterations per model (default 1000)")
    f.add_argument("--tol", type=_float_in(0, float("inf"), low_open=True), default=1e-6,
                   help="L-BFGS gradient tolerance (default 1e-6)")
    f.add_argument("--out", default="crossentropy-out", metavar="DIR",
                   help="where plots, models and results go (default: ./crossentropy-out)")
    f.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    pr = sub.add_parser(
        "predict", help="apply a saved model to a table",
        description="Apply a model saved by 'crossentropy fit' to DATA. When DATA has the "
        "model's target column, report accuracy, log-loss and calibration error.",
    )
    pr.add_argument("model", metavar="MODEL", help="a saved model: the .npz (or its .json sidecar)")
    pr.add_argument("data", metavar="DATA", help="a CSV/Parquet file or a bundled dataset name")
    pr.add_argument("--target", metavar="COL", help="the label column (default: the model's)")
    pr.add_argument("--out", metavar="FILE", help="write predictions and probabilities as CSV")
    pr.add_argument("--json", action="store_true", help="print the summary as JSON")

    c = sub.add_parser(
        "check", help="check every loss's analytic gradient",
        description="For every loss: the largest difference between its analytic gradient and "
        "float64 finite differences, and between value and gradient and PyTorch's (float64 "
        "autograd) where torch is installed. Exits 1 if any exceeds its tolerance.",
    )
    c.add_argument("--fd-tol", type=float, default=1e-7, help="finite-difference tolerance (1e-7)")
    c.add_argument("--torch-tol", type=float, default=1e-10, help="relative tolerance against torch (1e-10)")

    b = sub.add_parser(
        "bench", help="run the benchmark scripts quickly",
        description="Run every benchmarks/*.py of the source checkout with --quick.",
    )
    b.add_argument("--dir", metavar="DIR", help="the benchmarks directory (default: the checkout's)")
    b.add_argument("--timeout", type=float, default=600, help="seconds per script (default 600)")
    return p


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


def _bundled(name: str, target) -> Dataset:
    from sklearn import datasets

    if target not in (None, "target"):
        raise DataError(f"the bundled dataset {name!r} has one label column, 'target', not {target!r}")
    bunch = getattr(datasets, BUNDLED[name])()
    X = np.asarray(bunch.data, dtype=np.float64)
    names = getattr(bunch, "feature_names", None)
    names = [f"x{i}" for i in range(X.shape[1])] if names is None else list(names)
    y = np.asarray(bunch.target)
    if name != "digits":  # class names read better than 0, 1, 2
        y = np.asarray(bunch.target_names)[y].astype(str)
    return Dataset(name, X, y, [str(n) for n in names], "target")


def load_data(data, target=None, *, features=None, require_target=True) -> Dataset:
    """A file path, or a bundled dataset's name (a file of that name wins)."""
    data = DEFAULT_DATA if data is None else data
    key = data.lower().replace("-", "_")
    if not os.path.exists(data) and key in BUNDLED:
        ds = _bundled(key, target)
        if features is not None:
            missing = [f for f in features if f not in ds.feature_names]
            if missing:
                raise DataError(f"{data}: the model's feature column(s) {missing[:5]} are missing")
            ds.X = ds.X[:, [ds.feature_names.index(f) for f in features]]
            ds.feature_names = list(features)
        return ds
    if not os.path.exists(data):
        raise DataError(f"{data}: no such file, and not a bundled dataset ({', '.join(BUNDLED)})")
    header, columns = read_table(data)
    return from_columns(header, columns, target, features=features,
                        require_target=require_target, source=data)


# ---------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------


@dataclass
class LossSpec:
    loss: str
    label_smoothing: float
    gamma: float

    @property
    def label(self):
        if self.loss == "focal":
            s = f"focal, gamma {self.gamma:g}"
        else:
            s = "cross-entropy"
        return s + (f", smoothing {self.label_smoothing:g}" if self.label_smoothing else "")

    @property
    def slug(self):
        s = self.loss + (f"_gamma{self.gamma:g}" if self.loss == "focal" else "")
        return s + (f"_ls{self.label_smoothing:g}" if self.label_smoothing else "")


def loss_specs(args) -> list:
    gamma = 2.0 if args.gamma is None else args.gamma
    if not args.loss:
        e = 0.1 if args.label_smoothing is None else args.label_smoothing
        specs = [LossSpec("cross_entropy", 0.0, gamma), LossSpec("cross_entropy", e, gamma),
                 LossSpec("focal", 0.0, gamma)]
    else:
        e = args.label_smoothing or 0.0
        specs = [LossSpec(name, e, gamma) for name in args.loss]
    unique = {}
    for s in specs:
        unique.setdefault(s.slug, s)
    return list(unique.values())


def _stratified_split(X, y, test_size, seed):
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
    except ValueError as e:
        raise DataError(
            f"cannot hold out a stratified test set of {test_size:g} of {len(y)} rows "
            f"with {np.unique(y).size} classes ({e})"
        ) from None


def _evaluate(est, Z, y):
    """Accuracy, mean log-loss (natural log) and ECE of a fitted model on (Z, y)."""
    from .models import expected_calibration_error

    pred = est.predict(Z)
    proba = est.predict_proba(Z)
    logp = est.predict_log_proba(Z)
    known = np.isin(y, est.classes_)
    idx = np.searchsorted(est.classes_, y[known])
    ll = float(-np.mean(logp[known][np.arange(idx.size), idx])) if known.all() else float("inf")
    ece, bins = expected_calibration_error(y, proba, est.classes_, n_bins=ECE_BINS)
    return {"accuracy": float(np.mean(pred == y)), "log_loss": ll, "ece": ece}, pred, bins


def cmd_fit(args, out, err) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import confusion_matrix
    from sklearn.preprocessing import StandardScaler

    from .models import SoftmaxRegression, save_model

    ds = load_data(args.data, args.target)
    classes, counts = np.unique(ds.y, return_counts=True)
    if classes.size < 2:
        raise DataError(
            f"{ds.name}: the target column {ds.target!r} has a single class "
            f"({classes[0].item()!r}); a classifier needs at least 2"
        )
    specs = loss_specs(args)
    X_tr, X_te, y_tr, y_te = _stratified_split(ds.X, ds.y, args.test_size, args.seed)
    scaler = StandardScaler().fit(X_tr)
    Z_tr, Z_te = scaler.transform(X_tr), scaler.transform(X_te)

    out_dir = Path(args.out)
    try:
        (out_dir / "models").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{PROG} fit: error: cannot create --out {str(out_dir)!r}: {e.strerror}") from None
    test_csv = out_dir / "test.csv"
    write_csv(test_csv, X_te, y_te, ds.feature_names, ds.target)

    err.print(
        f"[bold]{ds.name}[/]: {len(ds.y)} rows, {ds.X.shape[1]} features, {classes.size} classes "
        f"-> {len(y_tr)} train / {len(y_te)} test (stratified, seed {args.seed}); "
        f"features standardised on the training rows",
        soft_wrap=True,
    )
    rows, curves, reliability, confusions = [], {}, {}, {}
    progress = Progress(
        TextColumn("{task.description:<32}"), BarColumn(bar_width=30),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
        console=err, disable=args.quiet,
    )
    with progress:
        for spec in specs:
            task = progress.add_task(spec.label, total=None, info="starting")

            def on_iteration(i, objective, task=task):
                progress.update(task, completed=i, info=f"iteration {i:4d}  objective {objective:.6g}")

            est = SoftmaxRegression(
                spec.loss, C=args.C, label_smoothing=spec.label_smoothing, gamma=spec.gamma,
                class_weight=args.class_weight, max_iter=args.max_iter, tol=args.tol,
            )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                t0 = time.perf_counter()
                est.fit(Z_tr, y_tr, callback=on_iteration)
                seconds = time.perf_counter() - t0
            n_iter = int(est.n_iter_[0])
            progress.update(task, total=n_iter, completed=n_iter,
                            info=f"{n_iter} iterations, objective {est.objective_:.6g}")
            for w in caught:
                if issubclass(w.category, ConvergenceWarning):
                    progress.console.print(f"[yellow]warning:[/] {spec.label}: {w.message}")
            metrics, pred, bins = _evaluate(est, Z_te, y_te)
            metrics.update(fit_seconds=seconds, n_iter=n_iter, converged=est.converged_,
                           train_objective=est.objective_)
            npz, sidecar = save_model(
                est, out_dir / "models" / spec.slug, feature_names=ds.feature_names,
                mean=scaler.mean_, scale=scaler.scale_, target=ds.target,
                extra={"data": ds.name, "test_size": args.test_size, "seed": args.seed,
                       "n_train": len(y_tr), "n_test": len(y_te), "test_metrics": metrics},
            )
            rows.append({"name": spec.label, "loss": spec.loss, "label_smoothing": spec.label_smoothing,
                         "gamma": spec.gamma if spec.loss == "focal" else None,
                         "model": npz, **metrics})
            curves[spec.label] = est.loss_curve_
            reliability[spec.label] = (metrics["ece"], bins)
            confusions[spec.label] = (confusion_matrix(y_te, pred, labels=est.classes_), metrics["accuracy"])

    table = Table(
        title=f"{ds.name}: test-set results ({len(y_te)} rows), C = {args.C:g}; "
        f"ECE with {ECE_BINS} bins", title_justify="left",
    )
    for col in ("loss", "iterations", "fit time", "accuracy", "log-loss", "ECE"):
        table.add_column(col, justify="left" if col == "loss" else "right", no_wrap=True)
    for r in rows:
        it = f"{r['n_iter']}" + ("" if r["converged"] else " (not converged)")
        table.add_row(r["name"], it, f"{r['fit_seconds']:.2f} s", f"{100 * r['accuracy']:.2f}%",
                      f"{r['log_loss']:.4f}", f"{r['ece']:.4f}")
    out.print(table)

    plots = []
    if not args.no_plots:
        from . import _plots

        title = f"{ds.name}: {len(y_tr)} training rows"
        plots.append(_plots.loss_curves(curves, out_dir / "loss_curves.png",
                                        title=f"Training loss, {title}"))
        test_title = f"{ds.name}: {len(y_te)} test rows"
        plots.append(_plots.reliability_diagrams(
            reliability, out_dir / "reliability.png",
            title=f"Reliability diagrams ({ECE_BINS} bins), {test_title}"))
        plots.append(_plots.confusion_matrices(
            confusions, [c.item() for c in classes], out_dir / "confusion_matrix.png",
            title=f"Confusion matrices, {test_title}"))
    results = {
        "data": ds.name, "target": ds.target, "n_train": len(y_tr), "n_test": len(y_te),
        "n_features": ds.X.shape[1], "classes": [c.item() for c in classes], "C": args.C,
        "test_size": args.test_size, "seed": args.seed, "test_data": str(test_csv),
        "plots": plots, "models": rows,
    }
    with open(out_dir / "results.json", "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2)
        fh.write("\n")
    if plots:
        out.print(f"Plots:   {', '.join(plots)}", soft_wrap=True)
    out.print(f"Models:  {out_dir / 'models'}/ (.npz + .json; apply one with "
              f"'{PROG} predict {rows[0]['model']} {test_csv}')", soft_wrap=True)
    out.print(f"Results: {out_dir / 'results.json'}; held-out rows: {test_csv}", soft_wrap=True)
    return 0


# ---------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------


def cmd_predict(args, out, err) -> int:
    from rich.table import Table

    from .models import load_model

    if not os.path.exists(args.model):
        raise DataError(f"{args.model}: no such model file")
    try:
        model = load_model(args.model)
    except (ValueError, KeyError, OSError, TypeError) as e:
        raise DataError(str(e).splitlines()[0]) from None
    target = args.target or model.meta.get("target")
    ds = load_data(args.data, target, features=model.feature_names, require_target=args.target is not None)
    est = model.estimator
    Z = model.transform(ds.X)
    pred = est.predict(Z)
    proba = est.predict_proba(Z)
    summary = {"model": args.model, "data": args.data, "rows": int(len(Z)),
               "loss": model.meta["params"]["loss"]}
    if ds.y is not None:
        metrics, _, _ = _evaluate(est, Z, ds.y)
        summary.update(metrics)
    if args.out:
        names = [f"p({c})" for c in est.classes_.tolist()]
        with open(args.out, "w", newline="", encoding="utf-8") as fh:
            import csv

            w = csv.writer(fh)
            w.writerow(["prediction", *names])
            for label, p in zip(pred.tolist(), proba.tolist()):
                w.writerow([label, *map(repr, p)])
        summary["predictions"] = args.out
    if args.json:
        print(json.dumps(summary))
        return 0
    out.print(f"[bold]{args.model}[/] on [bold]{args.data}[/]", soft_wrap=True)
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("rows", str(summary["rows"]))
    if "accuracy" in summary:
        table.add_row("accuracy", f"{100 * summary['accuracy']:.2f}%")
        table.add_row("log-loss", f"{summary['log_loss']:.4f}")
        table.add_row("ECE", f"{summary['ece']:.4f}")
    if args.out:
        table.add_row("predictions", args.out)
    out.print(table)
    if not args.out and "accuracy" not in summary:
        err.print("No target column in DATA and no --out FILE: nothing to report beyond the row count.")
    return 0


# ---------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------


def _check_cases():
    """(name, function, args, kwargs, torch reference or None). The reference
    takes torch float64 tensors (the first requires grad) and returns the value."""
    import crossentropy as ce

    rng = np.random.default_rng(20240601)
    N, C = 6, 5
    x = 2 * rng.normal(size=(N, C))
    y = rng.integers(0, C, size=N)
    y_ign = y.copy()
    y_ign[[1, 4]] = -100
    w = rng.uniform(0.5, 2.0, size=C)
    probs = ce.softmax(rng.normal(size=(N, C)), axis=1)
    q = ce.softmax(rng.normal(size=(N, C)), axis=1)
    x3 = rng.normal(size=(3, C, 2))
    y3 = rng.integers(0, C, size=(3, 2))
    xb = 2 * rng.normal(size=(N, 3))
    tb = (rng.uniform(size=(N, 3)) < 0.5).astype(float)
    ts = rng.uniform(size=(N, 3))
    pb = rng.uniform(0.1, 0.9, size=(N, 3))
    wb = rng.uniform(0.5, 2.0, size=(N, 3))
    pw = rng.uniform(0.5, 3.0, size=3)

    def focal_ref(F, t, xx, yy, gamma, weight=None, eps=0.0):
        logp = F.log_softmax(xx, dim=1)
        a = F.one_hot(t.as_tensor(yy), C).to(xx.dtype) * (1 - eps) + eps / C
        wt = t.ones(C, dtype=xx.dtype) if weight is None else t.as_tensor(weight)
        rows = -(a * wt * (1 - logp.exp()) ** gamma * logp).sum(1)
        return rows.sum() / wt[t.as_tensor(yy)].sum()

    def sfl_ref(F, t, xx, tt, alpha, gamma):
        tt = t.as_tensor(tt)
        p = t.sigmoid(xx)
        loss = F.binary_cross_entropy_with_logits(xx, tt, reduction="none")
        loss = loss * (1 - (p * tt + (1 - p) * (1 - tt))) ** gamma
        if alpha >= 0:
            loss = loss * (alpha * tt + (1 - alpha) * (1 - tt))
        return loss.mean()

    def kl_ref(t, pp, qq):
        return (pp * (pp.log() - t.as_tensor(qq).log())).sum(-1)

    def js_ref(t, pp, qq):
        qq = t.as_tensor(qq)
        m = (pp + qq) / 2
        return ((pp * (pp / m).log()).sum(-1) + (qq * (qq / m).log()).sum(-1)) / 2

    return [
        ("cross_entropy", ce.cross_entropy, (x, y), {},
         lambda F, t, a, b: F.cross_entropy(a, t.as_tensor(b))),
        ("cross_entropy, label_smoothing=0.1", ce.cross_entropy, (x, y), {"label_smoothing": 0.1},
         lambda F, t, a, b: F.cross_entropy(a, t.as_tensor(b), label_smoothing=0.1)),
        ("cross_entropy, weight, ignore_index", ce.cross_entropy, (x, y_ign), {"weight": w},
         lambda F, t, a, b: F.cross_entropy(a, t.as_tensor(b), weight=t.as_tensor(w))),
        ("cross_entropy, weight, smoothing 0.2", ce.cross_entropy, (x, y),
         {"weight": w, "label_smoothing": 0.2},
         lambda F, t, a, b: F.cross_entropy(a, t.as_tensor(b), weight=t.as_tensor(w), label_smoothing=0.2)),
        ("cross_entropy, probability targets", ce.cross_entropy, (x, probs), {},
         lambda F, t, a, b: F.cross_entropy(a, t.as_tensor(b))),
        ("cross_entropy, (N, C, d), sum", ce.cross_entropy, (x3, y3), {"reduction": "sum"},
         lambda F, t, a, b: F.cross_entropy(a, t.as_tensor(b), reduction="sum")),
        ("cross_entropy, z_loss=0.01", ce.cross_entropy, (x, y), {"z_loss": 0.01},
         lambda F, t, a, b: F.cross_entropy(a, t.as_tensor(b)) + 0.01 * (t.logsumexp(a, 1) ** 2).mean()),
        ("cross_entropy, softcap=3", ce.cross_entropy, (x, y), {"softcap": 3.0},
         lambda F, t, a, b: F.cross_entropy(3.0 * t.tanh(a / 3.0), t.as_tensor(b))),
        ("nll_loss, weight", ce.nll_loss, (x, y), {"weight": w},
         lambda F, t, a, b: F.nll_loss(a, t.as_tensor(b), weight=t.as_tensor(w))),
        ("focal_loss, gamma=2", ce.focal_loss, (x, y), {"gamma": 2.0},
         lambda F, t, a, b: focal_ref(F, t, a, b, 2.0)),
        ("focal_loss, gamma=0.5, weight, smoothing", ce.focal_loss, (x, y),
         {"gamma": 0.5, "weight": w, "label_smoothing": 0.1},
         lambda F, t, a, b: focal_ref(F, t, a, b, 0.5, w, 0.1)),
        ("binary_cross_entropy, weight", ce.binary_cross_entropy, (pb, tb), {"weight": wb},
         lambda F, t, a, b: F.binary_cross_entropy(a, t.as_tensor(b), weight=t.as_tensor(wb))),
        ("binary_cross_entropy_with_logits", ce.binary_cross_entropy_with_logits, (xb, ts),
         {"weight": wb, "pos_weight": pw},
         lambda F, t, a, b: F.binary_cross_entropy_with_logits(
             a, t.as_tensor(b), weight=t.as_tensor(wb), pos_weight=t.as_tensor(pw))),
        ("sigmoid_focal_loss, alpha=0.25, gamma=2", ce.sigmoid_focal_loss, (xb, tb),
         {"alpha": 0.25, "gamma": 2.0, "reduction": "mean"},
         lambda F, t, a, b: sfl_ref(F, t, a, b, 0.25, 2.0)),
        ("sigmoid_focal_loss, no alpha, gamma=0.5, soft", ce.sigmoid_focal_loss, (xb, ts),
         {"alpha": -1.0, "gamma": 0.5, "reduction": "mean"},
         lambda F, t, a, b: sfl_ref(F, t, a, b, -1.0, 0.5)),
        ("entropy", ce.entropy, (probs,), {},
         lambda F, t, a: -(a * a.log()).sum(-1)),
        ("kl_divergence", ce.kl_divergence, (probs, q), {},
         lambda F, t, a, b: kl_ref(t, a, b)),
        ("js_divergence", ce.js_divergence, (probs, q), {},
         lambda F, t, a, b: js_ref(t, a, b)),
        ("kl_div, batchmean", ce.kl_div, (np.log(q), probs), {"reduction": "batchmean"},
         lambda F, t, a, b: F.kl_div(a, t.as_tensor(b), reduction="batchmean")),
        ("kl_div, log_target, sum", ce.kl_div, (np.log(q), np.log(probs)),
         {"reduction": "sum", "log_target": True},
         lambda F, t, a, b: F.kl_div(a, t.as_tensor(b), reduction="sum", log_target=True)),
    ]


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b), initial=0.0) / max(1.0, float(np.max(np.abs(b), initial=0.0))))


def run_checks():
    """One dict per case: name, fd (relative FD error), torch_value, torch_grad (or None)."""
    from .gradcheck import check_grad

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = F = None
    results = []
    for name, fn, args, kwargs, ref in _check_cases():
        fd = check_grad(fn, *args, **kwargs).max_rel_error
        row = {"name": name, "fd": fd, "torch_value": None, "torch_grad": None}
        if torch is not None:
            value, grad = fn.value_and_grad(*args, **kwargs)
            g = None
            if np.ndim(value) > 0:
                g = np.random.default_rng(1).uniform(0.5, 1.5, size=np.shape(value))
                value, grad = fn.value_and_grad(*args, grad_output=g, **kwargs)
            xt = torch.tensor(args[0], dtype=torch.float64, requires_grad=True)
            vt = ref(F, torch, xt, *args[1:])
            vt.backward(None if g is None else torch.as_tensor(g))
            row["torch_value"] = _rel(value, vt.detach().numpy())
            row["torch_grad"] = _rel(grad, xt.grad.numpy())
        results.append(row)
    return results, torch is not None


def cmd_check(args, out, err) -> int:
    from rich.table import Table

    results, have_torch = run_checks()
    table = Table(
        title=f"Analytic gradients, largest relative difference (tolerance: {args.fd_tol:g} "
        f"vs finite differences, {args.torch_tol:g} vs torch)", title_justify="left",
    )
    table.add_column("loss", no_wrap=True)
    table.add_column("vs FD", justify="right")
    table.add_column("torch value", justify="right")
    table.add_column("torch grad", justify="right")
    table.add_column("ok", justify="center")
    failures = 0

    def cell(v, tol):
        if v is None:
            return "-", True
        ok = v <= tol
        return (f"{v:.1e}" if ok else f"[red]{v:.1e}[/]"), ok

    for r in results:
        a, ok1 = cell(r["fd"], args.fd_tol)
        b, ok2 = cell(r["torch_value"], args.torch_tol)
        c, ok3 = cell(r["torch_grad"], args.torch_tol)
        ok = ok1 and ok2 and ok3
        failures += not ok
        table.add_row(r["name"], a, b, c, "[green]yes[/]" if ok else "[red]NO[/]")
    out.print(table)
    if not have_torch:
        out.print("torch is not installed: compared with finite differences only.")
    if failures:
        err.print(f"[red]{failures} of {len(results)} checks exceed their tolerance[/]")
        return 1
    out.print(f"All {len(results)} checks within tolerance.")
    return 0


# ---------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------


def find_benchmarks():
    """The ``benchmarks`` directory of the source checkout this package runs from, or None."""
    root = Path(__file__).resolve().parents[2]
    d = root / "benchmarks"
    return d if d.is_dir() and (root / "pyproject.toml").exists() else None


def cmd_bench(args, out, err) -> int:
    d = Path(args.dir) if args.dir else find_benchmarks()
    if args.dir and not d.is_dir():
        raise DataError(f"{args.dir}: no such directory")
    if d is None:
        out.print("No benchmarks directory: 'crossentropy bench' runs the scripts in benchmarks/ of a "
                  "source checkout (pip install -e .), and this installation has none. "
                  "Use --dir DIR to point at one.")
        return 0
    scripts = sorted(p for p in d.glob("*.py") if not p.name.startswith("_"))
    if not scripts:
        out.print(f"No benchmark scripts in {d}: nothing to run.")
        return 0
    failed = []
    for script in scripts:
        out.rule(f"{script.name} --quick")
        sys.stdout.flush()
        try:
            proc = subprocess.run([sys.executable, str(script), "--quick"], cwd=d.parent,
                                  timeout=args.timeout)
            if proc.returncode != 0:
                failed.append(f"{script.name} (exit {proc.returncode})")
        except subprocess.TimeoutExpired:
            failed.append(f"{script.name} (timed out after {args.timeout:g} s)")
    if failed:
        err.print(f"[red]failed:[/] {', '.join(failed)}")
        return 1
    return 0


# ---------------------------------------------------------------------------


COMMANDS = {"fit": cmd_fit, "predict": cmd_predict, "check": cmd_check, "bench": cmd_bench}


def main(argv=None) -> int:
    """Entry point of the ``crossentropy`` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError(f"{PROG}: error: choose a command: {', '.join(COMMANDS)} "
                             f"(see {PROG} --help)")
        from rich.console import Console

        # rich falls back to 80 columns off a terminal, which wraps the tables: use 120 there.
        out = Console(width=None if sys.stdout.isatty() else 120)
        err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
        return COMMANDS[args.command](args, out, err)
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return 2
    except DataError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"{PROG}: error: {e.name or e} is not installed; "
              f"install the command's extras with: pip install 'crossentropy[cli]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
