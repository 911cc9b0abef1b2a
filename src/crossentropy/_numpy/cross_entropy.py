"""Cross-entropy of NumPy arrays through the compiled row kernel
(:func:`crossentropy._cpu.cross_entropy.rows`), or the column kernel for
logits with the class axis first (:mod:`crossentropy._cpu.columns`): what
:func:`crossentropy.losses.cross_entropy.core` returns, its row statistics
and gradient from one pass over each row, the loss rows from the same
``row_loss`` and the value from the same ``_reduce``."""

from __future__ import annotations

import numpy as np

from .. import _reduce
from ..losses import cross_entropy as math
from .._cpu import soft_weights
from . import class_first, per_row, use_threads

__all__ = ["core"]

_NO_WORK = {np.dtype(np.float32): np.empty(0, np.float32), np.dtype(np.float64): np.empty(0, np.float64)}



def core(problem, num_items=None, *, need_grad=False, grad_output=None):
    """``(value, grad or None)`` of a validated :class:`~crossentropy.losses._targets.Categorical`
    whose ``x`` is a float32 or float64 NumPy array, as ``math.core`` gives them."""
    from .._cpu.columns import cross_entropy_columns
    from .._cpu.cross_entropy import rows

    p, xp = problem, problem.xp
    opt = p.options
    e, C, z, cap = opt.label_smoothing, p.num_classes, opt.z_loss, opt.softcap
    xt = None if cap else class_first(p.x)
    x = np.ascontiguousarray(p.x).reshape(-1, C) if xt is None else None
    N, dt = (x.shape[0] if xt is None else xt.shape[1]), p.x.dtype
    if p.probs is None:
        t = math.index_targets(xp, p.index, p.counted, p.weight, e, C, dt)
        b = math.smoothing_weights(p.weight, e, C) if e > 0 else None
        col, has_col = per_row(p.index, N, np.int64), True
    else:
        b = math.probability_weights(xp, p.probs, p.weight, e, C)
        t = math.probability_targets(xp, b)
        col, has_col = np.zeros(N, np.int64), False
    den = math.mean_denominator(xp, t.wy, p.rows, num_items, dt, p.x) if opt.reduction == "mean" else None
    v = vc0 = None
    if need_grad:  # the row scale v, 0 on ignored rows, and v (h + B)
        v = _reduce.scale(xp, grad_output, opt.reduction, p.rows, dt, p.x, den)
        v = np.where(t.counted, v * np.ones(p.rows, dt), 0).astype(dt)
        vc0 = math.coefficient(xp, t, v)
    bmode, bvec, bmat = soft_weights(b, C, dt, columns=xt is not None)
    outs = [np.empty(N) for _ in range(4)]
    hard, vs, vcs = per_row(t.hard, N), per_row(v, N), per_row(vc0, N)
    use_threads(N * C)
    if xt is None:
        g = np.empty_like(x) if need_grad else x
        rows(x, g, _NO_WORK[dt], need_grad, False, col, has_col, hard, vs, vcs, bmode,
             bvec, bmat, float(z), float(cap or 0.0), False, *outs, np.zeros(N, np.bool_))
        grad = g.reshape(p.x.shape) if need_grad else None
    else:  # class axis first: the column kernel, the gradient in the same layout
        gt = np.empty_like(xt) if need_grad else xt
        cross_entropy_columns(xt, gt, need_grad, col, has_col, hard, vs, vcs, bmode, bvec, bmat, float(z), *outs)
        grad = np.moveaxis(gt.reshape((C,) + p.rows), 0, -1) if need_grad else None
    m, log_sum, target_shifted, dot = (a.reshape(p.rows) for a in outs)
    loss = math.row_loss(xp, t, log_sum, target_shifted if has_col else None, None if b is None else dot,
                         m + log_sum, z)
    value = _reduce.reduce(xp, loss.astype(dt), opt.reduction, den)
    return value, grad
