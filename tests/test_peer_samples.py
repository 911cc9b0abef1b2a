"""The peers' own test cases, run against this library.

1. PyTorch's OpInfo samples (``op_db``) for every op of the cross-entropy
   family (``test_every_family_op_in_op_db_is_covered`` lists them; PyTorch's
   ``multilabel_soft_margin_loss`` runs as its composition of our
   ``binary_cross_entropy_with_logits``): each sample, as PyTorch generates it
   (fixed seed), goes through our function with the same input, args and
   kwargs; the value and the gradients (``torch.autograd.grad`` with a random
   ``grad_output``) must match torch's own function, float64 to 1e-10, and
   float32 to 2^-17 of torch's float64 result on the same inputs, relative to
   ``max(1, |expected|)`` entrywise. Modes, the
   last part of each test id:

   * ``as_given``: every tensor that requires grad is differentiated
     (targets, ``linear_weight`` and ``linear_bias`` included);
   * ``target_detached``: where the target requires grad, the usual call
     with it detached, which takes our analytic path;
   * ``all_ignored``: a class-index sample with ``ignore_index`` and "mean",
     every target set to ``ignore_index``: PyTorch's NaN (asserted) against
     our documented exact 0 with a zero gradient;
   * ``numpy`` (and ``numpy_all_ignored``): ``f.value_and_grad`` on the
     NumPy conversion.

   We must also warn only where PyTorch warns, and leave the inputs as they
   were.
2. torchvision's ``TestFocalLoss`` and optax's classification-loss tests,
   rewritten against our functions: their numerical cases and golden values,
   their metamorphic checks.

ModuleInfo samples are in ``test_peer_samples_modules.py``, which imports the
helpers here. A failing sample fails with one line (our exception and where it
was raised, or every mismatch), without a traceback.

One translation, a documented difference of our API: ``linear_cross_entropy``'s
``options=LinearCrossEntropyOptions(...)`` becomes ``chunk_size``/
``accum_dtype`` (the chunking-strategy fields have no counterpart and do not
change the result). Everything else is passed as PyTorch's sample has it.
"""

import copy
import random
import re
import traceback
import warnings
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce

pytest.importorskip("expecttest", reason="torch.testing._internal needs expecttest")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch.testing._internal.common_methods_invocations import op_db

# float32 results are compared with PyTorch's float64 result on the same
# (float32) inputs: 2^-17 is 64 float32 ulps, a few roundings per operation over
# sums of at most a few hundred terms (the tolerance of crossentropy.cases.paths).
RTOL = {torch.float64: 1e-10, torch.float32: 2.0**-17}
DTYPES = (torch.float64, torch.float32)


def multilabel_soft_margin_loss(input, target, weight=None, reduction="mean"):
    """PyTorch's multilabel_soft_margin_loss from our binary_cross_entropy_with_logits."""
    per_class = ce.binary_cross_entropy_with_logits(input, target, weight, reduction="none")
    per_row = per_class.sum(-1) / input.shape[-1]
    return {"none": per_row, "mean": per_row.mean(), "sum": per_row.sum()}[reduction]


# op_db name -> (our function, names of the positional arguments after input)
FAMILY = {
    "nn.functional.cross_entropy": (ce.cross_entropy, ("target",)),
    "nn.functional.nll_loss": (ce.nll_loss, ("target",)),
    "nn.functional.binary_cross_entropy": (ce.binary_cross_entropy, ("target",)),
    "nn.functional.binary_cross_entropy_with_logits": (ce.binary_cross_entropy_with_logits, ("target",)),
    "nn.functional.kl_div": (ce.kl_div, ("target",)),
    "nn.functional.linear_cross_entropy": (ce.linear_cross_entropy, ("W", "target")),
    "nn.functional.multilabel_soft_margin_loss": (multilabel_soft_margin_loss, ("target",)),
}
# Other losses op_db files near the family's names, with why they are not ours.
NOT_OURS = {
    "nn.functional.gaussian_nll_loss": "Gaussian likelihood, not a cross-entropy",
    "nn.functional.poisson_nll_loss": "Poisson likelihood, not a cross-entropy",
}
OPS = {f"{op.name}.{op.variant_test_name}".rstrip("."): op for op in op_db if op.name in FAMILY}


