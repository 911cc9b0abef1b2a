r"""Binary cross-entropy's math, written once: from probabilities, and from
logits as the negative log-likelihood of a logistic model.

With :math:`\hat y = \sigma(x)` the predicted probability of the positive class,

.. math:: -\log P(y \mid x) = -y\log\sigma(x) - (1-y)\log\sigma(-x)
    = y\,\mathrm{softplus}(-x) + (1-y)\,\mathrm{softplus}(x),

and :math:`\partial/\partial x = (1-y)\,\sigma(x) - y\,\sigma(-x) = \sigma(x) - y`.
Both softplus terms come from the same pieces, ``sign(x)``,
``sigma(-|x|)`` and ``log sigma(|x|)`` (``_stable.logistic_parts``): the loss
is ``x (s - t) - log sigma(|x|)`` with the step ``s``, two non-negative terms
computed without cancellation, so a confident logit's loss of about
``e^{-|x|}`` keeps its relative precision in float32 (the form ``(1 - t) x -
log sigma(x)`` loses it for ``t = 0`` and ``x << 0``), and no loss is ``-0``. The functions here are
elementwise and take any array namespace ``xp``: the array-API core and the
torch kernel (``crossentropy._torch.binary``, a chunk at a time) both call
them.
"""

from __future__ import annotations

from .. import _checks
from .._array import affine, as_array_like, compute_dtype, dot, lincomb, namespace, to_compute
from .._stable import logistic_parts

# PyTorch clamps each log of binary_cross_entropy at -100 and floors the
# gradient's denominator p (1 - p) at EPSILON = 1e-12, a C++ float, that is
# 1e-12 rounded to float32 (aten/src/ATen/native/Loss.cpp).
LOG_FLOOR = -100.0
GRAD_EPS = 9.999999960041972e-13  # float(numpy.float32(1e-12))


def masked_product(xp, a, b):
    """``a * b`` with ``0 * anything = 0``: a term with no weight adds nothing,
    even where its factor is infinite (``0 log 0 = 0``)."""
    return a * xp.where(a == 0, xp.zeros_like(b), b)


def step_parts(xp, x, extreme=True):
    """``(s, sgn, small, ls)``: :func:`crossentropy._stable.logistic_parts`
    and the step ``s = (1 + sgn) / 2``: 1 for x > 0, 0 for x < 0, 1/2 at 0."""
    sgn, small, ls = logistic_parts(xp, x, extreme)
    return affine(xp, sgn, 0.5, 0.5), sgn, small, ls


def _times(a, w):
    return a if w is None else a * w


def infinite_logits_fixed(xp, x, loss):
    """``loss`` with 0 where an infinite logit met a term of weight 0 (the
    ``0 * inf`` of the formulas above, whose limit is 0); NaN logits stay NaN.
    The kernels call this only when a chunk may hold an infinite logit."""
    return xp.where(xp.isinf(x) & xp.isnan(loss), xp.zeros_like(loss), loss)


