"""Reading a 500k x 50 CSV into a float64 array: the candidate readers against numpy.loadtxt.

    python benchmarks/bench_load.py            # 500,000 x 50 (a 205 MB file), 3 runs a reader (~2 min)
    python benchmarks/bench_load.py --quick    # 50,000 x 50, one run a reader

The file (``_tables.py``: standard-normal features to five decimals, an
integer label) is written to a temporary directory and removed afterwards.
Each reader runs in a fresh subprocess (``--child``), which imports its
library first and then, with the kernel's high-water mark reset
(``/proc/self/clear_refs``), reads the file into a C-ordered float64
``(rows, 50)`` feature array and a label array: the time of that step and
its extra peak resident memory (``VmHWM`` minus the ``VmRSS`` before it),
against the size of the float64 array. The median time of ``--reps`` runs
and the largest peak. A reader whose library is not installed is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import _measure as m
import _tables

READERS = {
    "numpy.loadtxt": "numpy",
    "crossentropy (pyarrow.csv in pieces)": "pyarrow",
    "pyarrow.csv.read_csv": "pyarrow",
    "pandas.read_csv (C engine)": "pandas",
    "pandas.read_csv (pyarrow engine)": "pandas",
    "polars.read_csv": "polars",
}


def read(name, path, d):
    """``(X, y)`` of the file by reader ``name``."""
    if name == "numpy.loadtxt":
        a = np.loadtxt(path, delimiter=",", skiprows=1)
        return a[:, :d], a[:, d].astype(np.int64)  # X a view, as a user would keep it
    if name.startswith("crossentropy"):
        from crossentropy.cli.data import load_data

        ds = load_data(path, "target")
        return ds.X, ds.y
    features = [f"x{j}" for j in range(d)]
    if name == "pyarrow.csv.read_csv":
        import pyarrow.csv

        t = pyarrow.csv.read_csv(path)
        return np.column_stack([t.column(f).to_numpy() for f in features]), t.column("target").to_numpy()
    if name.startswith("pandas"):
        import pandas

        df = pandas.read_csv(path, engine="pyarrow" if "pyarrow" in name else "c")
        return df[features].to_numpy(np.float64), df["target"].to_numpy()
    if name == "polars.read_csv":
        import polars

        df = polars.read_csv(path)
        return df.select(features).to_numpy(order="c").astype(np.float64, copy=False), df["target"].to_numpy()
    raise ValueError(f"unknown reader {name!r}")


def child(spec):
    name, path, d = spec["reader"], spec["path"], spec["d"]
    __import__(READERS[name])
    if name.startswith("crossentropy"):
        import crossentropy.cli.data  # noqa: F401
    extra, seconds = m.extra_peak(lambda: read(name, path, d))
    print(json.dumps({"extra_mb": extra / m.MB, "seconds": seconds}))


def available(name):
    try:
        __import__(READERS[name])
    except ImportError:
        return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="50,000 rows, one run a reader")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    n, d = args.rows or (50_000 if args.quick else 500_000), 50
    reps = args.reps or (1 if args.quick else 3)
    print(_tables.machine())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "table.csv")
        t0 = time.perf_counter()
        _tables.write_table_csv(path, *_tables.make_table(n, d))
        array_mb = n * d * 8 / m.MB
        print(f"{n} x {d} CSV, {os.path.getsize(path) / 1e6:.0f} MB, written in {time.perf_counter() - t0:.0f} s; "
              f"the float64 array is {array_mb:.0f} MiB")
        rows = []
        for name in READERS:
            if not available(name):
                print(f"  {name}: not installed, left out")
                continue
            runs = []
            for _ in range(reps):
                proc = subprocess.run([sys.executable, __file__, "--child",
                                       json.dumps({"reader": name, "path": path, "d": d})],
                                      capture_output=True, text=True)
                if proc.returncode:
                    print(f"  {name} failed: {proc.stderr.strip().splitlines()[-1:]}")
                    break
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            if runs:
                rows.append({"reader": name, "seconds": statistics.median(r["seconds"] for r in runs),
                             "extra_mb": max(r["extra_mb"] for r in runs)})
    base = next((r["seconds"] for r in rows if r["reader"] == "numpy.loadtxt"), None)
    for r in rows:
        r["vs_loadtxt"] = r["seconds"] / base if base else None
        r["vs_array"] = r["extra_mb"] / array_mb
    print(m.table(rows, [("reader", "reader", "s"), ("seconds", "seconds", ".2f"),
                         ("vs_loadtxt", "/ loadtxt", ".2f"), ("extra_mb", "extra peak MiB", ".0f"),
                         ("vs_array", "/ array", ".2f")]))


if __name__ == "__main__":
    if "--child" in sys.argv:
        child(json.loads(sys.argv[sys.argv.index("--child") + 1]))
    else:
        main()
