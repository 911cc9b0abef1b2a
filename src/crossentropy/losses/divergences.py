r"""Information measures between distributions given as probabilities.

Natural logarithms (nats) throughout, with :math:`0\log 0 = 0`. The
distributions are not renormalised: ``entropy(p)`` is :math:`-\sum p\log p` of
the numbers given, so the identity :math:`H(p, q) = H(p) + \mathrm{KL}(p\,\|\,q)`
holds term by term for any non-negative inputs.

``kl_div`` is PyTorch's function of the same name (log-probability input,
elementwise, with ``batchmean``); the others reduce along ``axis`` and return
one value per distribution.
"""

from __future__ import annotations

import warnings

from .. import _array, _checks
from .._array import namespace, to_compute
from .._grad import analytic
from .binary import _log_or_neg_inf
from .categorical import _masked_product

__all__ = ["entropy", "kl_divergence", "js_divergence", "kl_div"]


def _read(named: dict, axis):
    """Validate probability arrays of one shape; return xp, their compute-dtype
    copies and the normalised axis."""
    xp = namespace(**named)
    (first_name, first), *rest = named.items()
    _checks.logits(xp, first, first_name, min_ndim=1)
    ax = _array.axis_index("axis", axis, first.ndim)
    out = []
    for name, a in named.items():
        if name != first_name:
            _checks.logits(xp, a, name, min_ndim=1)
            _checks.same_shape(name, a, first_name, first)
        _checks.probabilities(xp, a, name)
        out.append(to_compute(xp, a, name))
    dt = out[0].dtype
    return xp, [xp.astype(a, dt) for a in out], ax


def _xlogy(xp, x, y):
    """x log y with 0 log y = 0 (also for y = 0)."""
    return _masked_product(xp, x, _log_or_neg_inf(xp, y))


def _finish(xp, value_rows, grad, axis, grad_output, first, need_grad):
    value = xp.astype(value_rows, first.dtype)
    if not need_grad:
        return value, None
    g = _checks.scale(xp, grad_output, "none", value_rows.shape, value_rows.dtype, value_rows)
    return value, xp.astype(grad * xp.expand_dims(g, axis=axis), first.dtype)


# ----------------------------------------------------------------------------


def _entropy(p, axis, *, need_grad, grad_output):
    xp, (pc,), ax = _read({"p": p}, axis)
    value = -xp.sum(_xlogy(xp, pc, pc), axis=ax)
    grad = -(_log_or_neg_inf(xp, pc) + 1) if need_grad else None  # d/dp_i = -(log p_i + 1)
    return _finish(xp, value, grad, ax, grad_output, p, need_grad)


@analytic(_entropy)
def entropy(p, axis=-1):
    r"""Shannon entropy :math:`H(p) = -\sum_i p_i \log p_i` along ``axis``, in nats.

    Gradient: :math:`\partial H/\partial p_i = -(\log p_i + 1)`.

    Args:
        p: non-negative numbers (NaN or negative entries raise; checked on CPU).
        axis: the axis holding each distribution.

    Returns:
        One value per distribution: ``p``'s shape without ``axis``.

    >>> import numpy as np
    >>> round(float(entropy(np.array([0.5, 0.5]))), 6)  # log 2
    0.693147

    Reference: Shannon, "A Mathematical Theory of Communication", 1948.
    """


def _kl_divergence(p, q, axis, *, need_grad, grad_output):
    xp, (pc, qc), ax = _read({"p": p, "q": q}, axis)
    # p log p - p log q; a class with p_i > 0 = q_i costs +inf.
    value = xp.sum(_xlogy(xp, pc, pc) - _xlogy(xp, pc, qc), axis=ax)
    grad = None
    if need_grad:
        grad = _log_or_neg_inf(xp, pc) - _log_or_neg_inf(xp, qc) + 1  # d/dp_i
    return _finish(xp, value, grad, ax, grad_output, p, need_grad)


@analytic(_kl_divergence)
def kl_divergence(p, q, axis=-1):
    r"""Kullback-Leibler divergence :math:`\mathrm{KL}(p\,\|\,q) = \sum_i p_i\log(p_i/q_i)`.

    Gradient with respect to ``p``: :math:`\log(p_i/q_i) + 1`. It is the
    cross-entropy minus the entropy: :math:`\mathrm{KL}(p\,\|\,q) = H(p, q) - H(p)`.

    >>> import numpy as np
    >>> round(float(kl_divergence(np.array([0.5, 0.5]), np.array([0.9, 0.1]))), 6)
    0.510826

    Reference: Kullback and Leibler, "On Information and Sufficiency", 1951.
    """


