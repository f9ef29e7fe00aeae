"""Image classification: ViT, DeiT or any `AutoModelForImageClassification` backbone, on image folders,
CSV/JSON files of image paths, saved datasets or Hub datasets.

Images are decoded and preprocessed on the fly (`Dataset.with_transform`) by the checkpoint's own PIL image
processor; training-time augmentation (random resized crop, horizontal flip) is PIL/numpy, never materialised.
Every image is converted to RGB first: grayscale is replicated over three channels, transparent images (RGBA,
LA, palette with transparency) are composited onto white.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from hftl.config.parse import field
from hftl.config.schema import DataConfig
from hftl.data import check_source, fingerprint, load_split, load_splits
from hftl.data.columns import check_columns, split_sources
from hftl.data.loading import source_kind
from hftl.errors import DataError
from hftl.modeling import load_kwargs, read_model_config, resolve_checkpoint
from hftl.recipe import PreparedData
from hftl.tasks import register_task
from hftl.tasks.classification import ClassificationRecipe

logger = logging.getLogger(__name__)

#: files an image folder may hold besides images (the `imagefolder` builder reads them as metadata)
METADATA_FILES = {"metadata.csv", "metadata.jsonl", "metadata.parquet"}
#: at most this many problems of one kind are listed (a folder of 10,000 bad files is one message)
MAX_LISTED = 5


@dataclass
class ImageClassificationData(DataConfig):
    image_column: str = field(
        "image", help="column with the image: decoded images (image folders, saved datasets) or file paths "
        "(CSV/JSON; relative paths are read from the file's folder)"
    )
    label_column: str = field("label", help="column with the class label (image folders: the subfolder name)")
    augment: bool = field(False, help="training-time augmentation: random resized crop (and flip), drawn anew each epoch")
    crop_scale: list[float] = field(
        default_factory=lambda: [0.6, 1.0], help="with augment: the random crop keeps this range of the image area"
    )
    horizontal_flip: bool = field(
        True, help="with augment: mirror half the training images (turn off where mirroring changes the class, e.g. digits)"
    )
    verify_images: bool = field(
        True, help="decode every image once before training, so a corrupt file fails now and not mid-run"
    )

    def check(self) -> list[str]:
        scale = self.crop_scale
        if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
            return [f"crop_scale: must be [min, max] with 0 < min <= max <= 1, got {self.crop_scale}."]
        return []


# -- images ---------------------------------------------------------------------------------------
def image_extensions() -> set[str]:
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


def read_column_values(source: str, column: str) -> list | None:
    """All values of one column of a local CSV/TSV/JSON(L) file, read without `datasets`; None where not cheap."""
    path = Path(source)
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            with path.open(encoding="utf-8", newline="") as handle:
                kwargs = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if suffix == ".tsv" else {}
                return [row.get(column) for row in csv.DictReader(handle, **kwargs)]
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


def missing_path_problems(source: str, where: str, column: str) -> list[str]:
    """An image-path column: every path must exist (relative paths are read from the file's folder)."""
    values = read_column_values(source, column)
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


class ImageClassificationRecipe(ClassificationRecipe):
    """Fine-tune an image classifier (ViT, DeiT, ConvNeXt, ResNet... any `AutoModelForImageClassification`).

    Example:
        ```python
        from hftl import ImageClassificationRecipe
        result = ImageClassificationRecipe.from_yaml("recipes/configs/digits_vit_lora.yaml").run()
        result.metrics["test"]["accuracy"]
        ```
    """

    task = "image-classification"
    title = "Image classification"
    data_config_class = ImageClassificationData
    auto_model_class = "AutoModelForImageClassification"
    head_modules = ("classifier", "cls_classifier", "distillation_classifier")
    peft_task_type = None  # peft has no image task type: the head is kept trainable through modules_to_save
    pipeline_tag = "image-classification"
    input_column = "image_column"
    inputs_are_paths = True

    # -- checks before anything heavy -------------------------------------------------------------
    @classmethod
    def check_config(cls, config, model_ok: bool) -> list[str]:
        problems = []
        for name, source in config.data.splits().items():
            problems += cls.check_data_source(source, f"data.{name}", config.data)
        if model_ok:
            problems += cls._check_model(config)
        return problems

    @classmethod
    def check_data_source(cls, source: str, where: str, data: ImageClassificationData, with_label: bool = True) -> list[str]:
        problems = check_source(source, where, folders_ok=True)
        if problems:
            return problems
        kind = source_kind(source)
        if kind == "folder":
            # labels come from the subfolder names (column 'label') unless a metadata file names them
            by_folder = with_label and not any((Path(source) / name).is_file() for name in METADATA_FILES)
            if data.image_column != "image" or (by_folder and data.label_column != "label"):
                problems.append(f"{where}: {source} is an image folder, whose columns are 'image' and 'label'; "
                                "set data.image_column: image and data.label_column: label.")
            return problems + image_folder_problems(Path(source), where)
        if kind == "file":
            try:
                required = {"image_column": data.image_column, **({"label_column": data.label_column} if with_label else {})}
                problems += check_columns(source, where, required)
                if not problems:
                    problems += missing_path_problems(source, where, data.image_column)
            except DataError as err:
                problems.append(f"{where}: {err}")
        return problems

    @classmethod
    def _check_model(cls, config) -> list[str]:
        path, _ = resolve_checkpoint(config.model)
        if Path(path).is_dir() and not (Path(path) / "preprocessor_config.json").is_file():
            return [f"model.name_or_path: {path} has no preprocessor_config.json (the image processor: size, mean, std). "
                    "Save one with the checkpoint, e.g. ViTImageProcessorPil(size=...).save_pretrained(folder)."]
        model_config, _ = read_model_config(config.model)  # unreadable configs are reported by the model checks
        channels = getattr(model_config, "num_channels", 3)
        if channels != 3:
            return [f"model.name_or_path: the model takes {channels}-channel images; hftl feeds RGB (3 channels)."]
        return []

    # -- data -------------------------------------------------------------------------------------
    def load_data(self) -> PreparedData:
        data = self.config.data
        seed = self.config.seed
        # limits are applied after a seeded shuffle: an image folder lists its files class by class
        unlimited = replace(data, max_train_samples=None, max_eval_samples=None)
        splits = load_splits(unlimited, seed=seed, folder_builder="imagefolder")
        sources = split_sources(data)
        for name, dataset in splits.items():
            limit = data.max_train_samples if name == "train" else data.max_eval_samples
            if limit is not None and len(dataset) > limit:
                splits[name] = dataset.shuffle(seed=seed).select(range(limit))
        values, files = {}, data.splits()
        for name, dataset in splits.items():  # image paths are read relative to the file holding them
            splits[name], values[name] = self.prepare_images(dataset, files.get(name, files["train"]))
        splits, labels = self.encode_splits(splits, values, sources, [data.image_column])
        fingerprints = {name: fingerprint(src, splits.get(name)) for name, src in data.splits().items()}
        return PreparedData(splits, sources, fingerprints, labels)

    def prepare_source(self, source: str, processor, labels):
        data = self.config.data
        problems = self.check_data_source(source, "--data", data)
        if problems:
            raise DataError(" ".join(problems))
        dataset = load_split(source, data.dataset_config, split="test", folder_builder="imagefolder")
        dataset, values = self.prepare_images(dataset, source)
        dataset = self.with_label_ids(dataset, labels, values, source, [data.image_column])
        return dataset.with_transform(self.image_transform(processor))

    def prepare_images(self, dataset, source: str, with_label: bool = True):
        """Check columns, turn path columns into images, verify every image; returns (dataset, label values)."""
        import datasets

        data = self.config.data
        required = [data.image_column] + ([data.label_column] if with_label else [])
        missing = [col for col in required if col not in dataset.column_names]
        if missing:
            raise DataError(f"{source}: missing column(s) {missing}. Columns: {', '.join(dataset.column_names)}.")
        feature = dataset.features[data.image_column]
        if not isinstance(feature, datasets.Image):
            dataset = self._paths_to_images(dataset, source)
        if data.verify_images:
            self._verify_images(dataset, source)
        labels = None
        if with_label:
            label_feature = dataset.features[data.label_column]
            labels = dataset[data.label_column]
            if isinstance(label_feature, datasets.ClassLabel):  # image folders: ids of the folder names
                labels = [label_feature.int2str(i) for i in labels]
        return dataset, labels

    def _paths_to_images(self, dataset, source: str):
        import datasets

        column = self.config.data.image_column
        base = Path(source).resolve().parent if source_kind(source) == "file" else Path.cwd()
        paths = []
        for row, value in enumerate(dataset[column], start=1):
            if not isinstance(value, str) or not value:
                raise DataError(f"{source}, row {row}: column '{column}' holds {value!r}, not an image path. "
                                "Fill it in or drop the row.")
            path = (base / value).expanduser()
            if not path.is_file():
                raise DataError(f"{source}, row {row}: image file {path} does not exist. Fix the path or drop the row.")
            paths.append(str(path))
        return dataset.remove_columns(column).add_column(column, paths).cast_column(column, datasets.Image())

    def _verify_images(self, dataset, source: str) -> None:
        """Decode each image once (corrupt or non-image files fail here, naming the file); log colour conversions."""
        import datasets

        column = self.config.data.image_column
        raw = dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False))
        modes, row = Counter(), 0
        for batch in raw.iter(batch_size=1000):
            for item in batch[column]:
                row += 1
                modes[open_image(item, f"{source}, row {row}", quick=True).mode] += 1
        converted = {mode: n for mode, n in modes.items() if mode != "RGB"}
        if converted:
            logger.info("%s: converting to RGB: %s (grayscale replicated, transparency onto white)", source,
                        ", ".join(f"{n} {mode}" for mode, n in sorted(converted.items())))

    def load_processor(self):
        path, _ = resolve_checkpoint(self.config.model)
        return self.load_trained_processor(path)

    def load_trained_processor(self, folder):
        from transformers import AutoImageProcessor

        kwargs = {k: v for k, v in load_kwargs(self.config.model).items() if k != "gguf_file"}
        # backend="pil": the default torchvision backend is not available beside this torch
        return AutoImageProcessor.from_pretrained(folder, backend="pil", **kwargs)

    def image_transform(self, processor, train: bool = False):
        """The on-the-fly batch transform: decode → RGB → (augment) → the checkpoint's processor."""
        import numpy as np

        data = self.config.data
        augment = train and data.augment
        rng = np.random.default_rng(self.config.seed)

        def transform(batch):
            images = [to_rgb(open_image(item, "image")) for item in batch[data.image_column]]
            if augment:
                images = [random_resized_crop(img, rng, scale=tuple(data.crop_scale)) for img in images]
                if data.horizontal_flip:
                    images = [img.transpose(0) if rng.random() < 0.5 else img for img in images]  # 0: FLIP_LEFT_RIGHT
            result = {"pixel_values": processor(images=images, return_tensors="pt")["pixel_values"]}
            if "labels" in batch:
                result["labels"] = batch["labels"]
            return result

        return transform

    def preprocess(self, data: PreparedData, processor) -> dict:
        return {name: dataset.with_transform(self.image_transform(processor, train=(name == "train")))
                for name, dataset in data.splits.items()}

    def training_defaults(self) -> dict:
        # the transform needs the raw image column (the Trainer would drop it: the model takes no 'image'),
        # and images have no length to group by
        return {"remove_unused_columns": False, "train_sampling_strategy": "random"}

    def data_collator(self, processor):
        from transformers import default_data_collator

        return default_data_collator

    # -- prediction -------------------------------------------------------------------------------
    def encode_inputs(self, processor, images: list, first_row: int):
        """Images given as file paths or PIL images."""
        decoded = [to_rgb(open_image(item, f"input {first_row + i + 1}")) for i, item in enumerate(images)]
        return processor(images=decoded, return_tensors="pt")


register_task(ImageClassificationRecipe)
