r"""Fused single-pass cross-entropy for torch tensors with class indices.

The forward pass walks the rows in cache-sized chunks. For each chunk it reads
the logits once into a float32 work buffer and computes, per row, the maximum,
one exponential of every logit (kept in the buffer), their sum, the LSE, the
loss, and then turns the exponentials into the gradient in place:

.. math:: \frac{\partial\ell_n}{\partial s_{n,j}} = c_n\,\frac{e^{s_{n,j} - m_n}}{\Sigma_n}
    - \frac{\varepsilon}{C}\,w_j\,v_n - (1-\varepsilon)\,w_{y_n}v_n\,[j = y_n]

with :math:`c_n = v_n\big((1-\varepsilon)w_{y_n} + \tfrac{\varepsilon}{C}W
+ 2z\,\mathrm{LSE}_n\big)` and :math:`v_n` the row's scale (1/denominator for
``mean``, 0 on ignored rows): the notes' :math:`Q - P` with weights,
smoothing and z-loss folded in (``docs/derivations.md`` section 3). The
gradient is kept for a backward that only multiplies it by ``grad_output``.

Why chunks of torch operations (measured on this project's 2-core CPU;
``BENCHMARKS.md`` has the tables): with the max, exp, sum and scale passes
over a 2 MiB chunk that stays in cache, a step at N=4096, V=32000 takes
about the time of the same passes over the whole tensor, sometimes 10%
less (``benchmarks/bench_chunk_bytes.py``), and needs no second logits-sized
buffer for half-precision inputs; 256 KiB chunks are slower (too many small
torch calls). About half of a step is the first touch of the fresh gradient
buffer (``inplace_backward=True``, which writes into the logits, takes half
the time). ``torch.compile`` of PyTorch's formula is slower than this kernel
(``benchmarks/bench_cross_entropy.py``) and needs a C++ compiler at run time;
a C++ extension needs one at install. numba would not (its LLVM comes in
wheels), but it is a large dependency with a compile on first call, and
cannot read bfloat16 directly; it has not been tried.

Nothing here reads a value back to the host, so the same code is what CUDA
tensors run and what ``torch.compile`` and CUDA graphs capture.
"""

from __future__ import annotations

import torch

from ..losses.categorical import CrossEntropyStats

__all__ = ["fused_cross_entropy", "chunk_loss_and_grad_"]

# Rows per chunk so that a float32 chunk is about this many bytes: small
# enough to stay in L2/L3 between the passes over it.
_CHUNK_BYTES = 1 << 21


