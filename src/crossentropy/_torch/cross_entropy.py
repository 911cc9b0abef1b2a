r"""Fused cross-entropy for torch tensors: passes over memory, nothing more.

The math is :mod:`crossentropy.losses.cross_entropy`'s (row statistics in,
loss rows and gradient coefficients out); this module only walks the logits
in cache-sized blocks of rows and calls it. For each block it reads the
logits once (float32 logits straight into the gradient buffer, half-precision
ones converted into a block-sized float32 buffer), takes the row maximum
``m``, writes ``s - m`` and then ``e^{s - m}`` in place, sums it, and turns it
into the gradient in place, ``v c p_j - v b_j`` times the soft cap's slope
(the formula of ``losses.cross_entropy``'s docstring, applied with in-place
torch operations so that each is one trip over a block in cache). The target
column is written after the loop, from the row statistics
(``math.target_gradient``). What depends only on the targets (``w_y``, ``h``,
``B``, the row scale ``v``, ``v (h + B)``) is computed once for all rows
before the loop. The gradient is kept for a backward that only multiplies it
by ``grad_output`` (:func:`crossentropy._autograd.kept_gradient`).

Vocab-parallel cross-entropy runs the same blocks with ``shards``
(:class:`crossentropy._torch.distributed.VocabShards`): each block is shifted
by its own shard's maximum; after the loop the statistics of every rank are
moved to the global shift and summed (``math.reshift``, two all-reduces), and
a second sweep scales the kept exponentials.

Why blocks of torch operations (measured on this project's 2-core CPU;
``BENCHMARKS.md``): over 2 MiB blocks that stay in cache, a step at N=4096,
V=32000 takes the time of the same passes over the whole tensor or less
(``benchmarks/bench_chunk_bytes.py``) and needs no second logits-sized
buffer for half precision. Nothing here reads a device value back to the
host, so the same code is what CUDA tensors run and ``torch.compile`` traces.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .. import _reduce
from .._array import namespace
from .._autograd import kept_gradient
from ..losses import cross_entropy as math

__all__ = ["fused_cross_entropy", "block_loss_and_grad_", "rows_per_block"]

# Rows per block so that a float32 block is about this many bytes: small
# enough to stay in L2/L3 between the passes over it.
_BLOCK_BYTES = 1 << 21


def rows_per_block(n_classes: int) -> int:
    return max(1, _BLOCK_BYTES // (4 * max(1, n_classes)))


def _xp():
    return namespace(x=torch.empty(0))


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


def _rows(tg: Targets, r0, r1) -> Targets:
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
    ``work``'s dtype and may be ``work`` itself."""
    hits = None if truth is None else src.argmax(1) == truth
    m_raw = src.amax(1)
    m = torch.where(torch.isfinite(m_raw), m_raw, torch.zeros_like(m_raw))
    torch.sub(src, m[:, None], out=work)  # s - m: exact where s is near m
    dot = None if tg.b is None else math.soft_dot(_xp(), tg.b, work)
    soft = None if tg.probs is None else tg.b.sum(1)
    work.exp_()  # e^(s - m), the only exponential pass
    return Pass(m_raw, m, work.sum(1), dot, soft, hits)


class Rows(NamedTuple):
    """Per-row results, after any merge across shards."""

    t: Any  # math.RowTargets, complete
    log_sum: Any  # log sum_c e^{s_c - m} (global)
    sum_exp: Any
    lse: Any
    delta: Any  # m_r - m (shards), or None
    column_shifted: Any  # s_column - m (global shift), or None
    loss: Any


def finish_rows(st: Pass, tg: Targets, raw_column, options, shards=None) -> Rows:
    """Loss rows from a run of blocks' statistics; with ``shards``, first moves
    every rank's statistics to the global shift and sums them (two all-reduces)."""
    xp = _xp()
    t = tg.t if st.soft is None else tg.t._replace(soft=st.soft)
    m, sum_exp, dot = st.m, st.sum_exp, st.dot
    shifted = None if raw_column is None else math.softcap(xp, raw_column, options.softcap) - m
    target_shifted, delta = shifted, None
    if shards is not None:
        top = st.m_raw.clone()
        shards.all_max_(top)  # collective 1: 4 bytes a row
        m_global = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        delta = m - m_global
        soft_here = None if dot is None else shards.soft_total(t.counted, options.label_smoothing, sum_exp.dtype)
        packed = torch.stack(math.reshift(xp, delta, sum_exp, shifted, tg.here, dot, soft_here))
        shards.all_sum_(packed)  # collective 2: 4 to 12 bytes a row
        m, sum_exp = m_global, packed[0]
        target_shifted = None if shifted is None else packed[1]
        dot = None if dot is None else packed[-1]
        shifted = None if shifted is None else shifted + delta
    log_sum = torch.log(sum_exp)
    lse = m + log_sum
    loss = math.row_loss(xp, t, log_sum, target_shifted, dot, lse, options.z_loss)
    return Rows(t, log_sum, sum_exp, lse, delta, shifted, loss)


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


def _capped_(work, cap):
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
    _capped_(work, cap)
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


# ----------------------------------------------------------------------------
# The whole logits tensor: the driver behind crossentropy.cross_entropy.
# ----------------------------------------------------------------------------


