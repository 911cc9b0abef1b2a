r"""Categorical losses on logits: cross-entropy, negative log-likelihood, focal loss.

All three are sums over classes of a per-class term weighted by the target
weights :math:`a_c` (see :mod:`crossentropy.losses._targets`), reduced with
PyTorch's rules. Each has its analytic gradient beside the value; the
derivations are in ``docs/derivations.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import _checks
from .._array import is_torch
from .._grad import analytic
from ..links import _lse
from . import _targets

__all__ = ["cross_entropy", "cross_entropy_with_stats", "CrossEntropyStats", "nll_loss", "focal_loss"]


class CrossEntropyStats(NamedTuple):
    """Per-row statistics of :func:`cross_entropy_with_stats`, as LLM trainers
    log them, in the input's compute dtype (float32 for half precision)."""

    lse: Any  # logsumexp of each row's (soft-capped) logits, shaped like the rows
    z_loss: Any  # z * lse^2 on counted rows, 0 on ignored ones, shaped like the rows
    accuracy: Any  # 0-d: fraction of counted rows whose argmax is the target (0 if none)


def _finish(t: _targets.Targets, loss_rows, grad_rows, reduction, grad_output, input, need_grad,
            num_items_in_batch=None):
    """Reduce the per-row losses; scale the per-row unit gradients (class axis
    last, w.r.t. the compute-dtype input) and return them in the caller's layout."""
    xp = t.xp
    den = None
    if reduction == "mean":
        den = t.denominator() if num_items_in_batch is None else num_items_in_batch
    value = xp.astype(_checks.reduce(xp, loss_rows, reduction, den), input.dtype)
    if not need_grad:
        return value, None
    g = _checks.scale(xp, grad_output, reduction, t.rows, t.x.dtype, t.x, den)
    grad = grad_rows * (g[..., None] if reduction == "none" else g)
    return value, xp.astype(xp.moveaxis(grad, -1, t.class_axis), input.dtype)


def _masked_product(xp, a, b):
    """``a * b`` with ``0 * anything = 0``: a class with no target weight adds
    nothing, even where its log-probability is -inf (``0 · log 0 = 0``)."""
    return a * xp.where(a == 0, xp.zeros_like(b), b)


# ----------------------------------------------------------------------------
# cross_entropy
# ----------------------------------------------------------------------------


def _cross_entropy(
    input, target, weight, ignore_index, reduction, label_smoothing, axis, z_loss, softcap,
    num_items_in_batch, inplace_backward, *, need_grad, grad_output,
):
    t = _targets.read(input, target, weight, ignore_index, reduction, label_smoothing, axis)
    z = _checks.real("z_loss", z_loss, low=0.0)
    c = _checks.real("softcap", softcap, low=0.0, low_open=True, allow_none=True)
    xp, e, C = t.xp, t.smoothing, t.num_classes

    # Gemma 2's soft cap: s = c tanh(x / c), ds/dx = 1 - (s / c)^2.
    s = t.x if c is None else c * xp.tanh(t.x / c)
    lse = _lse(xp, s, -1)  # (..., 1)
    logp = s - lse

    # loss_n = -sum_c a_c log p_c, written without the dense a for index targets:
    #   (1 - e) w_y (-log p_y) + (e / C) sum_c w_c (-log p_c)
    if t.probs is not None:
        loss = -xp.sum(_masked_product(xp, t.dense(), logp), axis=-1)
    else:
        loss = -_masked_product(xp, (1 - e) * t.row_weight(), t.gather(logp))
        if e > 0:
            wlogp = logp if t.weight is None else _masked_product(xp, t.weight, logp)
            smooth = -xp.sum(wlogp, axis=-1)
            loss = loss + (e / C) * xp.where(t.valid, smooth, xp.zeros_like(smooth))
    # PaLM's z-loss, z * LSE^2 on every counted row, not scaled by class weights.
    lse_rows = lse[..., 0]
    if z > 0:
        loss = loss + z * xp.where(t.valid, lse_rows * lse_rows, xp.zeros_like(lse_rows))

    if not need_grad:
        return _finish(t, loss, None, reduction, grad_output, input, False, num_items_in_batch)
    # d/ds_j of -sum_c a_c log p_c = A p_j - a_j with A = sum_c a_c: the notes'
    # "Q - P" when a is a one-hot or probability target (A = 1).
    a = t.dense()
    p = xp.exp(logp)
    A = xp.sum(a, axis=-1, keepdims=True)
    grad = A * p - a
    if z > 0:
        # d/ds_j of z LSE^2 = 2 z LSE p_j, on counted rows only.
        zl = 2 * z * xp.where(t.valid[..., None], lse, xp.zeros_like(lse))
        grad = grad + _masked_product(xp, zl, p)
    if c is not None:
        grad = grad * (1 - (s / c) ** 2)
    return _finish(t, loss, grad, reduction, grad_output, input, True, num_items_in_batch)


