"""``crossentropy predict`` end to end, in subprocesses: applied to the rows
that ``fit`` held out it reproduces fit's test metrics; without a target it
writes predictions; a model of other features is a one-line error."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("rich")
pytest.importorskip("matplotlib")

from _cli import fruit_csv, run  # noqa: E402


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """``crossentropy fit`` with no DATA: scikit-learn's bundled digits (no plots:
    predict needs only the models and the held-out rows)."""
    out = tmp_path_factory.mktemp("digits")
    proc = run("fit", "--out", out, "--quiet", "--no-plots")
    return proc, out


def test_predict_reproduces_fit_test_accuracy(digits_run):
    _, out = digits_run
    results = json.loads((out / "results.json").read_text())
    for m in results["models"]:
        proc = run("predict", m["model"], out / "test.csv", "--json")
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        assert summary["rows"] == results["n_test"]
        assert summary["accuracy"] == m["accuracy"]
        assert summary["log_loss"] == pytest.approx(m["log_loss"], rel=1e-12)
        assert summary["ece"] == pytest.approx(m["ece"], rel=1e-12)


def test_predict_human_readable_and_without_target(tmp_path):
    data = fruit_csv(tmp_path / "fruit.csv")
    out = tmp_path / "out"
    assert run("fit", data, "--out", out, "--no-plots", "-q", "--loss", "cross_entropy").returncode == 0
    proc = run("predict", out / "models" / "cross_entropy.npz", data)
    assert proc.returncode == 0 and "accuracy" in proc.stdout
    features_only = tmp_path / "features.csv"
    features_only.write_text("\n".join(",".join(r.split(",")[:3]) for r in data.read_text().splitlines()))
    proc = run("predict", out / "models" / "cross_entropy.npz", features_only, "--out", tmp_path / "p.csv")
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 91


def test_predict_with_a_model_of_other_features(digits_run):
    _, out = digits_run
    proc = run("predict", out / "models" / "cross_entropy.npz", "iris")
    assert proc.returncode == 2 and "feature column(s)" in proc.stderr


def test_predict_names_a_label_the_model_never_saw(digits_run, tmp_path):
    _, out = digits_run
    lines = (out / "test.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",11"  # digits has the classes 0..9
    data = tmp_path / "unseen.csv"
    data.write_text("\n".join(lines) + "\n")
    proc = run("predict", out / "models" / "cross_entropy.npz", data)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"crossentropy predict: error: {data}: label 11 in row 3 of the target column 'target' is not one "
        "of the model's classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9); 1 unseen label(s) in 1 row(s), whose "
        "log-loss would be infinite: drop those rows"]


def test_predict_out_into_a_missing_folder(digits_run, tmp_path):
    _, out = digits_run
    target = tmp_path / "no" / "such" / "p.csv"
    proc = run("predict", out / "models" / "cross_entropy.npz", out / "test.csv", "--out", target)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"crossentropy predict: error: --out {target}: the folder {target.parent} does not exist "
        "(create it first)"]
