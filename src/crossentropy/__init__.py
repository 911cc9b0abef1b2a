"""crossentropy: the cross-entropy family of losses, exact, with analytic gradients.

Every function takes NumPy arrays, PyTorch tensors or any array-API array and
returns the same kind. Every loss ``f`` also has ``f.value_and_grad(...)``.
The layers, and what each may import, are in ``docs/architecture.md``.
"""

from .functional import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    CrossEntropyStats,
    cross_entropy,
    cross_entropy_with_stats,
    entropy,
    focal_loss,
    js_divergence,
    kl_div,
    kl_divergence,
    linear_cross_entropy,
    LinearCrossEntropyGrads,
    nll_loss,
    sigmoid_focal_loss,
)
from .gradcheck import GradCheck, check_grad
from .links import log_sigmoid, log_softmax, logsumexp, sigmoid, softmax, softmax_jacobian

__version__ = "0.1.0"

__all__ = [
    "logsumexp",
    "softmax",
    "log_softmax",
    "sigmoid",
    "log_sigmoid",
    "softmax_jacobian",
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
    "check_grad",
    "GradCheck",
]
