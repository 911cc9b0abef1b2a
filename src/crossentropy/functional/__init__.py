"""The public functions of the cross-entropy family, one module per loss;
``import crossentropy`` re-exports them (``crossentropy.cross_entropy`` is
``crossentropy.functional.cross_entropy``)."""

from .binary import binary_cross_entropy, binary_cross_entropy_with_logits
from .cross_entropy import CrossEntropyStats, cross_entropy, cross_entropy_with_stats, nll_loss
from .divergences import entropy, js_divergence, kl_div, kl_divergence
from .focal import focal_loss, sigmoid_focal_loss
from .linear import LinearCrossEntropyGrads, linear_cross_entropy

__all__ = [
    "cross_entropy",
    "cross_entropy_with_stats",
    "CrossEntropyStats",
    "nll_loss",
    "focal_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "sigmoid_focal_loss",
    "entropy",
    "kl_divergence",
    "js_divergence",
    "kl_div",
    "linear_cross_entropy",
    "LinearCrossEntropyGrads",
]
