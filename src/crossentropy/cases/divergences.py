"""Cases of entropy, the KL and Jensen-Shannon divergences and PyTorch's
``kl_div``: shapes 1-D to 3-D, either axis, zeros in ``p`` (0 log 0 = 0), every
reduction with and without ``log_target``, and the extremes of ``kl_div``
(a zero target beside a -inf input; a -inf log-target)."""

from __future__ import annotations

import itertools

import numpy as np

from . import Case, ref, rng


def cases():
    cases = []
    for shape, axis, zeros in itertools.product(((5,), (3, 4), (2, 3, 4)), (-1, 0), (False, True)):
        def make(shape=shape, axis=axis, zeros=zeros):
            g = rng("div", shape, axis, zeros)
            others = tuple(np.delete(shape, axis % len(shape)))
            p, q = (np.moveaxis(g.dirichlet(np.ones(shape[axis]), size=others), -1, axis) for _ in "pq")
            if zeros:  # the first class of p is 0: 0 log 0 = 0 must hold
                p = p.copy()
                p[(slice(None),) * (axis % len(shape)) + (0,)] = 0.0
            return (p, q), dict(axis=axis)

        def make1(make=make):
            (p, _), kwargs = make()
            return (p,), kwargs

        tid = f"{'x'.join(map(str, shape))}-ax{axis}-{'zeros' if zeros else 'pos'}"
        # The derivatives in p are infinite at p = 0: with zeros, check values only.
        tags = frozenset({"value-only"} if zeros else ())
        cases.append(Case(f"entropy-{tid}", "entropy", make1, ref.entropy, tags))
        cases.append(Case(f"kl_divergence-{tid}", "kl_divergence", make, ref.kl_divergence, tags))
        cases.append(Case(f"js_divergence-{tid}", "js_divergence", make, ref.js_divergence, tags))

    for shape, red, log_target in itertools.product(((4,), (3, 4), (2, 3, 4)),
                                                    ("none", "sum", "mean", "batchmean"), (False, True)):
        def make(shape=shape, red=red, log_target=log_target):
            g = rng("kldiv", shape, red, log_target)
            logq = np.log(g.dirichlet(np.ones(shape[-1]), size=shape[:-1]))
            p = g.dirichlet(np.ones(shape[-1]), size=shape[:-1])
            return (logq, np.log(p) if log_target else p), dict(reduction=red, log_target=log_target)
        cases.append(Case(f"kl_div-{shape}-{red}-{log_target}", "kl_div", make, ref.kl_div))

    for red, log_target in itertools.product(("none", "sum", "batchmean"), (False, True)):
        def make(red=red, log_target=log_target):
            p = np.array([[0.0, 0.5, 0.5], [0.0, 0.4, 0.6]])  # a zero target beside a -inf input
            with np.errstate(divide="ignore"):
                logq = np.log(np.array([[0.0, 0.5, 0.5], [0.2, 0.3, 0.5]]))
                target = np.log(p) if log_target else p
            return (logq, target), dict(reduction=red, log_target=log_target)
        cases.append(Case(f"kl_div-zeros-{red}-{log_target}", "kl_div", make, ref.kl_div_extreme,
                          frozenset({"extreme", "nonfinite"})))
    return cases
