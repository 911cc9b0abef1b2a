r"""Vocab-parallel cross-entropy on ``torch.distributed``.

When a model's output layer is split over the vocabulary across the ranks of a
process group, rank ``r`` holds the logits (or classifier rows) of the
classes ``[v0_r, v0_r + V_r)`` and no rank may gather the whole row. The loss
still needs a few numbers per row over the *global* vocabulary, and all of
them are maxima or sums of per-shard pieces once each shard's statistics are
moved from its own shift to the global one (``losses.cross_entropy.reshift``,
the online log-sum-exp):

.. math::

    m = \max_r m_r,\qquad
    \Sigma = \sum_r e^{m_r - m}\sum_{c\in r} e^{s_c - m_r},\qquad
    s_y - m = \sum_r [y\in r]\,(s_y - m),\qquad
    \sum_c b_c (s_c - m) = \sum_r \Big(\sum_{c\in r} b_c(s_c - m_r) + (m_r - m)\sum_{c\in r} b_c\Big).

So a call makes **two all-reduces** (per chunk of rows for the linear
version): a MAX of the row maxima (4 bytes a row) and one SUM of the packed
statistics (4 to 12 bytes a row). No logits are gathered. From them every
rank computes the same loss with the same row formulas as one device (label
smoothing and z-loss over the global vocabulary ``V``: unlike Megatron-LM,
the loss does not change with the number of ranks), and the gradient of its
own shard with no further communication. The backward of
``vocab_parallel_cross_entropy`` is local; ``vocab_parallel_linear_cross_entropy``
adds one all-reduce of the input gradient (``H`` numbers a row).

On CUDA tensors, when triton imports, both functions take the Triton
kernels of one device (``crossentropy._triton``) on the rank's shard, with
the same merge and the same collectives; CPU tensors take the torch kernels.

Targets are global class indices, replicated on every rank; class weights,
when given, are the global ``(V,)`` vector, replicated. A rank on which no
target falls, and a batch in which every target is ignored, both work.

Before computing, every call checks with one small collective that all ranks
were called alike: the shards tile ``[0, V)``, and the batch, dtype, targets,
weights and options agree (``crossentropy._torch.distributed``: one
all-gather of 22 int64 numbers a rank and a host read). Every rank then
raises the same ``ValueError`` naming what differs. ``check_ranks=False``
skips it, for a caller who has checked once; nothing is then read back to
the host (a step can be captured in a CUDA graph), except where the global
vocabulary size is known from nothing else: uneven shards (``vocab_start``)
without class weights cost one all-reduce of the widths and a host read.

Both functions have second derivatives and run under ``torch.func``
(``grad``, ``vjp``, ``jacrev``, ``jvp``, forward-mode AD, ``vmap`` over an
axis the ranks share): a backward with ``create_graph=True``, and every call
inside a transform, runs the same row math out of place with collectives
that autograd records (``crossentropy._torch.distributed``; the convention
is Megatron-LM's, replicated values count once), on every rank together.
"""

from __future__ import annotations

import functools
import sys

import torch

from . import _checks, _triton
from ._array import namespace, transformed
from ._torch.cross_entropy import fused_cross_entropy, shard_reference
from ._torch.distributed import setup
from ._torch.linear import prepare
from .functional.linear import check as check_linear
from .functional.linear import plan_reference, run_plan
from .losses._targets import Categorical

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy"]


def _local_checks(logits_shard, target, weight, options_args):
    if not isinstance(logits_shard, torch.Tensor) or not logits_shard.is_floating_point():
        raise TypeError(f"logits_shard must be a floating torch.Tensor, got "
                        f"{getattr(logits_shard, 'dtype', type(logits_shard).__name__)}")
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(f"target holds global class indices and must be an integer torch.Tensor, got "
                        f"{getattr(target, 'dtype', type(target).__name__)} (probability targets are not "
                        "supported by the vocab-parallel functions)")
    if tuple(target.shape) != tuple(logits_shard.shape[:-1]):
        raise ValueError(f"target of shape {tuple(target.shape)} does not match logits_shard of shape "
                         f"{tuple(logits_shard.shape)}: class indices need shape {tuple(logits_shard.shape[:-1])}")
    if logits_shard.ndim < 1 or logits_shard.shape[-1] == 0:
        raise ValueError(f"logits_shard of shape {tuple(logits_shard.shape)} has no classes")
    return _checks.cross_entropy_options(*options_args)


def _global_checks(shards, target, weight, ignore_index, like):
    """What needs the global vocabulary, the same on every rank (their targets
    and weights agree): class indices in range, weights of length V."""
    xp = namespace(target=target)
    _checks.class_indices(xp, target, shards.vocab, ignore_index)
    return _checks.class_weight(xp, weight, like, shards.vocab)


