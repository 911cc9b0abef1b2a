r"""Fused single-pass cross-entropy for torch tensors with class indices.

The forward pass first computes what depends only on the targets, for all
rows at once (ignored rows, :math:`w_{y}`, the target logit, the row
coefficients :math:`c_n` below). It then walks the rows in cache-sized
chunks; for each chunk it reads the logits once (float32 logits straight
into the gradient buffer, half-precision ones converted into a chunk-sized
float32 buffer) and computes, per row, the maximum, one exponential of every
logit, their sum, and turns the exponentials into the gradient in place:

.. math:: \frac{\partial\ell_n}{\partial s_{n,j}} = c_n\,\frac{e^{s_{n,j} - m_n}}{\Sigma_n}
    - \frac{\varepsilon}{C}\,w_j\,v_n - (1-\varepsilon)\,w_{y_n}v_n\,[j = y_n]

with :math:`c_n = v_n\big((1-\varepsilon)w_{y_n} + \tfrac{\varepsilon}{C}W
+ 2z\,\mathrm{LSE}_n\big)` and :math:`v_n` the row's scale (1/denominator for
``mean``, 0 on ignored rows): the notes' :math:`Q - P` with weights,
smoothing and z-loss folded in (``docs/derivations.md`` section 3). The
target column (the last term) is written after the loop, one element a row,
from the row statistics. The gradient is kept for a backward that only
multiplies it by ``grad_output``, and on CPU not even that when
``grad_output`` is 1 (``loss.backward()``).

Why chunks of torch operations (measured on this project's 2-core CPU;
``BENCHMARKS.md`` has the tables): with the max, exp, sum and scale passes
over a 2 MiB chunk that stays in cache, a step at N=4096, V=32000 takes the
time of the same passes over the whole tensor or less
(``benchmarks/bench_chunk_bytes.py``), and needs no second logits-sized
buffer for half-precision inputs; 256 KiB chunks are slower (too many small
torch calls). Most of a float32 step is the first touch of the fresh
gradient buffer (``inplace_backward=True``, which writes into the logits,
takes about a third of the time); transparent huge pages for that buffer
were tried twice and dropped (faster above 500 MB, slower below on this
machine). ``torch.compile`` of PyTorch's formula is slower than this kernel
(``benchmarks/bench_cross_entropy.py``) and needs a C++ compiler at run time;
a C++ extension needs one at install. numba would not (its LLVM comes in
wheels), but it is a large dependency with a compile on first call, and
cannot read bfloat16 directly; it has not been tried.

Nothing here reads a device value back to the host, so the same code is
what CUDA tensors run and what ``torch.compile`` and CUDA graphs capture;
the one read (is ``grad_output`` 1?) is made for CPU tensors only, where it
costs nothing, and not while tracing.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..losses.categorical import CrossEntropyStats

__all__ = ["fused_cross_entropy", "chunk_loss_and_grad_"]

# Rows per chunk so that a float32 chunk is about this many bytes: small
# enough to stay in L2/L3 between the passes over it.
_CHUNK_BYTES = 1 << 21


def _rows_per_chunk(n_classes: int) -> int:
    return max(1, _CHUNK_BYTES // (4 * max(1, n_classes)))


class _Rows(NamedTuple):
    """What the loss needs of each row's target, computed once for all rows."""

    counted: torch.Tensor  # (n,) bool: the row is not ignored
    valid: torch.Tensor  # (n,) the same, 0/1 in the compute dtype
    safe: torch.Tensor  # (n, 1) int64 target, 0 on ignored rows (a safe gather index)
    wy: torch.Tensor  # (n,) w_y on counted rows, 0 on ignored ones
    W: object  # sum_c w_c: a 0-d tensor, or C without weights


def _rows(target, weight, ignore_index, n_classes, dt):
    counted = target != ignore_index
    valid = counted.to(dt)  # a bool times a float would be float32
    safe = torch.where(counted, target, torch.zeros_like(target))[:, None]
    if weight is None:
        return _Rows(counted, valid, safe, valid, float(n_classes))
    return _Rows(counted, valid, safe, weight[safe[:, 0]] * valid, weight.sum())


def _capped(s, softcap):
    """The soft cap s = c tanh(x / c), in place; s unchanged without a cap."""
    return s if softcap is None else s.div_(softcap).tanh_().mul_(softcap)


def _cap_slope(raw, softcap):
    """ds/dx = 1 - tanh(x / c)^2 of the soft cap, at the raw logits."""
    return 1 - torch.tanh(raw / softcap) ** 2


def _row_losses(rows, lse, s_y, wsum, e, z_loss, C):
    """loss_n = (1 - e) w_y (LSE - s_y) + (e / C)(W LSE - sum_c w_c s_c) + z LSE^2,
    on counted rows (0 on ignored ones, whatever their LSE)."""
    zero = torch.zeros_like(lse)
    loss = (1 - e) * rows.wy * torch.where(rows.counted, lse - s_y, zero)
    if e > 0:
        loss = loss + (e / C) * rows.valid * torch.where(rows.counted, rows.W * lse - wsum, zero)
    if z_loss > 0:
        loss = loss + z_loss * rows.valid * torch.where(rows.counted, lse * lse, zero)
    return loss


