"""``crossentropy predict``: apply a saved model to a table, and report its
accuracy, log-loss and calibration error when the table has the target column."""

from __future__ import annotations

import json
import os

from .common import evaluate
from .data import DataError, load_data

__all__ = ["add_parser", "run"]


def add_parser(sub):
    """The ``predict`` subcommand and its options."""
    pr = sub.add_parser(
        "predict", help="apply a saved model to a table",
        description="Apply a model saved by 'crossentropy fit' to DATA. When DATA has the "
        "model's target column, report accuracy, log-loss and calibration error.",
    )
    pr.add_argument("model", metavar="MODEL", help="a saved model: the .npz (or its .json sidecar)")
    pr.add_argument("data", metavar="DATA", help="a CSV/Parquet file or a bundled dataset name")
    pr.add_argument("--target", metavar="COL", help="the label column (default: the model's)")
    pr.add_argument("--out", metavar="FILE", help="write predictions and probabilities as CSV")
    pr.add_argument("--json", action="store_true", help="print the summary as JSON")
    return pr


def run(args, out, err) -> int:
    """``crossentropy predict``: returns the exit status."""
    from ..models import load_model
    from .common import check_labels, progress_bar, reading
    from .table import write_table

    if not os.path.exists(args.model):
        raise DataError(f"{args.model}: no such model file")
    if args.out:  # before any work: a missing folder is a typo to hear about at once
        folder = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(folder):
            raise DataError(f"--out {args.out}: the folder {os.path.dirname(args.out) or folder} "
                            "does not exist (create it first)")
        if os.path.isdir(args.out):
            raise DataError(f"--out {args.out} is a folder; name the CSV file to write")
    try:
        model = load_model(args.model)
    except (ValueError, KeyError, OSError, TypeError) as e:
        raise DataError(str(e).splitlines()[0]) from None
    target = args.target or model.meta.get("target")
    with progress_bar(err, False) as progress:
        _, update = reading(progress, args.data)
        ds = load_data(args.data, target, features=model.feature_names,
                       require_target=args.target is not None, progress=update)
    est = model.estimator
    if ds.y is not None:
        check_labels(est.classes_, ds.y, args.data, ds.target)
    Z = model.transform(ds.X)
    pred = est.predict(Z)
    proba = est.predict_proba(Z)
    summary = {"model": args.model, "data": args.data, "rows": int(len(Z)),
               "loss": model.meta["params"]["loss"]}
    if ds.y is not None:
        metrics, _, _ = evaluate(est, Z, ds.y)
        summary.update(metrics)
    if args.out:
        columns = {"prediction": pred}
        columns.update((f"p({c})", proba[:, j]) for j, c in enumerate(est.classes_.tolist()))
        try:
            write_table(args.out, columns)
        except OSError as e:
            raise DataError(f"--out {args.out}: cannot write it ({e.strerror or e})") from None
        summary["predictions"] = args.out
    if args.json:
        print(json.dumps(summary))
        return 0
    from rich.table import Table

    out.print(f"[bold]{args.model}[/] on [bold]{args.data}[/]", soft_wrap=True)
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("rows", str(summary["rows"]))
    if "accuracy" in summary:
        table.add_row("accuracy", f"{100 * summary['accuracy']:.2f}%")
        table.add_row("log-loss", f"{summary['log_loss']:.4f}")
        table.add_row("ECE", f"{summary['ece']:.4f}")
    if args.out:
        table.add_row("predictions", args.out)
    out.print(table)
    if not args.out and "accuracy" not in summary:
        err.print("No target column in DATA and no --out FILE: nothing to report beyond the row count.")
    return 0
