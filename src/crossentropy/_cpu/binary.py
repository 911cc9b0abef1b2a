r"""Binary cross-entropy on logits on CPU, elementwise, in one parallel
region (numba ``prange`` over blocks of elements), loss and gradient from
the same pieces.

It restates ``losses.binary.bce_with_logits_terms`` (``tests/test_registry.py``
runs every case through it against the core): with ``e = e^{-|x|}``,
``small = sigma(-|x|) = e / (1 + e)``, ``ls = log sigma(|x|) = -log1p(e)``,
``sgn = sign(x)``, the step ``s = (1 + sgn) / 2``, ``c = 1 + t (pw - 1)`` and
``d = s - t (pw + s (1 - pw))``::

    loss = w (x d - c ls),        d loss / d x = w (d - sgn c small),

both sums of terms of one sign, so a confident logit's loss of about
``e^{-|x|}`` keeps its relative precision. ``log1p(e)`` for ``e`` in [0, 1] is (float32 logits)
``2 atanh(u)``, ``u = e / (2 + e)`` in [0, 1/3], summed as its odd series to
``u^17`` (the next term is below 2^-30 of the sum), which vectorises and keeps
the relative precision of a tiny ``e``; ``e`` is the fast exponential of
``_bits`` (recomputed with ``math.exp`` where it misses: subnormal results,
infinite or NaN logits). An infinite logit whose term has weight 0 gives 0,
not NaN (``infinite_logits_fixed``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ._bits import exp_fast, exp_fast_ok

_FAST = {"reassoc", "contract"}


@njit(inline="always")
def _log1p_series(e):
    """``log(1 + e)`` for ``e`` in [0, 1], as ``2 atanh(e / (2 + e))``: float32's precision."""
    u = e / (2 + e)
    u2 = u * u
    p = 1 / 17
    for k in (15, 13, 11, 9, 7, 5, 3):
        p = p * u2 + 1 / k
    return 2 * u * (p * u2 + 1)


def _log1p_for(xi, e):
    raise NotImplementedError


@overload(_log1p_for)
def _log1p_for_impl(xi, e):
    """``log1p(e)`` to the precision of ``xi``'s type: the series for float32
    logits, libm's ``log1p`` for float64 ones."""
    if xi == types.float32:
        return lambda xi, e: _log1p_series(e)
    return lambda xi, e: math.log1p(e)


@njit(inline="always")
def _block(x, t, w, pw, has_w, has_pw, want_grad, want_rows, scale, g, rows, lo, hi, exact):
    """Elements ``[lo, hi)``; returns (sum of the losses, how many exponentials
    the fast path missed). ``exact``: ``math.exp`` for every element."""
    total = 0.0
    odd = 0
    for i in range(lo, hi):
        xi = x[i]
        ti = t[i]
        a = -abs(xi)
        if exact:
            e = math.exp(np.float64(a))
        else:
            odd += not exp_fast_ok(a)
            e = exp_fast(a)
        small = e / (1 + e)
        ls = -_log1p_for(xi, e)
        sgn = (xi > 0) - (xi < 0)
        s = 0.5 + 0.5 * sgn
        if has_pw:
            q = pw[i] + s * (1 - pw[i])
            c = 1 + ti * (pw[i] - 1)
            d = s - ti * q
        else:
            c = 1.0
            d = s - ti
        xd = 0.0 if d == 0 else xi * d  # 0 * inf = 0: a term of weight 0 (infinite_logits_fixed)
        loss = xd - c * ls
        if has_w:
            loss = loss * w[i]
        if want_rows:
            rows[i] = loss
        total += loss
        if want_grad:
            gi = d - sgn * c * small
            if has_w:
                gi = gi * w[i]
            g[i] = gi * scale
    return total, odd


@njit(parallel=True, fastmath=_FAST, cache=True)
def bce_logits(x, t, w, pw, has_w, has_pw, want_grad, want_rows, scale, g, rows):
    """Elementwise over flat arrays of one length (``w``, ``pw``: that length
    or a placeholder when absent): the per-element losses into ``rows``
    (``want_rows``), the gradient times ``scale`` into ``g`` (``want_grad``);
    returns the sum of the losses (float64). A block in which the fast
    exponential missed (a subnormal result, an infinite or NaN logit) is
    done again with ``math.exp``."""
    n = x.shape[0]
    blocks = max(1, min(n // 4096, 256))
    sums = np.zeros(blocks)
    for blk in prange(blocks):
        lo, hi = blk * n // blocks, (blk + 1) * n // blocks
        total, odd = _block(x, t, w, pw, has_w, has_pw, want_grad, want_rows, scale, g, rows, lo, hi, False)
        if odd:
            total, odd = _block(x, t, w, pw, has_w, has_pw, want_grad, want_rows, scale, g, rows, lo, hi, True)
        sums[blk] = total
    return sums.sum()
