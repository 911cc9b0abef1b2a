"""Saved models: a fitted :class:`~crossentropy.models.SoftmaxRegression` as a
``.npz`` of arrays (nothing pickled) and a JSON sidecar with the same
metadata. The format is documented in ``docs/cli.md``.

Version 2 differs from version 1 only in ``class_weight``: a dict of class
weights is a list of ``[label, weight]`` pairs, each label the JSON value of a
class (version 1 wrote ``{str(label): weight}``, which loses the labels'
types). A file is stamped with the lowest version that describes it, so a
model without a dict of class weights is still version 1 and readable by
older releases; :func:`load_model` reads both.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import NamedTuple

import numpy as np
from sklearn.utils.validation import check_is_fitted

import crossentropy as ce

from .softmax_regression import SoftmaxRegression

__all__ = ["MODEL_FORMAT", "MODEL_FORMAT_VERSION", "SavedModel", "save_model", "load_model"]

MODEL_FORMAT = "crossentropy-model"
MODEL_FORMAT_VERSION = 2  # the newest version written and read; load_model reads 1 and 2
_PARAMS = ("loss", "C", "label_smoothing", "gamma", "fit_intercept", "max_iter", "tol")


class SavedModel(NamedTuple):
    """A model read back by :func:`load_model`."""

    estimator: SoftmaxRegression
    feature_names: list  # the column names the model expects, in order
    mean: np.ndarray  # standardisation applied before the model: (x - mean) / scale
    scale: np.ndarray
    meta: dict  # everything in the JSON sidecar

    def transform(self, X):
        return (np.asarray(X, dtype=np.float64) - self.mean) / self.scale

    def predict(self, X):
        return self.estimator.predict(self.transform(X))

    def predict_proba(self, X):
        return self.estimator.predict_proba(self.transform(X))


def _json_value(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and np.isinf(v):
        return "inf"
    return v


def save_model(
    estimator, path, *, feature_names=None, mean=None, scale=None, target=None, extra=None
):
    """Write a fitted :class:`SoftmaxRegression` as ``PATH.npz`` + ``PATH.json``.

    ``path`` may end in ``.npz`` or have no suffix. ``mean``/``scale`` record a
    standardisation applied to the features before the model (identity when
    omitted). ``extra`` (JSON-serialisable) is stored in the sidecar under
    ``"extra"``. Returns the two paths. The format is in ``docs/cli.md``.
    """
    check_is_fitted(estimator)
    base = str(path)[:-4] if str(path).endswith(".npz") else str(path)
    d = estimator.n_features_in_
    names = [f"x{i}" for i in range(d)] if feature_names is None else [str(f) for f in feature_names]
    if len(names) != d:
        raise ValueError(f"{len(names)} feature names for a model of {d} features")
    mean = np.zeros(d) if mean is None else np.asarray(mean, dtype=np.float64)
    scale = np.ones(d) if scale is None else np.asarray(scale, dtype=np.float64)
    classes = estimator.classes_
    if classes.dtype.kind not in "iufbU":
        classes = classes.astype(str)
    class_weight, version = _class_weight_to_json(estimator.class_weight)
    meta = {
        "format": MODEL_FORMAT,
        "format_version": version,
        "model": "SoftmaxRegression",
        "params": {k: _json_value(getattr(estimator, k)) for k in _PARAMS},
        "class_weight": class_weight,
        "binary": bool(classes.size == 2),
        "classes": [_json_value(c) for c in classes],
        "classes_dtype": classes.dtype.str,
        "target": target,
        "feature_names": names,
        "n_iter": int(estimator.n_iter_[0]),
        "converged": bool(getattr(estimator, "converged_", True)),
        "objective": float(getattr(estimator, "objective_", float("nan"))),
        "arrays": os.path.basename(base) + ".npz",
        "extra": extra or {},
    }
    meta["crossentropy_version"] = ce.__version__
    np.savez(
        base + ".npz",
        coef=estimator.coef_,
        intercept=estimator.intercept_,
        classes=classes,
        feature_names=np.asarray(names, dtype=str),
        mean=mean,
        scale=scale,
        loss_curve=np.asarray(getattr(estimator, "loss_curve_", []), dtype=np.float64),
        meta=np.asarray(json.dumps(meta)),
    )
    with open(base + ".json", "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2)
        fh.write("\n")
    return base + ".npz", base + ".json"


def load_model(path) -> SavedModel:
    """Read a model written by :func:`save_model` (the ``.npz``, or its ``.json``
    sidecar, or the common path without suffix). Never unpickles anything."""
    path = str(path)
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as fh:
                sidecar = json.load(fh)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not a crossentropy model file (not JSON: {e})") from None
        arrays_name = sidecar.get("arrays") if isinstance(sidecar, dict) else None
        if not isinstance(arrays_name, str) or sidecar.get("format") != MODEL_FORMAT:
            raise ValueError(f"{path} is not a crossentropy model sidecar (no 'format' and 'arrays')")
        npz = os.path.join(os.path.dirname(path), arrays_name)
        if not os.path.exists(npz):
            raise ValueError(f"{path} is a model's sidecar, but its arrays {npz} are missing "
                             "(keep the .npz beside the .json)")
        path = npz
    elif not path.endswith(".npz") and not os.path.exists(path):
        path = path + ".npz"
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such model file")
    # np.load reads anything that is not a zip archive as a pickle (refused,
    # but with a message about pickles): say what the file is not, first.
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a crossentropy model file (not a .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path} is not a crossentropy model file: {e}") from None
    try:
        meta = json.loads(str(arrays["meta"]))
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a crossentropy model file (no metadata)") from e
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{path} is not a crossentropy model file (format {found!r})")
    if meta.get("format_version", 0) > MODEL_FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {meta['format_version']}; this crossentropy "
            f"reads versions up to {MODEL_FORMAT_VERSION}"
        )
    missing = [k for k in ("coef", "intercept", "classes", "feature_names", "mean", "scale")
               if k not in arrays]
    if missing or "params" not in meta:
        raise ValueError(f"{path} is a damaged crossentropy model file (no {', '.join(missing) or 'params'})")
    params = dict(meta["params"])
    if params.get("C") == "inf":
        params["C"] = float("inf")
    cw = _class_weight_from_json(meta.get("class_weight"), arrays["classes"])
    est = SoftmaxRegression(**params, class_weight=cw)
    est.classes_ = arrays["classes"]
    est.coef_ = arrays["coef"]
    est.intercept_ = arrays["intercept"]
    est.n_features_in_ = est.coef_.shape[1]
    est.n_iter_ = np.array([meta.get("n_iter", 0)], dtype=np.int32)
    est.loss_curve_ = arrays["loss_curve"].tolist() if "loss_curve" in arrays else []
    est.objective_ = meta.get("objective")
    est.converged_ = meta.get("converged", True)
    names = [str(s) for s in arrays["feature_names"]]
    return SavedModel(est, names, arrays["mean"], arrays["scale"], meta)


def _python(v):
    """A NumPy scalar as the plain Python value (JSON's types) it equals."""
    return v.item() if isinstance(v, np.generic) else v


def _class_weight_to_json(cw):
    """``(JSON value, lowest format version)`` of a ``class_weight`` parameter.

    A dict becomes ``[[label, weight], ...]`` in the dict's order: a JSON
    object's keys would all be strings, and ``{0: 1.0}`` would load back as
    ``{"0": 1.0}``, which no longer names the class 0 (version 1's defect).
    """
    if not isinstance(cw, dict):
        return cw, 1  # None or "balanced", unchanged since version 1
    return [[_python(k), _python(v)] for k, v in cw.items()], 2


def _class_weight_from_json(cw, classes):
    """The ``class_weight`` parameter read back, with the keys it was saved with.

    ``[[label, weight], ...]`` (version 2) gives each label back with the type
    JSON kept for it, the key's own (int, float, str or bool). A dict (version
    1) has string keys; each is mapped onto the saved class that prints as it,
    and a key that names no saved class stays a string.
    """
    if isinstance(cw, list):
        return {label: weight for label, weight in cw}
    if isinstance(cw, dict):
        by_name = {str(c): c for c in classes.tolist()}
        return {by_name.get(k, k): v for k, v in cw.items()}
    return cw
