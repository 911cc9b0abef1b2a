"""The categorical focal loss of NumPy arrays through the compiled row kernel
(:func:`crossentropy._cpu.focal.focal_rows`), or the column kernel for logits
with the class axis first (:mod:`crossentropy._cpu.columns`): what
:func:`crossentropy.losses.focal.categorical_core` returns, each row's loss
and gradient from one pass over it, the value from the same ``_reduce``."""

from __future__ import annotations

import numpy as np

from .. import _reduce
from ..losses import cross_entropy as ce_math
from .._cpu import soft_weights
from . import class_first, per_row, use_threads

__all__ = ["core"]


def core(problem, gamma, *, need_grad=False, grad_output=None):
    """``(value, grad or None)`` of a validated :class:`~crossentropy.losses._targets.Categorical`
    whose ``x`` is a float32 or float64 NumPy array, as ``math.categorical_core`` gives them."""
    from .._cpu.columns import focal_columns
    from .._cpu.focal import focal_rows

    p, xp = problem, problem.xp
    opt = p.options
    e, C = opt.label_smoothing, p.num_classes
    xt = class_first(p.x)
    x = np.ascontiguousarray(p.x).reshape(-1, C) if xt is None else None
    N, dt = (x.shape[0] if xt is None else xt.shape[1]), p.x.dtype
    counted = per_row(p.counted, N, np.bool_)
    if p.probs is None:
        # a = w ((1 - e) onehot + e / C): the hard part (1 - e) w_y on the target
        # column, the soft weights e w / C on every column
        t = ce_math.index_targets(xp, p.index, p.counted, p.weight, e, C, dt)
        col, has_col = per_row(p.index, N, np.int64), True
        hard = per_row(t.hard, N)
        b = ce_math.smoothing_weights(p.weight, e, C) if e > 0 else None
        wy = ce_math.index_targets(xp, p.index, p.counted, p.weight, 0.0, C, dt).wy
    else:
        col, has_col, hard = np.zeros(N, np.int64), False, np.zeros(N)
        b = ce_math.probability_weights(xp, p.probs, p.weight, e, C)
        wy = None
    den = ce_math.mean_denominator(xp, wy, p.rows, None, dt, p.x) if opt.reduction == "mean" else None
    v = np.zeros(N)
    if need_grad:
        g_rows = _reduce.scale(xp, grad_output, opt.reduction, p.rows, dt, p.x, den)
        v = per_row(g_rows, N)
    bmode, bvec, bmat = soft_weights(b, C, np.float64, columns=xt is not None)
    loss = np.empty(N)
    use_threads(N * C)
    if xt is None:
        g = np.empty_like(x) if need_grad else x
        focal_rows(x, g, need_grad, col, has_col, counted, hard, v, bmode, bvec, bmat, float(gamma), loss)
        grad = g.reshape(p.x.shape) if need_grad else None
    else:  # class axis first: the column kernel, the gradient in the same layout
        gt = np.empty_like(xt) if need_grad else xt
        focal_columns(xt, gt, need_grad, col, has_col, counted, hard, v, bmode, bvec, bmat, float(gamma), loss)
        grad = np.moveaxis(gt.reshape((C,) + p.rows), 0, -1) if need_grad else None
    value = _reduce.reduce(xp, loss.reshape(p.rows).astype(dt), opt.reduction, den)
    return value, grad
