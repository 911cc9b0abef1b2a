r"""``linear_cross_entropy``: the loss of ``input @ linear_weight.T + linear_bias``
without ever holding the ``(N, V)`` logits.

It equals ``cross_entropy(input @ linear_weight.T + linear_bias, target, ...)``
but walks the rows that count in chunks (``crossentropy._torch.linear``): for
each chunk it forms the chunk's logits, runs cross-entropy's block pass on
them (loss rows, and the gradient written over the logits in place), and folds
that gradient into the gradients of the input, the weight and the bias with
two matrix products. Only one chunk of logits is ever alive. NumPy and other
array-API inputs take the same chunks through the array-API core, with
``linear_cross_entropy.value_and_grad``.

Memory model (``N`` rows, ``H`` features, ``V`` classes, ``n`` rows a chunk):

* alive at peak, besides the inputs: the input gradient ``N x H`` (input
  dtype), the weight gradient ``V x H`` and the bias gradient ``V`` (both in
  ``accum_dtype``, float32 by default), and one chunk of logits ``n x V`` in
  float32 (it becomes the chunk's logit gradient in place; in float32 and
  float64 one buffer serves every chunk in turn), plus its copy in the input
  dtype for the matrix products when that is not float32. The gradients are
  the step's outputs; the chunk (and a few per-row vectors) is all the extra;
* the default chunk holds ``n = max(ceil(N / ceil(V / H)), min(512,
  floor(2**26 / V)))`` rows, at most ``N``. The first term makes the chunk
  of logits about as large as the input (``n V ~ N H``). The second keeps
  chunks from getting thin: every chunk, however few its rows, pays a cost
  proportional to ``V x H`` (its two products with the weight pack all of
  it, and the weight gradient's accumulator is read and written), against
  matrix products proportional to ``n V H``, so the rows a chunk set the
  share of that overhead whatever the shape. Measured with
  ``benchmarks/bench_linear_cross_entropy.py --chunks``: at N = 4096,
  H = 1024, V = 32000 a step takes 0.82x the time with 512 rows a chunk as
  with 128, and at N = 1024, H = 1024, V = 128256 0.82x (1024 rows: 0.74x).
  ``2**26 / V`` caps that floor at 256 MiB of float32 logits (256 rows at
  V = 262144). Fewer rows (``chunk_size=``) trade time for memory: 128 rows
  at V = 32000 hold 16 MB of logits. ``N`` counts the rows that are walked:
  after ``shift``, and on CPU without the rows whose target is ignored.

Worked example at an LLM size, N = 8192, H = 4096, V = 128256, bfloat16
input and weight: ``ceil(V / H) = 32`` gives 256 rows, the floor
``min(512, 523)`` 512, so ``n = 512``; the chunk of logits is
512 x 128256 x 4 B = 263 MB (+ 131 MB for its bfloat16 copy), the float32
weight gradient 128256 x 4096 x 4 B = 2.10 GB, the input gradient
8192 x 4096 x 2 B = 67 MB: about 2.6 GB in all, against 4.2 GB for the
float32 logits alone (and as much again for their gradient) on the naive
path.

When is the gradient computed? With reduction ``"mean"`` or ``"sum"`` the
gradient of every row is the same multiple of the unit gradient, so it is
computed during the forward pass (three matrix products a chunk, no
recomputation) and the backward only scales it by ``grad_output``. With
``"none"`` each row has its own ``grad_output``, known only in backward: the
forward computes the losses alone and the backward recomputes each chunk's
logits (four products a chunk in all).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

from .. import _checks, _triton
from .._array import is_torch, namespace, transformed
from .cross_entropy import cross_entropy

__all__ = ["linear_cross_entropy", "LinearCrossEntropyGrads"]


class LinearCrossEntropyGrads(NamedTuple):
    """The gradients ``linear_cross_entropy.value_and_grad`` returns."""

    input: Any
    linear_weight: Any
    linear_bias: Any  # None without a bias


def check(input, linear_weight, target, linear_bias, weight, reduction, ignore_index, label_smoothing, z_loss,
          softcap, shift, chunk_size, *, num_classes=None):
    """Every check of linear cross-entropy's arguments, for every path
    (``num_classes``: the global vocabulary when ``linear_weight`` is a shard).
    Returns the validated options and class weights."""
    xp = namespace(input=input, linear_weight=linear_weight, target=target)
    _checks.floating(xp, input, "input")
    W = linear_weight
    H = input.shape[-1]
    if W.ndim < 2 or W.shape[-1] != H:
        raise ValueError(f"linear_weight must have shape (V, H) (or (C, d1, ..., dK, H)) with H = "
                         f"input.shape[-1] = {H}, got {tuple(W.shape)}")
    if W.dtype != input.dtype:
        raise TypeError(f"linear_weight has dtype {W.dtype} but input has {input.dtype}")
    if W.ndim > 2 and (input.ndim != 2 or shift):
        raise ValueError(f"a K-dimensional linear_weight {tuple(W.shape)} needs input of shape (N, H) and no "
                         f"shift, as in PyTorch; got input of shape {tuple(input.shape)}"
                         + (" with shift=True" if shift else ""))
    if linear_bias is not None:
        _checks.floating(xp, linear_bias, "linear_bias", min_ndim=1)
        if tuple(linear_bias.shape) != tuple(W.shape[:-1]) or linear_bias.dtype != input.dtype:
            raise ValueError(f"linear_bias must have shape {tuple(W.shape[:-1])} and dtype {input.dtype}, "
                             f"got {tuple(linear_bias.shape)} {linear_bias.dtype}")
    # ignore_index=None is PyTorch's default here, and means -100
    options = _checks.cross_entropy_options(reduction, -100 if ignore_index is None else ignore_index,
                                            label_smoothing, z_loss, softcap)
    C = W.shape[0] if num_classes is None else num_classes
    if shift and input.ndim < 2:
        raise ValueError(f"shift=True needs input of shape (..., T, H), got {tuple(input.shape)}")
    logits = tuple(input.shape[:-1]) + tuple(W.shape[:-1])
    rows = tuple(input.shape[:-1]) + tuple(W.shape[1:-1])
    if xp.isdtype(target.dtype, "real floating"):
        want = logits if W.ndim == 2 else rows[:1] + (W.shape[0],) + rows[1:]
        if tuple(target.shape) != want:
            raise ValueError(f"target is floating, so it holds class probabilities and needs the logits' shape "
                             f"{want}, got {tuple(target.shape)}")
        if options.ignore_index >= 0:
            raise ValueError(f"ignore_index={options.ignore_index} cannot be used with probability targets "
                             "(a negative ignore_index is ignored, as in PyTorch)")
        _checks.probabilities(xp, target, "target", high=1.0)
    else:
        if tuple(target.shape) != rows:
            raise ValueError(f"target of shape {tuple(target.shape)} does not match input {tuple(input.shape)} "
                             f"and linear_weight {tuple(W.shape)}: class indices need shape {rows}")
        _checks.class_indices(xp, target, C, options.ignore_index)
    w = _checks.class_weight(xp, weight, input, C)
    if chunk_size is not None:
        chunk_size = _checks.integer("chunk_size", chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    return options, w, chunk_size


def linear_cross_entropy(
    input, linear_weight, target, *, linear_bias=None, weight=None, reduction="mean", ignore_index=-100,
    label_smoothing=0.0, z_loss=0.0, softcap=None, shift=False, chunk_size=None, accum_dtype=None,
    num_items_in_batch=None,
):
    r"""Cross-entropy of the logits ``input @ linear_weight.T + linear_bias``,
    computed a chunk of rows at a time.

    The names match PyTorch's ``F.linear_cross_entropy``, and so does what it
    accepts: class indices or probabilities, a K-dimensional
    ``linear_weight`` ``(C, d1, ..., dK, H)`` with input ``(N, H)`` (logits
    ``(N, C, d1, ..., dK)``, class dimension 1), and every option of
    :func:`crossentropy.cross_entropy`.

    Args:
        input: ``(..., H)`` floating (float32, bfloat16, float16, float64).
        linear_weight: ``(V, H)`` (or K-dimensional), same dtype as ``input``.
        target: ``(...)`` integer class indices (``ignore_index`` skips a
            row; ``None`` means -100, as in PyTorch), or class probabilities
            shaped like the logits.
        linear_bias: optional, ``linear_weight.shape[:-1]``.
        weight: optional class weights ``(V,)``.
        reduction: ``"none"`` (shape of ``target``, or of ``target[..., 1:]``
            with ``shift``) | ``"mean"`` | ``"sum"``.
        label_smoothing, z_loss, softcap: as in :func:`crossentropy.cross_entropy`,
            over the full vocabulary.
        shift: pair ``input[..., :-1, :]`` with ``target[..., 1:]`` (causal
            language models) without copying either.
        chunk_size: rows per chunk; default in the module docstring.
        accum_dtype: torch only: dtype of the weight- and bias-gradient
            accumulators (default float32; float64 inputs accumulate in float64).
        num_items_in_batch: for ``"mean"``, divide by this count of
            non-ignored targets (a number or a 0-d tensor, for example the
            global count under data parallelism and gradient accumulation)
            instead of this call's total target weight.

    Returns:
        The loss, in ``input``'s dtype.

    >>> import numpy as np
    >>> x, W = np.eye(2), np.array([[2.0, 0.0], [0.5, 0.0], [-1.0, 0.0]])  # logits x @ W.T
    >>> round(float(linear_cross_entropy(x, W, np.array([0, 2]))), 6)
    0.669962
    """
    args = (input, linear_weight, target, linear_bias, weight, reduction, ignore_index, label_smoothing, z_loss,
            softcap, shift, chunk_size, accum_dtype, num_items_in_batch)
    trained = any(getattr(a, "requires_grad", False) for a in (target, weight))
    if not is_torch(input) or trained or any(map(transformed, (input, linear_weight, linear_bias, target))):
        # (and inside torch.func transforms, which differentiate or batch that code themselves)
        # NumPy and every array library; and soft targets (or class weights)
        # being trained, through torch's autograd over the same array-API code
        return _array_path(*args, need_grad=False)[0]
    options, w, chunk = check(*args[:12])
    from .._torch.linear import prepare

    plan, x_rows, W2, b2 = prepare(input, linear_weight, target, linear_bias, w, options, shift=shift,
                                   chunk_size=chunk, accum_dtype=accum_dtype, num_items=num_items_in_batch)
    plan.reference = functools.partial(plan_reference, plan)
    return run_plan(x_rows, W2, b2, plan)


def run_plan(x_rows, W, b, plan):
    """The loss of a prepared plan (``_torch.linear.prepare``; vocab-parallel
    too): the Triton kernels on CUDA tensors when triton imports and they
    serve the plan, else the torch kernel's Function."""
    if _triton.wanted(x_rows) and _triton.load("linear").applies(plan):
        return _triton.load("linear").triton_linear_cross_entropy(x_rows, W, b, plan)
    from .._torch.linear import LinearCrossEntropyFunction

    return LinearCrossEntropyFunction.apply(x_rows, W, b, plan)