def test_every_family_op_in_op_db_is_covered():
    pattern = re.compile(r"entropy|nll|kl_div|focal|sigmoid.*loss|soft_margin|logistic")
    found = {op.name for op in op_db if op.name.startswith("nn.functional.") and pattern.search(op.name)}
    found -= {"nn.functional.soft_margin_loss"}  # a margin loss on {-1, 1} labels
    assert found == set(FAMILY) | set(NOT_OURS)


# --------------------------------------------------------------------------
# Samples, descriptions, comparisons (also used by the modules file)
# --------------------------------------------------------------------------

_CACHE = {}


def seeded(key, make):
    """``make()`` once per key, under a fixed seed, leaving the global RNGs alone."""
    if key not in _CACHE:
        state = random.getstate()
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.manual_seed(0)
            random.seed(0)
            _CACHE[key] = list(make())
        random.setstate(state)
    return _CACHE[key]


def short(v):
    if isinstance(v, torch.Tensor):
        s = "x".join(map(str, v.shape)) or "0d"
        return s if v.dtype.is_floating_point else f"{s}:{str(v.dtype)[6:]}"
    if isinstance(v, torch.nn.LinearCrossEntropyOptions):
        d = torch.nn.LinearCrossEntropyOptions()
        diff = [f"{k}:{getattr(v, k)}" for k in d.__slots__
                if getattr(v, k) != getattr(d, k) and k != "allow_retain_graph"]
        return "opts(" + ";".join(diff) + ")"
    if isinstance(v, torch.dtype):
        return str(v)[6:]
    return str(v).replace(" ", "")


def translate_linear(kwargs):
    """``options`` -> ``chunk_size``/``accum_dtype``; everything else as given."""
    kw = dict(kwargs)
    opts = kw.pop("options", None)
    if opts is not None:
        if opts.batch_chunk_size is not None:
            kw["chunk_size"] = opts.batch_chunk_size
        if opts.acc_dtype is not None:
            kw["accum_dtype"] = opts.acc_dtype
    return kw


def fresh(v, grad=True):
    if isinstance(v, torch.Tensor):
        c = v.detach().clone()
        return c.requires_grad_(grad and v.requires_grad)
    return v


def mean_over_nothing(kind, input, target, kwargs):
    """Whether PyTorch's "mean" divides by 0 here (all ignored, total weight 0, empty)."""
    reduction = kwargs.get("reduction", "mean")
    if reduction == "batchmean":
        return input.ndim > 0 and input.shape[0] == 0
    if reduction != "mean":
        return False
    if kind in ("cross_entropy", "nll_loss", "linear_cross_entropy") and not target.dtype.is_floating_point:
        ignore = kwargs.get("ignore_index", -100)
        keep = target != (-100 if ignore is None else ignore)
        w = kwargs.get("weight")
        total = keep.sum() if w is None else w[target[keep]].sum()
        return float(total) == 0.0
    return input.numel() == 0


def outside_our_domain(kind, target, kwargs):
    """Whether we refuse this sample's target by design (README, "Deliberate
    differences"): probability targets outside [0, 1] or NaN for the binary
    losses and cross-entropy, and for kl_div a negative or NaN target (NaN for
    ``log_target``). PyTorch computes a loss from them (negative, or NaN)."""
    if not isinstance(target, torch.Tensor) or not target.dtype.is_floating_point:
        return False
    t = target.detach()
    if kind == "kl_div":
        return bool(torch.isnan(t).any() or (not kwargs.get("log_target", False) and (t < 0).any()))
    if kind in ("binary_cross_entropy", "binary_cross_entropy_with_logits", "multilabel_soft_margin_loss",
                "cross_entropy", "linear_cross_entropy"):
        return bool(torch.isnan(t).any() or (t < 0).any() or (t > 1).any())
    return False


def refuses(f):
    """``f()`` must raise a ValueError that names the target."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"target.? contains"):
            f()


def ignores_into_nothing(target, kwargs):
    """Whether a sample can be turned into a mean over nothing: class indices,
    an ``ignore_index``, reduction "mean". Its every target is then set to
    ``ignore_index`` (mode ``all_ignored``): torch's NaN against our 0."""
    return (isinstance(target, torch.Tensor) and not target.dtype.is_floating_point
            and kwargs.get("ignore_index") is not None and kwargs.get("reduction", "mean") == "mean")


def _f64(a):
    return np.asarray(a.detach() if isinstance(a, torch.Tensor) else a, dtype=np.float64)


