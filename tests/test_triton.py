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
JOBS = [(c, d) for c in CASES for d in paths.DTYPES if paths.accepts(c, "triton", d)]
# Every 17th job (17 is prime to the 4 dtypes, so each dtype and every loss is
# sampled): about 190 runs, some 20 s under the interpreter on 2 cores.
SAMPLE = set(range(0, len(JOBS), 17))
PARAMS = [pytest.param(c, d, marks=() if i in SAMPLE else pytest.mark.slow) for i, (c, d) in enumerate(JOBS)]


@pytest.mark.parametrize("case,dtype", PARAMS, ids=lambda v: v if isinstance(v, str) else repr(v))
def test_case(case, dtype):
    result = paths.check(case, "triton", dtype)
    assert result.ok, str(result)


def test_the_sample_covers_every_loss_and_dtype():
    sampled = [JOBS[i] for i in SAMPLE]
    assert {c.fn for c, _ in sampled} == set(paths.TRITON_KERNELS)
    assert {d for _, d in sampled} == set(paths.DTYPES)
    assert {"extreme", "probs", "index", "tiny"} <= set().union(*(c.tags for c, _ in sampled))


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


def test_cpu_tensors_are_untouched_unless_forced(monkeypatch):
    calls = []
    monkeypatch.setattr(_triton, "load", lambda stem: calls.append(stem))
    x = torch.randn(3, 4, requires_grad=True)
    ce.cross_entropy(x, torch.tensor([0, 1, 2])).backward()
    ce.binary_cross_entropy_with_logits(x, torch.rand(3, 4)).backward()
    ce.sigmoid_focal_loss(x, torch.rand(3, 4)).sum().backward()
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


def test_every_kernel_compiles_for_sm90():
    """Each kernel, in a covering set of its specialisations, compiled to a
    cubin for sm_90 (H100/H200) by Triton's own compiler, with no GPU: in a
    process without the interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    script = os.path.join(os.path.dirname(__file__), "_triton_compile.py")
    out = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "compiled" in out.stdout
