"""The data of the ``crossentropy`` command: a labelled table (CSV, TSV or
Parquet, read by :mod:`.table` with pyarrow) or one of scikit-learn's bundled
datasets by name, as numeric features and class labels.

Only the standard library and NumPy at import; pyarrow and scikit-learn are
imported when a table or a bundled dataset is loaded. Every problem with the
user's data raises :class:`DataError`, whose message is one line the command
prints as is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .table import DataError, read_table, write_table

__all__ = [
    "DataError",
    "Dataset",
    "load_data",
    "write_csv",
    "BUNDLED",
    "DEFAULT_DATA",
    "DEFAULT_TARGETS",
]

# Bundled datasets: name -> sklearn.datasets loader.
BUNDLED = {
    "digits": "load_digits",
    "iris": "load_iris",
    "wine": "load_wine",
    "breast_cancer": "load_breast_cancer",
}
DEFAULT_DATA = "digits"

# The target column when none is named: the first of these present, else the last column.
DEFAULT_TARGETS = ("target", "label", "class", "y")


@dataclass
class Dataset:
    name: str
    X: np.ndarray  # (n, d) float64
    y: np.ndarray | None  # (n,) int64 or str labels; None when absent
    feature_names: list
    target: str


def load_data(data, target=None, *, features=None, require_target=True, progress=None) -> Dataset:
    """A file path, or a bundled dataset's name (a file of that name wins).
    ``progress(done, total)``: see :func:`.table.read_table`."""
    data = DEFAULT_DATA if data is None else data
    key = data.lower().replace("-", "_")
    if not os.path.exists(data) and key in BUNDLED:
        ds = _bundled(key, target)
        if features is not None:
            missing = [f for f in features if f not in ds.feature_names]
            if missing:
                raise DataError(f"{data}: the model's feature column(s) {missing[:5]} are missing")
            ds.X = ds.X[:, [ds.feature_names.index(f) for f in features]]
            ds.feature_names = list(features)
        return ds
    if not os.path.exists(data):
        raise DataError(f"{data}: no such file, and not a bundled dataset ({', '.join(BUNDLED)})")
    X, y, names, target = read_table(data, target, features=features,
                                     require_target=require_target, progress=progress)
    return Dataset(os.path.basename(data), X, y, names, target)


def _bundled(name: str, target) -> Dataset:
    from sklearn import datasets

    if target not in (None, "target"):
        raise DataError(f"the bundled dataset {name!r} has one label column, 'target', not {target!r}")
    bunch = getattr(datasets, BUNDLED[name])()
    X = np.asarray(bunch.data, dtype=np.float64)
    names = getattr(bunch, "feature_names", None)
    names = [f"x{i}" for i in range(X.shape[1])] if names is None else list(names)
    y = np.asarray(bunch.target)
    if name != "digits":  # class names read better than 0, 1, 2
        y = np.asarray(bunch.target_names)[y].astype(str)
    return Dataset(name, X, y, [str(n) for n in names], "target")


def write_csv(path, X, y, feature_names, target) -> None:
    """Write features and labels as CSV (floats in their shortest exact form,
    so that reading the file back gives the same numbers)."""
    columns = {name: X[:, j] for j, name in enumerate(feature_names)}
    columns[target] = y
    write_table(path, columns)
