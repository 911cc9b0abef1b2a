"""Temporary stand-in for the fused kernel's per-chunk entry point (to be replaced)."""

import torch


def chunk_loss_and_grad_(logits, target, *, weight, ignore_index, label_smoothing, z_loss, softcap, grad_scale):
    V = logits.shape[1]
    e = label_smoothing
    s = logits if softcap is None else softcap * torch.tanh(logits / softcap)
    lse = torch.logsumexp(s, 1, keepdim=True)
    valid_b = target != ignore_index
    t = torch.where(valid_b, target, 0)
    valid = valid_b.to(s.dtype)
    w = torch.ones(V, dtype=s.dtype, device=s.device) if weight is None else weight
    wy = w[t] * valid
    logp_y = s.gather(1, t[:, None])[:, 0] - lse[:, 0]
    loss = -(1 - e) * wy * logp_y
    if e > 0:
        loss = loss + (e / V) * valid * (-(s * w).sum(1) + w.sum() * lse[:, 0])
    if z_loss:
        loss = loss + z_loss * valid * lse[:, 0] ** 2
    if grad_scale is None:
        return loss
    p = torch.exp(s - lse)
    A = (1 - e) * wy + (e / V) * w.sum() * valid
    g = A[:, None] * p + 2 * z_loss * (valid * lse[:, 0])[:, None] * p
    g = g - (e / V) * w * valid[:, None]
    g[torch.arange(len(t)), t] -= (1 - e) * wy
    if softcap is not None:
        g = g * (1 - (s / softcap) ** 2)
    logits.copy_(g * grad_scale if grad_scale.dim() == 0 else g * grad_scale[:, None])
    return loss
