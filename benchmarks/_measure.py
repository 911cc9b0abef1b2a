"""What every benchmark script here shares: timing, peak memory, tables, CSV, plots.

Time: the methods run in one process, interleaved round by round, and each
gets the median of its rounds, so that a noisy neighbour on this shared
machine slows every method alike and the ratios stay meaningful.

Peak memory: each method runs in a subprocess of its own (``--child``), so
that no allocator cache or compiled graph of one method lingers in another's
figure. The child builds its inputs, runs one warm-up step where it matters (for
``torch.compile``, whose compilation is not the steady state of a training
loop), then resets the kernel's high-water mark (``echo 5 >
/proc/self/clear_refs``), reads the resident set ``VmRSS`` as the baseline,
runs one step keeping what the step returns (the gradients) alive, and reads
the high-water mark ``VmHWM``. The extra peak is ``VmHWM - baseline``: every
byte the step touched beyond its inputs, the gradients it returns included.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import gc
import json
import os
import pathlib
import platform
import random
import statistics
import subprocess
import sys
import time

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
MB = 1 << 20


# ---------------------------------------------------------------------------
# the scripts' common frame
# ---------------------------------------------------------------------------


def parser(doc: str, quick: str) -> argparse.ArgumentParser:
    """The options every script takes: ``--quick``, ``--reps``, ``--threads``, ``--busy``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--reps", type=int, default=None, help="timed rounds (default: the script's)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--busy", action="store_true",
                    help="run beside a busy neighbour: one process spinning on a core for the whole run")
    return ap


def start(args) -> None:
    """Line-buffered output, the thread count, the busy neighbour if asked
    for, and the machine's line."""
    import torch

    sys.stdout.reconfigure(line_buffering=True)
    torch.set_num_threads(args.threads)
    if getattr(args, "busy", False):
        neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        atexit.register(neighbour.kill)
    print(machine() + (", with one busy neighbour process" if getattr(args, "busy", False) else ""))


def entry(main, build) -> None:
    """``script --child SPEC`` measures one method's memory; otherwise ``main()``."""
    if "--child" in sys.argv:
        child_main(build)
    else:
        main()


def kernels_off(f):
    """``f`` with the compiled CPU kernels turned off for its call
    (``CROSSENTROPY_CPU_KERNELS=0``: the chunks of torch operations)."""
    def off(*args, **kwargs):
        os.environ["CROSSENTROPY_CPU_KERNELS"] = "0"
        try:
            return f(*args, **kwargs)
        finally:
            del os.environ["CROSSENTROPY_CPU_KERNELS"]
    return off


def python_loss():
    """A loss that computes nothing, as a ``torch.autograd.Function`` called
    like a loss, ``f(logits, target)``: a zero, and a backward returning a
    gradient made once. What any loss written in Python with an analytic
    backward pays per step, which torch's C++ losses do not."""
    import torch

    kept = {}

    class Nothing(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, t):
            ctx.like = a
            return a.new_zeros(())

        @staticmethod
        def backward(ctx, g):
            a = ctx.like
            if a.shape not in kept:
                kept[a.shape] = torch.zeros_like(a)
            return kept[a.shape], None

    return Nothing.apply


def grad_step(f, leaves, *rest, compiled=False):
    """A step running ``f(*leaves, *rest).backward()`` from cleared gradients
    and returning the gradients. ``compiled``: run it once now, so that
    ``torch.compile``'s compilation is not in the measured step."""

    def step():
        for leaf in leaves:
            leaf.grad = None
        f(*leaves, *rest).backward()
        return [leaf.grad for leaf in leaves]

    if compiled:
        step()
        for leaf in leaves:
            leaf.grad = None
    return step


# ---------------------------------------------------------------------------
# time
# ---------------------------------------------------------------------------


