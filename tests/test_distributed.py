"""Vocab-parallel cross-entropy on spawned gloo process groups (CPU), world
sizes 1, 2 and 3, even and uneven shards, against single-process results."""

import os

import pytest
import torch.multiprocessing as mp

import _dist_registry
import _dist_worker
from crossentropy.cases import CASES, paths, transforms, vocab_parallel


def _spawn(target, world, tmp_path, *args):
    mp.spawn(target, args=(world, str(tmp_path / "init"), str(tmp_path), *args), nprocs=world, join=True)
    return {rank: (tmp_path / f"rank{rank}.txt").read_text() for rank in range(world)}


def _jobs(every, always=("extreme",)):
    """(case, dtype) pairs of the registry that vocab-parallel accepts: every
    ``every``-th case in each dtype, and every case with a tag in ``always``."""
    jobs = []
    cases = [c for c in CASES if paths.accepts(c, "vocab-parallel", "float64")]
    for i, case in enumerate(cases):
        for k, dtype in enumerate(paths.DTYPES):
            if set(always) & set(case.tags) or (i + k) % every == 0:
                jobs.append((case.id, dtype))
    return jobs


def _transform_jobs(every):
    """(case, transform) pairs: every ``every``-th of the cases that the
    transform accepts (``crossentropy.cases.transforms.accepts``)."""
    cases = [c for c in CASES if paths.accepts(c, "vocab-parallel", "float64")]
    return [(case.id, t) for i, case in enumerate(cases) for k, t in enumerate(vocab_parallel.TRANSFORMS)
            if (i + k) % every == 0 and transforms.accepts(case, "vmap" if t == "vmap" else "grad")]


@pytest.mark.parametrize("world", [2, 3])
def test_registry_cases_under_transforms_through_both_vocab_parallel_functions(world, tmp_path):
    """Double backward (Hessian-vector products with a tangent over every
    shard), torch.func's grad, vjp, jacrev, jvp, forward-mode AD and
    per-sample vmap(grad), each against the single-process reference: one
    (case, transform) pair in 12 (every pair with CROSSENTROPY_SLOW=1)."""
    every = 1 if os.environ.get("CROSSENTROPY_SLOW") else 12
    results = _spawn(_dist_registry.run, world, tmp_path, _transform_jobs(every), False)
    for rank, msg in results.items():
        assert msg == "ok", f"rank {rank}:\n{msg}"


@pytest.mark.parametrize("world", [1, 2])
def test_registry_cases_through_both_vocab_parallel_functions(world, tmp_path):
    """A bounded sample (every 12th case in each dtype, and every extreme
    case); and, on 2 ranks, every way of calling the ranks differently."""
    results = _spawn(_dist_registry.run, world, tmp_path, _jobs(12), world == 2)
    for rank, msg in results.items():
        assert msg == "ok", f"rank {rank}:\n{msg}"


@pytest.mark.slow
@pytest.mark.parametrize("world", [1, 2])
def test_the_whole_registry_through_both_vocab_parallel_functions(world, tmp_path):
    """Every case in every dtype (CROSSENTROPY_SLOW=1; a few minutes)."""
    results = _spawn(_dist_registry.run, world, tmp_path, _jobs(1), False)
    for rank, msg in results.items():
        assert msg == "ok", f"rank {rank}:\n{msg}"


INTERPRETED = pytest.mark.skipif(paths.triton_device() != "cpu", reason="the Triton kernels on CPU tensors need "
                                 "triton and TRITON_INTERPRET=1 (a GPU runs them in benchmarks/gpu_suite.py)")


@INTERPRETED
def test_registry_cases_through_both_vocab_parallel_functions_on_the_triton_kernels(tmp_path):
    """The Triton kernels forced on both ranks of a gloo group (what CUDA
    tensors take), on a sample of the registry: every 64th case in each dtype,
    and every case with non-finite logits or no rows (about 125 runs, most
    tiny, some 15 s under the interpreter; every case with CROSSENTROPY_SLOW=1)."""
    every = 1 if os.environ.get("CROSSENTROPY_SLOW") else 64
    jobs = [(case, dtype, "triton") for case, dtype in _jobs(every, always=("nonfinite", "empty"))]
    results = _spawn(_dist_registry.run, 2, tmp_path, jobs, False)
    for rank, msg in results.items():
        assert msg == "ok", f"rank {rank}:\n{msg}"


@pytest.mark.skipif(paths.triton_device() is None, reason="needs triton (and a GPU, or TRITON_INTERPRET=1)")
@pytest.mark.parametrize("world", [1, 2])
def test_vocab_parallel_on_the_triton_kernels_at_odd_sizes(world, tmp_path):
    """Uneven shards that span tiles and splits, one row, a rank with no
    target, every row ignored, shift and num_items_in_batch, every option,
    float64 and float32, double backward (``_dist_worker.check_triton``);
    world size 1 is the real process group of one that the GPU suite runs.
    With a GPU, on CUDA tensors, the ranks sharing it through gloo."""
    mp.spawn(_dist_worker.run_triton, args=(world, str(tmp_path / "init"), str(tmp_path), paths.triton_device()),
             nprocs=world, join=True)
    for rank in range(world):
        msg = (tmp_path / f"rank{rank}.txt").read_text()
        assert msg == "ok", f"rank {rank}:\n{msg}"


@pytest.mark.parametrize("world", [1, 2, 3])
def test_vocab_parallel_matches_single_process(world, tmp_path):
    mp.spawn(_dist_worker.run, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    for rank in range(world):
        assert (tmp_path / f"rank{rank}.txt").read_text() == "ok"


def test_torchrun_example_prints_the_one_process_loss():
    import pathlib
    import re
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(root / "examples" / "vocab_parallel.py")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    # The two ranks print concurrently; their lines may interleave.
    number = r"(-?\d+\.\d{12})"
    reports = re.findall(rf"rank (\d)/2: vocab-parallel loss {number}, linear {number}, one process {number}",
                         out.stdout)
    assert sorted(r[0] for r in reports) == ["0", "1"], out.stdout
    assert len({n for r in reports for n in r[1:]}) == 1, out.stdout
