"""Linear cross-entropy in the array-API namespace: the loss of
``input @ linear_weight.T + linear_bias`` a chunk of rows at a time, each
chunk's logits through cross-entropy's core (``losses.cross_entropy.core``).

This is the path NumPy (and every array library) takes, and what
``linear_cross_entropy.value_and_grad`` computes; torch tensors take the
kernel ``crossentropy._torch.linear``, which walks the same chunks with
in-place passes. The arguments arrive validated (``functional.linear.check``).
"""

from __future__ import annotations

import math

from .. import _reduce
from .._array import device, index_dtype, namespace
from . import cross_entropy as ce_math
from ._targets import Categorical

_DEFAULT_CHUNK = 512


def linear_value_and_grad(input, W, target, bias, weight, options, shift, chunk_size, num_items, need_grad,
                          grad_output):
    """``(value, (grad_input, grad_W, grad_b) or None)``."""
    xp = namespace(input=input, linear_weight=W)
    probs = xp.isdtype(target.dtype, "real floating")
    H, C, D = W.shape[-1], W.shape[0], math.prod(W.shape[1:-1])
    cdt = xp.float64 if input.dtype == xp.float64 else xp.float32
    dev = device(input)
    x, t = input, target
    if shift:  # row t of each sequence pairs with target t + 1
        x = x[..., :-1, :]
        t = t[..., 1:, :] if probs else t[..., 1:]
    x_rows = xp.astype(xp.reshape(x, (math.prod(x.shape[:-1]), H)), cdt)
    W2 = xp.astype(W, cdt)
    b2 = None if bias is None else xp.astype(bias, cdt)
    if W.ndim > 2:  # (C, d, H) -> (d, C, H): each input row gives D rows of C classes
        W2 = xp.reshape(xp.permute_dims(xp.reshape(W2, (C, D, H)), (1, 0, 2)), (D * C, H))
        b2 = None if b2 is None else xp.reshape(xp.permute_dims(xp.reshape(b2, (C, D)), (1, 0)), (-1,))
    R = x_rows.shape[0]
    if probs:
        t = t if W.ndim == 2 else xp.moveaxis(t, 1, -1)
        out_shape = tuple(t.shape[:-1])
        t_rows = xp.astype(xp.reshape(t, (R, D, C)), cdt)
        counted = xp.ones((R, D), dtype=xp.bool, device=dev)
        index = None
    else:
        out_shape = tuple(t.shape)
        t_rows = xp.astype(xp.reshape(t, (R, D)), index_dtype(xp))
        counted = t_rows != options.ignore_index
        index = xp.where(counted, t_rows, xp.zeros_like(t_rows))
    w = None if weight is None else xp.astype(weight, cdt)
    den = None
    if options.reduction == "mean":
        wy = None if probs else ce_math.index_targets(xp, index, counted, w, options.label_smoothing, C, cdt).wy
        den = ce_math.mean_denominator(xp, wy, out_shape, num_items, cdt, x_rows)
    go = None
    if need_grad:
        go = _reduce.scale(xp, grad_output, options.reduction, out_shape, cdt, x_rows, den)
        # broadcast to the loss's shape (a number, or grad_output shaped like
        # the value), then one entry a row of classes: (R, D) in the same order
        go = xp.reshape(go * xp.ones(out_shape, dtype=cdt, device=dev), (R, D))
    per_row = options._replace(reduction="none")
    losses, gx_parts = [], []
    gW = xp.zeros((D * C, H), dtype=cdt, device=dev) if need_grad else None
    gb = xp.zeros((D * C,), dtype=cdt, device=dev) if need_grad and b2 is not None else None
    step = chunk_size or _DEFAULT_CHUNK
    for r0 in range(0, R, step):
        r1 = min(r0 + step, R)
        xc = x_rows[r0:r1, ...]
        logits = xc @ xp.matrix_transpose(W2) if b2 is None else xc @ xp.matrix_transpose(W2) + b2
        logits = xp.reshape(logits, (r1 - r0, D, C))
        p = Categorical(xp, logits, 2, None if probs else index[r0:r1, ...], counted[r0:r1, ...],
                        t_rows[r0:r1, ...] if probs else None, w, per_row)
        loss, G, _ = ce_math.core(p, need_grad=need_grad, grad_output=None if go is None else go[r0:r1, ...])
        losses.append(loss)
        if need_grad:
            G2 = xp.reshape(G, (r1 - r0, D * C))
            gx_parts.append(G2 @ W2)
            gW = gW + xp.matrix_transpose(G2) @ xc
            if gb is not None:
                gb = gb + xp.sum(G2, axis=0)
    loss = xp.reshape(xp.concat(losses, axis=0), out_shape) if losses else xp.zeros(out_shape, dtype=cdt, device=dev)
    value = xp.astype(_reduce.reduce(xp, loss, options.reduction, den), input.dtype)
    if not need_grad:
        return value, None
    gx = xp.concat(gx_parts, axis=0) if gx_parts else xp.zeros((0, H), dtype=cdt, device=dev)
    gx = xp.reshape(gx, tuple(x.shape))
    if shift:  # the last row of each sequence has no target: a zero gradient
        gx = xp.concat([gx, xp.zeros(tuple(x.shape[:-2]) + (1, H), dtype=cdt, device=dev)], axis=-2)
    if W.ndim > 2:
        gW = xp.reshape(xp.permute_dims(xp.reshape(gW, (D, C, H)), (1, 0, 2)), tuple(W.shape))
        gb = None if gb is None else xp.reshape(xp.permute_dims(xp.reshape(gb, (D, C)), (1, 0)), tuple(bias.shape))
    cast = (lambda a, like: None if a is None else xp.astype(a, like.dtype))
    return value, (cast(gx, input), cast(gW, W), cast(gb, bias) if bias is not None else None)
