"""Every case of the registry (``crossentropy.cases``) through every local path
that accepts it, in every dtype, against its float64 PyTorch reference:
NumPy ``value_and_grad``, torch autograd through the core, the torch kernel,
and linear cross-entropy with the identity as input. The tolerances and why
are in ``crossentropy.cases.paths``; vocab-parallel runs the same cases in
``test_distributed.py``."""

import pytest

from crossentropy.cases import CASES, paths
from crossentropy.cli.check import LOCAL_PATHS as LOCAL
# Sampled here, to keep the suite inside its time budget; every case runs in
# ``crossentropy check``: torch-chunks and numpy-core (the fallbacks of the
# compiled CPU kernels) one case in four, numpy-columns (the NumPy kernels
# with the class axis first, whose rows are the same row formulas as
# numpy's) and torch-rows (cross-entropy's row kernel, which logits of more
# than 16 classes take) one in two.
EVERY = {"torch-chunks": 4, "numpy-core": 4, "numpy-columns": 2, "torch-rows": 2}
JOBS = [(case, path, dtype) for i, case in enumerate(CASES) for path in LOCAL for dtype in paths.DTYPES
        if paths.accepts(case, path, dtype) and i % EVERY.get(path, 1) == 0]


@pytest.mark.parametrize("case,path,dtype", JOBS, ids=lambda v: v if isinstance(v, str) else repr(v))
def test_case(case, path, dtype):
    result = paths.check(case, path, dtype)
    assert result.ok, str(result)


def test_every_function_and_path_is_covered():
    covered = {(c.fn, p) for c, p, _ in JOBS}
    for fn in {c.fn for c in CASES}:
        assert (fn, "numpy") in covered and (fn, "torch-core") in covered
    for fn in paths.KERNELS:
        assert (fn, "torch-kernel") in covered and (fn, "torch-chunks") in covered
    for fn in paths.NUMPY_KERNELS:
        assert (fn, "numpy-core") in covered and (fn, "numpy-columns") in covered
    assert ("cross_entropy", "linear") in covered and ("cross_entropy", "torch-rows") in covered
    assert {d for _, _, d in JOBS} == set(paths.DTYPES)
    assert {"extreme", "tiny", "empty", "ignored", "nonfinite"} <= set().union(*(c.tags for c in CASES))


def test_a_wrong_result_fails():
    """The comparison itself can fail: a value off by one part in 1e9, an
    infinite entry where the reference is finite, a float32 tiny loss 16 ulps
    off, and a result of the wrong dtype."""
    import numpy as np

    case = next(c for c in CASES if c.fn == "cross_entropy" and "extreme" not in c.tags)
    exp = paths.expected(case, "float64")
    assert paths.compare(case, "float64", exp.value, exp.grad).ok
    assert not paths.compare(case, "float64", exp.value * (1 + 1e-9) + 1e-9, exp.grad).ok
    assert not paths.compare(case, "float64", exp.value, np.full_like(exp.grad, np.inf)).ok
    assert not paths.compare(case, "float64", exp.value, exp.grad, dtypes_ok=False).ok
    tiny = next(c for c in CASES if "tiny" in c.tags and c.make()[1]["reduction"] == "none")
    exp = paths.expected(tiny, "float32")
    assert paths.compare(tiny, "float32", exp.value, exp.grad).ok
    off = exp.value + 16 * paths.ulp(exp.value, "float32")
    assert not paths.compare(tiny, "float32", off, exp.grad).ok
