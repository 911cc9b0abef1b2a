"""The losses, one module per family; each function carries ``value_and_grad``."""

from .binary import binary_cross_entropy, binary_cross_entropy_with_logits, sigmoid_focal_loss
from .categorical import CrossEntropyStats, cross_entropy, cross_entropy_with_stats, focal_loss, nll_loss
from .divergences import entropy, js_divergence, kl_div, kl_divergence

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
]
