"""The saved-model format: save_model and load_model round trips, and files
that are not models."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from sklearn.datasets import load_wine  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from crossentropy.models import (  # noqa: E402
    SoftmaxRegression,
    load_model,
    save_model,
)


def test_save_and_load_round_trip(tmp_path):
    X, y = load_wine(return_X_y=True)
    scaler = StandardScaler().fit(X)
    names = np.array(["a", "bb", "c"])[y]
    clf = SoftmaxRegression("focal", label_smoothing=0.05).fit(scaler.transform(X), names)
    feats = [f"f{i}" for i in range(X.shape[1])]
    npz, sidecar = save_model(clf, tmp_path / "m", feature_names=feats, mean=scaler.mean_,
                              scale=scaler.scale_, target="kind", extra={"note": 1})
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["format"] == "crossentropy-model" and meta["params"]["loss"] == "focal"
    assert meta["classes"] == ["a", "bb", "c"] and meta["feature_names"] == feats
    with np.load(npz, allow_pickle=False) as z:  # no object arrays: nothing to unpickle
        assert {"coef", "intercept", "classes", "mean", "scale", "meta"} <= set(z.files)
    for path in (npz, sidecar, str(tmp_path / "m")):
        m = load_model(path)
        np.testing.assert_array_equal(m.predict(X), clf.predict(scaler.transform(X)))
        np.testing.assert_array_equal(m.predict_proba(X), clf.predict_proba(scaler.transform(X)))
        assert m.feature_names == feats and m.meta["target"] == "kind"


def test_load_model_refuses_other_files(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a crossentropy model"):
        load_model(tmp_path / "x.npz")

