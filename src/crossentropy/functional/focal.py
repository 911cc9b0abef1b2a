r"""``focal_loss`` and ``sigmoid_focal_loss``: the public functions, their
validation and their dispatch. The math is :mod:`crossentropy.losses.focal`;
NumPy float32 and float64 logits of ``focal_loss`` go to the compiled row
kernel where numba imports (:mod:`crossentropy._numpy.focal`).
"""

from __future__ import annotations

import functools

from .. import _checks, _numpy, _triton
from .._autograd import analytic, kept_gradient
from ..losses import _targets, binary
from ..losses import focal as math
from .._reduce import finish_elementwise

__all__ = ["focal_loss", "sigmoid_focal_loss"]


def _focal_core(input, target, gamma, weight, ignore_index, reduction, label_smoothing, axis, *, need_grad,
                grad_output):
    p = _targets.read(input, target, weight, ignore_index, reduction, label_smoothing, axis)
    gamma = _checks.focal_gamma(gamma)
    value, grad = math.categorical_core(p, gamma, need_grad=need_grad, grad_output=grad_output)
    return p.in_input_layout(input, value, grad)


def _focal_array_kernel(input, target, gamma, weight, ignore_index, reduction, label_smoothing, axis, *, need_grad,
                        grad_output):
    """NumPy float32 and float64 arrays: the compiled row kernel, where numba imports."""
    if not _numpy.applies(input):
        return NotImplemented
    p = _targets.read(input, target, weight, ignore_index, reduction, label_smoothing, axis)
    gamma = _checks.focal_gamma(gamma)
    from .._numpy.focal import core

    value, grad = core(p, gamma, need_grad=need_grad, grad_output=grad_output)
    return p.in_input_layout(input, value, grad)


def _focal_kernel(input, target, gamma, weight, ignore_index, reduction, label_smoothing, axis):
    """Torch tensors: value and unit gradient from one pass of the core, the
    gradient kept for a backward that only scales it (PyTorch's class axis
    only; another ``axis`` takes the analytic backward)."""
    if axis is not None:
        return NotImplemented
    arguments = (input, target, gamma, weight, ignore_index, reduction, label_smoothing, None)

    def compute(want_grad):
        value, grad = _focal_core(*arguments, need_grad=want_grad, grad_output=None)
        return value, grad, ()

    def reference(x):  # the core's differentiable operations, for double backward
        return _focal_core(x, *arguments[1:], need_grad=False, grad_output=None)[0]

    return kept_gradient(compute, input, grad_output_axis=1 if input.ndim >= 2 else 0, name="focal_loss",
                         reference=reference)[0]


@analytic(_focal_core, kernel=_focal_kernel, array_kernel=_focal_array_kernel)
def focal_loss(
    input, target, gamma=2.0, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, *, axis=None
):
    r"""Categorical focal loss (Lin et al. 2017) on logits.

    .. math:: \ell_n = -\sum_c a_{n,c}\,(1 - p_{n,c})^{\gamma}\,\log p_{n,c},
        \qquad p_n = \operatorname{softmax}(x_n)

    Targets, class weights, ``ignore_index``, label smoothing, reductions and
    ``axis`` (the class axis when it is not PyTorch's) follow
    :func:`cross_entropy` exactly, so ``gamma=0`` *is* cross-entropy in
    every configuration. With :math:`v_c = a_c\,p_c\,\phi'(p_c)` for
    :math:`\phi(p) = -(1-p)^\gamma\log p`, the gradient is

    .. math:: \frac{\partial \ell_n}{\partial x_{n,j}} = v_j - p_j \sum_c v_c,

    computed from :math:`\log p` so that it stays finite for saturated logits
    and for :math:`0 \le \gamma < 1`.

    >>> import numpy as np
    >>> x = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    >>> round(float(focal_loss(x, np.array([0, 2]), gamma=2.0)), 6)
    0.249682
    >>> round(float(focal_loss(x, np.array([0, 2]), gamma=0.0)), 6)  # = cross_entropy
    0.669962

    Reference: Lin, Goyal, Girshick, He, Dollár, "Focal Loss for Dense Object
    Detection", ICCV 2017.
    """


def _sigmoid_focal_core(inputs, targets, alpha, gamma, reduction, *, need_grad, grad_output):
    xp, x, t = binary.read(inputs, targets, reduction, "inputs", "targets")
    alpha, gamma = _checks.focal_alpha(alpha), _checks.focal_gamma(gamma)
    loss, grad = math.sigmoid_focal_terms(xp, x, t, alpha, gamma, need_grad)
    return finish_elementwise(xp, loss, grad, reduction, grad_output, inputs)


def _sigmoid_focal_kernel(inputs, targets, alpha, gamma, reduction):
    """Torch tensors: the elementwise kernel, a chunk at a time."""
    xp, _, t = binary.read(inputs, targets, reduction, "inputs", "targets", convert=False)
    alpha, gamma = _checks.focal_alpha(alpha), _checks.focal_gamma(gamma)
    from .._torch.binary import elementwise_loss
    from .._torch.binary_cpu import sigmoid_focal

    terms = functools.partial(math.sigmoid_focal_terms, alpha=alpha, gamma=gamma)
    def reference(x):  # the core's differentiable operations, for double backward
        return _sigmoid_focal_core(x, targets, alpha, gamma, reduction, need_grad=False, grad_output=None)[0]

    if _triton.wanted(inputs):  # CUDA tensors, when triton imports
        binary.target_values(xp, t, "targets")
        return _triton.load("binary").triton_binary_loss(inputs, t, reduction=reduction, focal=(alpha, gamma),
                                                         name="sigmoid_focal_loss", reference=reference)
    return elementwise_loss(inputs, terms, (t,), reduction, "sigmoid_focal_loss", "targets", reference=reference,
                            compiled=sigmoid_focal(alpha, gamma))


@analytic(_sigmoid_focal_core, kernel=_sigmoid_focal_kernel)
def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    r"""Sigmoid focal loss (Lin et al. 2017) with torchvision's semantics.

    .. math:: \ell = \alpha_t\,(1 - p_t)^{\gamma}\,\mathrm{BCE}(x, t),\qquad
        p_t = p\,t + (1-p)(1-t),\quad \alpha_t = \alpha t + (1-\alpha)(1-t)

    with :math:`p = \sigma(x)`; ``alpha < 0`` turns the :math:`\alpha_t`
    weighting off. Unlike torchvision, :math:`(1-p_t)^\gamma` and its
    derivative are computed from :math:`\log(1-p_t)`, so value and gradient
    stay finite for saturated logits and for :math:`0 \le \gamma < 1`.

    Args:
        inputs: logits, any shape. targets: same shape, in [0, 1] (checked on CPU).
        alpha: weight of the positive class in [0, 1], or negative for none.
        gamma: focusing exponent :math:`\ge 0`.
        reduction: ``"none"`` (the default, as torchvision) | ``"mean"`` | ``"sum"``.

    >>> import numpy as np
    >>> sigmoid_focal_loss(np.array([2.0, -1.0]), np.array([1.0, 1.0])).round(6)
    array([0.000451, 0.175467])
    """
