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

On CPU the elements are walked in chunks of ``_CHUNK_ELEMS``: the
temporaries of a chunk (about 1 MB each) are reused from the allocator's free lists
and stay in cache, and only the kept gradient (and the losses, for
``reduction="none"``) is input-sized. Without chunks every temporary is an
input-sized buffer: at 10M elements that is 10 fresh 40 MB buffers for the
focal loss, each paid for in page faults. On CUDA and under
``torch.compile`` the whole tensor is one chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .fused import scale_kept_gradient

__all__ = ["fused_binary_cross_entropy_with_logits", "fused_sigmoid_focal_loss"]

# Elements a chunk: 1 MB of float32, which stays in L2 between the passes.
# Chosen with benchmarks/bench_chunk_bytes.py (BENCHMARKS.md has the figures).
_CHUNK_ELEMS = 1 << 18


def _bce_logits(x, t, w, pw, *, out, grad, scale):
    """One chunk of binary cross-entropy on logits.

    x: the chunk's logits in the compute dtype; t: its targets, of x's shape
    (so 1 + (pw - 1) t is too); w, pw: weights and positive weights that
    broadcast to x, or None. Writes the
    per-element losses into ``out`` when given, else returns their sum;
    writes d loss / d x times ``scale`` (d reduced / d loss) into ``grad``
    when given.
    """
    lw = None if pw is None else ((pw - 1) * t).add_(1)  # 1 + (pw - 1) t
    # PyTorch's loss: (1 - t) x + lw softplus(-x) = (1 - t) x - lw log sigma(x),
    # with log sigma(x) = min(x, 0) - log1p(exp(-|x|)) = -softplus(-x) in one
    # native pass (F.logsigmoid: torch's kernel uses this stable form).
    total = None
    if out is None and w is None:
        # Only the sum is needed: sum(x) - x . t - sum(lw log sigma(x)), with
        # dot products instead of elementwise temporaries. The plain
        # reductions go first: they stream the chunk into cache at memory
        # speed for the transcendental passes after them, which then read
        # it from cache (the other order was slower at 1M elements).
        xf, tf = x.reshape(-1), t.reshape(-1)
        total = xf.sum() - torch.dot(xf, tf)
        lsf = F.logsigmoid(xf)
        total = total - (lsf.sum() if lw is None else torch.dot(lsf, lw.reshape(-1)))
        del lsf
    else:
        ls = F.logsigmoid(x)
        loss = ls.neg_() if lw is None else ls.mul_(lw).neg_()
        loss = loss.add_(x).addcmul_(x, t, value=-1)
        if w is not None:
            loss = loss.mul_(w)
        if out is None:
            total = loss.sum()
        else:
            out.copy_(loss)
    if grad is not None:
        # d/dx = lw sigma(x) - pw t  (= sigma(x) - t without pos_weight)
        g = torch.sigmoid(x, out=grad) if grad.dtype == x.dtype else torch.sigmoid(x)
        if lw is None:
            g.sub_(t)
        else:
            g.mul_(lw).sub_(pw * t)
        if w is not None:
            g.mul_(w)
        if scale != 1:
            g.mul_(scale)
        if g is not grad:
            grad.copy_(g)
    return total


def _sigmoid_focal(x, t, *, alpha, gamma, out, grad, scale):
    """One chunk of the sigmoid focal loss; arguments as for ``_bce_logits``."""
    # BCE = softplus(x) - t x = (1 - t) x - log sigma(x), since softplus(x) = x - log sigma(x)
    one_minus_t = 1 - t
    ce = torch.mul(x, one_minus_t).sub_(F.logsigmoid(x))
    p = torch.sigmoid(x)
    q = torch.neg(x).sigmoid_()  # 1 - p, accurate where p is near 1
    omp = (p * one_minus_t).addcmul_(q, t)  # 1 - p_t = p (1 - t) + (1 - p) t, no cancellation
    m = omp * omp if gamma == 2 else omp.pow(gamma)  # (1 - p_t)^gamma, 0^0 = 1
    a_t = None if alpha < 0 else t.mul(2 * alpha - 1).add_(1 - alpha)  # alpha t + (1 - alpha)(1 - t)
    loss = ce * m
    if a_t is not None:
        loss.mul_(a_t)
    total = None
    if out is None:
        total = loss.sum()
    else:
        out.copy_(loss)
    if grad is not None:
        # d/dx [ce m] = (p - t) m + ce dm/dx, and
        # dm/dx = gamma (1 - p_t)^(gamma - 1) p (1 - p)(1 - 2t) = gamma (1 - 2t) m p q / (1 - p_t),
        # whose limit where 1 - p_t underflows to 0 is 0 (also for gamma < 1).
        dm = (p * q).div_(torch.where(omp > 0, omp, torch.ones_like(omp))).mul_(m).mul_(
            one_minus_t.sub_(t).mul_(gamma)
        )
        g = p.sub_(t).mul_(m).addcmul_(dm, ce)
        if a_t is not None:
            g.mul_(a_t)
        if scale != 1:
            g.mul_(scale)
        grad.copy_(g)
    return total


