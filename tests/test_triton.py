"""The Triton kernels (``crossentropy._triton``) against the core: every
registry case they accept (a fixed sample of them unless CROSSENTROPY_SLOW=1),
odd sizes (vocabularies that are not a multiple of the tile, one row, every
row ignored), ``inplace_backward``, the stats, and the dispatch. Where no GPU
is present they run on CPU tensors under Triton's interpreter (the root
``conftest.py`` sets ``TRITON_INTERPRET=1`` before triton can be imported);
with a GPU, on CUDA tensors, compiled. A last test compiles every kernel for
an H100/H200 (sm_90) without a GPU, which the interpreter, lenient about
types, would not catch."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import crossentropy as ce
from crossentropy import _triton
from crossentropy.cases import CASES, paths

pytestmark = pytest.mark.skipif(paths.triton_device() is None,
                                reason="needs triton (and a GPU, or TRITON_INTERPRET=1 before triton is imported)")

DEVICE = paths.triton_device() or "cpu"
PATHS = ("triton", "triton-linear")
JOBS = [(c, p, d) for c in CASES for p in PATHS for d in paths.DTYPES if paths.accepts(c, p, d)]
# Every 23rd job (23 is prime to the 2 paths and 4 dtypes, so every loss,
# path and dtype is sampled): about 250 runs, some 25 s under the interpreter
# on 2 cores; all 5680 with CROSSENTROPY_SLOW=1.
SAMPLE = set(range(0, len(JOBS), 23))
PARAMS = [pytest.param(*job, marks=() if i in SAMPLE else pytest.mark.slow) for i, job in enumerate(JOBS)]


@pytest.mark.parametrize("case,path,dtype", PARAMS, ids=lambda v: v if isinstance(v, str) else repr(v))
def test_case(case, path, dtype):
    result = paths.check(case, path, dtype)
    assert result.ok, str(result)


def test_the_sample_covers_every_loss_path_and_dtype():
    sampled = [JOBS[i] for i in SAMPLE]
    assert {c.fn for c, p, _ in sampled if p == "triton"} == set(paths.TRITON_KERNELS)
    assert {p for _, p, _ in sampled} == set(PATHS)
    assert {d for _, _, d in sampled} == set(paths.DTYPES)
    assert {"extreme", "probs", "index", "tiny"} <= set().union(*(c.tags for c, _, _ in sampled))


def _core(x, y, **kw):
    """Value and gradient from the array-API core in float64 (NumPy)."""
    v, g = ce.cross_entropy.value_and_grad(x.double().cpu().numpy(), y.cpu().numpy(), **kw)
    return np.asarray(v), g


def _kernel(x, y, block=None, **kw):
    x = x.detach().clone().requires_grad_(True)
    with _triton.forced(block=block):
        value = ce.cross_entropy(x, y, **kw)
    (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach().double().cpu().numpy(), grad.double().cpu().numpy()


def _err(a, e):
    return paths.error(a, e)


@pytest.mark.parametrize("N,V,block", [(33, 70, None), (33, 70, 16), (1, 70, 16), (5, 1, None), (7, 33, 32)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_odd_sizes(N, V, block, dtype):
    """Vocabularies that are not a multiple of the tile (the last tile
    masked), a single row, a single class; every option at once."""
    g = torch.Generator().manual_seed(N * 1000 + V)
    x = (3 * torch.randn(N, V, generator=g)).to(paths.TORCH_DTYPES[dtype])
    y = torch.randint(0, V, (N,), generator=g)
    y[::4] = -100
    w = torch.rand(V, generator=g, dtype=torch.float64) + 0.5
    kw = dict(label_smoothing=0.1, z_loss=1e-3, softcap=20.0, reduction="sum")
    xd = x.to(DEVICE)
    value, grad = _kernel(xd, y.to(DEVICE), block, weight=w.float().to(DEVICE), **kw)
    ev, eg = _core(x, y, weight=w.float().double().numpy(), **kw)
    tol = paths.tolerance(dtype)
    assert _err(value, ev) <= tol and _err(grad, eg) <= tol


def test_all_ignored_and_probability_targets():
    """Every row ignored: a mean of 0 with a zero gradient (not NaN); soft
    targets with class weights over several tiles."""
    x = torch.randn(6, 37, dtype=torch.float64)
    value, grad = _kernel(x.to(DEVICE), torch.full((6,), -100, device=DEVICE), 8, z_loss=1e-2)
    assert value == 0 and not grad.any()
    p = torch.softmax(torch.randn(6, 37, dtype=torch.float64), 1)
    w = torch.rand(37, dtype=torch.float64) + 0.5
    value, grad = _kernel(x.to(DEVICE), p.to(DEVICE), 8, label_smoothing=0.2, weight=w.to(DEVICE))
    ev, eg = _core(x, p, label_smoothing=0.2, weight=w.numpy())
    assert _err(value, ev) <= 1e-10 and _err(grad, eg) <= 1e-10


def test_inplace_backward_and_stats():
    """``inplace_backward`` writes the same gradient into the logits' buffer;
    the stats are the core's; ``num_items_in_batch`` as a 0-d tensor."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 21, generator=g).to(DEVICE)
    y = torch.randint(0, 21, (9,), generator=g).to(DEVICE)
    y[2] = -100
    n = torch.tensor(12.0, device=DEVICE)
    with _triton.forced(block=8):
        a = x.clone().requires_grad_(True)
        loss, stats = ce.cross_entropy_with_stats(a, y, z_loss=1e-2, num_items_in_batch=n)
        (ga,) = torch.autograd.grad(loss, a)
        buf = x.clone()
        b = buf.clone().requires_grad_(True)  # a leaf whose buffer the kernel may overwrite
        lb = ce.cross_entropy(b, y, z_loss=1e-2, num_items_in_batch=n, inplace_backward=True)
        (gb,) = torch.autograd.grad(lb, b)
    ref_loss, ref_stats = ce.cross_entropy_with_stats(x.cpu().double(), y.cpu(), z_loss=1e-2, num_items_in_batch=12)
    tol = paths.tolerance("float32")
    assert _err(loss.detach().double().cpu(), ref_loss) <= tol and _err(lb.detach().double().cpu(), ref_loss) <= tol
    for got, want in zip(stats, ref_stats):
        assert _err(got.double().cpu(), want) <= tol
    assert torch.equal(ga, gb) and gb.data_ptr() == b.data_ptr()  # the gradient lives in the logits' buffer


