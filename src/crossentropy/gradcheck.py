"""``check_grad``: compare an analytic gradient with float64 finite differences."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._array import is_torch, to_float64_numpy

__all__ = ["check_grad", "GradCheck"]


class GradCheck(NamedTuple):
    max_abs_error: float  # largest |analytic - numeric| over the input's entries
    max_rel_error: float  # the same divided by max(1, largest |numeric|)
    analytic: np.ndarray
    numeric: np.ndarray


def _numpy_args(args, kwargs):
    def conv(a):
        if is_torch(a):
            a = a.detach().cpu().numpy()
        if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating):
            return a.astype(np.float64)
        return a

    return [conv(a) for a in args], {k: conv(v) for k, v in kwargs.items()}


def check_grad(f, *args, grad_output=None, eps=1e-4, seed=0, **kwargs) -> GradCheck:
    r"""Check ``f.value_and_grad`` against float64 central differences.

    Every array argument is converted to a float64 NumPy array. The
    vector-Jacobian product is checked with ``grad_output`` (by default random
    numbers shaped like the value, drawn with ``seed``, so that every output
    entry counts) against the 4th-order central difference

    .. math:: \frac{-F(x+2h) + 8F(x+h) - 8F(x-h) + F(x-2h)}{12h},\qquad
        F(x) = \langle g, f(x)\rangle,

    with the relative step :math:`h = \epsilon\max(|x|, 0.1)`, so that the
    steps stay inside (0, 1) for probabilities down to about 1e-4; the truncation error is
    :math:`O(h^4)` (about 1e-16 for O(1) entries at the default ``eps=1e-4``, where rounding,
    about 1e-12, dominates).
    It costs four evaluations per input entry: use small inputs.

    >>> import numpy as np
    >>> from crossentropy import cross_entropy
    >>> r = check_grad(cross_entropy, np.array([[1.0, 2.0, 0.5]]), np.array([1]))
    >>> r.max_abs_error < 1e-10
    True
    """
    args, kwargs = _numpy_args(args, kwargs)
    x = np.array(args[0], dtype=np.float64, order="C")  # reshape(-1) below is a view
    rest = args[1:]
    value = np.asarray(f(x, *rest, **kwargs))
    if grad_output is None:
        g = np.random.default_rng(seed).uniform(0.5, 1.5, size=value.shape)
    else:
        g = to_float64_numpy(grad_output)
    _, analytic = f.value_and_grad(x, *rest, grad_output=g, **kwargs)
    if isinstance(analytic, tuple):  # several gradients (linear_cross_entropy): the first argument's
        analytic = analytic[0]
    analytic = np.asarray(analytic, dtype=np.float64)

    def F(xv):
        return float(np.sum(g * np.asarray(f(xv, *rest, **kwargs))))

    numeric = np.zeros_like(x)
    flat, out = x.reshape(-1), numeric.reshape(-1)
    for i in range(flat.size):
        x0 = flat[i]
        h = eps * max(0.1, abs(x0))  # relative step, see the docstring
        vals = []
        for k in (2, 1, -1, -2):
            flat[i] = x0 + k * h
            vals.append(F(x))
        flat[i] = x0
        out[i] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)
    diff = np.abs(analytic - numeric)
    abs_err = float(diff.max()) if diff.size else 0.0
    scale = max(1.0, float(np.abs(numeric).max()) if numeric.size else 1.0)
    return GradCheck(abs_err, abs_err / scale, analytic, numeric)
