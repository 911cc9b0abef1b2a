"""The table reader (``crossentropy.cli.table``, pyarrow): the numbers and
labels of CSV, TSV, semicolons, a BOM, Parquet, against NumPy's and the csv
module's reading of the same text; rows across many pieces of the file; and
the row and column each error names."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("pyarrow")

import crossentropy.cli.table as table  # noqa: E402
from crossentropy.cli.data import load_data  # noqa: E402
from crossentropy.cli.table import DataError, read_table  # noqa: E402


def _write(path, X, labels, delimiter=",", header=None, bom=False):
    header = header or [f"f{j}" for j in range(X.shape[1])] + ["y"]
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(header)
        for row, label in zip(X.tolist(), labels):
            w.writerow([*map(repr, row), label])
    return path


@pytest.mark.parametrize("delimiter,suffix,bom", [(",", ".csv", False), ("\t", ".tsv", False),
                                                  (";", ".csv", True)])
def test_numbers_and_string_labels_exactly(tmp_path, delimiter, suffix, bom):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4)) * 10.0 ** rng.integers(-300, 300, (300, 4))
    labels = rng.choice(["apple", "pear", "fig"], 300)
    path = _write(tmp_path / f"t{suffix}", X, labels, delimiter, bom=bom)
    got, y, names, target = read_table(path)
    assert got.dtype == np.float64 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, X)  # every double read back exactly
    assert names == ["f0", "f1", "f2", "f3"] and target == "y"
    assert y.dtype.kind == "U" and list(y) == list(labels)


def test_many_pieces_and_a_row_longer_than_a_piece(tmp_path, monkeypatch):
    """Pieces of 256 bytes: rows cut across them are read whole, in order,
    and the row an error names counts across the pieces."""
    monkeypatch.setattr(table, "BLOCK_BYTES", 256)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((500, 3))
    X[7, 1] = 1e-300 * np.pi  # a long cell
    ints = rng.integers(0, 4, 500)
    path = _write(tmp_path / "t.csv", X, ints)
    got, y, _, _ = read_table(path)
    np.testing.assert_array_equal(got, X)
    assert y.dtype == np.int64 and np.array_equal(y, ints)
    wide = tmp_path / "wide.csv"  # one row of 600 bytes
    wide.write_text(",".join(f"c{j}" for j in range(60)) + ",y\n" + "0.123456789," * 60 + "1\n")
    got, y, _, _ = read_table(wide)
    assert got.shape == (1, 60) and np.all(got == 0.123456789) and y.tolist() == [1]
    lines = path.read_text().splitlines()
    lines[421] = lines[421].replace(lines[421].split(",")[2], "", 1)  # row 421, column f2
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"missing value in row 421, column 'f2'"):
        read_table(path)


def test_parquet_reads_as_the_csv_does(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(2)
    X = rng.standard_normal((1000, 3))
    y = rng.integers(0, 3, 1000)
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "label": y}),
                   tmp_path / "t.parquet", row_group_size=300)
    ds = load_data(str(tmp_path / "t.parquet"))
    np.testing.assert_array_equal(ds.X, X)
    assert ds.target == "label" and np.array_equal(ds.y, y) and ds.feature_names == ["a", "b", "c"]
    pq.write_table(pa.table({"a": X[:5, 0], "colour": ["red"] * 5, "y": y[:5]}), tmp_path / "s.parquet")
    with pytest.raises(DataError, match=r"feature column 'colour' is not numeric \(string, e.g. 'red'\)"):
        read_table(tmp_path / "s.parquet")


ERRORS = {
    "a categorical string column": ("a,colour,y\n1,red,0\n2,blue,1\n", "feature column 'colour' is not "
                                    "numeric (value 'red' in row 1); encode it as numbers"),
    "a number then a word": ("a,b,y\n1,2,0\n2,x3,1\n", "feature column 'b' is not numeric (value 'x3' in "
                             "row 2)"),
    "a ragged row": ("a,b,y\n1,2,0\n1,2,0\n3,4\n", "row 3: 2 fields where the header has 3"),
    "an infinite value": ("a,b,y\n1,2,0\n1,-inf,1\n", "infinite value in row 2, column 'b'"),
    "a missing label": ("a,y\n1,0\n2,NA\n", "missing value in row 2 of the target column 'y'"),
    "a fractional label": ("a,y\n1,0\n2,0.5\n", "target column 'y' holds non-integer numbers (e.g. 0.5 in "
                           "row 2)"),
    "a header only": ("a,y\n", "has a header but no data rows"),
    "nothing": ("", "is empty"),
    "a repeated column": ("a,a,y\n1,2,0\n", "column name 'a' appears more than once"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_name_the_row_and_column(tmp_path, case):
    text, message = ERRORS[case]
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_table(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)
    assert "\n" not in str(info.value)


def test_not_utf8(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,y\n\xff\xfe,1\n")
    with pytest.raises(DataError, match="not a UTF-8 text file"):
        read_table(path)
