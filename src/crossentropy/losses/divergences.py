r"""Information measures between distributions given as probabilities, and
PyTorch's ``kl_div``: their math and their reading, written once.

Natural logarithms (nats) throughout, with :math:`0\log 0 = 0`. The
distributions are not renormalised: ``entropy(p)`` is :math:`-\sum p\log p` of
the numbers given, so the identity :math:`H(p, q) = H(p) + \mathrm{KL}(p\,\|\,q)`
holds term by term for any non-negative inputs.
"""

from __future__ import annotations

from .. import _checks, _reduce
from .._array import namespace, to_compute
from .binary import masked_product
from .focal import log_or_neg_inf


def _read(named: dict, axis):
    """Validate probability arrays of one shape; return xp, their compute-dtype
    copies and the normalised axis."""
    xp = namespace(**named)
    (first_name, first), *rest = named.items()
    _checks.floating(xp, first, first_name, min_ndim=1)
    ax = _checks.axis("axis", axis, first.ndim)
    out = []
    for name, a in named.items():
        if name != first_name:
            _checks.floating(xp, a, name, min_ndim=1)
            _checks.same_shape(name, a, first_name, first)
        _checks.probabilities(xp, a, name)
        out.append(to_compute(xp, a, name))
    dt = out[0].dtype
    return xp, [xp.astype(a, dt) for a in out], ax


def xlogy(xp, x, y):
    """x log y with 0 log y = 0 (also for y = 0)."""
    return masked_product(xp, x, log_or_neg_inf(xp, y))


def _finish(xp, value_rows, grad, axis, grad_output, first, need_grad):
    value = xp.astype(value_rows, first.dtype)
    if not need_grad:
        return value, None
    g = _reduce.scale(xp, grad_output, "none", value_rows.shape, value_rows.dtype, value_rows)
    return value, xp.astype(grad * xp.expand_dims(g, axis=axis), first.dtype)


def entropy_core(p, axis, *, need_grad, grad_output):
    xp, (pc,), ax = _read({"p": p}, axis)
    value = -xp.sum(xlogy(xp, pc, pc), axis=ax)
    grad = -(log_or_neg_inf(xp, pc) + 1) if need_grad else None  # d/dp_i = -(log p_i + 1)
    return _finish(xp, value, grad, ax, grad_output, p, need_grad)


def kl_divergence_core(p, q, axis, *, need_grad, grad_output):
    xp, (pc, qc), ax = _read({"p": p, "q": q}, axis)
    # p log p - p log q; a class with p_i > 0 = q_i costs +inf.
    value = xp.sum(xlogy(xp, pc, pc) - xlogy(xp, pc, qc), axis=ax)
    grad = None
    if need_grad:
        grad = log_or_neg_inf(xp, pc) - log_or_neg_inf(xp, qc) + 1  # d/dp_i
    return _finish(xp, value, grad, ax, grad_output, p, need_grad)


def js_divergence_core(p, q, axis, *, need_grad, grad_output):
    xp, (pc, qc), ax = _read({"p": p, "q": q}, axis)
    m = (pc + qc) / 2
    log_m = log_or_neg_inf(xp, m)
    kl_pm = xlogy(xp, pc, pc) - masked_product(xp, pc, log_m)
    kl_qm = xlogy(xp, qc, qc) - masked_product(xp, qc, log_m)
    value = xp.sum(kl_pm + kl_qm, axis=ax) / 2
    grad = None
    if need_grad:
        # d/dp_i = (log p_i - log m_i + 1)/2 - (p_i + q_i)/(4 m_i) = log(p_i/m_i)/2
        grad = (log_or_neg_inf(xp, pc) - log_m) / 2
    return _finish(xp, value, grad, ax, grad_output, p, need_grad)


KL_DIV_REDUCTIONS = ("none", "batchmean", "sum", "mean")


def kl_div_core(input, target, reduction, log_target, *, need_grad, grad_output):
    """PyTorch's ``kl_div``: pointwise ``p (log p - x)``, 0 where ``p = 0``
    (also for ``x = -inf``, and for ``log p = -inf`` with ``log_target``)."""
    xp = namespace(input=input, target=target)
    _checks.floating(xp, input, "input", min_ndim=0)
    _checks.reduction(reduction, KL_DIV_REDUCTIONS)
    if not isinstance(log_target, bool):
        raise TypeError(f"log_target={log_target!r} must be a bool")
    _checks.floating(xp, target, "target", min_ndim=0)
    _checks.broadcastable("target", target, input.shape)
    if log_target:
        _checks.no_nan(xp, target, "target")
    else:
        _checks.probabilities(xp, target, "target")
    x = to_compute(xp, input, "input")
    t = xp.broadcast_to(xp.astype(target, x.dtype), x.shape)
    if log_target:
        pt = xp.exp(t)
        # e^t (t - x), with 0 where e^t = 0 (t = -inf), whatever x is
        gone = pt == 0
        loss = masked_product(xp, pt, xp.where(gone, xp.zeros_like(t), t) - xp.where(gone, xp.zeros_like(x), x))
    else:
        pt = t
        loss = xlogy(xp, t, t) - masked_product(xp, t, x)  # t (log t - x), 0 where t = 0
    if reduction == "mean":
        _checks.warn(
            "reduction='mean' divides the KL divergence by every element, not by the batch "
            "size; 'batchmean' gives the mathematical KL divergence (as in PyTorch)."
        )
    how, den = reduction, None
    if reduction == "batchmean":
        how, den = ("mean", x.shape[0]) if x.ndim > 0 else ("sum", None)
    value = xp.astype(_reduce.reduce(xp, loss, how, den), input.dtype)
    if not need_grad:
        return value, None
    g = _reduce.scale(xp, grad_output, how, loss.shape, x.dtype, x, den)
    return value, xp.astype(-pt * g, input.dtype)  # d/dx = -p
