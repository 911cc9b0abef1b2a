r"""The focal losses' math (Lin et al. 2017), written once: categorical on
softmax logits, and sigmoid (binary, elementwise) with torchvision's semantics.

Both multiply a cross-entropy term by the focusing factor
:math:`(1 - p)^\gamma` of the probability given to the truth, and both are
computed from log-probabilities, so that value and gradient stay finite for
saturated logits and for :math:`0 \le \gamma < 1` (where the factor's
derivative :math:`\gamma(1-p)^{\gamma-1}` is unbounded, but its product with
:math:`p(1-p)` is not).
"""

from __future__ import annotations

from .. import _reduce
from ..links import _log_softmax
from .binary import logistic, masked_product, sigmoids
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
    logp = _log_softmax(xp, p.x, -1)  # relative to the shift: exact near the maximum
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


def sigmoid_focal_terms(xp, x, t, alpha, gamma, need_grad=False):
    r"""Elementwise loss and gradient of the sigmoid focal loss:

    .. math:: \ell = \alpha_t\,(1 - p_t)^{\gamma}\,\mathrm{BCE}(x, t),\qquad
        p_t = p\,t + (1-p)(1-t),\quad \alpha_t = \alpha t + (1-\alpha)(1-t)

    (``alpha < 0``: no :math:`\alpha_t`). ``u = log(1 - p_t)`` is formed in log
    space, ``logaddexp(log p + log(1 - t), log(1 - p) + log t)``, so that it
    never rounds to 0 for a finite logit; then
    :math:`d\ell/dx = \alpha_t\big(\mathrm{BCE}'\,(1-p_t)^\gamma + \mathrm{BCE}\;dm/dx\big)`
    with :math:`dm/dx = \gamma(1-2t)\exp((\gamma-1)u + \log p + \log(1-p))`,
    finite for :math:`\gamma < 1` and 0 in the limit :math:`u \to -\infty`.
    """
    e, sp_neg, sp_pos = logistic(xp, x)  # -log p, -log(1 - p)
    ce = masked_product(xp, t, sp_neg) + masked_product(xp, 1 - t, sp_pos)
    u = xp.logaddexp(-sp_neg + log_or_neg_inf(xp, 1 - t), -sp_pos + log_or_neg_inf(xp, t))
    m = xp.exp(gamma * u) if gamma > 0 else xp.ones_like(u)  # (1 - p_t)^gamma
    a_t = None if alpha < 0 else alpha * t + (1 - alpha) * (1 - t)
    loss = ce * m if a_t is None else ce * m * a_t
    if not need_grad:
        return loss, None
    sig, sig_neg = sigmoids(xp, x, e)
    dm = gamma * (1 - 2 * t) * xp.exp((gamma - 1) * u - sp_neg - sp_pos)
    dm = xp.where(u == -float("inf"), xp.zeros_like(dm), dm)
    grad = ((1 - t) * sig - t * sig_neg) * m + masked_product(xp, dm, ce)
    return loss, grad if a_t is None else grad * a_t
