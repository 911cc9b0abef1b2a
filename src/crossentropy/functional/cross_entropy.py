r"""``cross_entropy``, ``cross_entropy_with_stats`` and ``nll_loss``: the public
functions, their validation and their dispatch.

The math is :mod:`crossentropy.losses.cross_entropy`; torch tensors go to the
fused kernel :mod:`crossentropy._torch.cross_entropy` (CUDA tensors to the
Triton one, :mod:`crossentropy._triton.cross_entropy`, when triton imports),
NumPy float32 and float64 arrays to the compiled row kernel where numba
imports (:mod:`crossentropy._numpy.cross_entropy`), everything else (and
torch when a target or weight requires grad) to the array-API core.
"""

from __future__ import annotations

from .. import _numpy, _triton
from .._array import is_torch, quiet
from .._autograd import analytic
from ..losses import _targets
from ..losses import cross_entropy as math
from ..losses.cross_entropy import CrossEntropyStats

__all__ = ["cross_entropy", "cross_entropy_with_stats", "CrossEntropyStats", "nll_loss"]


def _core(input, target, weight, ignore_index, reduction, label_smoothing, axis, z_loss, softcap,
          num_items_in_batch, inplace_backward, *, need_grad, grad_output):
    p = _targets.read(input, target, weight, ignore_index, reduction, label_smoothing, axis, z_loss, softcap)
    value, grad, _ = math.core(p, num_items_in_batch, need_grad=need_grad, grad_output=grad_output)
    return p.in_input_layout(input, value, grad)


def _array_kernel(input, target, weight, ignore_index, reduction, label_smoothing, axis, z_loss, softcap,
                  num_items_in_batch, inplace_backward, *, need_grad, grad_output):
    """NumPy float32 and float64 arrays: the compiled row kernel, where numba imports."""
    if not _numpy.applies(input):
        return NotImplemented
    p = _targets.read(input, target, weight, ignore_index, reduction, label_smoothing, axis, z_loss, softcap)
    from .._numpy.cross_entropy import core

    value, grad = core(p, num_items_in_batch, need_grad=need_grad, grad_output=grad_output)
    return p.in_input_layout(input, value, grad)


def _kernel(input, target, weight, ignore_index, reduction, label_smoothing, axis, z_loss, softcap,
            num_items_in_batch, inplace_backward, with_stats=False):
    """Torch tensors: the fused kernel (index and probability targets)."""
    p = _targets.read(input, target, weight, ignore_index, reduction, label_smoothing, axis, z_loss, softcap,
                      compute=False)
    if _triton.wanted(p.x):  # CUDA tensors, when triton imports
        fused_cross_entropy = _triton.load("cross_entropy").triton_cross_entropy
    else:
        from .._torch.cross_entropy import fused_cross_entropy

    def reference(x):  # the same value from the core's differentiable operations (double backward)
        return _core(x, target, weight, ignore_index, reduction, label_smoothing, axis, z_loss, softcap,
                     num_items_in_batch, False, need_grad=False, grad_output=None)[0]

    value, stats = fused_cross_entropy(p, num_items_in_batch, inplace_backward=inplace_backward,
                                       with_stats=with_stats, reference=reference)
    return (value, stats) if with_stats else value