LINEAR_SHAPES = [  # (rows, H, V): odd sizes, H and V not multiples of the 16-wide tiles; one row
    (33, 20, 70), (1, 32, 33), (17, 16, 16)]


@pytest.mark.parametrize("N,H,V", LINEAR_SHAPES)
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_against_the_core(N, H, V, kind, reduction):
    """Value and the gradients of input, weight and bias, in float64 and
    float32, with a bias, ``shift`` (index targets), every option, against
    the torch kernel in float64 (which the registry holds to the core);
    ``"none"`` with a per-row grad_output."""
    g = torch.Generator().manual_seed(N + H + V)
    T = 3 if kind == "index" else None
    shape = (N, T, H) if T else (N, H)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, paths.tolerance("float32"))):
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        W = torch.randn(V, H, generator=g, dtype=torch.float64) / 3
        b = torch.randn(V, generator=g, dtype=torch.float64)
        if kind == "index":
            y = torch.randint(0, V, shape[:-1], generator=g)
            y.view(-1)[::5] = -100
        else:
            y = torch.softmax(torch.randn(N, V, generator=g, dtype=torch.float64), 1)
        w = torch.rand(V, generator=g, dtype=torch.float64) + 0.5
        kw = dict(weight=w, reduction=reduction, label_smoothing=0.1, z_loss=1e-3, softcap=15.0, shift=T is not None)
        ref = [a.clone().requires_grad_(True) for a in (x, W, b)]  # the torch kernel's chunks, float64
        ref_v = ce.linear_cross_entropy(ref[0], ref[1], y, linear_bias=ref[2], **kw)
        go = torch.rand(ref_v.shape, generator=g, dtype=torch.float64) + 0.5 if reduction == "none" else None
        ref_g = [t.numpy() for t in torch.autograd.grad(ref_v, ref, go)]
        ref_v = ref_v.detach().numpy()
        args = [a.to(dtype).to(DEVICE).requires_grad_(True) for a in (x, W, b)]
        kwd = dict(kw, weight=w.to(dtype).to(DEVICE))
        yd = y.to(dtype).to(DEVICE) if kind == "probs" else y.to(DEVICE)
        with _triton.forced(block=16):
            value = ce.linear_cross_entropy(args[0], args[1], yd, linear_bias=args[2], **kwd)
        grads = torch.autograd.grad(value, args, None if go is None else go.to(dtype).to(DEVICE))
        assert _err(value.detach().double().cpu().numpy(), ref_v) <= tol
        for got, want in zip(grads, ref_g):
            assert _err(got.double().cpu().numpy(), want) <= tol


