"""Read one data source (a file, a saved `datasets` folder, an image folder or a Hub dataset id) as a `Dataset`."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from hftl.errors import DataError

# extension -> (datasets builder, builder options). TSV is read without quote handling: a lone " in
# a sentence (common in SST-2) would otherwise swallow the following rows.
FILE_FORMATS = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t", "quoting": csv.QUOTE_NONE}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
    ".txt": ("text", {}),
}


def source_kind(source: str) -> str:
    """'file', 'saved' (a `save_to_disk` folder), 'folder' (e.g. an image folder) or 'hub' (a dataset id)."""
    path = Path(source)
    if path.is_file():
        return "file"
    if path.is_dir():
        saved = (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()
        return "saved" if saved else "folder"
    return "hub"


def check_source(source: str, where: str, formats=FILE_FORMATS, folders_ok: bool = False) -> list[str]:
    """Problems with a data source, found without reading it whole."""
    path = Path(source)
    kind = source_kind(source)
    if kind == "file":
        if path.suffix.lower() not in formats:
            return [f"{where}: {path} has an unsupported format '{path.suffix}'. Use one of: {', '.join(formats)}."]
        if path.stat().st_size == 0:
            return [f"{where}: {path} is empty. Give a file with a header line and data rows."]
        from hftl.data.checks import scan_problems  # encoding, ragged rows, bad JSON lines, no rows

        return scan_problems(source, where)
    if kind == "folder" and not folders_ok:
        return [f"{where}: {path} is a folder but not a saved dataset (no dataset_info.json). Give a file instead."]
    if kind == "hub" and (source.startswith((".", "/", "~")) or Path(source).suffix.lower() in formats):
        return [f"{where}: {source} does not exist."]
    return []


def read_columns(source: str) -> list[str] | None:
    """Column names of a local file, read from its first line/row only; None where that is not cheap."""
    path = Path(source)
    if source_kind(source) != "file":
        return None
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            with path.open(encoding="utf-8", newline="") as handle:
                header = handle.readline().rstrip("\r\n")
            return next(csv.reader([header], delimiter="\t" if suffix == ".tsv" else ","))
        if suffix == ".jsonl" or suffix == ".json":
            with path.open(encoding="utf-8") as handle:
                first = handle.readline().strip()
            if first.startswith("{") and first.endswith("}"):
                return list(json.loads(first))
            return None
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_schema(path).names
        if suffix == ".txt":
            return ["text"]
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}). Re-save the file as UTF-8.") from None
    except (json.JSONDecodeError, OSError) as err:
        raise DataError(f"{path}: cannot be read: {err}") from None
    return None


def load_split(source: str, dataset_config: str | None = None, split: str = "train", folder_builder: str | None = None):
    """Load one split as a `datasets.Dataset` (cached by `datasets`, so re-runs skip parsing and tokenising)."""
    import datasets

    kind = source_kind(source)
    try:
        if kind == "file":
            builder, options = FILE_FORMATS[Path(source).suffix.lower()]
            return datasets.load_dataset(builder, data_files={"data": str(source)}, split="data", **options)
        if kind == "saved":
            loaded = datasets.load_from_disk(source)
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        if kind == "folder":
            if folder_builder is None:
                raise DataError(f"{source}: a folder is not a supported data source for this task.")
            return datasets.load_dataset(folder_builder, data_dir=str(source), split="train")
        return datasets.load_dataset(source, dataset_config, split=split)
    except DataError:
        raise
    except Exception as err:  # pandas/arrow parse errors, unreachable Hub: name the source, keep the cause
        message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise DataError(f"{source}: could not be read ({type(err).__name__}: {message}).") from err


def fingerprint(source: str, dataset=None) -> str:
    """sha256 of a local file's bytes; otherwise the `datasets` fingerprint of the loaded data."""
    path = Path(source)
    if path.is_file():
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return "sha256:" + digest.hexdigest()
    return "datasets:" + getattr(dataset, "_fingerprint", "unknown")