def mismatch(what, actual, expected, rtol, peer=None):
    """None, or a line saying how ``actual`` misses ``expected``. ``peer``:
    PyTorch's own result in ``actual``'s dtype; twice its largest error over
    the array is allowed where that exceeds ``rtol``: where the peer cannot
    meet ``rtol`` in this dtype, rounding, not the method, sets the error."""
    a, e = _f64(actual), _f64(expected)
    if a.shape != e.shape:
        return f"{what}: shape {a.shape}, expected {e.shape}"
    with np.errstate(invalid="ignore"):
        allowed = rtol * np.maximum(1.0, np.abs(e))
        if peer is not None:
            peer_err = np.nan_to_num(np.abs(_f64(peer) - e) / np.maximum(1.0, np.abs(e)))
            allowed = np.maximum(allowed, 2 * peer_err.max(initial=0.0) * np.maximum(1.0, np.abs(e)))
        ok = (np.abs(a - e) <= allowed) | (a == e) | (np.isnan(a) & np.isnan(e))
    if ok.all():
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(ok, 0.0, np.nan_to_num(np.abs(a - e) / np.maximum(1.0, np.abs(e)), nan=np.inf))
    i = np.unravel_index(np.argmax(err), a.shape)
    return (f"{what}: {int((~ok).sum())}/{a.size} entries off, worst at {tuple(map(int, i))}: "
            f"got {a[i]!r}, expected {e[i]!r} (rel err {err[i]:.2e} > {rtol:g})")


def warned_alike(ours, theirs):
    """None if we warned only where PyTorch warns too (kl_div's "mean", say)."""
    extra = {w.category for w in ours} - {w.category for w in theirs}
    return f"warned {[str(w.message) for w in ours]} where PyTorch did not" if extra else None


def call_ours(f):
    """``f()``; an exception from it fails the test with one line: the error
    and where in the library it was raised (no traceback to format)."""
    try:
        return f()
    except Exception as e:  # noqa: BLE001 - every error of ours is a finding
        where = traceback.extract_tb(e.__traceback__)[-1]
        pytest.fail(f"{type(e).__name__}: {e}  [raised at {where.filename}:{where.lineno} in {where.name}]",
                    pytrace=False)


def report(problems):
    problems = [p for p in problems if p]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def as_float64(v):
    """A float32 tensor as float64 (the same numbers), for PyTorch's reference."""
    if isinstance(v, torch.Tensor) and v.dtype == torch.float32:
        return v.detach().double().requires_grad_(v.requires_grad)
    return v


