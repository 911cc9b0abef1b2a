"""Vocab-parallel cross-entropy on gloo (CPU): time per call against world size 1, and the collectives' share.

    python benchmarks/bench_distributed.py            # N=4096 V=32000; linear N=2048 H=512 V=32000
    python benchmarks/bench_distributed.py --quick    # a quarter of the rows, nothing written

One fixed global problem, run by 1 and by 2 spawned ranks of a gloo group.
The machine's cores are shared out: each of W ranks gets ``--threads / W``
torch threads, so the compute on offer is the same for every world size and
what changes is the split and the communication. Each rank holds ``V / W``
columns of the logits (or rows of the classifier weight); targets are
replicated. For reference, the single-device ``cross_entropy`` and
``linear_cross_entropy`` run on the same problem in the one-rank world. A
step is forward + backward, timed on rank 0 after a barrier,
median of ``--reps``.

The collectives' share: every ``torch.distributed.all_reduce`` call is timed
(wrapped in the worker process), and the share is their total over the step's
time. That total includes waiting for the slower rank, so it is an upper
bound on the cost of moving bytes.

Writes ``results/distributed.csv``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import _measure as m


def _timed_collectives(clock):
    """Wrap ``dist.all_reduce`` so that its seconds accumulate in ``clock[0]``."""
    inner = dist.all_reduce

    def all_reduce(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            clock[0] += time.perf_counter() - t0

    dist.all_reduce = all_reduce


def worker(rank, world, init_file, spec, queue):
    import crossentropy as ce
    from crossentropy.distributed import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(max(1, spec["threads"] // world))
    clock = [0.0]
    _timed_collectives(clock)
    g = torch.Generator().manual_seed(0)
    N, V, NL, H = spec["n"], spec["v"], spec["n_linear"], spec["h"]
    width = V // world
    cols = slice(rank * width, (rank + 1) * width)
    logits = (torch.randn(N, V, generator=g) * 2)[:, cols].contiguous().requires_grad_(True)
    t = torch.randint(0, V, (N,), generator=g)
    x = torch.randn(NL, H, generator=g).requires_grad_(True)
    w = (torch.randn(V, H, generator=g) * H ** -0.5)[cols].contiguous().requires_grad_(True)
    tl = torch.randint(0, V, (NL,), generator=g)
    ops = {
        "vocab_parallel_cross_entropy": (lambda: vocab_parallel_cross_entropy(logits, t), (logits,)),
        "vocab_parallel_linear_cross_entropy": (lambda: vocab_parallel_linear_cross_entropy(x, w, tl), (x, w)),
    }
    if world == 1:  # the single-device functions on the same problem, for reference
        ops["cross_entropy (no group)"] = (lambda: ce.cross_entropy(logits, t), (logits,))
        ops["linear_cross_entropy (no group)"] = (lambda: ce.linear_cross_entropy(x, w, tl), (x, w))
    for name, (f, leaves) in ops.items():
        steps, comms = [], []
        for i in range(spec["reps"] + 1):  # the first is a warm-up
            for leaf in leaves:
                leaf.grad = None
            dist.barrier()
            clock[0] = 0.0
            t0 = time.perf_counter()
            f().backward()
            if i:
                steps.append(time.perf_counter() - t0)
                comms.append(clock[0])
        if rank == 0:
            queue.put(dict(op=name, world=world, ms=1e3 * statistics.median(steps),
                           collectives_ms=1e3 * statistics.median(comms),
                           share=statistics.median(c / s for c, s in zip(comms, steps))))
    dist.destroy_process_group()


def run_world(world, spec):
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory() as d:
        mp.start_processes(worker, args=(world, os.path.join(d, "init"), spec, queue), nprocs=world,
                           join=True, start_method="spawn")
    rows = []
    while not queue.empty():
        rows.append(queue.get())
    return rows


def main():
    args = m.parser(__doc__, "a quarter of the rows; writes nothing").parse_args()
    m.start(args)
    scale = 4 if args.quick else 1
    spec = dict(n=4096 // scale, v=32000, n_linear=2048 // scale, h=512, threads=args.threads,
                reps=args.reps or (3 if args.quick else 7))
    rows = []
    for world in (1, 2):
        print(f"world {world} ...", file=sys.stderr, flush=True)
        rows += run_world(world, spec)
    for r in rows:
        base = next(q for q in rows if q["op"] == r["op"] and q["world"] == 1)
        r["vs_world1"] = r["ms"] / base["ms"]
        linear = "linear" in r["op"]
        r["N"] = spec["n_linear"] if linear else spec["n"]
        r["H"] = spec["h"] if linear else None
        r["V"] = spec["v"]
    rows.sort(key=lambda r: ("linear" in r["op"], "group" in r["op"], r["world"]))
    print(f"\nforward + backward, float32, gloo, {args.threads} threads shared by the ranks, "
          f"median of {spec['reps']}\n")
    print(m.table(rows, [("op", "function", ""), ("N", "N", "d"), ("H", "H", "d"), ("V", "V", "d"),
                         ("world", "ranks", "d"), ("ms", "ms", ".0f"), ("vs_world1", "time / 1 rank", ".2f"),
                         ("collectives_ms", "all_reduce ms", ".1f"), ("share", "all_reduce share", ".1%")]))
    if not args.quick:
        m.write_csv("distributed.csv", rows)


if __name__ == "__main__":
    main()
