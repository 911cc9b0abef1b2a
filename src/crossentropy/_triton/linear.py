r"""Linear cross-entropy in Triton, in the manner of Cut Cross-Entropy
(Wijmans et al. 2024): the ``(N, V)`` logits are never stored.

Forward (``_stats_kernel``): each program takes a block of rows and one
split of the vocabulary; tile by tile it forms the logits ``x W^T (+ b)``
with ``tl.dot`` (a loop over the hidden size, accumulated in float32) and
keeps each row's online statistics over the split, as the cross-entropy
kernel does over a row (``_triton.cross_entropy``): the maximum, ``Σ``, the
soft dot and ``B``, and the raw target logit from the tile that holds it.
The splits are then merged in torch by ``losses.cross_entropy.reshift``, the
same identities that merge the vocabulary shards of vocab-parallel
cross-entropy, and the loss rows come from ``row_loss`` (through
``_torch.cross_entropy_blocks.finish_rows``, which every cross-entropy
kernel finishes its rows with).

Backward (``_grad_kernel``): each program takes a block of rows and one tile
of the vocabulary, forms the logits again, turns them into the logit
gradient ``v c p_j - v b_j - v h [j = y]`` (times the soft cap's slope) from
the saved row statistics, and folds it into the gradients at once:
``dX[rows] += G W_tile``, ``dW[tile] += G^T X[rows]``, ``db[tile] += sum_rows G``,
accumulated in float32 buffers by atomic adds (the order of the adds varies
from run to run: the gradients agree to float32 rounding, not bit for bit).
``G`` is rounded to the input dtype for the two products (tensor cores take
bfloat16/float16 operands; the torch path rounds it so for ``dX`` too); the
products accumulate in float32. Float32 inputs multiply in IEEE float32 (no
TF32), float64 ones in float64. No gradient filter: every tile is computed.

Vocab-parallel (``plan.shards``, from
``crossentropy.distributed.vocab_parallel_linear_cross_entropy``): ``W`` is
this rank's rows ``[v0, v0 + V_r)`` of the classifier, and the kernels are
the same. The forward's statistics are this shard's (each row's target
column is its global index minus ``v0`` where it falls in the shard, -1
elsewhere; the smoothing weights are the shard's slice of ``ε w_c / V``,
``V`` global); ``finish_rows`` merges them over the ranks exactly as it
merges the torch kernel's chunks (a MAX of the row maxima, one SUM of the
re-shifted ``Σ``, target logit and soft dot), so every rank holds the global
shift, ``Σ`` and LSE, and the loss rows are the single-device formula's.
The backward runs on the local tiles with those global statistics
(``e^{s_j - m} / Σ`` is the global softmax), so ``dW`` and ``db`` of the
shard need no communication, and ``dX``, to which every shard contributes,
is summed over the ranks (one all-reduce of ``N x H`` in float32). Nothing
is read back to the host: the collectives take device tensors.

Served here: a 2-D weight (``(V, H)``, or a shard of one), index or
probability targets (index only with shards, as the vocab-parallel function
takes), every option (class weights, ``ignore_index``, label smoothing,
z-loss, soft cap, ``num_items_in_batch``), a bias, ``shift``; the rows
walked are the plan's (``_torch.linear.prepare``). A K-dimensional weight
and an ``accum_dtype`` other than the default take the torch kernel.
"""

from __future__ import annotations

import math as _pymath

import torch
import triton
import triton.language as tl

from .._autograd import differentiable_vjp, refuse_double_backward
from .._torch.cross_entropy_blocks import Pass, Targets, finish_rows, index_block_targets
from ..losses import cross_entropy as math
from . import _lang, block_override
from .cross_entropy import SOFT_NONE, SOFT_PROBS, SOFT_SCALAR, SOFT_VECTOR, XP, _TL, _scalars

__all__ = ["applies", "triton_linear_cross_entropy"]