def _coefficient(rows, v, e, C):
    """c_n without the z-loss term: v_n ((1 - e) w_y + (e / C) W), 0 on ignored rows."""
    return v * ((1 - e) * rows.wy + (e / C) * rows.W * rows.valid)


def _z_coefficient(counted, v, lse, z_loss):
    """The z-loss term of c_n: 2 z v_n LSE_n (d z LSE^2 / d LSE)."""
    return v * 2 * z_loss * torch.where(counted, lse, torch.zeros_like(lse))


def _exp_pass_(work, src, weight, e, stats, target):
    """One chunk's row statistics, writing e^(s - m) into ``work``: ``src``
    holds the (capped) logits s in ``work``'s dtype, and may be ``work`` itself. Returns the row
    maxima m (n, 1), the sums of the exponentials (n,), and sum_c w_c s_c
    (n,) when smoothing needs it. With ``stats``, appends argmax == target."""
    if stats is not None:
        stats.append(src.argmax(1) == target)
    wsum = None
    if e > 0:
        wsum = (src if weight is None else src * weight).sum(1)
    m = src.amax(1, keepdim=True)
    m.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)  # a row of -inf (or inf) gives NaN, not a shifted 0/0
    torch.sub(src, m, out=work).exp_()  # e^(s - m), the only exponential pass
    return m, work.sum(1), wsum


def _gradient_pass_(work, r, smooth, slope):
    """d loss / d s off the target column, in place: r_n e^(s_j - m) - smooth_j,
    times the soft cap's slope. (The target column is written separately.)"""
    work.mul_(r[:, None])
    if smooth is not None:
        work.sub_(smooth)
    if slope is not None:
        work.mul_(slope)


def _target_gradient(rows, v, coef, p_y, e, C, weight, slope_y):
    """d loss / d s at each row's target: c_n p_y - (e / C) w_y v_n - (1 - e) w_y v_n,
    times the soft cap's slope there."""
    g = coef * p_y - (1 - e) * rows.wy * v
    if e > 0:
        g = g - (e / C) * v * (rows.valid if weight is None else weight[rows.safe[:, 0]])
    return g if slope_y is None else g * slope_y


def _smoothing_term(v, e, C, weight):
    """(e / C) w_j v_n: the smoothing part of the gradient off the target."""
    smooth = (e / C) * v[:, None]
    return smooth if weight is None else smooth * weight


