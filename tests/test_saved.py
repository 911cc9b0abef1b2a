"""The saved-model format: save_model and load_model round trips, the
class_weight dict with its key types, files of format version 1, and files
that are not models."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_iris, load_wine  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from crossentropy.models import (  # noqa: E402
    MODEL_FORMAT_VERSION,
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


def test_every_estimator_parameter_round_trips(tmp_path):
    params = dict(loss="focal", C=np.inf, label_smoothing=0.05, gamma=0.5, fit_intercept=False,
                  max_iter=77, tol=1e-7, class_weight={0: 2.0, 1: 1.0, 2: 0.25})
    clf = SoftmaxRegression(**params).fit(IRIS_X, IRIS_Y)
    save_model(clf, tmp_path / "m")
    loaded = load_model(tmp_path / "m.npz").estimator
    assert loaded.get_params() == clf.get_params() == params
    np.testing.assert_array_equal(loaded.predict_proba(IRIS_X), clf.predict_proba(IRIS_X))


def test_load_model_refuses_other_files(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a crossentropy model"):
        load_model(tmp_path / "x.npz")
    (tmp_path / "garbage.npz").write_bytes(bytes(range(256)) * 3)
    with pytest.raises(ValueError, match=r"garbage.npz is not a crossentropy model file \(not a .npz archive\)"):
        load_model(tmp_path / "garbage.npz")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not a crossentropy model file"):
        load_model(tmp_path / "bad.json")


def test_a_sidecar_without_its_arrays_names_the_missing_path(tmp_path):
    clf = SoftmaxRegression().fit(IRIS_X, IRIS_Y)
    npz, sidecar = save_model(clf, tmp_path / "m")
    (tmp_path / "m.npz").unlink()
    with pytest.raises(ValueError, match=f"its arrays {tmp_path / 'm.npz'} are missing"):
        load_model(sidecar)


# ---------------------------------------------------------------------------
# class_weight as a dict: the keys come back with their types
# ---------------------------------------------------------------------------

IRIS_X, IRIS_Y = load_iris(return_X_y=True)
IRIS_X = StandardScaler().fit_transform(IRIS_X)
CLASS_WEIGHTS = {
    "int labels": (IRIS_Y, {0: 1.0, 1: 2.0, 2: 0.5}),
    "string labels": (np.array(["setosa", "versicolor", "virginica"])[IRIS_Y],
                      {"setosa": 1.0, "versicolor": 2.0, "virginica": 0.5}),
    "float labels": (IRIS_Y.astype(float), {0.0: 1.0, 1.0: 2.0, 2.0: 0.5}),
    "int keys of float labels": (IRIS_Y.astype(float), {0: 1.0, 1: 2.0, 2: 0.5}),
}


def _assert_same_class_weight(loaded, original):
    assert loaded == original
    assert [type(k) for k in loaded] == [type(k) for k in original]
    assert [type(v) for v in loaded.values()] == [type(v) for v in original.values()]


@pytest.mark.parametrize("case", list(CLASS_WEIGHTS))
def test_class_weight_dict_round_trips_and_refits(tmp_path, case):
    y, cw = CLASS_WEIGHTS[case]
    original = SoftmaxRegression(class_weight=cw).fit(IRIS_X, y)
    save_model(original, tmp_path / "m")
    loaded = load_model(tmp_path / "m.npz").estimator
    _assert_same_class_weight(loaded.class_weight, cw)
    assert loaded.get_params() == original.get_params()
    refit = clone(loaded).fit(IRIS_X, y)  # raised "classes ... are not in class_weight"
    np.testing.assert_allclose(refit.coef_, original.coef_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(refit.intercept_, original.intercept_, rtol=1e-12, atol=1e-12)


def test_class_weight_dict_is_stored_as_pairs_in_format_version_2(tmp_path):
    clf = SoftmaxRegression(class_weight={0: 1.0, 1: 2.0, 2: 0.5}).fit(IRIS_X, IRIS_Y)
    save_model(clf, tmp_path / "m")
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["class_weight"] == [[0, 1.0], [1, 2.0], [2, 0.5]]
    assert meta["format_version"] == 2 == MODEL_FORMAT_VERSION


@pytest.mark.parametrize("cw", [None, "balanced"])
def test_files_without_a_class_weight_dict_stay_format_version_1(tmp_path, cw):
    clf = SoftmaxRegression(class_weight=cw).fit(IRIS_X, IRIS_Y)
    save_model(clf, tmp_path / "m")
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["format_version"] == 1 and meta["class_weight"] == cw
    assert load_model(tmp_path / "m.npz").estimator.class_weight == cw


def _rewrite_meta(npz, edit):
    """Apply ``edit`` to the metadata of a saved model, in the .npz and the .json."""
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    edit(meta)
    arrays["meta"] = np.asarray(json.dumps(meta))
    np.savez(npz, **arrays)
    with open(npz[:-4] + ".json", "w", encoding="utf-8") as fh:
        json.dump(meta, fh)


@pytest.mark.parametrize("case", ["int labels", "string labels", "float labels"])
def test_reads_version_1_class_weight_with_string_keys(tmp_path, case):
    y, cw = CLASS_WEIGHTS[case]
    original = SoftmaxRegression(class_weight=cw).fit(IRIS_X, y)
    npz, _ = save_model(original, tmp_path / "m")

    def as_version_1(meta):  # what save_model wrote before format version 2
        meta["format_version"] = 1
        meta["class_weight"] = {str(k): float(v) for k, v in cw.items()}

    _rewrite_meta(npz, as_version_1)
    loaded = load_model(npz).estimator
    _assert_same_class_weight(loaded.class_weight, cw)
    refit = clone(loaded).fit(IRIS_X, y)
    np.testing.assert_allclose(refit.coef_, original.coef_, rtol=1e-12, atol=1e-12)


def test_load_model_refuses_a_newer_format_version(tmp_path):
    clf = SoftmaxRegression().fit(IRIS_X, IRIS_Y)
    npz, _ = save_model(clf, tmp_path / "m")
    _rewrite_meta(npz, lambda meta: meta.update(format_version=MODEL_FORMAT_VERSION + 1))
    with pytest.raises(ValueError, match=f"format version {MODEL_FORMAT_VERSION + 1}"):
        load_model(npz)