def applies(plan) -> bool:
    """Whether these kernels serve a plan (else the torch kernel does): a 2-D
    weight (one device, or this rank's shard of the vocabulary) and the
    accumulators' default dtype (float32, or float64 for float64 input),
    which is what the kernels accumulate in."""
    default = torch.float64 if plan.cdt == torch.float64 else torch.float32
    return plan.positions == 1 and plan.accum_dtype == default


@triton.jit
def _logit_tile(x_ptr, sx, rid, rmask, w_ptr, sw, cols, cmask, b_ptr, H,
                BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
                ACC: tl.constexpr, PREC: tl.constexpr):
    """The (BLOCK_N, BLOCK_V) logits ``x[rid] W[cols]^T (+ b[cols])`` in ``ACC``."""
    acc = tl.zeros((BLOCK_N, BLOCK_V), ACC)
    for h0 in range(0, H, BLOCK_H):
        hs = h0 + tl.arange(0, BLOCK_H)
        hmask = hs < H
        xt = tl.load(x_ptr + rid[:, None] * sx + hs[None, :], mask=rmask[:, None] & hmask[None, :], other=0.0)
        wt = tl.load(w_ptr + cols[:, None] * sw + hs[None, :], mask=cmask[:, None] & hmask[None, :], other=0.0)
        acc = _lang.dot(xt, tl.trans(wt), acc, PREC, ACC)
    if BIAS:
        acc = acc + tl.load(b_ptr + cols, mask=cmask, other=0.0).to(ACC)[None, :]
    return acc


@triton.jit
def _soft_tile(bv_ptr, t_ptr, st, wc_ptr, rows, rmask, cols, cmask, keep, spread,
               SOFT: tl.constexpr, WEIGHTED: tl.constexpr, ACC: tl.constexpr):
    """The tile's soft weights ``b`` (0 outside): as ``_triton.cross_entropy._soft_weights``, by rows."""
    mask = rmask[:, None] & cmask[None, :]
    if SOFT == 1:
        b = tl.where(mask, 1.0, 0.0).to(ACC)
    elif SOFT == 2:
        b = tl.where(mask, tl.load(bv_ptr + cols, mask=cmask, other=0.0).to(ACC)[None, :], 0.0)
    else:
        t = tl.load(t_ptr + rows[:, None] * st + cols[None, :], mask=mask, other=0.0).to(ACC)
        b = t * keep + spread  # probability_weights
        if WEIGHTED:
            b = b * tl.load(wc_ptr + cols, mask=cmask, other=0.0).to(ACC)[None, :]
        b = tl.where(mask, b, 0.0)
    return b


