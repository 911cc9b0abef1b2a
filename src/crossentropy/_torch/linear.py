"""The chunked driver and the one autograd Function behind linear
cross-entropy, single-device and vocab-parallel alike.

The rows that count (after ``shift``, and on CPU without the ignored ones)
are walked in chunks; each chunk goes through three steps:

1. logits = x_c @ W.T (+ b), in the compute dtype (the matmul runs in the
   input dtype);
2. ``_torch.cross_entropy.block_loss_and_grad_`` turns the logits, in place,
   into dL/dlogits already multiplied by each row's scale, and returns the
   chunk's loss rows; with ``shards`` (vocab-parallel) its statistics are
   summed over the ranks first;
3. grad_x_c = G @ W, grad_W += G.T @ x_c, grad_b += G.sum(0), the weight and
   bias gradients accumulated in ``accum_dtype``.

Only one chunk of logits is ever alive. With reduction ``"mean"`` or
``"sum"`` the gradients are built in the forward pass and kept; with
``"none"`` each row's grad_output is known only in backward, which forms each
chunk's logits again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .. import _reduce
from .._array import namespace, on_cpu
from .._autograd import differentiable_vjp, refuse_double_backward, scale_kept_gradient
from ..losses import cross_entropy as ce_math
from . import cross_entropy_cpu
from .cross_entropy_blocks import block_loss_and_grad_, index_block_targets, probability_block_targets

# The default chunk's floor: enough rows to amortise what every chunk pays
# once whatever its rows (the matrix products pack the V x H weight twice and
# read and write its V x H gradient accumulator), unless that takes more than
# 256 MiB of float32 logits.
_FLOOR_ROWS = 512
_FLOOR_ELEMENTS = 1 << 26


def default_chunk_size(n_rows: int, hidden: int, vocab: int) -> int:
    """Rows per chunk, ``max(ceil(N / ceil(V / H)), min(512, 2**26 // V))``
    and at most ``N`` (the memory model of ``crossentropy.functional.linear``)."""
    like_input = math.ceil(n_rows / max(1, math.ceil(vocab / max(1, hidden))))
    floor = min(_FLOOR_ROWS, _FLOOR_ELEMENTS // max(1, vocab))
    return max(1, min(n_rows, max(like_input, floor)))


@dataclass
class Plan:
    """Everything the Function needs besides the differentiable tensors."""

    rows: Any  # (n,) int64 rows of x_rows that count, in order; None: all R rows, in order
    n_rows: int  # how many rows are walked
    index: Any  # (R, D) int64 safe class indices of each row's targets (global with shards), or None
    counted: Any  # (R, D) bool: the target counts (after the shift: row t holds target t + 1)
    probs: Any  # (R, D, C) probability targets in the compute dtype, or None
    out_pos: Any  # (R,) where each row's D losses start in the flat "none" output
    out_shape: tuple  # shape of the "none" output
    classes: int  # C: classes per loss row (the shard's width with shards)
    positions: int  # D: loss rows per input row (K-dimensional weight: d1 * ... * dK)
    weight: Any  # class weights (C,) in the compute dtype (global with shards), or None
    options: Any  # _checks.CrossEntropyOptions
    chunk_size: int
    accum_dtype: torch.dtype
    cdt: torch.dtype  # compute dtype: float64 for float64 input, else float32
    denominator: Any  # 0-d tensor for "mean", else None
    shards: Any  # VocabShards, or None on one device
    unit: Any  # d value / d loss_row for a unit grad_output (0-d)
    # (x_rows, W, b) -> the loss from the core's differentiable operations, for a
    # backward with create_graph=True (None: such a backward raises)
    reference: Any = None


def _chunks(plan: Plan):
    """The rows of each chunk: a slice of ``x_rows``, or row ids."""
    n = plan.n_rows
    for start in range(0, n, plan.chunk_size):
        stop = min(start + plan.chunk_size, n)
        yield slice(start, stop) if plan.rows is None else plan.rows[start:stop]


def _take(a, ids):
    return None if a is None else (a[ids] if isinstance(ids, slice) else a.index_select(0, ids))


def run(input, W, b, plan: Plan, go, want):
    """One pass over the chunks of ``input`` (the (R, H) rows): the loss rows
    (flat, compute dtype) and, when
    ``go`` is given (a 0-d scale, or the flat per-row grad_output), the
    gradients of (input, W, b) that ``want`` names, accumulated."""
    V = W.shape[0]
    cdt, C, D = plan.cdt, plan.classes, plan.positions
    loss = torch.zeros(math.prod(plan.out_shape), dtype=cdt, device=input.device)
    need = go is not None
    gx = torch.zeros_like(input) if need and want[0] else None
    # the accumulators are written, not added to, by the first chunk (zeroed if there is none)
    gW = torch.empty((V, W.shape[1]), dtype=plan.accum_dtype, device=W.device) if need and want[1] else None
    gb = torch.empty(V, dtype=plan.accum_dtype, device=W.device) if need and want[2] and b is not None else None
    # One buffer holds every chunk's logits in turn when the matrix product
    # can write them in the compute dtype: no chunk allocates (nor first-touches) its own.
    buf = torch.empty((min(plan.chunk_size, plan.n_rows), V), dtype=cdt, device=input.device) \
        if input.dtype == cdt else None
    first = True
    for ids in _chunks(plan):
        xc = _take(input, ids)
        # 1. this chunk's logits, (n, D * C) -> (n * D, C) rows of one loss each
        if buf is None:
            logits = (xc @ W.T if b is None else torch.addmm(b, xc, W.T)).to(cdt)
        else:
            logits = buf[:xc.shape[0]]
            torch.mm(xc, W.T, out=logits) if b is None else torch.addmm(b, xc, W.T, out=logits)
        work = logits.view(-1, C)
        counted = _take(plan.counted, ids).reshape(-1)
        if plan.probs is None:
            tg = index_block_targets(_take(plan.index, ids).reshape(-1), counted, plan.weight, plan.options,
                                     C if plan.shards is None else plan.shards.vocab, cdt, plan.shards)
        else:
            tg = probability_block_targets(_take(plan.probs, ids).reshape(-1, C), plan.weight, plan.options, counted)
        pos = (_take(plan.out_pos, ids)[:, None] + torch.arange(D, device=input.device)).reshape(-1)
        v = None
        if need:
            g = go if go.dim() == 0 else go[pos]
            v = torch.where(counted, g * torch.ones_like(counted, dtype=cdt), torch.zeros((), dtype=cdt,
                                                                                            device=input.device))
        # 2. loss rows; logits become dL/dlogits * v, in place
        if cross_entropy_cpu.applies(work, plan.shards):  # one compiled call (crossentropy._cpu)
            loss[pos] = cross_entropy_cpu.block(work, None if v is None else work, tg, plan.options, v)
        else:
            loss[pos] = block_loss_and_grad_(work, tg, plan.options, v=v, shards=plan.shards)
        if need:  # 3. fold the logit gradient into the parameters' gradients
            fold(logits, xc, W, gx, ids, gW, gb, first)
            first = False
        del logits, work  # free this chunk before the next one is allocated
    if first:  # no rows were walked
        for acc in (gW, gb):
            if acc is not None:
                acc.zero_()
    if gx is not None and plan.shards is not None:
        gx = plan.shards.all_sum(gx)  # every shard of the classifier contributes to dL/dx
    return loss, gx, gW, gb


def fold(G, xc, W, gx, ids, gW, gb, first=False):
    """dL/dx = G W into ``gx``'s rows ``ids``; dL/dW += G^T x and dL/db +=
    sum_rows G in their accumulators, in place (no V x H temporary);
    ``first``: the accumulators hold nothing yet, and are written."""
    if gx is not None:
        if isinstance(ids, slice):
            torch.mm(G.to(W.dtype), W, out=gx[ids])
        else:
            gx.index_copy_(0, ids, torch.mm(G.to(W.dtype), W))
    if gW is not None:
        if first:
            torch.mm(G.T.to(gW.dtype), xc.to(gW.dtype), out=gW)
        else:
            gW.addmm_(G.T.to(gW.dtype), xc.to(gW.dtype))
    if gb is not None:
        if first:
            torch.sum(G, 0, dtype=gb.dtype, out=gb)
        else:
            gb.add_(G.sum(0).to(gb.dtype))


def reduced(loss, plan: Plan):
    if plan.options.reduction == "none":
        return loss.view(plan.out_shape)
    return _reduce.reduce(namespace(x=loss), loss, plan.options.reduction, plan.denominator)


class LinearCrossEntropyFunction(torch.autograd.Function):
    """(input rows (R, H), W (V, H), b (V,) or None, plan) -> the reduced loss."""

    @staticmethod
    def forward(ctx, x_rows, W, b, plan):
        want = tuple(ctx.needs_input_grad[:3])
        ctx.plan = plan
        ctx.dtypes = (x_rows.dtype, W.dtype, None if b is None else b.dtype)
        ctx.kept = plan.options.reduction != "none" and any(want)
        if ctx.kept:
            # "mean"/"sum": every row's gradient is the same multiple of its
            # unit gradient, so build the gradients now and scale them later.
            loss, gx, gW, gb = run(x_rows, W, b, plan, plan.unit, want)
            ctx.present = (gx is not None, gW is not None, gb is not None)
            empty = x_rows.new_empty(0)
            ctx.save_for_backward(*(empty if t is None else t for t in (gx, gW, gb)), x_rows, W, b)
        else:  # "none": each row's grad_output is known only in backward
            loss = run(x_rows, W, b, plan, None, want)[0]
            ctx.save_for_backward(x_rows, W, b)
        return reduced(loss, plan).to(x_rows.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        plan = ctx.plan
        if torch.is_grad_enabled() and plan.reference is not None:  # create_graph=True: a differentiable gradient
            x_rows, W, b = ctx.saved_tensors[-3:]
            grads = differentiable_vjp(plan.reference, (x_rows, W, b), grad_output)
            return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:3])), None)
        go = grad_output.detach().to(plan.cdt)
        with torch.no_grad():
            if ctx.kept:
                *grads, x_rows, _, _ = ctx.saved_tensors
                grads = [scale_kept_gradient(t, go.to(t.dtype)) if ok else None for t, ok in zip(grads, ctx.present)]
            else:
                x_rows, W, b = ctx.saved_tensors
                _, *grads = run(x_rows, W, b, plan, go.reshape(-1), tuple(ctx.needs_input_grad[:3]))
            grads = tuple(None if t is None else t.to(dt) for t, dt in zip(grads, ctx.dtypes))
        return (*refuse_double_backward(grads, x_rows, "linear_cross_entropy"), None)  # x_rows, W, b, plan


def plan_rows(counted, T, compact):
    """The rows of the input that are walked, flat, or None for all of them in
    order. ``T``: with ``shift``, the sequence length: row t of each sequence
    is paired with target t + 1, so the last row of each sequence has none.
    ``compact`` (CPU, outside ``torch.compile``): rows with no counted target
    are dropped too, so every chunk is full of rows that count."""
    R = counted.shape[0]
    rows = None
    if T is not None:
        steps = torch.arange(max(T - 1, 0), device=counted.device)
        rows = (torch.arange(R // T if T else 0, device=counted.device)[:, None] * T + steps).reshape(-1)
    if compact and R:
        keep = counted.any(1)
        if rows is not None:
            rows = rows[keep[rows]]
        elif not bool(keep.all()):
            rows = keep.nonzero()[:, 0]
    return rows, R if rows is None else rows.numel()


def prepare(input, W, target, bias, weight, options, *, shift, chunk_size, accum_dtype, num_items,
            shards=None):
    """The plan of a validated call, and the Function's tensor arguments
    ``(x_rows, W2, b2)``: ``input`` as (R, H) rows, and for a K-dimensional
    weight ``(C, d1, ..., dK, H)`` the weight and bias reordered to
    ``(d, c)``-major rows, so that each input row's logits are ``D = d1...dK``
    contiguous loss rows of ``C`` classes. The reordering is an ordinary
    (autograd-tracked) copy; a 2-D weight is used as it is."""
    H = W.shape[-1]
    C = W.shape[0]
    D = math.prod(W.shape[1:-1])
    cdt = torch.float64 if input.dtype == torch.float64 else torch.float32
    R = math.prod(input.shape[:-1])
    x_rows = input.reshape(R, H)
    W2, b2 = W, bias
    if W.dim() > 2:
        W2 = W.reshape(C, D, H).transpose(0, 1).reshape(D * C, H)
        b2 = None if bias is None else bias.reshape(C, D).T.reshape(-1)
    probs = target.is_floating_point()
    T = input.shape[-2] if shift else None
    S = math.prod(input.shape[:-2]) if shift else None  # sequences
    if probs:
        t = target if W.dim() == 2 else target.movedim(1, -1)  # (..., C) class last
        out_shape = tuple(t.shape[:-1])
        t = t.reshape(R, D, C)
        counted = torch.ones((R, D), dtype=torch.bool, device=input.device)
        if shift:  # row t pairs with target t + 1; the last row of a sequence with none
            seq = t.reshape(S, T, D, C)
            t = torch.cat([seq[:, 1:], torch.zeros_like(seq[:, :1])], 1).reshape(R, D, C)
            counted = counted.reshape(S, T, D)
            counted = torch.cat([counted[:, 1:], ~counted[:, :1]], 1).reshape(R, D)
            out_shape = out_shape[:-1] + (max(T - 1, 0),)
        index, probs_t = None, t.to(cdt)
    else:
        out_shape = tuple(target.shape)
        t = target.reshape(R, D)
        if shift:
            seq = target.reshape(S, T)
            t = torch.cat([seq[:, 1:], torch.full_like(seq[:, :1], options.ignore_index)], 1).reshape(R, D)
            out_shape = out_shape[:-1] + (max(T - 1, 0),)
        t = t.long()
        counted = t != options.ignore_index
        index, probs_t = torch.where(counted, t, torch.zeros_like(t)), None
    rows, n = plan_rows(counted, T, on_cpu(input))
    out_pos = torch.arange(R, device=input.device)
    if shift:
        out_pos = out_pos - out_pos // max(T, 1)  # row (b, t) writes loss (b, t) of the (T - 1)-long sequences
    den = None
    xp = namespace(x=x_rows)
    if options.reduction == "mean":
        wy = None
        if index is not None:
            e = options.label_smoothing
            wy = ce_math.index_targets(xp, index.reshape(-1), counted.reshape(-1), weight, e,
                                       C if shards is None else shards.vocab, cdt).wy
        den = ce_math.mean_denominator(xp, wy, out_shape, num_items, cdt, x_rows)
    unit = _reduce.unit_scale(xp, options.reduction, cdt, x_rows, den)
    if chunk_size is None:
        chunk_size = default_chunk_size(n, H, D * C)
    if accum_dtype is None:
        accum_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    plan = Plan(rows, n, index, counted, probs_t, out_pos * D, out_shape, C, D, weight, options,
                chunk_size, accum_dtype, cdt, den, shards, unit)
    return plan, x_rows, W2, b2
