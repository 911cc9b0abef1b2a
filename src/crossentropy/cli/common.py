"""What the subcommands share: the program's name, the one-line usage error,
the argument parser that raises it, and the test-set metrics that ``fit``
reports and ``predict`` reproduces."""

from __future__ import annotations

import argparse

import numpy as np

__all__ = ["PROG", "ECE_BINS", "UsageError", "Parser", "evaluate", "progress_bar", "reading", "check_labels"]

PROG = "crossentropy"
ECE_BINS = 15


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block, no traceback
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def check_labels(classes, y, source, target):
    """A DataError naming the first label of ``y`` that is not one of the
    model's ``classes`` (whose log-loss would be infinite), if there is one."""
    known = np.isin(y, classes)
    if known.all():
        return
    i = int(np.argmax(~known))
    unseen = np.unique(y[~known])
    shown = ", ".join(map(repr, [c.item() for c in classes[:10]])) + (", ..." if len(classes) > 10 else "")
    from .data import DataError

    raise DataError(
        f"{source}: label {y[i].item()!r} in row {i + 1} of the target column {target!r} is not one "
        f"of the model's classes ({shown}); {unseen.size} unseen label(s) in {int((~known).sum())} "
        "row(s), whose log-loss would be infinite: drop those rows")


def evaluate(est, Z, y):
    """Accuracy, mean log-loss (natural log) and ECE of a fitted model on (Z, y);
    every label of ``y`` must be one of the model's classes (:func:`check_labels`)."""
    from ..models import expected_calibration_error

    pred = est.predict(Z)
    proba = est.predict_proba(Z)
    logp = est.predict_log_proba(Z)
    idx = np.searchsorted(est.classes_, y)
    ll = float(-np.mean(logp[np.arange(idx.size), idx]))
    ece, bins = expected_calibration_error(y, proba, est.classes_, n_bins=ECE_BINS)
    return {"accuracy": float(np.mean(pred == y)), "log_loss": ll, "ece": ece}, pred, bins


def progress_bar(err, quiet):
    """The rich progress display of a command's long steps, on stderr; off
    under ``--quiet`` and when stderr is not a terminal (a log or a pipe gets
    the final table only)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description:<32}"), BarColumn(bar_width=30),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
        console=err, disable=quiet or not err.is_terminal, transient=False,
    )


def reading(progress, data):
    """``(task, callback)``: a progress task for loading ``data`` and the
    ``progress(done, total)`` callback that :func:`.data.load_data` calls."""
    import os

    name = os.path.basename(str(data))
    size = os.path.getsize(data) if data and os.path.isfile(data) else None
    info = f"{size / 1e6:.0f} MB" if size else "bundled dataset"
    task = progress.add_task(f"reading {name}"[:32], total=None, info=info)

    def update(done, total):
        progress.update(task, completed=done, total=total)

    return task, update
