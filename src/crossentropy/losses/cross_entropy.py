r"""Cross-entropy's math, written once, as functions of row statistics.

Every path calls these and none keeps a formula of its own: the array-API core
at the end of this file (whole arrays), the fused torch kernel
(``crossentropy._torch.cross_entropy``, a chunk of rows at a time), linear
cross-entropy (a chunk of logits formed from the input) and the vocab-parallel
functions (the same statistics, summed over the shards of the vocabulary).
The derivation is ``docs/derivations.md`` section 3; in brief, for one row:

* logits ``x``, soft-capped ``s = κ tanh(x/κ)`` (``s = x`` without a cap),
  shift ``m = max_c s_c`` (0 where that is not finite), ``Σ = sum_c e^{s_c - m}``,
  ``LSE = m + log Σ`` and probabilities ``p_c = e^{s_c - m} / Σ``;
* target weights ``a_c = w_c ((1 - ε) t_c + ε / C)``, split into a *hard* part
  on the target column, ``h = (1 - ε) w_y`` (index targets; 0 for
  probabilities), and *soft* weights ``b_c`` (``ε w_c / C`` for index targets,
  all of ``a`` for probabilities), ``B = sum_c b_c``; all 0 on ignored rows;
* the loss, written relative to the shift so that logits of 1e4 in float32
  lose nothing (``m - s_y`` is exact where ``s_y`` is near the maximum)::

      loss = -sum_c a_c log p_c + z LSE^2
           = h (log Σ - (s_y - m)) + (B log Σ - sum_c b_c (s_c - m)) + z LSE^2

* its gradient, the notes' ``Q - P`` with weights, smoothing and z-loss folded
  into one row coefficient ``c = h + B + 2 z LSE``::

      d loss / d s_j = c p_j - b_j - h [j = y],     d s_j / d x_j = 1 - (s_j / κ)^2

  Every kernel multiplies it by the row's scale ``v`` (d value / d loss_n
  times grad_output, 0 on ignored rows) as it writes it.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from .. import _reduce
from .._array import device, masked
from .._stable import shift

# ----------------------------------------------------------------------------
# Row math. ``xp`` is the array namespace (torch's for the kernels); every
# array is per row unless it says (C) or (..., C).
# ----------------------------------------------------------------------------


class RowTargets(NamedTuple):
    """What the loss needs of each row's target."""

    counted: Any  # bool: the row counts (not ignored)
    wy: Any  # w_y on counted rows, 0 elsewhere (what "mean" sums); None for probability targets
    hard: Any  # h = (1 - ε) w_y; None for probability targets
    soft: Any  # B = sum_c b_c on counted rows, 0 elsewhere; None when there is no soft part


def index_targets(xp, index, counted, weight, e, C, dtype) -> RowTargets:
    """``RowTargets`` of class indices (``index`` safe: 0 on ignored rows)."""
    valid = xp.astype(counted, dtype)
    if weight is None:
        wy = valid
    else:  # w[y], gathered through a flat index (take wants 1-D indices)
        wy = xp.reshape(xp.take(weight, xp.reshape(index, (-1,)), axis=0), tuple(index.shape)) * valid
    soft = None
    if e > 0:
        W = C if weight is None else xp.sum(weight)  # sum_c w_c
        soft = (e / C) * W * valid  # B = sum_c (ε / C) w_c
    return RowTargets(counted, wy, wy if e == 0 else (1 - e) * wy, soft)  # (no multiply by 1)


def smoothing_weights(weight, e, C):
    """The soft weights ``b_c = ε w_c / C`` of index targets: a (C,) array, or
    a number without class weights."""
    return e / C if weight is None else (e / C) * weight


def probability_weights(xp, probs, weight, e, C):
    """The soft weights of probability targets, ``b = w ((1 - ε) t + ε / C)``, (..., C)."""
    b = probs if e == 0 else probs * (1 - e) + e / C
    return b if weight is None else b * weight


def probability_targets(xp, b) -> RowTargets:
    """``RowTargets`` of probability targets (every row counts), from ``b``."""
    soft = xp.sum(b, axis=-1)
    return RowTargets(xp.ones(soft.shape, dtype=xp.bool, device=device(soft)), None, None, soft)


def soft_dot(xp, b, shifted):
    """``sum_c b_c (s_c - m)`` over the last axis, with ``0 (s - m) = 0`` even
    where ``s_c = -inf`` (a class with no weight adds nothing). ``b`` may be a
    positive number (smoothing without class weights): no class is masked then."""
    if isinstance(b, float):
        return b * xp.sum(shifted, axis=-1)
    return xp.sum(b * xp.where(b == 0, xp.zeros_like(shifted), shifted), axis=-1)


