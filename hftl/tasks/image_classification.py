"""Image classification: ViT, DeiT or any `AutoModelForImageClassification` backbone, on image folders,
CSV/JSON files of image paths, saved datasets or Hub datasets.

Images are decoded and preprocessed on the fly (`Dataset.with_transform`) by the checkpoint's own PIL image
processor; training-time augmentation (random resized crop, horizontal flip) is PIL/numpy, never materialised.
Every image is converted to RGB first: grayscale is replicated over three channels, transparent images (RGBA,
LA, palette with transparency) are composited onto white.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from hftl.config.parse import field
from hftl.data import fingerprint, load_split, load_splits
from hftl.data.columns import split_sources
from hftl.data.images import image_source_problems, open_image, random_resized_crop, to_rgb
from hftl.data.loading import source_kind
from hftl.epoch import TrainingEpoch
from hftl.errors import DataError
from hftl.modeling import load_kwargs, read_model_config, resolve_checkpoint
from hftl.recipe import PreparedData, register_task
from hftl.tasks.classification import ClassificationData, ClassificationRecipe

logger = logging.getLogger(__name__)

#: the column of training examples' positions, which seed their augmentation (added only with `augment`)
EXAMPLE_INDEX = "example_index"


@dataclass
class ImageClassificationData(ClassificationData):
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
        problems, scale = super().check(), self.crop_scale
        if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
            problems.append(f"crop_scale: must be [min, max] with 0 < min <= max <= 1, got {self.crop_scale}.")
        return problems


class ImageClassificationRecipe(ClassificationRecipe):
    """Fine-tune an image classifier (ViT, DeiT, ConvNeXt, ResNet... any `AutoModelForImageClassification`).

    Example:
        ```python
        from hftl import ImageClassificationRecipe, run_recipe
        result = run_recipe(ImageClassificationRecipe.from_yaml("recipes/configs/digits_vit_lora.yaml"))
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
        if config.data.augment and config.training.get("dataloader_persistent_workers"):
            problems.append("training.dataloader_persistent_workers: not with data.augment: persistent workers would "
                            "keep drawing the first epoch's crops. Remove it, or turn augmentation off.")
        if model_ok:
            problems += cls._check_model(config)
        return problems

    @classmethod
    def check_data_source(cls, source: str, where: str, data: ImageClassificationData, with_label: bool = True) -> list[str]:
        return image_source_problems(source, where, data.image_column, data.label_column if with_label else None,
                                     data.column_names)

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
        dataset = load_split(source, data.dataset_config, split="test", folder_builder="imagefolder",
                             column_names=data.column_names)
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

    def image_transform(self, processor, train: bool = False, epoch: TrainingEpoch | None = None):
        """The on-the-fly batch transform: decode → RGB → (augment) → the checkpoint's processor.

        Augmentation draws each image's crop and flip from a generator seeded by (seed, epoch, example index), not
        from one stateful generator: the draws do not depend on the batch size, on which dataloader worker or
        process transforms the image, or on where a run was resumed (a checkpoint holds no generator state for
        them). `epoch` is the recipe's `training_epoch`, kept up to date by the Trainer.
        """
        import numpy as np

        data = self.config.data
        augment = train and data.augment
        seed = self.config.seed

        def transform(batch):
            images = [to_rgb(open_image(item, "image")) for item in batch[data.image_column]]
            if augment:
                current = epoch.epoch if epoch is not None else 0
                images = [self.augment(image, np.random.default_rng((seed, current, int(index))))
                          for image, index in zip(images, batch[EXAMPLE_INDEX])]
            result = {"pixel_values": processor(images=images, return_tensors="pt")["pixel_values"]}
            if "labels" in batch:
                result["labels"] = batch["labels"]
            return result

        return transform

    def augment(self, image, rng):
        """One random resized crop (and flip) of `image`, drawn from `rng`."""
        data = self.config.data
        image = random_resized_crop(image, rng, scale=tuple(data.crop_scale))
        if data.horizontal_flip and rng.random() < 0.5:
            image = image.transpose(0)  # 0: FLIP_LEFT_RIGHT
        return image

    def preprocess(self, data: PreparedData, processor) -> dict:
        prepared = {}
        for name, dataset in data.splits.items():
            train = name == "train"
            if train and self.config.data.augment:
                dataset = dataset.add_column(EXAMPLE_INDEX, list(range(len(dataset))))
            prepared[name] = dataset.with_transform(
                self.image_transform(processor, train=train, epoch=self.training_epoch if train else None))
        return prepared

    def training_defaults(self) -> dict:
        # the transform needs the raw image column (the Trainer would drop it: the model takes no 'image'),
        # and images have no length to group by
        return {**super().training_defaults(), "remove_unused_columns": False, "train_sampling_strategy": "random"}

    def data_collator(self, processor):
        from transformers import default_data_collator

        return default_data_collator

    # -- prediction -------------------------------------------------------------------------------
    def encode_inputs(self, processor, images: list, first_row: int):
        """Images given as file paths or PIL images."""
        decoded = [to_rgb(open_image(item, f"input {first_row + i + 1}")) for i, item in enumerate(images)]
        return processor(images=decoded, return_tensors="pt")


register_task(ImageClassificationRecipe)
