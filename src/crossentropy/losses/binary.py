r"""Binary losses: binary cross-entropy from probabilities and from logits, and
the sigmoid focal loss.

Binary cross-entropy is the negative log-likelihood of a logistic model: with
:math:`\hat y = \sigma(x)` the predicted probability of the positive class,

.. math:: -\log P(y \mid x) = -y\log\hat y - (1-y)\log(1-\hat y)
    = -y\log\sigma(x) - (1-y)\log\sigma(-x),

and :math:`\partial/\partial x = \sigma(x) - y`. Working from logits with
``log_sigmoid`` keeps both terms finite for any finite logit.
"""

from __future__ import annotations

from .. import _array, _checks
from .._array import compute_dtype, namespace, to_compute
from .._grad import analytic
from ..links import _log_sigmoid, _sigmoid
from .categorical import _masked_product

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits", "sigmoid_focal_loss"]

# PyTorch clamps each log of binary_cross_entropy at -100 and floors the
# gradient's denominator p (1 - p) at EPSILON = 1e-12, a C++ float, that is
# 1e-12 rounded to float32 (aten/src/ATen/native/Loss.cpp).
_LOG_FLOOR = -100.0
_GRAD_EPS = 9.999999960041972e-13  # float(numpy.float32(1e-12))


def _read(input, target, reduction, name="input", target_name="target", convert=True):
    """Common checks: floating input, a target of the same shape, a reduction.
    Returns the namespace, the compute-dtype input and target (the arrays as
    given with ``convert=False``: the fused torch kernels convert chunk by
    chunk, without input-sized copies)."""
    xp = namespace(**{name: input, target_name: target})
    _checks.logits(xp, input, name, min_ndim=0)
    _checks.reduction(reduction)
    _checks.same_shape(target_name, target, name, input)
    if not xp.isdtype(target.dtype, ("real floating", "integral", "bool")):
        raise TypeError(f"{target_name} must be a real array, got dtype {target.dtype}")
    if not convert:
        return xp, input, target
    x = to_compute(xp, input, name)
    return xp, x, xp.astype(target, x.dtype, copy=False)


def _optional(xp, value, input, x, name):
    """An optional per-element factor (``weight``, ``pos_weight``) that broadcasts
    to the input, in the compute dtype."""
    if value is None:
        return None
    value = _array.as_array_like(xp, value, input, name, dtype=compute_dtype(xp, x.dtype, name))
    _checks.broadcastable(name, value, x.shape)
    return value


def _finish(xp, loss, grad, reduction, grad_output, input, need_grad):
    value = xp.astype(_checks.reduce(xp, loss, reduction), input.dtype)
    if not need_grad:
        return value, None
    g = _checks.scale(xp, grad_output, reduction, loss.shape, loss.dtype, loss)
    return value, xp.astype(grad * g, input.dtype)


def _times(a, w):
    return a if w is None else a * w


# ----------------------------------------------------------------------------


def _binary_cross_entropy(input, target, weight, reduction, *, need_grad, grad_output):
    xp, p, t = _read(input, target, reduction)
    _checks.probabilities(xp, p, "input", high=1.0)
    w = _optional(xp, weight, input, p, "weight")
    floor = xp.full_like(p, _LOG_FLOOR)
    log_p = xp.maximum(xp.log(p), floor)
    log_1mp = xp.maximum(xp.log1p(-p), floor)
    loss = _times(-(t * log_p + (1 - t) * log_1mp), w)
    grad = None
    if need_grad:
        # d/dp = (p - t) / (p (1 - p)), with PyTorch's floor on the denominator.
        grad = _times((p - t) / xp.maximum(p * (1 - p), xp.full_like(p, _GRAD_EPS)), w)
    return _finish(xp, loss, grad, reduction, grad_output, input, need_grad)


