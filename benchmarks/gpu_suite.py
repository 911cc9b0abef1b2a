"""The device checks of the Triton kernels, as one script for a few minutes of GPU time.

    python benchmarks/gpu_suite.py                 # on a GPU: tests, graphs, timings (~5 min on an H200)
    python benchmarks/gpu_suite.py --smoke         # on CPU, under Triton's interpreter: tiny shapes (~1 min)

On a GPU, in order:

1. the tests of the Triton kernels on CUDA tensors, compiled
   (``pytest tests/test_triton.py``: the registry's sample, the odd sizes,
   the dispatch; with ``--all-tests``, ``CROSSENTROPY_SLOW=1``: every
   registry case through both Triton paths, minutes more; and the
   vocab-parallel functions at odd sizes on 1 and 2 gloo ranks sharing the
   GPU, ``tests/test_distributed.py``), unless ``--no-tests``;
2. a step that calls each kernel under ``torch.compile(fullgraph=True)`` and
   captured in a CUDA graph, then replayed, against the eager step's values
   (the kernels read nothing back to the host: both must work);
3. the copy bandwidth of the device (``dst.copy_(src)`` of 4 GiB, bytes read
   plus written), the floor for a kernel that reads the logits once and
   writes the gradient once;
4. forward + backward, time (CUDA events, median of ``--reps`` after two
   warm-ups) and extra peak memory (``torch.cuda.max_memory_allocated``
   during the step minus what was allocated before it, the gradients kept):
   cross-entropy at N=16384, V=128256 (Liger's shape; bfloat16 and float32
   logits) and linear cross-entropy at N=8192, H=2304, V=256000 (CCE's
   Gemma 2 head; bfloat16), each scaled down by ``--scale``, against torch
   eager, ``torch.compile``, the torch kernels of this project, and
   Liger-Kernel and cut-cross-entropy when they import;
5. the vocab-parallel functions on a real process group of one rank (NCCL
   on the GPU, gloo with ``--smoke``), which take the same Triton kernels:
   each function with every option against the single-process float64
   result at odd sizes (and that the Triton kernels are what ran), forward +
   backward time against this project's torch kernels at the shapes of 4
   (``check_ranks=False``: the check's all-gather and host read are a
   caller's choice), then ``torch.compile(fullgraph=True)`` and CUDA graph
   capture of a step calling each, last, so that a failed capture cannot
   disturb the timings.

It prints markdown tables (and writes them to ``--out`` when given). With
``--smoke`` (no GPU needed) the same code runs on CPU tensors under
``TRITON_INTERPRET=1`` at tiny shapes, with ``time.perf_counter`` and no
memory figures, graphs or compiled peers: that is what
``tests/test_gpu_suite.py`` runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, Triton's interpreter, tiny shapes")
    ap.add_argument("--no-tests", action="store_true", help="skip the pytest step")
    ap.add_argument("--all-tests", action="store_true", help="the pytest step with every registry case")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions (default 10; smoke 2)")
    ap.add_argument("--scale", type=float, default=1.0, help="rows scaled by this (a smaller GPU)")
    ap.add_argument("--out", default=None, help="also write the tables to this file")
    return ap.parse_args(argv)


# ---------------------------------------------------------------------------
# timing and memory
# ---------------------------------------------------------------------------


class Clock:
    """Median time of a step, and its extra peak memory on CUDA."""

    def __init__(self, torch, device, reps):
        self.torch, self.device, self.reps = torch, device, reps

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def measure(self, step):
        """(milliseconds, extra peak MiB or None) of ``step()``."""
        torch = self.torch
        for _ in range(2):  # warm-ups: compilation, autotuning, the allocator's first blocks
            out = step()
            del out
        self.sync()
        times = []
        for _ in range(self.reps):
            if self.device == "cuda":
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = step()
                stop.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(stop))
            else:
                t0 = time.perf_counter()
                out = step()
                times.append(1e3 * (time.perf_counter() - t0))
            del out
        peak = None
        if self.device == "cuda":
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            out = step()  # its gradients stay alive until the peak is read
            torch.cuda.synchronize()
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            del out
        return statistics.median(times), peak


def bandwidth(torch, device, smoke):
    """Copy bandwidth in GB/s, counting bytes read and written."""
    n = (1 << 22) if smoke else (1 << 30)  # 16 MiB / 4 GiB of float32
    src = torch.empty(n, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    clock = Clock(torch, device, 3 if smoke else 10)
    ms, _ = clock.measure(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


# ---------------------------------------------------------------------------
# the methods
# ---------------------------------------------------------------------------


def _torch_kernels(torch, fn):
    """``fn`` with the Triton dispatch off: this project's torch kernels on the same tensors."""
    from crossentropy import _triton

    def run(*a, **k):
        saved = _triton.wanted
        _triton.wanted = lambda x: False
        try:
            return fn(*a, **k)
        finally:
            _triton.wanted = saved

    return run


