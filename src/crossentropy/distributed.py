r"""Vocab-parallel cross-entropy on ``torch.distributed``.

When a model's output layer is split over the vocabulary across the ranks of a
process group, rank ``r`` holds the logits (or classifier rows) of the
classes ``[v0_r, v0_r + V_r)`` and no rank may gather the whole row. The loss
still needs three numbers per row over the *global* vocabulary, and all of
them are sums or maxima of per-shard pieces:

.. math::

    m = \max_r m_r,\qquad
    \mathrm{LSE} = m + \log\sum_r\sum_{c\in r} e^{s_c - m},\qquad
    s_y = \sum_r [y\in r]\,s_y,\qquad
    \Sigma_w = \sum_r\sum_{c\in r} w_c s_c.

So one call makes **two all-reduces per chunk of rows**: a MAX of the row maxima
(4 bytes a row) and one SUM of the packed ``(sum of exponentials, target logit,
weighted logit sum)`` (12 bytes a row): 16 bytes a row in float32 (32 in
float64), whatever the vocabulary size. (With uneven shards and no class
weights, one more all-reduce of a single number per call finds the global
vocabulary size.) No logits are gathered. From them every rank computes the same
loss

.. math:: \ell_n = (1-\varepsilon)\,w_y(\mathrm{LSE} - s_y)
    + \frac{\varepsilon}{V}\big(W\,\mathrm{LSE} - \Sigma_w\big) + z\,\mathrm{LSE}^2

(label smoothing and z-loss over the global vocabulary ``V``: unlike
Megatron-LM, the loss does not change with the number of ranks), and the
gradient of its own shard, :math:`A p_c - a_c + 2z\,\mathrm{LSE}\,p_c`, with
no further communication. The backward pass of ``vocab_parallel_cross_entropy``
is local; ``vocab_parallel_linear_cross_entropy`` adds one all-reduce of the
input gradient (``H`` numbers a row), since every shard of the classifier
contributes to it.

Targets are global class indices, replicated on every rank; class weights,
when given, are the global ``(V,)`` vector, replicated. A rank on which no
target falls, and a batch in which every target is ignored, both work.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from . import _checks
from ._torch import linear as _linear
from ._torch.fused import scale_kept_gradient

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy"]


class _Shard:
    """Where this rank's classes sit in the global vocabulary, and the options."""

    def __init__(self, width, group, vocab_start, weight, ignore_index, label_smoothing, z_loss, softcap,
                 reduction, device):
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.width = width
        self.even = vocab_start is None  # even shards: rank r holds [r V_r, (r + 1) V_r)
        self.start = self.rank * width if self.even else _checks.integer("vocab_start", vocab_start)
        self.ignore_index = _checks.integer("ignore_index", ignore_index)
        self.e = _checks.real("label_smoothing", label_smoothing, low=0.0, high=1.0)
        self.z = _checks.real("z_loss", z_loss, low=0.0)
        self.cap = _checks.real("softcap", softcap, low=0.0, low_open=True, allow_none=True)
        self.reduction = _checks.reduction(reduction)
        self.weight = weight  # global (V,) or None
        self.device = device
        self.vocab = self._global_vocab()

    def _global_vocab(self) -> int:
        """The global vocabulary size: from the weights, from even shards, or
        (uneven shards, no weights) from one tiny all-reduce of the widths."""
        if self.weight is not None:
            return int(self.weight.shape[0])
        if self.even:
            return self.width * self.world
        widths = torch.tensor([float(self.width)], dtype=torch.float64, device=self.device)
        dist.all_reduce(widths, group=self.group)
        return int(widths.item())

    # -- the two collectives ------------------------------------------------
    def stats(self, s, target, keep_exp=False):
        """Global (LSE, target logit, weighted logit sum) of each row; with
        ``keep_exp`` also this shard's ``exp(s - m)`` and the global sum of
        exponentials, from which the gradient needs no second ``exp``."""
        m = s.amax(dim=1)
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=self.group)  # collective 1: 4 B a row
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        mine, idx = self.local_targets(target)
        rows = torch.empty(3, s.shape[0], dtype=s.dtype, device=s.device)
        ex = torch.sub(s, m[:, None]).exp_()
        rows[0] = ex.sum(1)
        rows[1] = torch.where(mine, s.gather(1, idx[:, None])[:, 0], torch.zeros_like(m))
        if self.e > 0:  # only label smoothing needs sum_c w_c s_c
            w = self.local_weight(s.dtype)
            rows[2] = (s if w is None else s * w).sum(1)
        else:
            rows[2].zero_()
        dist.all_reduce(rows, group=self.group)  # collective 2: 12 B a row
        lse = m + torch.log(rows[0])
        if keep_exp:
            return lse, rows[1], rows[2], ex, rows[0]
        return lse, rows[1], rows[2]

    # -- local pieces ---------------------------------------------------------
    def local_targets(self, target):
        """Whether each row's target lies in this shard, and its local index (0 if not)."""
        local = target - self.start
        mine = (target != self.ignore_index) & (local >= 0) & (local < self.width)
        return mine, torch.where(mine, local, torch.zeros_like(local))

    def local_weight(self, dtype):
        if self.weight is None:
            return None
        return self.weight[self.start:self.start + self.width].to(dtype)

    def row_weights(self, target, dtype):
        """(valid, w_y, W) with the replicated global targets and weights; valid
        as 0/1 in ``dtype`` (a bool times a Python float would be float32)."""
        counted = target != self.ignore_index
        valid = counted.to(dtype)
        if self.weight is None:
            return valid, valid, None
        w = self.weight.to(dtype)
        return valid, w[torch.where(counted, target, 0)] * valid, w.sum()

    def loss_rows(self, lse, s_y, wsum, target, V, dtype):
        valid, wy, W = self.row_weights(target, dtype)
        W = V if W is None else W
        loss = (1 - self.e) * wy * (lse - s_y)  # (1 - e) w_y (-log p_y)
        if self.e > 0:  # (e / V) sum_c w_c (-log p_c) = (e / V)(W LSE - sum_c w_c s_c)
            loss = loss + (self.e / V) * valid * (W * lse - wsum)
        if self.z > 0:
            loss = loss + self.z * valid * lse**2
        return loss

    def grad_(self, s, lse, target, V, scale, ex=None, sumexp=None):
        """dL/ds * scale for this shard's logits ``s`` (after the soft cap),
        with the soft cap's chain-rule factor applied. Written over ``ex``
        (``exp(s - m)`` from :meth:`stats`, ``sumexp`` their global row sums)
        when given, else over ``s``."""
        valid, wy, W = self.row_weights(target, s.dtype)
        W = V if W is None else W
        capped = None if self.cap is None else 1 - (s / self.cap) ** 2
        # A p - a + 2 z LSE p on counted rows, with
        # A = (1 - e) w_y + (e / V) W and a_c = (1 - e) w_y [c = y] + (e / V) w_c.
        coef = ((1 - self.e) * wy + (self.e / V) * W * valid + 2 * self.z * valid * lse) * scale
        if ex is None:
            p = s.sub_(lse[:, None]).exp_().mul_(coef[:, None])
        else:  # p = exp(s - m) / sum_r sum_c exp(s_c - m)
            p = ex.mul_((coef / sumexp)[:, None])
        if self.e > 0:
            w = self.local_weight(s.dtype)
            smooth = (self.e / V) * (valid * scale)[:, None]
            p.sub_(smooth if w is None else smooth * w)
        mine, idx = self.local_targets(target)
        p.scatter_add_(1, idx[:, None], (-(1 - self.e) * wy * scale * mine)[:, None])
        if capped is not None:
            p.mul_(capped)
        return p

    def denominator(self, target, dtype, num_items_in_batch):
        if num_items_in_batch is not None:
            return torch.as_tensor(num_items_in_batch, dtype=dtype, device=target.device)
        _, wy, _ = self.row_weights(target, dtype)
        return wy.sum()


