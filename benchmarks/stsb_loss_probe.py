"""STS-B cross-encoder with a plain `transformers.Trainer`: mean squared error on the 0-5 score against binary
cross-entropy on score / 5 with a sigmoid output (how sentence-transformers' `CrossEncoder` trains STS-B).

A probe for a possible hftl option (a bounded regression target), not part of the suite: it keeps everything
else as `recipes/configs/stsb_minilm.yaml` sets it (no dropout, lr 5e-5, 5 epochs, batch 16, warmup 10%, weight
decay 0.01, max_length 128, best epoch by validation Pearson, length-grouped batches, bf16 where fast).

    python benchmarks/stsb_loss_probe.py --loss bce --seed 42 --output-dir /tmp/stsb-bce-42
    # data: ../shared/datasets/stsb (tab-separated, no CSV quoting); model: the packaged all-MiniLM-L6-v2

Prints and writes (`OUTPUT_DIR/results.json`) validation and test Pearson / Spearman of the best epoch.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from baselines import bf16_available

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "stsb"
SCORE_MAX = 5.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", choices=("mse", "bce"), required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data", default=str(DATA), help="folder with train.tsv, dev.tsv, test.tsv")
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--epochs", type=float, default=5)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after N steps (smoke runs)")
    parser.add_argument("--output-dir", required=True)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    import numpy as np
    import torch
    from datasets import load_dataset
    from scipy.stats import pearsonr, spearmanr
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, set_seed)

    args = parse_args(argv)
    if args.model is None:
        from hftl.modeling import packaged_folder

        args.model = str(packaged_folder("all-MiniLM-L6-v2")[0])
    set_seed(args.seed)
    files = {split: str(Path(args.data) / f"{name}.tsv")
             for split, name in (("train", "train"), ("validation", "dev"), ("test", "test"))}
    raw = load_dataset("csv", data_files=files, delimiter="\t", quoting=csv.QUOTE_NONE)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    bce = args.loss == "bce"
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=1, problem_type="regression", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

    def tokenize(batch):
        encoded = tokenizer(batch["sentence1"], batch["sentence2"], max_length=128, truncation=True)
        encoded["labels"] = [float(s) / SCORE_MAX if bce else float(s) for s in batch["score"]]
        return encoded

    data = raw.map(tokenize, batched=True, remove_columns=raw["train"].column_names)

    def scores(logits):
        logits = np.asarray(logits, dtype=np.float64).reshape(-1)
        return SCORE_MAX / (1.0 + np.exp(-logits)) if bce else logits

    def compute_metrics(prediction):
        predicted = scores(prediction.predictions)
        true = np.asarray(prediction.label_ids, dtype=np.float64).reshape(-1) * (SCORE_MAX if bce else 1.0)
        return {"pearson": float(pearsonr(true, predicted)[0]), "spearman": float(spearmanr(true, predicted)[0])}

    def bce_loss(outputs, labels, num_items_in_batch=None):
        return torch.nn.functional.binary_cross_entropy_with_logits(outputs.logits.float().view(-1), labels.float())

    training_args = TrainingArguments(
        output_dir=args.output_dir, per_device_train_batch_size=16, per_device_eval_batch_size=64, learning_rate=5e-5,
        num_train_epochs=args.epochs, max_steps=args.max_steps, warmup_steps=0.1, weight_decay=0.01, seed=args.seed,
        eval_strategy="epoch", save_strategy="epoch", save_total_limit=1, load_best_model_at_end=True,
        metric_for_best_model="pearson", report_to="none", train_sampling_strategy="group_by_length",
        bf16=bf16_available(), use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=data["train"], eval_dataset=data["validation"],
                      processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=compute_metrics, compute_loss_func=bce_loss if bce else None)
    train_output = trainer.train()
    results = {"loss": args.loss, "seed": args.seed, "train_runtime": train_output.metrics["train_runtime"],
               "validation": trainer.evaluate(), "test": trainer.evaluate(data["test"], metric_key_prefix="test")}
    Path(args.output_dir, "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({split: {k: round(v, 4) for k, v in results[split].items() if k.split("_")[-1]
                              in ("pearson", "spearman")} for split in ("validation", "test")}))
    return results


if __name__ == "__main__":
    main()
