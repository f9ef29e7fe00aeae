"""The one rule for reading delimited (CSV/TSV) files, shared by the row checks, the loader and `hftl predict`.

TSV is read without quote handling (`csv.QUOTE_NONE`): a lone `"` in a sentence (common in SST-2) would
otherwise swallow the rows after it. CSV follows the usual rules (a field may be quoted, `""` is a quote).
The same options drive Python's `csv` module here and pandas inside the `datasets` csv builder, so a
check and the loader see the same rows.

Headerless files are read with `column_names` (`data.column_names`): every line is then a data row.
"""

from __future__ import annotations

import csv
from contextlib import contextmanager
from pathlib import Path

from hftl.errors import DataError

#: extension -> options understood by both `csv.reader` and the `datasets` csv builder (pandas)
DIALECTS = {
    ".csv": {"delimiter": ",", "quoting": csv.QUOTE_MINIMAL},
    ".tsv": {"delimiter": "\t", "quoting": csv.QUOTE_NONE},
}
#: how messages name the delimiter
SEPARATOR_NAMES = {",": "comma", "\t": "tab"}


def is_delimited(path) -> bool:
    """Whether `path` is read as a delimited table (by its extension: .csv or .tsv)."""
    return Path(path).suffix.lower() in DIALECTS


def csv_dialect(path) -> dict:
    """The `csv.reader` / `csv.DictReader` keyword arguments for a .csv or .tsv file.

    Raises:
        `ValueError`: `path` is not a .csv or .tsv file.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in DIALECTS:
        raise ValueError(f"{path}: not a delimited file (expected one of {', '.join(DIALECTS)}).")
    return dict(DIALECTS[suffix])


def separator_name(path) -> str:
    """'comma' or 'tab': the delimiter of `path`, as messages name it."""
    return SEPARATOR_NAMES[csv_dialect(path)["delimiter"]]


def loader_options(path, column_names: list[str] | None = None) -> dict:
    """Options for `datasets.load_dataset("csv", ...)` that read `path` as `open_table` does.

    Args:
        path (`str` or `Path`): a .csv or .tsv file.
        column_names (`list[str]`, *optional*): the file has no header line; these name its columns
            (the csv builder's `column_names`, i.e. pandas' `names` with `header=None`).
    """
    options = csv_dialect(path)
    if column_names:
        options.update(column_names=list(column_names), header=None)
    return options


@contextmanager
def open_table(path, column_names: list[str] | None = None):
    """Open a .csv/.tsv file as a `csv.DictReader` (UTF-8, a byte-order mark ignored).

    Args:
        path (`str` or `Path`): the file.
        column_names (`list[str]`, *optional*): the file has no header line; these name its columns.

    Example:
        ```python
        with open_table("train.tsv") as rows:
            texts = [row["text"] for row in rows]
        ```
    """
    with Path(path).open(encoding="utf-8-sig", newline="") as handle:
        fieldnames = list(column_names) if column_names else None
        yield csv.DictReader(handle, fieldnames=fieldnames, **csv_dialect(path))


def read_header(path, column_names: list[str] | None = None) -> list[str]:
    """The column names of a .csv/.tsv file, read from its first line only.

    With `column_names` the file has no header: its first line must hold as many fields as there are names.

    Raises:
        `DataError`: `column_names` does not fit the first line, or the file is not UTF-8 text.
    """
    try:
        with Path(path).open(encoding="utf-8-sig", newline="") as handle:
            first = next((record for record in csv.reader(handle, **csv_dialect(path)) if record), [])
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}). Re-save the file as UTF-8.") from None
    if not column_names:
        return first
    check_first_line(path, first, column_names)
    return list(column_names)


def check_first_line(path, first: list[str], column_names: list[str]) -> None:
    """`column_names` must fit the first record of a headerless file, which must not be a header itself.

    Raises:
        `DataError`: the first line has another number of fields, or repeats the names (the file has a header).
    """
    if not first:
        return
    if len(first) != len(column_names):
        raise DataError(
            f"{path}: line 1 has {len(first)} {separator_name(path)}-separated fields, but data.column_names names "
            f"{len(column_names)} ({', '.join(column_names)}). Give one name per column."
        )
    if [field.strip() for field in first] == list(column_names):
        raise DataError(
            f"{path}: line 1 is a header ({', '.join(first)}), but data.column_names says the file has none. "
            "Remove data.column_names (the header names the columns), or remove the header line."
        )
