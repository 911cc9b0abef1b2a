"""The data of the ``crossentropy`` command: a labelled table (CSV, or Parquet
when pyarrow is installed) read into numeric features and class labels, or
one of scikit-learn's bundled datasets by name.

Only the standard library and NumPy at import; scikit-learn is imported when a
bundled dataset is loaded. Every problem with the user's data raises
:class:`DataError`, whose message is one line the command prints as is.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DataError",
    "Dataset",
    "load_data",
    "read_table",
    "from_columns",
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
_MISSING = {"", "na", "nan", "null", "none", "n/a", "?"}


class DataError(ValueError):
    """Bad input data, explained in one line."""


@dataclass
class Dataset:
    name: str
    X: np.ndarray  # (n, d) float64
    y: np.ndarray | None  # (n,) int64 or str labels; None when absent
    feature_names: list
    target: str


def load_data(data, target=None, *, features=None, require_target=True) -> Dataset:
    """A file path, or a bundled dataset's name (a file of that name wins)."""
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
    header, columns = read_table(data)
    return from_columns(header, columns, target, features=features,
                        require_target=require_target, source=data)


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


def read_table(path: str) -> tuple[list, dict]:
    """``(column names, {name: list of values})`` from a CSV/TSV or Parquet file.
    CSV values are strings; Parquet values are Python scalars (None if missing)."""
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path} is a directory, not a data file")
    if path.lower().endswith((".parquet", ".pq")):
        return _read_parquet(path)
    return _read_csv(path)


def _read_parquet(path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"{path}: reading Parquet needs pyarrow, which is not installed "
            "(pip install pyarrow), or save the table as CSV"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises many kinds
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    data = table.to_pydict()
    return list(data), data


def _read_csv(path):
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            sample = fh.read(64 * 1024)
            fh.seek(0)
            if path.lower().endswith(".tsv"):
                dialect = "excel-tab"
            else:
                try:
                    dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
                except csv.Error:
                    dialect = "excel"
            rows = [r for r in csv.reader(fh, dialect) if any(c.strip() for c in r)]
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file (CSV expected)") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e})") from None
    if not rows:
        raise DataError(f"{path} is empty")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise DataError(f"{path}: column name {dup!r} appears more than once in the header")
    if len(rows) < 2:
        raise DataError(f"{path} has a header but no data rows")
    columns = {h: [] for h in header}
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(
                f"{path}, line {lineno}: {len(row)} fields where the header has {len(header)}"
            )
        for h, v in zip(header, row):
            columns[h].append(v.strip())
    return header, columns


def _number(v):
    """float(v), NaN for a missing value, None for a non-number."""
    if v is None:
        return math.nan
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    s = str(v).strip()
    if s.lower() in _MISSING:
        return math.nan
    try:
        return float(s)
    except ValueError:
        return None


def _labels(name, values, source):
    """Class labels: integers when every value is an integral number, else strings."""
    out = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, str) and v.strip().lower() in _MISSING) or (
            isinstance(v, float) and math.isnan(v)
        ):
            raise DataError(f"{source}: missing value in target column {name!r} (row {i + 1})")
        out.append(v)
    numbers = [_number(v) for v in out]
    if all(x is not None for x in numbers):
        arr = np.asarray(numbers, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{source}: target column {name!r} holds infinite values")
        if np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
        bad = next(x for x in numbers if x != round(x))
        raise DataError(
            f"{source}: target column {name!r} holds non-integer numbers (e.g. {bad:g}); "
            "a classifier needs class labels"
        )
    return np.asarray([str(v).strip() for v in out], dtype=str)


def from_columns(
    header, columns, target=None, *, features=None, require_target=True, source="data", name=None
) -> Dataset:
    """Split a table into numeric features and the target column's labels.

    ``target`` defaults to the first of :data:`DEFAULT_TARGETS` present, else
    the last column. ``features`` (default: every other column) names the
    feature columns, in order. With ``require_target=False`` a missing target
    column gives ``y = None``."""
    if target is None:
        target = next((t for t in DEFAULT_TARGETS if t in columns), header[-1])
    elif target not in columns and require_target:
        shown = ", ".join(map(repr, header[:12])) + (", ..." if len(header) > 12 else "")
        raise DataError(f"{source}: no column {target!r} (columns: {shown})")
    if features is None:
        features = [h for h in header if h != target]
        if not features:
            raise DataError(f"{source}: no feature columns besides the target {target!r}")
    else:
        missing = [f for f in features if f not in columns]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DataError(
                f"{source}: the model's feature column(s) "
                f"{', '.join(map(repr, missing[:5]))}{more} are missing"
            )
    n = len(columns[header[0]])
    X = np.empty((n, len(features)))
    for j, h in enumerate(features):
        for i, v in enumerate(columns[h]):
            x = _number(v)
            if x is None:
                raise DataError(
                    f"{source}: feature column {h!r} is not numeric (value {str(v)!r} in row "
                    f"{i + 1}); encode it as numbers or drop the column"
                )
            if math.isnan(x):
                raise DataError(
                    f"{source}: missing value in feature column {h!r} (row {i + 1}); "
                    "fill or drop it first"
                )
            if math.isinf(x):
                raise DataError(f"{source}: infinite value in feature column {h!r} (row {i + 1})")
            X[i, j] = x
    y = _labels(target, columns[target], source) if target in columns else None
    return Dataset(name or os.path.basename(source), X, y, list(features), target)


def write_csv(path, X, y, feature_names, target) -> None:
    """Write features and labels as CSV (floats in their shortest exact form,
    so that reading the file back gives the same numbers)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([*feature_names, target])
        for row, label in zip(X.tolist(), y.tolist()):
            w.writerow([*map(repr, row), label])
