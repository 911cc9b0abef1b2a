"""``crossentropy fit``: fit one classifier per loss on standardised features,
compare them on a held-out test set, and write plots, models and results."""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .common import ECE_BINS, PROG, UsageError, evaluate
from .data import BUNDLED, DEFAULT_DATA, DataError, load_data, write_csv

__all__ = ["add_parser", "run", "LossSpec", "loss_specs"]


def add_parser(sub):
    """The ``fit`` subcommand and its options."""
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
    return f


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


def _standardise(X_tr, X_te, feature_names, source):
    """Standardise both sets in place with the training rows' mean and
    standard deviation; a DataError naming the first column whose statistics
    overflow float64 (values near 1e300: their squares are infinite)."""
    from sklearn.preprocessing import StandardScaler

    largest = np.max(np.abs(X_tr), axis=0)
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        scaler = StandardScaler(copy=False).fit(X_tr)
        # an infinite variance leaves scale_ at 1 (scikit-learn's guard for a zero one)
        bad = ~(np.isfinite(scaler.mean_) & np.isfinite(scaler.var_) & np.isfinite(scaler.scale_))
        if not bad.any():
            scaler.transform(X_tr)
            scaler.transform(X_te)
            bad = ~(np.isfinite(X_tr).all(axis=0) & np.isfinite(X_te).all(axis=0))
    if bad.any():
        j = int(np.argmax(bad))
        big = float(largest[j])
        raise DataError(
            f"{source}: feature column {feature_names[j]!r} cannot be standardised: its values "
            f"(up to {big:.3g} in magnitude) overflow float64's range in the variance; "
            "rescale the column (divide it by a power of ten) first")
    return scaler


def run(args, out, err) -> int:
    """``crossentropy fit``: returns the exit status."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import confusion_matrix

    from ..models import SoftmaxRegression, save_model
    from .common import progress_bar, reading

    out_dir = Path(args.out)
    progress = progress_bar(err, args.quiet)
    rows, curves, reliability, confusions = [], {}, {}, {}
    with progress:
        task, update = reading(progress, args.data)
        ds = load_data(args.data, args.target, progress=update)
        progress.update(task, info=f"{len(ds.X)} rows x {ds.X.shape[1]} features", total=1, completed=1)
        classes = np.unique(ds.y)
        if classes.size < 2:
            raise DataError(
                f"{ds.name}: the target column {ds.target!r} has a single class "
                f"({classes[0].item()!r}); a classifier needs at least 2"
            )
        specs = loss_specs(args)
        n_rows, n_features = ds.X.shape
        X_tr, X_te, y_tr, y_te = _stratified_split(ds.X, ds.y, args.test_size, args.seed)
        ds.X = None  # the split holds copies: free the table's array
        try:
            (out_dir / "models").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"{PROG} fit: error: cannot create --out {str(out_dir)!r}: {e.strerror}") from None
        test_csv = out_dir / "test.csv"
        write_csv(test_csv, X_te, y_te, ds.feature_names, ds.target)  # raw, before standardising
        scaler = _standardise(X_tr, X_te, ds.feature_names, ds.name)
        Z_tr, Z_te = X_tr, X_te
        if not progress.disable:  # what a person watching wants; a log has results.json
            progress.console.print(
                f"[bold]{ds.name}[/]: {n_rows} rows, {n_features} features, {classes.size} classes "
                f"-> {len(y_tr)} train / {len(y_te)} test (stratified, seed {args.seed}); "
                f"features standardised on the training rows",
                soft_wrap=True,
            )
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
                    err.print(f"[yellow]warning:[/] {spec.label}: {w.message}", soft_wrap=True)
            metrics, pred, bins = evaluate(est, Z_te, y_te)
            metrics.update(fit_seconds=seconds, n_iter=n_iter, converged=est.converged_,
                           train_objective=est.objective_)
            npz, _ = save_model(
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

    from rich.table import Table

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
        from .plots import confusion_matrices, loss_curves, reliability_diagrams

        title = f"{ds.name}: {len(y_tr)} training rows"
        plots.append(loss_curves(curves, out_dir / "loss_curves.png",
                                 title=f"Training loss, {title}"))
        test_title = f"{ds.name}: {len(y_te)} test rows"
        plots.append(reliability_diagrams(
            reliability, out_dir / "reliability.png",
            title=f"Reliability diagrams ({ECE_BINS} bins), {test_title}"))
        plots.append(confusion_matrices(
            confusions, [c.item() for c in classes], out_dir / "confusion_matrix.png",
            title=f"Confusion matrices, {test_title}"))
    results = {
        "data": ds.name, "target": ds.target, "n_train": len(y_tr), "n_test": len(y_te),
        "n_features": n_features, "classes": [c.item() for c in classes], "C": args.C,
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
