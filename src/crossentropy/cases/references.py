"""Independent float64 references in PyTorch, one per loss: PyTorch's own
functions where it has the loss (``F.cross_entropy``, ``F.nll_loss``,
``F.binary_cross_entropy(_with_logits)``, ``F.kl_div``), and otherwise the
textbook formula on dense tensors (torchvision's sigmoid focal loss, the focal
loss, z-loss and soft cap added to ``F.cross_entropy``). None calls this
library. Each is differentiable in its first argument, so torch's autograd
gives the expected gradient.

PyTorch's own functions disagree with the math at a few extremes (0 log 0,
0/0 for a mean over nothing, cancellation in BCE on logits for ``t = 0`` and
``x << 0``); the ``*_extreme`` references write those cases out with masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _class_dim(x, axis):
    return (1 if x.dim() >= 2 else 0) if axis is None else axis % x.dim()


def _mean(rows, den):
    """sum / den, and 0 (not NaN) when den is 0, as the library documents."""
    return rows.sum() * 0 if den == 0 else rows.sum() / den


def cross_entropy(x, t, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, *, axis=None,
                  z_loss=0.0, softcap=None, num_items_in_batch=None):
    """F.cross_entropy on (soft-capped) logits, plus z * LSE^2 on counted rows."""
    cd = _class_dim(x, axis)
    probs = t.is_floating_point()
    if axis is not None and x.dim() >= 2:  # move the class axis where PyTorch wants it
        x = x.movedim(cd, 1)
        t = t.movedim(cd, 1) if probs else t
        cd = 1
    s = x if softcap is None else softcap * torch.tanh(x / softcap)
    rows = F.cross_entropy(s, t, weight=weight, ignore_index=ignore_index, reduction="none",
                           label_smoothing=label_smoothing)
    valid = torch.ones_like(rows, dtype=torch.bool) if probs else t != ignore_index
    if z_loss:
        rows = rows + z_loss * torch.logsumexp(s, dim=cd) ** 2 * valid
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    if num_items_in_batch is not None:
        return rows.sum() / num_items_in_batch
    if probs:
        return rows.sum() / rows.numel() if rows.numel() else rows.sum() * 0
    w = torch.ones(x.shape[cd], dtype=x.dtype) if weight is None else weight
    den = (w[torch.where(valid, t, 0)] * valid).sum()
    if den == 0 or z_loss:
        return _mean(rows, den)
    return F.cross_entropy(s, t, weight=weight, ignore_index=ignore_index, reduction="mean",
                           label_smoothing=label_smoothing)  # PyTorch's own "mean"


def target_weights(x, t, weight, ignore_index, label_smoothing, cd):
    """Dense target weights a = w ((1 - e) t + e / C), zero on ignored rows."""
    C = x.shape[cd]
    if t.is_floating_point():
        a, valid = t * (1 - label_smoothing) + label_smoothing / C, None
    else:
        valid = t != ignore_index
        onehot = F.one_hot(torch.where(valid, t, 0), C).to(x.dtype)
        onehot = onehot.movedim(-1, cd) if x.dim() >= 2 else onehot
        a = (onehot * (1 - label_smoothing) + label_smoothing / C) * valid.unsqueeze(cd).to(x.dtype)
    if weight is not None:
        shape = [1] * x.dim()
        shape[cd] = C
        a = a * weight.reshape(shape)
    return a, valid


def _mean_rows(rows, x, t, valid, weight, cd, reduction):
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    if valid is None:
        return _mean(rows, rows.numel())
    w = torch.ones(x.shape[cd], dtype=x.dtype) if weight is None else weight
    return _mean(rows, (w[torch.where(valid, t, 0)] * valid).sum())


def cross_entropy_extreme(x, t, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, *,
                          axis=None, z_loss=0.0, softcap=None):
    """-sum_c a_c log p_c + z LSE^2 on dense tensors with 0 log 0 = 0, and the
    logits of ignored rows never touched (a row of -inf there gives 0)."""
    cd = _class_dim(x, axis)
    a, valid = target_weights(x, t, weight, ignore_index, label_smoothing, cd)
    s = x if softcap is None else softcap * torch.tanh(x / softcap)
    if valid is not None:
        s = torch.where(valid.unsqueeze(cd), s, torch.zeros_like(s))
    logp = torch.log_softmax(s, dim=cd)
    rows = -torch.where(a == 0, torch.zeros_like(logp), a * logp).sum(cd)
    if z_loss:
        lse = torch.logsumexp(s, dim=cd)
        rows = rows + z_loss * lse**2 * (1 if valid is None else valid)
    return _mean_rows(rows, x, t, valid, weight, cd, reduction)


def focal_loss(x, t, gamma=2.0, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    cd = _class_dim(x, None)
    a, valid = target_weights(x, t, weight, ignore_index, label_smoothing, cd)
    logp = torch.log_softmax(x, dim=cd)
    rows = -(a * (1 - logp.exp()) ** gamma * logp).sum(cd)
    return _mean_rows(rows, x, t, valid, weight, cd, reduction)


def nll_loss(x, t, weight=None, ignore_index=-100, reduction="mean"):
    out = F.nll_loss(x, t, weight=weight, ignore_index=ignore_index, reduction=reduction)
    return torch.nan_to_num(out, nan=0.0) if reduction == "mean" else out


def _softplus(x):
    """log(1 + e^x) as logaddexp(x, 0): exact, with the exact derivative sigma(x)
    (F.softplus returns x, and the derivative 1, above its threshold of 20)."""
    return torch.logaddexp(x, torch.zeros_like(x))


def binary_cross_entropy(p, t, weight=None, reduction="mean"):
    """F.binary_cross_entropy, with 0 for the mean of nothing."""
    if reduction == "mean" and p.numel() == 0:
        return p.sum()
    return F.binary_cross_entropy(p, t, weight=weight, reduction=reduction)


def binary_cross_entropy_with_logits_extreme(x, t, weight=None, reduction="mean", pos_weight=None):
    """pw t softplus(-x) + (1 - t) softplus(x) with 0 inf = 0: PyTorch's
    function cancels for t = 0, x << 0 (its loss there is (1 - t) x - log sigma(x))."""
    pos = t if pos_weight is None else t * pos_weight
    loss = torch.where(pos == 0, torch.zeros_like(x), pos * _softplus(-x)) + \
        torch.where(t == 1, torch.zeros_like(x), (1 - t) * _softplus(x))
    loss = loss if weight is None else loss * weight
    return {"none": loss, "mean": loss.mean() if loss.numel() else loss.sum(), "sum": loss.sum()}[reduction]


def sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss, by its formula."""
    p = torch.sigmoid(x)
    ce_loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return {"none": loss, "mean": loss.mean() if loss.numel() else loss.sum(), "sum": loss.sum()}[reduction]