@triton.jit
def _stats_kernel(x_ptr, sx, w_ptr, sw, b_ptr, rows_ptr, y_ptr, bv_ptr, t_ptr, st, wc_ptr, p_ptr,
                  m_out, sum_out, dot_out, soft_out, tgt_out, n, V, H, tiles_per_split,
                  SOFT: tl.constexpr, WEIGHTED: tl.constexpr, CAP: tl.constexpr, BIAS: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr, ACC: tl.constexpr,
                  PREC: tl.constexpr):
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    keep, spread, cap = tl.load(p_ptr), tl.load(p_ptr + 1), tl.load(p_ptr + 2)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < n
    rid = tl.load(rows_ptr + rows, mask=rmask, other=0)  # the input row of each walked row
    y = tl.load(y_ptr + rows, mask=rmask, other=-1)  # its target column (-1: none)
    m_run = tl.full((BLOCK_N,), float("-inf"), ACC)
    sum_run = tl.zeros((BLOCK_N,), ACC)
    dot_run = tl.zeros((BLOCK_N,), ACC)
    b_run = tl.zeros((BLOCK_N,), ACC)
    tgt = tl.zeros((BLOCK_N,), ACC)
    n_tiles = tl.cdiv(V, BLOCK_V)
    t0 = split * tiles_per_split
    t1 = tl.minimum(t0 + tiles_per_split, n_tiles)
    for tile in range(t0, t1):
        cols = tile * BLOCK_V + tl.arange(0, BLOCK_V)
        cmask = cols < V
        raw = _logit_tile(x_ptr, sx, rid, rmask, w_ptr, sw, cols, cmask, b_ptr, H, BIAS, BLOCK_N, BLOCK_V,
                          BLOCK_H, ACC, PREC)
        tgt = tgt + tl.sum(tl.where(cols[None, :] == y[:, None], raw, 0.0), 1)  # the raw target logit
        if CAP:  # softcap
            s = cap * _lang.tanh(raw / cap)
        else:
            s = raw
        s = tl.where(cmask[None, :], s, float("-inf"))
        # the online statistics of _triton.cross_entropy._stats_kernel, row by row
        m_new = tl.maximum(m_run, tl.max(s, 1))
        sh_old = tl.where(tl.abs(m_run) < float("inf"), m_run, 0.0)
        sh_new = tl.where(tl.abs(m_new) < float("inf"), m_new, 0.0)
        e = tl.exp(s - sh_new[:, None])
        alpha = tl.where(m_run > float("-inf"), tl.exp(sh_old - sh_new), 0.0)
        sum_run = sum_run * alpha + tl.sum(e, 1)
        if SOFT != 0:
            b = _soft_tile(bv_ptr, t_ptr, st, wc_ptr, rows, rmask, cols, cmask, keep, spread, SOFT, WEIGHTED, ACC)
            if SOFT == 1:
                term = tl.where(b == 0, 0.0, s - sh_new[:, None])
            else:
                term = tl.where(b == 0, 0.0, b * (s - sh_new[:, None]))
            dot_run = dot_run + (sh_old - sh_new) * b_run + tl.sum(term, 1)
            b_run = b_run + tl.sum(b, 1)
        m_run = m_new
    out = split * n + rows
    tl.store(m_out + out, m_run, mask=rmask)
    tl.store(sum_out + out, sum_run, mask=rmask)
    tl.store(tgt_out + out, tgt, mask=rmask)
    if SOFT != 0:
        tl.store(dot_out + out, dot_run, mask=rmask)
        tl.store(soft_out + out, b_run, mask=rmask)


@triton.jit
def _grad_kernel(x_ptr, sx, w_ptr, sw, b_ptr, rows_ptr, y_ptr, bv_ptr, t_ptr, st, wc_ptr, p_ptr,
                 m_ptr, f_ptr, v_ptr, vh_ptr, gx_ptr, gw_ptr, gb_ptr, n, V, H,
                 SOFT: tl.constexpr, WEIGHTED: tl.constexpr, CAP: tl.constexpr, BIAS: tl.constexpr,
                 HARD: tl.constexpr, GX: tl.constexpr, GW: tl.constexpr, GB: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr, ACC: tl.constexpr,
                 PREC: tl.constexpr, IN: tl.constexpr):
    pid_n = tl.program_id(0)
    tile = tl.program_id(1)
    keep, spread, cap, b_scalar = tl.load(p_ptr), tl.load(p_ptr + 1), tl.load(p_ptr + 2), tl.load(p_ptr + 3)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < n
    rid = tl.load(rows_ptr + rows, mask=rmask, other=0)
    cols = tile * BLOCK_V + tl.arange(0, BLOCK_V)
    cmask = cols < V
    raw = _logit_tile(x_ptr, sx, rid, rmask, w_ptr, sw, cols, cmask, b_ptr, H, BIAS, BLOCK_N, BLOCK_V, BLOCK_H,
                      ACC, PREC)
    if CAP:
        th = _lang.tanh(raw / cap)
        s = cap * th
    else:
        s = raw
    m = tl.load(m_ptr + rows, mask=rmask, other=0.0)
    f = tl.load(f_ptr + rows, mask=rmask, other=0.0)
    g = f[:, None] * tl.exp(s - m[:, None])  # v c p_j
    if SOFT != 0:  # - v b_j
        v = tl.load(v_ptr + rows, mask=rmask, other=0.0)
        if SOFT == 1:
            g = g - (v * b_scalar)[:, None]
        else:
            b = _soft_tile(bv_ptr, t_ptr, st, wc_ptr, rows, rmask, cols, cmask, keep, spread, SOFT, WEIGHTED, ACC)
            g = g - v[:, None] * b
    if HARD:  # - v h [j = y]
        y = tl.load(y_ptr + rows, mask=rmask, other=-1)
        vh = tl.load(vh_ptr + rows, mask=rmask, other=0.0)
        g = g - tl.where(cols[None, :] == y[:, None], vh[:, None], 0.0)
    if CAP:  # softcap_slope
        g = g * (1.0 - th * th)
    g = tl.where(rmask[:, None] & cmask[None, :], g, 0.0)
    if GB:
        tl.atomic_add(gb_ptr + cols, tl.sum(g, 0), mask=cmask)
    gi = _lang.cast_out(g, IN)  # the operand of the products (see the module docstring)
    for h0 in range(0, H, BLOCK_H):
        hs = h0 + tl.arange(0, BLOCK_H)
        hmask = hs < H
        if GX:  # dX[rows] += G W[cols]
            wt = tl.load(w_ptr + cols[:, None] * sw + hs[None, :], mask=cmask[:, None] & hmask[None, :], other=0.0)
            dx = _lang.dot(gi, wt, tl.zeros((BLOCK_N, BLOCK_H), ACC), PREC, ACC)
            tl.atomic_add(gx_ptr + rid[:, None] * H + hs[None, :], dx, mask=rmask[:, None] & hmask[None, :])
        if GW:  # dW[cols] += G^T X[rows]
            xt = tl.load(x_ptr + rid[:, None] * sx + hs[None, :], mask=rmask[:, None] & hmask[None, :], other=0.0)
            dw = _lang.dot(tl.trans(gi), xt, tl.zeros((BLOCK_V, BLOCK_H), ACC), PREC, ACC)
            tl.atomic_add(gw_ptr + cols[:, None] * H + hs[None, :], dw, mask=cmask[:, None] & hmask[None, :])