def chunk_loss_and_grad_(work, target, *, weight, ignore_index, label_smoothing, z_loss, softcap,
                         grad_scale, raw=None, stats=None):
    """The kernel on one chunk of rows held in the compute dtype.

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
    rows = _rows(target, weight, ignore_index, C, work.dtype)
    if softcap is not None and raw is None and grad_scale is not None:
        raw = work.clone()
    s_y = _capped((work if raw is None else raw).gather(1, rows.safe)[:, 0].to(work.dtype), softcap)
    _capped(work, softcap)
    hits = [] if stats is not None else None
    m, total, wsum = _exp_pass_(work, work, weight, e, hits, target)
    lse = m[:, 0] + total.log()
    loss = _row_losses(rows, lse, s_y, wsum, e, z_loss, C)
    if stats is not None:
        stats.append((lse, hits[0] & rows.counted))
    if grad_scale is None:
        return loss
    v = rows.valid * grad_scale  # the row's scale, 0 on ignored rows
    coef = _coefficient(rows, v, e, C)
    if z_loss > 0:
        coef = coef + _z_coefficient(rows.counted, v, lse, z_loss)
    slope = None if softcap is None else _cap_slope(raw, softcap)
    _gradient_pass_(work, coef / total, _smoothing_term(v, e, C, weight) if e > 0 else None, slope)
    g_y = _target_gradient(rows, v, coef, (s_y - lse).exp(), e, C, weight,
                           None if slope is None else slope.gather(1, rows.safe)[:, 0])
    work.scatter_(1, rows.safe, g_y[:, None])
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
    if grad.device.type == "cpu":  # CUDA tensors never come here: no host sync
        if g.dim() == 0 and g.item() == 1.0:
            return grad  # ``loss.backward()``: nothing to scale (reading a CPU value costs nothing)
        if grad.dtype in (torch.bfloat16, torch.float16) and grad.dim() > 0:
            return _scale_half_in_chunks_(grad, g)
    return grad.mul_(g)


def _scale_half_in_chunks_(grad, g):
    """``grad.mul_(g)`` for a half-precision CPU tensor, through float32
    chunks: torch's CPU multiply of a bfloat16 tensor, by a per-row factor
    above all, is slower than a conversion to float32 and back. What the
    pass costs is in ``BENCHMARKS.md`` (the scaled-loss table of
    ``benchmarks/bench_cross_entropy.py``)."""
    g = g.expand_as(grad)  # a view: no copy
    step = _rows_per_chunk(math.prod(grad.shape[1:]))  # a row's elements; grad may have no rows
    for r0 in range(0, grad.shape[0], step):
        chunk = grad[r0:r0 + step]
        chunk.copy_(chunk.float().mul_(g[r0:r0 + step]))
    return grad


def _denominator(target, weight, ignore_index, dtype):
    counted = target != ignore_index
    if weight is None:
        return counted.sum().to(dtype)
    return (weight.to(dtype)[torch.where(counted, target, torch.zeros_like(target))] * counted).sum()


def _safe_inverse(d):
    return torch.where(d == 0, torch.zeros_like(d), 1 / torch.where(d == 0, torch.ones_like(d), d))


def _forward(x, target, weight, ignore_index, reduction, e, z, cap, want_grad, inplace, num_items, want_stats):
    """Loss (reduced), the stored gradient (or None) and optional stats.

    What depends only on the targets (ignored rows, w_y, the target logit,
    the gradient's row coefficients) is computed once for all rows; the loop
    over chunks does only the passes over the classes: max, exponentials and
    their sum, and the scaling into the gradient buffer. The target column of
    the gradient is written afterwards, for all rows at once, from the row
    statistics (it is c_n p_y minus the target's share, with
    p_y = e^(s_y - LSE), in the compute dtype and rounded once).
    """
    N, C = x.shape
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    w = None if weight is None else weight.to(cdt)
    den = None
    if reduction == "mean":
        den = _denominator(target, weight, ignore_index, cdt) if num_items is None else \
            torch.as_tensor(num_items, dtype=cdt, device=x.device)
    rows = _rows(target, w, ignore_index, C, cdt)
    raw_y = x.gather(1, rows.safe)[:, 0].to(cdt)  # before inplace_backward overwrites x
    s_y = _capped(raw_y.clone(), cap)
    grad = v = coef = smooth = None
    if want_grad:
        v = rows.valid * (_safe_inverse(den) if reduction == "mean" else 1.0)  # 0 on ignored rows
        coef = _coefficient(rows, v, e, C)
        smooth = _smoothing_term(v, e, C, w) if e > 0 else None
        grad = x if inplace else torch.empty_like(x)
    ms, totals, wsums, hits = [], [], [], ([] if want_stats else None)
    step = _rows_per_chunk(C)
    same = x.dtype == cdt
    # Work in the gradient buffer itself when it has the compute dtype; else
    # in one chunk-sized float32 buffer, converted on the way in and out.
    work_buf = None if same and want_grad else torch.empty((min(step, N), C), dtype=cdt, device=x.device)
    for r0 in range(0, N, step):
        r1 = min(r0 + step, N)
        xc = x[r0:r1]
        work = grad[r0:r1] if work_buf is None else work_buf[: r1 - r0]
        slope = _cap_slope(xc.to(cdt), cap) if cap is not None and want_grad else None
        if same and cap is None:
            src = xc  # read once: the max, then e^(x - m) written straight into work
        else:
            if not (inplace and same):  # with inplace_backward, work is xc itself
                work.copy_(xc)  # same dtype: a copy; half: the conversion
            src = _capped(work, cap)
        m, total, wsum = _exp_pass_(work, src, w, e, hits, None if hits is None else target[r0:r1])
        ms.append(m)
        totals.append(total)
        wsums.append(wsum)
        if want_grad:
            r = coef[r0:r1]
            if z > 0:
                r = r + _z_coefficient(rows.counted[r0:r1], v[r0:r1], m[:, 0] + total.log(), z)
            _gradient_pass_(work, r / total, None if smooth is None else smooth[r0:r1], slope)
            if work_buf is not None:
                grad[r0:r1].copy_(work)
    m = torch.cat(ms)[:, 0] if ms else torch.zeros(0, dtype=cdt, device=x.device)
    total = torch.cat(totals) if totals else torch.ones(0, dtype=cdt, device=x.device)
    lse = m + total.log()
    wsum = torch.cat(wsums) if e > 0 and wsums else None
    loss = _row_losses(rows, lse, s_y, wsum, e, z, C)
    if want_grad:
        if z > 0:
            coef = coef + _z_coefficient(rows.counted, v, lse, z)
        g_y = _target_gradient(rows, v, coef, (s_y - lse).exp(), e, C, w,
                               None if cap is None else _cap_slope(raw_y, cap))
        # index_put_ writes the N elements; torch's CPU scatter_ into a
        # bfloat16 tensor would convert the whole tensor to do the same
        grad.index_put_((torch.arange(N, device=x.device), rows.safe[:, 0]), g_y.to(grad.dtype))
    if reduction == "none":
        value = loss
    elif reduction == "sum":
        value = loss.sum()
    else:
        value = loss.sum() * _safe_inverse(den)
    out_stats = None
    if want_stats:
        hit = torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool, device=x.device)
        zl = z * lse * lse * rows.counted
        acc = (hit & rows.counted).sum().to(cdt) * _safe_inverse(rows.counted.sum().to(cdt))
        out_stats = CrossEntropyStats(lse, zl, acc)
    return value.to(x.dtype), grad, out_stats


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
