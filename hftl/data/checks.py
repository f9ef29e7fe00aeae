"""Row-level checks of local data files, run by `hftl validate` and `hftl train` before any model is loaded.

`read_table` parses a csv/tsv/jsonl/json/parquet file the way the `datasets` loaders will (same
delimiter and quoting rules, from `hftl.data.tables`; `data.column_names` for headerless files) and
reports what would otherwise surface later, or not at all: bad encodings, ragged rows, unparsable JSON
lines. The checks below it (empty cells, label sets, split sizes) are shared by every task with text or
label columns. Each problem names the file, the line and the column, and says how to fix it. Data the
Hub or a saved `datasets` folder provides is checked when it is loaded instead.
"""

from __future__ import annotations

import csv
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from hftl.data.tables import check_first_line, csv_dialect, is_delimited, separator_name
from hftl.errors import DataError

#: files larger than this are not scanned row by row here (their rows are checked when loaded)
MAX_SCAN_BYTES = 256 * 1024 * 1024
#: how many offending lines a message quotes
SHOWN = 3


@dataclass(frozen=True)
class Table:
    """The rows of a local data file, by column.

    Attributes:
        path (`str`): the file.
        columns (`list[str]`): column names in file order.
        values (`dict[str, list]`): column -> cell values (None where a row lacks the column).
        positions (`list[int]`): for each row, its line in the file (csv/tsv/jsonl) or its row number.
        unit (`str`): "line" or "row", how `positions` are named in messages.
    """

    path: str
    columns: list[str]
    values: dict
    positions: list[int]
    unit: str

    def __len__(self) -> int:
        return len(self.positions)

    def where(self, index: int) -> str:
        return f"{self.unit} {self.positions[index]}"


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at line {line} cannot be decoded). "
            "Re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`."
        ) from None


def _read_delimited(path: Path, column_names: tuple[str, ...] | None = None) -> Table:
    tsv = csv_dialect(path)["delimiter"] == "\t"
    text = _decode(path)
    reader = csv.reader(text.splitlines(keepends=True), **csv_dialect(path))
    header = list(column_names) if column_names else None
    positions, rows, ragged = [], [], []
    line = 0
    for record in reader:
        start, line = line + 1, reader.line_num
        if not record or record == [""]:
            continue  # blank lines are skipped by the loader too
        if header is None:
            header = record
            continue
        if column_names and not rows and not ragged:
            check_first_line(path, record, list(column_names))
        if len(record) != len(header):
            ragged.append((start, len(record)))
            continue
        positions.append(start)
        rows.append(record)
    if header is None:
        raise DataError(f"{path}: the file has no header line. The first line must name the columns "
                        "(or set data.column_names for a file without one).")
    if ragged:
        shown = ", ".join(f"line {n} has {k}" for n, k in ragged[:SHOWN])
        more = f" (and {len(ragged) - SHOWN} more lines)" if len(ragged) > SHOWN else ""
        sep = separator_name(path)
        hint = ("a tab inside a text field? Remove it" if tsv
                else 'a comma inside a text field? Put the field in double quotes ("a, b")')
        named = "data.column_names names" if column_names else "the header has"
        raise DataError(
            f"{path}: ragged rows: {named} {len(header)} {sep}-separated fields "
            f"({', '.join(header)}) but {shown}{more}. Is there {hint}, or fill in the missing fields."
        )
    values = {name: [row[i] for row in rows] for i, name in enumerate(header)}
    return Table(str(path), list(header), values, positions, "line")


def _from_records(path: Path, records: list, positions: list[int], unit: str) -> Table:
    columns: list[str] = []
    for record in records:
        columns.extend(k for k in record if k not in columns)
    values = {name: [record.get(name) for record in records] for name in columns}
    return Table(str(path), columns, values, positions, unit)