def check_torch_call(ours, theirs, rtol, nothing, seed, dtype=None, peer=None):
    """Run ``ours()`` and ``theirs()`` (each returning (value, {name: leaf tensor}))
    and compare the value and the gradients w.r.t. every leaf that requires
    grad; raise with every mismatch at once. ``theirs`` may compute in float64
    from the same inputs; ``dtype`` is then what ours must return, and
    ``peer`` (called like them) PyTorch's own computation in that dtype,
    whose error bounds ours where it exceeds ``rtol`` (``mismatch``)."""
    with warnings.catch_warnings(record=True) as their_warnings:
        warnings.simplefilter("always")
        expected, their_leaves = theirs()
    dtype = expected.dtype if dtype is None else dtype
    go = torch.randn(expected.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    go = go.to(dtype).to(expected.dtype)
    wrt = [n for n, t in their_leaves.items() if isinstance(t, torch.Tensor) and t.requires_grad]
    exp_grads = torch.autograd.grad(expected, [their_leaves[n] for n in wrt], go, allow_unused=True)
    exp_grads = {n: torch.zeros_like(their_leaves[n]) if g is None else g for n, g in zip(wrt, exp_grads)}
    if nothing:  # the documented difference: 0 and a zero gradient, where torch has NaN
        assert torch.isnan(expected).all(), f"torch gave {expected} for a mean over nothing"
        expected = torch.zeros_like(expected)
        exp_grads = {n: torch.zeros_like(g) for n, g in exp_grads.items()}
    peer_value, peer_grads = None, {}
    if peer is not None and not nothing:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peer_value, peer_leaves = peer()
            got = torch.autograd.grad(peer_value, [peer_leaves[n] for n in wrt], go.to(peer_value.dtype),
                                      allow_unused=True)
        peer_grads = {n: g for n, g in zip(wrt, got) if g is not None}
    with warnings.catch_warnings(record=True) as our_warnings:
        warnings.simplefilter("always")
        value, leaves = call_ours(ours)
    problems = [warned_alike(our_warnings, their_warnings)]
    if not isinstance(value, torch.Tensor):
        report([f"returned {type(value).__name__}, not a tensor"])
    if value.dtype != dtype:
        problems.append(f"dtype {value.dtype}, expected {dtype}")
    if nothing:
        problems.append(None if torch.equal(value.detach(), expected)
                        else f"value {value} for a mean over nothing, expected exactly 0")
    else:
        problems.append(mismatch("value", value, expected, rtol, peer_value))
    if wrt and value.shape == expected.shape:
        if not value.requires_grad:
            problems.append(f"value does not require grad (expected gradients w.r.t. {wrt})")
        else:
            grads = call_ours(lambda: torch.autograd.grad(value, [leaves[n] for n in wrt], go.to(value.dtype),
                                                          allow_unused=True))
            for n, g in zip(wrt, grads):
                g = torch.zeros_like(leaves[n]) if g is None else g
                if nothing:
                    problems.append(None if not g.any() else f"grad {n} not zero for a mean over nothing: {g}")
                else:
                    problems.append(mismatch(f"grad {n}", g, exp_grads[n], rtol, peer_grads.get(n)))
    report(problems)
    return expected, exp_grads, go


# --------------------------------------------------------------------------
# 1. OpInfo samples
# --------------------------------------------------------------------------


def op_samples(key, dtype):
    return seeded(("op", key, dtype), lambda: OPS[key].sample_inputs("cpu", dtype, requires_grad=True))


def describe_sample(key, s):
    names = FAMILY[OPS[key].name][1]
    parts = [f"in={short(s.input)}"] + [f"{n}={short(a)}" for n, a in zip(names, s.args)]
    return ",".join(parts + [f"{k}={short(v)}" for k, v in s.kwargs.items()])


def _params(numpy):
    out = []
    for key in OPS:
        if numpy and key.startswith(("nn.functional.linear_cross_entropy", "nn.functional.multilabel")):
            continue  # torch-only entry point / a composition: no value_and_grad
        for dtype in DTYPES:
            for i, s in enumerate(op_samples(key, dtype)):
                modes = ["numpy"] if numpy else ["as_given"] + ["target_detached"] * s.args[-1].requires_grad
                modes += [("numpy_" if numpy else "") + "all_ignored"] * ignores_into_nothing(s.args[-1], s.kwargs)
                for mode in modes:
                    tid = f"{key[14:]}-{short(dtype)}-{i:03d}-{describe_sample(key, s)}-{mode}"
                    out.append(pytest.param(key, dtype, i, mode, id=tid))
    return out


def _sample(key, dtype, i, mode):
    s = op_samples(key, dtype)[i]
    if mode.endswith("all_ignored"):
        s = copy.copy(s)
        s.args = (*s.args[:-1], torch.full_like(s.args[-1], s.kwargs["ignore_index"]))
    return s


def _op_call(key, s, mode):
    fn, names = FAMILY[OPS[key].name]
    kind = OPS[key].name[14:]

    def run(f, translate, cast=lambda v: v):
        leaves = {"input": cast(fresh(s.input))}
        args = []
        for n, a in zip(names, s.args):
            leaves[n] = cast(fresh(a, grad=not (mode == "target_detached" and n == "target")))
            args.append(leaves[n])
        kwargs = {k: cast(fresh(v)) for k, v in s.kwargs.items()}
        leaves.update({k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)})
        if translate and kind == "linear_cross_entropy":
            kwargs = translate_linear(kwargs)
        return f(leaves["input"], *args, **kwargs), leaves

    return kind, run


@pytest.mark.parametrize("key,dtype,i,mode", _params(numpy=False))
def test_opinfo_sample_torch(key, dtype, i, mode):
    s = _sample(key, dtype, i, mode)
    kind, run = _op_call(key, s, mode)
    fn = FAMILY[OPS[key].name][0]
    if outside_our_domain(kind, s.args[-1], s.kwargs):
        return refuses(lambda: run(fn, True))
    nothing = mean_over_nothing(kind, s.input, s.args[-1], s.kwargs)
    snapshot = [fresh(t, grad=False) for t in (s.input, *s.args, *s.kwargs.values())]
    check_torch_call(lambda: run(fn, True), lambda: run(OPS[key].op, False, as_float64), RTOL[dtype], nothing,
                     zlib.crc32(f"{key}{i}".encode()), dtype)
    for before, t in zip(snapshot, (s.input, *s.args, *s.kwargs.values())):
        if isinstance(t, torch.Tensor):
            assert torch.equal(before, t.detach()), "a sample tensor was modified in place"


