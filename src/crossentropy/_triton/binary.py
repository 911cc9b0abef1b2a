r"""Elementwise binary losses in Triton: binary cross-entropy on logits and the
sigmoid focal loss, in log space, one launch over the elements.

Each program takes a tile of elements, forms the logistic pieces of
``_stable.logistic_parts`` (``sgn = sign(x)``, ``small = sigma(-|x|)``,
``ls = log sigma(|x|) = log1p(-small)``, the step ``s = (1 + sgn) / 2``), and
from them the loss and its gradient by the formulas of
``losses.binary.bce_with_logits_terms`` and ``losses.focal.sigmoid_focal_terms``
(restated below, line by line), each a sum of non-negative terms so that a
confident logit's loss of about ``e^{-|x|}`` keeps its relative precision.
The gradient of the reduced loss for a unit ``grad_output`` is written once
(the ``1/n`` of ``"mean"`` applied in the kernel); the losses are written
(``"none"``) or summed, one float32 (float64) partial sum a program, added in
torch (no atomics: the same sum every run). The backward multiplies the kept
gradient by ``grad_output`` (:func:`crossentropy._autograd.kept_gradient`).

``weight`` and ``pos_weight`` broadcast to the input: a factor shaped like the
input is read element by element, one shaped like the last axis (``pos_weight``'s
usual shape) by column, a single number as such; any other broadcast is
expanded in torch first.
"""

from __future__ import annotations

import math as _pymath

import torch
import triton
import triton.language as tl

from .._autograd import kept_gradient
from . import _lang, block_override
from .cross_entropy import _TL, _scalars

__all__ = ["triton_binary_loss"]

BCE, FOCAL = 0, 1
# how a factor broadcasts: absent, element by element, by column (the last axis), one number
ABSENT, FULL, COLUMN, SCALAR = 0, 1, 2, 3


@triton.jit
def _factor(ptr, offs, mask, C, HOW: tl.constexpr, ACC: tl.constexpr):
    if HOW == 1:
        return tl.load(ptr + offs, mask=mask, other=0.0).to(ACC)
    elif HOW == 2:
        return tl.load(ptr + offs % C, mask=mask, other=0.0).to(ACC)
    else:
        return tl.load(ptr).to(ACC) + tl.zeros(offs.shape, ACC)


@triton.jit
def _binary_kernel(x_ptr, t_ptr, w_ptr, pw_ptr, p_ptr, loss_ptr, part_ptr, g_ptr, n, C,
                   LOSS: tl.constexpr, W: tl.constexpr, PW: tl.constexpr, ALPHA: tl.constexpr,
                   GAMMA: tl.constexpr, ROWS: tl.constexpr, GRAD: tl.constexpr,
                   BLOCK: tl.constexpr, ACC: tl.constexpr, OUT: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    scale, alpha, gamma = tl.load(p_ptr), tl.load(p_ptr + 1), tl.load(p_ptr + 2)  # see _scalars
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    t = tl.load(t_ptr + offs, mask=mask, other=0).to(ACC)
    # _stable.logistic_parts: sgn, small = sigma(-|x|) = e / (1 + e) with e = e^{-|x|}, ls = log1p(-small)
    sgn = tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0)).to(ACC)
    ex = tl.exp(-tl.abs(x))
    small = ex / (1.0 + ex)
    ls = _lang.log1p(-small)
    s = 0.5 + 0.5 * sgn  # binary.step_parts: the step, 1 / 0 / 1/2
    inf_x = tl.abs(x) == float("inf")
    if LOSS == 0:  # binary.bce_with_logits_terms
        if PW:
            pw = _factor(pw_ptr, offs, mask, C, PW, ACC)
            q = pw + s * (1.0 - pw)  # 1 or pw
            c = 1.0 + t * (pw - 1.0)  # pw t + (1 - t)
            d = s - t * q  # s (1 - t) - (1 - s) pw t
            loss = x * d - c * ls
            grad = d - sgn * c * small
        else:
            d = s - t
            loss = x * d - ls
            grad = d - sgn * small
        loss = tl.where(inf_x & (loss != loss), 0.0, loss)  # binary.infinite_logits_fixed
    else:  # focal.sigmoid_focal_terms
        d = s - t
        ce = x * d - ls  # BCE
        sig_neg = (1.0 - s) + sgn * small  # sigma(-x)
        sig = s - sgn * small  # sigma(x)
        q = sig * (1.0 - t) + sig_neg * t  # 1 - p_t, a sum of non-negative terms
        if GAMMA == 1:
            mq = q
        elif GAMMA == 2:
            mq = q * q
        elif GAMMA == 0:
            mq = tl.full(q.shape, 1.0, ACC)
        else:
            mq = _lang.pow(q, gamma)
        loss = ce * mq
        loss = tl.where(inf_x & (loss != loss), 0.0, loss)
        if ALPHA:
            a_t = alpha * t + (1.0 - alpha) * (1.0 - t)
            loss = loss * a_t
        if GRAD:
            if ACC == tl.float64:  # the smallest normal number, where the ratio's denominator is floored
                tiny = 2.2250738585072014e-308
            else:
                tiny = 1.1754943508222875e-38
            ratio = sig * sig_neg / tl.maximum(q, tiny)
            dm_ce = gamma * (1.0 - 2.0 * t) * mq * ratio * ce  # the focal factor's derivative, times BCE
            dm_ce = tl.where(inf_x & (dm_ce != dm_ce), 0.0, dm_ce)
            grad = (d - sgn * small) * mq + dm_ce  # BCE' m + BCE dm/dx
            if ALPHA:
                grad = grad * a_t
    if W:
        w = _factor(w_ptr, offs, mask, C, W, ACC)
        loss = loss * w
    if ROWS:
        tl.store(loss_ptr + offs, _lang.cast_out(loss, OUT), mask=mask)
    else:
        tl.store(part_ptr + pid, tl.sum(tl.where(mask, loss, 0.0), 0))
    if GRAD:
        if W:
            grad = grad * w
        tl.store(g_ptr + offs, _lang.cast_out(grad * scale, OUT), mask=mask)