def _cross_entropy_torch(input, target, weight, ignore_index, reduction, label_smoothing, axis, z_loss, softcap,
                        num_items_in_batch, inplace_backward, with_stats=False):
    """Torch tensors with class indices: the fused single-pass kernel."""
    if not is_torch(target) or tuple(target.shape) == tuple(input.shape) or target.is_floating_point():
        return NotImplemented  # probability targets, or a bad target that the core reports
    t = _targets.read(input, target, weight, ignore_index, reduction, label_smoothing, axis, compute=False)
    z = _checks.real("z_loss", z_loss, low=0.0)
    cap = _checks.real("softcap", softcap, low=0.0, low_open=True, allow_none=True)
    from .._torch.fused import fused_cross_entropy

    C = t.num_classes
    x2 = t.x.reshape(-1, C)  # a view when the class axis is last and rows are contiguous
    inplace = bool(inplace_backward) and x2.data_ptr() == input.data_ptr() and x2.is_contiguous()
    out = fused_cross_entropy(
        x2, target.reshape(-1).long(), weight=t.weight, ignore_index=int(ignore_index), reduction=reduction,
        label_smoothing=t.smoothing, z_loss=z, softcap=cap, inplace_backward=inplace,
        num_items_in_batch=num_items_in_batch, with_stats=with_stats,
    )
    loss, stats = out if with_stats else (out, None)
    if reduction == "none":
        loss = loss.reshape(t.rows)
    if not with_stats:
        return loss
    return loss, CrossEntropyStats(stats.lse.reshape(t.rows), stats.z_loss.reshape(t.rows), stats.accuracy)


@analytic(_cross_entropy, torch_path=_cross_entropy_torch)
def cross_entropy(
    input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0,
    *, axis=None, z_loss=0.0, softcap=None, num_items_in_batch=None, inplace_backward=False,
):
    r"""Cross-entropy between the softmax of ``input`` (logits) and ``target``.

    PyTorch's ``torch.nn.functional.cross_entropy``, argument for argument,
    plus ``axis``, ``z_loss`` and ``softcap``.

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
            (any integer dtype), or class probabilities shaped like ``input``.
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
        inplace_backward: torch tensors with class indices only: write the
            gradient into ``input``'s buffer during the forward pass instead of
            a new one (``input`` is overwritten; use it for nothing else). Off
            by default: no input is ever mutated.

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
    torch tensors with class indices all of it comes from the fused kernel's
    single pass over the logits.

    >>> import numpy as np
    >>> loss, stats = cross_entropy_with_stats(np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 0.5]]), np.array([0, 2]))
    >>> stats.lse.round(4), float(stats.accuracy)
    (array([2.2413, 3.1239]), 0.5)
    """
    args = (input, target, weight, ignore_index, reduction, label_smoothing, axis, z_loss, softcap,
            num_items_in_batch, inplace_backward)
    if is_torch(input) and not any(getattr(a, "requires_grad", False) for a in (target, weight)):
        out = _cross_entropy_torch(*args, with_stats=True)
        if out is not NotImplemented:
            return out
    loss = cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing, axis=axis,
                         z_loss=z_loss, softcap=softcap, num_items_in_batch=num_items_in_batch)
    t = _targets.read(input, target, weight, ignore_index, reduction, label_smoothing, axis)
    xp = t.xp
    z = _checks.real("z_loss", z_loss, low=0.0)
    s = t.x if softcap is None else softcap * xp.tanh(t.x / softcap)
    s = s if not is_torch(s) else s.detach()
    lse = _lse(xp, s, -1, keepdims=False)
    zero = xp.zeros_like(lse)
    z_rows = xp.where(t.valid, z * lse * lse, zero)
    truth = t.index if t.probs is None else xp.argmax(t.probs, axis=-1)
    hits = xp.astype((xp.argmax(s, axis=-1) == truth) & t.valid, lse.dtype)
    counted = xp.sum(xp.astype(t.valid, lse.dtype))
    accuracy = xp.where(counted == 0, xp.sum(zero), xp.sum(hits) / xp.where(counted == 0, 1.0, counted))
    return loss, CrossEntropyStats(lse, z_rows, accuracy)


