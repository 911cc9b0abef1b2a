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

import torch

from .. import _reduce
from .._autograd import kept_gradient
from ..losses import cross_entropy as math
from . import cross_entropy_cpu
from .cross_entropy_blocks import (Pass, XP, block_targets, capped_, exp_pass_, finish_rows, gradient_pass_,
                                   index_block_targets, probability_block_targets, row_coefficients,
                                   write_target_column_)

__all__ = ["fused_cross_entropy", "kept_rows", "rows_per_block"]

# Rows per block so that a float32 block is about this many bytes: small
# enough to stay in L2/L3 between the passes over it.
_BLOCK_BYTES = 1 << 21


def rows_per_block(n_classes: int) -> int:
    return max(1, _BLOCK_BYTES // (4 * max(1, n_classes)))


# ----------------------------------------------------------------------------
# The whole logits tensor: the driver behind crossentropy.cross_entropy.
# ----------------------------------------------------------------------------


def _forward(x, problem, num_items, want_grad, inplace, want_stats, shards=None):
    """Loss (reduced, x's dtype), the kept unit gradient (or None) and stats."""
    if cross_entropy_cpu.applies(x, shards):  # one compiled pass (crossentropy._cpu)
        return cross_entropy_cpu.forward(x, problem, num_items, want_grad, inplace, want_stats)
    N, C = x.shape
    xp = XP
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
        xc = x[r0:r1]
        btg = tg if tg.probs is None else block_targets(tg, r0, r1)  # index targets: the blocks share b
        work = keep[r0:r1] if buf is None else buf[: r1 - r0]
        slope = math.softcap_slope(xp, xc.to(cdt), cap) if cap is not None and want_grad else None
        if same and cap is None:
            src = xc  # read once: the max, then e^(x - m) written straight into work
        else:
            if not (inplace and same):  # with inplace_backward, work is xc itself
                work.copy_(xc)  # same dtype: a copy; half: the conversion
            src = capped_(work, cap)
        st = exp_pass_(work, src, btg, None if truth is None else truth[r0:r1])
        passes.append(st)
        if want_grad and shards is None:  # finish the block while it is in cache
            vb = v[r0:r1]
            if vc0 is not None and not z:
                vc = vc0[r0:r1]
            else:
                t = block_targets(tg, r0, r1).t if st.soft is None else btg.t._replace(soft=st.soft)
                vc = row_coefficients(t, vb, st.m + torch.log(st.sum_exp) if z else None, z,
                                      None if vc0 is None else vc0[r0:r1])
            gradient_pass_(work, math.probability_factor(xp, vc, st.sum_exp), vb, btg.b, slope)
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
                gradient_pass_(keep[r0:r1], factor[r0:r1], v[r0:r1], block_targets(tg, r0, r1).b, slope)
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


def shard_reference(problem, num_items, shards):
    """Vocab-parallel cross-entropy as a function of this rank's logits, from
    the same row math with out-of-place torch operations and collectives that
    autograd records (``VocabShards.differentiable_copy``): what a backward
    with ``create_graph=True`` differentiates, and what runs inside
    ``torch.func`` transforms. Index targets only (as the vocab-parallel
    functions take). Returns ``x -> loss`` (rows for ``"none"``), ``x`` shaped
    like ``problem.x``."""
    opt = problem.options
    collectives = shards.differentiable_copy()

    def loss(x):
        C = x.shape[-1]
        cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
        x2 = x.reshape(-1, C).to(cdt)
        tg = index_block_targets(problem.index.reshape(-1), problem.counted.reshape(-1), problem.weight, opt,
                                 shards.vocab, cdt, shards)
        raw_column = x2.gather(1, tg.column[:, None])[:, 0]
        s = math.softcap(XP, x2, opt.softcap)
        rows = finish_rows(exp_pass_(None, s, tg), tg, raw_column, opt, collectives)
        den = math.mean_denominator(XP, tg.t.wy, (x2.shape[0],), num_items, cdt, x2) if opt.reduction == "mean" \
            else None
        value = _reduce.reduce(XP, rows.loss, opt.reduction, den).to(x.dtype)
        return value.reshape(problem.rows) if opt.reduction == "none" else value

    return loss


def fused_cross_entropy(problem, num_items=None, *, inplace_backward=False, with_stats=False, shards=None,
                        reference=None):
    """Cross-entropy of a validated problem (``losses._targets.read`` with
    ``compute=False``) through the blocks above. Returns the loss (rows shaped
    like the problem's for ``"none"``) and the stats (or None). ``reference``:
    the loss as a function of the input from the core's differentiable
    operations, for a backward with ``create_graph=True`` (not with
    ``inplace_backward``, which overwrites the logits it would need)."""

    def forward(x, want_grad, inplace):
        return _forward(x, problem, num_items, want_grad, inplace, with_stats, shards)

    return kept_rows(problem, forward, inplace_backward, with_stats, reference)


def kept_rows(problem, forward, inplace_backward, with_stats, reference):
    """The kept-gradient plumbing every cross-entropy driver shares (these
    blocks, the Triton kernels): the logits as (N, C) rows,
    ``forward(x, want_grad, inplace) -> (value, grad, stats)`` run under
    ``kept_gradient``, ``reference`` given the input's layout back for
    double backward (not with ``inplace_backward``), and the value and stats
    shaped like the problem's rows."""
    C = problem.num_classes
    # A view, even of the same shape: the gradient comes back through it as a
    # tensor of its own, which autograd takes as ``.grad`` without a copy.
    x = problem.x.reshape(-1, C)
    inplace = bool(inplace_backward) and x.data_ptr() == problem.x.data_ptr() and x.is_contiguous()

    def compute(want_grad):
        value, grad, stats = forward(x, want_grad, inplace and want_grad)
        return value, grad, () if stats is None else tuple(stats)

    def of_rows(x2d):  # reference() of the (N, C) rows: the input's layout back, differentiably
        return reference(torch.moveaxis(x2d.reshape(problem.x.shape), -1, problem.class_axis))

    usable = reference is not None and not inplace
    value, extras = kept_gradient(compute, x, grad_output_axis=1, name="cross_entropy",
                                  reference=of_rows if usable else None)
    if problem.options.reduction == "none":
        value = value.reshape(problem.rows)
    if not with_stats:
        return value, None
    lse, z_rows, accuracy = extras
    return value, math.CrossEntropyStats(lse.reshape(problem.rows), z_rows.reshape(problem.rows), accuracy)
