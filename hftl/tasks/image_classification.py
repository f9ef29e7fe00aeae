"""Image classification: ViT, DeiT or any `AutoModelForImageClassification` backbone, on image folders,
CSV/JSON files of image paths, saved datasets or Hub datasets.

Images are decoded and preprocessed on the fly (`Dataset.with_transform`) by the checkpoint's own PIL image
processor; training-time augmentation (random resized crop, horizontal flip) is PIL/numpy, never materialised.
Every image is converted to RGB first: grayscale is replicated over three channels, transparent images (RGBA,
LA, palette with transparency) are composited onto white.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from hftl.config.parse import did_you_mean, field
from hftl.config.schema import DataConfig
from hftl.data import LabelMap, check_source, fingerprint, load_split, load_splits, read_columns
from hftl.data.images import (
    METADATA_FILES,
    image_folder_problems,
    missing_path_problems,
    open_image,
    random_resized_crop,
    to_rgb,
)
from hftl.data.loading import source_kind
from hftl.errors import DataError
from hftl.outputs import LABELS_FILE, write_json
from hftl.train import Recipe

logger = logging.getLogger(__name__)


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


class ImageClassificationRecipe(Recipe):
    """Fine-tune an image classifier (ViT, DeiT, ConvNeXt, ResNet... any `AutoModelForImageClassification`).

    Example:
        ```python
        from hftl import ImageClassificationRecipe
        result = ImageClassificationRecipe.from_yaml("recipes/configs/digits_vit_lora.yaml").run()
        result.metrics["test"]["accuracy"]
        ```
    """

    task = "image-classification"
    data_config_class = ImageClassificationData
    auto_model_class = "AutoModelForImageClassification"
    peft_task_type = None  # peft has no image task type: the head is kept trainable through modules_to_save
    head_modules = ("classifier", "cls_classifier", "distillation_classifier")

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
                columns = read_columns(source)
                required = {"image_column": data.image_column, **({"label_column": data.label_column} if with_label else {})}
                for role, name in required.items():
                    if columns is not None and name not in columns:
                        problems.append(f"{where}: {source} has no {role} column '{name}'.{did_you_mean(name, columns)} "
                                        f"Columns: {', '.join(columns)}. Set data.{role} to one of them.")
                if not problems:
                    problems += missing_path_problems(source, where, data.image_column)
            except DataError as err:
                problems.append(f"{where}: {err}")
        return problems

    @classmethod
    def _check_model(cls, config) -> list[str]:
        from transformers import AutoConfig

        from hftl.modeling import load_kwargs, resolve_checkpoint

        path, _ = resolve_checkpoint(config.model)
        if Path(path).is_dir() and not (Path(path) / "preprocessor_config.json").is_file():
            return [f"model.name_or_path: {path} has no preprocessor_config.json (the image processor: size, mean, std). "
                    "Save one with the checkpoint, e.g. ViTImageProcessorPil(size=...).save_pretrained(folder)."]
        try:
            model_config = AutoConfig.from_pretrained(path, **load_kwargs(config.model))
        except Exception:
            return []  # unreadable configs are reported when the model loads
        channels = getattr(model_config, "num_channels", 3)
        if channels != 3:
            return [f"model.name_or_path: the model takes {channels}-channel images; hftl feeds RGB (3 channels)."]
        return []

    # -- data -------------------------------------------------------------------------------------
    def load_data(self) -> dict:
        data = self.config.data
        seed = self.config.training.get("seed", 42)
        # limits are applied after a seeded shuffle: an image folder lists its files class by class
        unlimited = replace(data, max_train_samples=None, max_eval_samples=None)
        splits = load_splits(unlimited, seed=seed, folder_builder="imagefolder")
        sources = data.splits()
        for name, dataset in splits.items():
            limit = data.max_train_samples if name == "train" else data.max_eval_samples
            if limit is not None and len(dataset) > limit:
                splits[name] = dataset.shuffle(seed=seed).select(range(limit))
        values = {}
        for name, dataset in splits.items():
            source = sources.get(name, sources["train"])
            splits[name], values[name] = self.prepare_images(dataset, source)
        self.labels = LabelMap.from_values(values["train"], source=sources["train"])
        for name, dataset in splits.items():
            ids = self.labels.encode(values[name], sources.get(name, sources["train"]))
            splits[name] = dataset.select_columns([data.image_column]).add_column("labels", ids)
        self.data_fingerprints = {name: fingerprint(src, splits.get(name)) for name, src in sources.items()}
        return splits

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
        from transformers import AutoImageProcessor

        from hftl.modeling import load_kwargs, resolve_checkpoint

        path, _ = resolve_checkpoint(self.config.model)
        kwargs = {k: v for k, v in load_kwargs(self.config.model).items() if k != "gguf_file"}
        # backend="pil": the default torchvision backend is not available beside this torch
        return AutoImageProcessor.from_pretrained(path, backend="pil", **kwargs)

    def image_transform(self, processor, train: bool = False):
        """The on-the-fly batch transform: decode → RGB → (augment) → the checkpoint's processor."""
        import numpy as np

        data = self.config.data
        augment = train and data.augment
        rng = np.random.default_rng(self.config.training.get("seed", 42))

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

    def preprocess(self, splits: dict, processor) -> dict:
        self._prepared = {
            name: dataset.with_transform(self.image_transform(processor, train=(name == "train")))
            for name, dataset in splits.items()
        }
        return self._prepared

    def training_defaults(self) -> dict:
        # the transform needs the raw image column (the Trainer would drop it: the model takes no 'image'),
        # and images have no length to group by
        return {"remove_unused_columns": False, "train_sampling_strategy": "random"}

    # -- model ------------------------------------------------------------------------------------
    def load_model(self, processor):
        from transformers import AutoConfig, AutoModelForImageClassification

        from hftl.modeling import load_kwargs, load_pretrained_model, resolve_checkpoint

        path, _ = resolve_checkpoint(self.config.model)
        before = AutoConfig.from_pretrained(path, **load_kwargs(self.config.model))
        model, new = load_pretrained_model(
            AutoModelForImageClassification,
            self.config.model,
            num_labels=len(self.labels),
            id2label=self.labels.id2label,
            label2id=self.labels.label2id,
            ignore_mismatched_sizes=True,
        )
        old_names = [str(before.id2label[i]) for i in sorted(before.id2label)] if before.id2label else []
        trained_head = old_names and not all(n == f"LABEL_{i}" for i, n in enumerate(old_names))
        if trained_head and old_names != list(self.labels.names) and len(old_names) == len(self.labels):
            # Same number of classes, other classes: the shapes match, so from_pretrained kept the old head.
            # Its weights mean the source task's classes; start it afresh as a new head would.
            for name in self.head_modules:
                if name in dict(model.named_children()):
                    for module in model.get_submodule(name).modules():
                        if hasattr(module, "reset_parameters"):
                            module.reset_parameters()
                    new |= {f"{name}.{p}" for p, _ in model.get_submodule(name).named_parameters()}
            logger.info("the checkpoint's head was trained on other classes (%s...): re-initialised", old_names[:3])
        return model, new

    def data_collator(self, processor):
        from transformers import default_data_collator

        return default_data_collator

    def compute_metrics(self):
        from hftl.metrics import make_compute_metrics

        return make_compute_metrics(list(self.labels.names))

    def evaluate_split(self, trainer, dataset) -> dict:
        from hftl.metrics import classification_report, logits_to_predictions

        output = trainer.predict(dataset)
        report = classification_report(logits_to_predictions(output.predictions), output.label_ids, list(self.labels.names))
        report["loss"] = float(output.metrics.get("test_loss", float("nan")))
        split = next((name for name, ds in getattr(self, "_prepared", {}).items() if ds is dataset), "eval")
        self._reports = {**getattr(self, "_reports", {}), split: report}
        return report

    def save_extras(self, out: Path, processor) -> None:
        from hftl.plots import plot_confusion_matrix

        write_json(out / LABELS_FILE, {"id2label": self.labels.id2label, "label2id": self.labels.label2id})
        for split, report in getattr(self, "_reports", {}).items():
            plot_confusion_matrix(report["confusion_matrix"], list(self.labels.names),
                                  out / f"confusion_matrix_{split}.png", f"{split}: accuracy {report['accuracy']:.3f}")

    # -- using a finished run ---------------------------------------------------------------------
    def load_trained(self, run_dir: Path):
        """(image processor, model) of a finished run: a full model, or the base plus its LoRA adapter."""
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        labels = json.loads((run_dir / LABELS_FILE).read_text(encoding="utf-8"))["id2label"]
        self.labels = LabelMap(tuple(labels[str(i)] for i in range(len(labels))))
        processor = AutoImageProcessor.from_pretrained(run_dir, backend="pil")
        if (run_dir / "adapter_config.json").is_file():
            from peft import PeftModel

            base, _ = self.load_model(processor)
            return processor, PeftModel.from_pretrained(base, run_dir)
        return processor, AutoModelForImageClassification.from_pretrained(run_dir, use_safetensors=True)

    def predict(self, model, processor, images: list, batch_size: int = 64) -> list[dict]:
        """Predictions for images given as file paths or PIL images."""
        import torch

        from hftl.metrics import prediction_records

        results = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            decoded = [to_rgb(open_image(item, f"input {start + i + 1}")) for i, item in enumerate(chunk)]
            pixels = processor(images=decoded, return_tensors="pt")["pixel_values"].to(model.device)
            with torch.inference_mode():
                probs = model(pixel_values=pixels).logits.float().softmax(-1).cpu()
            results += prediction_records(probs, self.labels.names)
        return results

    def evaluate_trained(self, model, processor, source: str | None = None) -> dict:
        import tempfile

        from transformers import Trainer, TrainingArguments

        from hftl.metrics import classification_report, logits_to_predictions

        data = self.config.data
        source = self.evaluation_source(source)
        problems = self.check_data_source(source, "--data", data)
        if problems:
            raise DataError(" ".join(problems))
        dataset = load_split(source, data.dataset_config, split="test", folder_builder="imagefolder")
        dataset, values = self.prepare_images(dataset, source)
        dataset = dataset.select_columns([data.image_column]).add_column("labels", self.labels.encode(values, source))
        dataset = dataset.with_transform(self.image_transform(processor))
        with tempfile.TemporaryDirectory() as tmp:
            args = TrainingArguments(output_dir=tmp, report_to="none", per_device_eval_batch_size=128,
                                     remove_unused_columns=False)
            trainer = Trainer(model=model, args=args, data_collator=self.data_collator(processor))
            output = trainer.predict(dataset)
        return classification_report(logits_to_predictions(output.predictions), output.label_ids, list(self.labels.names))
