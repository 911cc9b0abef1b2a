r"""The elementwise binary losses on logits on CPU, binary cross-entropy and
the sigmoid focal loss, in one parallel region (numba ``prange`` over blocks
of elements), loss and gradient from the same pieces.

Both restate their functions of ``losses/`` (``tests/test_registry.py`` runs
every case through them against the core). The pieces are
``losses.binary.step_parts``'s: with ``e = e^{-|x|}``, ``small = sigma(-|x|)
= e / (1 + e)``, ``ls = log sigma(|x|) = -log1p(e)``, ``sgn = sign(x)`` and
the step ``s = (1 + sgn) / 2``.

* ``losses.binary.bce_with_logits_terms``: with ``c = 1 + t (pw - 1)`` and
  ``d = s - t (pw + s (1 - pw))``::

      loss = w (x d - c ls),        d loss / d x = w (d - sgn c small),

  both sums of terms of one sign, so a confident logit's loss of about
  ``e^{-|x|}`` keeps its relative precision.
* ``losses.focal.sigmoid_focal_terms``: with ``d = s - t``, ``BCE = x d - ls``,
  ``sigma(-x) = (1 - s) + sgn small``, ``sigma(x) = s - sgn small``, ``q = 1 -
  p_t = sigma(x) (1 - t) + sigma(-x) t`` (non-negative terms: ``q`` keeps its
  digits near 0), ``m = q^gamma`` and ``alpha_t = alpha t + (1 - alpha)(1 - t)``::

      loss = alpha_t BCE m,
      d loss / d x = alpha_t ((d - sgn small) m
                              + gamma (1 - 2 t) m sigma(x) sigma(-x) / max(q, tiny) BCE).

``log1p(e)`` for ``e`` in [0, 1] is (float32 and half logits) ``e p(e)``,
``p`` the degree-9 polynomial through ``log1p(e) / e`` at the ten Chebyshev
nodes of [0, 1] (``_LOG1P``): no division, so it vectorises at the cost of
ten multiply-adds, and ``e p(e)`` keeps the relative precision of a tiny
``e`` (``p(0) = 1``); within 2 ulp of float64's ``log1p`` over [0, 1]
(``tests/test_cpu_kernels.py``); ``e`` is the fast exponential of
``_bits`` (recomputed with ``math.exp`` where it misses: subnormal results,
infinite or NaN logits). Where an infinite logit meets a term of weight 0
the result is 0, not NaN (``infinite_logits_fixed``). Half-precision arrays
come as their bits (``_bits.load``, ``_bits.store``) and are computed in
float32 and wider, rounded once on the way out.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ._bits import exp_fast, exp_fast_ok, load, store

_FAST = {"reassoc", "contract"}
_TINY32 = float(np.finfo(np.float32).tiny)


def _c(xi, v):
    raise NotImplementedError


@overload(_c)
def _c_impl(xi, v):
    """The number ``v`` in the compute dtype of ``xi`` (float32 for float32
    and half logits, which load as float32): so that a float32 element is
    computed in float32, eight to a vector, not promoted to float64."""
    if xi == types.float32:
        return lambda xi, v: np.float32(v)
    return lambda xi, v: np.float64(v)


def log1p_coefficients():
    """The coefficients of ``_LOG1P``, lowest power first, in float64: the
    polynomial of degree 9 through ``log1p(e) / e`` at the Chebyshev nodes
    ``e_k = (1 + cos(pi (k + 1/2) / 10)) / 2`` (NumPy's ``chebfit``, which
    interpolates at ten points), in powers of ``e``."""
    from numpy.polynomial import chebyshev, polynomial

    nodes = 0.5 + 0.5 * np.cos(np.pi * (np.arange(10) + 0.5) / 10)
    in_y = chebyshev.cheb2poly(chebyshev.chebfit(2 * nodes - 1, np.log1p(nodes) / nodes, 9))  # y = 2 e - 1
    in_e = np.zeros(1)
    for c in in_y[::-1]:  # Horner in y = -1 + 2 e
        in_e = polynomial.polyadd(polynomial.polymul(in_e, [-1.0, 2.0]), [c])
    return in_e


# log1p_coefficients() rounded to float32 (tests/test_cpu_kernels.py recomputes them)
_LOG1P = (1.0, -0.49999892711639404, 0.33329710364341736, -0.24951615929603577, 0.1966327428817749,
          -0.1526966691017151, 0.10543623566627502, -0.056373611092567444, 0.019542526453733444,
          -0.0031760570127516985)


@njit(inline="always")
def _log1p_series(e):
    """``log(1 + e)`` for float32 ``e`` in [0, 1], as ``e p(e)`` (``_LOG1P``, by Horner)."""
    p = np.float32(_LOG1P[9])
    for k in (8, 7, 6, 5, 4, 3, 2, 1, 0):
        p = p * e + np.float32(_LOG1P[k])
    return p * e


def _log1p_for(xi, e):
    raise NotImplementedError


@overload(_log1p_for)
def _log1p_for_impl(xi, e):
    """``log1p(e)`` to the precision of ``xi``'s type: the series for float32
    (and the half types, which load as float32), libm's ``log1p`` for float64."""
    if xi == types.float32:
        return lambda xi, e: _log1p_series(e)
    return lambda xi, e: math.log1p(e)