def plan_reference(plan, x_rows, W, b, rows_loss=None):
    """The same loss from the logits of every walked row at once, through
    :func:`crossentropy.cross_entropy` (whose backward is differentiable),
    or ``rows_loss(logits, target, options)`` (the vocab-parallel shard's):
    what a backward with ``create_graph=True`` differentiates. It holds the
    ``(rows, V)`` logits, as a second derivative of them must."""
    import torch

    from .._torch.linear import reduced

    C, D, opt = plan.classes, plan.positions, plan.options
    rows = torch.arange(x_rows.shape[0], device=x_rows.device) if plan.rows is None else plan.rows
    if plan.shards is not None:  # the input is replicated: its gradient adds up every shard's part
        x_rows = plan.shards.replicated(x_rows)
    xc = x_rows.index_select(0, rows)
    logits = (xc @ W.T if b is None else torch.addmm(b, xc, W.T)).to(plan.cdt).reshape(-1, C)
    counted = plan.counted.index_select(0, rows).reshape(-1)
    if plan.probs is None:
        index = plan.index.index_select(0, rows).reshape(-1)
        target = torch.where(counted, index, torch.full_like(index, opt.ignore_index))
    else:
        target = plan.probs.index_select(0, rows).reshape(-1, C)
    if rows_loss is None:
        loss_rows = cross_entropy(logits, target, weight=plan.weight, ignore_index=opt.ignore_index,
                                  reduction="none", label_smoothing=opt.label_smoothing, z_loss=opt.z_loss,
                                  softcap=opt.softcap)
    else:
        loss_rows = rows_loss(logits, target, opt)
    loss_rows = torch.where(counted, loss_rows, torch.zeros_like(loss_rows))
    pos = (plan.out_pos.index_select(0, rows)[:, None] + torch.arange(D, device=x_rows.device)).reshape(-1)
    loss = torch.zeros(math.prod(plan.out_shape), dtype=plan.cdt, device=x_rows.device).index_put((pos,), loss_rows)
    return reduced(loss, plan).to(x_rows.dtype)


