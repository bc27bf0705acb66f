"""Reading a declared table: a CSV file (delimiter, optional header) or a Parquet file
(pyarrow), as column names and rows of text cells, each row with where it came from ("line 7"
of a CSV file, "row 7" of a Parquet file) for the error messages."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedsilo.data.encoding import DatasetError

Rows = list[tuple[str, list[str]]]


def read_csv(
    path: Path, delimiter: str, header: bool, columns: Sequence[str] | None
) -> tuple[list[str], Rows]:
    try:
        with path.open(newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            rows = [
                (f"line {reader.line_num}", [cell.strip() for cell in cells])
                for cells in reader
                if cells
            ]
    except OSError as error:
        raise DatasetError(f"cannot read dataset file {path}: {error.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise DatasetError(f"dataset file {path} is not readable as CSV: {error}") from None
    if header:
        if not rows:
            raise DatasetError(f"{path}: the file is empty but header: true was declared")
        names = rows.pop(0)[1]
        if columns is not None and list(columns) != names:
            raise DatasetError(
                f"{path}: the header names columns {', '.join(names)} "
                f"but the declaration says {', '.join(columns)}"
            )
    else:
        if columns is None:
            raise DatasetError(f"{path}: a CSV file without a header needs declared columns")
        names = list(columns)
    _check_widths(path, names, rows)
    return names, rows


def read_parquet(path: Path, columns: Sequence[str] | None) -> tuple[list[str], Rows]:
    """Every cell as text (null as the empty string, a missing value by default), so a
    Parquet file goes through the same checks and encodings as a CSV file."""
    import pyarrow.parquet as pq
    from pyarrow import ArrowException

    try:
        table = pq.read_table(path)
    except OSError as error:
        raise DatasetError(f"cannot read dataset file {path}: {error}") from None
    except ArrowException as error:
        raise DatasetError(f"dataset file {path} is not readable as Parquet: {error}") from None
    names = [str(name) for name in table.column_names]
    if columns is not None and list(columns) != names:
        raise DatasetError(
            f"{path}: the file's columns are {', '.join(names)} "
            f"but the declaration says {', '.join(columns)}"
        )
    values = [table.column(i).to_pylist() for i in range(table.num_columns)]
    rows = [
        (f"row {index + 1}", [_text(column[index]) for column in values])
        for index in range(table.num_rows)
    ]
    return names, rows


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    return str(value).strip()


def _check_widths(path: Path, names: list[str], rows: Rows) -> None:
    for location, cells in rows:
        if len(cells) != len(names):
            raise DatasetError(
                f"{path} {location}: {len(cells)} fields, expected {len(names)} "
                f"({', '.join(names)})"
            )
