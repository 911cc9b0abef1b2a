r"""The stability idioms of the links, written once: functions of an array
already in its compute dtype (float32 or float64) and a valid axis, in the
array-API namespace ``xp``. The public links (:mod:`crossentropy.links`) and
every loss (:mod:`crossentropy.losses`) call these.

* the row maximum ``m`` that logsumexp and softmax shift by, so that no
  ``exp`` overflows: :math:`\log\sum_j e^{x_j} = m + \log\sum_j e^{x_j - m}`;
* log-softmax relative to that shift, :math:`(x_i - m) - \log\sum_j e^{x_j - m}`;
* the softplus pair: :math:`\mathrm{softplus}(\pm x) = \log(1 + e^{-|x|}) +
  \max(\pm x, 0)`, never ``log(1 - sigmoid(x))``; ``log_sigmoid(x) =
  -softplus(-x)``.

Where torch has one of these functions natively and to the last ulp
(``sigmoid``, ``logsigmoid``), torch tensors use it: on CPU it is one pass
where the formula would be several, and a select (``where``) costs forty
multiplies there.
"""

from __future__ import annotations

import array_api_compat

from ._array import device, lincomb, stop_gradient

__all__ = ["shift", "lse", "log_softmax", "softmax", "sigmoid", "log_sigmoid", "softplus_pair"]


def _is_torch(xp) -> bool:
    return array_api_compat.is_torch_namespace(xp) or getattr(xp, "__name__", "") == "torch"


# ----------------------------------------------------------------------------


def shift(xp, x, axis: int):
    """The row maximum ``m`` (keepdims) that logsumexp and softmax shift by, cut
    from autograd (its gradient cancels). A row of all -inf (or with a +inf
    entry) has no finite shift: 0 is used there, and exp/log then produce
    -inf (or +inf) exactly. An empty axis has no maximum: shift by 0."""
    if x.shape[axis] == 0:
        shape = list(x.shape)
        shape[axis] = 1
        return xp.zeros(tuple(shape), dtype=x.dtype, device=device(x))
    m = xp.max(x, axis=axis, keepdims=True)
    return stop_gradient(xp.where(xp.isfinite(m), m, xp.zeros_like(m)))


def lse(xp, x, axis: int, keepdims: bool = True):
    """log sum_j e^{x_j} along ``axis``; -inf over an empty axis (log 0)."""
    m = shift(xp, x, axis)
    out = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else xp.squeeze(out, axis=axis)


def log_softmax(xp, x, axis: int):
    """``(x - m) - log sum_j e^{x_j - m}``: relative to the shift, so that a
    logit near the maximum keeps its precision (``x - LSE`` would carry the
    rounding of ``LSE``, about 1e-3 at logits of 1e4 in float32)."""
    shifted = x - shift(xp, x, axis)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def softmax(xp, x, axis: int):
    e = xp.exp(x - shift(xp, x, axis))
    return e / xp.sum(e, axis=axis, keepdims=True)


def _abs(xp, x):
    """``|x|``, written as a ``where`` so that autograd takes the derivative of
    the ``x >= 0`` branch at 0 (for the sigmoid below)."""
    return xp.where(x >= 0, x, -x)


def softplus_pair(xp, x, neg_x=None):
    """``(softplus(-x), softplus(x))``, from one exp and one log1p: with
    ``l = log1p(exp(-|x|))``, softplus(x) = log(1 + e^x) = l + max(x, 0)
    and softplus(-x) = -log sigma(x) = l + max(-x, 0), both >= 0, without
    overflow or cancellation for any x, infinite ones included. Arithmetic
    only (a select, ``where``, costs 40 multiplies on torch CPU tensors); at
    ``x = 0`` autograd takes d|x|/dx = 0 and splits the tie of ``maximum``,
    which gives the right derivative, sigma(0) = 1/2. ``neg_x``: ``-x``, when
    the caller has it."""
    zero = xp.zeros((), dtype=x.dtype, device=device(x))
    ls = log_sigmoid(xp, xp.abs(x))  # -log1p(exp(-|x|))
    return (lincomb(xp, xp.maximum(-x if neg_x is None else neg_x, zero), None, ls, None, -1),
            lincomb(xp, xp.maximum(x, zero), None, ls, None, -1))


def sigmoid(xp, x):
    """1/(1+e^-x) for x >= 0 and e^x/(1+e^x) for x < 0: every exp is <= 1.
    torch's own sigmoid is this function to the last ulp (1/(1 + e^-x), whose
    relative error is one rounding for either sign), and much faster there
    than a select on CPU tensors; it is used for torch tensors."""
    if _is_torch(xp):
        import torch

        return torch.sigmoid(x)
    e = xp.exp(-_abs(xp, x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def log_sigmoid(xp, x):
    """log sigma(x) = -softplus(-x) = -(log1p(exp(-|x|)) + max(-x, 0)); torch's
    own logsigmoid is this formula, in one pass, and is used for torch tensors."""
    if _is_torch(xp):
        import torch.nn.functional as F

        return F.logsigmoid(x)
    zero = xp.zeros((), dtype=x.dtype, device=device(x))
    return -(xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(-x, zero))
