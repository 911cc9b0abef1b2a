"""Worker for test_distributed.py: one rank of a gloo group running registry
cases through both vocab-parallel functions, and the scenarios in which the
ranks are called differently (each must raise the same ValueError on every
rank, and leave the group usable for the next call)."""

import traceback

import pytest
import torch

from _dist_worker import in_group

from crossentropy.cases import CASES
from crossentropy.cases.vocab_parallel import TRANSFORMS, run_vocab_parallel, run_vocab_parallel_transform
from crossentropy.distributed import vocab_parallel_cross_entropy as vp
from crossentropy.distributed import vocab_parallel_linear_cross_entropy as vpl

_BY_ID = {c.id: c for c in CASES}


def registry(rank, world, jobs):
    """``jobs``: (case id, dtype) pairs through both functions, (case id,
    dtype, "triton") through both with the Triton kernels forced, and (case
    id, transform) pairs through ``run_vocab_parallel_transform``."""
    failures = []
    for case_id, what, *kernels in jobs:
        if what in TRANSFORMS:
            results = [run_vocab_parallel_transform(_BY_ID[case_id], what, rank, world)]
        else:
            results = run_vocab_parallel(_BY_ID[case_id], what, rank, world, triton=kernels == ["triton"])
        failures += [f"{case_id} {what} {' '.join(kernels)}: {r}" for r in results if not r.ok]
    return failures


def _x(rank, N=6, V=4, dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    return torch.randn(N, V, generator=g, dtype=dtype)


def scenarios(rank, world):
    """(what, call, message pattern): every rank makes the call; each must raise
    ValueError or TypeError matching the pattern."""
    t = torch.tensor([0, 3, 1, 2, -100, 1])
    other = rank == world - 1  # the rank that is called differently
    return [
        ("weights of the wrong length", lambda: vp(_x(rank), t, weight=torch.ones(7)),
         r"weight has length 7 but the shards cover V=\d+ classes"),
        ("overlapping shards", lambda: vp(_x(rank), t, vocab_start=0), "overlap"),
        ("a gap between shards", lambda: vp(_x(rank), t, vocab_start=rank * 5), "leave a gap"),
        ("targets differ", lambda: vp(_x(rank), t.flip(0) if other else t), "targets not the same on every rank"),
        ("label smoothing differs", lambda: vp(_x(rank), t, label_smoothing=0.2 if other else 0.1),
         r"label_smoothing not the same on every rank.*0\.2"),
        ("ignore_index not the same", lambda: vp(_x(rank), t, ignore_index=1 if other else -100),
         "ignore_index not the same"),
        ("reduction differs", lambda: vp(_x(rank), t, reduction="sum" if other else "mean"),
         r"reduction not the same.*sum"),
        ("uneven shards without vocab_start", lambda: vp(_x(rank, V=5 if other else 4), t),
         r"uneven widths \[4, 5\]|uneven widths"),
        ("batch size differs", lambda: vp(_x(rank, N=7 if other else 6), torch.cat([t, t[:1]]) if other else t),
         "batch shape not the same"),
        ("dtype not the same", lambda: vp(_x(rank, dtype=torch.float32 if other else torch.float64), t),
         "dtype not the same"),
        ("a float target", lambda: vp(_x(rank), t.double()), "global class indices"),
        ("a float target on one rank", lambda: vp(_x(rank), t.double() if other else t),
         "global class indices|invalid on rank"),
        ("an index outside the vocabulary", lambda: vp(_x(rank), torch.tensor([0, 99, 1, 2, -100, 1])),
         r"class index 99, outside \[0, \d+\)"),
        ("linear: targets differ", lambda: vpl(torch.randn(6, 3, generator=torch.Generator().manual_seed(1),
                                                           dtype=torch.float64),
                                               torch.ones(4, 3, dtype=torch.float64), t.flip(0) if other else t),
         "targets not the same on every rank"),
    ]


def run_scenarios(rank, world):
    failures = []
    for what, call, pattern in scenarios(rank, world):
        try:
            with pytest.raises((ValueError, TypeError, IndexError), match=pattern):
                call()
        except BaseException:  # reported to the parent, with the scenario's name
            failures.append(f"{what}: {traceback.format_exc(limit=2)}")
    # forward mode over a batch of tangents is refused on every rank; so is a
    # vmap whose batch differs between the ranks
    t = torch.tensor([0, 3, 1, 2, -100, 1])
    for what, call, pattern in (
            ("jacfwd", lambda: torch.func.jacfwd(lambda z: vp(z, t))(_x(rank)), "batch of tangents"),
            ("hessian", lambda: torch.func.hessian(lambda z: vpl(z, torch.ones(3, 4, dtype=torch.float64) * (rank + 1),
                                                                  t, vocab_start=3 * rank))(_x(rank)),
             "batch of tangents"),
            ("vmap of uneven batches", lambda: torch.func.vmap(torch.func.grad(lambda z, y: vp(z[None], y[None])))(
                _x(rank)[:6 - (rank == world - 1)], t[:6 - (rank == world - 1)]), r"same batch size.*\[6, 5\]")):
        try:
            with pytest.raises(ValueError, match=pattern):
                call()
        except BaseException:  # reported to the parent, with the scenario's name
            failures.append(f"{what}: {traceback.format_exc(limit=2)}")
    # the group still works: an ignored row of all -inf logits gives 0 and a zero gradient
    x = _x(rank)
    x[4] = -float("inf")
    x.requires_grad_(True)
    loss = vp(x, torch.tensor([0, 3, 1, 2, -100, 1]), label_smoothing=0.1, z_loss=1e-3)
    loss.backward()
    if not (torch.isfinite(loss) and torch.isfinite(x.grad).all() and not x.grad[4].any()):
        failures.append(f"an ignored row of -inf: loss {loss}, gradient {x.grad[4]}")
    return failures


def run(rank, world, init_file, result_dir, jobs, with_scenarios):
    in_group(rank, world, init_file, result_dir,
             lambda: registry(rank, world, jobs) + (run_scenarios(rank, world) if with_scenarios else []))

