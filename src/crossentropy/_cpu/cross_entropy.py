r"""Cross-entropy forward and backward on CPU in one parallel region: each
row is read into cache once, its maximum, exponentials, sum and gradient done
while it is there, rows split over threads (numba ``prange``).

It restates, in scalar loops, what :mod:`crossentropy.losses.cross_entropy`
writes once for arrays (``tests/test_cpu_kernels.py`` runs every registry
case through it against the core):

* ``m = max_c s_c`` (0 where that is not finite), ``Σ = sum_c e^{s_c - m}``
  (accumulated in float64), ``LSE = m + log Σ``;
* ``dot = sum_c b_c (s_c - m)`` with ``0 (s - m) = 0`` (``soft_dot``);
* the gradient ``v c p_j - v b_j``, ``c = h + B + 2 z LSE``
  (``coefficient`` + ``z_coefficient``; ``vc0 = v (h + B)`` comes in),
  times the soft cap's slope ``1 - (s_j / κ)^2`` (``softcap_slope``), and on
  the target column ``v c p_y - v h - v b_y`` (``target_gradient``), with
  ``p_y = e^{(s_y - m) - log Σ}`` in float64.

The exponentials are ``_bits.exp_fast``: a vectorising polynomial in float32
and in float64 (``_exp64``), ``math.exp`` where they are not right.

The loss rows are not computed here: the kernel returns ``m``, ``log Σ``,
``s_y - m`` and ``dot`` per row, and the caller calls ``row_loss``.

``b`` (the soft weights) comes as ``bmode``: 0 none, 1 the number ``ε / C``
(``bvec[0]``), 2 a vector ``(C,)`` (``bvec``), 3 a matrix ``(N, C)``
(``bmat``, probability targets). Logits come as float32 or float64, or as
bfloat16 bits (uint16) or float16 bits (int16), converted to float32 in the
row loop; the gradient is written in the input's dtype (the half types
rounded to nearest even), into ``g``, which may
be ``x`` itself (``inplace_backward``: the target logit is read first).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ._bits import exp_fast, exp_fast_ok, first_argmax, load, row_min_max, store

_FAST = {"reassoc", "contract"}  # reorder the sums (to vectorise them); no assumption about inf or NaN


def _like(proto, val):
    raise NotImplementedError


@overload(_like)
def _like_impl(proto, val):
    """``val`` in the dtype of the array ``proto``."""
    if proto.dtype == types.float32:
        return lambda proto, val: np.float32(val)
    return lambda proto, val: np.float64(val)


@njit(inline="always")
def _fill(xr, scratch, cap):
    for c in range(xr.shape[0]):
        t = load(xr, c)
        scratch[c] = t if cap <= 0 else _like(scratch, cap * math.tanh(t / cap))
    return scratch


def _source(xr, scratch, cap):
    raise NotImplementedError


@overload(_source)
def _source_impl(xr, scratch, cap):
    """The row's (capped) logits ``s`` in the compute dtype: ``xr`` itself, or
    written into ``scratch`` (bfloat16 converted, or the soft cap applied)."""
    if xr.dtype != scratch.dtype:
        return lambda xr, scratch, cap: _fill(xr, scratch, cap)
    return lambda xr, scratch, cap: xr if cap <= 0 else _fill(xr, scratch, cap)


def _exp_buffer(g, i, scratch, use_g):
    raise NotImplementedError


@overload(_exp_buffer)
def _exp_buffer_impl(g, i, scratch, use_g):
    """Where ``e^{s - m}`` is kept: the gradient's row when it has the compute
    dtype and may be used, else ``scratch``."""
    if g.dtype != scratch.dtype:
        return lambda g, i, scratch, use_g: scratch
    return lambda g, i, scratch, use_g: g[i] if use_g else scratch


@njit(inline="always")
def _soft_dot(src, m, bmode, bvec, bmat, i):
    """``sum_c b_c (s_c - m)``, with ``0 (s - m) = 0`` (``soft_dot``)."""
    dot = 0.0
    if bmode == 1:
        for c in range(src.shape[0]):
            dot += src[c] - m
        dot *= bvec[0]
    elif bmode == 2:
        for c in range(src.shape[0]):
            if bvec[c] != 0:
                dot += bvec[c] * (src[c] - m)
    elif bmode == 3:
        for c in range(src.shape[0]):
            if bmat[i, c] != 0:
                dot += bmat[i, c] * (src[c] - m)
    return dot


@njit(inline="always")
def _b(bmode, bvec, bmat, i, c):
    """The soft weight ``b_c`` of row ``i`` (0 without one)."""
    if bmode == 1:
        return bvec[0]
    if bmode == 2:
        return bvec[c]
    if bmode == 3:
        return bmat[i, c]
    return 0.0


@njit(inline="always")
def _exp_sum_in_place(a, m, in_range=False):
    """``a = e^{a - m}`` and its sum (float64), over one array (so that the
    compiler sees nothing that might alias it, and vectorises). With
    ``in_range`` (every ``a - m`` is known to lie in the fast exponential's
    range) no element is checked; else elements the fast exponential gets
    wrong keep ``d = a - m`` (outside [0, 1]: below -87.3, above 1, NaN) and
    are recomputed by ``_redo_exp``, which runs only when there are any."""
    total = 0.0
    if in_range:
        for c in range(a.shape[0]):
            e = exp_fast(a[c] - m)
            a[c] = e
            total += e
        return total
    odd = 0
    for c in range(a.shape[0]):
        d = a[c] - m
        ok = exp_fast_ok(d)
        e = exp_fast(d)
        odd += not ok
        e = e if ok else d
        a[c] = e
        total += e
    return _redo_exp(a) if odd else total


@njit(inline="always")
def _exp_sum_into(src, a, m, in_range):
    """``_exp_sum_in_place`` reading ``src`` and writing ``a``, two arrays
    that do not overlap (the logits' row and the gradient's): one trip over
    ``a`` instead of a copy into it and then one in place (BENCHMARKS.md,
    "The compiled CPU kernel", the run on an AVX-512 Xeon)."""
    total = 0.0
    if in_range:
        for c in range(a.shape[0]):
            e = exp_fast(src[c] - m)
            a[c] = e
            total += e
        return total
    odd = 0
    for c in range(a.shape[0]):
        d = src[c] - m
        ok = exp_fast_ok(d)
        e = exp_fast(d)
        odd += not ok
        e = e if ok else d
        a[c] = e
        total += e
    return _redo_exp(a) if odd else total


@njit(inline="always")
def _redo_exp(a):
    """The sum of ``a`` after each element not in [0, 1] (a ``d`` the fast
    exponential got wrong) is replaced by ``math.exp(d)``."""
    total = 0.0
    for c in range(a.shape[0]):
        e = a[c]
        if not (e >= 0 and e <= 1):
            e = _like(a, math.exp(np.float64(e)))
            a[c] = e
        total += e
    return total


@njit(inline="always")
def _gradient(e, gr, xr, f, vi, bmode, bvec, bmat, i, cap):
    """``gr = f e - v b`` (``f = v c / Σ``), times the cap's slope at ``xr``;
    ``gr`` may be ``xr`` (each logit is read before its gradient is written)."""
    C = e.shape[0]
    if cap > 0:
        for c in range(C):
            th = math.tanh(load(xr, c) / cap)
            store(gr, c, (f * e[c] - vi * _b(bmode, bvec, bmat, i, c)) * (1.0 - th * th))
    elif bmode == 0:
        for c in range(C):
            store(gr, c, f * e[c])
    elif bmode == 1:
        vb = vi * bvec[0]
        for c in range(C):
            store(gr, c, f * e[c] - vb)
    elif bmode == 2:
        for c in range(C):
            store(gr, c, f * e[c] - vi * bvec[c])
    else:
        for c in range(C):
            store(gr, c, f * e[c] - vi * bmat[i, c])


@njit(inline="always")
def _gradient_in_place(a, f, vi, bmode, bvec, bmat, i):
    """``a = f a - v b`` over one array (``a`` holds ``e^{s - m}``; no soft
    cap): ``_gradient`` with nothing that might alias, so that it vectorises."""
    C = a.shape[0]
    if bmode == 0:
        for c in range(C):
            a[c] = f * a[c]
    elif bmode == 1:
        vb = vi * bvec[0]
        for c in range(C):
            a[c] = f * a[c] - vb
    elif bmode == 2:
        for c in range(C):
            a[c] = f * a[c] - vi * bvec[c]
    else:
        for c in range(C):
            a[c] = f * a[c] - vi * bmat[i, c]


@njit(parallel=True, fastmath=_FAST, cache=True, error_model="numpy")
def rows(x, g, work, want_grad, inplace, col, has_col, hard, v, vc0, bmode, bvec, bmat, z, cap, want_hits,
         m_out, logsum_out, tshift_out, dot_out, hits_out):
    """Logits ``x`` (N, C), float32, float64, or bfloat16 (uint16) or float16 (int16) bits:
    per-row statistics into the ``*_out`` arrays and, with ``want_grad``, the
    gradient into ``g`` (which is ``x`` with ``inplace``). ``work``: an empty
    array of the compute dtype. Rows go in blocks, one scratch row a block where one is
    needed (half-precision logits, a soft cap, no gradient buffer to work in)."""
    N, C = x.shape
    capped = cap > 0
    direct = x.dtype == work.dtype and not capped  # the logits themselves are s
    in_g = want_grad and g.dtype == work.dtype and not (capped and inplace)  # e^{s - m} kept in g's rows
    blocks = max(1, min(N, 64))
    for blk in prange(blocks):
        scratch = np.empty(0 if direct and in_g else C, work.dtype)
        for i in range(blk * N // blocks, (blk + 1) * N // blocks):
            xr = x[i]
            src = _source(xr, scratch, cap)
            lo, mx = row_min_max(src)
            if want_hits:
                hits_out[i] = first_argmax(src) == col[i]
            m = mx if np.isfinite(mx) else _like(src, 0.0)
            # every s - m in [lo - m, 0]: the fast exponential is right on all of them
            in_range = np.isfinite(mx) and exp_fast_ok(lo - m)
            ts = src[col[i]] - m if has_col else _like(src, 0.0)  # read before g (maybe x) is written
            dot = _soft_dot(src, m, bmode, bvec, bmat, i)
            e = _exp_buffer(g, i, scratch, in_g)
            # e is src itself (the logits' row with inplace_backward, or the scratch
            # row of converted or capped logits kept there): the exponentials in
            # place, in cache; or e is the gradient's row, written from src
            if (direct and inplace and in_g) or (not direct and not in_g):
                total = _exp_sum_in_place(e, m, in_range)
            else:
                total = _exp_sum_into(src, e, m, in_range)
            log_sum = math.log(total)
            m_out[i] = m
            logsum_out[i] = log_sum
            tshift_out[i] = ts
            dot_out[i] = dot
            if not want_grad:
                continue
            vi = v[i]
            vc = vc0[i]
            if z != 0 and vi != 0:
                vc += vi * 2.0 * z * (m + log_sum)
            f = 0.0 if vc == 0 else vc / total  # probability_factor
            gr = g[i]
            if in_g and not capped:
                _gradient_in_place(gr, f, vi, bmode, bvec, bmat, i)
            else:
                _gradient(e, gr, xr, f, vi, bmode, bvec, bmat, i, cap)
            if has_col:
                y = col[i]
                p_y = 0.0 if vc == 0 else math.exp(np.float64(ts) - log_sum)
                val = vc * p_y - vi * hard[i] - vi * _b(bmode, bvec, bmat, i, y)  # target_gradient
                if capped:
                    s_y = np.float64(ts) + m  # the capped target logit: its slope is 1 - (s_y / κ)^2
                    val *= 1.0 - (s_y / cap) * (s_y / cap)
                store(gr, y, val)