@pytest.mark.parametrize("key,dtype,i,mode", _params(numpy=True))
def test_opinfo_sample_numpy_value_and_grad(key, dtype, i, mode):
    s = _sample(key, dtype, i, mode)
    kind, run = _op_call(key, s, mode)
    fn = FAMILY[OPS[key].name][0]

    def np_(v):
        return v.detach().numpy() if isinstance(v, torch.Tensor) else v

    if outside_our_domain(kind, s.args[-1], s.kwargs):
        return refuses(lambda: fn.value_and_grad(np_(s.input), *map(np_, s.args),
                                                 **{k: np_(v) for k, v in s.kwargs.items()}))
    nothing = mean_over_nothing(kind, s.input, s.args[-1], s.kwargs)
    with warnings.catch_warnings(record=True) as their_warnings:
        warnings.simplefilter("always")
        expected, leaves = run(OPS[key].op, False, as_float64)
    go = torch.randn(expected.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
    go = go.to(dtype).double()
    (exp_grad,) = torch.autograd.grad(expected, leaves["input"], go)
    if nothing:
        assert torch.isnan(expected).all()
        expected, exp_grad = torch.zeros_like(expected), torch.zeros_like(exp_grad)

    with warnings.catch_warnings(record=True) as our_warnings:
        warnings.simplefilter("always")
        value, grad = call_ours(lambda: fn.value_and_grad(np_(s.input), *map(np_, s.args),
                                                          grad_output=go.to(dtype).numpy(),
                                                          **{k: np_(v) for k, v in s.kwargs.items()}))
    if not all(isinstance(v, (np.ndarray, np.generic)) for v in (value, grad)):
        report([f"returned {type(value).__name__}, {type(grad).__name__}, not NumPy arrays"])
    problems = [warned_alike(our_warnings, their_warnings),
                None if value.dtype == grad.dtype == np_(s.input).dtype else
                f"dtypes {value.dtype}, {grad.dtype}, input {np_(s.input).dtype}"]
    if nothing:
        problems += [None if np.all(value == 0) and not grad.any() else f"mean over nothing: {value}, {grad}"]
    else:
        problems += [mismatch("value", value, expected, RTOL[dtype]),
                     mismatch("grad input", grad, exp_grad, RTOL[dtype])]
    report(problems)


# --------------------------------------------------------------------------
# 2a. torchvision test/test_ops.py::TestFocalLoss, rewritten
# --------------------------------------------------------------------------

HALF_TOL = {torch.float32: 1e-5, torch.float16: 1e-3}  # torchvision's own, per dtype


def diverse_pair(seed, dtype, rows=5, cols=2):
    """torchvision's data: nine (rows, cols) blocks, logits of probabilities
    below 0.2, above 0.8 or anywhere, against targets all 0, all 1 or random
    0/1. Drawn in float64 and rounded once to ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    xs, ts = [], []
    for low, high in ((0.0, 0.2), (0.8, 1.0), (0.0, 1.0)):
        for kind in ("zeros", "ones", "binary"):
            p = low + (high - low) * torch.rand(rows, cols, generator=g, dtype=torch.float64)
            xs.append(torch.log(p / (1 - p)))
            t = {"zeros": torch.zeros(rows, cols), "ones": torch.ones(rows, cols),
                 "binary": torch.randint(0, 2, (rows, cols), generator=g).float()}[kind]
            ts.append(t.double())
    return torch.cat(xs).to(dtype), torch.cat(ts).to(dtype)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=short)
@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("alpha", [-1.0, 0.0, 0.58, 1.0])
def test_torchvision_focal_over_bce_is_the_modulating_factor(alpha, gamma, dtype, seed):
    x, t = diverse_pair(seed, dtype)
    focal = ce.sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma, reduction="none")
    assert focal.dtype == dtype and focal.shape == x.shape
    x64, t64 = x.double(), t.double()
    bce = F.binary_cross_entropy_with_logits(x64, t64, reduction="none")
    tol = HALF_TOL[dtype]
    assert (focal.double() <= bce * (1 + tol)).all()  # focal <= bce, to the ratio's tolerance
    p = torch.sigmoid(x64)
    p_t = p * t64 + (1 - p) * (1 - t64)
    factor = (1 - p_t) ** gamma
    if alpha >= 0:
        factor = factor * (alpha * t64 + (1 - alpha) * (1 - t64))
    torch.testing.assert_close(focal.double() / bce, factor, rtol=tol, atol=tol)


@pytest.mark.parametrize("seed", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=short)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_torchvision_focal_at_gamma0_without_alpha_is_bce(reduction, dtype, seed):
    # The reference is torch's BCE in float64 on the same (rounded) inputs:
    # torch's float16 CPU kernel forms sigmoid(x) - t in half precision and
    # loses the gradient's digits (0 instead of -1.48e-4 at x = 8.82, t = 1).
    x, t = diverse_pair(seed, dtype)
    a, b = x.clone().requires_grad_(), x.double().requires_grad_()
    focal = ce.sigmoid_focal_loss(a, t, alpha=-1, gamma=0, reduction=reduction)
    bce = F.binary_cross_entropy_with_logits(b, t.double(), reduction=reduction)
    assert focal.dtype == dtype
    torch.testing.assert_close(focal, bce.to(dtype))
    focal.backward()
    bce.backward()
    torch.testing.assert_close(a.grad, b.grad.to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=short)
@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("alpha", [-1.0, 0.0, 0.58, 1.0])
def test_torchvision_focal_reductions_reduce_the_elementwise_loss(alpha, gamma, dtype):
    x, t = diverse_pair(4, dtype)
    none = ce.sigmoid_focal_loss(x, t, alpha, gamma, reduction="none").double()
    for reduction, expected in (("mean", none.mean()), ("sum", none.sum())):
        got = ce.sigmoid_focal_loss(x, t, alpha, gamma, reduction=reduction)
        assert got.dtype == dtype and got.shape == ()
        torch.testing.assert_close(got, expected.to(dtype))


def test_torchvision_focal_mean_of_several_batches():
    # the mean over equal-size batches put together is the mean of their means
    pairs = [diverse_pair(seed, torch.float64) for seed in (5, 6, 7)]
    means = [ce.sigmoid_focal_loss(x, t, reduction="mean") for x, t in pairs]
    whole = ce.sigmoid_focal_loss(torch.cat([x for x, _ in pairs]), torch.cat([t for _, t in pairs]), reduction="mean")
    assert mismatch("mean", whole, torch.stack(means).mean(), 1e-12) is None


def test_torchvision_focal_unknown_reduction_is_a_value_error():
    x, t = diverse_pair(0, torch.float32)
    with pytest.raises(ValueError, match="xyz"):
        ce.sigmoid_focal_loss(x, t, 0.25, 2, "xyz")


# --------------------------------------------------------------------------
# 2b. optax optax/losses/_classification_test.py, rewritten
# --------------------------------------------------------------------------

BACKENDS = ["numpy", "torch"]


def to(backend, a):
    return torch.from_numpy(np.asarray(a)) if backend == "torch" else np.asarray(a)


def npy(a):
    return a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


YS = np.array([[10.0, 1.0, -2.0], [1.0, 4.0, 0.2]], dtype=np.float32)
TS = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=np.float32)
SOFTMAX_CE = np.array([9.00013, 3.0696733], dtype=np.float32)
LABELS = np.array([1, 0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_optax_softmax_cross_entropy_golden(backend):
    batched = ce.cross_entropy(to(backend, YS), to(backend, TS), reduction="none")
    np.testing.assert_allclose(npy(batched), SOFTMAX_CE, atol=1e-4)
    single = ce.cross_entropy(to(backend, YS[0]), to(backend, TS[0]), reduction="none")
    assert npy(single).shape == ()
    np.testing.assert_allclose(npy(single), SOFTMAX_CE[0], atol=1e-4)


@pytest.mark.parametrize("labels", ["probabilities", "indices"])
def test_optax_softmax_cross_entropy_gradient(labels):
    target = TS.astype(np.float64) if labels == "probabilities" else LABELS
    assert ce.check_grad(ce.cross_entropy, YS.astype(np.float64), target, reduction="none").max_rel_error < 1e-9


@pytest.mark.parametrize("backend", BACKENDS)
def test_optax_integer_labels_match_one_hot(backend):
    one_hot = np.eye(3, dtype=np.float32)[LABELS]
    for ys, idx, hot in ((YS, LABELS, one_hot), (YS[0], LABELS[0], one_hot[0])):
        a = ce.cross_entropy(to(backend, ys), to(backend, np.asarray(idx)), reduction="none")
        b = ce.cross_entropy(to(backend, ys), to(backend, hot), reduction="none")
        np.testing.assert_allclose(npy(a), npy(b), rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_optax_integer_labels_masked_row_is_zero_with_finite_gradient(backend):
    # optax's where=[True, False]; here the second label is ignore_index
    labels = np.array([1, -100])
    loss, grad = ce.cross_entropy.value_and_grad(to(backend, YS), to(backend, labels), reduction="none")
    full = ce.cross_entropy(to(backend, YS), to(backend, LABELS), reduction="none")
    assert npy(loss)[1] == 0 and npy(loss)[0] == npy(full)[0]
    assert np.isfinite(npy(grad)).all() and not npy(grad)[1].any()


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("labels", ["probabilities", "indices"])
def test_optax_class_axis_is_moveaxis(labels, axis):
    rng = np.random.default_rng(axis)
    shape = (4, 5, 6)
    preds = rng.normal(size=shape)
    if labels == "probabilities":
        target = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
        moved = np.moveaxis(target, axis, -1)
    else:
        target = moved = rng.integers(shape[axis], size=shape[:axis] + shape[axis + 1:])
    x = ce.cross_entropy(preds, target, axis=axis, reduction="none")
    y = ce.cross_entropy(np.moveaxis(preds, axis, -1), moved, axis=-1, reduction="none")
    assert mismatch("loss", x, y, 1e-12) is None


SIGMOID_CASES = [  # (logits, labels, mean loss): optax's golden values
    ([-1e09, -1e-09], [1.0, 0.0], 5e08), ([-1e09, -1e-09], [0.0, 1.0], 0.3465736),
    ([1e09, 1e-09], [1.0, 0.0], 0.3465736), ([1e09, 1e-09], [0.0, 1.0], 5e08),
    ([-1e09, 1e-09], [1.0, 0.0], 5e08), ([-1e09, 1e-09], [0.0, 1.0], 0.3465736),
    ([1e09, -1e-09], [1.0, 0.0], 0.3465736), ([1e09, -1e-09], [0.0, 1.0], 5e08),
    ([0.0, 0.0], [1.0, 0.0], 0.6931472), ([0.0, 0.0], [0.0, 1.0], 0.6931472),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("logits,labels,expected", SIGMOID_CASES, ids=[f"{i}" for i in range(len(SIGMOID_CASES))])
def test_optax_sigmoid_binary_cross_entropy_golden(logits, labels, expected, backend):
    x, t = to(backend, np.array(logits)), to(backend, np.array(labels))
    elementwise = ce.binary_cross_entropy_with_logits(x, t, reduction="none")
    np.testing.assert_allclose(npy(elementwise).mean(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(npy(ce.binary_cross_entropy_with_logits(x, t)), expected, rtol=1e-6, atol=1e-6)


FOCAL_YS = np.array([[2.0, 0.1, -2.0], [0.3, -0.1, 1.2]])
FOCAL_TS = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
LARGE = np.log(np.array([0.9, 0.98, 0.3, 0.99]) / (1 - np.array([0.9, 0.98, 0.3, 0.99])))
SMALL = np.log(np.array([0.1, 0.02, 0.09, 0.15]) / (1 - np.array([0.1, 0.02, 0.09, 0.15])))
ONES = np.ones(4)
# optax's alpha=None (no weighting) is torchvision's, and our, alpha=-1


@pytest.mark.parametrize("backend", BACKENDS)
def test_optax_sigmoid_focal_loss_relations(backend):
    def fl(x, t, **kw):
        return npy(ce.sigmoid_focal_loss(to(backend, x), to(backend, t), **kw))

    def bce(x, t):
        return npy(ce.binary_cross_entropy_with_logits(to(backend, x), to(backend, t), reduction="none"))

    other_x, other_t = np.array([[-1.0, 0.0, 1.0], [2.0, -2.0, 0.5]]), np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    p = 1 / (1 + np.exp(-FOCAL_YS))
    p_t = p * FOCAL_TS + (1 - p) * (1 - FOCAL_TS)
    checks = {
        "gamma 0 is bce": (fl(FOCAL_YS, FOCAL_TS, alpha=-1, gamma=0.0), bce(FOCAL_YS, FOCAL_TS)),
        "gamma 0 is bce, other inputs": (fl(other_x, other_t, alpha=-1, gamma=0.0), bce(other_x, other_t)),
        "scale is (1-p_t)^2": (fl(FOCAL_YS, FOCAL_TS, alpha=-1, gamma=2.0) / bce(FOCAL_YS, FOCAL_TS), (1 - p_t) ** 2),
        "large logits, alpha 0.5": (bce(LARGE, ONES) / fl(LARGE, ONES, alpha=0.5, gamma=2.0),
                                    2.0 / (1 - 1 / (1 + np.exp(-LARGE))) ** 2),
        "small logits keep weight": (bce(SMALL, ONES) / fl(SMALL, ONES, alpha=-1, gamma=2.0),
                                     1.0 / (1 - 1 / (1 + np.exp(-SMALL))) ** 2),
        "alpha 1 keeps positives": (fl(FOCAL_YS, FOCAL_TS, alpha=1.0, gamma=0.0), bce(FOCAL_YS, FOCAL_TS) * FOCAL_TS),
    }
    problems = [mismatch(name, got, want, 1e-10) for name, (got, want) in checks.items()]
    assert not [m for m in problems if m], problems
    ce_loss = bce(FOCAL_YS, FOCAL_TS)
    assert (ce_loss > 0).all()
    assert (fl(FOCAL_YS, FOCAL_TS, alpha=0.0)[FOCAL_TS == 1] == 0).all()  # alpha 0 ignores positives
    assert (fl(FOCAL_YS, FOCAL_TS, alpha=1.0)[FOCAL_TS == 0] == 0).all()  # alpha 1 ignores negatives


@pytest.mark.parametrize("backend", BACKENDS)
def test_optax_sigmoid_focal_extreme_logits_soft_labels_finite(backend):
    x = np.array([100.0, -100.0, 75.0, -75.0, 50.0, -50.0])
    t = np.array([0.9, 0.1, 0.8, 0.2, 1.0, 0.0])
    if backend == "numpy":
        value, grad = ce.sigmoid_focal_loss.value_and_grad(x, t, alpha=-1, gamma=0.5, reduction="sum")
    else:
        xt = torch.tensor(x, requires_grad=True)
        value = ce.sigmoid_focal_loss(xt, torch.tensor(t), alpha=-1, gamma=0.5, reduction="sum")
        (grad,) = torch.autograd.grad(value, xt)
    assert np.isfinite(npy(value)) and np.isfinite(npy(grad)).all(), (value, grad)


LOG_PS = np.array([[-2.9957, -3.5066, -3.9120, -1.2040, -0.6931, -2.3026],
                   [-1.6094, -1.6094, -1.6094, -2.3026, -1.8971, -1.8971]])
QS = np.array([[0.2, 0.2, 0.2, 0.1, 0.15, 0.15], [0.05, 0.03, 0.02, 0.3, 0.5, 0.0]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_optax_kl_divergence_golden(backend):
    kl = ce.kl_div(to(backend, LOG_PS), to(backend, QS), reduction="none")
    np.testing.assert_allclose(npy(kl).sum(-1), [0.8875577, 0.7592807], atol=1e-4)
    np.testing.assert_allclose(npy(ce.kl_divergence(to(backend, QS), to(backend, np.exp(LOG_PS)))),
                               [0.8875577, 0.7592807], atol=1e-4)
    log_qs = LOG_PS[::-1].copy()  # optax's log targets: the two rows swapped
    kl_log = ce.kl_div(to(backend, LOG_PS), to(backend, log_qs), reduction="none", log_target=True)
    np.testing.assert_allclose(npy(kl_log).sum(-1), [0.8875625, 0.7187435584901326], atol=1e-4)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_optax_kl_divergence_axis_is_moveaxis(axis):
    rng = np.random.default_rng(10 + axis)
    shape = (4, 5, 6)
    q = np.exp(rng.normal(size=shape))
    q /= q.sum(axis=axis, keepdims=True)
    p = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    x = ce.kl_divergence(p, q, axis=axis)
    y = ce.kl_divergence(np.moveaxis(p, axis, -1), np.moveaxis(q, axis, -1), axis=-1)
    assert mismatch("kl", x, y, 1e-12) is None
