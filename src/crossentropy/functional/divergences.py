r"""``entropy``, ``kl_divergence``, ``js_divergence`` and PyTorch's ``kl_div``:
the public functions. Their math and reading are
:mod:`crossentropy.losses.divergences`; they have no kernel.
"""

from __future__ import annotations

from .._autograd import analytic
from ..losses import divergences as math

__all__ = ["entropy", "kl_divergence", "js_divergence", "kl_div"]


@analytic(math.entropy_core)
def entropy(p, axis=-1):
    r"""Shannon entropy :math:`H(p) = -\sum_i p_i \log p_i` along ``axis``, in nats.

    Gradient: :math:`\partial H/\partial p_i = -(\log p_i + 1)`.

    Args:
        p: non-negative numbers (NaN or negative entries raise; checked on CPU).
        axis: the axis holding each distribution.

    Returns:
        One value per distribution: ``p``'s shape without ``axis``.

    >>> import numpy as np
    >>> round(float(entropy(np.array([0.5, 0.5]))), 6)  # log 2
    0.693147

    Reference: Shannon, "A Mathematical Theory of Communication", 1948.
    """


@analytic(math.kl_divergence_core)
def kl_divergence(p, q, axis=-1):
    r"""Kullback-Leibler divergence :math:`\mathrm{KL}(p\,\|\,q) = \sum_i p_i\log(p_i/q_i)`.

    Gradient with respect to ``p``: :math:`\log(p_i/q_i) + 1`. It is the
    cross-entropy minus the entropy: :math:`\mathrm{KL}(p\,\|\,q) = H(p, q) - H(p)`.

    >>> import numpy as np
    >>> round(float(kl_divergence(np.array([0.5, 0.5]), np.array([0.9, 0.1]))), 6)
    0.510826

    Reference: Kullback and Leibler, "On Information and Sufficiency", 1951.
    """


@analytic(math.js_divergence_core)
def js_divergence(p, q, axis=-1):
    r"""Jensen-Shannon divergence :math:`\tfrac12\mathrm{KL}(p\,\|\,m) + \tfrac12\mathrm{KL}(q\,\|\,m)`,
    :math:`m = (p + q)/2`.

    Symmetric, finite, and at most :math:`\log 2`. Gradient with respect to
    ``p``: :math:`\tfrac12\log(p_i/m_i)`.

    >>> import numpy as np
    >>> round(float(js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0]))), 6)  # log 2
    0.693147

    Reference: Lin, "Divergence Measures Based on the Shannon Entropy", 1991.
    """


@analytic(math.kl_div_core)
def kl_div(input, target, reduction="mean", log_target=False):
    r"""PyTorch's ``kl_div``: pointwise :math:`p\,(\log p - x)` with ``input`` :math:`x = \log q`.

    .. math:: \ell_i = p_i(\log p_i - x_i),\qquad \frac{\partial\ell_i}{\partial x_i} = -p_i

    ``target`` is :math:`p` (non-negative, checked on CPU) or :math:`\log p`
    with ``log_target=True`` (not NaN). ``reduction="batchmean"`` divides the
    sum by ``input.shape[0]`` and is the mathematical KL divergence per
    sample; ``"mean"`` divides by the number of elements and warns, as
    PyTorch does. Where :math:`p_i = 0` the term is 0, even for
    :math:`x_i = -\infty` (PyTorch gives NaN there), and with ``log_target``
    where :math:`\log p_i = -\infty`.

    >>> import numpy as np
    >>> logq = np.log(np.array([[0.9, 0.1]]))
    >>> round(float(kl_div(logq, np.array([[0.5, 0.5]]), reduction="batchmean")), 6)
    0.510826
    """
