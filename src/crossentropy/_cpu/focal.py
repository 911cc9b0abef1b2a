r"""The categorical focal loss on CPU in one parallel region: each row's
maximum, exponentials, focal terms and gradient done while the row is in
cache, rows split over threads (numba ``prange``), in float64 whatever the
logits' dtype (float32 or float64).

It restates, in scalar loops, :func:`crossentropy.losses.focal.categorical_core`
(``tests/test_cpu_kernels.py`` runs every focal registry case through it
against the core):

* ``m = max_c s_c`` (0 where that is not finite), ``Σ = sum_c e^{s_c - m}``,
  ``log p_c = (s_c - m) - log Σ`` (``_stable.log_softmax``), ``p_c = e^{s_c - m} / Σ``;
* for each class with a target weight ``a_c != 0`` (the product with a zero
  weight is 0, whatever its factor: ``masked_product``): ``q = -expm1(log p)``
  (``1 - p``, exact near p = 1), ``q^γ``, the loss term ``a q^γ log p``, and
  ``u_c = a (γ q^γ p log p / q - q^γ)``, with ``log p / q = -1`` where ``q = 0``;
* the loss ``-sum_c a_c q_c^γ log p_c`` and the gradient
  ``v (u_j - p_j sum_c u_c)``, ``v`` the row's scale.

The target weights ``a_c = w_c ((1 - ε) t_c + ε / C)`` come as
``cross_entropy``'s do: the hard part ``h = (1 - ε) w_y`` on the column
``col`` (index targets, ``has_col``), the soft weights ``b`` as ``bmode``: 0
none, 1 the number ``ε / C`` (``bvec[0]``), 2 a vector ``(C,)``, 3 a matrix
``(N, C)`` (probability targets); every weight 0 on a row not ``counted``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._bits import row_max
from .cross_entropy import _FAST, _exp_sum_in_place


@njit(inline="always")
def _weight(i, c, col, has_col, hard, bmode, bvec, bmat):
    """The target weight ``a_c`` of row ``i``: ``h [c = y] + b_c``."""
    a = hard[i] if has_col and c == col[i] else 0.0
    if bmode == 1:
        a += bvec[0]
    elif bmode == 2:
        a += bvec[c]
    elif bmode == 3:
        a += bmat[i, c]
    return a


@njit(parallel=True, fastmath=_FAST, cache=True, error_model="numpy")  # 1 / 0 is inf, not an exception
def focal_rows(x, g, want_grad, col, has_col, counted, hard, v, bmode, bvec, bmat, gamma, loss_out):
    """Logits ``x`` (N, C), float32 or float64: each row's loss into
    ``loss_out`` (float64) and, with ``want_grad``, the gradient times ``v``
    into ``g`` (``x``'s dtype)."""
    N, C = x.shape
    blocks = max(1, min(N, 64))
    for blk in prange(blocks):
        e = np.empty(C)  # e^{s - m}
        u = np.empty(C)  # u_c, 0 where a_c = 0
        for i in range(blk * N // blocks, (blk + 1) * N // blocks):
            xr = x[i]
            mx = np.float64(row_max(xr))
            m = mx if np.isfinite(mx) else 0.0
            for c in range(C):
                e[c] = xr[c]
            total = _exp_sum_in_place(e, m)  # e = e^{s - m}, the fast exponential where it is right
            log_sum = math.log(total)
            loss = 0.0
            usum = 0.0
            for c in range(C):
                a = _weight(i, c, col, has_col, hard, bmode, bvec, bmat) if counted[i] else 0.0
                if a == 0:
                    u[c] = 0.0
                    continue
                logp = (np.float64(xr[c]) - m) - log_sum
                p = math.exp(logp)
                q = -math.expm1(logp)  # 1 - p
                qg = q * q if gamma == 2.0 else q**gamma  # 0^0 = 1
                loss += a * (qg * logp)
                ratio = logp / q if q > 0 else -1.0  # log p / (1 - p), -1 in the limit p -> 1
                pr = 0.0 if p == 0 else p * ratio
                uc = a * (gamma * qg * pr - qg)
                u[c] = uc
                usum += uc
            loss_out[i] = -loss
            if not want_grad:
                continue
            vi = v[i]
            inv = 1.0 / total
            gr = g[i]
            for c in range(C):
                gr[c] = (u[c] - (e[c] * inv) * usum) * vi