def ce_methods(torch, device, smoke):
    import torch.nn.functional as F

    import crossentropy as ce
    from crossentropy import _triton

    def ours(x, y):
        with _triton.forced():
            return ce.cross_entropy(x, y)

    def ours_inplace(x, y):
        with _triton.forced():
            return ce.cross_entropy(x, y, inplace_backward=True)

    methods = {"ours (Triton)": ours, "ours (Triton, inplace_backward)": ours_inplace,
               "ours (torch kernel)": _torch_kernels(torch, ce.cross_entropy), "torch eager": F.cross_entropy}
    if not smoke:
        methods["torch.compile"] = torch.compile(F.cross_entropy)
        try:
            from liger_kernel.transformers.functional import liger_cross_entropy

            methods["Liger-Kernel"] = liger_cross_entropy
        except Exception as e:  # not installed, or not importable here
            methods["Liger-Kernel"] = _missing(e)
    return methods


def linear_methods(torch, device, smoke):
    import torch.nn.functional as F

    import crossentropy as ce
    from crossentropy import _triton

    def ours(x, W, y):
        with _triton.forced():
            return ce.linear_cross_entropy(x, W, y)

    def eager(x, W, y):
        return F.cross_entropy((x @ W.T).float(), y)

    methods = {"ours (Triton)": ours, "ours (torch kernel)": _torch_kernels(torch, ce.linear_cross_entropy),
               "torch eager": eager}
    if not smoke:
        methods["torch.compile"] = torch.compile(eager)
        try:
            from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

            methods["Liger-Kernel"] = lambda x, W, y: liger_fused_linear_cross_entropy(x, W, y)
        except Exception as e:
            methods["Liger-Kernel"] = _missing(e)
        try:
            from cut_cross_entropy import linear_cross_entropy as cce

            methods["CCE (its default, gradient filter on)"] = lambda x, W, y: cce(x, W, y)
            methods["CCE (filter_eps=None: exact)"] = lambda x, W, y: cce(x, W, y, filter_eps=None)
        except Exception as e:
            methods["CCE"] = _missing(e)
    return methods


def process_group(device):
    """A real process group of one rank, for the vocab-parallel functions:
    NCCL on a GPU (gloo where NCCL is missing), gloo on CPU. Returns the backend."""
    import tempfile

    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device == "cuda" and dist.is_nccl_available() else "gloo"
        init = os.path.join(tempfile.mkdtemp(), "init")
        dist.init_process_group(backend, init_method=f"file://{init}", rank=0, world_size=1)
    return dist.get_backend()


