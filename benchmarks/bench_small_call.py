"""Where a small cross-entropy call's time goes: forward + backward at N=256, V=10, float32.

    python benchmarks/bench_small_call.py          # 40 rounds (~1 min)
    python benchmarks/bench_small_call.py --busy   # the same beside one busy neighbour process

At this size a step is fixed cost, and no single call can be timed apart
from the others in place: what one piece costs depends on what ran before it
(the caches it found). So each row here runs the whole step, ours, with one
piece replaced by a function returning that piece's result from the first
call (the rest running as usual), and the piece's cost is the step's time
minus that row's. Beside them: ours unchanged, torch eager, and a loss that
computes nothing (an autograd Function whose backward returns a gradient
made once: what any loss written in Python pays). Each row is a tight loop
of ``--steps`` steps; the rows take turns for ``--reps`` rounds, and a row's
figure is its fastest round (microseconds a step).

The pieces, by the names a newcomer finds them under:

* ``losses._targets.read``: reading and checking the arguments;
* ``_torch.cross_entropy_cpu.forward``: everything between that and the autograd Function;
* ``_numpy.cross_entropy.rows`` (as ``cross_entropy_cpu`` calls it): the NumPy driver around the kernel;
* ``_numpy.cross_entropy._prepare``: the targets and row scale, before the kernel;
* ``_cpu.columns.cross_entropy_few``: the kernel call itself;
* ``_numpy.cross_entropy._finish``: the loss rows and the reduction, after it.

A cached piece skips its work (the kernel writes no gradient): the rows only
say where the time goes, and no number here is a loss.
"""

from __future__ import annotations

import contextlib
import importlib
import time

import torch
import torch.nn.functional as F

import _measure as m
import crossentropy as ce

N, V = 256, 10
PIECES = [
    ("losses._targets", "read"),
    ("_torch.cross_entropy_cpu", "forward"),
    ("_torch.cross_entropy_cpu", "rows"),
    ("_numpy.cross_entropy", "_prepare"),
    ("_cpu.columns", "cross_entropy_few"),
    ("_numpy.cross_entropy", "_finish"),
]


@contextlib.contextmanager
def cached(module, name):
    """``module.name`` replaced, inside the block, by a function returning its first result."""
    original = getattr(module, name)
    box = []

    def replay(*args, **kwargs):
        if not box:
            box.append(original(*args, **kwargs))
        return box[0]

    setattr(module, name, replay)
    try:
        yield
    finally:
        setattr(module, name, original)


def main():
    ap = m.parser(__doc__, "5 rounds")
    ap.add_argument("--steps", type=int, default=500, help="steps a round (default 500)")
    args = ap.parse_args()
    m.start(args)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, V, generator=g).mul_(2).requires_grad_(True)
    t = torch.randint(0, V, (N,), generator=g)

    def loop(f):
        for _ in range(args.steps):
            x.grad = None
            f(x, t).backward()

    rows = {"ours": (None, ce.cross_entropy), "torch eager": (None, F.cross_entropy),
            "floor: a Python loss": (None, m.python_loss())}
    for mod, name in PIECES:
        module = importlib.import_module(f"crossentropy.{mod}")
        rows[f"ours, {mod}.{name} cached"] = ((module, name), ce.cross_entropy)
    best = {k: float("inf") for k in rows}
    reps = 5 if args.quick else (args.reps or 40)
    for rnd in range(reps + 1):  # the first round warms up, untimed
        for label, (piece, f) in rows.items():
            with cached(*piece) if piece else contextlib.nullcontext():
                start = time.perf_counter()
                loop(f)
                us = (time.perf_counter() - start) / args.steps * 1e6
            if rnd > 0:
                best[label] = min(best[label], us)
    ours = best["ours"]
    out = [dict(row=k, us=v, vs_torch=v / best["torch eager"],
                piece=None if k in ("ours", "torch eager", "floor: a Python loss") else ours - v)
           for k, v in best.items()]
    print(f"\nN={N} V={V} float32, forward + backward, fastest of {reps} rounds of {args.steps} steps\n")
    print(m.table(out, [("row", "row", ""), ("us", "us a step", ".1f"), ("vs_torch", "/ torch", ".2f"),
                        ("piece", "the piece: us", ".1f")]))


if __name__ == "__main__":
    main()
