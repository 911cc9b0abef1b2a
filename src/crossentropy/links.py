r"""Links: the maps from logits to (log-)probabilities, computed stably.

Every function takes a NumPy array, a PyTorch tensor or any array-API array
and returns the same kind on the same device. Half-precision inputs are
computed in float32 and returned in their own dtype. On torch tensors autograd
works through every function.

Stability idioms, written once in :mod:`crossentropy._stable`, which the
functions here and every loss call:

* ``logsumexp`` shifts by the row maximum ``m`` so that no ``exp`` overflows:
  :math:`\log\sum_j e^{x_j} = m + \log\sum_j e^{x_j - m}`;
* ``log_sigmoid`` never forms ``log(1 - sigmoid(x))``: it uses
  :math:`\log\sigma(x) = \min(x, 0) - \log(1 + e^{-|x|})`, and
  :math:`\log(1 - \sigma(x)) = \log\sigma(-x)`.
"""

from __future__ import annotations

from . import _stable
from ._array import device, namespace, quiet, to_compute
from ._checks import axis as _check_axis
from ._checks import floating as _check_floating

__all__ = ["logsumexp", "softmax", "log_softmax", "sigmoid", "log_sigmoid", "softmax_jacobian"]


# ----------------------------------------------------------------------------
# Public functions.
# ----------------------------------------------------------------------------


def _prepare(x, axis, name="x"):
    """Namespace, compute-dtype copy of ``x`` and the axis, an int in range.
    ``axis=None`` means every axis at once: ``x`` is then flattened (the
    caller reshapes the result back)."""
    xp = namespace(x=x)
    _check_floating(xp, x, name, min_ndim=0)
    xc = to_compute(xp, x, name)
    if axis is None:
        return xp, xp.reshape(xc, (-1,)), 0
    if x.ndim == 0:
        raise ValueError(f"axis={axis!r} is out of range for a 0-d {name}; use axis=None")
    return xp, xc, _check_axis("axis", axis, x.ndim)


def _elementwise(x, name="x"):
    xp = namespace(x=x)
    _check_floating(xp, x, name, min_ndim=0)
    return xp, to_compute(xp, x, name)


@quiet()
def logsumexp(x, axis=-1, keepdims=False):
    r"""Log of the sum of exponentials along ``axis``, without overflow.

    .. math:: \operatorname{LSE}(x) = m + \log\sum_j e^{x_j - m},\qquad m = \max_j x_j

    Its gradient is the softmax: :math:`\partial\,\mathrm{LSE}/\partial x_j = \mathrm{softmax}(x)_j`.

    Args:
        x: logits of shape ``(..., C, ...)``.
        axis: the axis to reduce, or ``None`` for all of them.
        keepdims: keep the reduced axis (every axis for ``None``) with size 1.

    Returns:
        The shape of ``x`` without ``axis`` (or with size 1 there), ``x``'s
        dtype. Over an empty axis the sum is 0 and its log ``-inf``.

    >>> import numpy as np
    >>> float(logsumexp(np.array([1000.0, 1000.0])))
    1000.6931471805599
    """
    xp, xc, ax = _prepare(x, axis)
    out = _stable.lse(xp, xc, ax, keepdims)
    if axis is None:
        out = xp.reshape(out, (1,) * x.ndim if keepdims else ())
    return xp.astype(out, x.dtype)


@quiet()
def softmax(x, axis=-1):
    r"""Probabilities :math:`p_i = e^{x_i - m} / \sum_j e^{x_j - m}` along ``axis``.

    Shifting by :math:`m = \max_j x_j` changes nothing in exact arithmetic and
    keeps every exponential in (0, 1].

    >>> import numpy as np
    >>> softmax(np.array([1.0, 2.0, 3.0])).round(4)
    array([0.09  , 0.2447, 0.6652])
    """
    xp, xc, ax = _prepare(x, axis)
    return xp.astype(xp.reshape(_stable.softmax(xp, xc, ax), x.shape), x.dtype)


@quiet()
def log_softmax(x, axis=-1):
    r"""Log-probabilities :math:`\log p_i = x_i - \operatorname{LSE}(x)` along ``axis``.

    Computed as a difference, never as ``log(softmax(x))``, so that a
    probability that underflows to 0 still has a finite log, and relative to
    the row maximum, :math:`(x_i - m) - \log\sum_j e^{x_j - m}`, so that the
    largest logits keep their precision.

    >>> import numpy as np
    >>> log_softmax(np.array([0.0, 1000.0]))
    array([-1000.,     0.])
    """
    xp, xc, ax = _prepare(x, axis)
    return xp.astype(xp.reshape(_stable.log_softmax(xp, xc, ax), x.shape), x.dtype)


@quiet()
def sigmoid(x):
    r"""The logistic function :math:`\sigma(x) = 1/(1 + e^{-x})`, without overflow.

    >>> import numpy as np
    >>> sigmoid(np.array([-800.0, 0.0, 800.0]))
    array([0. , 0.5, 1. ])
    """
    xp, xc = _elementwise(x)
    return xp.astype(_stable.sigmoid(xp, xc), x.dtype)


@quiet()
def log_sigmoid(x):
    r""":math:`\log\sigma(x) = \min(x, 0) - \log(1 + e^{-|x|})`, finite for every finite ``x``.

    ``log_sigmoid(-x)`` is :math:`\log(1 - \sigma(x))`.

    >>> import numpy as np
    >>> log_sigmoid(np.array([-800.0, 0.0, 2.0]))
    array([-8.00000000e+02, -6.93147181e-01, -1.26928011e-01])
    """
    xp, xc = _elementwise(x)
    return xp.astype(_stable.log_sigmoid(xp, xc), x.dtype)


@quiet()
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
    if axis is None:
        raise ValueError("axis=None: softmax_jacobian needs the one axis that holds the classes")
    xp, xc, ax = _prepare(x, axis)
    p = xp.moveaxis(_stable.softmax(xp, xc, ax), ax, -1)
    eye = xp.eye(p.shape[-1], dtype=p.dtype, device=device(p))
    jac = p[..., :, None] * eye - p[..., :, None] * p[..., None, :]
    return xp.astype(jac, x.dtype)
