"""Cross-entropy on index targets, forward + backward: ours against PyTorch eager, torch.compile and JAX jit.

    python benchmarks/bench_cross_entropy.py            # the issue's sizes and a V sweep (~6 min)
    python benchmarks/bench_cross_entropy.py --quick    # one small size, nothing written
    python benchmarks/bench_cross_entropy.py --busy     # the issue's sizes beside a busy neighbour
    python benchmarks/bench_cross_entropy.py --main-only   # the issue's sizes alone, idle
    python benchmarks/bench_cross_entropy.py --more     # float16, N=16384, and N=256 V=10 (add --busy too)
    python benchmarks/bench_cross_entropy.py --few      # 3 to 32 classes, with the row kernel beside (add --busy too)

Methods: ``crossentropy.cross_entropy`` (on CPU the compiled kernel of
``crossentropy._cpu`` where numba is installed), the same with
``inplace_backward=True``, the same with the compiled kernels off (the
chunks of torch operations every other device runs),
``torch.nn.functional.cross_entropy`` eager, ``torch.compile`` of it
(compiled once per shape before timing), and JAX's ``jit`` of
``value_and_grad`` of optax's ``softmax_cross_entropy_with_integer_labels``
(where JAX is installed). And this machine's floors, measured in the same
rounds: ``floor: read + first touch`` (the logits copied into a fresh buffer:
what any kernel that returns a new gradient pays at least), ``floor: copy``
(the same into a reused buffer: the bandwidth bound of ``inplace_backward``)
and ``floor: exp`` (``torch.exp`` of the logits into a reused buffer); at the
small size (``--more``) also ``floor: a Python loss``, an autograd Function
that computes nothing (the fixed cost of any loss written in Python). Time:
all in one process, interleaved, median of ``--reps`` rounds. Extra peak
memory over the logits: each torch method in its own subprocess (see
``_measure.py``).

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

METHODS = ("ours", "ours inplace", "ours, torch chunks", "torch", "torch.compile", "jax jit",
           "floor: read + first touch", "floor: copy", "floor: exp")
FLOORS = tuple(mth for mth in METHODS if mth.startswith("floor"))
# At the small size a step is fixed cost: beside the methods, the least any
# loss written in Python with a torch backward of its own pays (_measure.python_loss)
PYTHON_FLOOR = "floor: a Python loss"
NO_MEMORY = FLOORS + ("jax jit", PYTHON_FLOOR)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MAIN = [(4096, 32000, "float32"), (4096, 32000, "bfloat16"), (2048, 128256, "float32")]
# --more: float16, a larger N, and a small problem (where a call's fixed cost is the step)
MORE = [(4096, 32000, "float16"), (16384, 32000, "bfloat16"), (256, 10, "float32")]
SWEEP_N, SWEEP_V = 2048, (8192, 16384, 32000, 65536, 128256)
# --few: classification heads, where the few-classes kernel runs (up to 16
# classes) and where it stops (32); "ours, row kernel" is ours with it off
FEW = [(65536, 3, "float32"), (65536, 10, "float32"), (65536, 10, "bfloat16"), (4096, 10, "float32"),
       (16384, 12, "float32"), (16384, 16, "float32"), (16384, 32, "float32")]
FEW_METHODS = ("ours", "ours, row kernel", "ours, torch chunks", "torch", "torch.compile", "jax jit",
               "floor: read + first touch")
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
    if method == "ours, torch chunks":
        return m.kernels_off(ce.cross_entropy)
    if method == "ours, row kernel":
        return _row_kernel(ce.cross_entropy)
    if method == PYTHON_FLOOR:
        return m.python_loss()
    raise ValueError(f"method: unknown {method!r}")


def _row_kernel(f):
    """``f`` with cross-entropy's few-classes kernel off for its call (the row kernel instead)."""
    from crossentropy._numpy import cross_entropy as driver

    def rows(*args, **kwargs):
        before, driver.FEW_CLASSES = driver.FEW_CLASSES, 0
        try:
            return f(*args, **kwargs)
        finally:
            driver.FEW_CLASSES = before
    return rows


def _jax_step(x, t):
    """JAX's jit of value_and_grad of optax's loss on the same logits (as JAX
    arrays, made once), or None without JAX."""
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError:
        return None
    xj = jnp.asarray(x.float().numpy()).astype({torch.bfloat16: jnp.bfloat16, torch.float16: jnp.float16}.get(
        x.dtype, jnp.float32))
    tj = jnp.asarray(t.numpy().astype("int32"))
    f = jax.jit(jax.value_and_grad(lambda z, y: optax.softmax_cross_entropy_with_integer_labels(z, y).mean()))
    return lambda: jax.block_until_ready(f(xj, tj))


def _floor_step(method, x):
    buf = torch.empty_like(x)
    if method == "floor: read + first touch":
        return lambda: torch.empty_like(x).copy_(x)
    if method == "floor: copy":
        return lambda: buf.copy_(x)
    return lambda: torch.exp(x, out=buf)


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


