"""Cases of the categorical losses: PyTorch's grid (shapes 1-D to 5-D, every
reduction, class weights, ``ignore_index`` -100, -1 and a class inside the
range, label smoothing, index, normalised and unnormalised probability
targets), the options PyTorch lacks (z-loss, soft cap, ``axis``), and the
extremes (logits of +-1e4 and -inf, rows of -inf, zero weights, empty and
all-ignored batches)."""

from __future__ import annotations

import itertools

import numpy as np

from . import Case, ref, rng

REDUCTIONS = ("none", "mean", "sum")
# PyTorch's shapes, 1-D to 5-D: (C), (N, C), (N, C, d1), ... with C = 4.
SHAPES = ((4,), (3, 4), (3, 4, 2), (2, 4, 2, 3), (2, 4, 2, 1, 2))


def _shape_id(shape):
    return "x".join(map(str, shape)) or "scalar"


def _grid(name, reference, *, probs=True, smoothing=(0.0, 0.3)):
    cases = []
    grid = itertools.product(SHAPES, REDUCTIONS, (False, True), (-100, -1, 1), smoothing,
                             ("index", "probs", "raw") if probs else ("index",))
    for shape, red, weighted, ii, ls, kind in grid:
        if kind != "index" and ii >= 0:
            continue  # PyTorch refuses probability targets with ignore_index >= 0

        def make(shape=shape, red=red, weighted=weighted, ii=ii, ls=ls, kind=kind):
            g = rng(name, shape, red, weighted, ii, ls, kind)
            x = g.normal(scale=2.0, size=shape)
            cd = 1 if len(shape) >= 2 else 0
            C = shape[cd]
            rows = shape[:cd] + shape[cd + 1:]
            if kind == "index":
                t = g.integers(0, C, size=rows)
                if ii >= 0 or ii == -1:  # sprinkle ignored entries
                    t = np.where(g.random(rows) < 0.3, ii, t)
            else:
                t = g.random(shape)
                if kind == "probs":
                    t = t / t.sum(axis=cd, keepdims=True)
            kwargs = dict(ignore_index=ii, reduction=red)
            if name != "nll_loss":
                kwargs["label_smoothing"] = ls
            if weighted:
                kwargs["weight"] = g.uniform(0.2, 2.0, size=C)
            if name == "focal_loss":
                kwargs["gamma"] = 0.5 if weighted else 2.0
            if name == "nll_loss":
                x = x - np.log(np.exp(x).sum(axis=cd, keepdims=True))
            return (x, t), kwargs

        tid = f"{name}-{_shape_id(shape)}-{red}-{'w' if weighted else 'nw'}-ii{ii}-ls{ls}-{kind}"
        cases.append(Case(tid, name, make, reference, frozenset({kind})))
    return cases


def _extras():
    """z-loss, softcap, axis and num_items_in_batch, which PyTorch's function
    lacks: checked against z and softcap terms added to F.cross_entropy."""
    cases = []
    for shape, red, kind, z, cap, weighted in itertools.product(
        ((5, 6), (2, 6, 3)), REDUCTIONS, ("index", "probs"), (0.0, 1e-2), (None, 3.0), (False, True)
    ):
        if not z and cap is None:
            continue

        def make(shape=shape, red=red, kind=kind, z=z, cap=cap, weighted=weighted):
            g = rng("extras", shape, red, kind, z, cap, weighted)
            x = g.normal(scale=3.0, size=shape)
            C, rows = shape[1], (shape[0],) + shape[2:]
            if kind == "index":
                t = np.where(g.random(rows) < 0.25, -100, g.integers(0, C, size=rows))
            else:
                t = np.moveaxis(g.dirichlet(np.ones(C), size=rows), -1, 1)
            kw = dict(reduction=red, z_loss=z, softcap=cap, label_smoothing=0.1)
            if weighted:
                kw["weight"] = g.uniform(0.2, 2.0, size=C)
            return (x, t), kw

        tid = f"cross_entropy-extras-{_shape_id(shape)}-{red}-{kind}-z{z}-cap{cap}-{'w' if weighted else 'nw'}"
        cases.append(Case(tid, "cross_entropy", make, ref.cross_entropy, frozenset({kind, "extras"})))

    for red, kind in itertools.product(REDUCTIONS, ("index", "probs")):  # axis=-1 for (N, T, C)
        def make(red=red, kind=kind):
            g = rng("axis", red, kind)
            x = g.normal(size=(2, 3, 5))
            t = g.integers(0, 5, size=(2, 3)) if kind == "index" else g.dirichlet(np.ones(5), size=(2, 3))
            return (x, t), dict(reduction=red, axis=-1, label_smoothing=0.2)
        cases.append(Case(f"cross_entropy-axis-{red}-{kind}", "cross_entropy", make, ref.cross_entropy,
                          frozenset({kind, "extras"})))

    for kind in ("index", "probs"):
        def make(kind=kind):
            g = rng("num_items", kind)
            x = g.normal(size=(6, 5))
            t = g.integers(0, 5, size=6) if kind == "index" else g.dirichlet(np.ones(5), size=6)
            return (x, t), dict(num_items_in_batch=40, label_smoothing=0.1)
        cases.append(Case(f"cross_entropy-num_items-{kind}", "cross_entropy", make, ref.cross_entropy,
                          frozenset({kind, "extras"})))
    return cases


