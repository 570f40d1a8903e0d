"""Reading a data file of your own: ``.npz`` or ``.csv``, with one-line errors.

``read(path)`` returns the arrays a file holds, by the names :func:`data.from_arrays`
takes (``X``, ``y``, optionally ``X_val``/``y_val`` and ``X_test``/``y_test``; a CSV's
column names as ``features`` and ``label_column``). Every problem with the file is a
``ValueError`` (``FileNotFoundError`` for a missing one) that names the file and what is
wrong: the row and column of a value that is not a number, the array names expected.
Nothing is unpickled: ``.npz`` files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import zipfile
import zlib

import numpy as np

FORMATS = (".npz", ".csv")
NPZ_NAMES = ("X", "y", "X_val", "y_val", "X_test", "y_test")


def read(path: str, *, label_column: str | None = None, labels: str = "required",
         features: tuple | None = None) -> dict:
    """The arrays in ``path``.

    Args:
      label_column: a CSV's label column (default: the last one; for ``labels="optional"``
        the training run's label column, used only where the header has it).
      labels: ``"required"`` (training, evaluation) or ``"optional"`` (prediction: a file
        of features only is fine).
      features: the training run's feature names: a CSV must have those columns.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"{path}: expected a .npz or .csv file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if not os.path.isfile(path):
        raise ValueError(f"{path} is not a file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path} is empty")
    try:
        return (_npz if ext == ".npz" else _csv)(path, label_column, labels, features)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from e


def _npz(path, label_column, labels, features) -> dict:
    if not zipfile.is_zipfile(path):  # np.load would try it as a pickle
        raise ValueError(f"{path} is not a readable .npz file (not a zip archive of arrays: "
                         "write it with numpy.savez)")
    try:
        with zipfile.ZipFile(path) as z:
            members = [m for m in z.namelist() if m.endswith(".npy")]
            names = [m[:-4] for m in members]
            unknown = [n for n in names if n not in NPZ_NAMES]
            need = ["X"] + (["y"] if labels == "required" else [])
            if unknown or any(n not in names for n in need) or len(members) != len(z.namelist()):
                raise ValueError(f"{path} holds arrays {', '.join(names) or '(none)'}; expected "
                                 f"{' and '.join(need)}"
                                 + (" (optionally y)" if labels != "required" else "")
                                 + " (optionally X_val, y_val, X_test, y_test)")
            return {n: _member(path, z, m) for n, m in zip(names, members)}
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise ValueError(f"{path} is not a readable .npz file ({e})") from e


def aligned_empty(shape, dtype, order: str = "C") -> np.ndarray:
    """An uninitialized array whose data starts on a 64-byte boundary: on CPU,
    ``jax.device_put`` then uses its memory as it is instead of copying it (numpy
    aligns to 16 bytes), so a large dataset is held once, not twice."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(nbytes + 64, np.uint8)
    start = (-buf.ctypes.data) % 64
    return buf[start:start + nbytes].view(dtype).reshape(shape, order=order)


def _member(path: str, z: zipfile.ZipFile, member: str) -> np.ndarray:
    """One array of an .npz, read a block at a time into an aligned array
    (:func:`aligned_empty`), never unpickled."""
    with z.open(member) as f:
        try:
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0)(f)
        except ValueError as e:
            raise ValueError(f"{path}: {member} is not a .npy array ({e})") from e
        if dtype.hasobject:
            raise ValueError(f"{path}: {member[:-4]} holds Python objects (save plain numeric "
                             "arrays: no object arrays, no pickle)")
        a = aligned_empty(shape, dtype, order="F" if fortran else "C")
        view, done = memoryview(a.reshape(-1, order="A")).cast("B"), 0
        while done < a.nbytes:
            n = f.readinto(view[done:done + (1 << 24)])  # a zip member reads via a bytes copy
            if not n:
                raise ValueError(f"{path}: {member[:-4]} is truncated")
            done += n
    return a


F32_MAX = float(np.finfo(np.float32).max)  # the network computes in float32


DELIMITERS = (",", ";", "\t")


def _text(path: str) -> str:
    """The file's text: UTF-8 (a byte-order mark dropped) or UTF-16 with its mark;
    anything else is one line naming the line and column of the first byte that is not
    UTF-8."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} starts with a UTF-16 byte-order mark but is not UTF-16 "
                             f"text ({e.reason}); save it as UTF-8") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValueError(f"{path} line {line}, character {column}: byte 0x{raw[e.start]:02x} is "
                         "not UTF-8 text (Latin-1 or Windows-1252?); save the file as UTF-8, "
                         "e.g. 'CSV UTF-8' in a spreadsheet or iconv -f latin1 -t utf-8") from None


