"""Argument checks of :class:`~crossentropy.models.SoftmaxRegression`: each
error names the argument and its bad value."""

from __future__ import annotations

import numbers

import numpy as np


def check_real(name, value, *, low=None, high=None, low_open=False, high_open=False, allow_inf=False):
    """``float(value)``, or a TypeError/ValueError if it is not a real number in the range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r} must be a real number")
    v = float(value)
    if np.isnan(v) or (np.isinf(v) and not allow_inf):
        raise ValueError(f"{name}={value!r} must be a finite number")
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{name}={value!r} must be {'>' if low_open else '>='} {low}")
    if high is not None and (v >= high if high_open else v > high):
        raise ValueError(f"{name}={value!r} must be {'<' if high_open else '<='} {high}")
    return v


def check_sample_weight(sample_weight, n):
    """The per-sample weights as a float64 array of shape (n,) (ones for None)."""
    if sample_weight is None:
        return np.ones(n)
    if isinstance(sample_weight, numbers.Number):
        return np.full(n, float(sample_weight))
    s = np.asarray(sample_weight, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] != n:
        raise ValueError(
            f"sample_weight has shape {s.shape} but X has {n} samples; "
            f"it must have shape ({n},)"
        )
    if not np.all(np.isfinite(s)):
        raise ValueError("sample_weight contains NaN or infinity")
    if np.any(s < 0):
        raise ValueError("sample_weight contains negative values; weights must be >= 0")
    return s


def label(v):
    """A NumPy scalar as the plain Python value it prints as."""
    return v.item() if isinstance(v, np.generic) else v
