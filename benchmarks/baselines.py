"""The plain `transformers.Trainer` scripts hftl is measured against, written as a user would write them.

Three variants, one flag apart (the same steps as `run_glue.py`: tokenise, train, save, evaluate, predict):

    padded    pad every example to max_length, fp32 (what `run_glue.py` does by default)
    dynamic   pad each batch to its longest example (`DataCollatorWithPadding`)
    best      dynamic padding + `train_sampling_strategy="group_by_length"` + bf16 where the hardware runs it fast

    python benchmarks/baselines.py --variant best --model MODEL_DIR --train train.tsv --validation dev.tsv \\
        --test test.tsv --output-dir /tmp/out --results /tmp/out/results.json

The results file holds test accuracy, macro F1 and loss, computed with scikit-learn like hftl's reports.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

VARIANTS = ("padded", "dynamic", "best")


def suite_parser(description: str, variants, *, model_help="checkpoint folder", data_help=None, epochs=1.0,
                 batch_size=32, lr=5e-5) -> argparse.ArgumentParser:
    """The options `benchmarks/run.py` passes to every baseline script; each script adds its own after them."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=variants, required=True)
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument("--train", required=True, help=data_help)
    parser.add_argument("--validation", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--epochs", type=float, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after N steps (smoke runs)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--results", required=True, help="where to write the test metrics (JSON)")
    return parser


def parse_args(argv=None):
    parser = suite_parser(__doc__, VARIANTS)
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--max-length", type=int, default=128)
    return parser.parse_args(argv)


def write_classification_results(path: str, validation: dict, output) -> None:
    """Test accuracy, macro F1 and loss of `Trainer.predict` output (scikit-learn, like hftl's reports) as JSON."""
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score

    predictions = np.argmax(output.predictions, axis=-1)
    results = {
        "validation_loss": validation["eval_loss"],
        "test": {
            "accuracy": float(accuracy_score(output.label_ids, predictions)),
            "f1": float(f1_score(output.label_ids, predictions, average="macro")),
            "loss": float(output.metrics["test_loss"]),
        },
    }
    Path(path).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def bf16_available() -> bool:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    is_supported = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(is_supported and is_supported())


def main(argv=None) -> None:
    import torch
    from datasets import load_dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    args = parse_args(argv)
    set_seed(args.seed)
    files = {"train": args.train, "validation": args.validation, "test": args.test}
    raw = load_dataset("csv", data_files=files, delimiter="\t", quoting=csv.QUOTE_NONE)
    if raw["train"].features[args.label_column].dtype in ("string", "large_string"):
        raw = raw.class_encode_column(args.label_column)
    num_labels = len(set(raw["train"][args.label_column]))

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=num_labels)
    padding = "max_length" if args.variant == "padded" else False

    def tokenize(batch):
        encoded = tokenizer(batch[args.text_column], padding=padding, max_length=args.max_length, truncation=True)
        encoded["labels"] = batch[args.label_column]
        return encoded

    data = raw.map(tokenize, batched=True, remove_columns=raw["train"].column_names)

    best = args.variant == "best"
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        seed=args.seed,
        report_to="none",
        train_sampling_strategy="group_by_length" if best else "random",
        bf16=best and bf16_available(),
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        processing_class=tokenizer,
        data_collator=default_data_collator if padding else DataCollatorWithPadding(tokenizer),
    )
    trainer.train()
    trainer.save_model()
    validation = trainer.evaluate()
    write_classification_results(args.results, validation, trainer.predict(data["test"]))


if __name__ == "__main__":
    main()
