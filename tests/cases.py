"""The registry of test cases: every public function, its inputs over PyTorch's
case grid, and an independent float64 PyTorch reference for each.

A case is data only: ``make()`` returns float64 NumPy arguments, ``reference``
computes the expected value from torch float64 tensors (differentiable with
respect to the first argument, so that torch's autograd gives the expected
gradient). The test modules run every case on NumPy and on torch inputs.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

import crossentropy as ce

REDUCTIONS = ("none", "mean", "sum")
# PyTorch's shapes, 1-D to 5-D: (C), (N, C), (N, C, d1), ... with C = 4.
SHAPES = ((4,), (3, 4), (3, 4, 2), (2, 4, 2, 3), (2, 4, 2, 1, 2))


@dataclass
class Case:
    id: str
    fn: Callable  # ours
    make: Callable[[], tuple]  # () -> (args, kwargs), float64 NumPy arrays
    reference: Callable  # (torch args, kwargs) -> torch value
    tags: set = field(default_factory=set)

    def __repr__(self):
        return self.id


def _rng(*key):
    """A generator seeded by the case's parameters, the same in every run."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def to_torch(a, requires_grad=False):
    if isinstance(a, np.ndarray):
        t = torch.from_numpy(a.copy())
        if requires_grad and t.is_floating_point():
            t.requires_grad_(True)
        return t
    return a


# ----------------------------------------------------------------------------
# Categorical references
# ----------------------------------------------------------------------------


def _class_dim(x, axis):
    return (1 if x.dim() >= 2 else 0) if axis is None else axis % x.dim()


def ref_cross_entropy(x, t, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0,
                      *, axis=None, z_loss=0.0, softcap=None):
    """F.cross_entropy on (softcapped) logits, plus z * LSE^2 on counted rows,
    with "mean" returning 0 where PyTorch divides 0 by 0."""
    cd = _class_dim(x, axis)
    if axis is not None:  # move the class axis where PyTorch wants it
        pt_dim = 1 if x.dim() >= 2 else 0
        x = x.movedim(cd, pt_dim)
        if t.shape == x.movedim(pt_dim, cd).shape and t.is_floating_point():
            t = t.movedim(cd, pt_dim)
        cd = pt_dim
    s = x if softcap is None else softcap * torch.tanh(x / softcap)
    rows = F.cross_entropy(s, t, weight=weight, ignore_index=ignore_index, reduction="none",
                           label_smoothing=label_smoothing)
    probs = t.is_floating_point()
    valid = torch.ones_like(rows, dtype=torch.bool) if probs else t != ignore_index
    if z_loss:
        lse = torch.logsumexp(s, dim=cd)
        rows = rows + z_loss * lse**2 * valid
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    if probs:
        den = torch.tensor(float(rows.numel()), dtype=x.dtype)
    else:
        w = torch.ones(x.shape[cd], dtype=x.dtype) if weight is None else weight
        den = (w[torch.where(valid, t, 0)] * valid).sum()
        if den == 0:
            return rows.sum() * 0
        # PyTorch's own "mean" for the cross-entropy part, our z term beside it.
        if not z_loss:
            return F.cross_entropy(s, t, weight=weight, ignore_index=ignore_index,
                                   reduction="mean", label_smoothing=label_smoothing)
    return rows.sum() / den


def _target_weights(x, t, weight, ignore_index, label_smoothing):
    """Dense target weights a (class dim 1 or 0), built independently of ours."""
    cd = _class_dim(x, None)
    C = x.shape[cd]
    if t.is_floating_point():
        a = t * (1 - label_smoothing) + label_smoothing / C
        valid = None
    else:
        valid = t != ignore_index
        onehot = F.one_hot(torch.where(valid, t, 0), C).to(x.dtype)
        onehot = onehot.movedim(-1, cd) if x.dim() >= 2 else onehot
        a = onehot * (1 - label_smoothing) + label_smoothing / C
        a = a * valid.unsqueeze(cd).to(x.dtype)
    if weight is not None:
        shape = [1] * x.dim()
        shape[cd] = C
        a = a * weight.reshape(shape)
    return a, valid, cd