def _js_divergence(p, q, axis, *, need_grad, grad_output):
    xp, (pc, qc), ax = _read({"p": p, "q": q}, axis)
    m = (pc + qc) / 2
    log_m = _log_or_neg_inf(xp, m)
    kl_pm = _xlogy(xp, pc, pc) - _masked_product(xp, pc, log_m)
    kl_qm = _xlogy(xp, qc, qc) - _masked_product(xp, qc, log_m)
    value = xp.sum(kl_pm + kl_qm, axis=ax) / 2
    grad = None
    if need_grad:
        # d/dp_i = (log p_i - log m_i + 1)/2 - (p_i + q_i)/(4 m_i) = log(p_i/m_i)/2
        grad = (_log_or_neg_inf(xp, pc) - log_m) / 2
    return _finish(xp, value, grad, ax, grad_output, p, need_grad)


@analytic(_js_divergence)
def js_divergence(p, q, axis=-1):
    r"""Jensen-Shannon divergence :math:`\tfrac12\mathrm{KL}(p\,\|\,m) + \tfrac12\mathrm{KL}(q\,\|\,m)`,
    :math:`m = (p + q)/2`.

    Symmetric, finite, and at most :math:`\log 2`. Gradient with respect to
    ``p``: :math:`\tfrac12\log(p_i/m_i)`.

    >>> import numpy as np
    >>> round(float(js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0]))), 6)  # log 2
    0.693147

    Reference: Lin, "Divergence Measures Based on the Shannon Entropy", 1991.
    """


# ----------------------------------------------------------------------------


def _kl_div(input, target, reduction, log_target, *, need_grad, grad_output):
    xp = namespace(input=input, target=target)
    _checks.logits(xp, input, "input", min_ndim=0)
    _checks.reduction(reduction, ("none", "batchmean", "sum", "mean"))
    if not isinstance(log_target, bool):
        raise TypeError(f"log_target={log_target!r} must be a bool")
    _checks.logits(xp, target, "target", min_ndim=0)
    _checks.broadcastable("target", target, input.shape)
    x = to_compute(xp, input, "input")
    t = xp.broadcast_to(xp.astype(target, x.dtype), x.shape)
    if log_target:
        pt = xp.exp(t)
        loss = pt * (t - x)  # e^t (t - x)
    else:
        pt = t
        loss = _xlogy(xp, t, t) - _masked_product(xp, t, x)  # t (log t - x), 0 where t = 0
    if reduction == "mean":
        warnings.warn(
            "reduction='mean' divides the KL divergence by every element, not by the batch "
            "size; 'batchmean' gives the mathematical KL divergence (as in PyTorch).",
            UserWarning,
            stacklevel=4,
        )
    how, den = reduction, None
    if reduction == "batchmean":
        how, den = ("mean", x.shape[0]) if x.ndim > 0 else ("sum", None)
    value = xp.astype(_checks.reduce(xp, loss, how, den), input.dtype)
    if not need_grad:
        return value, None
    g = _checks.scale(xp, grad_output, how, loss.shape, x.dtype, x, den)
    return value, xp.astype(-pt * g, input.dtype)  # d/dx = -p


@analytic(_kl_div)
def kl_div(input, target, reduction="mean", log_target=False):
    r"""PyTorch's ``kl_div``: pointwise :math:`p\,(\log p - x)` with ``input`` :math:`x = \log q`.

    .. math:: \ell_i = p_i(\log p_i - x_i),\qquad \frac{\partial\ell_i}{\partial x_i} = -p_i

    ``target`` is :math:`p` (or :math:`\log p` with ``log_target=True``).
    ``reduction="batchmean"`` divides the sum by ``input.shape[0]`` and is the
    mathematical KL divergence per sample; ``"mean"`` divides by the number of
    elements and warns, as PyTorch does. Where :math:`p_i = 0` the term is 0,
    even for :math:`x_i = -\infty` (PyTorch gives NaN there).

    >>> import numpy as np
    >>> logq = np.log(np.array([[0.9, 0.1]]))
    >>> round(float(kl_div(logq, np.array([[0.5, 0.5]]), reduction="batchmean")), 6)
    0.510826
    """
