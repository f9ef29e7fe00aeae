"""The plain `transformers.Trainer` causal-LM scripts hftl's `causal-lm` recipe is measured against, written as a
user of transformers' `run_clm.py` would write them (full fine-tuning, `AutoModelForCausalLM`).

Two variants, differing only in how the training text becomes examples (and in precision):

    padded    each sentence its own example, padded to block_size, labels -100 on the padding, fp32
              (what people do without packing)
    best      run_clm.py's `group_texts`: the token stream cut into blocks of block_size, no padding at all,
              bf16 where the hardware runs it fast

Both evaluate validation and test the same way, as run_clm.py does: the text packed into blocks (`group_texts`),
so loss and perplexity compare across the variants, and with hftl, which packs the same way. An EOS token ends
every sentence in both (hftl's recipe does the same; run_clm.py itself joins texts with no separator), and the
pad token is EOS where the tokenizer has none (GPT-2, Llama).

    python benchmarks/baselines_clm.py --variant best --model MODEL_DIR --train train.tsv --validation dev.tsv \\
        --test test.tsv --block-size 128 --output-dir /tmp/out --results /tmp/out/results.json

The results file holds the test loss (mean next-token cross-entropy) and perplexity (its exponential).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from itertools import chain
from pathlib import Path

# the probe runs this file with runpy, which puts no script folder on the path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import bf16_available, suite_parser  # noqa: E402

VARIANTS = ("padded", "best")


def parse_args(argv=None):
    parser = suite_parser(__doc__, VARIANTS, batch_size=4)
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--block-size", type=int, default=128)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    import torch
    from datasets import load_dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    args = parse_args(argv)
    set_seed(args.seed)
    block_size = args.block_size
    files = {"train": args.train, "validation": args.validation, "test": args.test}
    raw = load_dataset("csv", data_files=files, delimiter="\t", quoting=csv.QUOTE_NONE)
    raw = raw.select_columns([args.text_column])

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model)

    def tokenize(batch):
        encoded = tokenizer(batch[args.text_column])
        for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"]):
            if not ids or ids[-1] != tokenizer.eos_token_id:
                ids.append(tokenizer.eos_token_id)
                mask.append(1)
        return encoded

    tokenized = raw.map(tokenize, batched=True, remove_columns=[args.text_column])

    def group_texts(examples):  # run_clm.py's
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total_length = len(concatenated[list(examples.keys())[0]])
        total_length = (total_length // block_size) * block_size
        result = {
            k: [t[i: i + block_size] for i in range(0, total_length, block_size)] for k, t in concatenated.items()
        }
        result["labels"] = result["input_ids"].copy()
        return result

    def pad_each(examples):
        truncated = {k: [v[:block_size] for v in values] for k, values in examples.items()}
        padded = tokenizer.pad(truncated, padding="max_length", max_length=block_size)
        padded["labels"] = [[t if m else -100 for t, m in zip(ids, mask)]
                            for ids, mask in zip(padded["input_ids"], padded["attention_mask"])]
        return dict(padded)

    packed = tokenized.map(group_texts, batched=True)
    train = tokenized["train"].map(pad_each, batched=True) if args.variant == "padded" else packed["train"]

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
        bf16=best and bf16_available(),
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=packed["validation"],
        processing_class=tokenizer,
        data_collator=default_data_collator,
    )
    trainer.train()
    trainer.save_model()
    validation = trainer.evaluate()
    test = trainer.evaluate(packed["test"], metric_key_prefix="test")

    def perplexity(loss: float) -> float:
        try:
            return math.exp(loss)
        except OverflowError:
            return float("inf")

    results = {
        "validation": {"loss": validation["eval_loss"], "perplexity": perplexity(validation["eval_loss"])},
        "test": {"loss": test["test_loss"], "perplexity": perplexity(test["test_loss"]), "blocks": len(packed["test"])},
    }
    Path(args.results).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
