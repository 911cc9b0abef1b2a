"""``crossentropy check``: the registry of cases the tests run
(``crossentropy.cases``), through every path, against float64 PyTorch
references, and a sample against float64 finite differences; with
``--transforms``, every float64 case under PyTorch's transforms too
(``crossentropy.cases.transforms``).

Without torch only the finite differences run (the references are PyTorch's).
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

import crossentropy as ce

__all__ = ["add_parser", "run", "run_checks"]

# the registry's paths that run in one process on CPU (tests/test_registry.py runs the same)
LOCAL_PATHS = ("numpy", "numpy-core", "numpy-columns", "torch-core", "torch-kernel", "torch-rows", "torch-chunks", "linear")


def add_parser(sub):
    """The ``check`` subcommand and its options."""
    c = sub.add_parser(
        "check", help="run the registry of cases through every path",
        description="Every case of the registry the tests run (every loss, PyTorch's case grid, the "
        "extremes) through every path (NumPy value_and_grad, torch autograd through the core, the torch "
        "kernels, linear cross-entropy), in each dtype, against float64 PyTorch references, and one case in "
        "--fd-every of the small ones against float64 finite differences. Exits 1 if any exceeds its "
        "tolerance.",
    )
    c.add_argument("--dtypes", default="float64,float32", metavar="LIST",
                   help="comma-separated dtypes of float64, float32, bfloat16, float16, or 'all' "
                   "(default float64,float32)")
    c.add_argument("--paths", default="all", metavar="LIST",
                   help=f"comma-separated paths of {', '.join(LOCAL_PATHS)}, or 'all' (default)")
    c.add_argument("--fd-tol", type=float, default=1e-8, help="finite-difference tolerance (1e-8, relative)")
    c.add_argument("--fd-every", type=int, default=10, metavar="K",
                   help="finite differences on one small case in K (default 10; 1 for all)")
    c.add_argument("--transforms", action="store_true",
                   help="also every float64 case under double backward, torch.func and forward-mode AD, "
                   "against PyTorch's own functions under the same transform (about two minutes)")
    return c


def _choose(option, text, allowed):
    """The comma-separated values of ``--option`` (or all of ``allowed``), each checked."""
    chosen = allowed if text == "all" else tuple(v.strip() for v in text.split(","))
    bad = [v for v in chosen if v not in allowed]
    if bad:
        from .common import UsageError

        raise UsageError(f"crossentropy check: error: --{option} {','.join(bad)}: not one of {', '.join(allowed)}")
    return chosen


def _dtypes(text):
    from ..cases.paths import DTYPES

    return _choose("dtypes", text, DTYPES)


def _paths(text):
    return _choose("paths", text, LOCAL_PATHS)


def _finite_difference_cases(every):
    from ..cases import CASES

    small = defaultdict(list)
    for c in CASES:
        if not c.tags & {"value-only", "extreme"} and np.size(c.make()[0][0]) <= 48:
            small[c.fn].append(c)
    return [c for cases in small.values() for c in cases[::max(1, every)]]  # some of every loss


def run_checks(dtypes=("float64", "float32"), fd_every=10, have_torch=True, local_paths=LOCAL_PATHS):
    """One dict per function: name, runs, worst (error / tolerance over every
    path and dtype), failures (ids), fd (the worst relative FD error)."""
    from ..cases import CASES

    rows = defaultdict(lambda: {"runs": 0, "worst": 0.0, "failures": [], "fd": None})
    if have_torch:
        from ..cases import paths

        for case in CASES:
            for path in local_paths:
                for dtype in dtypes:
                    if not paths.accepts(case, path, dtype):
                        continue
                    r = paths.check(case, path, dtype)
                    row = rows[case.fn]
                    row["runs"] += 1
                    row["worst"] = max(row["worst"], r.value_error / r.tolerance,
                                       r.grad_error / paths.tolerance(dtype))
                    if not r.ok:
                        row["failures"].append(f"{case.id} [{path}, {dtype}]: {r}")
    for case in _finite_difference_cases(fd_every):
        args, kwargs = case.make()
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # kl_div's "mean" warning
                err = ce.check_grad(case.function, *args, **kwargs).max_rel_error
        row = rows[case.fn]
        row["fd"] = max(err, row["fd"] or 0.0)
    return [{"name": name, **row} for name, row in sorted(rows.items())]


def run_transforms():
    """One dict per transform: name, runs, skipped (the reference does not run
    under it), worst (error over the float64 tolerance), failures (ids)."""
    from ..cases import CASES, transforms
    from ..cases.paths import tolerance

    rows = {t: {"runs": 0, "skipped": 0, "worst": 0.0, "failures": []} for t in transforms.TRANSFORMS}
    for case in CASES:
        for t in transforms.TRANSFORMS:
            if not transforms.accepts(case, t):
                continue
            r = transforms.check(case, t)
            row = rows[t]
            if not r.applies:
                row["skipped"] += 1
                continue
            row["runs"] += 1
            row["worst"] = max(row["worst"], r.error / tolerance("float64"))
            if not r.ok:
                row["failures"].append(f"{case.id} [{t}]: {r}")
    return [{"name": t, **row} for t, row in rows.items()]


def _transforms_table(out, err):
    from rich.table import Table

    t0 = time.perf_counter()
    results = run_transforms()
    table = Table(title=f"Every float64 case under PyTorch's transforms, against PyTorch's own functions "
                  f"({time.perf_counter() - t0:.0f} s)", title_justify="left")
    for col in ("transform", "runs", "not applicable", "worst / tolerance", "ok"):
        table.add_column(col, justify="left" if col == "transform" else "right", no_wrap=True)
    for r in results:
        table.add_row(r["name"], str(r["runs"]), str(r["skipped"]), f"{r['worst']:.2f}",
                      "[green]yes[/]" if not r["failures"] else "[red]NO[/]")
    out.print(table)
    failed = [line for r in results for line in r["failures"]]
    for line in failed[:5]:
        err.print(f"[red]failed:[/] {line}", soft_wrap=True)
    return len(failed)


def run(args, out, err) -> int:
    from rich.table import Table

    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
    dtypes, local_paths = _dtypes(args.dtypes), _paths(args.paths)
    t0 = time.perf_counter()
    results = run_checks(dtypes, args.fd_every, have_torch, local_paths)
    seconds = time.perf_counter() - t0
    table = Table(
        title=f"Every registry case through {', '.join(local_paths)} in {', '.join(dtypes)}: the worst error "
        f"over its tolerance",
        title_justify="left",
    )
    for col in ("loss", "runs", "worst / tolerance", f"finite differences (1 in {args.fd_every})", "ok"):
        table.add_column(col, justify="left" if col == "loss" else "right", no_wrap=True)
    failures = 0
    for r in results:
        fd_ok = r["fd"] is None or r["fd"] <= args.fd_tol
        ok = not r["failures"] and fd_ok
        failures += not ok
        worst = "-" if not r["runs"] else f"{r['worst']:.2f}"
        fd = "-" if r["fd"] is None else (f"{r['fd']:.1e}" if fd_ok else f"[red]{r['fd']:.1e}[/]")
        table.add_row(r["name"], str(r["runs"]), worst if not r["failures"] else f"[red]{worst}[/]", fd,
                      "[green]yes[/]" if ok else "[red]NO[/]")
    out.print(table)
    if not have_torch:
        out.print("torch is not installed: compared with finite differences only.")
    for r in results:
        for line in r["failures"][:5]:
            err.print(f"[red]failed:[/] {line}", soft_wrap=True)
    runs = sum(r["runs"] for r in results)
    if getattr(args, "transforms", False):
        if not have_torch:
            err.print("[red]--transforms needs torch[/]")
            return 1
        failures += _transforms_table(out, err)
    if failures:
        err.print(f"[red]{failures} of {len(results)} losses exceed their tolerance[/]")
        return 1
    out.print(f"All {runs} runs of {len(results)} losses within tolerance ({seconds:.0f} s).")
    return 0
