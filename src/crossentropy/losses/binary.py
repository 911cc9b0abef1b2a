r"""Binary cross-entropy's math, written once: from probabilities, and from
logits as the negative log-likelihood of a logistic model.

With :math:`\hat y = \sigma(x)` the predicted probability of the positive class,

.. math:: -\log P(y \mid x) = -y\log\sigma(x) - (1-y)\log\sigma(-x)
    = y\,\mathrm{softplus}(-x) + (1-y)\,\mathrm{softplus}(x),

and :math:`\partial/\partial x = (1-y)\,\sigma(x) - y\,\sigma(-x) = \sigma(x) - y`.
Both softplus terms come from one exponential, ``e = exp(-|x|)``
(``links._softplus_parts``): each term is non-negative and computed without
cancellation, so a confident logit's loss of about ``e^{-|x|}`` keeps its
relative precision in float32 (the form ``(1 - t) x - log sigma(x)`` loses it
for ``t = 0`` and ``x << 0``), and no loss is ``-0``. The functions here are
elementwise and take any array namespace ``xp``: the array-API core and the
torch kernel (``crossentropy._torch.binary``, a chunk at a time) both call
them.
"""

from __future__ import annotations

from .. import _checks
from .._array import as_array_like, compute_dtype, namespace, to_compute
from ..links import _negative_part, _positive_part, _softplus_parts

# PyTorch clamps each log of binary_cross_entropy at -100 and floors the
# gradient's denominator p (1 - p) at EPSILON = 1e-12, a C++ float, that is
# 1e-12 rounded to float32 (aten/src/ATen/native/Loss.cpp).
LOG_FLOOR = -100.0
GRAD_EPS = 9.999999960041972e-13  # float(numpy.float32(1e-12))


def masked_product(xp, a, b):
    """``a * b`` with ``0 * anything = 0``: a term with no weight adds nothing,
    even where its factor is infinite (``0 log 0 = 0``)."""
    return a * xp.where(a == 0, xp.zeros_like(b), b)


def logistic(xp, x):
    """``(e, softplus(-x), softplus(x))`` with ``e = exp(-|x|)``: -log sigma(x)
    and -log sigma(-x), both >= 0, exact for every finite and infinite ``x``."""
    e, l = _softplus_parts(xp, x)
    return e, l + _negative_part(xp, x), l + _positive_part(xp, x)


def sigmoids(xp, x, e):
    """``(sigma(x), sigma(-x))`` from ``e = exp(-|x|)``, each with every exp <= 1."""
    big, small = 1 / (1 + e), e / (1 + e)
    pos = x >= 0
    return xp.where(pos, big, small), xp.where(pos, small, big)


def _times(a, w):
    return a if w is None else a * w


def bce_with_logits_terms(xp, x, t, weight=None, pos_weight=None, need_grad=False):
    """Elementwise loss and gradient of binary cross-entropy on logits:

    loss = w (pw t softplus(-x) + (1 - t) softplus(x)),
    d loss / d x = w ((1 - t) sigma(x) - pw t sigma(-x))   (= w (sigma(x) - t) when pw = 1),

    PyTorch's ``(1 - t) x + (1 + (pw - 1) t) softplus(-x)`` rearranged into
    non-negative terms."""
    e, sp_neg, sp_pos = logistic(xp, x)
    pos = _times(t, pos_weight)
    loss = _times(masked_product(xp, pos, sp_neg) + masked_product(xp, 1 - t, sp_pos), weight)
    if not need_grad:
        return loss, None
    sig, sig_neg = sigmoids(xp, x, e)
    return loss, _times((1 - t) * sig - pos * sig_neg, weight)


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
    namespace and the compute-dtype input and target (as given with
    ``convert=False``: the torch kernel converts chunk by chunk)."""
    xp = namespace(**{name: input, target_name: target})
    _checks.floating(xp, input, name, min_ndim=0)
    _checks.reduction(reduction)
    _checks.same_shape(target_name, target, name, input)
    if not xp.isdtype(target.dtype, ("real floating", "integral", "bool")):
        raise TypeError(f"{target_name} must be a real array, got dtype {target.dtype}")
    if xp.isdtype(target.dtype, "real floating"):
        _checks.probabilities(xp, target, target_name, high=1.0)
    elif xp.isdtype(target.dtype, "integral"):
        _checks.probabilities(xp, target, target_name, high=1)
    if not convert:
        return xp, input, target
    x = to_compute(xp, input, name)
    return xp, x, xp.astype(target, x.dtype, copy=False)


def factor(xp, value, input, name):
    """An optional per-element factor (``weight``, ``pos_weight``) that
    broadcasts to the input, in the input's compute dtype."""
    if value is None:
        return None
    value = as_array_like(xp, value, input, name, dtype=compute_dtype(xp, input.dtype, "input"))
    _checks.broadcastable(name, value, input.shape)
    return value