def test_linear_takes_the_triton_kernels_and_bfloat16(monkeypatch):
    """bfloat16 input and weight (the products' operands), against float64;
    the dispatch reaches the Triton linear kernels."""
    calls = []
    load = _triton.load
    monkeypatch.setattr(_triton, "load", lambda stem: calls.append(stem) or load(stem))
    g = torch.Generator().manual_seed(7)
    x = torch.randn(21, 24, generator=g).bfloat16()
    W = (torch.randn(45, 24, generator=g) / 3).bfloat16()
    y = torch.randint(0, 45, (21,), generator=g)
    ref_v, ref_g = ce.linear_cross_entropy.value_and_grad(x.double().numpy(), W.double().numpy(), y.numpy())
    a, B = x.to(DEVICE).requires_grad_(True), W.to(DEVICE).requires_grad_(True)
    with _triton.forced(block=16):
        value = ce.linear_cross_entropy(a, B, y.to(DEVICE))
    ga, gB = torch.autograd.grad(value, (a, B))
    assert "linear" in calls
    # one rounding of the result, one of each logit-gradient entry before the products
    tol = paths.tolerance("bfloat16") + 2.0**-8
    assert _err(value.detach().double().cpu().numpy(), ref_v) <= tol
    assert _err(ga.double().cpu().numpy(), ref_g.input) <= tol and _err(gB.double().cpu().numpy(),
                                                                         ref_g.linear_weight) <= tol


def test_cpu_tensors_are_untouched_unless_forced(monkeypatch):
    calls = []
    monkeypatch.setattr(_triton, "load", lambda stem: calls.append(stem))
    x = torch.randn(3, 4, requires_grad=True)
    ce.cross_entropy(x, torch.tensor([0, 1, 2])).backward()
    ce.binary_cross_entropy_with_logits(x, torch.rand(3, 4)).backward()
    ce.sigmoid_focal_loss(x, torch.rand(3, 4)).sum().backward()
    ce.linear_cross_entropy(x, torch.randn(5, 4), torch.tensor([0, 1, 2])).backward()
    assert calls == []
    assert not _triton.wanted(torch.empty(1))


def test_forced_runs_the_triton_kernels(monkeypatch):
    calls = []
    load = _triton.load
    monkeypatch.setattr(_triton, "load", lambda stem: calls.append(stem) or load(stem))
    x = torch.randn(3, 4, device=DEVICE, requires_grad=True)
    with _triton.forced():
        ce.cross_entropy(x, torch.tensor([0, 1, 2], device=DEVICE)).backward()
        ce.binary_cross_entropy_with_logits(x, torch.rand(3, 4, device=DEVICE)).backward()
        ce.sigmoid_focal_loss(x, torch.rand(3, 4, device=DEVICE)).sum().backward()
    assert calls == ["cross_entropy", "binary", "binary"]


