"""Column checks every table-reading task shares: required columns present (read from the first line only),
text columns holding text."""

from __future__ import annotations

from hftl.config.parse import did_you_mean
from hftl.data.loading import check_source, read_columns
from hftl.errors import DataError


def check_columns(source: str, where: str, required: dict[str, str], column_names: list[str] | None = None) -> list[str]:
    """Problems for each required column (role -> name) missing from the first line of a local file (or from
    `column_names`, the names of a headerless file's columns)."""
    columns = read_columns(source, column_names)
    if columns is None:
        return []
    return [
        f"{where}: {source} has no {role} column '{name}'.{did_you_mean(name, columns)} Columns: {', '.join(columns)}. "
        f"Set data.{role} to one of them."
        for role, name in required.items()
        if name not in columns
    ]


def check_sources(data, required: dict[str, str]) -> list[str]:
    """Problems of every configured split: existence, format, and the required columns of its first line."""
    problems = []
    for name, source in data.splits().items():
        where = f"data.{name}"
        try:
            problems += (check_source(source, where, column_names=data.column_names)
                         or check_columns(source, where, required, data.column_names))
        except DataError as err:
            problems.append(f"{where}: {err}")
    return problems


def require_source(source: str, where: str, required: dict[str, str], column_names: list[str] | None = None) -> None:
    """`check_source` and `check_columns` of one source, raised as one `DataError`."""
    problems = (check_source(source, where, column_names=column_names)
                or check_columns(source, where, required, column_names))
    if problems:
        raise DataError(" ".join(problems))


def check_loaded_columns(dataset, required: dict[str, str], source: str) -> None:
    """The required columns (role -> name) exist in a loaded dataset (for sources `read_columns` cannot peek at)."""
    missing = {role: name for role, name in required.items() if name not in dataset.column_names}
    if missing:
        role, name = next(iter(missing.items()))
        raise DataError(f"{source}: no {role} column '{name}'.{did_you_mean(name, dataset.column_names)} "
                        f"Columns: {', '.join(dataset.column_names)}. Set data.{role} to one of them.")


def check_texts(texts, where: str) -> None:
    """Every cell holds non-empty text."""
    for row, text in enumerate(texts, start=1):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}, row {row}: the text is empty or not text ({text!r}). Fill it in or drop the row.")


def check_text_column(dataset, column: str, source: str) -> None:
    """The text column exists and holds strings (checked on the loaded data)."""
    check_loaded_columns(dataset, {"text_column": column}, source)
    dtype = getattr(dataset.features[column], "dtype", None)
    if dtype not in ("string", "large_string"):
        raise DataError(f"{source}: column '{column}' holds {dtype or type(dataset.features[column]).__name__} values, "
                        "not text. Set data.text_column to the column with the raw text.")


def split_sources(data) -> dict[str, str]:
    """Where each split comes from, as messages name it: its source, or the share of train held out for it."""
    sources = data.splits()
    return {name: sources.get(name) or f"the share of {sources['train']} held out for {name}"
            for name in ("train", "validation", "test") if name in sources or name == "validation"}