def row_loss(xp, t: RowTargets, log_sum, target_shifted=None, dot=None, lse=None, z=0.0):
    """``h (log Σ - (s_y - m)) + (B log Σ - sum_c b_c (s_c - m)) + z LSE^2``
    on counted rows, 0 on the others whatever their logits."""
    terms = []
    if t.hard is not None:
        terms.append(t.hard * (log_sum - target_shifted))
    if t.soft is not None:
        terms.append(t.soft * log_sum - dot)
    if z > 0:
        terms.append(z * lse * lse)
    loss = terms[0] if terms else xp.zeros_like(log_sum)
    for term in terms[1:]:  # summed in the order above
        loss = loss + term
    return masked(xp, t.counted, loss)


def coefficient(xp, t: RowTargets, v):
    """The part of ``v c`` that depends on the targets only, ``v (h + B)``:
    kernels compute it once for all rows, before any pass over the logits."""
    c = xp.zeros_like(v) if t.hard is None else t.hard * v
    return c if t.soft is None else c + t.soft * v


def z_coefficient(xp, lse, counted, v, z):
    """The z-loss part of ``v c``: ``v 2 z LSE`` (d z LSE^2 / d LSE), 0 on ignored rows."""
    return xp.where(counted, v * (2 * z) * lse, xp.zeros_like(lse))


def probability_factor(xp, vc, sum_exp):
    """``v c / Σ``: what ``e^{s_j - m}`` is multiplied by to give ``v c p_j``;
    0 where ``v c`` is 0 (an ignored row of all -inf logits has Σ = 0)."""
    return xp.where(vc == 0, xp.zeros_like(vc), vc / sum_exp)


def target_gradient(xp, hard, vc, p_y, v, b_y=None):
    """``d loss / d s_y`` times ``v``: ``v c p_y - v b_y - v h`` (before the soft
    cap's slope); ``hard`` is h where the column is the row's target, else 0."""
    g = xp.where(vc == 0, xp.zeros_like(vc), vc * p_y) - v * hard  # 0 p_y = 0, even for p_y = 0/0
    return g if b_y is None else g - v * b_y


def softcap(xp, x, cap):
    """Gemma 2's soft cap ``s = κ tanh(x / κ)`` (``x`` itself without a cap)."""
    return x if cap is None else cap * xp.tanh(x / cap)


def softcap_slope(xp, x, cap):
    """``d s / d x = 1 - tanh(x / κ)^2`` at the raw logits ``x``."""
    th = xp.tanh(x / cap)
    return 1 - th * th


def reshift(xp, delta, sum_exp, target_shifted=None, here=None, dot=None, soft_here=None):
    """One shard's statistics, taken relative to its own shift ``m_r``, moved to
    the global shift ``m`` (``delta = m_r - m <= 0``), ready to be summed over
    the shards: the online log-sum-exp ``sum_c e^{s_c - m} = e^{delta} sum_c
    e^{s_c - m_r}``; ``s_y - m = (s_y - m_r) + delta`` from the shard that
    holds ``y`` (``here``), 0 from the others; and ``sum_c b_c (s_c - m) =
    sum_c b_c (s_c - m_r) + delta sum_c b_c`` (``soft_here``: this shard's
    ``sum_c b_c``)."""
    out = [sum_exp * xp.exp(delta)]
    if target_shifted is not None:
        out.append(xp.where(here, target_shifted + delta, xp.zeros_like(delta)))
    if dot is not None:
        out.append(dot + delta * soft_here)
    return out


def mean_denominator(xp, wy, rows, num_items=None, dtype=None, like=None):
    """What ``"mean"`` divides by: ``num_items_in_batch`` when given; else the
    total target weight ``sum_n w_{y_n}`` over counted rows (index targets,
    ``wy`` = RowTargets.wy) or the number of rows (probabilities, ``wy`` None),
    as PyTorch does."""
    if num_items is not None:
        return _reduce.as_denominator(xp, num_items, dtype, like)
    if wy is None:
        return _reduce.as_denominator(xp, math.prod(rows), dtype, like)
    return _reduce.total(xp, wy)


def token_accuracy(xp, hits, counted, dtype):
    """The fraction of counted rows whose argmax is the target; 0 when none count."""
    n = xp.sum(xp.astype(counted, dtype))
    return xp.sum(xp.astype(hits & counted, dtype)) * _reduce.safe_reciprocal(xp, n)


