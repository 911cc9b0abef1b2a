"""Reading a labelled table (CSV, TSV or Parquet) with pyarrow, straight into
a float64 feature array and a label array.

pyarrow parses the file in blocks, on its own threads, with every feature
column typed ``float64`` from the start; each block becomes a ``(rows,
features)`` NumPy block, and at the end the blocks are copied into one array
and freed one by one. The extra memory is the array plus about one block
(``benchmarks/bench_load.py``; BENCHMARKS.md, "Loading a table"). Nothing
here loops over cells in Python except to explain an error.

Every problem with the file raises :class:`DataError` with one line that names
the file and, where there is one, the row (1 = the first row after the
header) and the column.
"""

from __future__ import annotations

import csv
import math
import os

import numpy as np

__all__ = ["DataError", "read_table", "write_table", "MISSING", "BLOCK_BYTES"]

# Cells read as missing values (any case).
MISSING = ("", "na", "nan", "null", "none", "n/a", "?")
BLOCK_BYTES = 4 << 20  # the text read and parsed at a time (BENCHMARKS.md, "Loading a table")


class DataError(ValueError):
    """Bad input data, explained in one line."""


def _pyarrow():
    try:
        import pyarrow
    except ImportError:
        raise DataError(
            "reading a table needs pyarrow, which is not installed: "
            "pip install 'crossentropy[cli]'") from None
    return pyarrow


def _columns(source, header, target, features, require_target):
    """``(target, features)``: the label column (None when absent and allowed)
    and the feature columns, in order."""
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise DataError(f"{source}: column name {dup!r} appears more than once in the header")
    if target is None:
        from .data import DEFAULT_TARGETS

        target = next((t for t in DEFAULT_TARGETS if t in header), header[-1])
    if target not in header:
        if require_target:
            shown = ", ".join(map(repr, header[:12])) + (", ..." if len(header) > 12 else "")
            raise DataError(f"{source}: no column {target!r} (columns: {shown})")
        target = None
    if features is None:
        features = [h for h in header if h != target]
        if not features:
            raise DataError(f"{source}: no feature columns besides the target {target!r}")
    else:
        missing = [f for f in features if f not in header]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DataError(f"{source}: the model's feature column(s) "
                            f"{', '.join(map(repr, missing[:5]))}{more} are missing")
    return target, list(features)


def read_table(path, target=None, *, features=None, require_target=True, progress=None):
    """``(X, y, feature_names, target)`` from a CSV/TSV or Parquet file.

    ``X`` is float64 of shape (rows, features); ``y`` the target column's
    labels (int64 when every one is an integer, else str), or None when the
    column is absent and ``require_target`` is false. ``target`` defaults to
    the first of ``data.DEFAULT_TARGETS`` present, else the last column;
    ``features`` to every other column. ``progress(done, total)`` is called
    after each block with the bytes read so far and the file's size.
    """
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path} is a directory, not a data file")
    _pyarrow()
    if str(path).lower().endswith((".parquet", ".pq")):
        return _read_parquet(path, target, features, require_target, progress)
    return _read_csv(path, target, features, require_target, progress)


# --------------------------------------------------------------------------- CSV


