"""Collectives that autograd records, to every order and under ``torch.func``:
what the vocab-parallel functions use for a backward with
``create_graph=True`` and inside transforms (``VocabShards.differentiable_copy``
in :mod:`crossentropy._torch.distributed`); the kernels' forward calls
``torch.distributed`` in place instead.

The convention is Megatron-LM's: a replicated value (the
loss, the row statistics after their all-reduce, the input of linear
cross-entropy) is the same on every rank and counts once; its gradient is
complete on every rank. A rank's shard and the gradient of it are its own.
Then the sum over the ranks has the backward of a copy (the upstream
gradient of a replicated value, passed to each rank's part unchanged), and a
copy has the backward of a sum (every rank's part of the gradient of a
replicated input, added up). Each backward calls the other Function, not a
bare collective, so that a backward recorded with ``create_graph=True``
(the gradient of a shard depends on the replicated statistics) is itself
differentiated with the same rule: Hessian-vector products and gradient
penalties get their cross-rank terms. The forward-mode derivative of each is
the same operation on the tangent, one tangent over the whole vocabulary
(a batch of them is refused, :class:`TangentSum`); under ``vmap`` each
applies to the batched tensor as it is (the collectives are elementwise),
once every rank is seen to batch alike.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["AllReduce", "Copy"]


class AllReduce(torch.autograd.Function):
    """``t`` summed (or maximised) over the ranks; backward: a :class:`Copy`."""

    @staticmethod
    def forward(t, op, group):
        out = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=op, group=group)
        return out

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.op, ctx.group = inputs[1], inputs[2]
        if ctx.op != dist.ReduceOp.SUM:
            ctx.mark_non_differentiable(output)

    @staticmethod
    def backward(ctx, g):
        return Copy.apply(g, ctx.group), None, None

    @staticmethod
    def jvp(ctx, t_dot, *unused):
        if ctx.op != dist.ReduceOp.SUM:
            return torch.zeros_like(t_dot)  # a shift: its inputs are detached
        return TangentSum.apply(t_dot, ctx.group)

    @staticmethod
    def vmap(info, in_dims, t, op, group):
        if in_dims[0] is not None:
            _same_batch(info.batch_size, group)
        return AllReduce.apply(t, op, group), in_dims[0]


class Copy(torch.autograd.Function):
    """``t`` itself; backward: the sum over the ranks (an :class:`AllReduce`)."""

    @staticmethod
    def forward(t, group):
        return t.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.group = inputs[1]

    @staticmethod
    def backward(ctx, g):
        return AllReduce.apply(g, dist.ReduceOp.SUM, ctx.group), None

    @staticmethod
    def jvp(ctx, t_dot, *unused):
        return t_dot.clone()

    @staticmethod
    def vmap(info, in_dims, t, group):
        return Copy.apply(t, group), in_dims[0]


class TangentSum(torch.autograd.Function):
    """The forward-mode derivative of the sum over the ranks: the sum of the
    tangents. Forward mode takes one tangent over the whole vocabulary, each
    rank holding its shard's part; a batch of them (``jacfwd``, ``vmap`` of
    ``jvp``) would hold this rank's own directions, which the sum would add to
    the other ranks' different ones: refused, not a wrong Jacobian."""

    @staticmethod
    def forward(t, group):
        return AllReduce.forward(t, dist.ReduceOp.SUM, group)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.group = inputs[1]

    @staticmethod
    def backward(ctx, g):
        return Copy.apply(g, ctx.group), None

    @staticmethod
    def jvp(ctx, t_dot, *unused):
        return TangentSum.apply(t_dot, ctx.group)

    @staticmethod
    def vmap(info, in_dims, t, group):
        if in_dims[0] is None:
            return TangentSum.apply(t, group), None
        raise ValueError("vocab-parallel cross-entropy: forward mode over a batch of tangents (torch.func.jacfwd, "
                         "torch.func.hessian, vmap of jvp) is not supported, since each rank's batch would be "
                         "its own shard's directions; use torch.func.jacrev, or jvp with one tangent")


def _same_batch(size, group):
    """Under ``vmap`` every rank must batch alike: one all-gather of the batch
    size, and the same ``ValueError`` on every rank where they differ (rather
    than collectives of mismatched sizes)."""
    mine = torch.tensor([size], dtype=torch.int64)
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(every, mine, group=group)
    sizes = [int(s) for s in every]
    if len(set(sizes)) > 1:
        raise ValueError(f"vmap over vocab-parallel cross-entropy needs the same batch size on every rank, got "
                         f"{sizes} (ranks 0..{len(sizes) - 1}); vmap over an axis the ranks share, such as the rows")
