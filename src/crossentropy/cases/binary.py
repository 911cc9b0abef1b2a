"""Cases of the binary losses: shapes 0-D to 3-D, every reduction, weights and
positive weights that broadcast, hard and soft targets, and the extremes
(confident logits from 15 to 100, where the loss is about e^-|x| and its
relative precision is the point; +-inf; empty inputs)."""

from __future__ import annotations

import itertools

import numpy as np

from . import Case, ref, rng

REDUCTIONS = ("none", "mean", "sum")


def _grid():
    cases = []
    shapes = ((), (5,), (3, 4), (2, 3, 2))
    for shape, red, weighted in itertools.product(shapes, REDUCTIONS, (False, True)):
        def make_p(shape=shape, red=red, weighted=weighted):
            g = rng("bce", shape, red, weighted)
            kw = dict(reduction=red)
            if weighted:
                kw["weight"] = g.uniform(0.2, 2.0, size=shape[-1:] if shape else ())
            return (g.uniform(0.05, 0.95, size=shape), g.random(size=shape)), kw
        cases.append(Case(f"binary_cross_entropy-{shape}-{red}-{weighted}", "binary_cross_entropy", make_p,
                          ref.binary_cross_entropy))

        for pos in (False, True):
            def make_l(shape=shape, red=red, weighted=weighted, pos=pos):
                g = rng("bcel", shape, red, weighted, pos)
                kw = dict(reduction=red)
                if weighted:
                    kw["weight"] = g.uniform(0.2, 2.0, size=shape)
                if pos:
                    kw["pos_weight"] = g.uniform(0.5, 3.0, size=shape[-1:] if shape else ())
                return (g.normal(scale=3.0, size=shape), g.random(size=shape)), kw
            cases.append(Case(f"binary_cross_entropy_with_logits-{shape}-{red}-{weighted}-{pos}",
                              "binary_cross_entropy_with_logits", make_l, ref.binary_cross_entropy_with_logits))

    for shape, red, alpha, gamma, hard in itertools.product(
        ((6,), (3, 4)), REDUCTIONS, (0.25, -1.0), (0.0, 0.5, 2.0), (True, False)
    ):
        def make_f(shape=shape, red=red, alpha=alpha, gamma=gamma, hard=hard):
            g = rng("sfl", shape, red, alpha, gamma, hard)
            t = g.integers(0, 2, size=shape).astype(float) if hard else g.random(size=shape)
            return (g.normal(scale=3.0, size=shape), t), dict(alpha=alpha, gamma=gamma, reduction=red)
        cases.append(Case(f"sigmoid_focal_loss-{shape}-{red}-a{alpha}-g{gamma}-{'hard' if hard else 'soft'}",
                          "sigmoid_focal_loss", make_f, ref.sigmoid_focal_loss))
    return cases


def _extremes():
    cases = []
    confident = np.concatenate([np.linspace(15, 100, 18), [20.0, 21.0, 19.5, 15.0]])
    # up to 87: every sigma(-|x|) a normal float32, the kernels' path without the exp
    # (_stable.normal_range); beyond it (subnormal losses), the path with it
    spans = {"": confident, "-upto87": np.linspace(15, 87, 19)}
    for red, sign, pw, span in itertools.product(REDUCTIONS, (1, -1), (None, 2.0), spans):
        def make(red=red, sign=sign, pw=pw, span=span):
            # right: t = 1 at x >> 0 and t = 0 at x << 0, a loss of about e^-|x|
            x = sign * spans[span]
            kw = dict(reduction=red) if pw is None else dict(reduction=red, pos_weight=np.array([pw]))
            return (x, (x > 0).astype(float)), kw
        cases.append(Case(f"binary_cross_entropy_with_logits-confident{span}-{'pos' if sign > 0 else 'neg'}-{red}-pw{pw}",
                          "binary_cross_entropy_with_logits", make, ref.binary_cross_entropy_with_logits_extreme,
                          frozenset({"extreme", "tiny"})))

        def make_wrong(red=red, sign=sign):
            x = sign * confident
            return (x, (x < 0).astype(float)), dict(reduction=red, weight=np.full(x.shape, 2.0))
        cases.append(Case(f"binary_cross_entropy_with_logits-wrong-{'pos' if sign > 0 else 'neg'}-{red}",
                          "binary_cross_entropy_with_logits", make_wrong, ref.binary_cross_entropy_with_logits_extreme,
                          frozenset({"extreme"})))

        def make_f(red=red, sign=sign):
            x = sign * confident
            return (x, (x > 0).astype(float)), dict(reduction=red, gamma=2.0, alpha=0.25)
        # The focal factor (1 - p_t)^gamma is exp(gamma log(1 - p_t)) here: its relative error grows
        # like gamma |x| eps, so these are held to the usual tolerance, not to a few ulps.
        cases.append(Case(f"sigmoid_focal_loss-confident-{'pos' if sign > 0 else 'neg'}-{red}", "sigmoid_focal_loss",
                          make_f, ref.sigmoid_focal_loss_extreme, frozenset({"extreme"})))

    inf = np.inf
    x_inf = np.array([inf, -inf, inf, -inf, 0.5])
    t_inf = np.array([1.0, 0.0, 0.0, 1.0, 1.0])  # right, right, wrong (inf loss), wrong, finite
    for red, (name, reference, kw) in itertools.product(REDUCTIONS, (
        ("binary_cross_entropy_with_logits", ref.binary_cross_entropy_with_logits_extreme, {}),
        ("sigmoid_focal_loss", ref.sigmoid_focal_loss_extreme, dict(gamma=2.0)),
        ("sigmoid_focal_loss", ref.sigmoid_focal_loss_extreme, dict(gamma=0.0, alpha=-1.0)),
    )):
        for which, idx in (("right", [0, 1, 4]), ("wrong", [0, 1, 2, 3, 4])):
            def make(kw=kw, red=red, idx=idx):
                return (x_inf[idx].copy(), t_inf[idx].copy()), dict(kw, reduction=red)
            tags = {"extreme", "nonfinite"} | ({"value-only"} if which == "wrong" else set())
            cases.append(Case(f"{name}-inf-{which}-{'-'.join(f'{k}{v}' for k, v in kw.items())}-{red}", name, make,
                              reference, frozenset(tags)))

    for red, (name, reference, kw) in itertools.product(REDUCTIONS, (
        ("binary_cross_entropy", ref.binary_cross_entropy, {}),
        ("binary_cross_entropy_with_logits", ref.binary_cross_entropy_with_logits_extreme, {}),
        ("sigmoid_focal_loss", ref.sigmoid_focal_loss_extreme, {}),
    )):
        def make(kw=kw, red=red):
            return (np.zeros((0, 3)), np.zeros((0, 3))), dict(kw, reduction=red)
        cases.append(Case(f"{name}-empty-{red}", name, make, reference, frozenset({"extreme", "empty"})))
    return cases


def cases():
    return _grid() + _extremes()
