"""Calibration of predicted probabilities: the expected calibration error of
the top-label confidence, and the per-bin numbers a reliability diagram draws."""

from __future__ import annotations

import numpy as np

__all__ = ["expected_calibration_error"]


def expected_calibration_error(y_true, proba, classes=None, n_bins=15):
    r"""Expected calibration error of the top-label confidence (Guo et al. 2017).

    Samples are binned by their highest predicted probability into ``n_bins``
    equal-width bins of [0, 1]; the ECE is
    :math:`\sum_b \frac{n_b}{n}\,\lvert\mathrm{acc}_b - \mathrm{conf}_b\rvert`.

    Args:
        y_true: true labels (values of ``classes``), shape (n,).
        proba: predicted probabilities, shape (n, n_classes).
        classes: the labels of ``proba``'s columns (default ``0..n_classes-1``).

    Returns:
        ``(ece, bins)`` where ``bins`` is a dict of arrays ``edges``,
        ``count``, ``accuracy`` and ``confidence`` per bin (NaN for empty bins).

    >>> import numpy as np
    >>> ece, _ = expected_calibration_error(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]))
    >>> round(ece, 6)
    0.15
    """
    proba = np.asarray(proba, dtype=np.float64)
    y_true = np.asarray(y_true)
    classes = np.arange(proba.shape[1]) if classes is None else np.asarray(classes)
    confidence = proba.max(axis=1)
    correct = classes[proba.argmax(axis=1)] == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(which, weights=correct, minlength=n_bins) / count
        conf = np.bincount(which, weights=confidence, minlength=n_bins) / count
    nonempty = count > 0
    ece = float(np.sum(count[nonempty] / count.sum() * np.abs(acc[nonempty] - conf[nonempty])))
    return ece, {"edges": edges, "count": count, "accuracy": acc, "confidence": conf}
