"""JAX as a first-class array library: every loss on ``jax.numpy`` arrays,
eagerly and under ``jax.jit``, in 32-bit mode and with x64, against the
registry's float64 PyTorch references (a sample by default, every case with
CROSSENTROPY_SLOW=1); ``jax.grad``, ``jax.value_and_grad`` and ``jax.vmap``
against optax's functions; the gradient JAX uses is this library's analytic
one (a ``custom_vjp``); no warnings; and the data checks skipped under
``jit``, as for traced torch tensors."""

import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402

import crossentropy as ce  # noqa: E402
from crossentropy.cases import CASES, jax_path  # noqa: E402

# in float32 and float64, one case in 25 of each loss (the first included) under jit, and the first
# eagerly (eager JAX compiles every operation for every new shape: seconds a case)
SAMPLE = [(c, d, jit) for fn in dict.fromkeys(c.fn for c in CASES) for jit, every in ((True, 25), (False, 10**6))
          for c in [c for c in CASES if c.fn == fn][::every] for d in jax_path.DTYPES]


def _ids(v):
    return repr(v) if not isinstance(v, bool) else ("jit" if v else "eager")


@pytest.mark.parametrize("case,dtype,jit", SAMPLE, ids=_ids)
def test_case_on_jax(case, dtype, jit):
    result = jax_path.check(case, dtype, jit)
    assert result.ok, str(result)


@pytest.mark.slow
def test_every_case_on_jax():
    """Every case, both dtypes, eager and jitted (CROSSENTROPY_SLOW=1; several minutes)."""
    failed = [(c.id, d, jit, str(r)) for c in CASES for d in jax_path.DTYPES for jit in (False, True)
              if not (r := jax_path.check(c, d, jit)).ok]
    assert not failed, failed[:5]


rng = np.random.default_rng(0)
LOGITS = jnp.asarray(rng.normal(scale=3.0, size=(6, 5)), dtype=jnp.float32)
LABELS = jnp.asarray(rng.integers(0, 5, size=6))
PROBS = jax.nn.softmax(jnp.asarray(rng.normal(size=(6, 5)), dtype=jnp.float32))
BINARY = jnp.asarray(rng.random(size=(6, 5)), dtype=jnp.float32)

PAIRS = {  # ours (per example, as optax gives it), optax's
    "softmax_cross_entropy_with_integer_labels": (
        lambda x: ce.cross_entropy(x, LABELS, reduction="none"),
        lambda x: optax.softmax_cross_entropy_with_integer_labels(x, LABELS)),
    "softmax_cross_entropy": (
        lambda x: ce.cross_entropy(x, PROBS, reduction="none"),
        lambda x: optax.softmax_cross_entropy(x, PROBS)),
    "safe_softmax_cross_entropy": (  # -inf logits where the target is 0
        lambda x: ce.cross_entropy(x.at[:, 0].set(-jnp.inf), PROBS.at[:, 0].set(0.0), reduction="none"),
        lambda x: optax.safe_softmax_cross_entropy(x.at[:, 0].set(-jnp.inf), PROBS.at[:, 0].set(0.0))),
    "sigmoid_binary_cross_entropy": (
        lambda x: ce.binary_cross_entropy_with_logits(x, BINARY, reduction="none"),
        lambda x: optax.sigmoid_binary_cross_entropy(x, BINARY)),
    "sigmoid_focal_loss": (
        lambda x: ce.sigmoid_focal_loss(x, BINARY, alpha=0.25, gamma=2.0),
        lambda x: optax.sigmoid_focal_loss(x, BINARY, alpha=0.25, gamma=2.0)),
    "kl_divergence": (
        lambda x: ce.kl_div(jax.nn.log_softmax(x), PROBS, reduction="none").sum(-1),
        lambda x: optax.kl_divergence(jax.nn.log_softmax(x), PROBS)),
}


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("transform", ["value", "grad", "value_and_grad", "jit", "vmap"])
def test_against_optax(name, transform):
    ours, theirs = PAIRS[name]
    w = jnp.linspace(0.5, 1.5, 6)

    def total(f):
        return lambda x: jnp.sum(f(x) * (w if f(x).ndim == 1 else w[:, None]))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if transform == "value":
            _close(ours(LOGITS), theirs(LOGITS))
        elif transform == "grad":
            _close(jax.grad(total(ours))(LOGITS), jax.grad(total(theirs))(LOGITS))
        elif transform == "value_and_grad":
            (v1, g1), (v2, g2) = jax.value_and_grad(total(ours))(LOGITS), jax.value_and_grad(total(theirs))(LOGITS)
            _close(v1, v2)
            _close(g1, g2)
        elif transform == "jit":
            _close(jax.jit(jax.grad(total(ours)))(LOGITS), jax.jit(jax.grad(total(theirs)))(LOGITS))
        else:  # per-example gradients
            def per_example(f):
                return jax.vmap(jax.grad(lambda r, i: jnp.sum(f(LOGITS.at[i].set(r))[i])), in_axes=(0, 0))
            idx = jnp.arange(6)
            _close(per_example(ours)(LOGITS, idx), per_example(theirs)(LOGITS, idx))


def test_per_sample_gradients_with_vmap():
    g = jax.vmap(jax.grad(lambda r, t: ce.cross_entropy(r[None], t[None])))(LOGITS, LABELS)
    want = jax.nn.softmax(LOGITS) - jax.nn.one_hot(LABELS, 5)
    _close(g, want)


def test_the_gradient_is_the_analytic_one():
    """jax.grad goes through the custom_vjp around the core, not autodiff of it."""
    assert "custom_vjp_call" in str(jax.make_jaxpr(lambda x: ce.cross_entropy(x, LABELS))(LOGITS))
    grad = jax.grad(lambda x: ce.cross_entropy(x, LABELS, label_smoothing=0.1))(LOGITS)
    want = ce.cross_entropy.value_and_grad(np.asarray(LOGITS), np.asarray(LABELS), label_smoothing=0.1)[1]
    _close(grad, want)  # the same analytic formula (XLA's exp and NumPy's differ by an ulp)
    # a row of -inf but at the target: autodiff through exp(-inf - m) gives NaN there; the analytic Q - P is 0
    x = LOGITS.at[0].set(-jnp.inf).at[0, LABELS[0]].set(1.0)
    g = jax.grad(lambda z: ce.cross_entropy(z, LABELS, reduction="sum"))(x)
    assert bool(jnp.isfinite(g).all())


def test_x64_and_x32_give_their_dtype_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert jax.grad(lambda x: ce.cross_entropy(x, LABELS))(LOGITS).dtype == jnp.float32
        with jax.enable_x64(True):
            x64 = jnp.asarray(np.asarray(LOGITS), dtype=jnp.float64)
            labels = jnp.asarray(np.asarray(LABELS), dtype=jnp.int64)
            assert jax.grad(lambda x: ce.cross_entropy(x, labels))(x64).dtype == jnp.float64


def test_data_checks_run_eagerly_and_are_skipped_under_jit():
    bad = LABELS.at[0].set(7)
    with pytest.raises(IndexError, match="class index 7"):
        ce.cross_entropy(LOGITS, bad)
    jax.jit(ce.cross_entropy)(LOGITS, bad)  # traced: no value to look at, as under torch.compile


def test_mixed_libraries_are_still_refused():
    with pytest.raises(TypeError, match="pass arrays of one library"):
        ce.cross_entropy(LOGITS, np.asarray(LABELS))
