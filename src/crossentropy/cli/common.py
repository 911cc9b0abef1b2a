"""What the subcommands share: the program's name, the one-line usage error,
the argument parser that raises it, and the test-set metrics that ``fit``
reports and ``predict`` reproduces."""

from __future__ import annotations

import argparse

import numpy as np

__all__ = ["PROG", "ECE_BINS", "UsageError", "Parser", "evaluate"]

PROG = "crossentropy"
ECE_BINS = 15


class UsageError(Exception):
    """Bad input from the user: one line on stderr, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block, no traceback
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def evaluate(est, Z, y):
    """Accuracy, mean log-loss (natural log) and ECE of a fitted model on (Z, y)."""
    from ..models import expected_calibration_error

    pred = est.predict(Z)
    proba = est.predict_proba(Z)
    logp = est.predict_log_proba(Z)
    known = np.isin(y, est.classes_)
    idx = np.searchsorted(est.classes_, y[known])
    ll = float(-np.mean(logp[known][np.arange(idx.size), idx])) if known.all() else float("inf")
    ece, bins = expected_calibration_error(y, proba, est.classes_, n_bins=ECE_BINS)
    return {"accuracy": float(np.mean(pred == y)), "log_loss": ll, "ece": ece}, pred, bins
