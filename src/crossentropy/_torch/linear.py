"""The chunked driver and autograd Function behind ``crossentropy.linear_cross_entropy``.

Each chunk of rows goes through three steps:

1. logits = x_c @ W.T (+ b), float32 (the matmul runs in the input dtype);
2. the fused kernel turns the logits, in place, into dL/dlogits, already
   multiplied by each row's scale (grad_output / denominator), and returns
   the chunk's per-row losses;
3. grad_x_c = G @ W, grad_W += G.T @ x_c, grad_b += G.sum(0), with the weight
   and bias gradients accumulated in ``accum_dtype``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat
import torch

from .. import _checks
from ..linear import default_chunk_size
from .fused import chunk_loss_and_grad_, scale_kept_gradient


@dataclass
class Plan:
    """Everything the Function needs besides the differentiable tensors."""

    segments: list  # [(x 2-D view, target 1-D view, rows slice of the flat loss)]
    n_rows: int
    loss_shape: tuple
    weight: Any
    reduction: str
    ignore_index: int
    label_smoothing: float
    z_loss: float
    softcap: Any
    chunk_size: int
    accum_dtype: torch.dtype
    denominator: Any  # 0-d tensor in the compute dtype for "mean", else None
    shift: bool
    cdt: torch.dtype  # compute dtype: float64 for float64 input, else float32


def prepare(input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
            label_smoothing, z_loss, softcap, shift, chunk_size, accum_dtype, num_items_in_batch,
            num_classes=None) -> Plan:
    """Validate the arguments and plan the chunks (no data is copied).
    ``num_classes``: the global vocabulary when ``linear_weight`` is a shard."""
    for name, t in (("input", input), ("linear_weight", linear_weight), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not input.is_floating_point():
        raise TypeError(f"input must have a floating dtype, got {input.dtype}")
    if input.dim() < 1 or linear_weight.dim() != 2 or linear_weight.shape[1] != input.shape[-1]:
        raise ValueError(
            f"linear_weight must have shape (V, H) with H = input.shape[-1] = "
            f"{input.shape[-1] if input.dim() else None}, got {tuple(linear_weight.shape)}"
        )
    if linear_weight.dtype != input.dtype:
        raise TypeError(f"linear_weight has dtype {linear_weight.dtype} but input has {input.dtype}")
    V, H = linear_weight.shape
    if linear_bias is not None and (linear_bias.shape != (V,) or linear_bias.dtype != input.dtype):
        raise ValueError(f"linear_bias must have shape ({V},) and dtype {input.dtype}, "
                         f"got {tuple(linear_bias.shape)} {linear_bias.dtype}")
    if target.is_floating_point():
        raise ValueError("linear_cross_entropy takes class indices; probability targets are not supported")
    if tuple(target.shape) != tuple(input.shape[:-1]):
        raise ValueError(f"target of shape {tuple(target.shape)} does not match input of shape "
                         f"{tuple(input.shape)}: class indices need shape {tuple(input.shape[:-1])}")
    _checks.reduction(reduction)
    ignore_index = _checks.integer("ignore_index", ignore_index)
    e = _checks.real("label_smoothing", label_smoothing, low=0.0, high=1.0)
    z = _checks.real("z_loss", z_loss, low=0.0)
    cap = _checks.real("softcap", softcap, low=0.0, low_open=True, allow_none=True)
    _checks.class_indices(array_api_compat.array_namespace(target), target, num_classes or V, ignore_index)
    if weight is not None:
        if not isinstance(weight, torch.Tensor) or weight.shape != (V,):
            raise ValueError(f"weight must be a 1-D tensor of length V={V}, got {getattr(weight, 'shape', weight)}")
    if accum_dtype is None:
        accum_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32

    # Segments: 2-D views of the rows, split at sequence ends when shifting.
    if shift:
        if input.dim() < 2:
            raise ValueError(f"shift=True needs input of shape (..., T, H), got {tuple(input.shape)}")
        T = input.shape[-2]
        xs = input.reshape(-1, T, H)
        ts = target.reshape(-1, T)
        per = T - 1
        segments = [(xs[b, :-1], ts[b, 1:], slice(b * per, (b + 1) * per)) for b in range(xs.shape[0])]
        loss_shape = tuple(target.shape[:-1]) + (per,)
    else:
        segments = [(input.reshape(-1, H), target.reshape(-1), slice(0, target.numel()))]
        loss_shape = tuple(target.shape)
    n_rows = sum(s[1].numel() for s in segments)
    if chunk_size is None:
        chunk_size = default_chunk_size(n_rows, H, V)
    chunk_size = _checks.integer("chunk_size", chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")

    cdt = torch.float64 if input.dtype == torch.float64 else torch.float32
    denominator = None
    if reduction == "mean":
        if num_items_in_batch is not None:
            denominator = torch.as_tensor(num_items_in_batch, dtype=cdt, device=input.device)
        else:  # sum of w[y] over counted rows, without a host sync
            denominator = torch.zeros((), dtype=cdt, device=input.device)
            for _, t, _ in segments:
                valid = t != ignore_index
                if weight is None:
                    denominator = denominator + valid.sum()
                else:
                    denominator = denominator + (weight.to(cdt)[torch.where(valid, t, 0)] * valid).sum()
    return Plan(segments, n_rows, loss_shape, weight, reduction, ignore_index, e, z, cap,
                chunk_size, accum_dtype, denominator, shift, cdt)


def _chunks(plan: Plan):
    for x, t, rows in plan.segments:
        for start in range(0, t.numel(), plan.chunk_size):
            stop = min(start + plan.chunk_size, t.numel())
            yield x[start:stop], t[start:stop], slice(rows.start + start, rows.start + stop)


def _run(input, W, b, plan: Plan, row_scale, want):
    """One pass over the chunks. ``row_scale``: None (losses only) or a
    function giving each chunk's (n,) or 0-d gradient multiplier. ``want``:
    which gradients to build, (input, weight, bias)."""
    V, H = W.shape
    cdt = plan.cdt
    loss = torch.empty(plan.n_rows, dtype=cdt, device=input.device)
    need_grad = row_scale is not None
    gx = torch.zeros_like(input) if need_grad and want[0] else None
    gW = torch.zeros((V, H), dtype=plan.accum_dtype, device=W.device) if need_grad and want[1] else None
    gb = torch.zeros(V, dtype=plan.accum_dtype, device=W.device) if need_grad and want[2] and b is not None else None
    gx_rows = _grad_rows_view(gx, plan) if gx is not None else None
    w32 = None if plan.weight is None else plan.weight.to(cdt)
    for xc, tc, rows in _chunks(plan):
        # 1. logits of this chunk, in float32 (matmul in the input dtype)
        logits = xc @ W.T if b is None else torch.addmm(b, xc, W.T)
        logits = logits.to(cdt)
        # 2. fused kernel: per-row losses; logits become dL/dlogits * scale, in place
        scale = row_scale(rows) if need_grad else None
        loss[rows] = chunk_loss_and_grad_(
            logits, tc, weight=w32, ignore_index=plan.ignore_index, label_smoothing=plan.label_smoothing,
            z_loss=plan.z_loss, softcap=plan.softcap, grad_scale=scale,
        )
        if not need_grad:
            continue
        # 3. fold the logit gradient G into the parameters' gradients
        fold(logits, xc, W, gx_rows[rows] if gx_rows is not None else None, gW, gb)
        del logits  # free this chunk before the next one is allocated: one chunk alive at a time
    return loss, gx, gW, gb


def fold(G, xc, W, gx_out, gW, gb):
    """dL/dx = G W into ``gx_out``; dL/dW += G^T x and dL/db += sum_rows G in
    their accumulators, in place (no V x H temporary). ``G`` is the chunk's
    logit gradient in the compute dtype."""
    if gx_out is not None:
        torch.mm(G.to(W.dtype), W, out=gx_out)
    if gW is not None:
        gW.addmm_(G.T.to(gW.dtype), xc.to(gW.dtype))
    if gb is not None:
        gb.add_(G.sum(0).to(gb.dtype))


def _grad_rows_view(gx, plan):
    """A 2-D (rows, H) view of the input gradient aligned with the planned rows
    (for shift=True the last position of each sequence stays 0)."""
    H = gx.shape[-1]
    if not plan.shift:
        return gx.view(-1, H)
    T = gx.shape[-2]
    g3 = gx.view(-1, T, H)
    return _SegmentRows(g3)


class _SegmentRows:
    """Row slices of the shifted input gradient, segment by segment."""

    def __init__(self, g3):
        self.g3 = g3
        self.per = g3.shape[1] - 1

    def __getitem__(self, rows: slice):
        b, start = divmod(rows.start, self.per)
        stop = rows.stop - b * self.per
        return self.g3[b, start:stop]


def _reduce(loss_rows, plan: Plan):
    if plan.reduction == "none":
        return loss_rows.view(plan.loss_shape)
    total = loss_rows.sum()
    if plan.reduction == "sum":
        return total
    d = plan.denominator
    return torch.where(d == 0, torch.zeros_like(total), total / torch.where(d == 0, torch.ones_like(d), d))


def _mean_scale(plan: Plan):
    """d value / d loss_row for "mean" (0 when nothing is counted) or "sum"."""
    if plan.reduction == "sum":
        return torch.ones((), dtype=plan.cdt)
    d = plan.denominator
    return torch.where(d == 0, torch.zeros_like(d), 1 / torch.where(d == 0, torch.ones_like(d), d))


class LinearCrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, W, b, plan):
        want = tuple(ctx.needs_input_grad[:3])
        ctx.plan = plan
        ctx.dtypes = (input.dtype, W.dtype, None if b is None else b.dtype)
        if plan.reduction != "none" and any(want):
            # "mean"/"sum": every row's gradient is the same multiple of its
            # unit gradient, so build the gradients now and scale them later.
            s = _mean_scale(plan).to(input.device)
            loss, gx, gW, gb = _run(input, W, b, plan, lambda rows: s, want)
            ctx.grads = (gx, gW, gb)
        else:  # "none": each row's grad_output is known only in backward
            loss, *_ = _run(input, W, b, plan, None, want)
            ctx.grads = None
            ctx.save_for_backward(input, W, b)
        return _reduce(loss, plan).to(input.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        plan = ctx.plan
        if ctx.grads is not None:
            return (*hand_over(ctx, grad_output), None)  # input, W, b, plan
        input, W, b = ctx.saved_tensors
        go = grad_output.to(plan.cdt).reshape(-1)
        _, gx, gW, gb = _run(input, W, b, plan, lambda rows: go[rows], tuple(ctx.needs_input_grad[:3]))
        return gx, _cast(gW, W), _cast(gb, b), None  # input, W, b, plan


def hand_over(ctx, grad_output):
    """The gradients of (input, W, b) built in forward (``ctx.grads``),
    scaled by the 0-d ``grad_output`` in place and cast to ``ctx.dtypes``;
    the context keeps nothing."""
    grads, ctx.grads = ctx.grads, None
    g = grad_output.to(ctx.plan.cdt)
    return tuple(None if t is None else scale_kept_gradient(t, g.to(t.dtype)).to(dt)
                 for t, dt in zip(grads, ctx.dtypes))


def _cast(g, like):
    return None if g is None else g.to(like.dtype)