@analytic(_binary_cross_entropy)
def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    r"""Binary cross-entropy between probabilities ``input`` and ``target``.

    .. math:: \ell = -w\,\big(t\log p + (1-t)\log(1-p)\big),\qquad
        \frac{\partial\ell}{\partial p} = w\,\frac{p - t}{p(1-p)}

    PyTorch's ``binary_cross_entropy``, including its two guards, kept for
    compatibility: each log is clamped at -100 (so ``p = 0`` with ``t = 1``
    costs 100, not infinity), and the gradient's denominator
    :math:`p(1-p)` is floored at 1e-12 (so the gradient there is
    :math:`\mp 10^{12} w` rather than infinite, and never zero: the clamp does
    not silence it). Prefer :func:`binary_cross_entropy_with_logits`, which
    needs neither guard.

    Args:
        input: probabilities in [0, 1], any shape (checked on CPU).
        target: same shape, values in [0, 1] (integers and booleans are cast).
        weight: rescales each element; broadcasts to ``input``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``; ``mean`` averages all elements.

    >>> import numpy as np
    >>> round(float(binary_cross_entropy(np.array([0.9, 0.2]), np.array([1.0, 0.0]))), 6)
    0.164252

    Reference: PyTorch ``binary_cross_entropy`` (aten/src/ATen/native/Loss.cpp).
    """


# ----------------------------------------------------------------------------


def _binary_cross_entropy_with_logits(
    input, target, weight, reduction, pos_weight, *, need_grad, grad_output
):
    xp, x, t = _read(input, target, reduction)
    w = _optional(xp, weight, input, x, "weight")
    pw = _optional(xp, pos_weight, input, x, "pos_weight")
    # loss = -(pw t log sigma(x) + (1 - t) log sigma(-x)), which equals PyTorch's
    # (1 - t) x - (1 + (pw - 1) t) log sigma(x) and stays finite (0 · log 0 = 0)
    # at x = +-inf.
    pos = _times(t, pw)
    loss = -(_masked_product(xp, pos, _log_sigmoid(xp, x)) + _masked_product(xp, 1 - t, _log_sigmoid(xp, -x)))
    loss = _times(loss, w)
    grad = None
    if need_grad:
        # d/dx = -pw t sigma(-x) + (1 - t) sigma(x); = sigma(x) - t when pw = 1.
        grad = _times((1 - t) * _sigmoid(xp, x) - pos * _sigmoid(xp, -x), w)
    return _finish(xp, loss, grad, reduction, grad_output, input, need_grad)


def _binary_cross_entropy_with_logits_torch(input, target, weight, reduction, pos_weight):
    """Torch tensors: the fused elementwise kernel (loss and gradient in one forward)."""
    xp, x, t = _read(input, target, reduction, convert=False)
    w = _optional(xp, weight, input, x, "weight")
    pw = _optional(xp, pos_weight, input, x, "pos_weight")
    from .._torch.elementwise import fused_binary_cross_entropy_with_logits

    return fused_binary_cross_entropy_with_logits(input, t, w, reduction, pw)


@analytic(_binary_cross_entropy_with_logits, torch_path=_binary_cross_entropy_with_logits_torch)
def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    r"""Binary cross-entropy on logits: the negative log-likelihood of a logistic model.

    .. math:: \ell = -w\,\big(\omega\,t\log\sigma(x) + (1-t)\log\sigma(-x)\big),\qquad
        \frac{\partial\ell}{\partial x} = w\,\big((1-t)\,\sigma(x) - \omega\,t\,\sigma(-x)\big)

    with :math:`\omega` = ``pos_weight`` (1 by default, when the gradient is
    :math:`w(\sigma(x) - t)`). PyTorch's ``binary_cross_entropy_with_logits``:
    ``pos_weight`` broadcasts along the last (class) dimension.

    >>> import numpy as np
    >>> x, t = np.array([2.0, -1.0, 0.0]), np.array([1.0, 0.0, 1.0])
    >>> round(float(binary_cross_entropy_with_logits(x, t)), 6)
    0.377779
    >>> binary_cross_entropy_with_logits.value_and_grad(x, t, reduction="sum")[1].round(4)
    array([-0.1192,  0.2689, -0.5   ])

    Reference: Cox, "The Regression Analysis of Binary Sequences", 1958
    (the logistic model whose likelihood this is).
    """