def vocab_parallel_checks(torch, device, smoke):
    """Both vocab-parallel functions (float32 on the device, the Triton kernels)
    against single-process float64 on CPU, at sizes that are no multiple of a
    tile, with and without every option: one row each."""
    import crossentropy as ce
    from crossentropy import _triton
    from crossentropy.cases import paths
    from crossentropy.distributed import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy

    N, H, V = (9, 20, 37) if smoke else (301, 200, 5003)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, H, generator=g, dtype=torch.float64)
    W = torch.randn(V, H, generator=g, dtype=torch.float64) / H**0.5
    b = torch.randn(V, generator=g, dtype=torch.float64)
    y = torch.randint(0, V, (N,), generator=g)
    y[::5] = -100
    w = torch.rand(V, generator=g, dtype=torch.float64) + 0.5
    options = {"defaults": {}, "every option": dict(weight=w, label_smoothing=0.1, z_loss=1e-3, softcap=30.0,
                                                   reduction="sum")}
    loaded = []
    load = _triton.load
    _triton.load = lambda stem: loaded.append(stem) or load(stem)
    rows = []
    tol = paths.tolerance("float32")
    try:
        for label, kw in options.items():
            dev_kw = {k: v.float().to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
            logits = x @ W.T + b
            for fn in ("vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy"):
                del loaded[:]
                if fn == "vocab_parallel_cross_entropy":
                    ref_leaves = [logits.clone().requires_grad_(True)]
                    want = ce.cross_entropy(ref_leaves[0], y, **kw)
                    leaves = [logits.float().to(device).requires_grad_(True)]
                    with _triton.forced(block=16 if smoke else None):
                        got = vocab_parallel_cross_entropy(leaves[0], y.to(device), **dev_kw)
                else:
                    ref_leaves = [a.clone().requires_grad_(True) for a in (x, W, b)]
                    want = ce.linear_cross_entropy(*ref_leaves[:2], y, linear_bias=ref_leaves[2], **kw)
                    leaves = [a.float().to(device).requires_grad_(True) for a in (x, W, b)]
                    with _triton.forced(block=16 if smoke else None):
                        got = vocab_parallel_linear_cross_entropy(leaves[0], leaves[1], y.to(device),
                                                                  linear_bias_shard=leaves[2], **dev_kw)
                diffs = [paths.error(got.detach().double().cpu().numpy(), want.detach().numpy())]
                for a, r in zip(torch.autograd.grad(got, leaves), torch.autograd.grad(want, ref_leaves)):
                    diffs.append(paths.error(a.double().cpu().numpy(), r.numpy()))
                kernel = "cross_entropy" if fn == "vocab_parallel_cross_entropy" else "linear"
                ok = max(diffs) <= tol and kernel in loaded
                rows.append((fn, label, f"{max(diffs):.2e}", "passed" if ok else
                             "FAILED" + ("" if kernel in loaded else ": the Triton kernels did not run")))
    finally:
        _triton.load = load
    return rows


def vocab_parallel_methods(torch, kind, smoke):
    """``kind`` "ce" or "linear": the vocab-parallel function (group of one,
    ``check_ranks=False``) on the Triton kernels and on the torch kernels, and
    the one-device function on the Triton kernels."""
    import crossentropy as ce
    from crossentropy import _triton
    from crossentropy.distributed import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy

    def forced(fn):
        def run(*a, **k):
            with _triton.forced():
                return fn(*a, **k)

        return run

    if kind == "ce":
        vp = lambda x, y: vocab_parallel_cross_entropy(x, y, check_ranks=False)  # noqa: E731
        one = ce.cross_entropy
    else:
        vp = lambda x, W, y: vocab_parallel_linear_cross_entropy(x, W, y, check_ranks=False)  # noqa: E731
        one = ce.linear_cross_entropy
    return {"ours vocab-parallel (Triton)": forced(vp), "ours vocab-parallel (torch kernel)": _torch_kernels(torch, vp),
            "ours one device (Triton)": forced(one)}


def _missing(e):
    def missing(*a, **k):
        raise RuntimeError(f"not importable: {type(e).__name__}: {e}")

    return missing


# ---------------------------------------------------------------------------
# the steps
# ---------------------------------------------------------------------------


def run_tests(smoke, every=False):
    """pytest of the Triton tests in a subprocess; returns (ok, last line)."""
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.join(ROOT, "tests",
                                                                                        "test_triton.py")]
    if smoke:  # the step itself, not the whole set: a test that is quick under the interpreter
        cmd += ["-k", "sample_covers or untouched"]
    else:  # and the vocab-parallel functions on the Triton kernels, 1 and 2 gloo ranks sharing the GPU
        cmd.append(os.path.join(ROOT, "tests", "test_distributed.py") +
                   "::test_vocab_parallel_on_the_triton_kernels_at_odd_sizes")
        if every:
            env["CROSSENTROPY_SLOW"] = "1"
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in out.stdout.strip().splitlines() if ln.strip()]
    return out.returncode == 0, (lines[-1] if lines else out.stderr.strip()[-300:])


