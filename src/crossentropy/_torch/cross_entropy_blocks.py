"""The passes of cross-entropy over a block of rows, for torch tensors: the
exponential pass, the merge across vocabulary shards, the loss rows, the
gradient written in place, the target column. Each calls the row math of
:mod:`crossentropy.losses.cross_entropy` and applies it with in-place torch
operations, one trip over a block in cache each. The whole-tensor driver is
:mod:`crossentropy._torch.cross_entropy`; linear cross-entropy calls
:func:`block_loss_and_grad_` on the logits of each of its chunks.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .._array import namespace
from ..losses import cross_entropy as math

__all__ = ["XP", "Targets", "index_block_targets", "probability_block_targets", "block_targets", "Pass", "exp_pass_",
           "Rows", "finish_rows", "row_coefficients", "gradient_pass_", "write_target_column_", "capped_",
           "block_loss_and_grad_"]

XP = namespace(x=torch.empty(0))  # the array-API namespace of torch tensors, for the row math


def _xp():
    return XP


class Targets(NamedTuple):
    """A block's (or every row's) targets, as the passes need them."""

    t: Any  # math.RowTargets (for probabilities, ``soft`` is filled in by the exponential pass)
    column: Any  # (n,) int64 target column in these logits, 0 where there is none; None for probabilities
    here: Any  # (n,) bool: the column is the row's counted target (index targets)
    b: Any  # soft weights: (C,) or a number (index smoothing), (n, C) (probabilities), or None
    probs: Any  # (n, C) probability target, or None


def index_block_targets(index, counted, weight, options, vocab, dtype, shards=None) -> Targets:
    """Targets of class indices (``index`` safe; global indices with ``shards``)."""
    e = options.label_smoothing
    t = math.index_targets(_xp(), index, counted, weight, e, vocab, dtype)
    column, here = (index, counted) if shards is None else shards.local_columns(index, counted)
    local_w = weight if shards is None else shards.local(weight)
    b = math.smoothing_weights(local_w, e, vocab) if e > 0 else None
    return Targets(t, column, here, b, None)


def probability_block_targets(probs, weight, options, counted=None) -> Targets:
    """Targets of class probabilities; ``counted`` (default: every row) masks
    rows that have no target (linear cross-entropy's shift)."""
    b = math.probability_weights(_xp(), probs, weight, options.label_smoothing, probs.shape[1])
    if counted is None:
        counted = torch.ones(probs.shape[0], dtype=torch.bool, device=probs.device)
    return Targets(math.RowTargets(counted, None, None, None), None, None, b, probs)


def block_targets(tg: Targets, r0, r1) -> Targets:
    """The slice of every-row targets that one block uses."""
    t = tg.t
    cut = (lambda a: None if a is None else a[r0:r1])
    b = tg.b if tg.probs is None else tg.b[r0:r1]
    return Targets(math.RowTargets(*map(cut, t)), cut(tg.column), cut(tg.here), b, cut(tg.probs))


class Pass(NamedTuple):
    """A block's statistics after its exponential pass (``work`` holds e^{s - m})."""

    m_raw: Any  # (n,) the row maxima as found (-inf for a row of -inf)
    m: Any  # (n,) the shift used: m_raw, or 0 where that is not finite
    sum_exp: Any  # (n,) sum_c e^{s_c - m}
    dot: Any  # (n,) sum_c b_c (s_c - m), or None
    soft: Any  # (n,) B = sum_c b_c of probability targets, or None
    hits: Any  # (n,) argmax == target, or None


def exp_pass_(work, src, tg: Targets, truth=None) -> Pass:
    """Writes e^{s - m} into ``work``; ``src`` holds the (capped) logits s in
    ``work``'s dtype and may be ``work`` itself. ``work=None``: the same
    statistics out of place, for autograd to record (the vocab-parallel
    reference); the shift is a constant there, as the loss does not depend on it."""
    hits = None if truth is None else src.argmax(1) == truth
    m_raw = src.detach().amax(1)
    m = m_raw.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)  # no finite maximum: shift by 0
    shifted = src - m[:, None] if work is None else torch.sub(src, m[:, None], out=work)  # exact where s is near m
    dot = None if tg.b is None else math.soft_dot(_xp(), tg.b, shifted)
    soft = None if tg.probs is None else tg.b.sum(1)
    e = shifted.exp() if work is None else shifted.exp_()  # e^(s - m), the only exponential pass
    return Pass(m_raw, m, e.sum(1), dot, soft, hits)


class Rows(NamedTuple):
    """Per-row results, after any merge across shards."""

    t: Any  # math.RowTargets, complete
    log_sum: Any  # log sum_c e^{s_c - m} (global)
    sum_exp: Any
    lse: Any
    delta: Any  # m_r - m (shards), or None
    column_shifted: Any  # s_column - m (global shift), or None
    loss: Any
    m: Any  # (n,) the shift of the statistics: the global one with shards