def ref_focal_loss(x, t, gamma=2.0, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    a, valid, cd = _target_weights(x, t, weight, ignore_index, label_smoothing)
    logp = torch.log_softmax(x, dim=cd)
    rows = -(a * (1 - logp.exp()) ** gamma * logp).sum(cd)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    if valid is None:
        return rows.sum() / rows.numel()
    w = torch.ones(x.shape[cd], dtype=x.dtype) if weight is None else weight
    den = (w[torch.where(valid, t, 0)] * valid).sum()
    return rows.sum() * 0 if den == 0 else rows.sum() / den


def ref_nll_loss(x, t, weight=None, ignore_index=-100, reduction="mean"):
    out = F.nll_loss(x, t, weight=weight, ignore_index=ignore_index, reduction=reduction)
    return torch.nan_to_num(out, nan=0.0) if reduction == "mean" else out


def _categorical_cases(name, fn, ref, *, probs=True, smoothing=(0.0, 0.3), extra=None):
    cases = []
    grid = itertools.product(SHAPES, REDUCTIONS, (False, True), (-100, -1, 1), smoothing,
                             ("index", "probs", "raw") if probs else ("index",))
    for shape, red, weighted, ii, ls, kind in grid:
        if kind != "index" and ii >= 0:
            continue  # PyTorch refuses probability targets with ignore_index >= 0

        def make(shape=shape, red=red, weighted=weighted, ii=ii, ls=ls, kind=kind):
            rng = _rng(name, shape, red, weighted, ii, ls, kind)
            x = rng.normal(scale=2.0, size=shape)
            cd = 1 if len(shape) >= 2 else 0
            C = shape[cd]
            rows = shape[:cd] + shape[cd + 1:]
            if kind == "index":
                t = rng.integers(0, C, size=rows)
                if ii >= 0 or ii == -1:  # sprinkle ignored entries
                    t = np.where(rng.random(rows) < 0.3, ii, t)
            else:
                t = rng.random(shape)
                if kind == "probs":
                    t = t / t.sum(axis=cd, keepdims=True)
            kwargs = dict(ignore_index=ii, reduction=red)
            if ls or fn is not ce.nll_loss:
                kwargs["label_smoothing"] = ls
            if weighted:
                kwargs["weight"] = rng.uniform(0.2, 2.0, size=C)
            if fn is ce.focal_loss:
                kwargs["gamma"] = 0.5 if weighted else 2.0
            if fn is ce.nll_loss:
                x = x - np.log(np.exp(x).sum(axis=cd, keepdims=True))
            return (x, t), kwargs

        tid = f"{name}-{'x'.join(map(str, shape))}-{red}-{'w' if weighted else 'nw'}-ii{ii}-ls{ls}-{kind}"
        cases.append(Case(tid, fn, make, ref, {name, kind}))
    return cases


def _extras_cases():
    """z-loss, softcap and axis, which PyTorch's function lacks: checked against
    softcap/z terms added to F.cross_entropy by formula."""
    cases = []
    for shape, red, kind, z, cap, weighted in itertools.product(
        ((5, 6), (2, 6, 3)), REDUCTIONS, ("index", "probs"), (0.0, 1e-2), (None, 3.0), (False, True)
    ):
        if not z and cap is None:
            continue

        def make(shape=shape, red=red, kind=kind, z=z, cap=cap, weighted=weighted):
            rng = _rng("extras", shape, red, kind, z, cap, weighted)
            x = rng.normal(scale=3.0, size=shape)
            C, rows = shape[1], (shape[0],) + shape[2:]
            if kind == "index":
                t = np.where(rng.random(rows) < 0.25, -100, rng.integers(0, C, size=rows))
            else:
                t = rng.dirichlet(np.ones(C), size=rows)
                t = np.moveaxis(t, -1, 1)
            kw = dict(reduction=red, z_loss=z, softcap=cap, label_smoothing=0.1)
            if weighted:
                kw["weight"] = rng.uniform(0.2, 2.0, size=C)
            return (x, t), kw

        tid = f"cross_entropy-extras-{'x'.join(map(str, shape))}-{red}-{kind}-z{z}-cap{cap}-{'w' if weighted else 'nw'}"
        cases.append(Case(tid, ce.cross_entropy, make, ref_cross_entropy, {"cross_entropy", "extras"}))

    # axis=-1 for (N, T, C) layouts
    for red, kind in itertools.product(REDUCTIONS, ("index", "probs")):
        def make(red=red, kind=kind):
            rng = _rng("axis", red, kind)
            x = rng.normal(size=(2, 3, 5))
            t = rng.integers(0, 5, size=(2, 3)) if kind == "index" else rng.dirichlet(np.ones(5), size=(2, 3))
            return (x, t), dict(reduction=red, axis=-1, label_smoothing=0.2)
        cases.append(Case(f"cross_entropy-axis-{red}-{kind}", ce.cross_entropy, make, ref_cross_entropy,
                          {"cross_entropy", "extras"}))
    return cases


# ----------------------------------------------------------------------------
# Binary references
# ----------------------------------------------------------------------------


def ref_sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss, by its formula."""
    p = torch.sigmoid(x)
    ce_loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def _binary_cases():
    cases = []
    shapes = ((), (5,), (3, 4), (2, 3, 2))
    for shape, red, weighted in itertools.product(shapes, REDUCTIONS, (False, True)):
        def make_p(shape=shape, red=red, weighted=weighted):
            rng = _rng("bce", shape, red, weighted)
            kw = dict(reduction=red)
            if weighted:
                kw["weight"] = rng.uniform(0.2, 2.0, size=shape[-1:] if shape else ())
            return (rng.uniform(0.05, 0.95, size=shape), rng.random(size=shape)), kw
        cases.append(Case(f"binary_cross_entropy-{shape}-{red}-{weighted}", ce.binary_cross_entropy, make_p,
                          F.binary_cross_entropy, {"binary_cross_entropy"}))

        for pos in (False, True):
            def make_l(shape=shape, red=red, weighted=weighted, pos=pos):
                rng = _rng("bcel", shape, red, weighted, pos)
                kw = dict(reduction=red)
                if weighted:
                    kw["weight"] = rng.uniform(0.2, 2.0, size=shape)
                if pos:
                    kw["pos_weight"] = rng.uniform(0.5, 3.0, size=shape[-1:] if shape else ())
                return (rng.normal(scale=3.0, size=shape), rng.random(size=shape)), kw
            cases.append(Case(f"binary_cross_entropy_with_logits-{shape}-{red}-{weighted}-{pos}",
                              ce.binary_cross_entropy_with_logits, make_l,
                              F.binary_cross_entropy_with_logits, {"binary_cross_entropy_with_logits"}))

    for shape, red, alpha, gamma, hard in itertools.product(
        ((6,), (3, 4)), REDUCTIONS, (0.25, -1.0), (0.0, 0.5, 2.0), (True, False)
    ):
        def make_f(shape=shape, red=red, alpha=alpha, gamma=gamma, hard=hard):
            rng = _rng("sfl", shape, red, alpha, gamma, hard)
            t = rng.integers(0, 2, size=shape).astype(float) if hard else rng.random(size=shape)
            return (rng.normal(scale=3.0, size=shape), t), dict(alpha=alpha, gamma=gamma, reduction=red)
        cases.append(Case(f"sigmoid_focal_loss-{shape}-{red}-a{alpha}-g{gamma}-{'hard' if hard else 'soft'}",
                          ce.sigmoid_focal_loss, make_f, ref_sigmoid_focal_loss, {"sigmoid_focal_loss"}))
    return cases


# ----------------------------------------------------------------------------
# Divergences
# ----------------------------------------------------------------------------


def _xlogy(a, b):
    return torch.special.xlogy(a, b)


def ref_entropy(p, axis=-1):
    return -_xlogy(p, p).sum(axis)


def ref_kl_divergence(p, q, axis=-1):
    return (_xlogy(p, p) - _xlogy(p, q)).sum(axis)


def ref_js_divergence(p, q, axis=-1):
    m = (p + q) / 2
    return ((_xlogy(p, p) - _xlogy(p, m)) + (_xlogy(q, q) - _xlogy(q, m))).sum(axis) / 2


def _divergence_cases():
    cases = []
    for shape, axis, zeros in itertools.product(((5,), (3, 4), (2, 3, 4)), (-1, 0), (False, True)):
        def make(shape=shape, axis=axis, zeros=zeros):
            rng = _rng("div", shape, axis, zeros)
            others = tuple(np.delete(shape, axis % len(shape)))
            p, q = (np.moveaxis(rng.dirichlet(np.ones(shape[axis]), size=others), -1, axis) for _ in "pq")
            if zeros:  # the first class of p is 0: 0 log 0 = 0 must hold
                p = p.copy()
                p[(slice(None),) * (axis % len(shape)) + (0,)] = 0.0
            return (p, q), dict(axis=axis)

        def make1(make=make):
            (p, _), kwargs = make()
            return (p,), kwargs

        tid = f"{'x'.join(map(str, shape))}-ax{axis}-{'zeros' if zeros else 'pos'}"
        # The derivatives in p are infinite at p = 0: with zeros, check values only.
        tags = {"value-only"} if zeros else set()
        cases.append(Case(f"entropy-{tid}", ce.entropy, make1, ref_entropy, {"entropy"} | tags))
        cases.append(Case(f"kl_divergence-{tid}", ce.kl_divergence, make, ref_kl_divergence,
                          {"kl_divergence"} | tags))
        cases.append(Case(f"js_divergence-{tid}", ce.js_divergence, make, ref_js_divergence,
                          {"js_divergence"} | tags))

    for shape, red, log_target in itertools.product(((4,), (3, 4), (2, 3, 4)),
                                                    ("none", "sum", "mean", "batchmean"), (False, True)):
        def make(shape=shape, red=red, log_target=log_target):
            rng = _rng("kldiv", shape, red, log_target)
            logq = np.log(rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]))
            p = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
            return (logq, np.log(p) if log_target else p), dict(reduction=red, log_target=log_target)
        cases.append(Case(f"kl_div-{shape}-{red}-{log_target}", ce.kl_div, make, F.kl_div, {"kl_div"}))
    return cases


CASES = (
    _categorical_cases("cross_entropy", ce.cross_entropy, ref_cross_entropy)
    + _extras_cases()
    + _categorical_cases("nll_loss", ce.nll_loss, ref_nll_loss, probs=False, smoothing=(0.0,))
    + _categorical_cases("focal_loss", ce.focal_loss, ref_focal_loss)
    + _binary_cases()
    + _divergence_cases()
)
