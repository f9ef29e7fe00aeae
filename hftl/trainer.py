"""Build the `transformers.Trainer` for a recipe: hftl's defaults under the user's `training` settings."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def bf16_is_fast() -> bool:
    """True where bfloat16 autocast runs natively: Ampere+ GPUs, CPUs with AVX512-BF16 or AMX."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    is_supported = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(is_supported and is_supported())


def training_arguments(config, task_defaults: dict | None = None):
    """`TrainingArguments` from hftl's defaults, the task's, then the user's `training` section (which wins)."""
    from transformers import TrainingArguments

    speed = config.speed
    train_batch = config.training.get("per_device_train_batch_size", 32)
    defaults = {
        "per_device_train_batch_size": train_batch,
        "per_device_eval_batch_size": train_batch * speed.eval_batch_size_factor,
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "save_total_limit": 2,
        "logging_steps": 50,
        "report_to": "none",
        "seed": 42,
        "bf16": bf16_is_fast() if speed.bf16 == "auto" else speed.bf16,
    }
    if speed.group_by_length:
        defaults["train_sampling_strategy"] = "group_by_length"
    import torch

    if defaults["bf16"] and not torch.cuda.is_available():
        defaults["use_cpu"] = True  # transformers allows CPU bf16 autocast only when told it is on CPU
    kwargs = {**defaults, **(task_defaults or {}), **config.training}
    kwargs.setdefault("data_seed", kwargs["seed"])
    return TrainingArguments(**kwargs)


def build_trainer(recipe, model, datasets: dict, processor, args):
    from transformers import Trainer

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=datasets["train"],
        eval_dataset=datasets.get("validation"),
        data_collator=recipe.data_collator(processor),
        processing_class=processor,
        compute_metrics=recipe.compute_metrics(),
    )
    if not recipe.loss_is_token_mean:
        # transformers 5 models take **kwargs, so Trainer assumes their loss is a sum divided by
        # num_items_in_batch and multiplies it by the number of processes (and skips gradient-
        # accumulation scaling). Classification losses are per-example means: undo that assumption.
        trainer.model_accepts_loss_kwargs = False
    return trainer


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete checkpoint in `output_dir` (one with its trainer state written), or None."""
    from transformers.trainer_utils import get_last_checkpoint

    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = get_last_checkpoint(str(output_dir))
    if found:
        logger.warning("Resuming from %s", found)
    return found