def _dialect(path):
    """``(delimiter, quote character, header, bytes per row)`` from the file's
    first 64 KiB."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            sample = fh.read(64 * 1024)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file (CSV expected)") from None
    if not sample.strip():
        raise DataError(f"{path} is empty")
    if str(path).lower().endswith(".tsv"):
        delimiter, quote = "\t", '"'
    else:
        try:
            d = csv.Sniffer().sniff(sample, delimiters=",;\t")
            delimiter, quote = d.delimiter, d.quotechar or '"'
        except csv.Error:
            delimiter, quote = ",", '"'
    lines = sample.splitlines()
    first = next(csv.reader(lines[:1] or [""], delimiter=delimiter, quotechar=quote), [])
    body = lines[1:-1] or lines[1:]  # the last line of the sample may be cut
    per_row = max(1.0, sum(map(len, body)) / len(body) + 1) if body else None
    return delimiter, quote, [h.strip() for h in first], per_row


def _read_csv(path, target, features, require_target, progress):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    delimiter, quote, header, per_row = _dialect(path)
    target, features = _columns(path, header, target, features, require_target)
    wanted = features + ([target] if target is not None else [])
    parse = pcsv.ParseOptions(delimiter=delimiter, quote_char=quote)
    nulls = sorted({v for m in MISSING for v in (m, m.upper(), m.capitalize())})
    types = {f: pa.float64() for f in features}
    if target is not None:
        types[target] = pa.string()  # labels are decided once the whole column is read
    convert = pcsv.ConvertOptions(column_types=types, include_columns=wanted, null_values=nulls,
                                  strings_can_be_null=True)
    size = os.path.getsize(path)
    # rows the file holds, from the sample's bytes a row (the array is resized if more come)
    assembler = _Assembler(path, features, target, rows_hint=int(size / per_row * 1.02) if per_row else None)
    done = 0
    try:
        for first, chunk in _chunks(path):
            read = pcsv.ReadOptions(column_names=header, skip_rows=1 if first else 0)
            table = pcsv.read_csv(pa.py_buffer(chunk), read_options=read, parse_options=parse,
                                  convert_options=convert)
            for batch in table.to_batches():
                assembler.add(batch)
            done += len(chunk)
            del table, chunk
            if progress is not None:
                progress(done, size)
    except pa.ArrowInvalid as e:
        raise _csv_error(path, e, header, delimiter, quote, features) from None
    return assembler.finish()


def _chunks(path):
    """``(is the first, memoryview)``: the file in pieces of about BLOCK_BYTES,
    each cut after a newline, read into one reused buffer (each view is valid
    until the next is asked for). pyarrow's streaming reader would read the
    whole file ahead of a consumer that converts as it goes; pieces read by
    ``read_csv`` (in parallel, in its own blocks) bound the text in memory to
    one piece. pyarrow's defaults refuse a newline inside a quoted value
    anyway, so no row is cut in two."""
    buf = bytearray(BLOCK_BYTES)
    kept, first = 0, True  # kept: the start of a row carried to the front of buf
    with open(path, "rb", buffering=0) as fh:
        while True:
            if kept == len(buf):  # one row longer than the buffer: grow it
                buf.extend(bytes(len(buf)))
            with memoryview(buf) as view:
                end = kept + fh.readinto(view[kept:])
                if end == kept:  # the end of the file
                    if first or buf[:end].strip():
                        yield first, view[:end]
                    return
                cut = buf.rfind(b"\n", 0, end) + 1
                if cut:
                    yield first, view[:cut]
                    first = False
            if cut:
                buf[:end - cut] = buf[cut:end]
                kept = end - cut
            else:
                kept = end


def _csv_error(path, e, header, delimiter, quote, features):
    """The DataError that explains pyarrow's ``e``: a ragged row, a cell that is
    not a number, or a file that is not text (found by reading it again)."""
    text = str(e)
    if "Empty CSV file" in text:
        return DataError(f"{path} is empty")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = csv.reader(fh, delimiter=delimiter, quotechar=quote)
            next(rows, None)
            index = {h: j for j, h in enumerate(header)}
            for i, row in enumerate(rows, start=1):
                if not row or not any(c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    return DataError(f"{path}, row {i}: {len(row)} fields where the header has "
                                     f"{len(header)}")
                for f in features:
                    v = row[index[f]].strip()
                    if v.lower() not in MISSING and not _is_number(v):
                        return DataError(
                            f"{path}: feature column {f!r} is not numeric (value {v!r} in row {i}); "
                            "encode it as numbers (one 0/1 column per category) or drop the column")
    except UnicodeDecodeError:
        return DataError(f"{path}: not a UTF-8 text file (CSV expected)")
    except csv.Error as err:
        return DataError(f"{path}: malformed CSV ({err})")
    return DataError(f"{path}: not a readable CSV file ({text.splitlines()[0]})")


def _is_number(v):
    try:
        float(v)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------- Parquet


def _read_parquet(path, target, features, require_target, progress):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    header = list(file.schema_arrow.names)
    target, features = _columns(path, header, target, features, require_target)
    for f in features:
        t = file.schema_arrow.field(f).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                or pa.types.is_null(t)):
            first = next((v for v in file.read(columns=[f]).column(0).to_pylist() if v is not None), None)
            raise DataError(f"{path}: feature column {f!r} is not numeric ({t}, e.g. {first!r}); "
                            "encode it as numbers (one 0/1 column per category) or drop the column")
    assembler = _Assembler(path, features, target, rows_hint=file.metadata.num_rows)
    wanted = features + ([target] if target is not None else [])
    groups = file.metadata.num_row_groups
    try:
        for g in range(groups):
            for batch in file.iter_batches(batch_size=1 << 16, row_groups=[g], columns=wanted):
                assembler.add(batch)
            if progress is not None:
                progress(g + 1, groups)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    return assembler.finish()


# ------------------------------------------------------------------ the arrays


class _Assembler:
    """Record batches in, ``(X, y, features, target)`` out.

    The rows go straight into one float64 array, allocated for an estimate of
    the rows the file holds (``rows_hint``) and resized in place (``realloc``: untouched pages
    cost nothing, and glibc moves large blocks without copying them). Each
    slice of rows is checked for missing and infinite values as it arrives,
    so the first one reported is the first in the file."""

    SLICE = 4096  # rows written at a time: a slice of X that stays in cache across the columns

    def __init__(self, source, features, target, rows_hint=None):
        self.source, self.features, self.target = source, features, target
        self.rows_hint = rows_hint
        self.X = None
        self.labels, self.rows = [], 0

    def _reserve(self, rows):
        d = len(self.features)
        if self.X is None:
            self.X = np.empty((max(self.rows_hint or 0, rows), d))
        elif self.rows + rows > len(self.X):
            self.X.resize((max(self.rows + rows, int(len(self.X) * 1.5)), d), refcheck=False)

    def add(self, batch):
        b = batch.num_rows
        if not b:
            return
        self._reserve(b)
        for s in range(0, b, self.SLICE):
            part = batch.slice(s, self.SLICE)
            out = self.X[self.rows + s:self.rows + s + part.num_rows]
            for j, f in enumerate(self.features):
                # to_numpy gives NaN for a null (a missing cell) of a float column
                out[:, j] = part.column(f).to_numpy(zero_copy_only=False)
            if not np.isfinite(out).all():
                self._not_finite(out, self.rows + s)
        if self.target is not None:
            self.labels.append(_label_chunk(batch.column(self.target)))
        self.rows += b

    def _not_finite(self, block, offset):
        bad = ~np.isfinite(block)
        i = int(np.argmax(bad.any(axis=1)))
        j = int(np.argmax(bad[i]))
        what = "missing value" if math.isnan(block[i, j]) else "infinite value"
        raise DataError(f"{self.source}: {what} in row {offset + i + 1}, column "
                        f"{self.features[j]!r}" + ("; fill or drop it first" if what[0] == "m" else ""))

    def finish(self):
        if not self.rows:
            raise DataError(f"{self.source} has a header but no data rows")
        X, self.X = self.X, None
        X.resize((self.rows, len(self.features)), refcheck=False)
        y = _labels(self.source, self.target, self.labels) if self.target is not None else None
        return X, y, self.features, self.target


def _label_chunk(col):
    """A batch's labels, trimmed, with the missing-value spellings as nulls. A
    new array: pyarrow's CSV strings can be views of the block of text they
    were parsed from, which would keep the whole file in memory."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return col
    col = pc.utf8_trim_whitespace(col)
    return pc.if_else(pc.is_in(pc.utf8_lower(col), pa.array(MISSING)), pa.scalar(None, col.type), col)


