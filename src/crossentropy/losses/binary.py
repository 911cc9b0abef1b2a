r"""Binary cross-entropy's math, written once: from probabilities, and from
logits as the negative log-likelihood of a logistic model.

With :math:`\hat y = \sigma(x)` the predicted probability of the positive class,

.. math:: -\log P(y \mid x) = -y\log\sigma(x) - (1-y)\log\sigma(-x)
    = y\,\mathrm{softplus}(-x) + (1-y)\,\mathrm{softplus}(x),

and :math:`\partial/\partial x = (1-y)\,\sigma(x) - y\,\sigma(-x) = \sigma(x) - y`.
Both softplus terms come from one exponential, ``e = exp(-|x|)``
(``_stable.softplus_pair``): each term is non-negative and computed without
cancellation, so a confident logit's loss of about ``e^{-|x|}`` keeps its
relative precision in float32 (the form ``(1 - t) x - log sigma(x)`` loses it
for ``t = 0`` and ``x << 0``), and no loss is ``-0``. The functions here are
elementwise and take any array namespace ``xp``: the array-API core and the
torch kernel (``crossentropy._torch.binary``, a chunk at a time) both call
them.
"""

from __future__ import annotations

from .. import _checks
from .._array import as_array_like, compute_dtype, lincomb, namespace, to_compute
from .._stable import sigmoid, softplus_pair

# PyTorch clamps each log of binary_cross_entropy at -100 and floors the
# gradient's denominator p (1 - p) at EPSILON = 1e-12, a C++ float, that is
# 1e-12 rounded to float32 (aten/src/ATen/native/Loss.cpp).
LOG_FLOOR = -100.0
GRAD_EPS = 9.999999960041972e-13  # float(numpy.float32(1e-12))


def masked_product(xp, a, b):
    """``a * b`` with ``0 * anything = 0``: a term with no weight adds nothing,
    even where its factor is infinite (``0 log 0 = 0``)."""
    return a * xp.where(a == 0, xp.zeros_like(b), b)


def logistic(xp, x, neg_x=None):
    """``(softplus(-x), softplus(x))``: -log sigma(x) and -log sigma(-x), both
    >= 0 and exact (``_stable.softplus_pair``), fresh arrays the caller owns."""
    return softplus_pair(xp, x, neg_x)


def sigmoids(xp, x, neg_x=None):
    """``(sigma(x), sigma(-x))``, each to its own relative precision (never as 1 - the other)."""
    return sigmoid(xp, x), sigmoid(xp, -x if neg_x is None else neg_x)


def _times(a, w):
    return a if w is None else a * w


def infinite_logits_fixed(xp, x, loss):
    """``loss`` with 0 where an infinite logit met a term of weight 0 (the
    ``0 * inf`` of the formulas above, whose limit is 0); NaN logits stay NaN.
    The kernels call this only when a chunk holds an infinite logit."""
    return xp.where(xp.isinf(x) & xp.isnan(loss), xp.zeros_like(loss), loss)


def bce_with_logits_terms(xp, x, t, weight=None, pos_weight=None, need_grad=False, infinite=True):
    """Elementwise loss and gradient of binary cross-entropy on logits:

    loss = w (pw t softplus(-x) + (1 - t) softplus(x)),
    d loss / d x = w ((1 - t) sigma(x) - pw t sigma(-x))   (= w (sigma(x) - t) when pw = 1),

    PyTorch's ``(1 - t) x + (1 + (pw - 1) t) softplus(-x)`` rearranged into
    non-negative terms. ``infinite=False`` (no infinite logit in ``x``) skips
    :func:`infinite_logits_fixed`."""
    neg_x = -x
    sp_neg, sp_pos = logistic(xp, x, neg_x)
    pos, neg = _times(t, pos_weight), 1 - t
    loss = lincomb(xp, sp_neg, pos, sp_pos, neg)  # pos softplus(-x) + (1 - t) softplus(x)
    if infinite:
        loss = infinite_logits_fixed(xp, x, loss)
    loss = _times(loss, weight)
    if not need_grad:
        return loss, None
    sig, sig_neg = sigmoids(xp, x, neg_x)
    return loss, _times(lincomb(xp, sig, neg, sig_neg, pos, -1), weight)  # (1 - t) sigma(x) - pos sigma(-x)


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
    target are not looked at here: the kernel converts and checks them chunk
    by chunk, with :func:`target_values`, while each chunk is in cache."""
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
