"""Streaming input and output for `hftl predict`: read inputs lazily, write prediction rows as they come.

Inputs: one per line of a text file or standard input (`-`, blank lines skipped), or one column (two for
sentence pairs) of a CSV (standard quoting), TSV (no quoting, as hftl's data files) or JSONL file. A `.json`
file (one JSON list) is read whole, since JSON has no line structure to stream.
Outputs: JSONL (one object a line), or CSV/TSV with the probabilities spread over `prob_<label>` columns (and a
sentence pair's texts over `input` and `input_pair`).
"""

from __future__ import annotations

import csv
import json
import sys
from contextlib import nullcontext
from collections.abc import Iterable, Iterator
from pathlib import Path

from hftl.errors import DataError

#: extension -> csv delimiter of the tabular inputs read by column
TABULAR = {".csv": ",", ".tsv": "\t"}
#: TSV files are hftl's data format: no quoting, so a text may hold `"` (as the shared datasets do)
QUOTING = {".csv": csv.QUOTE_MINIMAL, ".tsv": csv.QUOTE_NONE}


def pick_column(columns: list, column: str | None, default: str | None, where: str) -> str:
    """`column` (checked), else `default` if present, else the only column; a `DataError` otherwise."""
    from hftl.config.parse import did_you_mean

    if column:
        if column not in columns:
            raise DataError(f"{where} has no column '{column}'.{did_you_mean(column, columns)} "
                            f"Columns: {', '.join(map(str, columns))}.")
        return column
    if default in columns:
        return default
    if len(columns) == 1:
        return columns[0]
    raise DataError(f"{where}: which column holds the inputs? Give --column (columns: {', '.join(map(str, columns))}).")


def iter_inputs(source: str, column: str | None = None, default_column: str | None = None, *,
                pair_column: str | None = None) -> Iterator[str | tuple[str, str]]:
    """The inputs of `source`, read lazily: texts, or (text, text_pair) tuples when `pair_column` is given.

    The file and its columns are checked at once; a bad row raises a `DataError` naming the file and line
    when the reading reaches it.

    Args:
        source (`str`): a .txt (or any other) file of one input per line, a .csv/.tsv/.jsonl/.json file, or `-`.
        column (`str`, *optional*): the column holding the inputs (tabular and JSON files).
        default_column (`str`, *optional*): used when `column` is not given and the file has it (the run's text column).
        pair_column (`str`, *optional*): the column of the second text of sentence pairs.
    """
    path = Path(source)
    suffix = path.suffix.lower() if source != "-" else ""
    if pair_column and suffix not in (*TABULAR, ".jsonl", ".json"):
        raise DataError(f"--input {source}: this run reads sentence pairs, two texts an input: give a .csv, .tsv, "
                        f".jsonl or .json file with columns '{column or default_column}' and '{pair_column}' "
                        "(--column and --pair-column name others).")
    if source == "-":
        return _lines(sys.stdin)
    if not path.is_file():
        raise DataError(f"--input {source}: no such file. Give a file of inputs, or - to read standard input.")
    if suffix == ".json":
        return iter(_json_list(path, column, default_column, pair_column))
    handle = path.open(encoding="utf-8", newline="")
    try:
        if suffix in TABULAR:
            reader = csv.DictReader(handle, delimiter=TABULAR[suffix], quoting=QUOTING[suffix])
            columns = list(reader.fieldnames or [])
            if not columns:
                raise DataError(f"{source}: the file is empty; expected a header line naming the columns.")
            names = _names(columns, column, default_column, pair_column, source)
            return _tabular(reader, handle, names, source)
        if suffix == ".jsonl":
            return _jsonl(handle, column, default_column, pair_column, source)
    except BaseException:
        handle.close()
        raise
    return _lines(handle)


def _names(columns, column, default_column, pair_column, where) -> list[str]:
    names = [pick_column(columns, column, default_column, where)]
    if pair_column:
        names.append(pick_column(columns, pair_column, None, where))
    return names


def _value(names: list[str], row: dict):
    return row[names[0]] if len(names) == 1 else (row[names[0]], row[names[1]])


def _lines(handle) -> Iterator[str]:
    with handle if handle is not sys.stdin else nullcontext():
        for line in handle:
            if line.strip():
                yield line.rstrip("\r\n")