@analytic(_core, kernel=_kernel, array_kernel=_array_kernel)
def cross_entropy(
    input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0,
    *, axis=None, z_loss=0.0, softcap=None, num_items_in_batch=None, inplace_backward=False,
):
    r"""Cross-entropy between the softmax of ``input`` (logits) and ``target``.

    PyTorch's ``torch.nn.functional.cross_entropy``, argument for argument,
    plus ``axis``, ``z_loss``, ``softcap`` and ``num_items_in_batch``.

    .. math::

        \ell_n = -\sum_c a_{n,c}\,\log p_{n,c} + z\,\operatorname{LSE}(s_n)^2,
        \qquad p_n = \operatorname{softmax}(s_n),
        \qquad s = \texttt{softcap}\cdot\tanh(x/\texttt{softcap})

    with target weights :math:`a_{n,c} = w_c((1-\varepsilon)t_{n,c} + \varepsilon/C)`
    (``t`` one-hot for class indices, zero on ignored rows). The gradient with
    respect to the logits is the notes' :math:`Q - P`, generalised:

    .. math::

        \frac{\partial \ell_n}{\partial s_{n,j}} = A_n\,p_{n,j} - a_{n,j}
        + 2z\,\operatorname{LSE}(s_n)\,p_{n,j},\qquad A_n = \sum_c a_{n,c}

    ``mean`` divides the sum by :math:`\sum_n w_{y_n}` over counted rows for
    class indices and by the number of rows for probabilities, as PyTorch
    does. **One deliberate difference:** when every target is ignored (or the
    total weight is 0), ``mean`` returns 0 with a zero gradient, not NaN.

    Args:
        input: logits of shape ``(C)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``;
            float16/bfloat16 are computed in float32.
        target: class indices of shape ``()``, ``(N)`` or ``(N, d1, ..., dk)``
            (any integer dtype), or class probabilities in [0, 1] shaped like
            ``input`` (checked on CPU).
        weight: class weights of shape ``(C)``.
        ignore_index: class index whose rows are skipped (index targets).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        label_smoothing: :math:`\varepsilon \in [0, 1]`; the target becomes
            :math:`(1-\varepsilon)t + \varepsilon/C`.
        axis: the class axis when it is not PyTorch's (``-1`` for ``(N, T, C)``).
        z_loss: :math:`z \ge 0`, PaLM's auxiliary :math:`z\,\mathrm{LSE}^2`
            per counted row, not scaled by class weights, and under ``mean``
            divided by the same denominator.
        softcap: :math:`c > 0` replaces the logits by :math:`c\tanh(x/c)` (Gemma 2).
        num_items_in_batch: for ``"mean"``, divide by this count (a number or
            a 0-d array: the global number of non-ignored targets under data
            parallelism or gradient accumulation, as in transformers) instead
            of this call's total target weight.
        inplace_backward: torch tensors only: write the gradient into
            ``input``'s buffer during the forward pass instead of a new one
            (``input`` is overwritten; use it for nothing else). Off by
            default: no input is ever mutated.

    Returns:
        A 0-d array, or the per-row losses (target's shape) for ``"none"``, in
        ``input``'s dtype.

    Raises:
        TypeError, ValueError, IndexError: naming the argument and value. Class
        indices are range-checked on CPU only (on CUDA a bad index trips the
        device's own assert).

    >>> import numpy as np
    >>> x = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    >>> y = np.array([0, 2])
    >>> round(float(cross_entropy(x, y)), 6)
    0.669962
    >>> value, grad = cross_entropy.value_and_grad(x, y, reduction="sum")
    >>> grad.round(4)  # softmax(x) - onehot(y)
    array([[-0.2144,  0.1753,  0.0391],
           [ 0.3333,  0.3333, -0.6667]])

    References: PyTorch ``cross_entropy``; Szegedy et al. 2016 (label
    smoothing); Chowdhery et al. 2022, PaLM (z-loss); Gemma Team 2024 (softcap).
    """


def cross_entropy_with_stats(
    input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0,
    *, axis=None, z_loss=0.0, softcap=None, num_items_in_batch=None, inplace_backward=False,
):
    r""":func:`cross_entropy` and per-row statistics from the same pass.

    Returns ``(loss, stats)``: ``loss`` exactly as :func:`cross_entropy` gives
    it (differentiable), and a :class:`CrossEntropyStats` with each row's
    log-sum-exp, its z-loss term, and the token accuracy (argmax == target
    over counted rows; for probability targets, argmax of the target). On
    torch tensors all of it comes from the fused kernel's single pass over the
    logits.

    >>> import numpy as np
    >>> loss, stats = cross_entropy_with_stats(np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 0.5]]), np.array([0, 2]))
    >>> stats.lse.round(4), float(stats.accuracy)
    (array([2.2413, 3.1239]), 0.5)
    """
    args = (input, target, weight, ignore_index, reduction, label_smoothing, axis, z_loss, softcap)
    trained = any(getattr(a, "requires_grad", False) for a in (target, weight))
    if is_torch(input) and not trained:
        return _kernel(*args, num_items_in_batch, inplace_backward, with_stats=True)
    p = _targets.read(*args)
    if trained:  # autograd through the core for the loss; the statistics need none
        import torch

        loss = cross_entropy(*args[:6], axis=axis, z_loss=z_loss, softcap=softcap,
                             num_items_in_batch=num_items_in_batch)
        with torch.no_grad():
            return loss, math.core(p, num_items_in_batch, want_stats=True)[2]
    with quiet():
        value, _, stats = math.core(p, num_items_in_batch, want_stats=True)
    return p.xp.astype(value, input.dtype), stats


def _nll_core(input, target, weight, ignore_index, reduction, *, need_grad, grad_output):
    p = _targets.read(input, target, weight, ignore_index, reduction, allow_probs=False)
    value, grad = math.nll_core(p, need_grad=need_grad, grad_output=grad_output)
    return p.in_input_layout(input, value, grad)


@analytic(_nll_core)
def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    r"""Negative log-likelihood of class indices given log-probabilities ``input``.

    .. math:: \ell_n = -w_{y_n}\,x_{n,y_n},\qquad
        \frac{\partial \ell_n}{\partial x_{n,j}} = -w_{y_n}[j = y_n]

    PyTorch's ``nll_loss``: shapes ``(C)``, ``(N, C)``, ``(N, C, d1, ..., dk)``;
    ``mean`` divides by :math:`\sum_n w_{y_n}` over counted rows, and returns 0
    (not NaN) when nothing is counted.

    >>> import numpy as np
    >>> logp = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    >>> round(float(nll_loss(logp, np.array([0, 2]))), 6)
    0.458145
    """
