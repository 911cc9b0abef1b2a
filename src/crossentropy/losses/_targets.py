r"""Reading and validating the arguments of the categorical losses, once.

PyTorch's rules, which every categorical loss here follows:

* the class dimension is 1, or 0 for a 1-D input; ``axis=k`` names another;
* a target with the input's shape holds class *probabilities* (floating, in
  [0, 1]); any other target holds class *indices*, shaped like the input
  without its class dimension;
* an index equal to ``ignore_index`` contributes nothing; with probability
  targets a non-negative ``ignore_index`` is an error and a negative one is
  ignored;
* class weights ``w`` (length C) scale each class's term.

:func:`read` is the one place these are checked; the array-API core and the
torch kernels both start from the :class:`Categorical` it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import _checks
from .._array import compute_dtype, device, index_dtype, namespace, to_compute


@dataclass
class Categorical:
    """A validated categorical problem, class axis last."""

    xp: Any
    x: Any  # input, class axis moved last: (..., C); compute dtype unless read with compute=False
    class_axis: int  # where the class axis sits in the caller's input
    index: Any  # (...) int64 class indices, 0 on ignored rows (a safe gather index); None for probabilities
    counted: Any  # (...) bool: the row counts (False on ignored rows; all True for probabilities)
    probs: Any  # (..., C) probability target in the compute dtype, or None
    weight: Any  # (C,) class weights in the compute dtype, or None
    options: _checks.CrossEntropyOptions

    @property
    def num_classes(self) -> int:
        return self.x.shape[-1]

    @property
    def rows(self) -> tuple:
        return tuple(self.x.shape[:-1])

    @property
    def compute_dtype(self):
        return compute_dtype(self.xp, self.x.dtype, "input")

    def in_input_layout(self, input, value, grad):
        """The value in the input's dtype; the gradient (class axis last) with
        the class axis back where the input has it, in the input's dtype."""
        xp = self.xp
        value = xp.astype(value, input.dtype, copy=False)
        if grad is None:
            return value, None
        return value, xp.astype(xp.moveaxis(grad, -1, self.class_axis), input.dtype, copy=False)

    def one_hot(self):
        """The index target as a dense (..., C) 0/1 array in the compute dtype."""
        xp = self.xp
        hit = self.index[..., None] == xp.arange(self.num_classes, device=device(self.x))
        return xp.astype(hit, self.compute_dtype)

    def gather(self, values):
        """``values[..., y]`` for index targets (``values`` shaped like ``x``)."""
        xp = self.xp
        idx = xp.reshape(self.index, tuple(self.index.shape) + (1,))
        return xp.take_along_axis(values, idx, axis=-1)[..., 0]


def read(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, axis=None,
         z_loss=0.0, softcap=None, *, allow_probs: bool = True, name: str = "input",
         compute: bool = True) -> Categorical:
    """Validate the arguments of a categorical loss and return its problem.
    With ``compute=False`` the input keeps its dtype (the torch kernel casts
    chunk by chunk instead of copying the whole input)."""
    xp = namespace(input=input, target=target)
    _checks.floating(xp, input, name)
    options = _checks.cross_entropy_options(reduction, ignore_index, label_smoothing, z_loss, softcap)
    cax = (1 if input.ndim >= 2 else 0) if axis is None else _checks.axis("axis", axis, input.ndim)
    C = input.shape[cax]
    if C == 0:
        raise ValueError(f"{name} of shape {tuple(input.shape)} has no classes along axis {cax}")
    x = to_compute(xp, input, name) if compute else input
    if cax != input.ndim - 1:  # (a no-op moveaxis would still be a node in autograd's graph)
        x = xp.moveaxis(x, cax, -1)
    w = _checks.class_weight(xp, weight, input, C, name)
    cdt = compute_dtype(xp, input.dtype, name)
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
        if options.ignore_index >= 0:
            raise ValueError(
                f"ignore_index={options.ignore_index} cannot be used with probability targets "
                "(a negative ignore_index is ignored, as in PyTorch)"
            )
        _checks.probabilities(xp, target, "target", high=1.0)
        probs = xp.astype(xp.moveaxis(target, cax, -1), cdt)
        counted = xp.ones(rows, dtype=xp.bool, device=device(x))
        return Categorical(xp, x, cax, None, counted, probs, w, options)

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
    in_range = _checks.class_indices(xp, target, C, options.ignore_index)
    t = xp.astype(target, index_dtype(xp), copy=False)  # read only: no copy of an int64 target
    if in_range and not 0 <= options.ignore_index < C:  # no row is ignored: nothing to mask
        return Categorical(xp, x, cax, t, xp.ones(rows, dtype=xp.bool, device=device(x)), None, w, options)
    counted = t != options.ignore_index
    index = xp.where(counted, t, xp.zeros_like(t))
    return Categorical(xp, x, cax, index, counted, None, w, options)