def time_methods(n, v, dtype, reps, methods, scale=1.0, shuffle=False):
    x, t = inputs(n, v, dtype)
    special = {mth: _floor_step(mth, x) for mth in methods if mth in FLOORS}
    if "jax jit" in methods:
        special["jax jit"] = _jax_step(x, t)
    methods = [mth for mth in methods if special.get(mth, True) is not None]  # JAX may be missing
    # one leaf for the methods that leave the logits alone (their gradients
    # cleared before each step), one for inplace_backward (restored before each)
    shared, own = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    leaves = {mth: own if mth == "ours inplace" else shared for mth in methods if mth not in special}
    fns = {mth: loss_fn(mth, scale) for mth in leaves}

    def stepper(mth):
        if mth in special:
            return special[mth]
        leaf, f = leaves[mth], fns[mth]

        def setup():
            leaf.grad = None
            if mth == "ours inplace":  # the last step overwrote the logits with their gradient
                with torch.no_grad():
                    leaf.copy_(x)

        return setup, lambda: f(leaf, t).backward()

    return m.interleaved({mth: stepper(mth) for mth in methods}, reps=reps, warmup=1, shuffle=shuffle)


def measure(configs, reps, threads, methods, memory=True, scale=1.0, shuffle=False):
    rows = []
    for n, v, dtype in configs:
        print(f"N={n} V={v} {dtype} ...", file=sys.stderr, flush=True)
        secs = time_methods(n, v, dtype, reps, methods, scale, shuffle)
        logits_mb = n * v * torch.finfo(DTYPES[dtype]).bits / 8 / m.MB
        for mth in (mth for mth in methods if mth in secs):
            mem = None
            if memory and mth not in NO_MEMORY:
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
           ("ms", "ms", ".2f"), ("time_vs_torch", "time / torch", ".2f"),
           ("extra_mb", "extra peak MB", ".0f"), ("mem_vs_torch", "memory / torch", ".2f"),
           ("logits_mb", "logits MB", ".0f")]


def verdicts(rows, busy=False):
    """Issue 14's targets: idle, ours <= 0.3x torch eager, <= 0.6x the better
    of torch.compile and JAX jit, <= 1.5x the read + first-touch floor, and
    inplace <= 1.5x the copy floor; with a busy neighbour, <= 0.6x torch eager."""
    out = []
    for r in rows:
        if r["method"] not in ("ours", "ours inplace"):
            continue
        same = {q["method"]: q["ms"] for q in rows if (q["N"], q["V"], q["dtype"]) == (r["N"], r["V"], r["dtype"])}
        shape = f"N={r['N']} V={r['V']} {r['dtype']}, {r['method']}"
        checks = [("torch eager", r["ms"] / same["torch"], 0.6 if busy else 0.3)]
        if not busy:
            peers = [same[p] for p in ("torch.compile", "jax jit") if p in same]
            if peers and r["method"] == "ours":
                checks.append(("the better of torch.compile and JAX jit", r["ms"] / min(peers), 0.6))
            floor = "floor: copy" if r["method"] == "ours inplace" else "floor: read + first touch"
            if floor in same:
                checks.append((floor, r["ms"] / same[floor], 1.5))
        for what, ratio, target in checks:
            ok = "met" if ratio <= target else "NOT met"
            out.append(f"{shape}: {ratio:.2f}x {what} (target <= {target}x): {ok}")
        if PYTHON_FLOOR in same:
            out.append(f"{shape}: {r['ms'] / same[PYTHON_FLOOR]:.2f}x {PYTHON_FLOOR}, and torch eager "
                       f"{same['torch'] / same[PYTHON_FLOOR]:.2f}x it (no target)")
    return out


def main():
    ap = m.parser(__doc__, "N=1024, V=32000, float32; writes nothing")
    ap.add_argument("--main-only", action="store_true", help="the targets' sizes only (no scaled loss, no V sweep)")
    ap.add_argument("--more", action="store_true",
                    help="instead: float16 at 4096 x 32000, N=16384 at V=32000 (bfloat16: 1 GB), and N=256, V=10")
    ap.add_argument("--small-only", action="store_true", help="with --more: N=256, V=10 only")
    ap.add_argument("--few", action="store_true",
                    help="instead: 3 to 32 classes, the rounds shuffled (no memory measured)")
    args = ap.parse_args()
    m.start(args)
    if args.few:
        reps = args.reps or 31
        rows = measure(FEW, reps, args.threads, FEW_METHODS, memory=False, shuffle=True)
        print(f"\nfew classes, forward + backward, median of {reps} interleaved rounds, each in its own order\n")
        print(m.table(rows, COLUMNS))
        return
    if args.quick:
        rows = measure([(1024, 32000, "float32")], args.reps or 5, args.threads, METHODS)
        print(m.table(rows, COLUMNS))
        print("\n" + "\n".join(verdicts(rows, args.busy)))
        return
    reps = args.reps or 9
    if args.more:  # a small problem's step is ~0.1 ms: many more rounds for a stable median
        more = [c for c in MORE if c[0] * c[1] < 1e6] if args.small_only else MORE
        rows = [r for n, v, dtype in more
                for r in measure([(n, v, dtype)], reps * 25 if n * v < 1e6 else reps, args.threads,
                                 METHODS + (PYTHON_FLOOR,) if n * v < 1e6 else METHODS)]
        print(f"\nforward + backward, median of {reps} interleaved rounds ({reps * 25} for the small size)\n")
        print(m.table(rows, COLUMNS))
        print("\n" + "\n".join(verdicts(rows, args.busy)))
        return
    rows = measure(MAIN, reps, args.threads, METHODS)
    print(f"\nforward + backward, median of {reps} interleaved rounds\n")
    print(m.table(rows, COLUMNS))
    print("\n" + "\n".join(verdicts(rows, args.busy)))
    if args.busy or args.main_only:  # the targets' sizes only
        return
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
