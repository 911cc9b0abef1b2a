"""The ``crossentropy`` command's contract: bad input of any subcommand is one
line on stderr and exit status 2, never a traceback; the entry point works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("rich")
pytest.importorskip("matplotlib")

from _cli import fruit_csv, run  # noqa: E402

from crossentropy.cli import main  # noqa: E402


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
    (tmp_path / "gaps.csv").write_text("a,b,y\n1,2,0\n3,,1\n,4,0\n")  # row 2's b comes before row 3's a
    (tmp_path / "huge.csv").write_text("a,b,y\n" + "".join(f"{(-1) ** i * 1.5e300},{i},{i % 2}\n"
                                                          for i in range(8)))
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    (tmp_path / "garbage.npz").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "lone.json").write_text('{"format": "crossentropy-model", "arrays": "lone.npz"}')
    fruit_csv(tmp_path / "fruit.csv")
    return tmp_path


BAD = {
    "missing file": (["fit", "{d}/nope.csv"], "no such file"),
    "no such target column": (["fit", "{d}/fruit.csv", "--target", "colour"], "no column 'colour'"),
    "single class": (["fit", "{d}/one_class.csv"], "single class"),
    "non-numeric features": (["fit", "{d}/strings.csv"], "'colour' is not numeric"),
    "missing value": (["fit", "{d}/missing.csv"], "missing value in row 1, column 'b'"),
    "first missing value": (["fit", "{d}/gaps.csv"], "missing value in row 2, column 'b'"),
    "a column near 1e300": (["fit", "{d}/huge.csv"], "feature column 'a' cannot be standardised"),
    "garbage npz": (["predict", "{d}/garbage.npz", "iris"], "garbage.npz is not a crossentropy model "
                    "file (not a .npz archive)"),
    "json without its npz": (["predict", "{d}/lone.json", "iris"], "its arrays {d}/lone.npz are missing"),
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
    message = message.format(d=tables)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0] and "error" in lines[0]


NO_TORCH = """
import sys
class NoTorch:  # an import finder that refuses torch, as if it were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
from crossentropy.cli import main
sys.exit(main(["bench"]))
"""


def test_bench_without_torch_names_the_extra():
    code = NO_TORCH
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == ('crossentropy bench: error: the benchmarks compare against PyTorch, '
                                   'which is not installed: pip install "crossentropy[torch]"')


def test_parquet_without_pyarrow_is_a_clear_error(tables):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        proc = run("fit", tables / "data.parquet")
        assert proc.returncode == 2 and "pyarrow" in proc.stderr
    else:
        proc = run("fit", tables / "data.parquet")  # not a real Parquet file
        assert proc.returncode == 2 and "Parquet" in proc.stderr


def test_main_in_process_returns_the_exit_status(capsys):
    assert main([]) == 2
    assert main(["fit", "--frobnicate"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "choose a command" in lines[0] and "--frobnicate" in lines[1]


def test_console_script_entry_point():
    script = Path(sys.executable).with_name("crossentropy")
    if not script.exists():
        pytest.skip("the crossentropy script is not installed next to this Python")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("crossentropy ")
