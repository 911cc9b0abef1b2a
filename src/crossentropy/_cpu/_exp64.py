r"""An exponential in float64 that vectorises (numba's LLVM has no vector
libm, so ``math.exp`` is a scalar call, about 10 ns an element here against
NumPy's 4), for ``NORMAL_LO <= d <= 0``, the range of ``s - m``.

``e^d = 2^n e^r`` with ``n = round(d log2 e)`` and ``r = d - n ln 2``, ``ln 2``
split as Cephes does (``LN2_HI`` has 14 significant bits, so ``n LN2_HI`` is
exact for every ``n`` here, and ``LN2_LO = ln 2 - LN2_HI`` to float64), so
``|r| <= ln2 / 2`` to a rounding; ``e^r`` is its Taylor polynomial of degree
13, whose remainder ``r^14 / 14!`` is below ``5e-18`` there, evaluated by
Horner's rule with fused multiply-adds; ``2^n`` is put in by adding ``n`` to
the exponent bits. ``tests/test_cpu_kernels.py`` measures it against the
80-bit ``long double`` exponential over the whole range. Below ``NORMAL_LO``
(a result near the subnormal range), above 0 and at NaN the result is wrong,
and the kernels recompute those elements with ``math.exp``, as they do for
the float32 polynomial of :mod:`._bits`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._bits import bits_f64, f64_bits

LOG2E = 1.4426950408889634
LN2_HI = 0.693145751953125  # 0x1.62e4p-1
LN2_LO = 1.4286068203094173e-06  # ln 2 - LN2_HI, from 50 digits of ln 2
# e^d for d >= NORMAL_LO is 2^n e^r with n >= -1021: its exponent (that of
# e^r, -1 or 0, plus n) stays normal
NORMAL_LO = -708.0
_INV_FACTORIAL = tuple(1.0 / math.factorial(k) for k in range(14))  # 1/k!, k = 0..13, each to float64


@njit(inline="always", fastmath={"contract"})
def exp_nonpositive64(d):
    """``e^d`` in float64 for ``NORMAL_LO <= d <= 0`` (module docstring); any
    ``d`` gives a finite number (garbage outside that range)."""
    d = min(max(d, -745.0), 0.0)  # n a small integer for any input
    n = np.float64(np.int64(d * LOG2E + 0.5 + 1100.0) - 1100)  # round, by truncating a positive number
    r = (d - n * LN2_HI) - n * LN2_LO
    c = _INV_FACTORIAL
    p = c[13]
    p = p * r + c[12]
    p = p * r + c[11]
    p = p * r + c[10]
    p = p * r + c[9]
    p = p * r + c[8]
    p = p * r + c[7]
    p = p * r + c[6]
    p = p * r + c[5]
    p = p * r + c[4]
    p = p * r + c[3]
    p = p * r + c[2]
    p = p * r + c[1]
    p = p * r + c[0]
    return bits_f64(f64_bits(p) + (np.int64(n) << np.int64(52)))