def _read_jsonl(path: Path) -> Table:
    records, positions = [], []
    for number, line in enumerate(_decode(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {number} is not valid JSON ({err.msg}). Each line must be one JSON object.") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number} is a JSON {type(record).__name__}, not an object with named fields.")
        records.append(record)
        positions.append(number)
    return _from_records(path, records, positions, "line")


def _read_json(path: Path) -> Table | None:
    text = _decode(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return _read_jsonl(path)  # the `datasets` json loader also reads JSON lines from a .json file
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return _from_records(path, data, list(range(1, len(data) + 1)), "row")
    return None  # a column-oriented or nested layout: checked when loaded


def _read_parquet(path: Path) -> Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # arrow raises several types for corrupt files
        raise DataError(f"{path}: not a readable parquet file ({err}).") from None
    values = {name: table.column(name).to_pylist() for name in table.column_names}
    return Table(str(path), list(table.column_names), values, list(range(1, table.num_rows + 1)), "row")


@functools.lru_cache(maxsize=16)
def _read_cached(path: str, mtime_ns: int, size: int, column_names: tuple[str, ...] | None) -> Table | None:
    file = Path(path)
    suffix = file.suffix.lower()
    if is_delimited(file):
        return _read_delimited(file, column_names)
    if suffix == ".jsonl":
        return _read_jsonl(file)
    if suffix == ".json":
        return _read_json(file)
    if suffix == ".parquet":
        return _read_parquet(file)
    return None


def read_table(source: str, column_names: list[str] | None = None) -> Table | None:
    """The rows of local file `source`; None for other sources, other formats and very large files.

    Args:
        source (`str`): the data source.
        column_names (`list[str]`, *optional*): `data.column_names`: a CSV/TSV file has no header line.

    Raises:
        `DataError`: the file cannot be decoded or parsed (message names the line and the fix).
    """
    path = Path(source)
    if not path.is_file():
        return None
    stat = path.stat()
    if stat.st_size > MAX_SCAN_BYTES:
        return None
    names = tuple(column_names) if column_names else None
    return _read_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size, names)


def scan_problems(source: str, where: str, column_names: list[str] | None = None) -> list[str]:
    """Problems found by parsing local file `source` whole (encoding, ragged rows, bad JSON, no rows)."""
    try:
        table = read_table(source, column_names)
    except DataError as err:
        return [f"{where}: {err}"]
    if table is not None and len(table) == 0:
        return [f"{where}: {source} has no data rows (only a header, or nothing). Add examples."]
    return []


def _limited(table: Table, limit: int | None) -> int:
    return len(table) if limit is None else min(len(table), limit)


def _quote(table: Table, indices: list[int], describe) -> str:
    shown = "; ".join(f"{table.where(i)}: {describe(i)}" for i in indices[:SHOWN])
    more = f"; and {len(indices) - SHOWN} more" if len(indices) > SHOWN else ""
    return shown + more


def _is_blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def check_text_cells(table: Table, column: str, where: str, limit: int | None = None) -> list[str]:
    """One problem if some rows of `column` are empty or not text."""
    cells = table.values.get(column, [])[: _limited(table, limit)]
    bad = [i for i, v in enumerate(cells) if _is_blank(v) or not isinstance(v, str)]
    if not bad:
        return []
    return [
        f"{where}: {table.path}: {len(bad)} row(s) have an empty or non-text '{column}' cell "
        f"({_quote(table, bad, lambda i: repr(cells[i]))}). Fill them in or drop those rows."
    ]


def check_label_sets(tables: dict, label_column: str, train_limit: int | None = None,
                     eval_limit: int | None = None) -> list[str]:
    """Labels must be present; train needs two classes; validation/test may only use labels train has.

    Args:
        tables (`dict[str, Table]`): split name -> table, for the local files among the splits.
        label_column (`str`): the column holding the class label.
        train_limit, eval_limit (`int`, *optional*): `max_train_samples` / `max_eval_samples` (only the
            first rows are used, as in training).
    """
    problems, known = [], None
    for name, table in tables.items():
        where = f"data.{name}"
        limit = train_limit if name == "train" else eval_limit
        labels = table.values.get(label_column, [])[: _limited(table, limit)]
        missing = [i for i, v in enumerate(labels) if _is_blank(v)]
        if missing:
            problems.append(
                f"{where}: {table.path}: {len(missing)} row(s) have no '{label_column}' "
                f"({_quote(table, missing, lambda i: 'empty')}). Fill in the label or drop those rows."
            )
            continue
        if name == "train":
            known = {str(v) for v in labels}
            if len(known) < 2:
                only = next(iter(known), "none")
                used = f"the first {len(labels)} rows of " if limit is not None and limit < len(table) else ""
                problems.append(
                    f"{where}: {used}{table.path} has a single class in '{label_column}' ({only!r}); classification "
                    "needs at least two. Add examples of the other classes (or raise data.max_train_samples)."
                )
    if known is None or len(known) < 2:
        return problems
    for name, table in tables.items():
        if name == "train":
            continue
        labels = table.values.get(label_column, [])[: _limited(table, eval_limit)]
        unseen = [i for i, v in enumerate(labels) if not _is_blank(v) and str(v) not in known]
        if unseen:
            values = sorted({str(labels[i]) for i in unseen})
            problems.append(
                f"data.{name}: {table.path}: label(s) {', '.join(map(repr, values))} do not occur in the training data "
                f"({_quote(table, unseen, lambda i: repr(labels[i]))}). Known labels: {', '.join(sorted(known))}. "
                "Fix the labels, or add examples of them to data.train."
            )
    return problems


def check_validation_split(n_train: int, config) -> list[str]:
    """Enough training rows to hold out `validation_fraction` when no validation file is given."""
    if config.validation:
        return []
    if config.max_train_samples is not None:
        n_train = min(n_train, config.max_train_samples)
    n_val = int(round(n_train * config.validation_fraction))
    if n_val >= 1 and n_train - n_val >= 1:
        return []
    return [
        f"data.train: {n_train} rows are too few to hold out validation_fraction {config.validation_fraction} "
        f"({n_val} validation rows, {n_train - n_val} training rows). Add rows, raise data.validation_fraction, "
        "or give a data.validation file."
    ]


def check_holdout_labels(tables: dict, label_column: str, config, seed: int) -> list[str]:
    """Label sets of the split training will use when validation is held out of train (same seed, same split).

    Args:
        tables (`dict[str, Table]`): split name -> table, for the local files among the splits.
        label_column (`str`): the column holding the class label.
        config (`DataConfig`): the data section (`validation_fraction`, sample limits).
        seed (`int`): the run's seed (`training.seed`).
    """
    from hftl.data.holdout import holdout_indices, keeps_every_class, unseen_label_problems

    train = tables.get("train")
    if train is None or config.validation or label_column not in train.values:
        return []
    n_rows = _limited(train, config.max_train_samples)
    n_val = int(round(n_rows * config.validation_fraction))
    if n_val < 1 or n_rows - n_val < 1:
        return []  # reported by `check_validation_split`
    labels = train.values[label_column][:n_rows]
    if keeps_every_class(labels, n_val):
        return []  # the common case, decided without computing the split (or importing scikit-learn)
    holdout = holdout_indices(n_rows, n_val, seed, labels)
    split = {"train": [labels[i] for i in holdout.train], "validation": [labels[i] for i in holdout.validation]}
    if "test" in tables and label_column in tables["test"].values:
        test = tables["test"]
        split["test"] = test.values[label_column][: _limited(test, config.max_eval_samples)]
    return unseen_label_problems(split, config.splits(), holdout)


def check_rows(config, text_columns: list[str], label_column: str | None, seed: int | None = None) -> list[str]:
    """Every row-level check for the local files of a `DataConfig` with text and label columns.

    Args:
        config (`DataConfig`): the data section (`column_names` is honoured for CSV/TSV files).
        text_columns (`list[str]`): columns that must hold non-empty text.
        label_column (`str`, *optional*): the class label column (classification).
        seed (`int`, *optional*): the run's seed (`training.seed`). With it, when validation is held out of
            train, the label sets are checked on the split training will use (see `hftl.data.splits`).
    """
    problems, tables = [], {}
    for name, source in config.splits().items():
        try:
            table = read_table(source, getattr(config, "column_names", None))
        except DataError:
            continue  # reported by `check_source`
        if table is None:
            continue
        tables[name] = table
        limit = config.max_train_samples if name == "train" else config.max_eval_samples
        for column in text_columns:
            if column in table.values:
                problems += check_text_cells(table, column, f"data.{name}", limit)
    if label_column and all(label_column in t.values for t in tables.values()):
        label_problems = check_label_sets(tables, label_column, config.max_train_samples, config.max_eval_samples)
        if not label_problems and seed is not None:
            label_problems = check_holdout_labels(tables, label_column, config, seed)
        problems += label_problems
    if "train" in tables:
        problems += check_validation_split(len(tables["train"]), config)
    return problems
