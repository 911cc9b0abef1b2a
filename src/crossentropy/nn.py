"""``torch.nn`` modules with PyTorch's constructor signatures.

Each module validates and stores its options and calls the function of the
same name; class weights are registered as buffers, so ``.to(device)`` moves
them, as in PyTorch. The extra options (``axis``, ``z_loss``, ``softcap``,
``inplace_backward``) are keyword-only. Swapping ``torch.nn.CrossEntropyLoss``
for ``crossentropy.nn.CrossEntropyLoss`` in a training loop changes nothing but
speed and memory.
"""

from __future__ import annotations

import math

import torch

from . import _checks
from .functional import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    focal_loss,
    kl_div,
    linear_cross_entropy,
    nll_loss,
    sigmoid_focal_loss,
)
from .losses.divergences import KL_DIV_REDUCTIONS

__all__ = [
    "CrossEntropyLoss",
    "NLLLoss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "KLDivLoss",
    "FocalLoss",
    "SigmoidFocalLoss",
    "LinearCrossEntropyLoss",
]


def _legacy_reduction(size_average, reduce, reduction):
    """PyTorch's deprecated ``size_average``/``reduce`` pair, read its way."""
    if size_average is None and reduce is None:
        return reduction
    _checks.warn("size_average and reduce are deprecated, use reduction instead")
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return ("mean" if size_average else "sum") if reduce else "none"


class _Loss(torch.nn.Module):
    def __init__(self, size_average=None, reduce=None, reduction="mean", allowed=_checks.REDUCTIONS):
        super().__init__()
        self.reduction = _checks.reduction(_legacy_reduction(size_average, reduce, reduction), allowed)


class _WeightedLoss(_Loss):
    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)


class CrossEntropyLoss(_WeightedLoss):
    """:func:`crossentropy.cross_entropy` as a module; ``torch.nn.CrossEntropyLoss``'s signature."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                 label_smoothing=0.0, *, axis=None, z_loss=0.0, softcap=None, inplace_backward=False):
        super().__init__(weight, size_average, reduce, reduction)
        options = _checks.cross_entropy_options(self.reduction, ignore_index, label_smoothing, z_loss, softcap)
        self.ignore_index, self.label_smoothing = options.ignore_index, options.label_smoothing
        self.z_loss, self.softcap = options.z_loss, options.softcap
        self.axis = axis
        self.inplace_backward = bool(inplace_backward)

    def forward(self, input, target):
        extra = {"inplace_backward": True} if self.inplace_backward else {}  # torch fused path only
        return cross_entropy(input, target, self.weight, self.ignore_index, self.reduction,
                             self.label_smoothing, axis=self.axis, z_loss=self.z_loss, softcap=self.softcap,
                             **extra)


class NLLLoss(_WeightedLoss):
    """:func:`crossentropy.nll_loss` as a module; ``torch.nn.NLLLoss``'s signature."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = _checks.integer("ignore_index", ignore_index)

    def forward(self, input, target):
        return nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class BCELoss(_WeightedLoss):
    """:func:`crossentropy.binary_cross_entropy` as a module; ``torch.nn.BCELoss``'s signature."""

    def forward(self, input, target):
        return binary_cross_entropy(input, target, self.weight, self.reduction)


class BCEWithLogitsLoss(_WeightedLoss):
    """:func:`crossentropy.binary_cross_entropy_with_logits` as a module; ``torch.nn.BCEWithLogitsLoss``'s signature."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean", pos_weight=None):
        super().__init__(weight, size_average, reduce, reduction)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return binary_cross_entropy_with_logits(input, target, self.weight, self.reduction, self.pos_weight)


class KLDivLoss(_Loss):
    """:func:`crossentropy.kl_div` as a module; ``torch.nn.KLDivLoss``'s signature."""

    def __init__(self, size_average=None, reduce=None, reduction="mean", log_target=False):
        super().__init__(size_average, reduce, reduction, KL_DIV_REDUCTIONS)
        self.log_target = bool(log_target)

    def forward(self, input, target):
        return kl_div(input, target, self.reduction, self.log_target)


class FocalLoss(_WeightedLoss):
    """:func:`crossentropy.focal_loss` as a module (categorical focal loss on logits)."""

    def __init__(self, gamma=2.0, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(weight, None, None, reduction)
        self.gamma = _checks.focal_gamma(gamma)
        options = _checks.cross_entropy_options(self.reduction, ignore_index, label_smoothing)
        self.ignore_index, self.label_smoothing = options.ignore_index, options.label_smoothing

    def forward(self, input, target):
        return focal_loss(input, target, self.gamma, self.weight, self.ignore_index, self.reduction,
                          self.label_smoothing)


class SigmoidFocalLoss(_Loss):
    """:func:`crossentropy.sigmoid_focal_loss` as a module.

    The function keeps torchvision's default ``reduction="none"``; the module,
    like every ``torch.nn`` loss module, defaults to ``"mean"``.
    """

    def __init__(self, alpha=0.25, gamma=2.0, reduction="mean"):
        super().__init__(None, None, reduction)
        self.alpha, self.gamma = _checks.focal_alpha(alpha), _checks.focal_gamma(gamma)

    def forward(self, inputs, targets):
        return sigmoid_focal_loss(inputs, targets, self.alpha, self.gamma, self.reduction)


class LinearCrossEntropyLoss(torch.nn.Module):
    """A linear layer and cross-entropy in one, never holding the logits.

    ``torch.nn.LinearCrossEntropyLoss``'s signature (``in_features``,
    ``num_classes``, keyword-only ``out_features`` for a K-dimensional loss,
    ``bias=False``, ``device``, ``dtype``, ``reduction``, ``weight``,
    ``ignore_index`` (``None`` is -100), ``label_smoothing``), plus ``z_loss``,
    ``softcap``, ``shift``, ``chunk_size`` and ``accum_dtype``. The layer is
    ``self.linear``, a ``torch.nn.Linear`` of ``num_classes * prod(out_features)``
    outputs, as in PyTorch, so checkpoints keep PyTorch's names and shapes.
    """

    def __init__(self, in_features, num_classes, *, out_features=(), bias=False, device=None, dtype=None,
                 reduction="mean", weight=None, ignore_index=None, label_smoothing=0.0, z_loss=0.0, softcap=None,
                 shift=False, chunk_size=None, accum_dtype=None):
        super().__init__()
        self.num_classes, self.out_features = int(num_classes), tuple(int(d) for d in out_features)
        outputs = self.num_classes * math.prod(self.out_features)
        self.linear = torch.nn.Linear(in_features, outputs, bias=bias, device=device, dtype=dtype)
        self.register_buffer("weight", weight)
        ignore_index = -100 if ignore_index is None else ignore_index
        options = _checks.cross_entropy_options(reduction, ignore_index, label_smoothing, z_loss, softcap)
        self.reduction = options.reduction
        self.options = dict(ignore_index=options.ignore_index, label_smoothing=options.label_smoothing,
                            z_loss=options.z_loss, softcap=options.softcap, shift=bool(shift), chunk_size=chunk_size,
                            accum_dtype=accum_dtype)

    def forward(self, input, target):
        shape = (self.num_classes, *self.out_features)
        W = self.linear.weight.reshape(*shape, self.linear.in_features)
        b = None if self.linear.bias is None else self.linear.bias.reshape(shape)
        return linear_cross_entropy(input, W, target, linear_bias=b, weight=self.weight, reduction=self.reduction,
                                    **self.options)