# ----------------------------------------------------------------------------
# The array-API core: the whole input at once.
# ----------------------------------------------------------------------------


class CrossEntropyStats(NamedTuple):
    """Per-row statistics of ``cross_entropy_with_stats``, as LLM trainers log
    them, in the input's compute dtype (float32 for half precision)."""

    lse: Any  # logsumexp of each row's (soft-capped) logits, shaped like the rows
    z_loss: Any  # z * lse^2 on counted rows, 0 on ignored ones, shaped like the rows
    accuracy: Any  # 0-d: fraction of counted rows whose argmax is the target (0 if none)


def core(problem, num_items=None, *, need_grad=False, grad_output=None, want_stats=False):
    """Value (reduced, in the input's compute dtype), gradient (class axis last,
    or None) and stats (or None) of a validated :class:`~._targets.Categorical`."""
    p, xp = problem, problem.xp
    opt = p.options
    e, C, z, cap = opt.label_smoothing, p.num_classes, opt.z_loss, opt.softcap
    s = softcap(xp, p.x, cap)
    m = shift(xp, s, -1)  # (..., 1)
    shifted = s - m
    ex = xp.exp(shifted)
    sum_exp = xp.sum(ex, axis=-1)
    log_sum = xp.log(sum_exp)
    lse = m[..., 0] + log_sum
    if p.probs is None:
        t = index_targets(xp, p.index, p.counted, p.weight, e, C, s.dtype)
        b = smoothing_weights(p.weight, e, C) if e > 0 else None
        target_shifted = p.gather(shifted)
        dot = None if b is None else soft_dot(xp, b, shifted)
    else:
        b = probability_weights(xp, p.probs, p.weight, e, C)
        t = probability_targets(xp, b)
        target_shifted, dot = None, soft_dot(xp, b, shifted)
    loss = row_loss(xp, t, log_sum, target_shifted, dot, lse, z)
    den = mean_denominator(xp, t.wy, p.rows, num_items, s.dtype, s) if opt.reduction == "mean" else None
    value = _reduce.reduce(xp, loss, opt.reduction, den)
    stats = None
    if want_stats:
        truth = p.index if p.probs is None else xp.argmax(p.probs, axis=-1)
        hits = xp.argmax(s, axis=-1) == truth
        z_rows = xp.where(t.counted, z * lse * lse, xp.zeros_like(lse))
        stats = CrossEntropyStats(lse, z_rows, token_accuracy(xp, hits, t.counted, s.dtype))
    if not need_grad:
        return value, None, stats
    v = _reduce.scale(xp, grad_output, opt.reduction, p.rows, s.dtype, s, den)
    v = xp.where(t.counted, v * xp.ones_like(lse), xp.zeros_like(lse))  # per row, 0 on ignored rows
    vc = coefficient(xp, t, v)
    if z > 0:
        vc = vc + z_coefficient(xp, lse, t.counted, v, z)
    grad = ex * probability_factor(xp, vc, sum_exp)[..., None]  # v c p_j
    if b is not None:
        grad = grad - v[..., None] * b  # - v b_j
    if t.hard is not None:
        grad = grad - (v * t.hard)[..., None] * p.one_hot()  # - v h [j = y]
    if cap is not None:
        grad = grad * softcap_slope(xp, p.x, cap)
    return value, grad, stats


def nll_core(problem, *, need_grad=False, grad_output=None):
    """Value and gradient (class axis last) of the negative log-likelihood of
    class indices given log-probabilities ``x``: ``loss_n = -w_y x_{n,y}``,
    ``d loss_n / d x_{n,j} = -w_y [j = y]``; ``"mean"`` divides by ``sum_n w_y``."""
    p, xp = problem, problem.xp
    t = index_targets(xp, p.index, p.counted, p.weight, 0.0, p.num_classes, p.x.dtype)
    # The where keeps an ignored row at exactly 0 even when its gathered entry is -inf.
    loss = xp.where(t.counted, -t.wy * p.gather(p.x), xp.zeros_like(t.wy))
    den = mean_denominator(xp, t.wy, p.rows, None, p.x.dtype, p.x) if p.options.reduction == "mean" else None
    value = _reduce.reduce(xp, loss, p.options.reduction, den)
    if not need_grad:
        return value, None
    v = _reduce.scale(xp, grad_output, p.options.reduction, p.rows, p.x.dtype, p.x, den)
    return value, -(v * t.wy)[..., None] * p.one_hot()