def _tabular(reader: csv.DictReader, handle, names: list[str], source: str) -> Iterator:
    with handle:
        for row in reader:
            if None in row:  # more fields than the header: with no quoting, a delimiter inside a text
                raise DataError(f"{source}, line {reader.line_num}: {len(reader.fieldnames) + len(row[None])} fields "
                                f"for {len(reader.fieldnames)} columns. A tab or comma inside a text? Remove it or "
                                "quote the field (CSV only).")
            missing = [name for name in names if row.get(name) is None]
            if missing:
                raise DataError(f"{source}, line {reader.line_num}: no value in column '{missing[0]}' (fewer fields "
                                "than the header). Fill it in or drop the row.")
            yield _value(names, row)


def _jsonl(handle, column, default_column, pair_column, source: str) -> Iterator:
    with handle:
        names = None
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{source}, line {number}: not valid JSON ({err.msg}). Each line must be one "
                                "JSON object or string.") from None
            if isinstance(row, str) and not pair_column:
                yield row
                continue
            if not isinstance(row, dict):
                raise DataError(f"{source}, line {number}: expected a JSON object (or a string), got {row!r:.60}.")
            if names is None:  # the first object's keys decide the column, as a CSV header would
                names = _names(list(row), column, default_column, pair_column, f"{source}, line {number}")
            yield _value(names, _checked(row, names, f"{source}, line {number}"))


def _checked(row: dict, names: list[str], where: str) -> dict:
    for name in names:
        if not isinstance(row.get(name), str):
            got = "no value" if row.get(name) is None else f"{row[name]!r:.60}"
            raise DataError(f"{where}: expected a text in '{name}', got {got}. Fill it in or drop the row.")
    return row


def _json_list(path: Path, column, default_column, pair_column) -> list:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno}). Expected a list of objects or "
                        "strings; for one object a line, name the file .jsonl.") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a list of objects or strings, got {type(rows).__name__}.")
    if all(isinstance(row, str) for row in rows) and not pair_column:
        return rows
    columns = list(dict.fromkeys(key for row in rows if isinstance(row, dict) for key in row))
    names = _names(columns, column, default_column, pair_column, str(path))
    values = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path}, item {number}: expected a JSON object, got {row!r:.60}.")
        values.append(_value(names, _checked(row, names, f"{path}, item {number}")))
    return values


def output_format(output: str, fmt: str | None = None) -> str:
    """`fmt`, else "csv" for a .csv/.tsv output, else "jsonl"."""
    return fmt or ("csv" if output.lower().endswith((".csv", ".tsv")) else "jsonl")


def _flat(row: dict) -> dict:
    flat = {}
    for key, value in row.items():
        if key == "probabilities" and isinstance(value, dict):
            flat.update({f"prob_{label}": p for label, p in value.items()})
        elif key == "input" and isinstance(value, tuple):  # a sentence pair: one column per text
            flat["input"], flat["input_pair"] = value
        else:
            flat[key] = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value
    return flat


class PredictionWriter:
    """Writes prediction rows as they come, to a file or standard output (`-`).

    CSV takes its columns from the first row (probabilities become `prob_<label>` columns); a `.tsv`
    output is tab-separated. Use it as a context manager, or call `close()`.

    Args:
        output (`str`, *optional*, defaults to `"-"`): the file to write, or `-` for standard output.
        fmt (`str`, *optional*): "jsonl" or "csv" (default: from the extension, see `output_format`).
    """

    def __init__(self, output: str = "-", fmt: str | None = None):
        self.output, self.format, self.count = output, output_format(output, fmt), 0
        if self.format not in ("jsonl", "csv"):
            raise DataError(f"output format must be jsonl or csv, got '{self.format}'.")
        if output == "-":
            self._handle = sys.stdout
        else:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            self._handle = Path(output).open("w", encoding="utf-8", newline="")
        self._csv = None

    def write(self, rows: Iterable[dict]) -> int:
        """Write `rows` and flush (so a reader of the output sees them); returns how many were written."""
        written = 0
        for row in rows:
            if self.format == "jsonl":
                self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                flat = _flat(row)
                if self._csv is None:
                    delimiter = "\t" if self.output.lower().endswith(".tsv") else ","
                    self._csv = csv.DictWriter(self._handle, fieldnames=list(flat), delimiter=delimiter)
                    self._csv.writeheader()
                self._csv.writerow(flat)
            written += 1
        self._handle.flush()
        self.count += written
        return written

    def close(self) -> None:
        if self._handle is not sys.stdout:
            self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