def _tiles(dtype, n, V, H):
    """(BLOCK_N, BLOCK_V, BLOCK_H): 16^3 for the tests (``forced(block=...)``), else sizes for the GPU."""
    small = block_override()
    if small:
        b = max(16, small)
        return b, b, b
    if dtype == torch.float64:
        return 32, 64, 32
    return 64, 128, 64


class _Launch:
    """What both kernels read, prepared once."""

    def __init__(self, x_rows, W, b, plan):
        cdt = plan.cdt
        dev = x_rows.device
        opt = plan.options
        e = opt.label_smoothing
        V, H = W.shape
        self.x, self.W, self.b = x_rows.contiguous(), W.contiguous(), None if b is None else b.contiguous()
        n = plan.n_rows
        self.rows = (torch.arange(n, device=dev) if plan.rows is None else plan.rows).contiguous()
        counted = plan.counted[:, 0].index_select(0, self.rows)
        self.dummy = torch.empty(1, dtype=cdt, device=dev)
        self.b_num, self.bv, self.probs, self.wc = 0.0, self.dummy, self.dummy, self.dummy
        shards = plan.shards
        vocab = V if shards is None else shards.vocab  # the V of ε / V: global with shards
        if plan.probs is None:
            idx = plan.index[:, 0].index_select(0, self.rows)
            # global targets; this shard's column of each (0 where elsewhere), its slice of the soft weights
            tg = index_block_targets(idx, counted, plan.weight, opt, vocab, cdt, shards)
            self.y = torch.where(tg.here, tg.column, torch.full_like(idx, -1)).contiguous()  # -1: no column here
            self.mode = SOFT_NONE if tg.b is None else SOFT_SCALAR if isinstance(tg.b, float) else SOFT_VECTOR
            if self.mode == SOFT_SCALAR:
                self.b_num = tg.b
            elif self.mode == SOFT_VECTOR:
                self.bv = tg.b.contiguous()
        else:
            tg = Targets(math.RowTargets(counted, None, None, None), None, None, None, None)
            self.y = torch.full((n,), -1, dtype=torch.int64, device=dev)
            self.probs = plan.probs[:, 0].index_select(0, self.rows).contiguous()
            self.mode = SOFT_PROBS
            if plan.weight is not None:
                self.wc = plan.weight.contiguous()
        self.targets = tg
        self.params = _scalars(cdt, dev, 1.0 - e, e / vocab, float(opt.softcap or 1.0), self.b_num)
        self.n, self.V, self.H = n, V, H
        self.blocks = _tiles(x_rows.dtype, n, V, H)
        self.acc = _TL[cdt]
        self.prec = "ieee" if x_rows.dtype in (torch.float32, torch.float64) else "tf32"  # tf32: unused for halves
        self.constants = dict(SOFT=self.mode, WEIGHTED=plan.weight is not None, CAP=opt.softcap is not None,
                              BIAS=b is not None, BLOCK_N=self.blocks[0], BLOCK_V=self.blocks[1],
                              BLOCK_H=self.blocks[2], ACC=self.acc, PREC=self.prec)

    def common(self):
        st = self.probs.stride(0) if self.mode == SOFT_PROBS else 0
        return (self.x, self.x.stride(0), self.W, self.W.stride(0), self.dummy if self.b is None else self.b,
                self.rows, self.y, self.bv, self.probs, st, self.wc, self.params)