def _value_and_grad(input, linear_weight, target, *, linear_bias=None, weight=None, reduction="mean",
                    ignore_index=-100, label_smoothing=0.0, z_loss=0.0, softcap=None, shift=False, chunk_size=None,
                    accum_dtype=None, num_items_in_batch=None, grad_output=None):
    """``linear_cross_entropy`` and its analytic gradients with no autograd, for
    any array library: ``(value, LinearCrossEntropyGrads(input, linear_weight,
    linear_bias))``, the vector-Jacobian products of ``grad_output`` (ones
    shaped like the value when None)."""
    args = (input, linear_weight, target, linear_bias, weight, reduction, ignore_index, label_smoothing, z_loss,
            softcap, shift, chunk_size, accum_dtype, num_items_in_batch)
    if any(getattr(a, "requires_grad", False) for a in args):
        import torch

        with torch.no_grad():
            return _array_path(*args, need_grad=True, grad_output=grad_output)
    return _array_path(*args, need_grad=True, grad_output=grad_output)


linear_cross_entropy.value_and_grad = _value_and_grad


def _array_path(input, linear_weight, target, linear_bias, weight, reduction, ignore_index, label_smoothing,
                z_loss, softcap, shift, chunk_size, accum_dtype, num_items_in_batch, *, need_grad,
                grad_output=None):
    """The same chunks through the array-API core (NumPy, and torch for
    ``value_and_grad``)."""
    from .._array import quiet
    from ..losses.linear import linear_value_and_grad

    options, w, chunk = check(input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
                              label_smoothing, z_loss, softcap, shift, chunk_size)
    with quiet():
        value, grads = linear_value_and_grad(input, linear_weight, target, linear_bias, w, options, shift, chunk,
                                             num_items_in_batch, need_grad, grad_output)
    return value, None if grads is None else LinearCrossEntropyGrads(*grads)