def _rows(path: str) -> tuple[list[list[str]], list[int]]:
    """The CSV's rows and the line each ends on, blank and whitespace-only lines
    dropped. The delimiter is a comma, or a semicolon or tab where the header has no
    comma and one of those; a delimiter ending every line (a spreadsheet's export) is
    not an empty last column."""
    text = _text(path)
    first = text.lstrip().split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text, newline=""),
                        delimiter=next((d for d in DELIMITERS if d in first), ","))
    rows, lines = [], []
    for r in reader:
        if any(c.strip() for c in r):
            rows.append(r)
            lines.append(reader.line_num)
    while (rows and len(rows[0]) > 1 and len({len(r) for r in rows}) == 1
           and not any(r[-1].strip() for r in rows)):
        rows = [r[:-1] for r in rows]
    return rows, lines


def _column(path: str, cells: np.ndarray, name: str, lines: list[int]) -> np.ndarray:
    """One feature column as float64, or a ValueError naming the file, line and column of
    the first cell that is not a finite number within float32's range."""
    try:
        column = cells.astype(np.float64)
    except ValueError:
        for n, v in enumerate(cells):
            try:
                float(v)
            except ValueError:
                v = str(v)
                hint = (" (an empty cell: fill in or drop missing values)" if not v.strip()
                        else " (a decimal comma? write numbers with a point)"
                        if re.fullmatch(r"\s*[-+]?\d*,\d+\s*", v) else "")
                raise ValueError(f"{path} line {lines[n]}, column {name!r}: {v!r} is not a "
                                 f"number{hint}") from None
    bad = ~np.isfinite(column) | (np.abs(column) > F32_MAX)
    if bad.any():
        n = int(np.argmax(bad))
        why = (f"beyond float32's range ({F32_MAX:.3g}), which the network computes in; "
               "rescale the column" if np.isfinite(column[n])
               else "not a finite number; features must be finite (fill in or drop it)")
        raise ValueError(f"{path} line {lines[n]}, column {name!r}: {cells[n].strip()} is "
                         f"{why}")
    return column


def _csv(path, label_column, labels, features) -> dict:
    rows, lines = _rows(path)
    if not rows:
        raise ValueError(f"{path} is empty")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if not body:
        raise ValueError(f"{path} has a header row and no examples")
    for i, h in enumerate(header):
        if not h:
            raise ValueError(f"{path}: column {i + 1} has no name (a pandas index? write the "
                             "file with index=False, or name the column)")
        if header.index(h) != i:
            raise ValueError(f"{path}: columns {header.index(h) + 1} and {i + 1} are both "
                             f"named {h!r}; column names must be unique")
    if labels == "required":
        name = label_column or header[-1]
        if name not in header:
            raise ValueError(f"{path} has no column {name!r} for the labels (columns: "
                             f"{', '.join(header)}); name it with --label-column")
    else:
        name = label_column if label_column in header else None
    li = header.index(name) if name is not None else None
    cols = [i for i in range(len(header)) if i != li]
    if not cols:
        raise ValueError(f"{path} has no feature columns besides the labels (one column, "
                         f"{header[0]!r}: columns are separated by commas, semicolons or tabs)")
    names = tuple(header[i] for i in cols)
    if features is not None and names != tuple(features):
        raise ValueError(f"{path} has feature columns {', '.join(names)}; the run was trained "
                         f"on {', '.join(features)}")
    for n, r in enumerate(body):
        if len(r) != len(header):
            raise ValueError(f"{path} line {lines[n + 1]} has {len(r)} fields; the header has "
                             f"{len(header)}")
    cells = np.array(body, dtype=str)
    X = aligned_empty((len(body), len(cols)), np.float32)
    for j, c in enumerate(cols):
        X[:, j] = _column(path, cells[:, c], header[c], lines[1:])
    out = {"X": X, "features": names}
    if li is not None:
        y = np.char.strip(cells[:, li])
        try:
            y = y.astype(np.int64)  # whole numbers stay numbers; anything else strings
        except ValueError:
            pass
        out.update(y=y, label_column=name)
    return out


__all__ = ["FORMATS", "NPZ_NAMES", "aligned_empty", "read"]
