"""The transforms of PyTorch on every loss: the registry's float64 cases
through double backward (Hessians, ``gradgradcheck``), ``torch.func``
(``grad``, ``vjp``, ``jacrev``, ``jacfwd``, ``jvp``, per-sample ``vmap``) and
forward-mode AD, each against the same transform of PyTorch's own functions
(``crossentropy.cases.transforms``; a sample of the cases by default, all of
them with CROSSENTROPY_SLOW=1); and ``torch.compile(fullgraph=True)`` of every
public loss, forward and backward, with no graph break and no warning."""

import warnings

import pytest
import torch

import crossentropy as ce
from crossentropy.cases import CASES, transforms

JOBS = [(case, t) for case in CASES for t in transforms.TRANSFORMS if transforms.accepts(case, t)]
# every fifth case of each loss and transform, the first included
SAMPLE = [job for fn in dict.fromkeys(c.fn for c in CASES) for t in transforms.TRANSFORMS
          for job in [j for j in JOBS if j[0].fn == fn and j[1] == t][::5]]


def _run(case, transform):
    result = transforms.check(case, transform)
    assert result.ok, str(result)
    return result


@pytest.mark.parametrize("case,transform", SAMPLE, ids=lambda v: v if isinstance(v, str) else repr(v))
def test_case_under_transform(case, transform):
    _run(case, transform)


@pytest.mark.slow
def test_every_case_under_every_transform():
    """Every case, every transform (CROSSENTROPY_SLOW=1; about two minutes)."""
    failed = [(c.id, t, str(r)) for c, t in JOBS if not (r := transforms.check(c, t)).ok]
    assert not failed, failed[:5]


def test_the_sample_covers_every_loss_and_transform():
    applied = {(c.fn, t) for c, t in SAMPLE}
    for fn in {c.fn for c in CASES}:
        for t in ("hessian", "gradgradcheck", "grad", "jacrev", "jacfwd", "jvp", "forward_ad"):
            assert (fn, t) in applied, (fn, t)
    assert {t for _, t in SAMPLE} == set(transforms.TRANSFORMS)


def test_a_wrong_transform_result_fails():
    """The comparison can fail: a loss whose second derivative is off."""
    case = next(c for c in CASES if c.fn == "binary_cross_entropy_with_logits" and transforms.accepts(c, "hessian"))

    class Off:
        id, tags, make, reference = case.id, case.tags, case.make, case.reference

        @staticmethod
        def function(x, *args, **kwargs):
            return ce.binary_cross_entropy_with_logits(x, *args, **kwargs) + 1e-6 * (x**3).sum()

    assert not transforms.check(Off, "hessian").ok
    assert transforms.check(case, "hessian").ok


g = torch.Generator().manual_seed(0)
X = torch.randn(6, 5, generator=g)
Y = torch.randint(0, 5, (6,), generator=g)
P = torch.softmax(torch.randn(6, 5, generator=g), -1)
T = torch.rand(6, 5, generator=g)
CW = torch.rand(5, generator=g)
LW = torch.randn(5, 4, generator=g)
H = torch.randn(6, 4, generator=g)

COMPILED = {  # every public loss with its options, as a function of the logits
    "cross_entropy, smoothing, z-loss, soft cap": lambda x: ce.cross_entropy(x, Y, label_smoothing=0.1, z_loss=1e-3,
                                                                             softcap=10.0),
    "cross_entropy, weight, ignore_index": lambda x: ce.cross_entropy(x, Y, weight=CW, ignore_index=2),
    "cross_entropy, probabilities": lambda x: ce.cross_entropy(x, P, label_smoothing=0.2),
    "cross_entropy, none": lambda x: ce.cross_entropy(x, Y, reduction="none").sum(),
    "cross_entropy_with_stats": lambda x: ce.cross_entropy_with_stats(x, Y)[0],
    "nll_loss": lambda x: ce.nll_loss(torch.log_softmax(x, -1), Y, weight=CW),
    "focal_loss": lambda x: ce.focal_loss(x, Y, gamma=2.0),
    "binary_cross_entropy": lambda x: ce.binary_cross_entropy(torch.sigmoid(x), T),
    "binary_cross_entropy_with_logits, pos_weight": lambda x: ce.binary_cross_entropy_with_logits(
        x, T, pos_weight=torch.full((5,), 2.0)),
    "sigmoid_focal_loss": lambda x: ce.sigmoid_focal_loss(x, T, reduction="mean"),
    "entropy": lambda x: ce.entropy(torch.softmax(x, -1)).sum(),
    "kl_div": lambda x: ce.kl_div(torch.log_softmax(x, -1), P, reduction="batchmean"),
    "kl_divergence": lambda x: ce.kl_divergence(P, torch.softmax(x, -1)).sum(),
    "js_divergence": lambda x: ce.js_divergence(P, torch.softmax(x, -1)).sum(),
    "linear_cross_entropy": lambda x: ce.linear_cross_entropy(H + x[:, :4], LW, Y),
}


def _errors_but_torchs_own():
    """Warnings as errors, but for two that PyTorch itself raises whatever the
    function: Dynamo instantiating any ``autograd.Function`` (a
    DeprecationWarning from torch/autograd/function.py) and the first
    ``jacfwd`` or compile of a process reaching ``torch.jit.script``."""
    warnings.simplefilter("error")
    warnings.filterwarnings("ignore", message=".*should not be instantiated", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="`torch.jit.script", category=DeprecationWarning)


@pytest.fixture(scope="module")
def compiler_warmed_up():
    """torch.compile's first use in a process warns from PyTorch's own
    internals (``torch.jit.script_method`` is deprecated): get that over with
    on a function of PyTorch's, so that what remains is ours."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.compile(lambda x: torch.nn.functional.cross_entropy(x, Y), fullgraph=True)(X.clone().requires_grad_())


# Inductor (the default backend) for one loss of each kernel family; the others
# under "aot_eager": the same Dynamo graph and AOT autograd trace of our code,
# without inductor's C++ build of it (seconds a loss, half of this file's time).
INDUCTOR = {"cross_entropy, smoothing, z-loss, soft cap", "focal_loss", "binary_cross_entropy_with_logits, pos_weight",
            "linear_cross_entropy", "kl_div"}


@pytest.mark.parametrize("name", COMPILED)
def test_compiled_with_fullgraph_agrees_with_eager_and_warns_nothing(name, compiler_warmed_up):
    f = COMPILED[name]
    torch._dynamo.reset()
    x = X.clone().requires_grad_(True)
    with warnings.catch_warnings():
        _errors_but_torchs_own()
        value = torch.compile(f, fullgraph=True, backend="inductor" if name in INDUCTOR else "aot_eager")(x)
        value.backward()
    x2 = X.clone().requires_grad_(True)
    want = f(x2)
    want.backward()
    torch.testing.assert_close(value, want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-6, atol=1e-7)


def test_inductor_names_are_compiled_cases():
    assert INDUCTOR <= set(COMPILED)


def test_torch_func_runs_without_warnings():
    x = X.double()
    with warnings.catch_warnings():
        _errors_but_torchs_own()
        torch.func.vmap(torch.func.grad(lambda r, t: ce.cross_entropy(r[None], t[None])))(x, Y)
        torch.func.jacfwd(lambda z: ce.binary_cross_entropy_with_logits(z, T.double()))(x)
        torch.func.hessian(lambda z: ce.cross_entropy(z, Y))(x)