@pytest.mark.skipif(DEVICE != "cpu", reason="the interpreter's own checks")
def test_bad_binary_targets_are_refused_on_cpu():
    with _triton.forced(), pytest.raises(ValueError, match="target"):
        ce.binary_cross_entropy_with_logits(torch.randn(4), torch.tensor([0.0, 1.5, 0.0, 1.0]))


def test_cuda_would_take_the_kernels_only_when_compiled():
    class Fake:
        class device:
            type = "cuda"

    assert _triton.wanted(Fake()) == (_triton.available() and not _triton.interpreting())


@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_every_kernel_compiles_for_sm90(full):
    """Each kernel, in a covering set of its specialisations, compiled to a
    cubin for sm_90 (H100/H200) by Triton's own compiler, with no GPU: in a
    process without the interpreter. (Triton caches what it compiled: a
    second run takes seconds.)"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    script = os.path.join(os.path.dirname(__file__), "_triton_compile.py")
    out = subprocess.run([sys.executable, script, *(["--all"] if full else [])], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "compiled" in out.stdout


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy_with_logits", "sigmoid_focal_loss",
                                  "linear_cross_entropy"])
def test_double_backward_is_the_cores(loss):
    """A backward with ``create_graph=True`` through the Triton kernels
    differentiates the core's operations (``reference=``), as the torch
    kernels' do: the Hessian-vector product matches autograd through the core."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(5, 7, generator=g, dtype=torch.float64)
    v = torch.randn(5, 7, generator=g, dtype=torch.float64)
    W = torch.randn(9, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, 9 if loss == "linear_cross_entropy" else 7, (5,), generator=g)
    t = torch.rand(5, 7, generator=g, dtype=torch.float64)
    f = {"cross_entropy": lambda a: ce.cross_entropy(a, y, label_smoothing=0.1, z_loss=1e-2),
         "binary_cross_entropy_with_logits": lambda a: ce.binary_cross_entropy_with_logits(a, t),
         "sigmoid_focal_loss": lambda a: ce.sigmoid_focal_loss(a, t, reduction="sum"),
         "linear_cross_entropy": lambda a: ce.linear_cross_entropy(a, W.to(a.device), y.to(a.device))}[loss]

    def hvp(device, use_triton):
        a = x.to(device).requires_grad_(True)
        if use_triton:
            with _triton.forced(block=16):
                value = f(a)
        else:
            value = f(a)
        (grad,) = torch.autograd.grad(value, a, create_graph=True)
        (h,) = torch.autograd.grad((grad * v.to(device)).sum(), a)
        return h.cpu()

    assert torch.allclose(hvp(DEVICE, True), hvp("cpu", False), rtol=1e-10, atol=1e-12)


def test_strided_views():
    """Logits, targets and class axis in strided layouts: a (N, C, d) input
    (class axis inside), every other row of a larger tensor, every other target."""
    g = torch.Generator().manual_seed(5)
    big = torch.randn(14, 19, generator=g, dtype=torch.float64)
    x, yb = big[::2], torch.randint(0, 19, (14,), generator=g)
    y = yb[::2]
    value, grad = _kernel(x.to(DEVICE), y.to(DEVICE), 8, label_smoothing=0.1)
    ev, eg = _core(x, y, label_smoothing=0.1)
    assert _err(value, ev) <= 1e-10 and _err(grad, eg) <= 1e-10
    x3 = torch.randn(3, 11, 4, generator=g, dtype=torch.float64)
    y3 = torch.randint(0, 11, (3, 4), generator=g)
    value, grad = _kernel(x3.to(DEVICE), y3.to(DEVICE), 8, reduction="sum")
    ev, eg = _core(x3, y3, reduction="sum")
    assert _err(value, ev) <= 1e-10 and _err(grad, eg) <= 1e-10