# ----------------------------------------------------------------------------


def _log_or_neg_inf(xp, a):
    """log(a), with log(0) = -inf and no warning."""
    pos = a > 0
    return xp.where(pos, xp.log(xp.where(pos, a, xp.ones_like(a))), xp.full_like(a, -float("inf")))


def _sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction, *, need_grad, grad_output):
    xp, x, t = _read(inputs, targets, reduction, "inputs", "targets")
    alpha = _checks.real("alpha", alpha, high=1.0)
    gamma = _checks.real("gamma", gamma, low=0.0)
    ls_pos, ls_neg = _log_sigmoid(xp, x), _log_sigmoid(xp, -x)  # log p, log(1 - p)
    ce = -(_masked_product(xp, t, ls_pos) + _masked_product(xp, 1 - t, ls_neg))
    # 1 - p_t = p (1 - t) + (1 - p) t, in log space so that it never rounds to 0
    # for a finite logit: u = log(1 - p_t).
    u = xp.logaddexp(ls_pos + _log_or_neg_inf(xp, 1 - t), ls_neg + _log_or_neg_inf(xp, t))
    m = xp.exp(gamma * u) if gamma > 0 else xp.ones_like(u)  # (1 - p_t)^gamma
    a_t = None if alpha < 0 else alpha * t + (1 - alpha) * (1 - t)
    loss = _times(ce * m, a_t)
    grad = None
    if need_grad:
        # d/dx [ce m] = (sigma(x) - t) m + ce dm/dx, with
        #   dm/dx = gamma (1 - p_t)^(gamma - 1) p (1 - p) (1 - 2t)
        #         = gamma (1 - 2t) exp((gamma - 1) u + log p + log(1 - p)),
        # finite for gamma < 1, and 0 in the limit u -> -inf (infinite logits).
        dm = gamma * (1 - 2 * t) * xp.exp((gamma - 1) * u + ls_pos + ls_neg)
        dm = xp.where(u == -float("inf"), xp.zeros_like(dm), dm)
        grad = _times((_sigmoid(xp, x) - t) * m + _masked_product(xp, dm, ce), a_t)
    return _finish(xp, loss, grad, reduction, grad_output, inputs, need_grad)


def _sigmoid_focal_loss_torch(inputs, targets, alpha, gamma, reduction):
    """Torch tensors: the fused elementwise kernel."""
    _, _, t = _read(inputs, targets, reduction, "inputs", "targets", convert=False)
    alpha = _checks.real("alpha", alpha, high=1.0)
    gamma = _checks.real("gamma", gamma, low=0.0)
    from .._torch.elementwise import fused_sigmoid_focal_loss

    return fused_sigmoid_focal_loss(inputs, t, alpha, gamma, reduction)


@analytic(_sigmoid_focal_loss, torch_path=_sigmoid_focal_loss_torch)
def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    r"""Sigmoid focal loss (Lin et al. 2017) with torchvision's semantics.

    .. math:: \ell = \alpha_t\,(1 - p_t)^{\gamma}\,\mathrm{BCE}(x, t),\qquad
        p_t = p\,t + (1-p)(1-t),\quad \alpha_t = \alpha t + (1-\alpha)(1-t)

    with :math:`p = \sigma(x)`; ``alpha < 0`` turns the :math:`\alpha_t`
    weighting off. Unlike torchvision, :math:`(1-p_t)^\gamma` and its
    derivative are computed from :math:`\log(1-p_t)`, so value and gradient
    stay finite for saturated logits and for :math:`0 \le \gamma < 1`.

    Args:
        inputs: logits, any shape. targets: same shape, in [0, 1].
        alpha: weight of the positive class in [0, 1], or negative for none.
        gamma: focusing exponent :math:`\ge 0`.
        reduction: ``"none"`` (the default, as torchvision) | ``"mean"`` | ``"sum"``.

    >>> import numpy as np
    >>> sigmoid_focal_loss(np.array([2.0, -1.0]), np.array([1.0, 1.0])).round(6)
    array([0.000451, 0.175467])
    """