_OPTION_SETS = {  # every option of cross_entropy, alone and together
    "plain": {}, "smooth": dict(label_smoothing=0.1), "z": dict(z_loss=1e-6), "cap": dict(softcap=30.0),
    "weight": dict(weight=np.array([0.5, 2.0, 1.0])),
    "all": dict(label_smoothing=0.2, z_loss=1e-6, softcap=50.0, weight=np.array([0.0, 2.0, 1.0])),
}


def _extremes():
    cases = []
    big = 1e4  # the losses stay under float16's 65504
    huge = np.array([[big, -big, 0.0], [-big, -big, big], [0.0, big, -big], [big, big, -big]])
    y = np.array([1, 2, 0, 0])
    p = np.array([[0.2, 0.3, 0.5]] * 4)
    for (oname, opts), red in itertools.product(_OPTION_SETS.items(), REDUCTIONS):
        for kind, target in (("index", y), ("probs", p)):
            def make(target=target, opts=opts, red=red):
                return (huge.copy(), target.copy()), dict(opts, reduction=red)
            cases.append(Case(f"cross_entropy-1e4-{oname}-{red}-{kind}", "cross_entropy", make,
                              ref.cross_entropy_extreme, frozenset({kind, "extreme"})))
        def make_f(opts=opts, red=red):
            kw = {k: v for k, v in opts.items() if k in ("label_smoothing", "weight")}
            return (huge.copy(), y.copy()), dict(kw, reduction=red, gamma=2.0)
        if oname in ("plain", "smooth", "weight"):
            cases.append(Case(f"focal_loss-1e4-{oname}-{red}", "focal_loss", make_f, ref.focal_loss,
                              frozenset({"index", "extreme"})))

    inf = np.inf
    minus_inf = np.array([[-inf, 1.0, 2.0], [0.5, -inf, -inf], [-inf, -inf, -inf], [3.0, -inf, 0.0]])
    y_inf = np.array([2, 0, -100, 0])  # the all -inf row is ignored: 0 loss, 0 gradient
    p_inf = np.array([[0.0, 0.3, 0.7], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.5, 0.0, 0.5]])
    for red, (oname, opts) in itertools.product(REDUCTIONS, (("plain", {}), ("z", dict(z_loss=1e-2)),
                                                             ("weight", dict(weight=np.array([1.0, 2.0, 3.0]))))):
        def make(opts=opts, red=red):
            return (minus_inf.copy(), y_inf.copy()), dict(opts, reduction=red)
        cases.append(Case(f"cross_entropy-minus_inf-{oname}-{red}-index", "cross_entropy", make,
                          ref.cross_entropy_extreme, frozenset({"index", "extreme", "nonfinite"})))

        def make_p(red=red):
            return (minus_inf[[0, 1, 3]].copy(), p_inf[[0, 1, 3]].copy()), dict(reduction=red)
        if oname == "plain":
            cases.append(Case(f"cross_entropy-minus_inf-{red}-probs", "cross_entropy", make_p,
                              ref.cross_entropy_extreme, frozenset({"probs", "extreme", "nonfinite"})))

    zero_w = np.array([0.0, 1.0, 2.0, 0.0])
    for red, which in itertools.product(REDUCTIONS, ("some", "all")):
        def make(red=red, which=which):
            g = rng("zero-weight", red, which)
            t = np.array([0, 1, 3, 2, 0]) if which == "some" else np.array([0, 3, 3, 0, -100])
            return (g.normal(size=(5, 4)), t), dict(weight=zero_w, reduction=red, label_smoothing=0.1)
        cases.append(Case(f"cross_entropy-zero_weight-{which}-{red}", "cross_entropy", make,
                          ref.cross_entropy_extreme, frozenset({"index", "extreme"})))

    for name, red, (oname, opts), kind in itertools.product(
        ("cross_entropy", "focal_loss", "nll_loss"), REDUCTIONS, _OPTION_SETS.items(), ("index", "probs")
    ):
        if name != "cross_entropy" and (oname not in ("plain", "weight") or (name == "nll_loss" and kind != "index")):
            continue
        for batch in ("empty", "ignored"):
            def make(name=name, red=red, opts=opts, kind=kind, batch=batch):
                n = 0 if batch == "empty" else 4
                x = rng(name, batch, red).normal(size=(n, 3))
                if kind == "probs":
                    t = np.full((n, 3), 1 / 3)
                else:
                    t = np.full(n, -100) if batch == "ignored" else np.zeros(0, dtype=np.int64)
                kw = dict(opts, reduction=red)
                if name == "focal_loss":
                    kw["gamma"] = 2.0
                return (x, t), kw
            if kind == "probs" and batch == "ignored":
                continue
            reference = {"cross_entropy": ref.cross_entropy_extreme, "focal_loss": ref.focal_loss,
                         "nll_loss": ref.nll_loss}[name]
            cases.append(Case(f"{name}-{batch}-{oname}-{red}-{kind}", name, make, reference,
                              frozenset({kind, "extreme", batch})))
    return cases


def cases():
    return (_grid("cross_entropy", ref.cross_entropy) + _extras()
            + _grid("nll_loss", ref.nll_loss, probs=False, smoothing=(0.0,))
            + _grid("focal_loss", ref.focal_loss) + _extremes())
