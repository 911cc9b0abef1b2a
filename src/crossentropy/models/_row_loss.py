"""The per-sample loss of :class:`~crossentropy.models.SoftmaxRegression` and
its gradient in the logits, taken from the library's losses (their
``value_and_grad``: one pass of exponentials gives both, no autograd)."""

from __future__ import annotations

import numpy as np

import crossentropy as ce

LOSSES = ("cross_entropy", "focal")


def row_loss(loss, *, binary, y_index, label_smoothing, gamma):
    """``(Zt, grad_output) -> (per-row loss, dJ/dZt)`` for ``loss`` (one of
    :data:`LOSSES`) on the class indices ``y_index``.

    ``Zt`` holds the logits with the class axis first: (1, n) for two classes
    (the positive class's log-odds), else (K, n); ``grad_output`` (n,) weighs
    each row's loss in ``dJ/dZt``, which has ``Zt``'s shape.
    """
    e = float(label_smoothing)
    gamma = float(gamma)
    if binary:
        # smoothed binary targets: t = (1 - e) y + e / 2
        t = y_index.astype(np.float64)
        if e > 0:
            t = (1 - e) * t + e / 2
        if loss == "cross_entropy":
            def vg(z, g):
                return ce.binary_cross_entropy_with_logits.value_and_grad(
                    z, t, reduction="none", grad_output=g
                )
        else:
            def vg(z, g):  # alpha=-1: no alpha weighting, the plain focal likelihood
                return ce.sigmoid_focal_loss.value_and_grad(
                    z, t, alpha=-1.0, gamma=gamma, reduction="none", grad_output=g
                )

        def binary_rows(Zt, g):
            value, grad = vg(Zt[0], g)
            return value, grad[None, :]

        return binary_rows
    target = y_index.astype(np.int64)
    if loss == "cross_entropy":
        def rows(Zt, g):
            return ce.cross_entropy.value_and_grad(
                Zt, target, reduction="none", label_smoothing=e, grad_output=g, axis=0
            )
    else:
        def rows(Zt, g):
            return ce.focal_loss.value_and_grad(
                Zt, target, gamma=gamma, reduction="none", label_smoothing=e, grad_output=g, axis=0
            )
    return rows
