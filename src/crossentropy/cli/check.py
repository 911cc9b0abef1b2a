"""``crossentropy check``: every loss's analytic gradient against float64 finite
differences, and value and gradient against PyTorch's (float64 autograd) where
torch is installed.

The cases are listed by :func:`_check_cases` and run by :func:`run_checks`.
"""

from __future__ import annotations

import numpy as np

import crossentropy as ce

__all__ = ["add_parser", "run", "run_checks"]


def add_parser(sub):
    """The ``check`` subcommand and its options."""
    c = sub.add_parser(
        "check", help="check every loss's analytic gradient",
        description="For every loss: the largest difference between its analytic gradient and "
        "float64 finite differences, and between value and gradient and PyTorch's (float64 "
        "autograd) where torch is installed. Exits 1 if any exceeds its tolerance.",
    )
    c.add_argument("--fd-tol", type=float, default=1e-7, help="finite-difference tolerance (1e-7)")
    c.add_argument("--torch-tol", type=float, default=1e-10, help="relative tolerance against torch (1e-10)")
    return c


def _check_cases():
    """(name, function, args, kwargs, torch reference or None). The reference
    takes torch float64 tensors (the first requires grad) and returns the value."""
    rng = np.random.default_rng(20240601)
    N, C = 6, 5
    x = 2 * rng.normal(size=(N, C))
    y = rng.integers(0, C, size=N)
    y_ign = y.copy()
    y_ign[[1, 4]] = -100
    w = rng.uniform(0.5, 2.0, size=C)
    probs = ce.softmax(rng.normal(size=(N, C)), axis=1)
    q = ce.softmax(rng.normal(size=(N, C)), axis=1)
    x3 = rng.normal(size=(3, C, 2))
    y3 = rng.integers(0, C, size=(3, 2))
    xb = 2 * rng.normal(size=(N, 3))
    tb = (rng.uniform(size=(N, 3)) < 0.5).astype(float)
    ts = rng.uniform(size=(N, 3))
    pb = rng.uniform(0.1, 0.9, size=(N, 3))
    wb = rng.uniform(0.5, 2.0, size=(N, 3))
    pw = rng.uniform(0.5, 3.0, size=3)

    def focal_ref(F, t, xx, yy, gamma, weight=None, eps=0.0):
        logp = F.log_softmax(xx, dim=1)
        a = F.one_hot(t.as_tensor(yy), C).to(xx.dtype) * (1 - eps) + eps / C
        wt = t.ones(C, dtype=xx.dtype) if weight is None else t.as_tensor(weight)
        rows = -(a * wt * (1 - logp.exp()) ** gamma * logp).sum(1)
        return rows.sum() / wt[t.as_tensor(yy)].sum()

    def sfl_ref(F, t, xx, tt, alpha, gamma):
        tt = t.as_tensor(tt)
        p = t.sigmoid(xx)
        loss = F.binary_cross_entropy_with_logits(xx, tt, reduction="none")
        loss = loss * (1 - (p * tt + (1 - p) * (1 - tt))) ** gamma
        if alpha >= 0:
            loss = loss * (alpha * tt + (1 - alpha) * (1 - tt))
        return loss.mean()

    def kl_ref(t, pp, qq):
        return (pp * (pp.log() - t.as_tensor(qq).log())).sum(-1)

    def js_ref(t, pp, qq):
        qq = t.as_tensor(qq)
        m = (pp + qq) / 2
        return ((pp * (pp / m).log()).sum(-1) + (qq * (qq / m).log()).sum(-1)) / 2

    return [
        ("cross_entropy", ce.cross_entropy, (x, y), {},
         lambda F, t, a, b: F.cross_entropy(a, t.as_tensor(b))),
        ("cross_entropy, label_smoothing=0.1", ce.cross_entropy, (x, y), {"label_smoothing": 0.1},
         lambda F, t, a, b: F.cross_entropy(a, t.as_tensor(b), label_smoothing=0.1)),
        ("cross_entropy, weight, ignore_index", ce.cross_entropy, (x, y_ign), {"weight": w},
         lambda F, t, a, b: F.cross_entropy(a, t.as_tensor(b), weight=t.as_tensor(w))),
        ("cross_entropy, weight, smoothing 0.2", ce.cross_entropy, (x, y),
         {"weight": w, "label_smoothing": 0.2},
         lambda F, t, a, b: F.cross_entropy(a, t.as_tensor(b), weight=t.as_tensor(w), label_smoothing=0.2)),
        ("cross_entropy, probability targets", ce.cross_entropy, (x, probs), {},
         lambda F, t, a, b: F.cross_entropy(a, t.as_tensor(b))),
        ("cross_entropy, (N, C, d), sum", ce.cross_entropy, (x3, y3), {"reduction": "sum"},
         lambda F, t, a, b: F.cross_entropy(a, t.as_tensor(b), reduction="sum")),
        ("cross_entropy, z_loss=0.01", ce.cross_entropy, (x, y), {"z_loss": 0.01},
         lambda F, t, a, b: F.cross_entropy(a, t.as_tensor(b)) + 0.01 * (t.logsumexp(a, 1) ** 2).mean()),
        ("cross_entropy, softcap=3", ce.cross_entropy, (x, y), {"softcap": 3.0},
         lambda F, t, a, b: F.cross_entropy(3.0 * t.tanh(a / 3.0), t.as_tensor(b))),
        ("nll_loss, weight", ce.nll_loss, (x, y), {"weight": w},
         lambda F, t, a, b: F.nll_loss(a, t.as_tensor(b), weight=t.as_tensor(w))),
        ("focal_loss, gamma=2", ce.focal_loss, (x, y), {"gamma": 2.0},
         lambda F, t, a, b: focal_ref(F, t, a, b, 2.0)),
        ("focal_loss, gamma=0.5, weight, smoothing", ce.focal_loss, (x, y),
         {"gamma": 0.5, "weight": w, "label_smoothing": 0.1},
         lambda F, t, a, b: focal_ref(F, t, a, b, 0.5, w, 0.1)),
        ("binary_cross_entropy, weight", ce.binary_cross_entropy, (pb, tb), {"weight": wb},
         lambda F, t, a, b: F.binary_cross_entropy(a, t.as_tensor(b), weight=t.as_tensor(wb))),
        ("binary_cross_entropy_with_logits", ce.binary_cross_entropy_with_logits, (xb, ts),
         {"weight": wb, "pos_weight": pw},
         lambda F, t, a, b: F.binary_cross_entropy_with_logits(
             a, t.as_tensor(b), weight=t.as_tensor(wb), pos_weight=t.as_tensor(pw))),
        ("sigmoid_focal_loss, alpha=0.25, gamma=2", ce.sigmoid_focal_loss, (xb, tb),
         {"alpha": 0.25, "gamma": 2.0, "reduction": "mean"},
         lambda F, t, a, b: sfl_ref(F, t, a, b, 0.25, 2.0)),
        ("sigmoid_focal_loss, no alpha, gamma=0.5, soft", ce.sigmoid_focal_loss, (xb, ts),
         {"alpha": -1.0, "gamma": 0.5, "reduction": "mean"},
         lambda F, t, a, b: sfl_ref(F, t, a, b, -1.0, 0.5)),
        ("entropy", ce.entropy, (probs,), {},
         lambda F, t, a: -(a * a.log()).sum(-1)),
        ("kl_divergence", ce.kl_divergence, (probs, q), {},
         lambda F, t, a, b: kl_ref(t, a, b)),
        ("js_divergence", ce.js_divergence, (probs, q), {},
         lambda F, t, a, b: js_ref(t, a, b)),
        ("kl_div, batchmean", ce.kl_div, (np.log(q), probs), {"reduction": "batchmean"},
         lambda F, t, a, b: F.kl_div(a, t.as_tensor(b), reduction="batchmean")),
        ("kl_div, log_target, sum", ce.kl_div, (np.log(q), np.log(probs)),
         {"reduction": "sum", "log_target": True},
         lambda F, t, a, b: F.kl_div(a, t.as_tensor(b), reduction="sum", log_target=True)),
    ]


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b), initial=0.0) / max(1.0, float(np.max(np.abs(b), initial=0.0))))