def _forward(x, problem, num_items, want_grad, inplace, want_stats, shards=None):
    """Loss (reduced, x's dtype), the kept unit gradient (or None) and stats."""
    N, C = x.shape
    xp = _xp()
    opt = problem.options
    cap, z = opt.softcap, opt.z_loss
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    vocab = C if shards is None else shards.vocab
    if problem.probs is None:
        tg = index_block_targets(problem.index.reshape(-1), problem.counted.reshape(-1), problem.weight, opt,
                                 vocab, cdt, shards)
        raw_column = x.gather(1, tg.column[:, None])[:, 0].to(cdt)  # before inplace_backward overwrites x
        truth = tg.column if want_stats else None
    else:
        tg = probability_block_targets(problem.probs.reshape(-1, C), problem.weight, opt)
        raw_column, truth = None, (tg.probs.argmax(1) if want_stats else None)
    den = None
    if opt.reduction == "mean":
        den = math.mean_denominator(xp, tg.t.wy, (N,), num_items, cdt, x)
    v = vc0 = grad = keep = None
    if want_grad:
        unit = _reduce.unit_scale(xp, opt.reduction, cdt, x, den)
        v = torch.where(tg.t.counted, unit, torch.zeros((), dtype=cdt, device=x.device))
        vc0 = None if tg.probs is not None else math.coefficient(xp, tg.t, v)
        grad = x if inplace else torch.empty_like(x)
        # With shards the exponentials wait for the merge: keep them in the
        # compute dtype (the gradient buffer itself unless x is half precision).
        keep = grad if shards is None or x.dtype == cdt else torch.empty(x.shape, dtype=cdt, device=x.device)
    step = rows_per_block(C)
    same = x.dtype == cdt
    # Work in the kept buffer itself when it has the compute dtype; else in one
    # block-sized buffer, converted on the way in and out.
    buf = None if want_grad and keep.dtype == cdt else torch.empty((min(step, N), C), dtype=cdt, device=x.device)
    passes = []
    for r0 in range(0, N, step):
        r1 = min(r0 + step, N)
        xc, btg = x[r0:r1], _rows(tg, r0, r1)
        work = keep[r0:r1] if buf is None else buf[: r1 - r0]
        slope = math.softcap_slope(xp, xc.to(cdt), cap) if cap is not None and want_grad else None
        if same and cap is None:
            src = xc  # read once: the max, then e^(x - m) written straight into work
        else:
            if not (inplace and same):  # with inplace_backward, work is xc itself
                work.copy_(xc)  # same dtype: a copy; half: the conversion
            src = _capped_(work, cap)
        st = exp_pass_(work, src, btg, None if truth is None else truth[r0:r1])
        passes.append(st)
        if want_grad and shards is None:  # finish the block while it is in cache
            lse = st.m + torch.log(st.sum_exp) if z else None
            t = btg.t if st.soft is None else btg.t._replace(soft=st.soft)
            vc = row_coefficients(t, v[r0:r1], lse, z, None if vc0 is None else vc0[r0:r1])
            gradient_pass_(work, math.probability_factor(xp, vc, st.sum_exp), v[r0:r1], btg.b, slope)
            if buf is not None:
                grad[r0:r1].copy_(work)
    st = Pass(*(None if f[0] is None else torch.cat(f) for f in zip(*passes))) if passes else \
        _empty_pass(tg, cdt, x.device, want_stats)
    rows = finish_rows(st, tg, raw_column, opt, shards)
    value = _reduce.reduce(xp, rows.loss, opt.reduction, den).to(x.dtype)
    if want_grad:
        vc = row_coefficients(rows.t, v, rows.lse, z, vc0)
        if shards is not None:  # the second sweep: scale the kept exponentials
            factor = math.probability_factor(xp, vc, rows.sum_exp) * torch.exp(rows.delta)
            for r0 in range(0, N, step):
                r1 = min(r0 + step, N)
                slope = math.softcap_slope(xp, x[r0:r1].to(cdt), cap) if cap is not None else None
                gradient_pass_(keep[r0:r1], factor[r0:r1], v[r0:r1], _rows(tg, r0, r1).b, slope)
        if tg.column is not None:
            write_target_column_(keep, tg, rows, vc, v, raw_column, cap)
        if keep is not grad:
            grad.copy_(keep)
    stats = None
    if want_stats:
        z_rows = torch.where(rows.t.counted, z * rows.lse * rows.lse, torch.zeros_like(rows.lse))
        stats = math.CrossEntropyStats(rows.lse, z_rows, math.token_accuracy(xp, st.hits, rows.t.counted, cdt))
    return value, grad, stats


def _empty_pass(tg, dtype, device, want_stats):
    """The statistics of no rows."""
    e = torch.zeros(0, dtype=dtype, device=device)
    soft = e if tg.probs is not None else None
    dot = e if tg.b is not None else None
    return Pass(e, e, e, dot, soft, torch.zeros(0, dtype=torch.bool, device=device) if want_stats else None)


def fused_cross_entropy(problem, num_items=None, *, inplace_backward=False, with_stats=False, shards=None):
    """Cross-entropy of a validated problem (``losses._targets.read`` with
    ``compute=False``) through the blocks above. Returns the loss (rows shaped
    like the problem's for ``"none"``) and the stats (or None)."""
    C = problem.num_classes
    x = problem.x.reshape(-1, C)  # a view when the class axis is last and rows are contiguous
    inplace = bool(inplace_backward) and x.data_ptr() == problem.x.data_ptr() and x.is_contiguous()

    def compute(want_grad):
        value, grad, stats = _forward(x, problem, num_items, want_grad, inplace and want_grad, with_stats, shards)
        return value, grad, () if stats is None else tuple(stats)

    value, extras = kept_gradient(compute, x, grad_output_axis=1, name="cross_entropy")
    if problem.options.reduction == "none":
        value = value.reshape(problem.rows)
    if not with_stats:
        return value, None
    lse, z_rows, accuracy = extras
    return value, math.CrossEntropyStats(lse.reshape(problem.rows), z_rows.reshape(problem.rows), accuracy)
