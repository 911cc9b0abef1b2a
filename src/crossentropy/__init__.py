"""crossentropy: the cross-entropy family of losses, exact, with analytic gradients.

Every function takes NumPy arrays, PyTorch tensors or any array-API array and
returns the same kind. Every loss ``f`` also has ``f.value_and_grad(...)``.
"""

from .gradcheck import GradCheck, check_grad
from .links import log_sigmoid, log_softmax, logsumexp, sigmoid, softmax, softmax_jacobian
from .losses import (
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
    nll_loss,
    sigmoid_focal_loss,
)

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
    "check_grad",
    "GradCheck",
]


def __getattr__(name):
    # torch-only entry points, imported on first use so that `import crossentropy`
    # needs only NumPy.
    if name == "linear_cross_entropy":
        from .linear import linear_cross_entropy

        return linear_cross_entropy
    raise AttributeError(f"module 'crossentropy' has no attribute {name!r}")