def _rows_per_chunk(n_classes: int) -> int:
    return max(1, _CHUNK_BYTES // (4 * max(1, n_classes)))


def chunk_loss_and_grad_(work, target, *, weight, ignore_index, label_smoothing, z_loss, softcap,
                         grad_scale, raw=None, stats=None):
    """The kernel on one chunk.

    work: (n, C) logits in the compute dtype (float32/float64), overwritten
        with d loss / d logits times ``grad_scale`` when that is given.
    target: (n,) int64. weight: (C,) in the compute dtype, or None.
    grad_scale: None (loss only), a 0-d tensor, or an (n,) tensor.
    raw: the chunk's logits before the soft cap (for the chain rule), when
        ``work`` no longer holds them; defaults to a copy taken here.
    stats: None, or a list receiving (lse, argmax == target) for the chunk.
    Returns the (n,) per-row losses in the compute dtype.
    """
    n, C = work.shape
    e = label_smoothing
    dt = work.dtype
    counted = target != ignore_index
    valid = counted.to(dt)  # 0/1 in the compute dtype: a bool times a float would be float32
    safe = torch.where(counted, target, torch.zeros_like(target))[:, None]
    if softcap is not None:
        if raw is None and grad_scale is not None:
            raw = work.clone()
        work.div_(softcap).tanh_().mul_(softcap)  # s = c tanh(x / c)
    if stats is not None:
        hit = work.argmax(1) == target
    s_y = work.gather(1, safe)[:, 0]
    if e > 0:
        wsum = (work if weight is None else work * weight).sum(1)  # sum_c w_c s_c
    m = work.amax(1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    work.sub_(m).exp_()  # e^(s - m), the only exponential pass
    total = work.sum(1)
    lse = m[:, 0] + total.log()
    if weight is None:
        wy, W = valid, float(C)
    else:
        wy, W = weight[safe[:, 0]] * valid, weight.sum()
    # loss_n = (1 - e) w_y (LSE - s_y) + (e / C)(W LSE - sum_c w_c s_c) + z LSE^2, on counted rows
    loss = (1 - e) * wy * torch.where(counted, lse - s_y, torch.zeros_like(lse))
    if e > 0:
        loss = loss + (e / C) * valid * torch.where(counted, W * lse - wsum, torch.zeros_like(lse))
    if z_loss > 0:
        loss = loss + z_loss * valid * torch.where(counted, lse * lse, torch.zeros_like(lse))
    if stats is not None:
        stats.append((lse, hit & counted))
    if grad_scale is None:
        return loss
    v = valid * grad_scale  # the row's scale, 0 on ignored rows
    # A p_j - a_j + 2 z LSE p_j with p_j = e^(s_j - m) / total
    coef = v * ((1 - e) * wy + (e / C) * W * valid)
    if z_loss > 0:
        coef = coef + v * 2 * z_loss * torch.where(counted, lse, torch.zeros_like(lse))
    work.mul_((coef / total)[:, None])
    if e > 0:
        smooth = (e / C) * v[:, None]
        work.sub_(smooth if weight is None else smooth * weight)
    work.scatter_add_(1, safe, (-(1 - e) * wy * v)[:, None])
    if softcap is not None:  # ds/dx = 1 - tanh(x / c)^2
        work.mul_(1 - torch.tanh(raw / softcap) ** 2)
    return loss


def scale_kept_gradient(grad, g):
    """``grad * g`` for a backward that multiplies the gradient kept from the
    forward pass. In place when this backward is the graph's last use (no
    ``retain_graph``), so that no second input-sized buffer ever exists; out
    of place when the graph is kept for another backward (``retain_graph=True``,
    ``gradcheck``) or while tracing under ``torch.compile``."""
    keep = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    if keep is None or torch.compiler.is_compiling() or keep():
        return grad * g
    return grad.mul_(g)


def _denominator(target, weight, ignore_index, dtype):
    counted = target != ignore_index
    if weight is None:
        return counted.sum().to(dtype)
    return (weight.to(dtype)[torch.where(counted, target, torch.zeros_like(target))] * counted).sum()


def _safe_inverse(d):
    return torch.where(d == 0, torch.zeros_like(d), 1 / torch.where(d == 0, torch.ones_like(d), d))


def _forward(x, target, weight, ignore_index, reduction, e, z, cap, want_grad, inplace, num_items, want_stats):
    """Loss (reduced), the stored gradient (or None) and optional stats."""
    N, C = x.shape
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    w = None if weight is None else weight.to(cdt)
    den = None
    if reduction == "mean":
        den = _denominator(target, weight, ignore_index, cdt) if num_items is None else \
            torch.as_tensor(num_items, dtype=cdt, device=x.device)
    scale = None
    if want_grad:
        scale = _safe_inverse(den) if reduction == "mean" else torch.ones((), dtype=cdt, device=x.device)
        grad = x if inplace else torch.empty_like(x)
    loss = torch.empty(N, dtype=cdt, device=x.device)
    stats = [] if want_stats else None
    step = _rows_per_chunk(C)
    same = x.dtype == cdt
    work_buf = None if same and want_grad else torch.empty((min(step, N), C), dtype=cdt, device=x.device)
    for r0 in range(0, N, step):
        r1 = min(r0 + step, N)
        if same and want_grad:
            work = grad[r0:r1]
            if not inplace:
                work.copy_(x[r0:r1])
        else:
            work = work_buf[: r1 - r0]
            work.copy_(x[r0:r1])
        raw = x[r0:r1] if (cap is not None and not inplace) else None
        loss[r0:r1] = chunk_loss_and_grad_(work, target[r0:r1], weight=w, ignore_index=ignore_index,
                                           label_smoothing=e, z_loss=z, softcap=cap, grad_scale=scale,
                                           raw=None if raw is None else raw.to(cdt), stats=stats)
        if want_grad and not same:
            grad[r0:r1].copy_(work)
    if reduction == "none":
        value = loss
    elif reduction == "sum":
        value = loss.sum()
    else:
        value = loss.sum() * _safe_inverse(den)
    out_stats = None
    if want_stats:
        lse = torch.cat([s[0] for s in stats]) if stats else torch.zeros(0, dtype=cdt, device=x.device)
        hits = torch.cat([s[1] for s in stats]) if stats else torch.zeros(0, dtype=torch.bool, device=x.device)
        counted = (target != ignore_index)
        zl = z * lse * lse * counted
        acc = hits.sum().to(cdt) * _safe_inverse(counted.sum().to(cdt))
        out_stats = CrossEntropyStats(lse, zl, acc)
    return value.to(x.dtype), (grad if want_grad else None), out_stats


class _FusedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, target, weight, options, want_stats):
        ignore_index, reduction, e, z, cap, inplace, num_items = options
        want_grad = ctx.needs_input_grad[0]
        value, grad, stats = _forward(x, target, weight, ignore_index, reduction, e, z, cap, want_grad,
                                      inplace and want_grad, num_items, want_stats)
        ctx.reduction = reduction
        if want_grad:
            # With inplace_backward, x now holds the gradient. It is not marked
            # dirty (it is no output), but the in-place writes bumped its
            # version counter, so an op that saved x for its own backward
            # raises there instead of silently reading the gradient.
            ctx.save_for_backward(grad)
        if not want_stats:
            return value
        ctx.mark_non_differentiable(*stats)
        return (value, *stats)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output, *unused_stats_grads):
        (grad,) = ctx.saved_tensors
        g = grad_output.to(grad.dtype)
        # x, target, weight, options, want_stats
        return scale_kept_gradient(grad, g[:, None] if ctx.reduction == "none" else g), None, None, None, None