def _tiny(xi):
    raise NotImplementedError


@overload(_tiny)
def _tiny_impl(xi):
    """The smallest normal number of the compute dtype (float32 for float32 and half logits)."""
    if xi == types.float32:
        return lambda xi: _TINY32
    return lambda xi: 2.2250738585072014e-308


def _power(q, gamma):
    raise NotImplementedError


@overload(_power)
def _power_impl(q, gamma):
    """``q^gamma`` (``0^0 = 1``). An integer ``gamma`` (0 to 4: the sigmoid
    focal loss's usual 2 among them) is a few products chosen by selects,
    which vectorise; any other is libm's ``pow``, one element at a time."""
    if isinstance(gamma, types.Integer):
        def products(q, gamma):
            q2 = q * q
            low = q if gamma == 1 else q - q + 1 if gamma == 0 else q2  # q - q + 1: 1 in q's type
            return low if gamma <= 2 else q2 * q if gamma == 3 else q2 * q2
        return products
    return lambda q, gamma: q**gamma if gamma > 0 else q - q + 1


@njit(inline="always")
def _parts(xi, exact):
    """``(e, small, ls, sgn, s)`` of ``losses.binary.step_parts``, and whether
    the fast exponential missed (``exact``: ``math.exp`` throughout)."""
    a = -abs(xi)
    if exact:
        e = math.exp(np.float64(a))
        odd = 0
    else:
        odd = 0 if exp_fast_ok(a) else 1
        e = exp_fast(a)
    small = e / (_c(xi, 1) + e)
    ls = -_log1p_for(xi, e)
    sgn = _c(xi, xi > 0) - _c(xi, xi < 0)
    return e, small, ls, sgn, _c(xi, 0.5) + _c(xi, 0.5) * sgn, odd


@njit(inline="always")
def _bce(xi, ti, i, w, pw, has_w, has_pw, p0, p1, exact):
    """One element of ``bce_with_logits_terms``: ``(loss, gradient, missed)``."""
    e, small, ls, sgn, s, odd = _parts(xi, exact)
    if has_pw:
        pwi = load(pw, i)
        c = _c(xi, 1) + ti * (pwi - _c(xi, 1))
        d = s - ti * (pwi + s * (_c(xi, 1) - pwi))
    else:
        c = _c(xi, 1)
        d = s - ti
    xd = _c(xi, 0) if d == 0 else xi * d  # 0 * inf = 0: a term of weight 0 (infinite_logits_fixed)
    loss = xd - c * ls
    gi = d - sgn * c * small
    if has_w:
        wi = load(w, i)
        loss, gi = loss * wi, gi * wi
    return loss, gi, odd


@njit(inline="always")
def _focal(xi, ti, i, w, pw, has_w, has_pw, alpha, gamma, exact):
    """One element of ``sigmoid_focal_terms`` (``alpha < 0``: no ``alpha_t``):
    ``(loss, gradient, missed)``."""
    e, small, ls, sgn, s, odd = _parts(xi, exact)
    d = s - ti
    one = _c(xi, 1)
    ce = (_c(xi, 0) if d == 0 else xi * d) - ls  # BCE, with 0 * inf = 0 (infinite_logits_fixed)
    sig_neg = (one - s) + sgn * small
    sig = s - sgn * small
    q = sig * (one - ti) + sig_neg * ti
    m = _c(xi, _power(q, gamma))
    loss = ce * m
    dm_ce = _c(xi, gamma) * (one - _c(xi, 2) * ti) * m * (sig * sig_neg / max(q, _c(xi, _tiny(xi)))) * ce
    if np.isinf(xi):  # the limits of 0 * inf (infinite_logits_fixed); NaN logits stay NaN
        loss = _c(xi, 0) if loss != loss else loss
        dm_ce = _c(xi, 0) if dm_ce != dm_ce else dm_ce
    gi = (d - sgn * small) * m + dm_ce
    if alpha >= 0:
        a_t = _c(xi, alpha) * ti + _c(xi, 1 - alpha) * (one - ti)
        loss, gi = loss * a_t, gi * a_t
    return loss, gi, odd