def _how(f, x):
    """How ``f`` broadcasts to ``x``, and the tensor to read."""
    if f is None:
        return ABSENT, None
    if f.shape == x.shape:
        return FULL, f.contiguous()
    if f.numel() == 1:
        return SCALAR, f.reshape(1)
    if x.ndim and f.numel() == x.shape[-1] and f.shape[-1] == x.shape[-1]:
        return COLUMN, f.reshape(-1).contiguous()
    return FULL, f.expand(x.shape).contiguous()


def _forward(x, t, weight, pos_weight, reduction, loss_kind, alpha, gamma, want_grad, block=None):
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    dev = x.device
    xf = x.contiguous()
    n = xf.numel()
    tf = t.contiguous()
    if tf.dtype == torch.bool:
        tf = tf.view(torch.uint8)
    w_how, w = _how(weight, x)
    pw_how, pw = _how(pos_weight, x)
    dummy = torch.empty(1, dtype=cdt, device=dev)
    scale = 1.0 if reduction != "mean" else (1.0 / n if n else 0.0)  # unit_scale with count n
    gmode = gamma if gamma in (0.0, 1.0, 2.0) else -1.0
    params = _scalars(cdt, dev, scale, float(alpha), float(gamma))
    BLOCK = block or block_override() or 1024
    programs = triton.cdiv(n, BLOCK)
    rows = reduction == "none"
    loss = torch.empty(x.shape, dtype=x.dtype, device=dev) if rows else None
    parts = None if rows else torch.zeros(max(programs, 1), dtype=cdt, device=dev)
    grad = torch.empty(x.shape, dtype=x.dtype, device=dev) if want_grad else None
    C = x.shape[-1] if x.ndim else 1
    if n:
        _lang.launch(_binary_kernel, (programs,), xf, tf, dummy if w is None else w, dummy if pw is None else pw,
                     params, dummy if loss is None else loss, dummy if parts is None else parts,
                     dummy if grad is None else grad, n, C, LOSS=loss_kind, W=w_how, PW=pw_how,
                     ALPHA=loss_kind == FOCAL and alpha >= 0, GAMMA=int(gmode) if gmode >= 0 else -1,
                     ROWS=rows, GRAD=want_grad, BLOCK=BLOCK, ACC=_TL[cdt], OUT=_TL[x.dtype])
    if rows:
        value = loss
    else:
        total = parts.sum()
        value = (total * scale if reduction == "mean" else total).to(x.dtype)
    return value, grad


def triton_binary_loss(x, t, *, weight=None, pos_weight=None, reduction="mean", focal=None, name="loss",
                       reference=None, block=None):
    """The loss (``focal=None``: binary cross-entropy on logits; ``focal=(alpha,
    gamma)``: the sigmoid focal loss) of validated arguments, differentiable
    with respect to ``x`` through the kept gradient (and ``reference`` for a
    backward with ``create_graph=True``). ``weight``, ``pos_weight``: in the
    compute dtype, broadcastable to ``x``; ``t`` shaped like ``x``."""
    kind, (alpha, gamma) = (BCE, (0.0, 0.0)) if focal is None else (FOCAL, focal)
    if kind == FOCAL and not _pymath.isfinite(gamma):
        raise ValueError(f"gamma={gamma!r} must be finite")

    def compute(want_grad):
        value, grad = _forward(x, t, weight, pos_weight, reduction, kind, alpha, gamma, want_grad, block)
        return value, grad, ()

    return kept_gradient(compute, x, name=name, reference=reference)[0]
