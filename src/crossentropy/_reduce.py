"""Reduction, written once: the value of ``"none"``/``"mean"``/``"sum"`` and
what each row's gradient is multiplied by.

``loss`` holds one value per row (per element for the elementwise losses);
``denominator`` is what ``"mean"`` divides by. When it is 0 (every target
ignored, zero total weight, an empty input) ``"mean"`` gives 0 and a zero
gradient instead of PyTorch's 0/0 = NaN. Nothing here reads a value back to
the host, so it is safe on accelerators and under graph capture. Every path
calls these: the array-API core, the torch kernels (on torch tensors, through
the torch namespace), linear and vocab-parallel cross-entropy.
"""

from __future__ import annotations

import math

import numpy as np

from ._array import device


def _on_host(*values) -> bool:
    """NumPy arrays and scalars, Python numbers and None: what a scalar step
    may compute with NumPy scalars of the same dtype, which gives the same
    rounding as the array operations without their cost per call (a few
    microseconds each, most of a small call's time)."""
    return all(v is None or isinstance(v, (int, float, np.ndarray, np.generic)) for v in values)


def total(xp, a):
    """``xp.sum(a)``; for a NumPy array its own ``sum`` (the same pairwise
    sum in ``a``'s dtype, without the array-API wrapper's microseconds)."""
    return a.sum() if type(a) is np.ndarray else xp.sum(a)


def safe_reciprocal(xp, d):
    """``1 / d``, and 0 where ``d == 0`` (the mean of nothing has no gradient)."""
    zero = d == 0
    return xp.where(zero, xp.zeros_like(d), 1 / xp.where(zero, xp.ones_like(d), d))


def as_denominator(xp, denominator, dtype, like):
    """``denominator`` (a Python number or an array) as a 0-d array of ``dtype`` on ``like``'s device."""
    return xp.asarray(denominator, dtype=dtype, device=device(like))


def reduce(xp, loss, how: str, denominator=None):
    """The reduced value: ``loss`` itself, its sum, or its sum over ``denominator``
    (default: the number of entries), 0 when that is 0."""
    if how == "none":
        return loss
    sum_ = total(xp, loss)
    if how == "sum":
        return sum_
    if _on_host(sum_, denominator):
        d = sum_.dtype.type(math.prod(loss.shape) if denominator is None else denominator)
        return np.asarray(sum_ / d if d != 0 else sum_.dtype.type(0))
    d = as_denominator(xp, math.prod(loss.shape) if denominator is None else denominator, sum_.dtype, sum_)
    zero = d == 0
    return xp.where(zero, xp.zeros_like(sum_), sum_ / xp.where(zero, xp.ones_like(d), d))


def unit_scale(xp, how: str, dtype, like, denominator=None, count=None):
    """d value / d loss_row for a unit ``grad_output``: 1, or 1/denominator for
    ``"mean"`` (``count`` entries when no denominator is given; 0 for none)."""
    if how != "mean":
        return xp.ones((), dtype=dtype, device=device(like))
    if denominator is None and isinstance(count, int):  # known here: no select to build
        return xp.asarray(unit_factor(how, count), dtype=dtype, device=device(like))
    if _on_host(like, denominator):
        d = np.dtype(dtype).type(count if denominator is None else denominator)
        return np.asarray(1 / d if d != 0 else type(d)(0))
    d = as_denominator(xp, count if denominator is None else denominator, dtype, like)
    return safe_reciprocal(xp, d)


def unit_factor(how: str, count: int) -> float:
    """:func:`unit_scale` of ``count`` entries (no denominator) as a Python
    number: what a compiled kernel multiplies its gradient by, without a
    0-d array made and read back (a few microseconds of a small call)."""
    if how != "mean":
        return 1.0
    return 1 / count if count else 0.0


def scale(xp, grad_output, how: str, row_shape, dtype, like, denominator=None):
    """What each row's unit gradient is multiplied by: d value / d loss_row times
    ``grad_output`` (ones when None), shaped ``()`` or ``row_shape`` for ``"none"``."""
    want = tuple(row_shape) if how == "none" else ()
    if grad_output is None and how == "mean":  # ones times the unit scale: the unit scale itself
        return unit_scale(xp, how, dtype, like, denominator, math.prod(row_shape))
    if grad_output is None and _on_host(like):  # NumPy's own ones (the wrapper's device check costs more)
        g = np.ones(want, dtype=dtype)
    elif grad_output is None:
        g = xp.ones(want, dtype=dtype, device=device(like))
    else:
        g = xp.asarray(grad_output, device=device(like))
        if tuple(g.shape) != want:
            raise ValueError(
                f"grad_output has shape {tuple(g.shape)} but the value has shape {want} "
                f"(reduction={how!r})"
            )
        g = xp.astype(g, dtype)
    if how != "mean":
        return g
    return g * unit_scale(xp, how, dtype, like, denominator, math.prod(row_shape))


def finish_elementwise(xp, loss, grad, how: str, grad_output, input):
    """An elementwise loss's value (reduced, in ``input``'s dtype) and its
    gradient times d value / d loss (or None), in ``input``'s dtype."""
    value = xp.astype(reduce(xp, loss, how), input.dtype)
    if grad is None:
        return value, None
    g = scale(xp, grad_output, how, loss.shape, loss.dtype, loss)
    return value, xp.astype(grad * g, input.dtype)
