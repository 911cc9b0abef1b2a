r"""``binary_cross_entropy`` and ``binary_cross_entropy_with_logits``: the
public functions, their validation and their dispatch. The math is
:mod:`crossentropy.losses.binary`.
"""

from __future__ import annotations

from .. import _checks, _triton
from .._autograd import analytic
from .._reduce import finish_elementwise
from ..losses import binary as math

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits"]


def _bce_core(input, target, weight, reduction, *, need_grad, grad_output):
    xp, p, t = math.read(input, target, reduction)
    _checks.probabilities(xp, p, "input", high=1.0)
    loss, grad = math.bce_terms(xp, p, t, math.factor(xp, weight, input, "weight"), need_grad)
    return finish_elementwise(xp, loss, grad, reduction, grad_output, input)


@analytic(_bce_core)
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
        target: same shape, values in [0, 1] (checked on CPU; integers and
            booleans are cast).
        weight: rescales each element; broadcasts to ``input``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``; ``mean`` averages all elements.

    >>> import numpy as np
    >>> round(float(binary_cross_entropy(np.array([0.9, 0.2]), np.array([1.0, 0.0]))), 6)
    0.164252

    Reference: PyTorch ``binary_cross_entropy`` (aten/src/ATen/native/Loss.cpp).
    """


def _bce_logits_core(input, target, weight, reduction, pos_weight, *, need_grad, grad_output):
    xp, x, t = math.read(input, target, reduction)
    w, pw = math.factor(xp, weight, input, "weight"), math.factor(xp, pos_weight, input, "pos_weight")
    loss, grad = math.bce_with_logits_terms(xp, x, t, w, pw, need_grad)
    return finish_elementwise(xp, loss, grad, reduction, grad_output, input)


def _bce_logits_kernel(input, target, weight, reduction, pos_weight):
    """Torch tensors: the elementwise kernel, a chunk at a time."""
    xp, _, t = math.read(input, target, reduction, convert=False)
    w, pw = math.factor(xp, weight, input, "weight"), math.factor(xp, pos_weight, input, "pos_weight")
    from .._torch.binary import elementwise_loss
    from .._torch.binary_cpu import bce_with_logits

    def reference(x):  # the core's differentiable operations, for double backward
        return _bce_logits_core(x, target, weight, reduction, pos_weight, need_grad=False, grad_output=None)[0]

    if _triton.wanted(input):  # CUDA tensors, when triton imports
        math.target_values(xp, t)
        return _triton.load("binary").triton_binary_loss(input, t, weight=w, pos_weight=pw, reduction=reduction,
                                                         name="binary_cross_entropy_with_logits", reference=reference)
    return elementwise_loss(input, math.bce_with_logits_terms, (t, w, pw), reduction,
                            "binary_cross_entropy_with_logits", reference=reference, compiled=bce_with_logits)


@analytic(_bce_logits_core, kernel=_bce_logits_kernel)
def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    r"""Binary cross-entropy on logits: the negative log-likelihood of a logistic model.

    .. math:: \ell = w\,\big(\omega\,t\,\mathrm{softplus}(-x) + (1-t)\,\mathrm{softplus}(x)\big),\qquad
        \frac{\partial\ell}{\partial x} = w\,\big((1-t)\,\sigma(x) - \omega\,t\,\sigma(-x)\big)

    with :math:`\omega` = ``pos_weight`` (1 by default, when the gradient is
    :math:`w(\sigma(x) - t)`). PyTorch's ``binary_cross_entropy_with_logits``:
    ``pos_weight`` broadcasts along the last (class) dimension. Each term is
    computed without cancellation, so a confident logit's tiny loss keeps its
    relative precision in float32.

    >>> import numpy as np
    >>> x, t = np.array([2.0, -1.0, 0.0]), np.array([1.0, 0.0, 1.0])
    >>> round(float(binary_cross_entropy_with_logits(x, t)), 6)
    0.377779
    >>> binary_cross_entropy_with_logits.value_and_grad(x, t, reduction="sum")[1].round(4)
    array([-0.1192,  0.2689, -0.5   ])

    Reference: Cox, "The Regression Analysis of Binary Sequences", 1958
    (the logistic model whose likelihood this is).
    """
