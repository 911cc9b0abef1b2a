"""Cross-entropy on index targets, forward + backward: ours against PyTorch eager and torch.compile.

    python benchmarks/bench_cross_entropy.py            # the issue's sizes and a V sweep (~6 min)
    python benchmarks/bench_cross_entropy.py --quick    # one small size, nothing written

Methods: ``crossentropy.cross_entropy`` (fused kernel), the same with
``inplace_backward=True``, ``torch.nn.functional.cross_entropy`` eager, and
``torch.compile`` of it (compiled once per shape before timing). Time: all in
one process, interleaved, median of ``--reps`` rounds. Extra peak memory over
the logits: each method in its own subprocess (see ``_measure.py``).

A third table scales the loss before ``backward()`` (``(loss * 0.25).backward()``,
as gradient accumulation does), so that the backward multiplies the kept
gradient by a grad_output other than 1 (for bfloat16, in float32 chunks).

Writes ``results/cross_entropy.csv`` and ``results/cross_entropy.png`` (time
and extra peak memory against V at N = 2048, float32).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

import _measure as m
import crossentropy as ce

METHODS = ("ours", "ours inplace", "torch", "torch.compile")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MAIN = [(4096, 32000, "float32"), (4096, 32000, "bfloat16"), (2048, 128256, "float32")]
SWEEP_N, SWEEP_V = 2048, (8192, 16384, 32000, 65536, 128256)
SCALED = [(4096, 32000, "float32"), (4096, 32000, "bfloat16")]


def loss_fn(method, scale=1.0):
    f = _loss_fn(method)
    return f if scale == 1.0 else (lambda a, t: f(a, t) * scale)


def _loss_fn(method):
    if method == "ours":
        return ce.cross_entropy
    if method == "ours inplace":
        return lambda a, t: ce.cross_entropy(a, t, inplace_backward=True)
    if method == "torch":
        return F.cross_entropy
    if method == "torch.compile":
        return torch.compile(F.cross_entropy, dynamic=False)
    raise ValueError(f"method: unknown {method!r}")


def inputs(n, v, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, v, generator=g).mul_(2).to(DTYPES[dtype])
    t = torch.randint(0, v, (n,), generator=g)
    return x, t


def build_child(spec):
    """For ``_measure.child_main``: one method on one size."""
    torch.set_num_threads(spec["threads"])
    x, t = inputs(spec["n"], spec["v"], spec["dtype"])
    return m.grad_step(loss_fn(spec["method"]), [x.requires_grad_(True)], t,
                       compiled=spec["method"] == "torch.compile")


def time_methods(n, v, dtype, reps, methods, scale=1.0):
    x, t = inputs(n, v, dtype)
    leaves = {mth: x.clone().requires_grad_(True) for mth in methods}
    fns = {mth: loss_fn(mth, scale) for mth in methods}

    def stepper(mth):
        leaf, f = leaves[mth], fns[mth]

        def setup():
            leaf.grad = None
            if mth == "ours inplace":  # the last step overwrote the logits with their gradient
                with torch.no_grad():
                    leaf.copy_(x)

        return setup, lambda: f(leaf, t).backward()

    return m.interleaved({mth: stepper(mth) for mth in methods}, reps=reps, warmup=1)


def measure(configs, reps, threads, methods, memory=True, scale=1.0):
    rows = []
    for n, v, dtype in configs:
        print(f"N={n} V={v} {dtype} ...", file=sys.stderr, flush=True)
        secs = time_methods(n, v, dtype, reps, methods, scale)
        logits_mb = n * v * torch.finfo(DTYPES[dtype]).bits / 8 / m.MB
        for mth in methods:
            mem = None
            if memory:
                got = m.run_child(__file__, dict(method=mth, n=n, v=v, dtype=dtype, threads=threads))
                mem = got and got["extra_mb"]
            rows.append(dict(method=mth if scale == 1.0 else f"{mth}, loss * {scale:g}", N=n, V=v, dtype=dtype,
                             ms=1e3 * secs[mth],
                             extra_mb=mem, logits_mb=logits_mb))
    for r in rows:  # ratios to torch eager on the same size
        ref = next(q for q in rows if q["method"].split(",")[0] == "torch" and (q["N"], q["V"], q["dtype"]) ==
                   (r["N"], r["V"], r["dtype"]))
        r["time_vs_torch"] = r["ms"] / ref["ms"]
        r["mem_vs_torch"] = (r["extra_mb"] / ref["extra_mb"]
                             if r["extra_mb"] is not None and ref["extra_mb"] else None)
    return rows


COLUMNS = [("method", "method", ""), ("N", "N", "d"), ("V", "V", "d"), ("dtype", "dtype", ""),
           ("ms", "ms", ".0f"), ("time_vs_torch", "time / torch", ".2f"),
           ("extra_mb", "extra peak MB", ".0f"), ("mem_vs_torch", "memory / torch", ".2f"),
           ("logits_mb", "logits MB", ".0f")]


def verdicts(rows):
    """The issue's targets: ours <= 0.5x torch eager in time and in extra peak memory."""
    out = []
    for r in rows:
        if r["method"] != "ours":
            continue
        for key, what in (("time_vs_torch", "time"), ("mem_vs_torch", "extra memory")):
            if r.get(key) is not None:
                ok = "met" if r[key] <= 0.5 else "NOT met"
                out.append(f"N={r['N']} V={r['V']} {r['dtype']}: {what} {r[key]:.2f}x torch (target <= 0.5x): {ok}")
    return out


def main():
    args = m.parser(__doc__, "N=1024, V=32000, float32; writes nothing").parse_args()
    m.start(args)
    if args.quick:
        rows = measure([(1024, 32000, "float32")], args.reps or 5, args.threads, METHODS)
        print(m.table(rows, COLUMNS))
        return
    reps = args.reps or 9
    rows = measure(MAIN, reps, args.threads, METHODS)
    print(f"\nforward + backward, median of {reps} interleaved rounds\n")
    print(m.table(rows, COLUMNS))
    print("\n" + "\n".join(verdicts(rows)))
    scaled = measure(SCALED, reps, args.threads, ("ours", "torch"), memory=False, scale=0.25)
    print(f"\nscaled loss, (loss * 0.25).backward(), median of {reps} interleaved rounds\n")
    print(m.table(scaled, COLUMNS))
    sweep = measure([(SWEEP_N, v, "float32") for v in SWEEP_V], max(3, reps // 2), args.threads, METHODS)
    print(f"\nV sweep, N={SWEEP_N}, float32\n")
    print(m.table(sweep, COLUMNS))
    m.write_csv("cross_entropy.csv", m.labelled(targets=rows, scaled=scaled, sweep=sweep))
    m.plot_sweep("cross_entropy.png", sweep,
                 f"cross-entropy forward + backward, N = {SWEEP_N}, float32, {args.threads} threads",
                 [("ms", "time per step (ms)"), ("extra_mb", "extra peak memory over the logits (MB)")])


if __name__ == "__main__":
    m.entry(main, build_child)