# ----------------------------------------------------------------------------
# nll_loss
# ----------------------------------------------------------------------------


def _nll_loss(input, target, weight, ignore_index, reduction, *, need_grad, grad_output):
    t = _targets.read(input, target, weight, ignore_index, reduction, 0.0, None, allow_probs=False)
    xp = t.xp
    wy = t.row_weight()
    # loss_n = -w_y x_{n,y}; "mean" divides by sum w_y. The where keeps an
    # ignored row at exactly 0 even when its gathered entry is -inf.
    loss = xp.where(t.valid, -wy * t.gather(t.x), xp.zeros_like(wy))
    grad = -t.dense() if need_grad else None  # d/dx_{n,j} = -w_y [j = y]
    return _finish(t, loss, grad, reduction, grad_output, input, need_grad)


@analytic(_nll_loss)
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


# ----------------------------------------------------------------------------
# focal_loss
# ----------------------------------------------------------------------------


def _focal_loss(
    input, target, gamma, weight, ignore_index, reduction, label_smoothing,
    *, need_grad, grad_output,
):
    t = _targets.read(input, target, weight, ignore_index, reduction, label_smoothing, None)
    gamma = _checks.real("gamma", gamma, low=0.0)
    xp = t.xp
    logp = t.x - _lse(xp, t.x, -1)
    p = xp.exp(logp)
    q = -xp.expm1(logp)  # 1 - p, exact near p = 1
    qg = q**gamma  # (1 - p)^gamma, with 0^0 = 1
    a = t.dense()
    # loss_n = -sum_c a_c (1 - p_c)^gamma log p_c
    loss = -xp.sum(_masked_product(xp, a, qg * logp), axis=-1)
    if not need_grad:
        return _finish(t, loss, None, reduction, grad_output, input, False)
    # With phi(p) = -(1 - p)^gamma log p and dp_c/dx_j = p_c (delta_cj - p_j):
    #   d loss / dx_j = v_j - p_j sum_c v_c,   v_c = a_c p_c phi'(p_c),
    #   p phi'(p) = gamma (1 - p)^gamma * p log p / (1 - p) - (1 - p)^gamma.
    # p log p / (1 - p) tends to -1 as p -> 1 and to 0 as p -> 0; both limits
    # are taken explicitly so that saturated logits and gamma < 1 stay finite.
    safe_q = xp.where(q > 0, q, xp.ones_like(q))
    ratio = xp.where(q > 0, logp / safe_q, -xp.ones_like(q))  # log p / (1 - p)
    p_ratio = _masked_product(xp, p, ratio)  # 0 where p = 0 (ratio = -inf there)
    v = a * (gamma * qg * p_ratio - qg)
    grad = v - p * xp.sum(v, axis=-1, keepdims=True)
    return _finish(t, loss, grad, reduction, grad_output, input, True)


def _focal_loss_torch(input, target, gamma, weight, ignore_index, reduction, label_smoothing):
    """Torch tensors: value and gradient from one pass of the core (kept for backward)."""
    from .._torch.fused import one_pass

    rest = dict(target=target, gamma=gamma, weight=weight, ignore_index=ignore_index, reduction=reduction,
                label_smoothing=label_smoothing)
    return one_pass(_focal_loss, input, rest, 1 if input.ndim >= 2 else 0)


@analytic(_focal_loss, torch_path=_focal_loss_torch)
def focal_loss(
    input, target, gamma=2.0, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
):
    r"""Categorical focal loss (Lin et al. 2017) on logits.

    .. math:: \ell_n = -\sum_c a_{n,c}\,(1 - p_{n,c})^{\gamma}\,\log p_{n,c},
        \qquad p_n = \operatorname{softmax}(x_n)

    Targets, class weights, ``ignore_index``, label smoothing and reductions
    follow :func:`cross_entropy` exactly, so ``gamma=0`` *is* cross-entropy in
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