def finish_rows(st: Pass, tg: Targets, raw_column, options, shards=None) -> Rows:
    """Loss rows from a run of blocks' statistics; with ``shards``, first moves
    every rank's statistics to the global shift and sums them (two all-reduces)."""
    xp = _xp()
    t = tg.t if st.soft is None else tg.t._replace(soft=st.soft)
    m, sum_exp, dot = st.m, st.sum_exp, st.dot
    shifted = None if raw_column is None else math.softcap(xp, raw_column, options.softcap) - m
    target_shifted, delta = shifted, None
    if shards is not None:
        top = shards.all_max(st.m_raw.clone())  # collective 1: 4 bytes a row
        m_global = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        delta = m - m_global
        soft_here = None if dot is None else shards.soft_total(t.counted, options.label_smoothing, sum_exp.dtype)
        packed = torch.stack(math.reshift(xp, delta, sum_exp, shifted, tg.here, dot, soft_here))
        packed = shards.all_sum(packed)  # collective 2: 4 to 12 bytes a row
        m, sum_exp = m_global, packed[0]
        target_shifted = None if shifted is None else packed[1]
        dot = None if dot is None else packed[-1]
        shifted = None if shifted is None else shifted + delta
    log_sum = torch.log(sum_exp)
    lse = m + log_sum
    loss = math.row_loss(xp, t, log_sum, target_shifted, dot, lse, options.z_loss)
    return Rows(t, log_sum, sum_exp, lse, delta, shifted, loss, m)


def row_coefficients(t, v, lse, z, vc=None):
    """v c = v (h + B) + v 2 z LSE (``vc``: the first part, when hoisted)."""
    xp = _xp()
    vc = math.coefficient(xp, t, v) if vc is None else vc
    return vc if z == 0 else vc + math.z_coefficient(xp, lse, t.counted, v, z)


def gradient_pass_(work, factor, v, b, slope):
    """``work`` (holding e^{s - m}) becomes ``v c p_j - v b_j``, times the cap's
    slope; ``factor`` is ``v c / Σ`` (``math.probability_factor``)."""
    work.mul_(factor[:, None])
    if b is not None:
        work.sub_(v[:, None] * b)
    if slope is not None:
        work.mul_(slope)


def write_target_column_(grad, tg: Targets, rows: Rows, vc, v, raw_column, cap):
    """The target column of each row from the row statistics,
    ``math.target_gradient`` times the cap's slope there; rows whose target is
    elsewhere (ignored, or on another shard) get their off-target value."""
    xp = _xp()
    p_col = torch.exp(rows.column_shifted - rows.log_sum)
    b_col = None if tg.b is None else (tg.b if isinstance(tg.b, float) else tg.b[tg.column])
    hard = torch.where(tg.here, rows.t.hard, torch.zeros_like(rows.t.hard))
    g = math.target_gradient(xp, hard, vc, p_col, v, b_col)
    if cap is not None:
        g = g * math.softcap_slope(xp, raw_column, cap)
    # index_put_ writes the n elements; torch's CPU scatter_ into a bfloat16
    # tensor would convert the whole tensor to do the same
    grad.index_put_((torch.arange(grad.shape[0], device=grad.device), tg.column), g.to(grad.dtype))


def capped_(work, cap):
    """The soft cap applied to ``work`` in place (``math.softcap``)."""
    return work if cap is None else work.div_(cap).tanh_().mul_(cap)


def block_loss_and_grad_(work, tg: Targets, options, *, v=None, raw=None, shards=None):
    """Cross-entropy of one block of logits held in ``work`` (n, C), compute
    dtype, which linear cross-entropy has just formed: returns the (n,) loss
    rows, and with ``v`` (the (n,) row scale, 0 on ignored rows) ``work``
    becomes ``v d loss / d logits``. ``raw``: the logits before the soft cap,
    when the caller still has them (else copied here when needed)."""
    cap = options.softcap
    if cap is not None and raw is None and v is not None:
        raw = work.clone()
    raw_column = None
    if tg.column is not None:
        raw_column = (work if raw is None else raw).gather(1, tg.column[:, None])[:, 0]
    capped_(work, cap)
    st = exp_pass_(work, work, tg)
    rows = finish_rows(st, tg, raw_column, options, shards)
    if v is None:
        return rows.loss
    vc = row_coefficients(rows.t, v, rows.lse, options.z_loss)
    factor = math.probability_factor(_xp(), vc, rows.sum_exp)
    if rows.delta is not None:
        factor = factor * torch.exp(rows.delta)  # work holds e^{s - m_r}: e^{m_r - m} turns it into e^{s - m}
    gradient_pass_(work, factor, v, tg.b, None if cap is None else math.softcap_slope(_xp(), raw, cap))
    if tg.column is not None:
        write_target_column_(work, tg, rows, vc, v, raw_column, cap)
    return rows.loss