def interleaved(steps: dict, reps: int, warmup: int = 1, shuffle: bool = False) -> dict:
    """Median seconds of each ``steps[name]``, the methods taking turns.

    A step is a callable, or a pair ``(setup, run)`` whose ``setup()`` runs
    untimed before each timed ``run()``. ``shuffle``: each round in its own
    order (seeded), so that no method always follows the same one: at
    millisecond sizes a step runs slower after one that swept the caches
    (``BENCHMARKS.md``, "Few classes").
    """
    pairs = {name: s if isinstance(s, tuple) else (None, s) for name, s in steps.items()}
    for _ in range(warmup):
        for setup, run in pairs.values():
            setup and setup()
            run()
    times = {name: [] for name in steps}
    # As timeit does: collect once, then no collector during the rounds. A
    # full collection before every step (as this harness once did) leaves
    # the torch threads idle for tens of milliseconds, and on this VM the
    # work just after an idle spell runs slower: a delay added to every
    # method's step alike, which hid differences at millisecond sizes
    # (BENCHMARKS.md, "Method").
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        order = random.Random(0)
        for _ in range(reps):
            names = order.sample(list(pairs), len(pairs)) if shuffle else list(pairs)
            for name in names:
                setup, run = pairs[name]
                setup and setup()
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
    finally:
        if enabled:
            gc.enable()
    return {name: statistics.median(ts) for name, ts in times.items()}


# ---------------------------------------------------------------------------
# peak memory
# ---------------------------------------------------------------------------


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    raise RuntimeError(f"/proc/self/status has no {key}")


def resident_bytes() -> int:
    """This process's resident set now (``VmRSS``)."""
    return _status_bytes("VmRSS")


def extra_peak(step) -> tuple:
    """Bytes by which one ``step()`` raises the resident set above where it
    starts, and the seconds the step took (one reading)."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current VmRSS
    base = resident_bytes()
    t0 = time.perf_counter()
    kept = step()  # noqa: F841  (what the step returns stays alive until the reading)
    seconds = time.perf_counter() - t0
    peak = _status_bytes("VmHWM")
    return peak - base, seconds


def child_main(build) -> None:
    """Entry of a ``--child SPEC`` subprocess: ``build(spec)`` returns the
    step (any warm-up done, and what it returned freed), or ``(step, info)``
    with a dict of more figures to report; prints the extra peak (and
    ``info``) as one JSON line."""
    spec = json.loads(sys.argv[sys.argv.index("--child") + 1])
    built = build(spec)
    step, info = built if isinstance(built, tuple) else (built, {})
    extra, seconds = extra_peak(step)
    print(json.dumps({"extra_mb": extra / MB, "seconds": seconds, **info}))


def run_child(script: str, spec: dict, timeout: float = 1800, env: dict | None = None) -> dict | None:
    """Run ``script --child SPEC`` (with ``env`` added to the environment);
    its ``{"extra_mb", "seconds", ...}``, or None if it failed."""
    proc = subprocess.run([sys.executable, script, "--child", json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        print(f"  [{spec}] failed: {tail[0]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------


def machine() -> str:
    """One line naming the CPU, its cores and the library versions."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import numpy
    import torch
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}, NumPy {numpy.__version__}, {torch.get_num_threads()} torch threads")


def table(rows: list, columns: list) -> str:
    """A fixed-width text table of ``rows`` (dicts) over ``columns`` ((key, header, format))."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append(["-" if r.get(k) is None else format(r[k], f) for k, _, f in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def labelled(**sets: list) -> list:
    """The rows of every named set, each with a ``set`` column naming it
    (underscores read as spaces), for one CSV."""
    return [dict(r, set=name.replace("_", " ")) for name, rows in sets.items() for r in rows]


def write_csv(name: str, rows: list) -> pathlib.Path:
    """``results/NAME``, one row per dict, the columns in order of appearance."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print("wrote", path)
    return path


def plot_sweep(name: str, rows: list, title: str, panels: list, x: str = "V",
               xlabel: str = "V (vocabulary size, log scale)", log_y: tuple = ()) -> pathlib.Path | None:
    """A PNG with one panel per ``(key, y label)`` of ``panels``: that value
    against ``x``, one line per method, on a log scale for the keys in
    ``log_y``. None when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2))
    axes = [axes] if len(panels) == 1 else list(axes)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for ax, (key, label) in zip(axes, panels):
        for m in methods:
            pts = sorted((r[x], r[key]) for r in rows if r["method"] == m and r.get(key) is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
        ax.set_xscale("log", base=2)
        if key in log_y:
            ax.set_yscale("log")
            label += ", log scale"
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print("wrote", path)
    return path
