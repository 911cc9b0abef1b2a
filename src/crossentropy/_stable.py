r"""The stability idioms of the links, written once: functions of an array
already in its compute dtype (float32 or float64) and a valid axis, in the
array-API namespace ``xp``. The public links (:mod:`crossentropy.links`) and
every loss (:mod:`crossentropy.losses`) call these.

* the row maximum ``m`` that logsumexp and softmax shift by, so that no
  ``exp`` overflows: :math:`\log\sum_j e^{x_j} = m + \log\sum_j e^{x_j - m}`;
* log-softmax relative to that shift, :math:`(x_i - m) - \log\sum_j e^{x_j - m}`;
* the logistic pieces (:func:`logistic_parts`): ``sign(x)``,
  :math:`\sigma(-|x|)` and :math:`\mathrm{softplus}(-|x|) = \log(1 + e^{-|x|})`,
  from which :math:`\sigma(\pm x)` and :math:`\mathrm{softplus}(\pm x) =
  \mathrm{softplus}(-|x|) + \max(\pm x, 0)` follow without cancellation; never
  ``log(1 - sigmoid(x))``; ``log_sigmoid(x) = -softplus(-x)``.

Where torch has one of these functions natively and to the last ulp
(``sigmoid``, ``logsigmoid``), torch tensors use it: on CPU it is one pass
where the formula would be several. The formulas avoid selects: on torch
CPU tensors a ``where`` costs many times a multiply.
"""

from __future__ import annotations

import math

from ._array import device, is_torch_namespace, stop_gradient

__all__ = ["shift", "lse", "log_softmax", "softmax", "sigmoid", "log_sigmoid", "logistic_parts", "normal_range"]


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


def logistic_parts(xp, x, extreme=True):
    """``(sgn, small, ls)``: the pieces every binary loss on logits is built
    from, each to its own relative precision, for any ``x``:

    * ``sgn = sign(x)``, and with it the step ``s = (1 + sgn) / 2`` (1 for
      x > 0, 0 for x < 0, 1/2 at 0), so that ``relu(x) = s x`` and
      ``relu(-x) = (s - 1) x``;
    * ``small = sigma(-|x|)``, in [0, 1/2]; then ``sigma(x) = s - sgn small``
      and ``sigma(-x) = (1 - s) + sgn small``, each a difference of 1 and a
      number <= 1/2, or that number itself (both 1/2 at 0): no digit is lost
      (``1 - sigma(x)`` would lose them all where sigma(x) rounds to 1);
    * ``ls = log sigma(|x|) = log1p(-small) = -softplus(-|x|)``, <= 0; then
      ``softplus(x) = relu(x) - ls`` and ``softplus(-x) = -log sigma(x) = relu(-x) - ls``,
      sums of non-negative numbers.

    Arithmetic only, no select (see above). On torch the passes run in place over the
    arrays made here (each fresh chunk-sized buffer costs page faults on CPU),
    with torch's ``sigmoid``, which is faster than its ``exp``.
    ``extreme=False`` promises that every ``|x|`` is finite and at most
    :func:`normal_range` (``-log`` of the smallest normal number: 87.3 in
    float32), where torch's ``sigmoid`` (``1/(1 + e^{|x|})``) is a normal
    number; beyond it ``e^{|x|}`` overflows and the subnormal ``small`` would
    flush to 0, so ``small`` is formed as ``e / (1 + e)``, ``e = e^{-|x|}``.
    Autograd (which the in-place passes are not for: ``x`` must not require
    a gradient when ``extreme`` is False) takes d|x|/dx = 0 at 0, which is
    right: ``ls'(0) = 0``; ``sgn`` has derivative 0.
    """
    if is_torch_namespace(xp) and not extreme:
        small = x.abs().neg_().sigmoid_()
        return x.sign(), small, small.neg().log1p_()
    e = xp.exp(-xp.abs(x))
    small = e / (1 + e)
    return _sign(xp, x), small, xp.log1p(-small)


def _sign(xp, x):
    """``sign(x)``; on torch, torch's own (0 at NaN, where ``small`` and
    ``ls`` are NaN anyway), not array-api-compat's, which writes NaN through
    a boolean mask that ``torch.func.vmap`` cannot batch."""
    if is_torch_namespace(xp):
        import torch

        return torch.sign(x)
    return xp.sign(x)


def normal_range(xp, dtype) -> float:
    """The largest ``|x|`` whose ``sigma(-|x|)`` is a normal number of ``dtype``."""
    return -math.log(xp.finfo(dtype).smallest_normal)


def sigmoid(xp, x):
    """1/(1+e^-x) for x >= 0 and e^x/(1+e^x) for x < 0: every exp is <= 1.
    torch's own sigmoid is this function to the last ulp (1/(1 + e^-x), whose
    relative error is one rounding for either sign), and much faster there
    than a select on CPU tensors; it is used for torch tensors."""
    if is_torch_namespace(xp):
        import torch

        return torch.sigmoid(x)
    e = xp.exp(-_abs(xp, x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def log_sigmoid(xp, x):
    """log sigma(x) = -softplus(-x) = -(log1p(exp(-|x|)) + max(-x, 0)); torch's
    own logsigmoid is this formula, in one pass, and is used for torch tensors."""
    if is_torch_namespace(xp):
        import torch.nn.functional as F

        return F.logsigmoid(x)
    zero = xp.zeros((), dtype=x.dtype, device=device(x))
    return -(xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(-x, zero))
