"""Read one data source (a file, a saved `datasets` folder, an image folder or a Hub dataset id) as a `Dataset`."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from hftl.data.tables import DIALECTS, is_delimited, loader_options, read_header
from hftl.errors import DataError

logger = logging.getLogger(__name__)

# extension -> (datasets builder, builder options). CSV/TSV options come from `hftl.data.tables`, the
# one home of the quoting rule (TSV: none), shared with the row checks.
FILE_FORMATS = {
    ".csv": ("csv", DIALECTS[".csv"]),
    ".tsv": ("csv", DIALECTS[".tsv"]),
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


#: a file extension (letters only): `data.xlsx` is a file name, `owner/corpus-v1.2` may be a Hub id
_EXTENSION = re.compile(r"\.[A-Za-z]+$")


def hub_id_problem(source: str) -> str | None:
    """Why `source` cannot be a Hub dataset id ('name' or 'owner/name', no file extension), or None if it can be."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(source)  # the Hub's own rules: at most one '/', [A-Za-z0-9._-], no '--' or '..'
    except HFValidationError:
        return "it is not of the form 'name' or 'owner/name'"
    if _EXTENSION.search(source):
        return f"it ends in a file extension, '{Path(source).suffix}'"
    return None


def check_source(source: str, where: str, formats=FILE_FORMATS, folders_ok: bool = False,
                 column_names: list[str] | None = None) -> list[str]:
    """Problems with a data source, found without reading it whole.

    A source that does not exist locally is taken as a Hub dataset id only where it has the Hub's shape;
    it cannot be checked offline, which is logged as a warning (`hftl validate` prints it and succeeds).

    Args:
        source (`str`): a file, a folder or a Hub dataset id.
        where (`str`): how messages name the setting, e.g. "data.train".
        formats (`dict`, *optional*): the accepted file extensions (keys), default `FILE_FORMATS`.
        folders_ok (`bool`, *optional*, defaults to `False`): a plain folder (e.g. an image folder) is accepted.
        column_names (`list[str]`, *optional*): `data.column_names`: CSV/TSV files have no header line.
    """
    path = Path(source)
    kind = source_kind(source)
    supported = ", ".join(formats)
    if kind == "file":
        if path.suffix.lower() not in formats:
            return [f"{where}: {path} has an unsupported format '{path.suffix}'. Use one of: {supported}."]
        if path.stat().st_size == 0:
            return [f"{where}: {path} is empty. Give a file with a header line and data rows."]
        from hftl.data.checks import scan_problems  # encoding, ragged rows, bad JSON lines, no rows

        return scan_problems(source, where, column_names=column_names)
    if kind == "folder" and not folders_ok:
        return [f"{where}: {path} is a folder but not a saved dataset (no dataset_info.json). Give a file instead."]
    if kind != "hub":
        return []
    if path.suffix.lower() in formats:
        return [f"{where}: {source} does not exist."]
    path_like = source.startswith((".", "/", "~"))
    why_not = None if path_like else hub_id_problem(source)
    if why_not is None and not path_like:
        logger.warning("%s: '%s' is not a local file or folder, so it is taken as a Hub dataset id, which cannot "
                       "be checked offline: it is fetched when training starts.", where, source)
        return []
    if _EXTENSION.search(source):
        reason = f", and '{path.suffix}' is not a supported format"
    else:
        reason = f", and it is not a Hub dataset id ({why_not})" if why_not else ""
    return [
        f"{where}: {source} does not exist{reason}. Give an existing file ({supported}), a saved datasets "
        "folder, or a Hub dataset id ('name' or 'owner/name', no file extension)."
    ]


def read_columns(source: str, column_names: list[str] | None = None) -> list[str] | None:
    """Column names of a local file, read from its first line/row only; None where that is not cheap.

    Args:
        source (`str`): the data source.
        column_names (`list[str]`, *optional*): `data.column_names`: CSV/TSV files have no header line and
            these name their columns (checked against the first line's field count).
    """
    path = Path(source)
    if source_kind(source) != "file":
        return None
    suffix = path.suffix.lower()
    try:
        if is_delimited(path):
            return read_header(path, column_names)
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


def load_split(source: str, dataset_config: str | None = None, split: str = "train", folder_builder: str | None = None,
               column_names: list[str] | None = None):
    """Load one split as a `datasets.Dataset` (cached by `datasets`, so re-runs skip parsing and tokenising).

    Args:
        column_names (`list[str]`, *optional*): `data.column_names`: CSV/TSV files have no header line and
            these name their columns. Other formats ignore it.
    """
    import datasets

    kind = source_kind(source)
    try:
        if kind == "file":
            builder, options = FILE_FORMATS[Path(source).suffix.lower()]
            if is_delimited(source):
                options = loader_options(source, column_names)
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
