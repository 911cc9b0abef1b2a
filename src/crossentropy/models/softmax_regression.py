r"""Maximum-likelihood linear classifiers fitted with any loss of the family.

:class:`SoftmaxRegression` is multinomial logistic regression (a softmax model
for three or more classes, a logistic model for two) whose negative
log-likelihood is one of this library's losses, minimised with SciPy's
L-BFGS-B on the loss's own analytic gradient — no autograd anywhere. With
``loss="cross_entropy"`` it is scikit-learn's ``LogisticRegression`` (same
objective, same optimum); ``loss="focal"`` and ``label_smoothing`` give the
focal and label-smoothed variants of the same model.

The objective, with per-sample weights :math:`s_i` (``sample_weight`` times
``class_weight``), :math:`S = \sum_i s_i`, and logits
:math:`z_i = W x_i + b`, is

.. math:: J(W, b) = \frac{1}{S}\sum_i s_i\,\ell(z_i, y_i)
    + \frac{1}{2\,C\,S}\,\lVert W\rVert_F^2,

which is scikit-learn's ``C \sum_i s_i \ell_i + \tfrac12\lVert W\rVert^2``
divided by :math:`C S`: the same minimiser, on a scale that does not grow
with the data. The intercept is not penalised. The gradient is
:math:`\partial J/\partial W = G^\top X + W/(CS)` and
:math:`\partial J/\partial b = \sum_i G_i`, where :math:`G` is the loss's
vector-Jacobian product with ``grad_output = s / S``.

This module needs the ``cli`` extra (scikit-learn, SciPy); ``import
crossentropy`` does not import it.
"""

from __future__ import annotations

import numbers
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_info, threadpool_limits

import crossentropy as ce

from ._row_loss import LOSSES, row_loss
from ._validation import check_real, check_sample_weight, label

__all__ = ["SoftmaxRegression", "LOSSES"]

_SMALL_PRODUCT = 10_000_000  # n * d * k below which fit runs BLAS on one thread
_BLOCK_ROWS = 8192  # rows whose logits and gradient a block holds: 0.6 MiB at 10 classes
_BLOCK_LOGITS = 1 << 17  # at most this many logits a block (1 MiB): the loss runs each block on one thread


def _blas_threads():
    """The BLAS thread count in force (threadpoolctl's, which a caller's
    ``threadpool_limits`` lowers), or the CPU count when no BLAS reports one."""
    counts = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(counts) if counts else (os.cpu_count() or 1)


