r"""Reading and validating the inputs of the categorical losses, once.

PyTorch's rules, which every categorical loss here follows:

* the class dimension is 1, or 0 for a 1-D input; ``axis=k`` names another;
* a target with the input's shape holds class *probabilities* (floating);
  any other target holds class *indices*, shaped like the input without its
  class dimension;
* an index equal to ``ignore_index`` contributes nothing; with probability
  targets a non-negative ``ignore_index`` is an error and a negative one is
  ignored;
* class weights ``w`` (length C) scale each class's term.

Every categorical loss is a sum over classes of a per-class term weighted by
the *target weights*

.. math:: a_{c} = w_c\,\Big((1-\varepsilon)\,t_c + \frac{\varepsilon}{C}\Big)

where ``t`` is the one-hot index target (zero on ignored rows) or the
probability target, and ``ε`` is the label smoothing. :class:`Targets` holds
them without building the dense one-hot matrix until a gradient needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import _array, _checks
from .._array import namespace, to_compute


@dataclass
class Targets:
    xp: Any
    x: Any  # input in its compute dtype, class axis moved last: (..., C)
    class_axis: int  # where the class axis sits in the caller's input
    index: Any  # (...) int64 indices with ignored entries replaced by 0, or None
    valid: Any  # (...) bool, False on ignored rows (all True for probabilities)
    probs: Any  # (..., C) probability target in the compute dtype, or None
    weight: Any  # (C,) class weights in the compute dtype, or None
    smoothing: float

    @property
    def num_classes(self) -> int:
        return self.x.shape[-1]

    @property
    def rows(self) -> tuple:
        return tuple(self.x.shape[:-1])

    def row_weight(self):
        """``w[y]`` on valid rows and 0 on ignored ones (index targets)."""
        xp = self.xp
        if self.weight is None:
            return xp.astype(self.valid, self.x.dtype)
        flat = xp.reshape(self.index, (-1,))
        wy = xp.reshape(xp.take(self.weight, flat, axis=0), self.rows)
        return xp.where(self.valid, wy, xp.zeros_like(wy))

    def gather(self, values):
        """``values[..., y]`` for index targets (``values`` shaped like ``x``)."""
        idx = xp_reshape_last(self.xp, self.index)
        return self.xp.take_along_axis(values, idx, axis=-1)[..., 0]

    def denominator(self):
        """What "mean" divides by: the total target weight (index targets) or
        the number of rows (probability targets), as PyTorch does."""
        if self.probs is not None:
            return _prod(self.rows)
        return self.xp.sum(self.row_weight())

    def dense(self):
        """The target weights ``a`` of shape (..., C), zero on ignored rows."""
        xp, e, C = self.xp, self.smoothing, self.num_classes
        w = self.weight
        if self.probs is not None:
            t = self.probs if e == 0 else self.probs * (1 - e) + e / C
            return t if w is None else t * w
        onehot = xp.astype(self.index[..., None] == xp.arange(C, device=_array.device(self.x)), self.x.dtype)
        t = onehot if e == 0 else onehot * (1 - e) + e / C
        if w is not None:
            t = t * w
        return t * xp.astype(self.valid, self.x.dtype)[..., None]


def xp_reshape_last(xp, a):
    return xp.reshape(a, tuple(a.shape) + (1,))


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def read(
    input,
    target,
    weight,
    ignore_index,
    reduction,
    label_smoothing,
    axis,
    *,
    allow_probs: bool = True,
    name: str = "input",
    compute: bool = True,
) -> Targets:
    """Validate the arguments of a categorical loss and return its :class:`Targets`.
    With ``compute=False`` the input keeps its dtype (the fused torch path
    casts chunk by chunk instead of copying the whole input)."""
    xp = namespace(input=input, target=target)
    _checks.logits(xp, input, name)
    _checks.reduction(reduction)
    ignore_index = _checks.integer("ignore_index", ignore_index)
    e = _checks.real("label_smoothing", label_smoothing, low=0.0, high=1.0)
    if axis is None:
        cax = 1 if input.ndim >= 2 else 0
    else:
        cax = _array.axis_index("axis", axis, input.ndim)
    C = input.shape[cax]
    if C == 0:
        raise ValueError(f"{name} of shape {tuple(input.shape)} has no classes along axis {cax}")
    x = xp.moveaxis(to_compute(xp, input, name) if compute else input, cax, -1)

    w = None
    if weight is not None:
        w = _array.as_array_like(xp, weight, input, "weight")
        if not xp.isdtype(w.dtype, ("real floating", "integral")) or w.ndim != 1 or w.shape[0] != C:
            raise ValueError(
                f"weight must be a 1-D floating array of length C={C}, "
                f"got shape {tuple(w.shape)} and dtype {w.dtype}"
            )
        w = xp.astype(w, _array.compute_dtype(xp, input.dtype, name))

    rows = tuple(x.shape[:-1])
    if tuple(target.shape) == tuple(input.shape):
        if not allow_probs:
            raise ValueError(
                f"target has the input's shape {tuple(input.shape)}; this loss takes class "
                f"indices of shape {rows}"
            )
        if not xp.isdtype(target.dtype, "real floating"):
            raise TypeError(
                f"target has the input's shape {tuple(input.shape)}, so it is read as class "
                f"probabilities and must be floating, got dtype {target.dtype}"
            )
        if ignore_index >= 0:
            raise ValueError(
                f"ignore_index={ignore_index} cannot be used with probability targets "
                "(a negative ignore_index is ignored, as in PyTorch)"
            )
        probs = xp.astype(xp.moveaxis(target, cax, -1), _array.compute_dtype(xp, input.dtype, name))
        valid = xp.ones(rows, dtype=xp.bool, device=_array.device(x))
        return Targets(xp, x, cax, None, valid, probs, w, e)

    if xp.isdtype(target.dtype, "real floating"):
        raise ValueError(
            f"target is floating with shape {tuple(target.shape)}: probability targets need the "
            f"input's shape {tuple(input.shape)}, and class indices need an integer dtype and shape {rows}"
        )
    if tuple(target.shape) != rows:
        raise ValueError(
            f"target of shape {tuple(target.shape)} does not match input of shape "
            f"{tuple(input.shape)}: class indices need shape {rows}"
        )
    _checks.class_indices(xp, target, C, ignore_index)
    t = xp.astype(target, xp.int64)
    valid = t != ignore_index
    index = xp.where(valid, t, xp.zeros_like(t))
    return Targets(xp, x, cax, index, valid, None, w, e)
