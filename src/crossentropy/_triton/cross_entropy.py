r"""Fused cross-entropy in Triton: two launches over the logits, the row math
of :mod:`crossentropy.losses.cross_entropy` in between.

1. ``_stats_kernel``, one program a row, walks the vocabulary in tiles and
   keeps the online statistics of the row (Milakov and Gimelshein's online
   softmax): the maximum ``m`` of the (soft-capped) logits, ``Σ = sum_c
   e^{s_c - m}`` and the soft dot ``sum_c b_c (s_c - m)``, each moved to the
   new shift whenever a tile raises the maximum (``losses.cross_entropy.reshift``'s
   identities, within one row), the argmax for the stats and, for probability
   targets, ``B = sum_c b_c`` with ``b`` formed from the target tile
   (``probability_weights``). One read of the logits.
2. In torch, on ``(N,)`` vectors only: the loss rows (``row_loss``), the
   reduction, the row scale ``v`` and the row coefficient ``v c``
   (``coefficient``, ``z_coefficient``), the factor ``v c / Σ``
   (``probability_factor``): the same functions every path calls, a few
   small launches whatever the vocabulary.
3. ``_grad_kernel``, one program a tile of a row, writes the gradient
   ``v c p_j - v b_j - v h [j = y]`` times the soft cap's slope
   (``losses.cross_entropy``'s docstring), recomputing ``e^{s_j - m}`` from
   the logits: one more read and one write, into the logits' own buffer
   with ``inplace_backward``.

Vocab-parallel (``shards``, from
``crossentropy.distributed.vocab_parallel_cross_entropy`` on CUDA shards):
the same two launches over this rank's columns. Step 2 then starts with
``_torch.cross_entropy_blocks.finish_rows``, which moves the shard's
statistics to the global maximum and sums them over the ranks (two
all-reduces of ``(N,)`` vectors, ``losses.cross_entropy.reshift``), as it
does for the torch kernel; the gradient launch takes the global shift and
``Σ``, the target column local to the shard (-1 where the target is on
another rank), and the shard's slice of the smoothing weights.

Everything is accumulated in float32 (float64 for float64 logits); nothing
is read back to the host, so a step that calls this can be captured in a CUDA
graph. The gradient is kept for a backward that only multiplies it by
``grad_output`` (:func:`crossentropy._autograd.kept_gradient`), as the torch
kernel's is.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _reduce
from .._array import namespace
from .._torch.cross_entropy import kept_rows
from .._torch.cross_entropy_blocks import Pass, Targets, finish_rows, index_block_targets
from ..losses import cross_entropy as math
from . import _lang, block_override

__all__ = ["triton_cross_entropy", "block_size"]

XP = namespace(x=torch.empty(0))  # the array-API namespace of torch tensors, for the row math

# soft weights b_c of the row (losses.cross_entropy.smoothing_weights / probability_weights)
SOFT_NONE, SOFT_SCALAR, SOFT_VECTOR, SOFT_PROBS = 0, 1, 2, 3


def block_size(C: int, elem_bytes: int) -> int:
    """Columns a tile: the whole row up to 16 KiB of logits (a power of 2, as tl.arange wants)."""
    return max(16, min(triton.next_power_of_2(max(1, C)), 16384 // elem_bytes))


@triton.jit
def _soft_weights(b_ptr, t_ptr, st_c, w_ptr, cols, mask, keep, spread,
                  SOFT: tl.constexpr, WEIGHTED: tl.constexpr, ACC: tl.constexpr):
    """The tile's soft weights ``b_c`` (0 outside the row). SOFT_SCALAR: 1
    (the number ``ε / C`` is applied to the sums outside); SOFT_VECTOR: the
    (C,) ``ε w_c / C``; SOFT_PROBS: ``w_c ((1 - ε) t_c + ε / C)`` from the
    target tile (``probability_weights``; ``keep`` = 1 - ε, ``spread`` = ε / C)."""
    if SOFT == 1:
        b = tl.where(mask, 1.0, 0.0).to(ACC)
    elif SOFT == 2:
        b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(ACC)
    else:
        t = tl.load(t_ptr + cols * st_c, mask=mask, other=0.0).to(ACC)
        b = t * keep + spread
        if WEIGHTED:
            b = b * tl.load(w_ptr + cols, mask=mask, other=0.0).to(ACC)
        b = tl.where(mask, b, 0.0)
    return b


@triton.jit
def _stats_kernel(x_ptr, sx_n, sx_c, b_ptr, t_ptr, st_n, st_c, w_ptr, p_ptr,
                  m_out, sum_out, dot_out, soft_out, arg_out, truth_out, C,
                  SOFT: tl.constexpr, WEIGHTED: tl.constexpr, CAP: tl.constexpr, STATS: tl.constexpr,
                  BLOCK: tl.constexpr, ACC: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    keep, spread, cap = tl.load(p_ptr), tl.load(p_ptr + 1), tl.load(p_ptr + 2)  # see _scalars
    x_row = x_ptr + row * sx_n
    t_row = t_ptr + row * st_n
    lanes = tl.arange(0, BLOCK)
    m_run = tl.full((), float("-inf"), ACC)  # max_c s_c so far (-inf: none finite yet)
    sum_run = tl.zeros((), ACC)  # sum_c e^{s_c - shift(m_run)}
    dot_run = tl.zeros((), ACC)  # sum_c b_c (s_c - shift(m_run))
    b_run = tl.zeros((), ACC)  # sum_c b_c
    best = tl.full((), float("-inf"), ACC)
    best_i = tl.zeros((), tl.int32)
    tbest = tl.full((), -1.0, ACC)
    tbest_i = tl.zeros((), tl.int32)
    for c0 in range(0, C, BLOCK):
        cols = c0 + lanes
        mask = cols < C
        x = tl.load(x_row + cols * sx_c, mask=mask, other=float("-inf")).to(ACC)
        if CAP:  # s = κ tanh(x / κ)                                   (softcap)
            s = tl.where(mask, cap * _lang.tanh(x / cap), float("-inf"))
        else:
            s = x
        tile_max = tl.max(s, 0)
        m_new = tl.maximum(m_run, tile_max)
        # The shift is the maximum where it is finite, else 0 (_stable.shift).
        sh_old = tl.where(tl.abs(m_run) < float("inf"), m_run, 0.0)
        sh_new = tl.where(tl.abs(m_new) < float("inf"), m_new, 0.0)
        e = tl.exp(s - sh_new)
        # Σ moved to the new shift, e^{sh_old - sh_new} Σ (reshift); a row with
        # no finite logit yet has Σ = 0, whatever the factor.
        alpha = tl.where(m_run > float("-inf"), tl.exp(sh_old - sh_new), 0.0)
        sum_run = sum_run * alpha + tl.sum(e, 0)
        if SOFT != 0:
            b = _soft_weights(b_ptr, t_row, st_c, w_ptr, cols, mask, keep, spread, SOFT, WEIGHTED, ACC)
            # sum_c b_c (s_c - m) with 0 (s - m) = 0 where b_c = 0 (soft_dot); moved to
            # the new shift by adding (sh_old - sh_new) sum_c b_c (reshift)
            if SOFT == 1:
                term = tl.where(mask, s - sh_new, 0.0)  # every class weighs ε / C: nothing masked
            else:
                term = tl.where(b == 0, 0.0, b * (s - sh_new))
            dot_run = dot_run + (sh_old - sh_new) * b_run + tl.sum(term, 0)
            b_run = b_run + tl.sum(b, 0)
        if STATS:  # the first argmax, as torch.argmax
            i = tl.argmax(s, 0)
            better = tile_max > best
            best_i = tl.where(better, c0 + i, best_i)
            best = tl.where(better, tile_max, best)
            if SOFT == 3:
                t = tl.load(t_row + cols * st_c, mask=mask, other=-1.0).to(ACC)
                tmax = tl.max(t, 0)
                ti = tl.argmax(t, 0)
                tbetter = tmax > tbest
                tbest_i = tl.where(tbetter, c0 + ti, tbest_i)
                tbest = tl.where(tbetter, tmax, tbest)
        m_run = m_new
    tl.store(m_out + row, m_run)
    tl.store(sum_out + row, sum_run)
    if SOFT != 0:
        tl.store(dot_out + row, dot_run)
        tl.store(soft_out + row, b_run)
    if STATS:
        tl.store(arg_out + row, best_i.to(tl.int64))
        if SOFT == 3:
            tl.store(truth_out + row, tbest_i.to(tl.int64))


@triton.jit
def _grad_kernel(x_ptr, sx_n, sx_c, g_ptr, sg_n, sg_c, m_ptr, f_ptr, v_ptr, vh_ptr, y_ptr,
                 b_ptr, t_ptr, st_n, st_c, w_ptr, p_ptr, C,
                 SOFT: tl.constexpr, WEIGHTED: tl.constexpr, CAP: tl.constexpr, HARD: tl.constexpr,
                 BLOCK: tl.constexpr, ACC: tl.constexpr, OUT: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    keep, spread, cap, b_scalar = tl.load(p_ptr), tl.load(p_ptr + 1), tl.load(p_ptr + 2), tl.load(p_ptr + 3)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < C
    x = tl.load(x_ptr + row * sx_n + cols * sx_c, mask=mask, other=0.0).to(ACC)
    if CAP:
        th = _lang.tanh(x / cap)
        s = cap * th  # softcap
    else:
        s = x
    m = tl.load(m_ptr + row)  # the shift of the row (finite, or 0)
    f = tl.load(f_ptr + row)  # v c / Σ (probability_factor)
    g = f * tl.exp(s - m)  # v c p_j
    if SOFT != 0:  # - v b_j
        v = tl.load(v_ptr + row)
        if SOFT == 1:
            g = g - v * b_scalar
        else:
            b = _soft_weights(b_ptr, t_ptr + row * st_n, st_c, w_ptr, cols, mask, keep, spread, SOFT, WEIGHTED,
                              ACC)
            g = g - v * b
    if HARD:  # - v h [j = y]
        y = tl.load(y_ptr + row)
        vh = tl.load(vh_ptr + row)
        g = g - tl.where(cols == y, vh, 0.0)
    if CAP:  # d s / d x = 1 - tanh(x / κ)^2                          (softcap_slope)
        g = g * (1.0 - th * th)
    tl.store(g_ptr + row * sg_n + cols * sg_c, _lang.cast_out(g, OUT), mask=mask)


_TL = {torch.float64: tl.float64, torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


class RowStats:
    """What the statistics kernel leaves, one entry a row."""

    def __init__(self, N, cdt, device, soft, stats, probs):
        self.m_raw = torch.empty(N, dtype=cdt, device=device)
        self.sum_exp = torch.empty(N, dtype=cdt, device=device)
        self.dot = torch.empty(N, dtype=cdt, device=device) if soft else None
        self.soft = torch.empty(N, dtype=cdt, device=device) if soft else None
        self.argmax = torch.empty(N, dtype=torch.int64, device=device) if stats else None
        self.truth = torch.empty(N, dtype=torch.int64, device=device) if stats and probs else None


def _scalars(dtype, device, *values):
    """A 1-D tensor of ``values``, made on the device by fills (no host-to-device
    copy, which a CUDA graph capture refuses)."""
    out = torch.empty(len(values), dtype=dtype, device=device)
    for i, v in enumerate(values):
        out[i].fill_(v)
    return out


def _forward(x, problem, num_items, want_grad, inplace, want_stats, block=None, shards=None):
    """Loss (reduced, x's dtype), the kept unit gradient (or None) and stats, as
    ``_torch.cross_entropy._forward`` returns them; with ``shards``, ``x`` is
    this rank's shard of the vocabulary and its statistics are merged over the
    ranks (``finish_rows``) before the gradient launch."""
    N, C = x.shape
    opt = problem.options
    e, z, cap = opt.label_smoothing, opt.z_loss, opt.softcap
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    dev = x.device
    probs = None if problem.probs is None else problem.probs.reshape(-1, C).to(cdt)
    weight = problem.weight  # global (V,) with shards
    dummy = torch.empty(1, dtype=cdt, device=dev)  # for the pointers a specialisation does not read
    b_vec, b_num, mode = dummy, 0.0, SOFT_PROBS
    if probs is None:
        index = problem.index.reshape(-1).contiguous()  # the kernels read it as a flat array
        # global targets, this shard's column of each (0 where elsewhere) and its slice of the soft weights
        tg = index_block_targets(index, problem.counted.reshape(-1), weight, opt,
                                 C if shards is None else shards.vocab, cdt, shards)
        raw_column = x.gather(1, tg.column[:, None])[:, 0].to(cdt)  # before inplace_backward overwrites x
        y = torch.where(tg.here, tg.column, torch.full_like(tg.column, -1))  # -1: no target column here
        mode = SOFT_NONE if tg.b is None else SOFT_SCALAR if isinstance(tg.b, float) else SOFT_VECTOR
        if mode == SOFT_SCALAR:
            b_num = tg.b
        elif mode == SOFT_VECTOR:
            b_vec = tg.b.contiguous()
    else:
        index, raw_column, y = None, None, None
        tg = Targets(math.RowTargets(torch.ones(N, dtype=torch.bool, device=dev), None, None, None), None, None,
                     None, None)
    w_vec = dummy if weight is None else weight.to(cdt).contiguous()
    tp = dummy if probs is None else probs
    st_n, st_c = (0, 0) if probs is None else probs.stride()
    # Scalars reach the kernels through a tensor of the compute dtype: a Python
    # float argument would be a float32 on the GPU, short of float64's digits.
    params = _scalars(cdt, dev, 1.0 - e, e / C, float(cap or 1.0), b_num)
    BLOCK = block or block_override() or block_size(C, x.element_size())
    acc = _TL[cdt]
    st = RowStats(N, cdt, dev, mode != SOFT_NONE, want_stats, probs is not None)
    if N:
        _lang.launch(_stats_kernel, (N,), x, x.stride(0), x.stride(1), b_vec, tp, st_n, st_c, w_vec, params,
                     st.m_raw, st.sum_exp, dummy if st.dot is None else st.dot,
                     dummy if st.soft is None else st.soft, dummy if st.argmax is None else st.argmax,
                     dummy if st.truth is None else st.truth, C, SOFT=mode, WEIGHTED=weight is not None,
                     CAP=cap is not None, STATS=want_stats, BLOCK=BLOCK, ACC=acc)
    # The row math, on (N,) vectors, from losses.cross_entropy; with shards,
    # after the merge over the ranks (two all-reduces of (N,) vectors).
    m = st.m_raw.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)  # _stable.shift: 0 where no finite maximum
    dot = st.dot
    if mode == SOFT_SCALAR:
        dot = b_num * dot  # sum_c (ε / V)(s_c - m)
    rows = finish_rows(Pass(st.m_raw, m, st.sum_exp, dot, st.soft if mode == SOFT_PROBS else None, None), tg,
                       raw_column, opt, shards)
    t, lse = rows.t, rows.lse
    den = math.mean_denominator(XP, t.wy, (N,), num_items, cdt, x) if opt.reduction == "mean" else None
    value = _reduce.reduce(XP, rows.loss, opt.reduction, den).to(x.dtype)
    grad = None
    if want_grad:
        unit = _reduce.unit_scale(XP, opt.reduction, cdt, x, den)
        v = torch.where(t.counted, unit, torch.zeros((), dtype=cdt, device=dev))  # 0 on ignored rows
        vc = math.coefficient(XP, t, v)
        if z:
            vc = vc + math.z_coefficient(XP, lse, t.counted, v, z)
        factor = math.probability_factor(XP, vc, rows.sum_exp)
        hard = t.hard is not None
        vh = (v * t.hard).contiguous() if hard else dummy
        grad = x if inplace else torch.empty((N, C), dtype=x.dtype, device=dev)
        if N:
            grid = (N, triton.cdiv(C, BLOCK))
            # rows.m: the shift Σ is taken at (the global one with shards), so p_j = e^{s_j - m} / Σ
            _lang.launch(_grad_kernel, grid, x, x.stride(0), x.stride(1), grad, grad.stride(0), grad.stride(1),
                         rows.m, factor, v, vh, y if hard else dummy, b_vec, tp, st_n, st_c, w_vec, params, C,
                         SOFT=mode, WEIGHTED=weight is not None, CAP=cap is not None, HARD=hard, BLOCK=BLOCK,
                         ACC=acc, OUT=_TL[x.dtype])
    stats = None
    if want_stats:
        truth = index if probs is None else st.truth
        hits = st.argmax == truth
        z_rows = torch.where(t.counted, z * lse * lse, torch.zeros_like(lse))
        stats = math.CrossEntropyStats(lse, z_rows, math.token_accuracy(XP, hits, t.counted, cdt))
    return value, grad, stats


def triton_cross_entropy(problem, num_items=None, *, inplace_backward=False, with_stats=False, reference=None,
                         block=None, shards=None):
    """Cross-entropy of a validated problem (``losses._targets.read`` with
    ``compute=False``) through the kernels above; the arguments and results of
    ``_torch.cross_entropy.fused_cross_entropy``, ``shards`` included
    (vocab-parallel: ``problem.x`` is this rank's shard). ``block``: columns a
    tile (the tests use small ones, to walk several tiles)."""

    def forward(x, want_grad, inplace):
        return _forward(x, problem, num_items, want_grad, inplace, with_stats, block, shards)

    return kept_rows(problem, forward, inplace_backward, with_stats, reference)
