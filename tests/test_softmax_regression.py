"""SoftmaxRegression: scikit-learn compatibility, LogisticRegression's optimum,
the focal and smoothed objectives, and errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

import scipy.sparse as sp  # noqa: E402
from scipy.optimize import approx_fprime  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from crossentropy.models import SoftmaxRegression  # noqa: E402

DATASETS = {
    "iris": load_iris,
    "wine": load_wine,
    "breast_cancer": load_breast_cancer,
    "digits": load_digits,
}


def standardised(name):
    X, y = DATASETS[name](return_X_y=True)
    return StandardScaler().fit_transform(X), y


# ---------------------------------------------------------------------------
# scikit-learn's own estimator checks
# ---------------------------------------------------------------------------


@parametrize_with_checks([SoftmaxRegression(), SoftmaxRegression(loss="focal", label_smoothing=0.1)])
def test_sklearn_check_estimator(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------
# the optimum of LogisticRegression
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DATASETS))
def test_training_log_loss_matches_logistic_regression(name):
    X, y = standardised(name)
    ours = SoftmaxRegression(C=1.0).fit(X, y)
    # LogisticRegression's optimum: its default tol=1e-4 stops short of it (by
    # 1e-3 relative in log-loss on digits), so converge it fully.
    with threadpool_limits(1, "blas"):
        ref = LogisticRegression(C=1.0, max_iter=10_000, tol=1e-10).fit(X, y)
    a = log_loss(y, ours.predict_proba(X))
    b = log_loss(y, ref.predict_proba(X))
    assert abs(a - b) <= 1e-4 * b, (name, a, b)
    n = len(y)  # and the objectives agree far more closely
    J = lambda m, ll: ll + 0.5 / n * np.sum(m.coef_**2)  # noqa: E731
    assert J(ours, a) == pytest.approx(J(ref, b), rel=1e-6)
    assert ours.coef_.shape == ref.coef_.shape
    assert ours.intercept_.shape == ref.intercept_.shape
    assert ours.converged_
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=5e-3)
    assert np.mean(ours.predict(X) == ref.predict(X)) > 0.99


def test_weighted_and_strongly_penalised_fit_matches_logistic_regression():
    X, y = standardised("wine")
    sw = np.random.default_rng(0).uniform(0.2, 3.0, size=len(y))
    kw = dict(C=0.05, class_weight="balanced")
    ours = SoftmaxRegression(**kw).fit(X, y, sample_weight=sw)
    ref = LogisticRegression(**kw, max_iter=10_000, tol=1e-10).fit(X, y, sample_weight=sw)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-5)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=1e-5)


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("workers", [1, 3])
def test_blocks_of_rows_and_workers_reach_logistic_regressions_optimum(monkeypatch, binary, workers):
    """A table of several blocks of rows (the objective sums their pieces),
    shared out among one or three workers, weighted: LogisticRegression's optimum."""
    import crossentropy.models.softmax_regression as module

    rng = np.random.default_rng(3)
    n = 2 * module._BLOCK_ROWS + 123
    X = rng.standard_normal((n, 5))
    y = (X @ rng.standard_normal((5, 2 if binary else 4))).argmax(axis=1) + rng.integers(0, 2, n)
    sw = rng.uniform(0.5, 2.0, n)
    monkeypatch.setattr(module, "_blas_threads", lambda: workers)
    ours = SoftmaxRegression(tol=1e-10).fit(X, y, sample_weight=sw)
    with threadpool_limits(1, "blas"):
        ref = LogisticRegression(max_iter=10_000, tol=1e-10).fit(X, y, sample_weight=sw)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-6)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=1e-6)
    monkeypatch.setattr(module, "_BLOCK_ROWS", 10 * n)  # one block: the same fit
    whole = SoftmaxRegression(tol=1e-10).fit(X, y, sample_weight=sw)
    np.testing.assert_allclose(ours.coef_, whole.coef_, atol=1e-8)