def _layout(x, tensors):
    """Views to walk in chunks along their first dimension: everything
    flattened when every tensor has x's shape, else x (at least 1-d) with the
    others left-padded to its rank (a leading size of 1 broadcasts)."""
    if all(a is None or a.shape == x.shape for a in tensors):
        return x.reshape(-1), [None if a is None else a.reshape(-1) for a in tensors]
    xv = x.reshape(1) if x.ndim == 0 else x
    return xv, [None if a is None else a.reshape((1,) * (xv.ndim - a.ndim) + tuple(a.shape)) for a in tensors]


def _loop(x, kernel, tensors, params, reduction, want_grad):
    """The loss, reduced, in x's dtype, and the gradient of the reduced loss
    with respect to x (or None), for a backward that scales it by grad_output:
    the 1/n of ``mean`` is applied here, to each chunk while it is in cache,
    so that ``loss.backward()`` needs no pass over the gradient at all."""
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    n = x.numel()
    xv, tv = _layout(x, tensors)
    rows = xv.shape[0] if xv.ndim else 1
    per_row = max(1, n // max(1, rows))
    whole = x.device.type != "cpu" or torch.compiler.is_compiling()
    step = max(1, rows if whole else _CHUNK_ELEMS // per_row)
    out = torch.empty(xv.shape, dtype=x.dtype, device=x.device) if reduction == "none" else None
    grad = torch.empty(xv.shape, dtype=x.dtype, device=x.device) if want_grad else None
    total = torch.zeros((), dtype=cdt, device=x.device)
    scale = _mean_scale(n) if reduction == "mean" else 1.0
    for i in range(0, rows, step):
        sl = slice(i, i + step)
        chunk = [None if a is None else (a if a.shape[0] == 1 else a[sl]).to(cdt) for a in tv]
        part = kernel(xv[sl].to(cdt), *chunk, **params, out=None if out is None else out[sl],
                      grad=None if grad is None else grad[sl], scale=scale)
        if part is not None:
            total = total + part
    if out is not None:
        value = out.reshape(x.shape)
    else:
        value = (total * scale).to(x.dtype)
    return value, None if grad is None else grad.reshape(x.shape)


def _mean_scale(n):
    """d mean / d loss_i: 1/n, and 0 for the mean of nothing."""
    return 1.0 / n if n else 0.0


class _FusedElementwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, tensors, params, reduction):
        value, grad = _loop(x, kernel, tensors, params, reduction, want_grad=True)
        ctx.save_for_backward(grad)
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        # in the compute dtype: a half-precision gradient is scaled in float32
        g = grad_output.to(torch.promote_types(grad.dtype, torch.float32))
        # x, kernel, tensors, params, reduction
        return scale_kept_gradient(grad, g), None, None, None, None


def _run(x, kernel, tensors, params, reduction):
    if torch.is_grad_enabled() and x.requires_grad:
        return _FusedElementwise.apply(x, kernel, tensors, params, reduction)
    return _loop(x, kernel, tensors, params, reduction, want_grad=False)[0]


def fused_binary_cross_entropy_with_logits(x, t, weight, reduction, pos_weight):
    """Validated arguments; ``weight`` and ``pos_weight`` broadcast to ``x``."""
    return _run(x, _bce_logits, (t, weight, pos_weight), {}, reduction)


def fused_sigmoid_focal_loss(x, t, alpha, gamma, reduction):
    return _run(x, _sigmoid_focal, (t,), {"alpha": alpha, "gamma": gamma}, reduction)
