r"""Links: the maps from logits to (log-)probabilities, computed stably.

Every function takes a NumPy array, a PyTorch tensor or any array-API array
and returns the same kind on the same device. Half-precision inputs are
computed in float32 and returned in their own dtype. On torch tensors autograd
works through every function.

Stability idioms, written once here and reused by the losses:

* ``logsumexp`` shifts by the row maximum ``m`` so that no ``exp`` overflows:
  :math:`\log\sum_j e^{x_j} = m + \log\sum_j e^{x_j - m}`;
* ``log_sigmoid`` never forms ``log(1 - sigmoid(x))``: it uses
  :math:`\log\sigma(x) = \min(x, 0) - \log(1 + e^{-|x|})`, and
  :math:`\log(1 - \sigma(x)) = \log\sigma(-x)`.
"""

from __future__ import annotations

from . import _array
from ._array import namespace, stop_gradient, to_compute
from ._checks import logits as _check_logits

__all__ = ["logsumexp", "softmax", "log_softmax", "sigmoid", "log_sigmoid", "softmax_jacobian"]


# ----------------------------------------------------------------------------
# Compute-dtype kernels: ``x`` is already float32/float64 and ``axis`` valid.
# The losses call these directly.
# ----------------------------------------------------------------------------


def _lse(xp, x, axis: int, keepdims: bool = True):
    m = xp.max(x, axis=axis, keepdims=True)
    # A row of all -inf (or a +inf entry) has no finite shift; shift by 0 there
    # and let exp/log produce -inf (or +inf) exactly.
    m = stop_gradient(xp.where(xp.isfinite(m), m, xp.zeros_like(m)))
    out = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else xp.squeeze(out, axis=axis)


def _softmax(xp, x, axis: int):
    m = xp.max(x, axis=axis, keepdims=True)
    m = stop_gradient(xp.where(xp.isfinite(m), m, xp.zeros_like(m)))
    e = xp.exp(x - m)
    return e / xp.sum(e, axis=axis, keepdims=True)


def _abs_exp(xp, x):
    """``exp(-|x|)``, with ``|x|`` written as a ``where`` so that autograd takes
    the derivative of the selected branch at 0 (``d|x|/dx = sign(x) = 0`` would
    be wrong for the sigmoid there)."""
    return xp.exp(-xp.where(x >= 0, x, -x))


def _sigmoid(xp, x):
    # 1/(1+e^-x) for x >= 0 and e^x/(1+e^x) for x < 0: every exp is <= 1.
    e = _abs_exp(xp, x)
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _log_sigmoid(xp, x):
    # log sigma(x) = min(x, 0) - log1p(exp(-|x|)), branch by branch.
    e = _abs_exp(xp, x)
    return xp.where(x >= 0, -xp.log1p(e), x - xp.log1p(e))


# ----------------------------------------------------------------------------
# Public functions.
# ----------------------------------------------------------------------------


def _prepare(x, axis, name="x"):
    xp = namespace(x=x)
    _check_logits(xp, x, name, min_ndim=1 if axis is not None else 0)
    ax = None if axis is None else _array.axis_index("axis", axis, x.ndim)
    return xp, to_compute(xp, x, name), ax


def logsumexp(x, axis=-1, keepdims=False):
    r"""Log of the sum of exponentials along ``axis``, without overflow.

    .. math:: \operatorname{LSE}(x) = m + \log\sum_j e^{x_j - m},\qquad m = \max_j x_j

    Its gradient is the softmax: :math:`\partial\,\mathrm{LSE}/\partial x_j = \mathrm{softmax}(x)_j`.

    Args:
        x: logits of shape ``(..., C, ...)``.
        axis: the axis to reduce.
        keepdims: keep the reduced axis with size 1.

    Returns:
        The shape of ``x`` without ``axis`` (or with size 1 there), ``x``'s dtype.

    >>> import numpy as np
    >>> float(logsumexp(np.array([1000.0, 1000.0])))
    1000.6931471805599
    """
    xp, xc, ax = _prepare(x, axis)
    return xp.astype(_lse(xp, xc, ax, keepdims), x.dtype)


def softmax(x, axis=-1):
    r"""Probabilities :math:`p_i = e^{x_i - m} / \sum_j e^{x_j - m}` along ``axis``.

    Shifting by :math:`m = \max_j x_j` changes nothing in exact arithmetic and
    keeps every exponential in (0, 1].

    >>> import numpy as np
    >>> softmax(np.array([1.0, 2.0, 3.0])).round(4)
    array([0.09  , 0.2447, 0.6652])
    """
    xp, xc, ax = _prepare(x, axis)
    return xp.astype(_softmax(xp, xc, ax), x.dtype)


def log_softmax(x, axis=-1):
    r"""Log-probabilities :math:`\log p_i = x_i - \operatorname{LSE}(x)` along ``axis``.

    Computed as a difference, never as ``log(softmax(x))``, so that a
    probability that underflows to 0 still has a finite log.

    >>> import numpy as np
    >>> log_softmax(np.array([0.0, 1000.0]))
    array([-1000.,     0.])
    """
    xp, xc, ax = _prepare(x, axis)
    return xp.astype(xc - _lse(xp, xc, ax), x.dtype)


def sigmoid(x):
    r"""The logistic function :math:`\sigma(x) = 1/(1 + e^{-x})`, without overflow.

    >>> import numpy as np
    >>> sigmoid(np.array([-800.0, 0.0, 800.0]))
    array([0. , 0.5, 1. ])
    """
    xp, xc, _ = _prepare(x, None)
    return xp.astype(_sigmoid(xp, xc), x.dtype)


def log_sigmoid(x):
    r""":math:`\log\sigma(x) = \min(x, 0) - \log(1 + e^{-|x|})`, finite for every finite ``x``.

    ``log_sigmoid(-x)`` is :math:`\log(1 - \sigma(x))`.

    >>> import numpy as np
    >>> log_sigmoid(np.array([-800.0, 0.0, 2.0]))
    array([-8.00000000e+02, -6.93147181e-01, -1.26928011e-01])
    """
    xp, xc, _ = _prepare(x, None)
    return xp.astype(_log_sigmoid(xp, xc), x.dtype)


def softmax_jacobian(x, axis=-1):
    r"""The Jacobian of the softmax, :math:`J = \operatorname{diag}(p) - p\,p^\top`.

    .. math:: \frac{\partial p_i}{\partial x_j} = p_i(\delta_{ij} - p_j)

    Args:
        x: logits; ``axis`` holds the ``C`` classes.

    Returns:
        Shape ``(..., C, C)``: the other axes of ``x`` in order, then
        :math:`J_{ij} = \partial p_i / \partial x_j`.

    Each row of ``J`` sums to 0, and ``v @ J`` is the vector-Jacobian product
    :math:`p \odot (v - v\cdot p)`.

    >>> import numpy as np
    >>> softmax_jacobian(np.log(np.array([0.5, 0.5])))
    array([[ 0.25, -0.25],
           [-0.25,  0.25]])
    """
    xp, xc, ax = _prepare(x, axis)
    p = xp.moveaxis(_softmax(xp, xc, ax), ax, -1)
    eye = xp.eye(p.shape[-1], dtype=p.dtype, device=_array.device(p))
    jac = p[..., :, None] * eye - p[..., :, None] * p[..., None, :]
    return xp.astype(jac, x.dtype)
