"""``crossentropy fit`` end to end, in subprocesses: the table, the plots, the
model files and results it writes, on bundled data and on a CSV."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("rich")
pytest.importorskip("matplotlib")

from _cli import DEFAULT_NAMES, fruit_csv, run  # noqa: E402


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """``crossentropy fit`` with no DATA: scikit-learn's bundled digits."""
    out = tmp_path_factory.mktemp("digits")
    proc = run("fit", "--out", out, "--quiet")
    return proc, out


def test_fit_default_digits(digits_run):
    proc, out = digits_run
    assert proc.returncode == 0, proc.stderr
    for name in DEFAULT_NAMES:
        assert name in proc.stdout
    for col in ("accuracy", "log-loss", "ECE", "fit time"):
        assert col in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["data"] == "digits" and results["n_test"] == 450
    assert [m["name"] for m in results["models"]] == list(DEFAULT_NAMES)
    for m in results["models"]:
        assert m["accuracy"] > 0.93 and m["converged"]
        assert 0 <= m["ece"] < 0.3 and m["log_loss"] > 0
    assert "loss_curves.png" in proc.stdout  # says where the plots are


def test_fit_writes_pngs_that_open(digits_run):
    from matplotlib.image import imread

    _, out = digits_run
    for name in ("loss_curves.png", "reliability.png", "confusion_matrix.png"):
        img = imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600, name
        assert img.std() > 0.05, f"{name} looks blank"


def test_fit_writes_documented_model_files(digits_run):
    _, out = digits_run
    for slug in ("cross_entropy", "cross_entropy_ls0.1", "focal_gamma2"):
        meta = json.loads((out / "models" / f"{slug}.json").read_text())
        assert meta["format"] == "crossentropy-model" and meta["format_version"] == 1
        assert meta["target"] == "target" and len(meta["feature_names"]) == 64
        with np.load(out / "models" / f"{slug}.npz", allow_pickle=False) as z:
            assert z["coef"].shape == (10, 64)


def test_fit_and_predict_csv_with_string_labels(tmp_path):
    data = fruit_csv(tmp_path / "fruit.csv")
    out = tmp_path / "out"
    proc = run("fit", data, "--target", "fruit", "--loss", "cross_entropy", "--loss", "focal",
               "--gamma", "1", "--test-size", "0.3", "--out", out, "--no-plots", "-q")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["classes"] == ["apple", "banana", "lemon"]
    assert [m["name"] for m in results["models"]] == ["cross-entropy", "focal, gamma 1"]
    assert not list(out.glob("*.png"))
    model = out / "models" / "focal_gamma1.json"  # the sidecar works as MODEL too
    preds = tmp_path / "preds.csv"
    proc = run("predict", model, out / "test.csv", "--out", preds, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accuracy"] == results["models"][1]["accuracy"]
    lines = preds.read_text().splitlines()
    assert lines[0] == "prediction,p(apple),p(banana),p(lemon)"
    assert len(lines) == 1 + results["n_test"]
    assert lines[1].split(",")[0] in {"apple", "banana", "lemon"}


def test_fit_binary_bundled_dataset(tmp_path):
    proc = run("fit", "breast-cancer", "--out", tmp_path, "--no-plots", "-q", "--C", "0.5")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["classes"] == ["benign", "malignant"] and results["C"] == 0.5
    with np.load(tmp_path / "models" / "cross_entropy.npz", allow_pickle=False) as z:
        assert z["coef"].shape == (1, 30)  # the sigmoid form
