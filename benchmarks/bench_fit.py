"""Fitting a 500k x 50, 10-class table: SoftmaxRegression per loss against one LogisticRegression(lbfgs) fit.

    python benchmarks/bench_fit.py            # 500,000 x 50, 10 classes (~3 min)
    python benchmarks/bench_fit.py --quick    # 50,000 x 50

The table is ``_tables.make_table`` (what ``bench_load.py`` writes as CSV),
standardised. Every fit runs in this process with the same BLAS and OpenMP
threads (``--threads``, default: all cores), the same ``C`` (1), gradient
tolerance ``--tol`` (default 1e-6, ``crossentropy fit``'s) and ``max_iter``;
scikit-learn's ``LogisticRegression`` minimises the same objective (its
mean loss plus ``||W||^2 / (2 C n)``), so the cross-entropy fit must land on
its optimum, which the last columns check. Each fit once (a fit is seconds,
and the machine is shared: rerun to see the spread), after one untimed warm-up
fit on a small slice.

Columns: seconds, L-BFGS iterations, loss-and-gradient evaluations
(``nfev``: the line search evaluates more than once on some iterations),
milliseconds per evaluation, and the time against LogisticRegression's.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

import _measure as m
import _tables


def fits(X, y, tol, max_iter):
    from sklearn.linear_model import LogisticRegression

    from crossentropy.models import SoftmaxRegression

    yield "LogisticRegression(lbfgs)", LogisticRegression(C=1.0, tol=tol, max_iter=max_iter)
    yield "SoftmaxRegression cross-entropy", SoftmaxRegression(tol=tol, max_iter=max_iter)
    yield "SoftmaxRegression cross-entropy, smoothing 0.1", SoftmaxRegression(
        label_smoothing=0.1, tol=tol, max_iter=max_iter)
    yield "SoftmaxRegression focal, gamma 2", SoftmaxRegression("focal", tol=tol, max_iter=max_iter)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="50,000 rows")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None, help="BLAS and OpenMP threads (default: all cores)")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    from scipy.optimize import _minimize  # noqa: F401  (imported before any timing)
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    n = args.rows or (50_000 if args.quick else 500_000)
    X, y = _tables.make_table(n)
    X = StandardScaler().fit_transform(X)
    print(f"{_tables.machine()}; {n} x {X.shape[1]}, {np.unique(y).size} classes, tol {args.tol:g}, "
          f"threads {args.threads or 'all'}")
    rows, reference = [], None
    with threadpool_limits(args.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fit that stops at max_iter is reported in the table
        for name, est in fits(X, y, args.tol, args.max_iter):
            est.set_params(max_iter=5).fit(X[:5000], y[:5000])  # warm-up: imports, thread pools
            est.set_params(max_iter=args.max_iter)
            evaluations = _count_evaluations(est)
            t0 = time.perf_counter()
            est.fit(X, y)
            seconds = time.perf_counter() - t0
            nfev = evaluations() or int(est.n_iter_[0])
            row = {"fit": name, "seconds": seconds, "n_iter": int(est.n_iter_[0]), "nfev": nfev,
                   "ms_per_eval": 1e3 * seconds / nfev}
            if reference is None:
                reference = est
            elif name.endswith("cross-entropy"):
                row["coef_diff"] = float(np.max(np.abs(est.coef_ - reference.coef_)))
                row["proba_diff"] = float(np.max(np.abs(est.predict_proba(X) - reference.predict_proba(X))))
            row["vs_lr"] = seconds / rows[0]["seconds"] if rows else 1.0
            rows.append(row)
            print(f"  {name}: {seconds:.2f} s", flush=True)
    print(m.table(rows, [("fit", "fit", "s"), ("seconds", "seconds", ".2f"), ("vs_lr", "/ LR", ".2f"),
                         ("n_iter", "iterations", "d"), ("nfev", "evaluations", "d"),
                         ("ms_per_eval", "ms / evaluation", ".0f"),
                         ("coef_diff", "max |coef - LR's|", ".1e"), ("proba_diff", "max |proba - LR's|", ".1e")]))


def _count_evaluations(est):
    """A function returning how many times SciPy's L-BFGS-B evaluated the
    objective during the next fit (None for an estimator it cannot see)."""
    import scipy.optimize

    calls = []
    original = getattr(scipy.optimize.minimize, "original", scipy.optimize.minimize)

    def counting(fun, x0, *a, **kw):
        res = original(fun, x0, *a, **kw)
        calls.append(int(res.nfev))
        return res

    counting.original = original
    import crossentropy.models.softmax_regression as sr_module

    # LogisticRegression calls scipy.optimize.minimize through the module, SoftmaxRegression by name
    scipy.optimize.minimize = sr_module.minimize = counting
    return lambda: calls[-1] if calls else None


if __name__ == "__main__":
    main()