@pytest.mark.parametrize("params", [dict(), dict(label_smoothing=0.1), dict(loss="focal", gamma=2.0),
                                    dict(loss="focal", gamma=0.5, label_smoothing=0.2)])
def test_the_fit_without_compiled_kernels_is_the_same_fit(monkeypatch, params):
    """Without numba (``CROSSENTROPY_CPU_KERNELS=0``: the losses' NumPy core
    instead of the compiled class-first kernels) every loss reaches the same
    coefficients and objective, over several blocks of rows."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((3000, 6))
    y = (X @ rng.standard_normal((6, 4))).argmax(axis=1)
    y[rng.random(3000) < 0.2] = rng.integers(0, 4, 3000)[:1]
    import crossentropy.models.softmax_regression as module

    monkeypatch.setattr(module, "_BLOCK_ROWS", 700)  # five blocks
    compiled = SoftmaxRegression(tol=1e-10, **params).fit(X, y)
    monkeypatch.setenv("CROSSENTROPY_CPU_KERNELS", "0")
    core = SoftmaxRegression(tol=1e-10, **params).fit(X, y)
    np.testing.assert_allclose(compiled.coef_, core.coef_, atol=1e-8)
    np.testing.assert_allclose(compiled.objective_, core.objective_, rtol=1e-12)


def test_class_weight_dict_equals_sample_weight():
    X, y = standardised("iris")
    cw = {0: 1.0, 1: 3.0, 2: 0.5}
    a = SoftmaxRegression(class_weight=cw, tol=1e-10).fit(X, y)
    b = SoftmaxRegression(tol=1e-10).fit(X, y, sample_weight=np.array([cw[c] for c in y]))
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-7)


def test_binary_uses_the_sigmoid_form():
    X, y = standardised("breast_cancer")
    clf = SoftmaxRegression().fit(X, y)
    assert clf.coef_.shape == (1, X.shape[1]) and clf.intercept_.shape == (1,)
    z = clf.decision_function(X)
    assert z.shape == (len(y),)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-z)), rtol=1e-12)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, rtol=1e-10)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[(z > 0).astype(int)])


def test_string_labels_and_sparse_input():
    X, y = standardised("iris")
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    dense = SoftmaxRegression().fit(X, names)
    assert list(dense.classes_) == ["setosa", "versicolor", "virginica"]
    sparse = SoftmaxRegression().fit(sp.csr_matrix(X), names)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, atol=1e-8)
    np.testing.assert_array_equal(sparse.predict(sp.csr_matrix(X)), dense.predict(X))


# ---------------------------------------------------------------------------
# the other losses reach a stationary point of their own objective
# ---------------------------------------------------------------------------


def _objective_numpy(theta, X, y, K, loss, e, gamma, C):
    """The objective written out independently in plain NumPy."""
    n, d = X.shape
    k = 1 if K == 2 else K
    Wb = theta.reshape(k, d + 1)
    Z = X @ Wb[:, :d].T + Wb[:, d]
    if K == 2:
        t = (1 - e) * y + e / 2
        p = 1 / (1 + np.exp(-Z[:, 0]))
        ce = -(t * np.log(p) + (1 - t) * np.log1p(-p))
        pt = p * t + (1 - p) * (1 - t)
        rows = ce if loss == "cross_entropy" else (1 - pt) ** gamma * ce
    else:
        logp = Z - np.log(np.exp(Z).sum(1, keepdims=True))
        a = (1 - e) * np.eye(K)[y] + e / K
        focus = 1.0 if loss == "cross_entropy" else (1 - np.exp(logp)) ** gamma
        rows = -(a * focus * logp).sum(1)
    return rows.mean() + 0.5 / (C * n) * np.sum(Wb[:, :d] ** 2)


@pytest.mark.parametrize(
    "name,loss,e,gamma",
    [
        ("iris", "focal", 0.0, 2.0),
        ("iris", "focal", 0.1, 0.5),
        ("iris", "cross_entropy", 0.1, 2.0),
        ("breast_cancer", "focal", 0.0, 2.0),
        ("breast_cancer", "cross_entropy", 0.2, 2.0),
    ],
)
def test_fit_is_a_stationary_point_of_the_objective(name, loss, e, gamma):
    X, y = standardised(name)
    X = X[:, :6]
    K = np.unique(y).size
    clf = SoftmaxRegression(loss, label_smoothing=e, gamma=gamma, C=0.5, tol=1e-9).fit(X, y)
    theta = np.column_stack([clf.coef_, clf.intercept_]).ravel()
    f = lambda th: _objective_numpy(th, X, y, K, loss, e, gamma, 0.5)  # noqa: E731
    assert f(theta) == pytest.approx(clf.objective_, rel=1e-10)
    grad = approx_fprime(theta, f, 1e-7)
    assert np.max(np.abs(grad)) < 1e-6
    # and the curve is the objective along the way, decreasing to it
    curve = np.asarray(clf.loss_curve_)
    assert curve[-1] == pytest.approx(clf.objective_) and np.all(np.diff(curve) <= 1e-12)


def test_focal_with_gamma_0_is_cross_entropy():
    X, y = standardised("wine")
    a = SoftmaxRegression("focal", gamma=0.0, tol=1e-10).fit(X, y)
    b = SoftmaxRegression("cross_entropy", tol=1e-10).fit(X, y)
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-7)


def test_label_smoothing_lowers_confidence():
    X, y = standardised("digits")
    X, y = X[:400], y[:400]
    plain = SoftmaxRegression().fit(X, y).predict_proba(X).max(1).mean()
    smooth = SoftmaxRegression(label_smoothing=0.2).fit(X, y).predict_proba(X).max(1).mean()
    assert smooth < plain - 0.05


def test_callback_and_convergence_warning():
    X, y = standardised("digits")
    seen = []
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        clf = SoftmaxRegression(max_iter=3).fit(X, y, callback=lambda i, f: seen.append((i, f)))
    assert [i for i, _ in seen] == [1, 2, 3]
    assert clf.n_iter_.tolist() == [3] and not clf.converged_
    assert [f for _, f in seen] == clf.loss_curve_[1:]


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

X4 = np.random.default_rng(0).normal(size=(8, 3))
Y4 = np.array([0, 1] * 4)


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: SoftmaxRegression().fit(X4, np.zeros(8)), ValueError, "only one class"),
        (lambda: SoftmaxRegression().fit(np.where(X4 > 1, np.nan, X4), Y4), ValueError, "NaN"),
        (lambda: SoftmaxRegression().fit(np.where(X4 > 1, np.inf, X4), Y4), ValueError, "infinity"),
        (lambda: SoftmaxRegression().fit([["a", 1.0]] * 8, Y4), ValueError, "numeric features.*strings"),
        (lambda: SoftmaxRegression().fit(X4, Y4[:7]), ValueError, "inconsistent numbers of samples"),
        (lambda: SoftmaxRegression(loss="hinge").fit(X4, Y4), ValueError, "loss='hinge' is not one of"),
        (lambda: SoftmaxRegression(C=0.0).fit(X4, Y4), ValueError, "C=0.0 must be > 0"),
        (lambda: SoftmaxRegression(label_smoothing=1.0).fit(X4, Y4), ValueError, "label_smoothing"),
        (lambda: SoftmaxRegression(gamma=-1).fit(X4, Y4), ValueError, "gamma"),
        (lambda: SoftmaxRegression().fit(X4, Y4, sample_weight=-np.ones(8)), ValueError, "negative"),
        (lambda: SoftmaxRegression().fit(X4, Y4, sample_weight=np.ones(3)), ValueError, "sample_weight"),
        (lambda: SoftmaxRegression().fit(X4, np.linspace(0, 1, 8)), ValueError, "Unknown label type"),
    ],
    ids=["one-class", "nan", "inf", "strings", "lengths", "loss", "C", "smoothing", "gamma",
         "negative-weight", "weight-shape", "continuous"],
)
def test_clear_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()
