"""The ``crossentropy`` command end to end, in subprocesses."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("rich")
pytest.importorskip("matplotlib")

CMD = [sys.executable, "-m", "crossentropy.cli"]
DEFAULT_NAMES = ("cross-entropy", "cross-entropy, smoothing 0.1", "focal, gamma 2")


def run(*args, cwd=None, timeout=300):
    env = dict(os.environ, PYTHONWARNINGS="ignore", COLUMNS="160")
    return subprocess.run([*CMD, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def fruit_csv(path, n=90, seed=1):
    """A small table with string labels."""
    rng = random.Random(seed)
    centers = {"apple": (150, 6, 3), "lemon": (100, 2, 8), "banana": (120, 8, 1)}
    lines = ["weight,sweetness,acidity,fruit"]
    for i in range(n):
        name = list(centers)[i % 3]
        c = centers[name]
        lines.append(f"{c[0] + rng.gauss(0, 15):.2f},{c[1] + rng.gauss(0, 1.5):.3f},"
                     f"{c[2] + rng.gauss(0, 1.5):.3f},{name}")
    path.write_text("\n".join(lines) + "\n")
    return path


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


def test_fit_binary_bundled_dataset(tmp_path):
    proc = run("fit", "breast-cancer", "--out", tmp_path, "--no-plots", "-q", "--C", "0.5")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["classes"] == ["benign", "malignant"] and results["C"] == 0.5
    with np.load(tmp_path / "models" / "cross_entropy.npz", allow_pickle=False) as z:
        assert z["coef"].shape == (1, 30)  # the sigmoid form


# ---------------------------------------------------------------------------
# bad input: one line on stderr, exit status 2, no traceback
# ---------------------------------------------------------------------------


@pytest.fixture
def tables(tmp_path):
    (tmp_path / "one_class.csv").write_text("a,b,y\n1,2,x\n3,4,x\n5,6,x\n")
    (tmp_path / "strings.csv").write_text("a,colour,y\n1,red,0\n2,blue,1\n3,red,0\n4,red,1\n")
    (tmp_path / "missing.csv").write_text("a,b,y\n1,,0\n2,3,1\n")
    (tmp_path / "ragged.csv").write_text("a,b,y\n1,2,0\n2,3\n")
    (tmp_path / "continuous.csv").write_text("a,y\n1,0.5\n2,1.25\n3,0.1\n")
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    fruit_csv(tmp_path / "fruit.csv")
    return tmp_path


BAD = {
    "missing file": (["fit", "{d}/nope.csv"], "no such file"),
    "no such target column": (["fit", "{d}/fruit.csv", "--target", "colour"], "no column 'colour'"),
    "single class": (["fit", "{d}/one_class.csv"], "single class"),
    "non-numeric features": (["fit", "{d}/strings.csv"], "'colour' is not numeric"),
    "missing value": (["fit", "{d}/missing.csv"], "missing value"),
    "ragged row": (["fit", "{d}/ragged.csv"], "fields where the header has 3"),
    "continuous target": (["fit", "{d}/continuous.csv"], "non-integer numbers"),
    "unknown option": (["fit", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    "unknown loss": (["fit", "--loss", "hinge"], "invalid choice: 'hinge'"),
    "bad C": (["fit", "--C", "0"], "argument --C"),
    "bad test size": (["fit", "--test-size", "1.5"], "argument --test-size"),
    "unknown command": (["frobnicate"], "invalid choice"),
    "no command": ([], "choose a command"),
    "bundled target": (["fit", "iris", "--target", "species"], "one label column"),
    "missing model": (["predict", "{d}/nope.npz", "iris"], "no such model file"),
    "not a model": (["predict", "{d}/fruit.csv", "iris"], "not a crossentropy model"),
    "bench dir": (["bench", "--dir", "{d}/nowhere"], "no such directory"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line(tables, case):
    args, message = BAD[case]
    proc = run(*[a.format(d=tables) for a in args])
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0] and "error" in lines[0]


def test_parquet_without_pyarrow_is_a_clear_error(tables):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        proc = run("fit", tables / "data.parquet")
        assert proc.returncode == 2 and "pyarrow" in proc.stderr
    else:
        proc = run("fit", tables / "data.parquet")  # not a real Parquet file
        assert proc.returncode == 2 and "Parquet" in proc.stderr


def test_predict_with_a_model_of_other_features(digits_run):
    _, out = digits_run
    proc = run("predict", out / "models" / "cross_entropy.npz", "iris")
    assert proc.returncode == 2 and "feature column(s)" in proc.stderr


# ---------------------------------------------------------------------------
# check and bench
# ---------------------------------------------------------------------------


def test_check_passes_and_fails_at_a_zero_tolerance():
    proc = run("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("cross_entropy, softcap=3", "nll_loss", "focal_loss", "binary_cross_entropy",
                 "sigmoid_focal_loss", "entropy", "kl_divergence", "js_divergence", "kl_div"):
        assert name in proc.stdout
    assert "within tolerance" in proc.stdout
    proc = run("check", "--fd-tol", "0")
    assert proc.returncode == 1 and "exceed" in proc.stderr


def test_bench_runs_scripts_with_quick(tmp_path):
    (tmp_path / "bench_a.py").write_text(
        "import sys\nprint('table', 'quick' if '--quick' in sys.argv else 'full')\n"
    )
    (tmp_path / "_helper.py").write_text("raise SystemExit(3)\n")
    proc = run("bench", "--dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "bench_a.py" in proc.stdout and "table quick" in proc.stdout
    (tmp_path / "bench_b.py").write_text("raise SystemExit(4)\n")
    proc = run("bench", "--dir", tmp_path)
    assert proc.returncode == 1 and "bench_b.py (exit 4)" in proc.stderr


def test_bench_with_no_scripts(tmp_path):
    proc = run("bench", "--dir", tmp_path)
    assert proc.returncode == 0 and "No benchmark scripts" in proc.stdout


def test_console_script_entry_point():
    script = Path(sys.executable).with_name("crossentropy")
    if not script.exists():
        pytest.skip("the crossentropy script is not installed next to this Python")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("crossentropy ")