def _step_inputs(torch, device):
    """The small bfloat16 inputs of the graph checks' steps: logits, targets,
    hidden states, a classifier weight, and the generator that made them."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(64, 1000, device=device, generator=g, dtype=torch.bfloat16)
    y = torch.randint(0, 1000, (64,), device=device, generator=g)
    h = torch.randn(64, 128, device=device, generator=g, dtype=torch.bfloat16)
    W = torch.randn(1000, 128, device=device, generator=g, dtype=torch.bfloat16) / 12
    return g, x, y, h, W


def kernel_cases(torch, device):
    """A step of each kernel for :func:`graph_checks`: name -> (loss of the leaves, leaves)."""
    import crossentropy as ce

    g, x, y, h, W = _step_inputs(torch, device)
    t = torch.rand(64, 1000, device=device, generator=g)
    cases = {
        "cross_entropy": (lambda a: ce.cross_entropy(a, y, label_smoothing=0.1, z_loss=1e-4), (x,)),
        "linear_cross_entropy": (lambda a, b: ce.linear_cross_entropy(a, b, y), (h, W)),
        "binary_cross_entropy_with_logits": (lambda a: ce.binary_cross_entropy_with_logits(a, t), (x,)),
        "sigmoid_focal_loss": (lambda a: ce.sigmoid_focal_loss(a, t).sum(), (x,)),
    }
    return cases


def vocab_parallel_cases(torch, device):
    """The vocab-parallel functions' steps for :func:`graph_checks` (the group of one rank)."""
    from crossentropy.distributed import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy

    _, x, y, h, W = _step_inputs(torch, device)
    return {
        "vocab_parallel_cross_entropy": (lambda a: vocab_parallel_cross_entropy(
            a, y, label_smoothing=0.1, z_loss=1e-4, check_ranks=False), (x,)),
        "vocab_parallel_linear_cross_entropy": (lambda a, b: vocab_parallel_linear_cross_entropy(
            a, b, y, check_ranks=False), (h, W)),
    }


def graph_checks(torch, device, cases):
    """torch.compile(fullgraph=True) and CUDA graph capture of a step calling each of ``cases``."""
    rows = []
    for name, (f, args) in cases.items():
        leaves = [a.detach().clone().requires_grad_(True) for a in args]

        def step(*ls):
            loss = f(*ls)
            return (loss, *torch.autograd.grad(loss, ls))

        want = step(*leaves)
        for how in ("torch.compile(fullgraph=True)", "CUDA graph"):
            try:
                if how == "CUDA graph":
                    static = [a.detach().clone().requires_grad_(True) for a in args]
                    stream = torch.cuda.Stream()
                    stream.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(stream):
                        for _ in range(2):
                            step(*static)
                    torch.cuda.current_stream().wait_stream(stream)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        outs = step(*static)
                    graph.replay()
                    torch.cuda.synchronize()
                    got = outs
                else:  # the loss compiled whole (no graph break), its backward run by autograd
                    loss = torch.compile(f, fullgraph=True)(*leaves)
                    got = (loss, *torch.autograd.grad(loss, leaves))
                err = max(float((a.float() - b.float()).abs().max()) for a, b in zip(got, want))
                rows.append((name, how, "works" if err <= 1e-2 else f"runs, but differs by {err:.3g}"))
            except Exception as e:
                rows.append((name, how, f"fails: {type(e).__name__}: {str(e).splitlines()[0][:120]}"))
    return rows


def time_methods(torch, device, methods, make, bound_ms, clock):
    """One table row per method: time, ratio to the bound, extra peak."""
    rows = []
    for name, f in methods.items():
        try:
            leaves, rest = make()

            def step():
                loss = f(*leaves, *rest)
                return torch.autograd.grad(loss, leaves)

            ms, peak = clock.measure(step)
            rows.append((name, f"{ms:.3f}", "" if bound_ms is None else f"{ms / bound_ms:.2f}",
                         "-" if peak is None else f"{peak:.0f}"))
        except Exception as e:
            rows.append((name, f"error: {type(e).__name__}: {str(e).splitlines()[0][:100]}", "", ""))
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()
    return rows


