r"""Cross-entropy and the categorical focal loss on CPU for logits with the
class axis *first*, ``(C, R)`` C-contiguous (R rows, each a column): every
loop runs along the rows, contiguous in memory, so that it vectorises
whatever the number of classes (the row kernels of :mod:`.cross_entropy` and
:mod:`.focal` vectorise along a row, which for ten classes is mostly loop
overhead). Rows go in blocks of :data:`BLOCK` columns, split over threads
(numba ``prange``); each block's statistics and gradient are done while its
logits are in cache. ``cross_entropy_columns`` and ``focal_columns`` compute
everything in float64 (the logits may be float32), with ``_bits.exp_fast``'s
exponential (``math.exp`` where it is not right).

``cross_entropy_few`` runs the same blocks on logits with the class axis
*last* and few classes (``_numpy.cross_entropy.FEW_CLASSES``): each block of
rows is turned on its side into a (C, n) block in cache first (in the
compute dtype, as the row kernel computes: float32 exponentials for all but
float64, the sums in float64), and its gradient turned back into the rows
after, so that a classification head's handful of classes costs loops
along the rows rather than a row kernel's per-row overhead (``BENCHMARKS.md``,
"Few classes"). ``p_y`` comes from the block's own exponential,
``e^{s_y - m} / Σ``.

``cross_entropy_columns`` restates what :mod:`.cross_entropy`'s ``rows`` does
(and so :mod:`crossentropy.losses.cross_entropy`'s row functions): ``m``,
``log Σ``, ``s_y - m`` and ``dot = sum_c b_c (s_c - m)`` per row into the
``*_out`` arrays, and the gradient ``v c p_j - v b_j``, ``c = h + B + 2 z
LSE``, with ``v c p_y - v h - v b_y`` on the target column
(``target_gradient``); no soft cap (the caller runs the row kernel then).

``focal_columns`` restates :func:`crossentropy.losses.focal.categorical_core`
as :mod:`.focal`'s ``focal_rows`` does: per row the loss
``-sum_c a_c q_c^γ log p_c`` and the gradient ``v (u_j - p_j sum_c u_c)``.

The soft weights come as in the row kernels (``bmode`` 0 none, 1 a number
``bvec[0]``, 2 a (C,) vector, 3 a matrix ``bmat``, here (C, R)).
``tests/test_registry.py``'s ``numpy-columns`` path runs every cross-entropy
and focal registry case through them against the core, and its ``numpy`` and
``torch-kernel`` paths run the cross-entropy cases (at most 6 classes)
through ``cross_entropy_few``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._bits import bits_f64, exp_fast, exp_fast_ok, f64_bits, first_argmax, load, store

BLOCK = 512  # rows a block: (C, 512) float64 logits, gradient and scratch stay in cache
_FAST = {"reassoc", "contract"}  # reorder the sums (to vectorise them); no assumption about inf or NaN
_SIGN = np.int64(0x7FFFFFFFFFFFFFFF)

# The loops run over one block's columns ``lo:hi`` of one class at a time,
# through 1-d slices (``xt[c, lo:hi]``, ``e[c]``): numba types those as
# contiguous and their indices from ``range(n)`` as not negative, and the
# loops vectorise; indexing the 2-d arrays, or 2-d block views, directly
# does not (about 7x slower here).


@njit(inline="always")
def _shift(xt, lo, hi, key, m):
    """``m[j] = max_c s_{c,lo+j}`` (NaN if the row holds one), 0 where that is
    not finite, through integer keys (as ``_bits.row_max``: the integer
    maximum vectorises where a NaN-aware float one does not)."""
    n = hi - lo
    for j in range(n):
        key[j] = np.int64(-9223372036854775807)
    for c in range(xt.shape[0]):
        xr = xt[c, lo:hi]
        for j in range(n):
            b = f64_bits(np.float64(xr[j]))
            key[j] = max(key[j], b ^ ((b >> np.int64(63)) & _SIGN))
    for j in range(n):
        k = key[j]
        mx = bits_f64(k ^ ((k >> np.int64(63)) & _SIGN))
        m[j] = mx if np.isfinite(mx) else 0.0


@njit(inline="always")
def _exp_sums(xt, lo, hi, m, e, total):
    """``e[c, j] = e^{s_{c,lo+j} - m_j}`` and ``total[j] = sum_c`` of them;
    where the fast exponential is not right for some element, the block is
    redone with ``math.exp``."""
    n = hi - lo
    for j in range(n):
        total[j] = 0.0
    odd = 0
    for c in range(xt.shape[0]):
        xr, er = xt[c, lo:hi], e[c]
        for j in range(n):
            d = xr[j] - m[j]  # in the wider of the two dtypes
            odd += not exp_fast_ok(d)
            v = exp_fast(d)
            er[j] = v
            total[j] += v
    if odd:
        for j in range(n):
            total[j] = 0.0
        for c in range(xt.shape[0]):
            xr, er = xt[c, lo:hi], e[c]
            for j in range(n):
                v = math.exp(np.float64(xr[j]) - m[j])
                er[j] = v
                total[j] += v


@njit(inline="always")
def _b(bmode, bvec, bmat, c, i):
    """The soft weight ``b_c`` of row ``i`` (0 without one)."""
    if bmode == 1:
        return bvec[0]
    if bmode == 2:
        return bvec[c]
    if bmode == 3:
        return bmat[c, i]
    return 0.0


@njit(inline="always")
def _soft_dot(xt, lo, hi, m, bmode, bvec, bmat, dot):
    """``dot[j] = sum_c b_c (s_c - m)``, with ``0 (s - m) = 0`` (``soft_dot``)."""
    n = hi - lo
    for j in range(n):
        dot[j] = 0.0
    if bmode == 1:
        for c in range(xt.shape[0]):
            xr = xt[c, lo:hi]
            for j in range(n):
                dot[j] += np.float64(xr[j]) - m[j]
        for j in range(n):
            dot[j] *= bvec[0]
    elif bmode == 2:
        for c in range(xt.shape[0]):
            xr, b = xt[c, lo:hi], bvec[c]
            if b != 0:
                for j in range(n):
                    dot[j] += b * (np.float64(xr[j]) - m[j])
    elif bmode == 3:
        for c in range(xt.shape[0]):
            xr, br = xt[c, lo:hi], bmat[c, lo:hi]
            for j in range(n):
                if br[j] != 0:
                    dot[j] += br[j] * (np.float64(xr[j]) - m[j])


@njit(inline="always")
def _gradient(gt, lo, hi, e, factor, v, bmode, bvec, bmat):
    """``g = f e - v b`` (``f = v c / Σ``) over a block, one loop per kind of ``b``."""
    n = hi - lo
    for c in range(gt.shape[0]):
        gr, er = gt[c, lo:hi], e[c]
        if bmode == 0:
            for j in range(n):
                gr[j] = factor[j] * er[j]
        elif bmode == 1:
            b = bvec[0]
            for j in range(n):
                gr[j] = factor[j] * er[j] - v[j] * b
        elif bmode == 2:
            b = bvec[c]
            for j in range(n):
                gr[j] = factor[j] * er[j] - v[j] * b
        else:
            br = bmat[c, lo:hi]
            for j in range(n):
                gr[j] = factor[j] * er[j] - v[j] * br[j]


@njit(inline="always")
def _ce_block(xt, gt, lo, hi, r0, mw, want_grad, col, has_col, hard, v, vc0, bmode, bvec, bmat, z,
              m_out, logsum_out, tshift_out, dot_out):
    """One block: rows ``r0 .. r0 + n`` (the per-row arrays' indices) held as
    the columns ``lo:hi`` of ``xt`` (C, ·), their statistics into the
    ``*_out`` arrays and, with ``want_grad``, their gradient into the same
    columns of ``gt``; ``bmat`` (bmode 3) laid out as ``xt``. ``mw`` (n,):
    where the shift is kept, in the dtype the exponentials are computed in
    (float64 unless both it and ``xt`` are float32; ``m_out[r0:r1]`` itself may serve)."""
    C = xt.shape[0]
    n = hi - lo
    r1 = r0 + n
    mb, sb, tb = m_out[r0:r1], logsum_out[r0:r1], tshift_out[r0:r1]
    vb, vcb, hb = v[r0:r1], vc0[r0:r1], hard[r0:r1]
    key = np.empty(n, np.int64)
    e = np.empty((C, n), mw.dtype)
    factor = np.empty(n)  # v c / Σ
    target = np.empty(n)  # v c p_y - v h
    _shift(xt, lo, hi, key, mw)
    for j in range(n):
        mb[j] = mw[j]
        tb[j] = np.float64(xt[col[r0 + j], lo + j]) - mw[j] if has_col else 0.0
    _soft_dot(xt, lo, hi, mw, bmode, bvec, bmat, dot_out[r0:r1])
    _exp_sums(xt, lo, hi, mw, e, sb)  # sb holds Σ until its log below
    for j in range(n):
        total = sb[j]
        log_sum = math.log(total)
        sb[j] = log_sum
        if not want_grad:
            continue
        vc = vcb[j]
        if z != 0 and vb[j] != 0:
            vc += vb[j] * 2.0 * z * (mb[j] + log_sum)  # z_coefficient
        factor[j] = 0.0 if vc == 0 else vc / total  # probability_factor
        # p_y = e^{s_y - m} / Σ from the exponential already taken (1 / Σ exactly where
        # y holds the maximum, the one case where v c p_y - v h cancels)
        p_y = 0.0 if vc == 0 or not has_col else np.float64(e[col[r0 + j], j]) / total
        target[j] = vc * p_y - vb[j] * hb[j]  # target_gradient, before - v b_y
    if not want_grad:
        return
    _gradient(gt, lo, hi, e, factor, vb, bmode, bvec, bmat)
    if has_col:
        for j in range(n):
            y = col[r0 + j]
            gt[y, lo + j] = target[j] - vb[j] * _b(bmode, bvec, bmat, y, lo + j)


@njit(parallel=True, fastmath=_FAST, cache=True, error_model="numpy")
def cross_entropy_columns(xt, gt, want_grad, col, has_col, hard, v, vc0, bmode, bvec, bmat, z,
                          m_out, logsum_out, tshift_out, dot_out):
    """Logits ``xt`` (C, R), float32 or float64: per-row statistics into the
    ``*_out`` arrays (float64) and, with ``want_grad``, the gradient into
    ``gt`` (C, R) in ``xt``'s dtype (``xt`` itself without ``want_grad``: not written)."""
    R = xt.shape[1]
    blocks = (R + BLOCK - 1) // BLOCK
    for blk in prange(blocks):
        lo, hi = blk * BLOCK, min(R, (blk + 1) * BLOCK)
        _ce_block(xt, gt, lo, hi, lo, m_out[lo:hi], want_grad, col, has_col, hard, v, vc0, bmode, bvec, bmat, z,
                  m_out, logsum_out, tshift_out, dot_out)


@njit(parallel=True, fastmath=_FAST, cache=True, error_model="numpy")
def cross_entropy_few(x, g, work, want_grad, col, has_col, hard, v, vc0, bmode, bvec, bmat, z, want_hits,
                      m_out, logsum_out, tshift_out, dot_out, hits_out):
    """Logits ``x`` (N, C) with the class axis *last* and few classes, in any
    of the row kernel's dtypes (float32, float64, bfloat16 bits as uint16,
    float16 bits as int16): each block of rows is turned into a (C, n) block
    in cache, in the compute dtype (``work``'s, as the row kernel's: float32
    for all but float64, the sums in float64), and run as
    ``cross_entropy_columns`` runs its columns, the gradient turned back into
    ``g``'s rows (which may be ``x``'s: a block is read whole before it is
    written); ``bmat`` (bmode 3) is (N, C) as the row kernel takes it. What
    ``rows`` returns, with no soft cap."""
    N, C = x.shape
    xf, gf = x.reshape(-1), g.reshape(-1)  # (C-contiguous: views)
    blocks = (N + BLOCK - 1) // BLOCK
    for blk in prange(blocks):
        lo, hi = blk * BLOCK, min(N, (blk + 1) * BLOCK)
        n = hi - lo
        xt = np.empty((C, n), work.dtype)
        for c in range(C):  # class by class: measured faster than row by row
            xc = xt[c]
            for j in range(n):
                xc[j] = load(xf, (lo + j) * C + c)
        bt = np.empty((C, n) if bmode == 3 else (1, 1))
        if bmode == 3:
            for j in range(n):
                for c in range(C):
                    bt[c, j] = bmat[lo + j, c]
        if want_hits:  # the first maximum, as the row kernel's hits
            for j in range(n):
                hits_out[lo + j] = first_argmax(xt[:, j]) == col[lo + j]
        gt = np.empty((C, n) if want_grad else (1, 1), work.dtype)
        _ce_block(xt, gt, 0, n, lo, np.empty(n, work.dtype), want_grad, col, has_col, hard, v, vc0, bmode, bvec, bt,
                  z, m_out, logsum_out, tshift_out, dot_out)
        if want_grad:
            for c in range(C):
                gc = gt[c]
                for j in range(n):
                    store(gf, (lo + j) * C + c, gc[j])


@njit(inline="always")
def _focal_term(a, s, m, log_sum, gamma):
    """``(a q^γ log p, u)`` of one class with weight ``a != 0``: ``q = -expm1(log p)``,
    ``u = a (γ q^γ p log p / q - q^γ)``, ``log p / q = -1`` where ``q = 0``."""
    logp = (s - m) - log_sum
    p = math.exp(logp)
    q = -math.expm1(logp)  # 1 - p, exact near p = 1
    qg = q * q if gamma == 2.0 else q**gamma  # 0^0 = 1
    ratio = logp / q if q > 0 else -1.0
    pr = 0.0 if p == 0 else p * ratio
    return a * (qg * logp), a * (gamma * qg * pr - qg)


@njit(parallel=True, fastmath=_FAST, cache=True, error_model="numpy")
def focal_columns(xt, gt, want_grad, col, has_col, counted, hard, v, bmode, bvec, bmat, gamma, loss_out):
    """Logits ``xt`` (C, R), float32 or float64: each row's loss into
    ``loss_out`` (float64) and, with ``want_grad``, the gradient times ``v``
    into ``gt`` (C, R) in ``xt``'s dtype."""
    C, R = xt.shape
    blocks = (R + BLOCK - 1) // BLOCK
    for blk in prange(blocks):
        lo, hi = blk * BLOCK, min(R, (blk + 1) * BLOCK)
        n = hi - lo
        vb = v[lo:hi]
        key = np.empty(n, np.int64)
        m = np.empty(n)
        total = np.empty(n)
        e = np.empty((C, n))
        u = np.zeros((C, n))  # u_c, 0 where a_c = 0
        usum = np.zeros(n)
        _shift(xt, lo, hi, key, m)
        _exp_sums(xt, lo, hi, m, e, total)
        for j in range(n):
            i = lo + j
            log_sum = math.log(total[j])
            loss = 0.0
            hard_here = counted[i] and has_col and hard[i] != 0
            if hard_here:  # the target column's weight, h (+ b_y)
                y = col[i]
                term, uy = _focal_term(hard[i] + _b(bmode, bvec, bmat, y, i), np.float64(xt[y, i]), m[j], log_sum,
                                       gamma)
                loss += term
                u[y, j] = uy
                usum[j] += uy
            if counted[i] and bmode != 0:  # the soft weights b_c of the other columns
                for c in range(C):
                    if hard_here and c == col[i]:
                        continue
                    a = _b(bmode, bvec, bmat, c, i)
                    if a != 0:
                        term, uc = _focal_term(a, np.float64(xt[c, i]), m[j], log_sum, gamma)
                        loss += term
                        u[c, j] = uc
                        usum[j] += uc
            loss_out[i] = -loss
            total[j] = 1.0 / total[j]
        if not want_grad:
            continue
        for c in range(C):  # v (u_j - p_j sum_c u_c), p_j = e^{s_j - m} / Σ
            gr, ur, er = gt[c, lo:hi], u[c], e[c]
            for j in range(n):
                gr[j] = (ur[j] - (er[j] * total[j]) * usum[j]) * vb[j]
