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
        # Keep NaN/inf losses visible: `hftl.callbacks.NonFiniteLossCallback` stops the run on them.
        "logging_nan_inf_filter": False,
    }
    if "save_steps" in config.training and "save_strategy" not in config.training:
        defaults["save_strategy"] = "steps"  # `training.save_steps: N` alone means a checkpoint every N steps
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
    from hftl.callbacks import default_callbacks

    for callback in default_callbacks(trainer):
        trainer.add_callback(callback)
    if not recipe.loss_is_token_mean:
        # transformers 5 models take **kwargs, so Trainer assumes their loss is a sum divided by
        # num_items_in_batch and multiplies it by the number of processes (and skips gradient-
        # accumulation scaling). Classification losses are per-example means: undo that assumption.
        trainer.model_accepts_loss_kwargs = False
    return trainer


def prepare_run_dir(config, args) -> Path:
    """`hftl.outputs.prepare_output_dir` on the main process only, the other processes waiting for it.

    Under distributed training every process runs the recipe; only one may replace or create the folder.
    """
    from hftl.outputs import prepare_output_dir

    with args.main_process_first(local=False, desc="preparing the output folder"):
        if args.process_index == 0:
            return prepare_output_dir(config)
    return Path(config.output_dir)


def checkpoint_problem(path: str | Path) -> str | None:
    """Why checkpoint folder `path` cannot be resumed from, or None if it is complete.

    The Trainer writes `trainer_state.json` last, after the weights, optimizer, scheduler and RNG states,
    so a checkpoint whose state file is missing or unreadable was cut off while being saved.
    """
    import json

    path = Path(path)
    state_file = path / "trainer_state.json"
    if not state_file.is_file():
        return "no trainer_state.json: the run stopped while saving it"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "trainer_state.json is cut off: the run stopped while saving it"
    if not isinstance(state, dict) or "global_step" not in state:
        return "trainer_state.json holds no global_step"
    weights = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin",
               "pytorch_model.bin.index.json", "adapter_model.bin")
    if not any((path / name).is_file() for name in weights):
        return "no model weights"
    return None


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def last_checkpoint(output_dir: str | Path, quiet: bool = False) -> str | None:
    """The newest complete checkpoint in `output_dir`, or None; incomplete ones are skipped with a warning.

    Args:
        output_dir (`str` or `Path`): the run folder holding `checkpoint-<step>` folders.
        quiet (`bool`, *optional*, defaults to `False`): do not log which checkpoint was chosen.
    """
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    candidates = []
    for child in output_dir.iterdir():
        name = child.name
        if child.is_dir() and name.startswith(PREFIX_CHECKPOINT_DIR + "-") and name.rsplit("-", 1)[-1].isdigit():
            candidates.append((int(name.rsplit("-", 1)[-1]), child))
    loud = not quiet and _is_main_process()
    for step, child in sorted(candidates, reverse=True):
        problem = checkpoint_problem(child)
        if problem is None:
            if loud:
                logger.warning("Resuming from %s (step %d).", child, step)
            return str(child)
        if loud:
            logger.warning("Skipping incomplete checkpoint %s (%s).", child, problem)
    if loud:
        logger.warning("resume: no complete checkpoint in %s; training starts from step 0.", output_dir)
    return None