def _softcap(shard, x):
    return x if shard.cap is None else shard.cap * torch.tanh(x / shard.cap)


def _check_range(target, V, ignore_index):
    if target.device.type == "cpu":
        bad = ((target < 0) | (target >= V)) & (target != ignore_index)
        if bool(bad.any()):
            raise IndexError(f"target holds class index {int(target[bad][0])}, outside [0, {V}) "
                             f"and not ignore_index={ignore_index}")


def _reduce(loss, reduction, den, shape):
    if reduction == "none":
        return loss.view(shape)
    total = loss.sum()
    if reduction == "sum":
        return total
    return torch.where(den == 0, torch.zeros_like(total), total / torch.where(den == 0, torch.ones_like(den), den))


def _scale(reduction, den, dtype, device):
    if reduction == "sum":
        return torch.ones((), dtype=dtype, device=device)
    return torch.where(den == 0, torch.zeros_like(den), 1 / torch.where(den == 0, torch.ones_like(den), den))


# ----------------------------------------------------------------------------


class _VocabParallelCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits_shard, target, shard, num_items_in_batch):
        cdt = torch.float64 if logits_shard.dtype == torch.float64 else torch.float32
        x = logits_shard.reshape(-1, shard.width).to(cdt)
        t = target.reshape(-1)
        s = _softcap(shard, x)
        V = shard.vocab
        _check_range(t, V, shard.ignore_index)
        lse, s_y, wsum, ex, sumexp = shard.stats(s, t, keep_exp=True)
        loss = shard.loss_rows(lse, s_y, wsum, t, V, cdt)
        den = shard.denominator(t, cdt, num_items_in_batch) if shard.reduction == "mean" else None
        ctx.shard, ctx.shape, ctx.dtype = shard, logits_shard.shape, logits_shard.dtype
        if ctx.needs_input_grad[0]:
            # The unit gradient (grad_output = 1 for every row's loss) from the
            # same pass; backward multiplies it by grad_output: no collectives.
            unit = torch.ones_like(lse) if shard.reduction == "none" else _scale(shard.reduction, den, cdt, x.device)
            # Written over ex, a buffer of our own: the caller's logits stay as they were.
            ctx.grad = shard.grad_(s, lse, t, V, unit * torch.ones_like(lse), ex=ex, sumexp=sumexp)
        return _reduce(loss, shard.reduction, den, target.shape).to(logits_shard.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        grad, ctx.grad = ctx.grad, None
        g = grad_output.to(grad.dtype)
        grad = scale_kept_gradient(grad, g.reshape(-1, 1) if ctx.shard.reduction == "none" else g)
        return grad.view(ctx.shape).to(ctx.dtype), None, None, None  # logits, target, shard, count


def vocab_parallel_cross_entropy(
    logits_shard, target, *, group=None, vocab_start=None, weight=None, ignore_index=-100, reduction="mean",
    label_smoothing=0.0, z_loss=0.0, softcap=None, num_items_in_batch=None,
):
    r"""Cross-entropy of logits split over the vocabulary across ``group``.

    Args:
        logits_shard: ``(..., V_r)``, this rank's columns of the logits.
        target: ``(...)`` global class indices, the same on every rank.
        group: the process group (default: the world).
        vocab_start: the first global class of this shard; default
            ``rank * V_r`` (even shards). Give it for uneven shards.
        weight: global class weights ``(V,)``, the same on every rank.
        ignore_index, reduction, label_smoothing, z_loss, softcap: as in
            :func:`crossentropy.cross_entropy`, over the global vocabulary.
        num_items_in_batch: for ``"mean"``, divide by this count (a number or
            a tensor, e.g. the global number of non-ignored targets under data
            parallelism) instead of this call's total target weight.

    Returns:
        The loss, identical on every rank and equal to single-process
        :func:`crossentropy.cross_entropy` on the gathered logits. Its
        gradient reaches this rank's shard only.

    Communication: two all-reduces per call, 16 bytes a row in float32
    (see the module docstring); the backward is local.
    """
    if not isinstance(logits_shard, torch.Tensor) or not logits_shard.is_floating_point():
        raise TypeError(f"logits_shard must be a floating torch.Tensor, got {type(logits_shard).__name__}")
    if tuple(target.shape) != tuple(logits_shard.shape[:-1]):
        raise ValueError(f"target of shape {tuple(target.shape)} does not match logits_shard of shape "
                         f"{tuple(logits_shard.shape)}: class indices need shape {tuple(logits_shard.shape[:-1])}")
    shard = _Shard(logits_shard.shape[-1], group, vocab_start, weight, ignore_index, label_smoothing, z_loss,
                   softcap, reduction, logits_shard.device)
    return _VocabParallelCE.apply(logits_shard, target, shard, num_items_in_batch)


# ----------------------------------------------------------------------------


class _VocabParallelLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, W, b, plan, shard):
        want = tuple(ctx.needs_input_grad[:3])
        ctx.plan, ctx.shard = plan, shard
        ctx.dtypes = (input.dtype, W.dtype, None if b is None else b.dtype)
        if plan.reduction != "none" and any(want):
            # "mean"/"sum": each chunk's global LSE is known once its two
            # all-reduces are done, so its gradient is built right away from
            # the exponentials already computed (no recomputation in backward),
            # and backward only scales by grad_output.
            s0 = _linear._mean_scale(plan).to(input.device)
            loss, grads = _vocab_parallel_linear_pass(input, W, b, plan, shard, lambda rows: s0, want)
            ctx.grads = grads
        else:  # "none": each row's grad_output is known only in backward
            loss, _ = _vocab_parallel_linear_pass(input, W, b, plan, shard, None, want)
            ctx.grads = None
            ctx.save_for_backward(input, W, b)
        return _linear._reduce(loss, plan).to(input.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        plan = ctx.plan
        if ctx.grads is not None:
            return (*_linear.hand_over(ctx, grad_output), None, None)  # input, W, b, plan, shard
        input, W, b = ctx.saved_tensors
        go = grad_output.to(plan.cdt).reshape(-1)
        _, (gx, gW, gb) = _vocab_parallel_linear_pass(input, W, b, plan, ctx.shard, lambda rows: go[rows],
                                                      tuple(ctx.needs_input_grad[:3]))
        return gx, _linear._cast(gW, W), _linear._cast(gb, b), None, None


def _vocab_parallel_linear_pass(input, W, b, plan, shard, row_scale, want):
    """One pass over the chunks: per-row losses and, when ``row_scale`` gives
    each chunk's gradient multiplier, the gradients of (input, W, b) that
    ``want`` names. Two all-reduces a chunk for the row statistics and, with
    an input gradient, one of ``N x H`` numbers at the end: every shard
    contributes to dL/dx."""
    cdt = plan.cdt
    need_grad = row_scale is not None
    loss = torch.empty(plan.n_rows, dtype=cdt, device=input.device)
    gx = torch.zeros_like(input) if need_grad and want[0] else None
    gx_rows = None if gx is None else _linear._grad_rows_view(gx, plan)
    gW = torch.zeros(W.shape, dtype=plan.accum_dtype, device=W.device) if need_grad and want[1] else None
    gb = torch.zeros(b.shape, dtype=plan.accum_dtype, device=W.device) if need_grad and want[2] and b is not None \
        else None
    for xc, tc, rows in _linear._chunks(plan):
        s = _softcap(shard, (xc @ W.T if b is None else torch.addmm(b, xc, W.T)).to(cdt))
        lse, s_y, wsum, ex, sumexp = shard.stats(s, tc, keep_exp=True)
        loss[rows] = shard.loss_rows(lse, s_y, wsum, tc, shard.vocab, cdt)
        if need_grad:
            G = shard.grad_(s, lse, tc, shard.vocab, row_scale(rows), ex=ex, sumexp=sumexp)
            _linear.fold(G, xc, W, None if gx_rows is None else gx_rows[rows], gW, gb)
            del G
        del s, ex  # one chunk of logits alive at a time
    if gx is not None:
        dist.all_reduce(gx, group=shard.group)
    return loss, (gx, gW, gb)


def vocab_parallel_linear_cross_entropy(
    input, linear_weight_shard, target, *, group=None, vocab_start=None, linear_bias_shard=None, weight=None,
    ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0, softcap=None, shift=False,
    chunk_size=None, accum_dtype=None, num_items_in_batch=None,
):
    r"""Linear cross-entropy with the classifier's rows split over ``group``.

    Rank ``r`` holds ``linear_weight_shard`` ``(V_r, H)`` (and optionally
    ``linear_bias_shard`` ``(V_r,)``); ``input`` ``(..., H)`` and ``target``
    are replicated. The logits are never materialised beyond one chunk of rows
    of this rank's shard. The loss equals single-process
    :func:`crossentropy.linear_cross_entropy` with the full weight; the
    gradient of ``input`` is complete on every rank (one all-reduce of ``N x H``
    numbers in backward) and the gradient of the weight shard is local.

    Communication: two all-reduces per chunk (16 bytes a row in float32) and
    one all-reduce of the input gradient. With ``reduction="mean"`` or
    ``"sum"`` all of it happens in forward, which also builds the gradients
    (each chunk's logits are formed once); with ``"none"`` the forward
    computes the losses and the backward forms each chunk's logits again,
    with the same collectives.
    """
    shard = _Shard(linear_weight_shard.shape[0], group, vocab_start, weight, ignore_index, label_smoothing, z_loss,
                   softcap, reduction, input.device)
    if isinstance(target, torch.Tensor):
        _check_range(target, shard.vocab, shard.ignore_index)
    plan = _linear.prepare(
        input, linear_weight_shard, target, linear_bias_shard, None, reduction, ignore_index, label_smoothing,
        z_loss, softcap, shift, chunk_size, accum_dtype, None, num_classes=shard.vocab,
    )
    if reduction == "mean":  # the global target weights, from the replicated targets
        t = torch.cat([t for _, t, _ in plan.segments])
        plan.denominator = shard.denominator(t, plan.cdt, num_items_in_batch)
    return _VocabParallelLinearCE.apply(input, linear_weight_shard, linear_bias_shard, plan, shard)
