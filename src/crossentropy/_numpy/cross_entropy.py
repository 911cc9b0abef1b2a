"""Cross-entropy through the compiled row kernel
(:func:`crossentropy._cpu.cross_entropy.rows`), the few-classes kernel for
up to :data:`FEW_CLASSES` classes, or the column kernel for logits with the
class axis first (both :mod:`crossentropy._cpu.columns`): what
:func:`crossentropy.losses.cross_entropy.core` returns, its row statistics
and gradient from one pass over each row, the loss rows from the same
``row_loss`` and the value from the same ``_reduce``.

:func:`rows` is the one driver of the row kernel: NumPy arrays come to it
through :func:`core`, CPU torch tensors through
``crossentropy._torch.cross_entropy_cpu`` (as NumPy views of their memory,
half precision as its bits), so that the targets, the row scale and the
reduction around the kernel are NumPy operations on both: a few microseconds
each, where the same on small torch tensors costs several times that."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _cpu, _reduce
from ..losses import cross_entropy as math
from .._cpu import soft_weights
from . import class_first, per_row, use_threads

__all__ = ["core", "rows"]

_NO_WORK = {np.dtype(np.float32): np.empty(0, np.float32), np.dtype(np.float64): np.empty(0, np.float64)}
_NO_HITS = np.zeros(1, np.bool_)  # the kernels' hits argument when no statistics are asked for

# Classes up to which logits with the class axis last go to the few-classes
# kernel (``_cpu.columns.cross_entropy_few``: loops along the rows of each
# block, which vectorise) instead of the row kernel (loops along a row, which
# for a handful of classes are mostly per-row overhead): a step in 0.50x to
# 0.79x the row kernel's at 3 to 16 classes, 0.98x at 4096 rows, where the
# step is fixed cost (BENCHMARKS.md, "Few classes"). The registry's ``torch-rows`` path sets it
# to 0 to run its cases, which all have few classes, through the row kernel.
FEW_CLASSES = 16


class _Rows(NamedTuple):
    t: math.RowTargets
    b: object  # the soft weights: None, a number, (C,) or (..., C)
    col: np.ndarray  # (N,) int64 target column (the target's argmax for probabilities with stats)
    has_col: bool  # index targets
    den: object  # what "mean" divides by, or None
    v: object  # the row scale, 0 on ignored rows (None: no gradient)
    vc0: object  # v (h + B)


def _prepare(p, dt, N, num_items, need_grad, grad_output, want_stats=False) -> _Rows:
    """The targets and the row scale of a NumPy problem, before the kernel."""
    xp, opt, C = p.xp, p.options, p.num_classes
    e = opt.label_smoothing
    if p.probs is None:
        t = math.index_targets(xp, p.index, p.counted, p.weight, e, C, dt)
        b = math.smoothing_weights(p.weight, e, C) if e > 0 else None
        col, has_col = per_row(p.index, N, np.int64), True
    else:
        b = math.probability_weights(xp, p.probs, p.weight, e, C)
        t = math.probability_targets(xp, b)
        col, has_col = np.zeros(N, np.int64), False
        if want_stats:  # a hit is then the argmax of the target
            col = per_row(xp.argmax(p.probs, axis=-1), N, np.int64)
    den = math.mean_denominator(xp, t.wy, p.rows, num_items, dt, p.counted) if opt.reduction == "mean" else None
    v = vc0 = None
    if need_grad:  # the row scale v, 0 on ignored rows, and v (h + B)
        v = _reduce.scale(xp, grad_output, opt.reduction, p.rows, dt, p.counted, den)
        v = np.where(t.counted, v, 0).astype(dt, copy=False)  # (NumPy 1 may promote the 0-d case)
        vc0 = math.coefficient(xp, t, v)
    return _Rows(t, b, col, has_col, den, v, vc0)


def _kernel_args(r, N):
    """The per-row arrays the kernels take after the target column."""
    return per_row(r.t.hard, N), per_row(r.v, N), per_row(r.vc0, N)


def _finish(p, r, outs, dt, want_lse=False):
    """``(value in dt, lse or None)`` from the kernel's statistics ``(m, log Σ, s_y - m, Σ b_c (s_c - m))``
    (rows of ``outs``); ``lse`` with ``want_lse`` or a z-loss, which needs it."""
    shape, z = p.rows, p.options.z_loss
    m, log_sum, target_shifted, dot = outs if len(shape) == 1 else (a.reshape(shape) for a in outs)
    lse = m + log_sum if want_lse or z > 0 else None
    loss = math.row_loss(p.xp, r.t, log_sum, target_shifted if r.has_col else None,
                         None if r.b is None else dot, lse, z)
    return _reduce.reduce(p.xp, loss.astype(dt, copy=False), p.options.reduction, r.den), lse


def rows(p, x, dt, num_items=None, *, grad=None, inplace=False, grad_output=None, want_stats=False,
         threads=None):
    """The row kernel on ``x``, the (N, C) C-contiguous logits of the NumPy
    problem ``p`` (its targets, weights and options; ``p.rows`` the row
    shape), float32 or float64, or half precision as bits (bfloat16 as
    uint16, float16 as int16) computed in ``dt``. With ``grad`` (an (N, C)
    array of x's dtype, or ``x`` itself with ``inplace``) the gradient times
    ``grad_output`` (ones when None) is written into it. ``threads``: the
    caller's thread limit (torch's), else numba's.

    Returns ``(value, stats)``: the value in ``dt`` (0-d, or ``p.rows`` for
    ``"none"``) and, with ``want_stats``, ``(lse, z_rows, accuracy)`` in ``dt``."""
    N, C = x.shape
    opt = p.options
    r = _prepare(p, dt, N, num_items, grad is not None, grad_output, want_stats)
    outs = np.empty((4, N))  # m, log Σ, s_y - m, dot: one allocation, its rows to the kernel
    hits = np.zeros(N, np.bool_) if want_stats else _NO_HITS  # (written only with want_stats)
    if threads is None:  # a NumPy call: the estimator's larger grain (_numpy.PER_THREAD)
        use_threads(N * C)
    else:  # a torch call: torch's grain (_cpu.PER_THREAD) and thread count
        _cpu.use_threads(N * C, threads)
    g, want_grad, z = x if grad is None else grad, grad is not None, float(opt.z_loss)
    if C <= FEW_CLASSES and not opt.softcap:  # loops along the rows of a block turned on its side
        from .._cpu.columns import cross_entropy_few

        cross_entropy_few(x, g, _NO_WORK[np.dtype(dt)], want_grad, r.col, r.has_col, *_kernel_args(r, N),
                          *soft_weights(r.b, C, dt), z, want_stats, *outs, hits)
    else:
        from .._cpu.cross_entropy import rows as kernel

        kernel(x, g, _NO_WORK[np.dtype(dt)], want_grad, inplace, r.col, r.has_col, *_kernel_args(r, N),
               *soft_weights(r.b, C, dt), z, float(opt.softcap or 0.0), want_stats, *outs, hits)
    value, lse = _finish(p, r, outs, dt, want_stats)
    if not want_stats:
        return value, None
    z_rows = np.where(r.t.counted, opt.z_loss * lse * lse, 0.0).astype(dt)
    return value, (lse.astype(dt), z_rows, math.token_accuracy(p.xp, hits.reshape(p.rows), r.t.counted, dt))


def core(problem, num_items=None, *, need_grad=False, grad_output=None):
    """``(value, grad or None)`` of a validated :class:`~crossentropy.losses._targets.Categorical`
    whose ``x`` is a float32 or float64 NumPy array, as ``math.core`` gives them."""
    from .._cpu.columns import cross_entropy_columns

    p = problem
    dt = p.x.dtype
    xt = None if p.options.softcap else class_first(p.x)
    if xt is None:
        x = np.ascontiguousarray(p.x).reshape(-1, p.num_classes)
        g = np.empty_like(x) if need_grad else None
        value, _ = rows(p, x, dt, num_items, grad=g, grad_output=grad_output)
        return value, None if g is None else g.reshape(p.x.shape)
    # class axis first: the column kernel, the gradient in the same layout
    C, N = xt.shape
    r = _prepare(p, dt, N, num_items, need_grad, grad_output)
    outs = [np.empty(N) for _ in range(4)]
    use_threads(N * C)
    gt = np.empty_like(xt) if need_grad else xt
    cross_entropy_columns(xt, gt, need_grad, r.col, r.has_col, *_kernel_args(r, N),
                          *soft_weights(r.b, C, dt, columns=True), float(p.options.z_loss), *outs)
    value, _ = _finish(p, r, outs, dt)
    return value, np.moveaxis(gt.reshape((C,) + p.rows), 0, -1) if need_grad else None