def bce_with_logits_terms(xp, x, t, weight=None, pos_weight=None, need_grad=False, extreme=True, summed=False):
    r"""Elementwise loss and gradient of binary cross-entropy on logits:

    loss = w (pw t softplus(-x) + (1 - t) softplus(x)),
    d loss / d x = w ((1 - t) sigma(x) - pw t sigma(-x))   (= w (sigma(x) - t) when pw = 1),

    PyTorch's ``(1 - t) x + (1 + (pw - 1) t) softplus(-x)`` rearranged into
    non-negative terms. With the pieces of :func:`step_parts`,
    softplus(-x) = (s - 1) x - ls and softplus(x) = s x - ls, so with
    ``c = pw t + (1 - t)`` and ``d = s (1 - t) - (1 - s) pw t`` (``s - t`` when pw = 1)

        loss = w (x d - c ls),     d loss / d x = w (d - sgn c small):

    ``x d`` is ``(1 - t) x`` for x > 0 and ``-pw t x`` for x < 0, never
    negative, so the loss is a sum of non-negative terms (a confident logit's
    loss of about ``e^{-|x|}`` keeps its relative precision, and for a hard
    target it is exactly ``-ls``); in the gradient ``d`` is ``1 - t`` or
    ``-pw t`` and ``c small <= c / 2``, so a hard target's gradient is ``-pw
    small`` or ``small`` itself, or 1 (or ``-pw``) minus at most half of it.
    ``extreme=False``: no logit beyond ``_stable.normal_range`` (none
    infinite), and :func:`infinite_logits_fixed` is skipped. ``summed``: a
    sum of the losses will do; it is returned (a 0-d array, ``sum x d - sum
    ls`` or ``sum x d - sum c ls``, no elementwise loss formed) when there is
    no ``weight`` and ``extreme`` is False."""
    s, sgn, small, ls = step_parts(xp, x, extreme)
    if pos_weight is None:
        c, d = None, lincomb(xp, s, None, t, None, -1)  # c = 1, d = s - t (over s)
    else:
        # d = s - t q with q = s + (1 - s) pw = pw + s (1 - pw) (1 or pw), over s;
        # c = pw t + (1 - t) = 1 + t (pw - 1)
        q = lincomb(xp, s * (1 - pos_weight), None, pos_weight, None)
        c, d = affine(xp, t * (pos_weight - 1), 1.0, 1.0), lincomb(xp, s, None, t, q, -1)
    if summed and weight is None and not extreme:
        loss = dot(xp, x, d) - (xp.sum(ls) if c is None else dot(xp, c, ls))  # sum x d - sum c ls
    else:
        loss = lincomb(xp, x * d, None, ls, c, -1)  # x d - c ls
        if extreme:
            loss = infinite_logits_fixed(xp, x, loss)
        loss = _times(loss, weight)
    if not need_grad:
        return loss, None
    # d - sgn c small, over d (the loss is done with it)
    grad = lincomb(xp, d, None, sgn, small if c is None else c * small, -1)
    return loss, _times(grad, weight)


def bce_terms(xp, p, t, weight=None, need_grad=False):
    """Elementwise loss and gradient of binary cross-entropy on probabilities,
    with PyTorch's guards: each log clamped at -100, the gradient's
    denominator ``p (1 - p)`` floored at 1e-12.

    loss = -w (t log p + (1 - t) log(1 - p)),   d loss / d p = w (p - t) / (p (1 - p))."""
    floor = xp.full_like(p, LOG_FLOOR)
    log_p = xp.maximum(xp.log(p), floor)
    log_1mp = xp.maximum(xp.log1p(-p), floor)
    loss = _times(-(t * log_p + (1 - t) * log_1mp), weight)
    if not need_grad:
        return loss, None
    return loss, _times((p - t) / xp.maximum(p * (1 - p), xp.full_like(p, GRAD_EPS)), weight)


def read(input, target, reduction, name="input", target_name="target", convert=True):
    """The checks every binary loss shares: floating input, a real target of the
    same shape with values in [0, 1] (checked on CPU), a reduction. Returns the
    namespace and the compute-dtype input and target. With ``convert=False``
    (the torch kernel) the arrays are returned as given and the values of the
    target are not looked at here: the kernel converts and checks them, the
    chunked one with :func:`target_values` while each chunk is in cache, the
    compiled CPU one (``_cpu.binary``) as it reads each target."""
    xp = namespace(**{name: input, target_name: target})
    _checks.floating(xp, input, name, min_ndim=0)
    _checks.reduction(reduction)
    _checks.same_shape(target_name, target, name, input)
    if not xp.isdtype(target.dtype, ("real floating", "integral", "bool")):
        raise TypeError(f"{target_name} must be a real array, got dtype {target.dtype}")
    if not convert:
        return xp, input, target
    target_values(xp, target, target_name)
    x = to_compute(xp, input, name)
    return xp, x, xp.astype(target, x.dtype, copy=False)


def target_values(xp, t, name="target"):
    """A binary target's values are in [0, 1] (checked on CPU; booleans are)."""
    if not xp.isdtype(t.dtype, "bool"):
        _checks.probabilities(xp, t, name, high=1.0 if xp.isdtype(t.dtype, "real floating") else 1)


def factor(xp, value, input, name):
    """An optional per-element factor (``weight``, ``pos_weight``) that
    broadcasts to the input, in the input's compute dtype."""
    if value is None:
        return None
    value = as_array_like(xp, value, input, name, dtype=compute_dtype(xp, input.dtype, "input"))
    _checks.broadcastable(name, value, input.shape)
    return value
