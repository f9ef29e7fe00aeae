"""Image data: decoding to RGB, image-folder structure checks, and checks of CSV/JSON files of image paths.

Shared by the image tasks and anything else that reads images. Heavy
imports (PIL, numpy, datasets) happen inside the functions.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from hftl.config.parse import did_you_mean
from hftl.data.loading import check_source, read_columns, source_kind
from hftl.data.tables import is_delimited, open_table
from hftl.errors import DataError

#: files an image folder may hold besides images (the `imagefolder` builder reads them as metadata)
METADATA_FILES = {"metadata.csv", "metadata.jsonl", "metadata.parquet"}
#: at most this many problems of one kind are listed (a folder of 10,000 bad files is one message)
MAX_LISTED = 5


def image_extensions() -> set[str]:
    """The file extensions (lower case, with the dot) that the `datasets` imagefolder builder reads as images."""
    from datasets.packaged_modules.imagefolder.imagefolder import IMAGE_EXTENSIONS

    return set(IMAGE_EXTENSIONS)


def to_rgb(image):
    """The image as 8-bit RGB: grayscale replicated, transparency composited onto white, 16-bit scaled down."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        import numpy as np

        array = np.asarray(image, dtype=np.float32)
        peak = float(array.max()) or 1.0
        image = Image.fromarray((array * (255.0 / max(peak, 255.0))).clip(0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def open_image(item, where: str, quick: bool = False):
    """Decode one image given as a PIL image, a path, or a `datasets` {bytes, path} dict; DataError if unreadable.

    `quick` decodes JPEGs at reduced scale: enough to prove a file whole, not for use as model input.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(item, Image.Image):
        return item
    path = item.get("path") if isinstance(item, dict) else str(item)
    data = item.get("bytes") if isinstance(item, dict) else None
    if data is None and not path:
        raise DataError(f"{where}: no image (empty cell). Fill it in or drop the row.")
    name = path or where
    try:
        image = Image.open(io.BytesIO(data) if data is not None else path)
        if quick:
            image.draft(None, (64, 64))
        image.load()
        return image
    except FileNotFoundError:
        raise DataError(f"{where}: image file {path} does not exist. Fix the path or drop the row.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{where}: {name} is not a readable image ({type(err).__name__}: {err}). "
                        "Replace or remove the file.") from None


def random_resized_crop(image, rng, scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3)):
    """A random crop of `scale` of the area and `ratio` aspect, resized back to the image's size (PIL only)."""
    import math

    width, height = image.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return image.resize((width, height), box=(left, top, left + w, top + h))
    return image


def image_folder_problems(folder: Path, where: str) -> list[str]:
    """Structure checks of a `root/<label>/<image>` folder: no stray files, no empty label folders."""
    extensions = image_extensions()
    if {p.name for p in folder.iterdir()} & METADATA_FILES:
        return []  # labels come from the metadata file, not from folder names
    problems, stray, empty = [], [], []
    label_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    if loose:
        names = ", ".join(str(p) for p in loose[:MAX_LISTED])
        problems.append(f"{where}: {len(loose)} file(s) directly in {folder} ({names}). An image folder holds one "
                        "subfolder per class (root/<label>/<image>); move them into their label's folder.")
    if not label_dirs:
        return problems + [f"{where}: {folder} has no label subfolders. Put each class's images in root/<label>/."]
    for label_dir in label_dirs:
        images = 0
        for dirpath, dirnames, filenames in os.walk(label_dir):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                if os.path.splitext(name)[1].lower() in extensions:
                    images += 1
                else:
                    stray.append(os.path.join(dirpath, name))
        if not images:
            empty.append(str(label_dir))
    if stray:
        more = f" and {len(stray) - MAX_LISTED} more" if len(stray) > MAX_LISTED else ""
        problems.append(f"{where}: not image files: {', '.join(stray[:MAX_LISTED])}{more}. An image folder holds only "
                        "images (png, jpg, webp, ...); move the other files out.")
    for label_dir in empty:
        problems.append(f"{where}: label folder {label_dir} holds no images. Add images of that class or remove the folder.")
    return problems


def read_column_values(source: str, column: str, column_names: list[str] | None = None) -> list | None:
    """All values of one column of a local CSV/TSV/JSON(L)/parquet file, read without `datasets`; None where not cheap.

    Args:
        source (`str`): the file.
        column (`str`): the column to read.
        column_names (`list[str]`, *optional*): `data.column_names`: a CSV/TSV file has no header line.
    """
    path = Path(source)
    suffix = path.suffix.lower()
    try:
        if is_delimited(path):
            with open_table(path, column_names) as rows:
                return [row.get(column) for row in rows]
        if suffix == ".jsonl" or suffix == ".json":
            text = path.read_text(encoding="utf-8").strip()
            rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]
            return [row.get(column) if isinstance(row, dict) else None for row in rows]
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path, columns=[column]).column(column).to_pylist()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError) as err:
        raise DataError(f"{path}: cannot be read: {err}") from None
    return None


