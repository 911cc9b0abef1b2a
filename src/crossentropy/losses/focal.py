r"""The focal losses' math (Lin et al. 2017), written once: categorical on
softmax logits, and sigmoid (binary, elementwise) with torchvision's semantics.

Both multiply a cross-entropy term by the focusing factor
:math:`(1 - p)^\gamma` of the probability given to the truth, computed so that
value and gradient stay finite for saturated logits and for
:math:`0 \le \gamma < 1` (where the factor's derivative
:math:`\gamma(1-p)^{\gamma-1}` is unbounded, but its product with
:math:`p(1-p)` is not): the categorical one from log-probabilities, the
sigmoid one from the two sigmoids, each exact to its own relative precision.
"""

from __future__ import annotations

from .. import _reduce
from .._stable import log_softmax
from .._array import device, lincomb
from .binary import infinite_logits_fixed, masked_product, step_parts
from .cross_entropy import index_targets, mean_denominator, probability_weights


def log_or_neg_inf(xp, a):
    """``log(a)``, with ``log(0) = -inf`` and no warning."""
    pos = a > 0
    return xp.where(pos, xp.log(xp.where(pos, a, xp.ones_like(a))), xp.full_like(a, -float("inf")))


def categorical_core(problem, gamma, *, need_grad=False, grad_output=None):
    r"""Value and gradient (class axis last) of the categorical focal loss

    .. math:: \ell_n = -\sum_c a_{n,c}\,(1 - p_{n,c})^{\gamma}\,\log p_{n,c}

    with the target weights :math:`a` of cross-entropy (``docs/derivations.md``).
    With :math:`\phi(p) = -(1 - p)^\gamma \log p` and
    :math:`\partial p_c / \partial x_j = p_c(\delta_{cj} - p_j)`:
    :math:`\partial\ell/\partial x_j = u_j - p_j \sum_c u_c`, where
    :math:`u_c = a_c\,p_c\,\phi'(p_c) = a_c\big(\gamma(1-p_c)^\gamma\,p_c\log p_c/(1-p_c) - (1-p_c)^\gamma\big)`.
    """
    p, xp = problem, problem.xp
    opt = p.options
    e, C = opt.label_smoothing, p.num_classes
    logp = log_softmax(xp, p.x, -1)  # relative to the shift: exact near the maximum
    prob = xp.exp(logp)
    q = -xp.expm1(logp)  # 1 - p, exact near p = 1
    qg = q**gamma  # (1 - p)^gamma, with 0^0 = 1
    # the target weights a = w ((1 - e) t + e / C) of cross-entropy, 0 on ignored rows
    target = p.probs if p.probs is not None else p.one_hot()
    a = probability_weights(xp, target, p.weight, e, C) * xp.astype(p.counted, logp.dtype)[..., None]
    loss = -xp.sum(masked_product(xp, a, qg * logp), axis=-1)
    den = None
    if opt.reduction == "mean":
        wy = None if p.probs is not None else index_targets(xp, p.index, p.counted, p.weight, 0.0, C, a.dtype).wy
        den = mean_denominator(xp, wy, p.rows, None, a.dtype, a)
    value = _reduce.reduce(xp, loss, opt.reduction, den)
    if not need_grad:
        return value, None
    # p log p / (1 - p) tends to -1 as p -> 1 and to 0 as p -> 0; both limits
    # are taken explicitly so that saturated logits and gamma < 1 stay finite.
    safe_q = xp.where(q > 0, q, xp.ones_like(q))
    ratio = xp.where(q > 0, logp / safe_q, -xp.ones_like(q))  # log p / (1 - p)
    u = a * (gamma * qg * masked_product(xp, prob, ratio) - qg)
    grad = u - prob * xp.sum(u, axis=-1, keepdims=True)
    g = _reduce.scale(xp, grad_output, opt.reduction, p.rows, a.dtype, a, den)
    return value, grad * (g[..., None] if opt.reduction == "none" else g)


def sigmoid_focal_terms(xp, x, t, alpha, gamma, need_grad=False, extreme=True, summed=False):
    r"""Elementwise loss and gradient of the sigmoid focal loss:

    .. math:: \ell = \alpha_t\,(1 - p_t)^{\gamma}\,\mathrm{BCE}(x, t),\qquad
        p_t = p\,t + (1-p)(1-t),\quad \alpha_t = \alpha t + (1-\alpha)(1-t)

    (``alpha < 0``: no :math:`\alpha_t`), with the exact BCE of
    :mod:`.binary`. ``q = 1 - p_t = sigma(x)(1 - t) + sigma(-x) t`` is a sum of
    non-negative numbers, each sigmoid to its own relative precision, so ``q``
    never loses its digits (the form ``1 - p_t`` would, where ``p_t`` is near
    1); where it underflows the loss ``BCE q^gamma`` is below the dtype's
    smallest number too. With :math:`m = q^\gamma`,

    .. math:: \frac{d\ell}{dx} = \alpha_t\Big(\mathrm{BCE}'\,m
        + \mathrm{BCE}\;\gamma(1-2t)\,m\,\frac{\sigma(x)\,\sigma(-x)}{q}\Big),

    the second term's ratio finite for :math:`\gamma < 1` (for a hard target
    it is :math:`\sigma(\pm x)`), its denominator floored at the dtype's
    smallest normal number, where the product with ``m`` is 0 anyway. At an
    infinite logit the products of 0 and infinity take their limit, 0
    (``extreme=False``: there is none, and no logit beyond
    ``_stable.normal_range``). ``summed`` (a sum would do) is ignored: the
    losses are returned one by one. The pieces ``s``, ``sgn``, ``small``, ``ls``
    are :func:`.binary.step_parts`'s, as in the binary cross-entropy.
    """
    s, sgn, small, ls = step_parts(xp, x, extreme)
    neg = 1 - t
    d = s - t
    ce = lincomb(xp, x * d, None, ls, None, -1)  # BCE = x (s - t) - ls (binary.bce_with_logits_terms)
    sig_neg = lincomb(xp, 1 - s, None, sgn, small)  # sigma(-x) = (1 - s) + sgn small
    sig = lincomb(xp, s, None, sgn, small, -1)  # sigma(x) = s - sgn small (over s)
    q = lincomb(xp, sig * neg, None, sig_neg, t)  # 1 - p_t = sigma(x)(1 - t) + sigma(-x) t
    m = q if gamma == 1 else q * q if gamma == 2 else q**gamma if gamma > 0 else xp.ones_like(q)
    a_t = None if alpha < 0 else alpha * t + (1 - alpha) * neg
    loss = ce * m
    if extreme:
        loss = infinite_logits_fixed(xp, x, loss)
    loss = loss if a_t is None else loss * a_t
    if not need_grad:
        return loss, None
    tiny = xp.finfo(q.dtype).smallest_normal
    ratio = sig * sig_neg / xp.maximum(q, xp.full((), tiny, dtype=q.dtype, device=device(q)))
    dm_ce = (gamma * (1 - 2 * t)) * m * ratio * ce  # the focal factor's derivative, times BCE
    if extreme:
        dm_ce = infinite_logits_fixed(xp, x, dm_ce)
    bce_grad = lincomb(xp, d, None, sgn, small, -1)  # d - sgn small
    grad = lincomb(xp, bce_grad, m, dm_ce, None)  # BCE' m + BCE dm/dx
    return loss, grad if a_t is None else grad * a_t