def _ce_inputs(torch, device, N, V, dt):
    """([logits leaf], [targets]) for a timed cross-entropy step."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(N, V, device=device, generator=g).to(dt).requires_grad_(True)
    return [x], [torch.randint(0, V, (N,), device=device, generator=g)]


def _linear_inputs(torch, device, N, H, V, dt):
    """([input, weight leaves], [targets]) for a timed linear cross-entropy step."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(N, H, device=device, generator=g).to(dt).requires_grad_(True)
    W = (torch.randn(V, H, device=device, generator=g) / H**0.5).to(dt).requires_grad_(True)
    return [x, W], [torch.randint(0, V, (N,), device=device, generator=g)]


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(out)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, os.path.join(ROOT, "src"))
    if args.smoke:
        from crossentropy import _triton

        _triton.use_interpreter()  # before anything imports triton
    import torch

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke on a CPU")
    reps = args.reps or (2 if args.smoke else 10)
    clock = Clock(torch, device, reps)
    report = []

    def say(text=""):
        print(text, flush=True)
        report.append(text)

    name = "CPU, Triton's interpreter (smoke: tiny shapes, times mean nothing)" if args.smoke else \
        torch.cuda.get_device_name()
    import triton

    say(f"# GPU suite: {name}; torch {torch.__version__}, triton {triton.__version__}")
    if not args.no_tests:
        ok, line = run_tests(args.smoke, args.all_tests)
        what = "smoke selection" if args.smoke else \
            "test_triton.py, test_distributed.py's Triton test" + (", CROSSENTROPY_SLOW=1" if args.all_tests else "")
        say(f"\ntests ({what}): "
            f"{'passed' if ok else 'FAILED'}: {line}")
    if device == "cuda":
        say("\n" + table(("kernel", "step under", "result"), graph_checks(torch, device, kernel_cases(torch, device))))
    bw = bandwidth(torch, device, args.smoke)
    say(f"\ncopy bandwidth (read + write): {bw:.0f} GB/s")

    s = args.scale
    ce_shapes = [(16, 100, torch.float32)] if args.smoke else \
        [(int(16384 * s), 128256, torch.bfloat16), (int(16384 * s), 128256, torch.float32)]
    for N, V, dt in ce_shapes:
        make = lambda N=N, V=V, dt=dt: _ce_inputs(torch, device, N, V, dt)  # noqa: E731

        elem = torch.finfo(dt).bits // 8
        bound = 2 * N * V * elem / (bw * 1e9) * 1e3  # read the logits once, write the gradient once
        rows = time_methods(torch, device, ce_methods(torch, device, args.smoke), make, bound, clock)
        say(f"\n## cross-entropy fwd+bwd, N={N}, V={V}, {str(dt).replace('torch.', '')} logits "
            f"(HBM bound {bound:.3f} ms)\n")
        say(table(("method", "ms", "x bound", "extra peak MiB"), rows))

    lin_shapes = [(33, 32, 70, torch.float32)] if args.smoke else [(int(8192 * s), 2304, 256000, torch.bfloat16)]
    for N, H, V, dt in lin_shapes:
        make = lambda N=N, H=H, V=V, dt=dt: _linear_inputs(torch, device, N, H, V, dt)  # noqa: E731

        rows = time_methods(torch, device, linear_methods(torch, device, args.smoke), make, None, clock)
        say(f"\n## linear cross-entropy fwd+bwd, N={N}, H={H}, V={V}, {str(dt).replace('torch.', '')}\n")
        say(table(("method", "ms", "", "extra peak MiB"), rows))

    backend = process_group(device)
    checks = vocab_parallel_checks(torch, device, args.smoke)
    say(f"\nvocab-parallel checks (one rank, {backend}): "
        f"{'passed' if all(r[-1] == 'passed' for r in checks) else 'FAILED'}\n")
    say(table(("function", "options", "max diff (relative)", "result"), checks))
    N, V, dt = ce_shapes[0]
    make = lambda N=N, V=V, dt=dt: _ce_inputs(torch, device, N, V, dt)  # noqa: E731
    rows = time_methods(torch, device, vocab_parallel_methods(torch, "ce", args.smoke), make, None, clock)
    say(f"\n## vocab-parallel cross-entropy fwd+bwd, one rank ({backend}), N={N}, V={V}, "
        f"{str(dt).replace('torch.', '')}\n")
    say(table(("method", "ms", "", "extra peak MiB"), rows))
    N, H, V, dt = lin_shapes[0]
    make = lambda N=N, H=H, V=V, dt=dt: _linear_inputs(torch, device, N, H, V, dt)  # noqa: E731
    rows = time_methods(torch, device, vocab_parallel_methods(torch, "linear", args.smoke), make, None, clock)
    say(f"\n## vocab-parallel linear cross-entropy fwd+bwd, one rank ({backend}), N={N}, H={H}, V={V}, "
        f"{str(dt).replace('torch.', '')}\n")
    say(table(("method", "ms", "", "extra peak MiB"), rows))
    if device == "cuda":
        say("\n" + table(("function", "step under", "result"),
                          graph_checks(torch, device, vocab_parallel_cases(torch, device))))
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(report) + "\n")
    import torch.distributed as dist

    dist.destroy_process_group()
    return report


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception:
        traceback.print_exc()
        raise SystemExit(1)