def _labels(source, name, chunks):
    """Class labels: int64 when every value is an integral number, else str."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = pa.chunked_array(chunks)
    if col.null_count:
        i = int(pc.index(pc.is_null(col), True).as_py())
        raise DataError(f"{source}: missing value in row {i + 1} of the target column {name!r}")
    if pa.types.is_boolean(col.type):
        col = pc.cast(col, pa.int64())
    try:
        numbers = pc.cast(col, pa.float64()).to_numpy()
    except pa.ArrowInvalid:  # some label is not a number: string labels
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            col = pc.cast(col, pa.string())
        codes = pc.dictionary_encode(col.combine_chunks())
        names = np.asarray(codes.dictionary.to_pylist(), dtype=str)
        return names[codes.indices.to_numpy()]
    if not np.all(np.isfinite(numbers)):
        i = int(np.argmax(~np.isfinite(numbers)))
        raise DataError(f"{source}: target column {name!r} holds an infinite value (row {i + 1})")
    integral = numbers == np.round(numbers)
    if not integral.all():
        i = int(np.argmax(~integral))
        raise DataError(
            f"{source}: target column {name!r} holds non-integer numbers (e.g. {numbers[i]:g} in row "
            f"{i + 1}); a classifier needs class labels")
    return numbers.astype(np.int64)


def _quoting(table):
    """pyarrow's "needed" quotes every string: "none" unless some string holds
    a delimiter, a quote or a line break."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for col in table.columns:
        if pa.types.is_string(col.type) and pc.any(pc.match_substring_regex(col, '[,"\r\n]')).as_py():
            return "needed"
    return "none"


def write_table(path, columns: dict) -> None:
    """Write ``columns`` (name -> 1-d array) as CSV with pyarrow: floats in
    their shortest form that reads back as the same double."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    import io

    table = pa.table({name: pa.array(np.asarray(v)) for name, v in columns.items()})
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(list(columns))  # pyarrow would quote every name
    with open(path, "wb") as fh:
        fh.write(header.getvalue().encode("utf-8"))
        pcsv.write_csv(table, fh, pcsv.WriteOptions(include_header=False, quoting_style=_quoting(table)))