def missing_path_problems(source: str, where: str, column: str, column_names: list[str] | None = None) -> list[str]:
    """An image-path column: every path must exist (relative paths are read from the file's folder).

    Args:
        source (`str`): a CSV/TSV/JSON(L)/parquet file of image paths.
        where (`str`): how messages name the setting, e.g. "data.train".
        column (`str`): the image-path column.
        column_names (`list[str]`, *optional*): `data.column_names`: a CSV/TSV file has no header line.
    """
    values = read_column_values(source, column, column_names)
    if values is None:
        return []
    base = Path(source).resolve().parent
    missing = [
        (row, value) for row, value in enumerate(values, start=1)
        if isinstance(value, str) and value and not (base / value).expanduser().is_file()
    ]
    empty = [row for row, value in enumerate(values, start=1) if value in (None, "")]
    problems = [
        f"{where}: {source}, row {row}: image file {base / value} does not exist. Fix the path "
        f"(relative paths are read from {base}) or drop the row."
        for row, value in missing[:MAX_LISTED]
    ]
    if len(missing) > MAX_LISTED:
        problems.append(f"{where}: {source}: {len(missing) - MAX_LISTED} more image paths do not exist.")
    if empty:
        problems.append(f"{where}: {source}, row(s) {', '.join(map(str, empty[:MAX_LISTED]))}: no image path. "
                        "Fill them in or drop those rows.")
    return problems


def image_source_problems(source: str, where: str, image_column: str, label_column: str | None = None,
                          column_names: list[str] | None = None) -> list[str]:
    """Every cheap check of one image data source: existence and format, then by kind of source.

    * an image folder: its columns are 'image' and 'label' (from the subfolder names, unless a metadata
      file is present), and its structure (`image_folder_problems`);
    * a CSV/TSV/JSON(L)/parquet file of image paths: the columns exist, and every path does
      (`missing_path_problems`).

    Args:
        source (`str`): a folder, a file of image paths, a saved datasets folder or a Hub dataset id.
        where (`str`): how messages name the setting, e.g. "data.train".
        image_column (`str`): `data.image_column`.
        label_column (`str`, *optional*): `data.label_column`; None where no labels are needed (prediction).
        column_names (`list[str]`, *optional*): `data.column_names`: CSV/TSV files have no header line.
    """
    problems = check_source(source, where, folders_ok=True, column_names=column_names)
    if problems:
        return problems
    kind = source_kind(source)
    if kind == "folder":
        # labels come from the subfolder names (column 'label') unless a metadata file names them
        by_folder = label_column is not None and not any((Path(source) / name).is_file() for name in METADATA_FILES)
        if image_column != "image" or (by_folder and label_column != "label"):
            problems.append(f"{where}: {source} is an image folder, whose columns are 'image' and 'label'; "
                            "set data.image_column: image and data.label_column: label.")
        return problems + image_folder_problems(Path(source), where)
    if kind != "file":
        return problems
    try:
        columns = read_columns(source, column_names)
        required = {"image_column": image_column, **({"label_column": label_column} if label_column else {})}
        for role, name in required.items():
            if columns is not None and name not in columns:
                problems.append(f"{where}: {source} has no {role} column '{name}'.{did_you_mean(name, columns)} "
                                f"Columns: {', '.join(columns)}. Set data.{role} to one of them.")
        if not problems:
            problems += missing_path_problems(source, where, image_column, column_names)
    except DataError as err:
        problems.append(f"{where}: {err}")
    return problems