def vocab_parallel_cross_entropy(
    logits_shard, target, *, group=None, vocab_start=None, weight=None, ignore_index=-100, reduction="mean",
    label_smoothing=0.0, z_loss=0.0, softcap=None, num_items_in_batch=None, check_ranks=True,
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
        check_ranks: check first that every rank was called alike (one small
            collective, see the module docstring).

    Returns:
        The loss, identical on every rank and equal to single-process
        :func:`crossentropy.cross_entropy` on the gathered logits. Its
        gradient reaches this rank's shard only.
    """
    args = (reduction, ignore_index, label_smoothing, z_loss, softcap)
    found = {}

    def validate_local():
        found["options"] = _local_checks(logits_shard, target, weight, args)
        return found["options"]

    shards = setup(group, logits_shard.shape[-1] if isinstance(logits_shard, torch.Tensor) else 0, vocab_start,
                   weight, target, shape=tuple(getattr(logits_shard, "shape", ()))[:-1], hidden=-1,
                   dtype=getattr(logits_shard, "dtype", None), shift=False, num_items=num_items_in_batch,
                   bias=None, check_ranks=check_ranks, validate_local=validate_local)
    options = found["options"]
    w = _global_checks(shards, target, weight, options.ignore_index, logits_shard)
    shards.weight = w
    t = target.long()
    counted = t != options.ignore_index
    problem = Categorical(namespace(x=logits_shard), logits_shard, logits_shard.ndim - 1,
                          torch.where(counted, t, torch.zeros_like(t)), counted, None, w, options)
    reference = shard_reference(problem, num_items_in_batch, shards)
    if transformed(logits_shard):  # torch.func and forward-mode AD: the differentiable operations themselves
        return reference(logits_shard)
    # CUDA tensors: the Triton kernel's statistics pass over the shard, merged over the ranks the same way
    kernel = _triton.load("cross_entropy").triton_cross_entropy if _triton.wanted(logits_shard) else \
        fused_cross_entropy
    return kernel(problem, num_items_in_batch, shards=shards, reference=reference)[0]


def vocab_parallel_linear_cross_entropy(
    input, linear_weight_shard, target, *, group=None, vocab_start=None, linear_bias_shard=None, weight=None,
    ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0, softcap=None, shift=False,
    chunk_size=None, accum_dtype=None, num_items_in_batch=None, check_ranks=True,
):
    r"""Linear cross-entropy with the classifier's rows split over ``group``.

    Rank ``r`` holds ``linear_weight_shard`` ``(V_r, H)`` (and optionally
    ``linear_bias_shard`` ``(V_r,)``); ``input`` ``(..., H)`` and ``target``
    are replicated. The logits are never materialised beyond one chunk of rows
    of this rank's shard. The loss equals single-process
    :func:`crossentropy.linear_cross_entropy` with the full weight; the
    gradient of ``input`` is complete on every rank (one all-reduce of ``N x H``
    numbers in backward) and the gradient of the weight shard is local.

    Communication: two all-reduces per chunk (8 to 16 bytes a row in float32)
    and one all-reduce of the input gradient, plus the check of
    ``check_ranks``. With reduction ``"mean"`` or ``"sum"`` all of it happens
    in forward, which also builds the gradients (each chunk's logits are
    formed once); with ``"none"`` the forward computes the losses and the
    backward forms each chunk's logits again, with the same collectives.
    """
    found = {}

    def validate_local():
        if not isinstance(target, torch.Tensor) or target.is_floating_point():
            raise TypeError("target holds global class indices and must be an integer torch.Tensor, got "
                            f"{getattr(target, 'dtype', type(target).__name__)} (probability targets are not "
                            "supported by the vocab-parallel functions)")
        if getattr(linear_weight_shard, "ndim", 2) != 2:
            raise ValueError(f"linear_weight_shard must have shape (V_r, H), got {tuple(linear_weight_shard.shape)}")
        # the class range needs the global vocabulary: checked once it is known
        found["checked"] = check_linear(input, linear_weight_shard, target, linear_bias_shard, None, reduction,
                                        ignore_index, label_smoothing, z_loss, softcap, shift, chunk_size,
                                        num_classes=sys.maxsize)
        return found["checked"][0]

    width = linear_weight_shard.shape[0] if isinstance(linear_weight_shard, torch.Tensor) else 0
    shards = setup(group, width, vocab_start, weight, target, shape=tuple(getattr(input, "shape", ()))[:-1], hidden=getattr(input, "shape", (-1,))[-1],
                   dtype=getattr(input, "dtype", None), shift=shift, num_items=num_items_in_batch,
                   bias=linear_bias_shard, check_ranks=check_ranks, validate_local=validate_local)
    options, _, chunk = found["checked"]
    w = _global_checks(shards, target, weight, options.ignore_index, input)
    shards.weight = w
    plan, x_rows, W, b = prepare(input, linear_weight_shard, target, linear_bias_shard, w, options, shift=shift,
                                 chunk_size=chunk, accum_dtype=accum_dtype, num_items=num_items_in_batch,
                                 shards=shards)
    plan.reference = functools.partial(plan_reference, plan, rows_loss=functools.partial(_shard_rows, shards))
    if any(map(transformed, (input, linear_weight_shard, linear_bias_shard))):
        return plan.reference(x_rows, W, b)  # torch.func and forward-mode AD: differentiable operations
    return run_plan(x_rows, W, b, plan)  # CUDA tensors: the Triton kernels, on this rank's rows of W


def _shard_rows(shards, logits, target, options):
    """The loss rows of a vocab-parallel shard of logits (class indices,
    ignored rows at ``options.ignore_index``), differentiable to every order."""
    t = target.long()
    counted = t != options.ignore_index
    problem = Categorical(namespace(x=logits), logits, 1, torch.where(counted, t, torch.zeros_like(t)), counted,
                          None, shards.weight, options._replace(reduction="none"))
    return shard_reference(problem, None, shards)(logits)