@njit(inline="always")
def _block(focal, x, t, w, pw, has_w, has_pw, p0, p1, want_grad, want_rows, scale, g, rows, lo, hi, exact):
    """Elements ``[lo, hi)`` of ``_focal`` (with its ``alpha, gamma`` in ``p0,
    p1``) or ``_bce``; returns (sum of the losses, whether the fast
    exponential missed, how many targets are outside [0, 1] or NaN: the
    check of ``losses.binary.target_values``, made while the target is in a
    register). ``exact``: ``math.exp`` for every element. The counts are
    int32 (a block is 1/256 of the elements from 2^20 up: no overflow below
    2^39 of them), as wide as a float32 lane, where an int64 count took two
    vector registers for one of elements."""
    total = 0.0
    odd = np.int32(0)
    bad = np.int32(0)
    for i in range(np.uint64(lo), np.uint64(hi)):  # unsigned: see _elementwise
        ti = load(t, i)
        bad += np.int32((ti < 0) | (ti > 1) | (ti != ti))  # the comparisons are kept: fastmath has no "nnan"
        if focal:
            loss, gi, miss = _focal(load(x, i), ti, i, w, pw, has_w, has_pw, p0, p1, exact)
        else:
            loss, gi, miss = _bce(load(x, i), ti, i, w, pw, has_w, has_pw, p0, p1, exact)
        odd += np.int32(miss)
        if want_rows:
            store(rows, i, loss)
        total += loss
        if want_grad:
            store(g, i, gi * _c(gi, scale))  # scale in the compute dtype: float32 lanes stay float32
    return total, odd, bad


@njit(inline="always")
def _elementwise(focal, x, t, w, pw, has_w, has_pw, p0, p1, want_grad, want_rows, scale, g, rows):
    """Blocks of elements over threads; a block in which the fast exponential
    missed (a subnormal result, an infinite or NaN logit) is done again with
    ``math.exp``. Returns the sum of the losses (float64) and the number of
    targets outside [0, 1] or NaN (the caller raises where it is not 0).

    Three things keep the element loop vectorised (BENCHMARKS.md, "Binary
    losses on logits", for what it gained): the kernels run with ``error_model="numpy"`` (with numba's default, Python's,
    every division checks its divisor for a ZeroDivisionError), the element
    index is unsigned (a signed one gets a select for negative indices at
    every access), and ``want_rows`` arrives as a constant (the store of the
    loss behind a run-time flag): any one of them left out, the loop does
    not vectorise."""
    n = x.shape[0]
    blocks = max(1, min(n // 4096, 256))
    sums = np.zeros(blocks)
    bads = np.zeros(blocks, np.int64)
    for blk in prange(blocks):
        lo, hi = blk * n // blocks, (blk + 1) * n // blocks
        total, odd, bad = _block(focal, x, t, w, pw, has_w, has_pw, p0, p1, want_grad, want_rows, scale, g,
                                 rows, lo, hi, False)
        if odd:
            total, odd, bad = _block(focal, x, t, w, pw, has_w, has_pw, p0, p1, want_grad, want_rows, scale, g,
                                     rows, lo, hi, True)
        sums[blk] = total
        bads[blk] = bad
    return sums.sum(), bads.sum()


@njit(parallel=True, fastmath=_FAST, cache=True, error_model="numpy")
def bce_logits(x, t, w, pw, has_w, has_pw, want_grad, want_rows, scale, g, rows):
    """Binary cross-entropy on logits over flat arrays of one length and dtype
    (``w``, ``pw``: that length, or placeholders when absent): the losses
    into ``rows`` (``want_rows``), the gradient times ``scale`` into ``g``
    (``want_grad``); returns the sum of the losses and the number of targets
    outside [0, 1] or NaN."""
    if want_rows:  # the flag as a constant in each loop: see _elementwise
        return _elementwise(False, x, t, w, pw, has_w, has_pw, 0.0, 0.0, want_grad, True, scale, g, rows)
    return _elementwise(False, x, t, w, pw, has_w, has_pw, 0.0, 0.0, want_grad, False, scale, g, rows)


@njit(parallel=True, fastmath=_FAST, cache=True, error_model="numpy")
def sigmoid_focal(x, t, alpha, gamma, want_grad, want_rows, scale, g, rows):
    """The sigmoid focal loss over flat arrays of one length and dtype, as
    :func:`bce_logits` (no weights); ``gamma`` an int (0 to 4) or a float."""
    if want_rows:  # the flag as a constant in each loop: see _elementwise
        return _elementwise(True, x, t, x, x, False, False, alpha, gamma, want_grad, True, scale, g, rows)
    return _elementwise(True, x, t, x, x, False, False, alpha, gamma, want_grad, False, scale, g, rows)
