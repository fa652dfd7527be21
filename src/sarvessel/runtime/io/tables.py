"""A small CSV column reader for the runtime, which has no pandas.

A :class:`CsvTable` keeps the raw cells with their line numbers, so that a bad value is reported
as ``file, line, column, value``; the ``*_column`` functions turn one column into a numpy array.
Missing values follow pandas' default NA spellings (empty, ``nan``, ``NA``, ``null``, ...), so a
file means the same here as in the pandas-based official xView3 scorer.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarvessel.runtime.errors import LabelsError

#: Cells read as missing (NaN), as pandas ``read_csv`` does by default.
NA_VALUES: frozenset[str] = frozenset(
    {"", "nan", "NaN", "-nan", "-NaN", "NA", "N/A", "n/a", "#N/A", "#NA", "<NA>", "NULL", "null",
     "None", "#N/A N/A", "1.#IND", "-1.#IND", "1.#QNAN", "-1.#QNAN"}
)
#: Cells read as booleans (pandas' default true/false spellings, plus 1/0).
TRUE_VALUES: frozenset[str] = frozenset({"True", "TRUE", "true", "1", "1.0"})
FALSE_VALUES: frozenset[str] = frozenset({"False", "FALSE", "false", "0", "0.0"})


@dataclass(frozen=True)
class CsvTable:
    """The cells of a CSV file as strings: ``header`` names, ``rows[i][j]`` the cell of column j.

    ``lines[i]`` is the 1-based line number where row i ends (the header is line 1), for error
    messages.
    """

    path: Path
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    lines: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.rows)

    def require(self, names: Sequence[str], *, what: str) -> None:
        """Raise :class:`LabelsError` naming the file and every column of ``names`` it lacks."""
        missing = [n for n in names if n not in self.header]
        if missing:
            raise LabelsError(
                f"{self.path}: {what} CSV lacks column(s) {', '.join(missing)} "
                f"(has {', '.join(self.header) or 'no columns'})"
            )

    def cells(self, name: str) -> list[str]:
        """The raw, stripped cells of column ``name``."""
        j = self.header.index(name)
        return [row[j].strip() for row in self.rows]

    def bad_value(self, i: int, name: str, value: str, expected: str) -> LabelsError:
        """The error for an unusable cell: file, line, column, value and what was expected."""
        return LabelsError(
            f"{self.path}, line {self.lines[i]}: column {name} has {value!r}, expected {expected}"
        )


def read_csv_table(path: Path) -> CsvTable:
    """Read a CSV file with a header line; blank lines are skipped.

    Raises :class:`LabelsError` naming the file when it is missing, empty (no header), has a
    duplicated column name or a row whose field count differs from the header's.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header: list[str] | None = None
            rows: list[tuple[str, ...]] = []
            lines: list[int] = []
            for fields in reader:
                if not fields or all(not f.strip() for f in fields):
                    continue
                if header is None:
                    header = [f.strip() for f in fields]
                    continue
                if len(fields) != len(header):
                    raise LabelsError(
                        f"{path}, line {reader.line_num}: {len(fields)} fields, "
                        f"the header has {len(header)}"
                    )
                rows.append(tuple(fields))
                lines.append(reader.line_num)
    except FileNotFoundError:
        raise LabelsError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelsError(f"{path}: cannot read as CSV ({exc})") from exc
    if header is None:
        raise LabelsError(f"{path}: file is empty (no header line)")
    seen: set[str] = set()
    for name in header:
        if name and name in seen:
            raise LabelsError(f"{path}: column {name} appears more than once in the header")
        seen.add(name)
    return CsvTable(path, tuple(header), tuple(rows), tuple(lines))


def float_column(table: CsvTable, name: str, *, allow_missing: bool, finite: bool,
                 nonnegative: bool = False) -> np.ndarray:
    """Column ``name`` as float64; missing cells become NaN when ``allow_missing``.

    ``finite`` rejects ``inf``; ``nonnegative`` rejects values below 0 (pixel positions,
    lengths). Raises :class:`LabelsError` with file, line and value otherwise.
    """
    out = np.empty(len(table), np.float64)
    for i, cell in enumerate(table.cells(name)):
        if cell in NA_VALUES:
            if not allow_missing:
                raise table.bad_value(i, name, cell, "a number (it may not be missing)")
            out[i] = math.nan
            continue
        try:
            value = float(cell)
        except ValueError:
            value = math.nan
            ok = False
        else:
            ok = not math.isnan(value) and (math.isfinite(value) or not finite)
        if not ok:
            raise table.bad_value(i, name, cell, "a finite number" if finite else "a number")
        if nonnegative and value < 0:
            raise table.bad_value(i, name, cell, "a number >= 0")
        out[i] = value
    return out


def bool_column(table: CsvTable, name: str, *, allow_missing: bool) -> np.ndarray:
    """Column ``name`` as float64 1.0 (true) / 0.0 (false) / NaN (missing).

    Float keeps the third state that the xView3 labels use (``is_fishing`` is often unknown).
    Accepts True/False in pandas' spellings and 1/0.
    """
    out = np.empty(len(table), np.float64)
    for i, cell in enumerate(table.cells(name)):
        if cell in TRUE_VALUES:
            out[i] = 1.0
        elif cell in FALSE_VALUES:
            out[i] = 0.0
        elif cell in NA_VALUES and allow_missing:
            out[i] = math.nan
        else:
            expected = "True/False/1/0" + (" or empty" if allow_missing else "")
            raise table.bad_value(i, name, cell, expected)
    return out


def str_column(
    table: CsvTable, name: str, *, allowed: Collection[str] | None = None
) -> np.ndarray:
    """Column ``name`` as an object array of non-empty strings, optionally from ``allowed``."""
    cells = table.cells(name)
    for i, cell in enumerate(cells):
        if not cell:
            raise table.bad_value(i, name, cell, "a non-empty value")
        if allowed is not None and cell not in allowed:
            raise table.bad_value(i, name, cell, "one of " + ", ".join(sorted(allowed)))
    return np.array(cells, dtype=object)
