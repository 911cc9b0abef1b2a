r"""Linear cross-entropy: the loss of ``input @ linear_weight.T + linear_bias``
without ever holding the ``(N, V)`` logits.

``linear_cross_entropy`` equals
``cross_entropy(input @ linear_weight.T + linear_bias, target, ...)`` but walks
the rows in chunks: for each chunk it forms the chunk's logits, runs the fused
cross-entropy kernel of :mod:`crossentropy._torch.fused` on them (loss rows,
and the gradient written over the logits in place), and folds that gradient
into the gradients of the input, the weight and the bias with two matrix
products. Only one chunk of logits is ever alive.

Memory model (``N`` rows, ``H`` features, ``V`` classes, ``n`` rows a chunk):

* alive at peak, besides the inputs: the input gradient ``N x H`` (input
  dtype), the weight gradient ``V x H`` and the bias gradient ``V`` (both in
  ``accum_dtype``, float32 by default), and one chunk of logits ``n x V`` in
  float32 (it becomes the chunk's logit gradient in place), plus its copy in
  the input dtype for the matrix products when that is not float32;
* the default chunk holds ``n = max(ceil(N / ceil(V / H)), min(512,
  floor(2**24 / V)))`` rows, at most ``N``. The first term makes the chunk
  of logits about as large as the input (``n V ~ N H``), in proportion to
  what the caller already holds. The second keeps chunks from getting so
  thin that the time goes into reading and writing the ``V x H``
  weight-gradient accumulator, once a chunk, rather than into the matrix
  products: 512 rows amortise it (measured with
  ``benchmarks/bench_linear_cross_entropy.py``: at N = 4096, H = 1024,
  V = 32000 a step takes 0.87x the time with 512 rows a chunk as with 128),
  and ``2**24 / V`` caps that floor at 64 MiB of float32 logits.

Worked example at an LLM size, N = 8192, H = 4096, V = 128256, bfloat16
input and weight: ``ceil(V / H) = 32`` gives 256 rows, the floor
``min(512, 130)`` 130, so ``n = 256``; the chunk of logits is
256 x 128256 x 4 B = 131 MB (+ 66 MB for its bfloat16 copy), the float32
weight gradient 128256 x 4096 x 4 B = 2.10 GB, the input gradient
8192 x 4096 x 2 B = 67 MB: about 2.4 GB in all, against 4.2 GB for the
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

import math

from . import _checks

__all__ = ["linear_cross_entropy"]


def _torch():
    import torch

    return torch


# The default chunk's floor: enough rows to amortise the weight-gradient
# accumulator's traffic, unless that takes more than 64 MiB of float32 logits.
_FLOOR_ROWS = 512
_FLOOR_ELEMENTS = 1 << 24


def default_chunk_size(n_rows: int, hidden: int, vocab: int) -> int:
    """Rows per chunk, ``max(ceil(N / ceil(V / H)), min(512, 2**24 // V))``
    and at most ``N`` (see the memory model above)."""
    like_input = math.ceil(n_rows / max(1, math.ceil(vocab / max(1, hidden))))
    floor = min(_FLOOR_ROWS, _FLOOR_ELEMENTS // max(1, vocab))
    return max(1, min(n_rows, max(like_input, floor)))


def linear_cross_entropy(
    input,
    linear_weight,
    target,
    *,
    linear_bias=None,
    weight=None,
    reduction="mean",
    ignore_index=-100,
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    shift=False,
    chunk_size=None,
    accum_dtype=None,
    num_items_in_batch=None,
):
    r"""Cross-entropy of the logits ``input @ linear_weight.T + linear_bias``,
    computed a chunk of rows at a time.

    The names match PyTorch's ``F.linear_cross_entropy``; every option of
    :func:`crossentropy.cross_entropy` that makes sense for class indices is
    here (probability targets are refused).

    Args:
        input: ``(..., H)`` floating (float32, bfloat16, float16, float64).
        linear_weight: ``(V, H)``, same dtype as ``input``.
        target: ``(...)`` integer class indices (``ignore_index`` skips a row).
        linear_bias: optional ``(V,)``.
        weight: optional class weights ``(V,)``.
        reduction: ``"none"`` (shape of ``target``, or of ``target[..., 1:]``
            with ``shift``) | ``"mean"`` | ``"sum"``.
        label_smoothing, z_loss, softcap: as in :func:`crossentropy.cross_entropy`,
            over the full vocabulary.
        shift: pair ``input[..., :-1, :]`` with ``target[..., 1:]`` (causal
            language models) without copying either.
        chunk_size: rows per chunk; default :func:`default_chunk_size`.
        accum_dtype: dtype of the weight- and bias-gradient accumulators
            (default float32; float64 inputs accumulate in float64).
        num_items_in_batch: for ``"mean"``, divide by this count of
            non-ignored targets (a number or a 0-d tensor, for example the
            global count under data parallelism and gradient accumulation)
            instead of this call's total target weight.

    Returns:
        The loss, in ``input``'s dtype.
    """
    torch = _torch()
    from ._torch.linear import LinearCrossEntropyFunction, prepare

    plan = prepare(
        input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
        label_smoothing, z_loss, softcap, shift, chunk_size, accum_dtype, num_items_in_batch,
    )
    return LinearCrossEntropyFunction.apply(input, linear_weight, linear_bias, plan)