def run_checks():
    """``(rows, have_torch)``: one dict per case of :func:`_check_cases` with its
    name, fd (relative FD error), torch_value and torch_grad (None without torch)."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = F = None
    results = []
    for name, fn, args, kwargs, ref in _check_cases():
        fd = ce.check_grad(fn, *args, **kwargs).max_rel_error
        row = {"name": name, "fd": fd, "torch_value": None, "torch_grad": None}
        if torch is not None:
            value, grad = fn.value_and_grad(*args, **kwargs)
            g = None
            if np.ndim(value) > 0:
                g = np.random.default_rng(1).uniform(0.5, 1.5, size=np.shape(value))
                value, grad = fn.value_and_grad(*args, grad_output=g, **kwargs)
            xt = torch.tensor(args[0], dtype=torch.float64, requires_grad=True)
            vt = ref(F, torch, xt, *args[1:])
            vt.backward(None if g is None else torch.as_tensor(g))
            row["torch_value"] = _rel(value, vt.detach().numpy())
            row["torch_grad"] = _rel(grad, xt.grad.numpy())
        results.append(row)
    return results, torch is not None


def run(args, out, err) -> int:
    """``crossentropy check``: returns the exit status (1 if a check fails)."""
    from rich.table import Table

    results, have_torch = run_checks()
    table = Table(
        title=f"Analytic gradients, largest relative difference (tolerance: {args.fd_tol:g} "
        f"vs finite differences, {args.torch_tol:g} vs torch)", title_justify="left",
    )
    table.add_column("loss", no_wrap=True)
    table.add_column("vs FD", justify="right")
    table.add_column("torch value", justify="right")
    table.add_column("torch grad", justify="right")
    table.add_column("ok", justify="center")
    failures = 0

    def cell(v, tol):
        if v is None:
            return "-", True
        ok = v <= tol
        return (f"{v:.1e}" if ok else f"[red]{v:.1e}[/]"), ok

    for r in results:
        a, ok1 = cell(r["fd"], args.fd_tol)
        b, ok2 = cell(r["torch_value"], args.torch_tol)
        c, ok3 = cell(r["torch_grad"], args.torch_tol)
        ok = ok1 and ok2 and ok3
        failures += not ok
        table.add_row(r["name"], a, b, c, "[green]yes[/]" if ok else "[red]NO[/]")
    out.print(table)
    if not have_torch:
        out.print("torch is not installed: compared with finite differences only.")
    if failures:
        err.print(f"[red]{failures} of {len(results)} checks exceed their tolerance[/]")
        return 1
    out.print(f"All {len(results)} checks within tolerance.")
    return 0
