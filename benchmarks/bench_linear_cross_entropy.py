"""Linear cross-entropy, forward + backward: ours against the naive path and PyTorch's chunked one.

    python benchmarks/bench_linear_cross_entropy.py           # N=4096 H=1024 V=32000 and a V sweep (~5 min)
    python benchmarks/bench_linear_cross_entropy.py --quick   # N=2048 H=256 V=16000, nothing written

Methods, all on float32 with gradients for ``input`` and ``linear_weight``:

* ours: ``crossentropy.linear_cross_entropy(x, W, t)``;
* naive: ``F.cross_entropy(x @ W.T, t)``, which holds the ``(N, V)`` logits;
* torch chunked: ``F.linear_cross_entropy(x, W, t, options=nn.LinearCrossEntropyOptions())``.

Time: in one process, interleaved, median of ``--reps`` rounds. Extra peak
memory over the inputs and their gradients (``VmHWM`` minus the resident set
before the step minus the bytes of ``x.grad`` and ``W.grad``): each method in
its own subprocess (see ``_measure.py``). The V sweep (8k to 256k at
N=2048, H=512) measures only in subprocesses, so its times are single
readings. A chunk-size study times ours at 128 to 1024 rows a chunk.

Writes ``results/linear_cross_entropy.csv`` and ``results/linear_cross_entropy.png``.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

import _measure as m
import crossentropy as ce
from crossentropy._torch.linear import default_chunk_size

METHODS = ("ours", "naive", "torch chunked")
SWEEP_N, SWEEP_H, SWEEP_V = 2048, 512, (8192, 16384, 32768, 65536, 131072, 262144)


def loss_fn(method):
    if method == "ours":
        return ce.linear_cross_entropy
    if method == "naive":
        return lambda x, w, t: F.cross_entropy(x @ w.T, t)
    if method == "torch chunked":
        return lambda x, w, t: F.linear_cross_entropy(x, w, t, options=torch.nn.LinearCrossEntropyOptions())
    raise ValueError(f"method: unknown {method!r}")


def inputs(n, h, v):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, h, generator=g)
    w = torch.randn(v, h, generator=g).mul_(h ** -0.5)
    t = torch.randint(0, v, (n,), generator=g)
    return x, w, t


def build_child(spec):
    torch.set_num_threads(spec["threads"])
    x, w, t = inputs(spec["n"], spec["h"], spec["v"])
    return m.grad_step(loss_fn(spec["method"]), [x.requires_grad_(True), w.requires_grad_(True)], t)


def child_extra(spec):
    """Extra peak over inputs and gradients (MB) and one step's seconds, from a subprocess."""
    got = m.run_child(__file__, spec)
    if got is None:
        return None, None
    x_and_w_grads = (spec["n"] + spec["v"]) * spec["h"] * 4 / m.MB
    return got["extra_mb"] - x_and_w_grads, got["seconds"]


def measure_main(n, h, v, reps, threads, memory=True):
    x, w, t = inputs(n, h, v)
    leaves = {mth: (x.clone().requires_grad_(True), w.clone().requires_grad_(True)) for mth in METHODS}

    def stepper(mth):
        a, b = leaves[mth]
        f = loss_fn(mth)

        def setup():
            a.grad = b.grad = None

        return setup, lambda: f(a, b, t).backward()

    print(f"N={n} H={h} V={v}: timing ...", file=sys.stderr, flush=True)
    secs = m.interleaved({mth: stepper(mth) for mth in METHODS}, reps=reps, warmup=1)
    del leaves
    rows = []
    for mth in METHODS:
        extra = child_extra(dict(method=mth, n=n, h=h, v=v, threads=threads))[0] if memory else None
        rows.append(dict(method=mth, N=n, H=h, V=v, ms=1e3 * secs[mth], extra_mb=extra,
                         logits_mb=n * v * 4 / m.MB))
    return with_ratios(rows)


def with_ratios(rows):
    by = {r["method"]: r for r in rows}
    for r in rows:
        for peer, tag in (("naive", "naive"), ("torch chunked", "chunked")):
            r[f"time_vs_{tag}"] = r["ms"] / by[peer]["ms"] if r["ms"] is not None else None
            e, pe = r["extra_mb"], by[peer]["extra_mb"]
            r[f"mem_vs_{tag}"] = e / pe if e is not None and pe else None
    return rows