def _splits(row_blocks, tiles):
    """Vocabulary splits: enough programs to fill a GPU (about 264, two an H100/H200 SM), each >= 1 tile."""
    want = max(1, -(-264 // max(1, row_blocks)))
    return max(1, min(tiles, want))


def _statistics(L: _Launch, plan):
    """This device's row statistics, merged over the splits, as the ``Pass``
    that ``finish_rows`` takes (the raw maximum, the shift, Σ, the soft dot,
    ``B``), and the raw target logit (0 where the target is not in ``W``'s rows)."""
    cdt, dev, n = plan.cdt, L.x.device, L.n
    BN, BV, _ = L.blocks
    row_blocks, tiles = triton.cdiv(n, BN), triton.cdiv(L.V, BV)
    S = _splits(row_blocks, tiles) if block_override() is None else min(2, tiles)
    per = triton.cdiv(tiles, S)
    S = triton.cdiv(tiles, per)  # no split without a tile
    bufs = [torch.empty((S, n), dtype=cdt, device=dev) for _ in range(5)]
    m_raw, sum_s, dot_s, soft_s, tgt = bufs
    if n:
        _lang.launch(_stats_kernel, (row_blocks, S), *L.common(), m_raw, sum_s, dot_s, soft_s, tgt, n, L.V, L.H,
                     per, **L.constants)
    # the splits merged as vocabulary shards are (math.reshift)
    top = m_raw.amax(0) if S else torch.full((n,), float("-inf"), dtype=cdt, device=dev)
    m = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    m_s = torch.where(torch.isfinite(m_raw), m_raw, torch.zeros_like(m_raw))
    delta = m_s - m
    soft = dot = None
    if L.mode == SOFT_NONE:
        (sums,) = math.reshift(XP, delta, sum_s)
    else:
        sums, dots = math.reshift(XP, delta, sum_s, None, None, dot_s, soft_s)
        dot = dots.sum(0)
        if L.mode == SOFT_PROBS:
            soft = soft_s.sum(0)  # B of probability targets (index targets know theirs: RowTargets.soft)
        if L.mode == SOFT_SCALAR:
            dot = L.b_num * dot  # sum_c (ε / V)(s_c - m)
    sums = torch.where(sum_s == 0, torch.zeros_like(sums), sums)  # a split of no finite logit adds nothing
    return Pass(top, m, sums.sum(0), dot, soft, None), tgt.sum(0)


def _rows(L: _Launch, plan):
    """The loss rows (walked rows) and what the gradient needs of them; with
    shards, from the statistics merged over the ranks (``finish_rows``: two
    all-reduces of (n,) vectors)."""
    st, raw_target = _statistics(L, plan)
    rows = finish_rows(st, L.targets, None if plan.probs is not None else raw_target, plan.options, plan.shards)
    return rows.loss, (rows.t, rows.m, rows.sum_exp, rows.lse)


def _gradients(L: _Launch, plan, saved, go, want):
    """dX, dW, db for the row scale ``go`` (0-d, or one per output entry)."""
    t, m, sum_exp, lse = saved
    opt, cdt, dev, n = plan.options, plan.cdt, L.x.device, L.n
    g = go if go.dim() == 0 else go.reshape(-1)[plan.out_pos.index_select(0, L.rows)]
    v = torch.where(t.counted, g * torch.ones(n, dtype=cdt, device=dev), torch.zeros((), dtype=cdt, device=dev))
    vc = math.coefficient(XP, t, v)
    if opt.z_loss:
        vc = vc + math.z_coefficient(XP, lse, t.counted, v, opt.z_loss)
    factor = math.probability_factor(XP, vc, sum_exp)
    hard = t.hard is not None
    vh = (v * t.hard).contiguous() if hard else L.dummy
    acc = torch.float64 if cdt == torch.float64 else torch.float32
    gx = torch.zeros((L.x.shape[0], L.H), dtype=acc, device=dev) if want[0] else None
    gw = torch.zeros((L.V, L.H), dtype=acc, device=dev) if want[1] else None
    gb = torch.zeros(L.V, dtype=acc, device=dev) if want[2] and L.b is not None else None
    BN, BV, _ = L.blocks
    if n and any(a is not None for a in (gx, gw, gb)):
        _lang.launch(_grad_kernel, (triton.cdiv(n, BN), triton.cdiv(L.V, BV)), *L.common(), m, factor,
                     v.contiguous(), vh, L.dummy if gx is None else gx, L.dummy if gw is None else gw,
                     L.dummy if gb is None else gb, n, L.V, L.H, HARD=hard, GX=gx is not None, GW=gw is not None,
                     GB=gb is not None, IN=_TL[L.x.dtype], **L.constants)
    if gx is not None and plan.shards is not None:
        gx = plan.shards.all_sum(gx)  # the input is replicated: every shard of the classifier adds its part
    return gx, gw, gb


class TritonLinearCrossEntropy(torch.autograd.Function):
    """(input rows (R, H), W (V, H), b (V,) or None, plan) -> the reduced loss;
    ``_torch.linear.LinearCrossEntropyFunction``'s contract."""

    @staticmethod
    def forward(ctx, x_rows, W, b, plan):
        from .._torch.linear import reduced

        L = _Launch(x_rows, W, b, plan)
        loss_rows, saved = _rows(L, plan)
        loss = torch.zeros(_pymath.prod(plan.out_shape), dtype=plan.cdt, device=x_rows.device)
        loss[plan.out_pos.index_select(0, L.rows)] = loss_rows
        ctx.plan, ctx.launch, ctx.saved = plan, L, saved
        ctx.dtypes = (x_rows.dtype, W.dtype, None if b is None else b.dtype)
        ctx.save_for_backward(x_rows, W, b)
        return reduced(loss, plan).to(x_rows.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        plan = ctx.plan
        x_rows, W, b = ctx.saved_tensors
        if torch.is_grad_enabled() and plan.reference is not None:  # create_graph=True: a differentiable gradient
            grads = differentiable_vjp(plan.reference, (x_rows, W, b), grad_output)
            return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:3])), None)
        go = grad_output.detach().to(plan.cdt)
        if plan.options.reduction != "none":
            go = go * plan.unit
        with torch.no_grad():
            grads = _gradients(ctx.launch, plan, ctx.saved, go, tuple(ctx.needs_input_grad[:3]))
            grads = tuple(None if t is None else t.to(dt) for t, dt in zip(grads, ctx.dtypes))
        return (*refuse_double_backward(grads, x_rows, "linear_cross_entropy"), None)


def triton_linear_cross_entropy(x_rows, W, b, plan):
    return TritonLinearCrossEntropy.apply(x_rows, W, b, plan)
