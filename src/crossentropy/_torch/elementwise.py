r"""Fused elementwise binary losses for torch tensors: binary cross-entropy on
logits and the sigmoid focal loss.

Each forward computes the loss and its gradient from the same intermediates
(one native ``logsigmoid`` pass, one ``sigmoid``), keeps the gradient, and
the backward only multiplies it by ``grad_output``. The formulas are those of
:mod:`crossentropy.losses.binary`; here they are written with in-place torch
operations so that each costs one trip over memory:

* :math:`\log\sigma(x) = \min(x, 0) - \log(1 + e^{-|x|})`, and
  :math:`-\log\sigma(-x) = x - \log\sigma(x)`;
* :math:`1 - p_t = \sigma(x)(1-t) + \sigma(-x)\,t` in probability space, a
  sum of non-negative terms (no cancellation), and the focal factor's
  derivative as :math:`\gamma(1-2t)\,(1-p_t)^\gamma\,\sigma(x)\sigma(-x)/(1-p_t)`,
  taken as 0 where :math:`1 - p_t` underflows (its limit, also for
  :math:`\gamma < 1`).
"""

from __future__ import annotations

import torch

from .fused import scale_kept_gradient

__all__ = ["fused_binary_cross_entropy_with_logits", "fused_sigmoid_focal_loss"]


def _scale(reduction, n, dtype, device):
    """d value / d loss_i for a unit grad_output (0 for the mean of nothing)."""
    value = (1.0 / n if n else 0.0) if reduction == "mean" else 1.0
    return torch.full((), value, dtype=dtype, device=device)


def _reduce(loss, reduction):
    if reduction == "none":
        return loss
    total = loss.sum()
    return total / loss.numel() if reduction == "mean" and loss.numel() else total


def _bce_logits(x, t, w, pw, reduction, want_grad):
    # log sigma(x) = min(x, 0) - log1p(exp(-|x|)) = -softplus(-x), in one
    # native pass (torch's logsigmoid kernel uses this stable form).
    ls = torch.nn.functional.logsigmoid(x)
    lw = None if pw is None else ((pw - 1) * t).add_(1)  # 1 + (pw - 1) t
    # PyTorch's loss: (1 - t) x + lw softplus(-x) = (1 - t) x - lw log sigma(x)
    if w is None and reduction != "none":
        # Only the sum is needed: sum(x) - x . t - sum(lw log sigma(x)), with
        # dot products instead of elementwise temporaries.
        flat = ls.reshape(-1)
        total = x.sum() - torch.dot(x.reshape(-1), t.reshape(-1)) - (
            flat.sum() if lw is None else torch.dot(flat, lw.reshape(-1))
        )
        value = total / x.numel() if reduction == "mean" and x.numel() else total
    else:
        loss = ls.neg_() if lw is None else ls.mul_(lw.neg())
        loss = loss.add_(x).addcmul_(x, t, value=-1)
        value = _reduce(loss if w is None else loss * w, reduction)
    grad = None
    if want_grad:
        # d/dx = lw sigma(x) - pw t  (= sigma(x) - t without pos_weight)
        grad = torch.sigmoid(x)
        if lw is None:
            grad.sub_(t)
        else:
            grad.mul_(lw).sub_(pw * t)
        if w is not None:
            grad = grad * w
        grad.mul_(_scale(reduction, x.numel(), x.dtype, x.device))
    return value, grad


def _sigmoid_focal(x, t, alpha, gamma, reduction, want_grad):
    # BCE = softplus(x) - t x = (1 - t) x - log sigma(x), since softplus(x) = x - log sigma(x)
    one_minus_t = 1 - t
    ce = torch.mul(x, one_minus_t).sub_(torch.nn.functional.logsigmoid(x))
    p = torch.sigmoid(x)
    q = torch.neg(x).sigmoid_()  # 1 - p, accurate where p is near 1
    omp = (p * one_minus_t).addcmul_(q, t)  # 1 - p_t = p (1 - t) + (1 - p) t, no cancellation
    m = omp * omp if gamma == 2 else omp.pow(gamma)  # (1 - p_t)^gamma, 0^0 = 1
    a_t = None if alpha < 0 else t.mul(2 * alpha - 1).add_(1 - alpha)  # alpha t + (1 - alpha)(1 - t)
    loss = ce * m
    if a_t is not None:
        loss.mul_(a_t)
    grad = None
    if want_grad:
        # d/dx [ce m] = (p - t) m + ce dm/dx, and
        # dm/dx = gamma (1 - p_t)^(gamma - 1) p (1 - p)(1 - 2t) = gamma (1 - 2t) m p q / (1 - p_t),
        # whose limit where 1 - p_t underflows to 0 is 0 (also for gamma < 1).
        dm = (p * q).div_(torch.where(omp > 0, omp, torch.ones_like(omp))).mul_(m).mul_(
            one_minus_t.sub(t).mul_(gamma)
        )
        grad = (p - t).mul_(m).addcmul_(dm, ce)
        if a_t is not None:
            grad.mul_(a_t)
        grad.mul_(_scale(reduction, loss.numel(), x.dtype, x.device))
    return _reduce(loss, reduction), grad


class _FusedElementwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, args, reduction):
        cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
        xc = x.to(cdt)
        value, grad = kernel(xc, *args, reduction, ctx.needs_input_grad[0])
        ctx.reduction = reduction
        if grad is not None:
            ctx.save_for_backward(grad.to(x.dtype) if x.dtype != cdt else grad)
        return value.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return scale_kept_gradient(grad, grad_output.to(grad.dtype)), None, None, None  # x, kernel, args, reduction


def _compute(x, tensors):
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    return [None if a is None else a.to(cdt) for a in tensors]


def _run(x, kernel, args, reduction):
    if torch.is_grad_enabled() and x.requires_grad:
        return _FusedElementwise.apply(x, kernel, args, reduction)
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    value, _ = kernel(x.to(cdt), *args, reduction, False)
    return value.to(x.dtype)


def fused_binary_cross_entropy_with_logits(x, t, weight, reduction, pos_weight):
    """Validated arguments; ``weight`` and ``pos_weight`` broadcast to ``x``."""
    t, w, pw = _compute(x, (t, weight, pos_weight))
    return _run(x, _bce_logits, (t, w, pw), reduction)


def fused_sigmoid_focal_loss(x, t, alpha, gamma, reduction):
    (t,) = _compute(x, (t,))
    return _run(x, _sigmoid_focal, (t, alpha, gamma), reduction)
