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

The loss rows are not computed here: the kernel returns ``m``, ``log Σ``,
``s_y - m`` and ``dot`` per row, and the caller calls ``row_loss``.

``b`` (the soft weights) comes as ``bmode``: 0 none, 1 the number ``ε / C``
(``bvec[0]``), 2 a vector ``(C,)`` (``bvec``), 3 a matrix ``(N, C)``
(``bmat``, probability targets). Logits come as float32 or float64, or as
bfloat16 bits (uint16), converted in the row loop; the gradient is written in
the input's dtype (bfloat16 rounded to nearest even), into ``g``, which may
be ``x`` itself (``inplace_backward``: the target logit is read first).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ._bits import bf16_to_f32, exp_fast, exp_fast_ok, f32_to_bf16

_FAST = {"reassoc", "contract"}  # reorder the sums (to vectorise them); no assumption about inf or NaN


def _load(xr, c):
    raise NotImplementedError


@overload(_load)
def _load_impl(xr, c):
    """``xr[c]`` as a float: bfloat16 bits (uint16) converted to float32."""
    if xr.dtype == types.uint16:
        return lambda xr, c: bf16_to_f32(xr[c])
    return lambda xr, c: xr[c]


def _store(gr, c, val):
    raise NotImplementedError


@overload(_store)
def _store_impl(gr, c, val):
    """``gr[c] = val`` in ``gr``'s dtype (bfloat16 bits rounded to nearest even)."""
    if gr.dtype == types.uint16:
        def store(gr, c, val):
            gr[c] = f32_to_bf16(np.float32(val))
        return store

    def plain(gr, c, val):
        gr[c] = val
    return plain


def _like(proto, val):
    raise NotImplementedError


@overload(_like)
def _like_impl(proto, val):
    """``val`` in the dtype of the array ``proto``."""
    if proto.dtype == types.float32:
        return lambda proto, val: np.float32(val)
    return lambda proto, val: np.float64(val)


@njit(inline="always")
def _capped(xr, c, cap, proto):
    t = _load(xr, c)
    return t if cap <= 0 else _like(proto, cap * math.tanh(t / cap))


@njit(parallel=True, fastmath=_FAST, cache=True)
def rows(x, g, work, want_grad, col, has_col, hard, v, vc0, bmode, bvec, bmat, z, cap, want_hits,
         m_out, logsum_out, tshift_out, dot_out, hits_out):
    """Logits ``x`` (N, C), float32, float64 or bfloat16 bits (uint16):
    per-row statistics into the ``*_out`` arrays and, with ``want_grad``, the
    gradient into ``g``. ``work``: an empty array of the compute dtype."""
    N, C = x.shape
    capped = cap > 0
    for i in prange(N):
        xr = x[i]
        s = np.empty(C, work.dtype)  # the (capped) logits, then e^{s - m}: one row, in cache
        mx = -np.inf
        for c in range(C):
            t = _capped(xr, c, cap, s)
            s[c] = t
            mx = max(mx, t)
        if want_hits:
            best = 0
            for c in range(C):
                if s[c] > s[best]:
                    best = c
            hits_out[i] = best == col[i]
        m = _like(s, mx) if np.isfinite(mx) else _like(s, 0.0)
        ts = s[col[i]] - m if has_col else _like(s, 0.0)  # before g (maybe x) is written
        dot = 0.0
        if bmode == 1:
            for c in range(C):
                dot += s[c] - m
            dot *= bvec[0]
        elif bmode == 2:
            for c in range(C):
                if bvec[c] != 0:
                    dot += bvec[c] * (s[c] - m)
        elif bmode == 3:
            for c in range(C):
                if bmat[i, c] != 0:
                    dot += bmat[i, c] * (s[c] - m)
        total = 0.0
        odd = 0
        for c in range(C):
            d = s[c] - m
            odd += not exp_fast_ok(d)  # a subnormal result, a positive or NaN argument: recomputed below
            e = exp_fast(d)
            s[c] = e
            total += e
        if odd:
            total = 0.0
            for c in range(C):
                e = _like(s, math.exp(np.float64(_capped(xr, c, cap, s) - m)))
                s[c] = e
                total += e
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
        for c in range(C):
            val = f * s[c]
            if bmode == 1:
                val -= vi * bvec[0]
            elif bmode == 2:
                val -= vi * bvec[c]
            elif bmode == 3:
                val -= vi * bmat[i, c]
            if capped:
                th = math.tanh(_load(xr, c) / cap)
                val *= 1.0 - th * th
            _store(gr, c, val)
        if has_col:
            y = col[i]
            p_y = 0.0 if vc == 0 else math.exp(np.float64(ts) - log_sum)
            b_y = 0.0
            if bmode == 1:
                b_y = bvec[0]
            elif bmode == 2:
                b_y = bvec[y]
            elif bmode == 3:
                b_y = bmat[i, y]
            val = vc * p_y - vi * hard[i] - vi * b_y
            if capped:
                raw = np.float64(ts) + m  # the capped target logit
                val *= 1.0 - (raw / cap) * (raw / cap)
            _store(gr, y, val)
