"""The plain `transformers.Trainer` image-classification script hftl's `image-classification` recipe is measured
against, written as a user of transformers' `run_image_classification.py` would write it: `imagefolder` data,
the checkpoint's image processor applied on the fly (`with_transform`, images converted to RGB first),
`default_data_collator`, `AutoModelForImageClassification` with a head for the data's classes, full fine-tuning.

One variant (images all have one size: there is no padding to vary):

    best    bf16 where the hardware runs it fast

    python benchmarks/baselines_image.py --variant best --model MODEL_DIR --train DIR/train \\
        --validation DIR/validation --test DIR/test --output-dir /tmp/out --results /tmp/out/results.json

The folders hold `<label>/<image file>`. The results file holds test accuracy, macro F1 and loss, computed with
scikit-learn like hftl's reports.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# the probe runs this file with runpy, which puts no script folder on the path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import bf16_available, suite_parser, write_classification_results  # noqa: E402

VARIANTS = ("best",)


def parse_args(argv=None):
    return suite_parser(__doc__, VARIANTS, model_help="checkpoint folder (with its preprocessor_config.json)",
                        data_help="image folder: <label>/<image>", epochs=3.0, lr=5e-4).parse_args(argv)


def main(argv=None) -> None:
    import torch
    from datasets import load_dataset
    from transformers import (
        AutoImageProcessor,
        AutoModelForImageClassification,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    args = parse_args(argv)
    set_seed(args.seed)
    files = {"train": os.path.join(args.train, "**"), "validation": os.path.join(args.validation, "**"),
             "test": os.path.join(args.test, "**")}
    raw = load_dataset("imagefolder", data_files=files)
    labels = raw["train"].features["label"].names

    processor = AutoImageProcessor.from_pretrained(args.model)
    model = AutoModelForImageClassification.from_pretrained(
        args.model,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        ignore_mismatched_sizes=True,
    )

    def transform(batch):
        images = [image.convert("RGB") for image in batch["image"]]
        return {"pixel_values": processor(images, return_tensors="pt")["pixel_values"], "labels": batch["label"]}

    data = raw.with_transform(transform)

    training_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        seed=args.seed,
        report_to="none",
        remove_unused_columns=False,  # the transform needs the image column
        bf16=bf16_available(),
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        processing_class=processor,
        data_collator=default_data_collator,
    )
    trainer.train()
    trainer.save_model()
    validation = trainer.evaluate()
    write_classification_results(args.results, validation, trainer.predict(data["test"]))


if __name__ == "__main__":
    main()