def sigmoid_focal_loss_extreme(x, t, alpha=0.25, gamma=2.0, reduction="none"):
    """The same with the exact BCE and 1 - p_t = sigma(-x) t + sigma(x)(1 - t)
    (no 1 - p cancellation)."""
    ce_loss = binary_cross_entropy_with_logits_extreme(x, t, reduction="none")
    one_minus = torch.sigmoid(-x) * t + torch.sigmoid(x) * (1 - t)
    loss = ce_loss * one_minus**gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return {"none": loss, "mean": loss.mean() if loss.numel() else loss.sum(), "sum": loss.sum()}[reduction]


def _xlogy(a, b):
    return torch.special.xlogy(a, b)


def entropy(p, axis=-1):
    return -_xlogy(p, p).sum(axis)


def kl_divergence(p, q, axis=-1):
    return (_xlogy(p, p) - _xlogy(p, q)).sum(axis)


def js_divergence(p, q, axis=-1):
    m = (p + q) / 2
    return ((_xlogy(p, p) - _xlogy(p, m)) + (_xlogy(q, q) - _xlogy(q, m))).sum(axis) / 2


def kl_div_extreme(x, t, reduction="mean", log_target=False):
    """p (log p - x) with 0 where p = 0, whatever x is (PyTorch gives NaN at x = -inf)."""
    p = t.exp() if log_target else t
    logp = t if log_target else torch.log(torch.where(p > 0, p, torch.ones_like(p)))
    loss = torch.where(p == 0, torch.zeros_like(x), p * (logp - x))
    if reduction == "batchmean":
        return loss.sum() / x.shape[0] if x.dim() else loss.sum()
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


binary_cross_entropy_with_logits = F.binary_cross_entropy_with_logits
kl_div = F.kl_div