def chunk_study(n, h, v, reps, sizes=(128, 256, 512, 1024)):
    """Ours at several chunk sizes (rows a chunk), interleaved: the evidence for the default's floor."""
    x, w, t = inputs(n, h, v)
    x.requires_grad_(True)
    w.requires_grad_(True)

    def stepper(c):
        def setup():
            x.grad = w.grad = None

        return setup, lambda: ce.linear_cross_entropy(x, w, t, chunk_size=c).backward()

    print(f"chunk sizes at N={n} H={h} V={v} ...", file=sys.stderr, flush=True)
    secs = m.interleaved({c: stepper(c) for c in sizes}, reps=reps, warmup=1)
    return [dict(method="ours", chunk_size=c, N=n, H=h, V=v, ms=1e3 * secs[c], vs_128=secs[c] / secs[sizes[0]])
            for c in sizes]


def sweep(threads):
    rows = []
    for v in SWEEP_V:
        print(f"sweep N={SWEEP_N} H={SWEEP_H} V={v} ...", file=sys.stderr, flush=True)
        for mth in METHODS:
            extra, secs = child_extra(dict(method=mth, n=SWEEP_N, h=SWEEP_H, v=v, threads=threads))
            rows.append(dict(method=mth, N=SWEEP_N, H=SWEEP_H, V=v, extra_mb=extra,
                             ms=None if secs is None else 1e3 * secs, logits_mb=SWEEP_N * v * 4 / m.MB))
    return rows


COLUMNS = [("method", "method", ""), ("N", "N", "d"), ("H", "H", "d"), ("V", "V", "d"),
           ("ms", "ms", ".0f"), ("time_vs_naive", "time / naive", ".2f"),
           ("time_vs_chunked", "time / chunked", ".2f"), ("extra_mb", "extra peak MB", ".0f"),
           ("mem_vs_naive", "mem / naive", ".2f"), ("mem_vs_chunked", "mem / chunked", ".2f"),
           ("logits_mb", "logits MB", ".0f")]


def verdicts(rows):
    r = next(q for q in rows if q["method"] == "ours")
    checks = [("time_vs_naive", "time vs naive", 1.0), ("time_vs_chunked", "time vs torch chunked", 0.8),
              ("mem_vs_naive", "extra memory vs naive", 0.2), ("mem_vs_chunked", "extra memory vs torch chunked", 0.5)]
    return [f"{what}: {r[key]:.2f}x (target <= {limit}x): {'met' if r[key] <= limit else 'NOT met'}"
            for key, what, limit in checks if r.get(key) is not None]


def main():
    ap = m.parser(__doc__, "N=2048 H=256 V=16000; writes nothing")
    ap.add_argument("--no-sweep", action="store_true", help="skip the V sweep")
    args = ap.parse_args()
    m.start(args)
    if args.quick:
        print(m.table(measure_main(2048, 256, 16000, args.reps or 3, args.threads), COLUMNS))
        return
    reps = args.reps or 3
    rows = measure_main(4096, 1024, 32000, reps, args.threads)
    print(f"\nforward + backward, float32, median of {reps} interleaved rounds\n")
    print(m.table(rows, COLUMNS))
    print("\n" + "\n".join(verdicts(rows)))
    chunks = chunk_study(4096, 1024, 32000, reps)
    print(f"\nours by chunk size (default here: {default_chunk_size(4096, 1024, 32000)} rows)\n")
    print(m.table(chunks, [("chunk_size", "rows a chunk", "d"), ("ms", "ms", ".0f"), ("vs_128", "time / 128 rows", ".2f")]))
    swept = []
    if not args.no_sweep:
        swept = sweep(args.threads)
        print(f"\nV sweep, N={SWEEP_N}, H={SWEEP_H}, float32, one step per subprocess\n")
        print(m.table(swept, [c for c in COLUMNS if "_vs_" not in c[0]]))
    m.write_csv("linear_cross_entropy.csv", m.labelled(targets=rows, chunk_sizes=chunks, sweep=swept))
    if swept:
        m.plot_sweep("linear_cross_entropy.png", swept,
                     f"linear cross-entropy forward + backward, N = {SWEEP_N}, H = {SWEEP_H}, float32",
                     [("extra_mb", "extra peak memory over inputs and grads (MB)"), ("ms", "time of one step (ms)")])


if __name__ == "__main__":
    m.entry(main, build_child)