class SoftmaxRegression(ClassifierMixin, BaseEstimator):
    r"""Linear classifier fitted by (penalised) maximum likelihood with a loss of
    the cross-entropy family.

    Three or more classes use the softmax model with one coefficient row per
    class; two classes use the logistic (sigmoid) model with one row, as
    scikit-learn's ``LogisticRegression`` does.

    ============================  =================================================
    ``loss``                      per-sample loss of the logits
    ============================  =================================================
    ``"cross_entropy"``, K > 2    :func:`~crossentropy.cross_entropy` with
                                  ``label_smoothing`` (targets
                                  :math:`(1-\varepsilon)\,\mathrm{onehot} + \varepsilon/K`)
    ``"cross_entropy"``, K = 2    :func:`~crossentropy.binary_cross_entropy_with_logits`
                                  on targets :math:`(1-\varepsilon)y + \varepsilon/2`
    ``"focal"``, K > 2            :func:`~crossentropy.focal_loss` with ``gamma``
                                  and ``label_smoothing``
    ``"focal"``, K = 2            :func:`~crossentropy.sigmoid_focal_loss` with
                                  ``alpha=-1`` (no alpha weighting), ``gamma``, on
                                  the same smoothed targets
    ============================  =================================================

    Parameters
    ----------
    loss : {"cross_entropy", "focal"}, default="cross_entropy"
    C : float > 0, default=1.0
        Inverse L2 strength on the coefficients (not the intercept), with
        scikit-learn's meaning: with ``loss="cross_entropy"`` and no smoothing
        the fit reaches ``LogisticRegression(C=C)``'s optimum. ``np.inf`` turns
        the penalty off.
    label_smoothing : float in [0, 1), default=0.0
    gamma : float >= 0, default=2.0
        Focusing exponent of the focal loss (unused by ``cross_entropy``;
        ``gamma=0`` *is* cross-entropy).
    class_weight : dict, "balanced" or None, default=None
        Multiplies each sample's weight by its class's weight, as in
        scikit-learn (``"balanced"``: ``n_samples / (n_classes * count)``).
    fit_intercept : bool, default=True
    max_iter : int >= 1, default=1000
        Most L-BFGS-B iterations.
    tol : float > 0, default=1e-6
        L-BFGS-B's ``gtol``: stop when the largest gradient entry falls below it.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (1, n_features) for two classes, else (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    n_iter_ : ndarray of shape (1,)
        L-BFGS-B iterations run (as ``LogisticRegression``).
    n_features_in_ : int
    loss_curve_ : list of float
        The objective :math:`J` before the first iteration and after each one.
    objective_ : float
        The final objective.
    converged_ : bool

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = SoftmaxRegression(loss="focal", gamma=2.0).fit(X, y)
    >>> clf.coef_.shape, clf.predict_proba(X[:2]).shape
    ((3, 4), (2, 3))
    >>> clf.score(X, y) > 0.95
    True
    """

    def __init__(
        self,
        loss="cross_entropy",
        *,
        C=1.0,
        label_smoothing=0.0,
        gamma=2.0,
        class_weight=None,
        fit_intercept=True,
        max_iter=1000,
        tol=1e-6,
    ):
        self.loss = loss
        self.C = C
        self.label_smoothing = label_smoothing
        self.gamma = gamma
        self.class_weight = class_weight
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol

    # ------------------------------------------------------------------ checks

    def _check_params(self):
        if not isinstance(self.loss, str) or self.loss not in LOSSES:
            raise ValueError(
                f"loss={self.loss!r} is not one of {', '.join(map(repr, LOSSES))}"
            )
        check_real("C", self.C, low=0.0, low_open=True, allow_inf=True)
        check_real("label_smoothing", self.label_smoothing, low=0.0, high=1.0, high_open=True)
        check_real("gamma", self.gamma, low=0.0)
        check_real("tol", self.tol, low=0.0, low_open=True)
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, numbers.Integral):
            raise TypeError(f"max_iter={self.max_iter!r} must be an integer")
        if self.max_iter < 1:
            raise ValueError(f"max_iter={self.max_iter} must be >= 1")
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            raise TypeError(f"fit_intercept={self.fit_intercept!r} must be a bool")
        cw = self.class_weight
        if not (cw is None or cw == "balanced" or isinstance(cw, dict)):
            raise ValueError(f"class_weight={cw!r} must be a dict, 'balanced' or None")

    def _validate_X(self, X, y="no_validation", *, reset):
        kwargs = dict(accept_sparse=("csr", "csc"), dtype=np.float64, reset=reset)
        try:
            return validate_data(self, X, y, **kwargs)
        except ValueError as e:
            if "could not convert string to float" in str(e):
                raise ValueError(
                    f"{type(self).__name__} needs numeric features, but X holds strings "
                    f"({e}); encode them as numbers first (for example with "
                    "sklearn.preprocessing.OneHotEncoder)"
                ) from e
            raise

    # --------------------------------------------------------------------- fit

    def fit(self, X, y, sample_weight=None, *, callback=None):
        """Fit by maximum likelihood with L-BFGS-B.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), class labels (any type ``np.unique`` orders)
        sample_weight : array-like of shape (n_samples,), optional, non-negative
        callback : callable, optional
            ``callback(iteration, objective)`` after each L-BFGS-B iteration
            (for progress bars); not an estimator parameter, so it is not cloned.

        Returns
        -------
        self
        """
        self._check_params()
        X, y = self._validate_X(X, y, reset=True)
        check_classification_targets(y)
        classes, y_index = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes in y, but the data "
                f"contains only one class: {label(classes[0])!r}"
            )
        n, d = X.shape
        s = check_sample_weight(sample_weight, n)
        if self.class_weight is not None:
            cw = compute_class_weight(
                self.class_weight, classes=classes, y=y,
                sample_weight=None if sample_weight is None else s,
            )
            s = s * cw[y_index]
        S = float(s.sum())
        if not S > 0:
            raise ValueError(
                "the sample weights (times the class weights) are all zero; there is nothing to fit"
            )

        self.classes_ = classes
        binary = classes.size == 2
        k = 1 if binary else classes.size
        p = d + int(bool(self.fit_intercept))
        lam = 0.0 if np.isinf(self.C) else 1.0 / (float(self.C) * S)
        # The rows in blocks: each block's logits, loss and gradient in the
        # logits stay in cache across the loss's passes over them (one pass
        # each for the shift, exp, sums, ...), where whole-table arrays would
        # go to memory and back on every pass (BENCHMARKS.md, "Fitting a
        # table"). The blocks are shared out among the BLAS thread count's
        # workers (NumPy releases the GIL), each running one-thread BLAS.
        # The loss of a block that small runs on one thread (the compiled
        # kernels start a second thread from 2^17 logits), so the workers'
        # threads never share a core with the loss's own.
        step = max(64, min(_BLOCK_ROWS, _BLOCK_LOGITS // k))
        blocks = [(slice(a, a + step), row_loss(
            self.loss, binary=binary, y_index=y_index[a:a + step],
            label_smoothing=self.label_smoothing, gamma=self.gamma)) for a in range(0, n, step)]
        g_out = s / S
        workers = max(1, min(_blas_threads(), len(blocks)))
        shares = [blocks[i::workers] for i in range(workers)]

        def share_sums(share, W, b):
            """sum_i (s_i / S) l_i, G^T X and sum_i G_i over a share of the blocks."""
            value, gW, gb = 0.0, np.zeros((k, d)), np.zeros(k)
            for rows_of, rows in share:
                Xb = X[rows_of]
                # the logits with the class axis first, Z^T (k, n) C-contiguous:
                # the loss's compiled kernels then run along the rows, which
                # vectorises for any number of classes (X W^T and a transposed
                # copy is faster than W X^T in OpenBLAS)
                Zt = np.ascontiguousarray(np.asarray(Xb @ W.T).T)
                if b is not None:
                    Zt += b[:, None]
                loss, Gt = rows(Zt, g_out[rows_of])  # G = dJ/dZ: the loss's VJP with grad_output = s / S
                value += float(g_out[rows_of] @ loss)
                gW += np.asarray(Gt @ Xb)  # G^T X, (k, n) @ (n, d)
                gb += Gt.sum(axis=1)
            return value, gW, gb

        def objective(theta):
            Wb = theta.reshape(k, p)
            W = Wb[:, :d]
            b = Wb[:, d] if self.fit_intercept else None
            if workers == 1:
                parts = [share_sums(shares[0], W, b)]
            else:
                parts = list(pool.map(share_sums, shares, [W] * workers, [b] * workers))
            # J = sum_i (s_i / S) l_i + (lam / 2) ||W||^2,  lam = 1 / (C S);
            # dJ/dW = G^T X + lam W,  dJ/db = sum_i G_i (the intercept is not penalised)
            f = sum(part[0] for part in parts) + 0.5 * lam * float(np.vdot(W, W))
            grad = np.empty_like(Wb)
            grad[:, :d] = sum(part[1] for part in parts) + lam * W
            if self.fit_intercept:
                grad[:, d] = sum(part[2] for part in parts)
            return f, grad.ravel()

        theta0 = np.zeros(k * p)

        def on_iteration(intermediate_result):
            curve.append(float(intermediate_result.fun))
            if callback is not None:
                callback(len(curve) - 1, curve[-1])

        # Threaded BLAS only pays for large products: on small ones its threads
        # mostly wait for each other (10x slower on a busy 2-core machine); with
        # several workers each runs its blocks on one BLAS thread.
        small = n * d * k < _SMALL_PRODUCT
        with np.errstate(over="ignore", under="ignore"), \
                threadpool_limits(1 if small or workers > 1 else None, "blas"), \
                ThreadPoolExecutor(workers) as pool:
            curve = [objective(theta0)[0]]
            res = minimize(
                objective,
                theta0,
                method="L-BFGS-B",
                jac=True,
                callback=on_iteration,
                options={
                    "maxiter": int(self.max_iter),
                    "maxls": 50,
                    "gtol": float(self.tol),
                    "ftol": 64 * np.finfo(float).eps,
                },
            )
        if not np.all(np.isfinite(res.x)):  # pragma: no cover - defensive
            raise FloatingPointError("L-BFGS-B diverged to non-finite coefficients")
        self.converged_ = bool(res.status == 0)
        if not self.converged_:
            msg = res.message.decode() if isinstance(res.message, bytes) else str(res.message)
            warnings.warn(
                f"L-BFGS-B did not converge ({msg}) after {res.nit} iteration(s); "
                "raise max_iter, loosen tol or standardise the features",
                ConvergenceWarning,
                stacklevel=2,
            )
        Wb = res.x.reshape(k, p)
        self.coef_ = Wb[:, :d].copy()
        self.intercept_ = Wb[:, d].copy() if self.fit_intercept else np.zeros(k)
        self.n_iter_ = np.array([max(int(res.nit), 1)], dtype=np.int32)
        self.objective_ = float(res.fun)
        self.loss_curve_ = curve
        return self

    # ----------------------------------------------------------------- predict

    def decision_function(self, X):
        """Logits: shape (n_samples,) for two classes (the positive class's
        log-odds), else (n_samples, n_classes)."""
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        Z = np.asarray(X @ self.coef_.T) + self.intercept_
        return Z[:, 0] if Z.shape[1] == 1 else Z

    def predict(self, X):
        """The most probable class of each sample."""
        Z = self.decision_function(X)
        idx = (Z > 0).astype(np.intp) if Z.ndim == 1 else np.argmax(Z, axis=1)
        return self.classes_[idx]

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order."""
        Z = self.decision_function(X)
        if Z.ndim == 1:
            return np.column_stack([ce.sigmoid(-Z), ce.sigmoid(Z)])
        return ce.softmax(Z, axis=1)

    def predict_log_proba(self, X):
        """Log class probabilities, computed from the logits without ``log(0)``."""
        Z = self.decision_function(X)
        if Z.ndim == 1:
            return np.column_stack([ce.log_sigmoid(-Z), ce.log_sigmoid(Z)])
        return ce.log_softmax(Z, axis=1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags
