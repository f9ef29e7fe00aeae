"""The plain TRL script hftl's `preference-tuning` recipe is measured against: DPO with a LoRA adapter, written as a
user of TRL's `DPOTrainer` writes it (its docs' "Using PEFT" example).

    plain    `DPOConfig`'s own defaults for everything the suite does not fix: random batches, and TRL's
             `gradient_checkpointing=True`; bf16 where the hardware runs it fast (as the other baselines)

The pairs are the suite's files (TRL's conversational format, already kept to `--max-length` tokens, so that
both sides train on the same pairs), rendered by the tokenizer's chat template. LoRA: r 16, alpha 32, no dropout,
on q_proj and v_proj (peft's default for Llama, and hftl's `target_modules: auto`). The reference model is the base
with the adapter disabled, as TRL does with a PEFT model.

    python benchmarks/baselines_dpo.py --variant plain --model MODEL_DIR --train train.jsonl \\
        --validation validation.jsonl --test test.jsonl --max-length 512 --output-dir /tmp/out \\
        --results /tmp/out/results.json

The results file holds TRL's test reward accuracy and mean reward margin (beta x the policy-minus-reference
log-ratio, chosen minus rejected: the same definition as hftl's `reward_accuracy` and `reward_margin`; TRL averages
the batches' means, which is the mean over pairs when the batch size divides the test pairs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# the probe runs this file with runpy, which puts no script folder on the path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import bf16_available, suite_parser  # noqa: E402

VARIANTS = ("plain",)


def parse_args(argv=None):
    parser = suite_parser(__doc__, VARIANTS, batch_size=8, lr=5e-4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--beta", type=float, default=0.1)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import DPOConfig, DPOTrainer

    args = parse_args(argv)
    set_seed(args.seed)
    data = load_dataset("json", data_files={"train": args.train, "validation": args.validation, "test": args.test})
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    training_args = DPOConfig(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        seed=args.seed,
        beta=args.beta,
        max_length=args.max_length,
        report_to="none",
        bf16=bf16_available(),
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = DPOTrainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        processing_class=tokenizer,
        peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                               task_type="CAUSAL_LM"),
    )
    trainer.train()
    trainer.save_model()
    # TRL adds its metrics under "eval_" whatever the prefix; they are means of the batches' means
    test = trainer.evaluate(data["test"])
    results = {"test": {"reward_accuracy": test["eval_rewards/accuracies"], "reward_margin": test["eval_rewards/margins"],
                        "pairs": len(data["test"])}}
    Path(args.results).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