def fused_cross_entropy(logits, target, *, weight=None, ignore_index=-100, reduction="mean",
                        label_smoothing=0.0, z_loss=0.0, softcap=None, inplace_backward=False,
                        num_items_in_batch=None, with_stats=False):
    """Cross-entropy of ``(N, C)`` logits (class axis last) and ``(N,)`` class
    indices through the fused kernel; the arguments are already validated.
    Returns the loss, or ``(loss, CrossEntropyStats)`` with ``with_stats``."""
    options = (ignore_index, reduction, label_smoothing, z_loss, softcap, inplace_backward, num_items_in_batch)
    if torch.is_grad_enabled() and logits.requires_grad:
        out = _FusedCrossEntropy.apply(logits, target, weight, options, with_stats)
        return (out[0], CrossEntropyStats(*out[1:])) if with_stats else out
    value, _, stats = _forward(logits, target, weight, ignore_index, reduction, label_smoothing, z_loss, softcap,
                               False, False, num_items_in_batch, with_stats)
    return (value, stats) if with_stats else value


# ----------------------------------------------------------------------------
# One pass through the core, for the losses without a hand-written kernel
# (the categorical focal loss): the forward asks the core for the value and
# the unit gradient together, from the same intermediates; the backward
# multiplies the kept gradient by grad_output.
# ----------------------------------------------------------------------------


class _OnePass(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, impl, rest, row_axis):
        value, grad = impl(x, **rest, need_grad=ctx.needs_input_grad[0], grad_output=None)
        ctx.row_axis = row_axis if value.dim() else None
        if grad is not None:
            ctx.save_for_backward(grad)
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        g = grad_output if ctx.row_axis is None else grad_output.unsqueeze(ctx.row_axis)
        return scale_kept_gradient(grad, g.to(grad.dtype)), None, None, None  # x, impl, rest, row_axis


def one_pass(impl, x, rest, row_axis):
    """``impl``'s value, differentiable through the gradient it computes in
    the same call; ``row_axis`` is where a per-row grad_output is broadcast."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _OnePass.apply(x, impl, rest, row_axis)
    value, _ = impl(x, **rest, need_grad=False, grad_output=None)
    return value
