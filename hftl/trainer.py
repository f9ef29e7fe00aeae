"""Build the `transformers.Trainer` for a recipe: hftl's defaults under the user's `training` settings."""

from __future__ import annotations

import logging
import os

from hftl.callbacks import add_default_callbacks
from hftl.config.validate import HFTL_TRAINING_KEYS
from hftl.epoch import epoch_callback
from hftl.precision import without_autocast
from hftl.speed import private_hooks
from hftl.speed.private_hooks import check_private_hooks
from hftl.speed.trainer import speedup_available, trainer_class
from hftl.tune.report import add_trial_callback

logger = logging.getLogger(__name__)

DEFAULT_TRAIN_BATCH = 32
#: `TrainingArguments` names transformers 5 deprecated, and their successors. transformers ignores an old name once
#: the new one is set, so a user's old name is passed under the new one: it then wins over a default set under it
RENAMED_TRAINING_ARGS = {"gradient_checkpointing": "activation_checkpointing",
                         "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs"}


def bf16_is_fast() -> bool:
    """True where bfloat16 autocast runs natively: Ampere+ GPUs, CPUs with AVX512-BF16 or AMX."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return private_hooks.available("cpu_bf16_check") and torch.cpu._is_avx512_bf16_supported()


def forget_evaluation_prepare(trainer) -> None:
    """Undo what the Trainer's first evaluation did to the model when it ran before training: accelerate prepared
    it for evaluation only (no DDP wrapper) and flagged it prepared, and `Accelerator.prepare` returns a flagged
    model as it is, so training would run without DDP (each process on its own gradients) and, where that evaluation
    held autocast off (`hftl.precision.evaluating_in`), in float32. The flag and accelerate's record of the model
    go, and so do any autocast wrappers: training then prepares the model as if nothing had evaluated it. FSDP and
    DeepSpeed prepare the model fully at that evaluation, as training needs it: nothing to undo. Relies on the
    private hook `accelerate_prepare` (the runner skips the evaluation where it is not usable)."""
    if getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False):
        return
    accelerator, model = trainer.accelerator, trainer.model
    without_autocast(accelerator, model)
    model.__dict__.pop("_is_accelerate_prepared", None)
    accelerator._models[:] = [prepared for prepared in accelerator._models if prepared is not model]


def training_arguments(config, task_defaults: dict | None = None, auto_eval_batch_size_factor: int = 4):
    """`TrainingArguments` from hftl's defaults, the task's, then the user's `training` section (which wins).

    `auto_eval_batch_size_factor` is what `speed.eval_batch_size_factor: auto` means for the task.
    """
    from transformers import TrainingArguments

    speed = config.speed
    train_batch = config.training.get("per_device_train_batch_size", DEFAULT_TRAIN_BATCH)
    factor = auto_eval_batch_size_factor if speed.eval_batch_size_factor == "auto" else speed.eval_batch_size_factor
    defaults = {
        "per_device_train_batch_size": train_batch,
        "per_device_eval_batch_size": train_batch * factor,
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "save_total_limit": 2,
        "logging_steps": 50,
        "report_to": "none",
        "seed": config.seed,
        "bf16": bf16_is_fast() if speed.bf16 == "auto" else speed.bf16,
        # Keep NaN/inf losses visible: `hftl.callbacks.NonFiniteLossCallback` stops the run on them.
        "logging_nan_inf_filter": False,
    }
    if "save_steps" in config.training and "save_strategy" not in config.training:
        defaults["save_strategy"] = "steps"  # `training.save_steps: N` alone means a checkpoint every N steps
    if speed.group_by_length:
        defaults["train_sampling_strategy"] = "group_by_length"
    import torch

    if not torch.accelerator.is_available() and (defaults["bf16"] or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        # transformers allows CPU bf16 autocast, and sets up a multi-process CPU run (gloo), only when told it is on
        # CPU; an accelerator (CUDA, XPU, MPS...) must keep the run, so only a machine with none is told so
        defaults["use_cpu"] = True
    training = {k: v for k, v in config.training.items() if k not in HFTL_TRAINING_KEYS}  # read by build_trainer
    for old, new in RENAMED_TRAINING_ARGS.items():
        if old in training and new not in training:
            training[new] = training.pop(old)
    if config.training.get("early_stopping_patience"):
        defaults["load_best_model_at_end"] = True  # EarlyStoppingCallback needs the best metric tracked
    kwargs = {**defaults, **(task_defaults or {}), **training}
    kwargs.setdefault("data_seed", kwargs["seed"])
    return TrainingArguments(**kwargs)


def build_trainer(recipe, model, datasets: dict, processor, args, labels=None):
    """The `Trainer` of a run: hftl's Trainer class, callbacks and speed switches, around `recipe`'s hooks."""
    speed = recipe.config.speed
    turned_off = check_private_hooks()  # every private API a trick relies on, checked once per process (logged)
    # a task's own loss (e.g. class weights), given to the Trainer as `compute_loss_func`; None: the model's loss
    loss, cls, teacher = recipe.loss_function(datasets["train"], labels), trainer_class(), None
    if recipe.config.distillation.teacher:  # the loss also compares with a teacher run's logits
        from hftl.distillation import distillation_setup

        wrap, loss, teacher = distillation_setup(recipe, processor, labels, loss)
        cls = wrap(cls)
    kwargs = dict(
        model=model,
        args=args,
        train_dataset=datasets["train"],
        eval_dataset=datasets.get("validation"),
        data_collator=recipe.data_collator(processor),
        processing_class=processor,
        compute_metrics=recipe.compute_metrics(labels, datasets.get("validation")),
        compute_loss_func=loss,
    )
    # a task built on another library's Trainer subclass (TRL's DPOTrainer) makes it from hftl's class and these
    # arguments; the callbacks and switches below apply to it all the same
    create = getattr(recipe, "create_trainer", None)
    trainer = create(cls, kwargs) if create else cls(**kwargs)
    if teacher is not None:
        trainer.teacher_logits = teacher
    add_default_callbacks(trainer)  # clean stop on SIGINT/SIGTERM, stop on non-finite loss
    # under `hftl tune`: each evaluation reported to the study, a pruned trial stopped (chance computed only then)
    add_trial_callback(trainer, lambda: recipe.chance_scores(datasets.get("validation"), labels))
    training = recipe.config.training
    if training.get("early_stopping_patience"):
        from transformers import EarlyStoppingCallback

        trainer.add_callback(EarlyStoppingCallback(training["early_stopping_patience"],
                                                   training.get("early_stopping_threshold") or 0.0))
    if trainer.compute_loss_func is not None:
        trainer.model_accepts_loss_kwargs = False  # the labels go to `compute_loss_func`; the model computes no loss
    elif trainer.model_accepts_loss_kwargs:
        # transformers 5's Trainer assumes a model whose forward takes **kwargs divides a token-summed loss by the
        # `num_items_in_batch` it passes: it then skips gradient-accumulation scaling and multiplies the loss by
        # the number of processes. Per-example means (classification) and heads that ignore the count (BERT's
        # masked-LM head: a plain mean) must not be treated so; whether a loss uses it is measured per model.
        trainer.model_accepts_loss_kwargs = recipe.loss_is_token_mean and loss_uses_num_items(
            model, sample_batch(trainer.data_collator, datasets["train"], model.device))
    single_process = args.world_size == 1  # the length-sorted samplers below do not shard across processes
    # Trainer's eval loss is a mean of batch means: for token-mean losses (language models) sorting
    # would change which tokens share a batch and so the reported loss; per-example losses are unaffected.
    evaluated = datasets.get("validation") or datasets.get("test")
    trainer.sort_eval_by_length = (speed.sort_eval_by_length and speedup_available("sort_eval_by_length")
                                   and not recipe.loss_is_token_mean and single_process and _has_token_ids(evaluated))
    if speed.token_budget is not None:
        from hftl.speed.token_budget import token_budget_applies

        if speedup_available("token_budget") and token_budget_applies(datasets["train"]):
            trainer.token_budget = speed.token_budget  # batches by padded tokens; supersedes length_buckets
    trainer.length_buckets = (speed.length_buckets and speedup_available("length_buckets") and not trainer.token_budget
                              and single_process and _has_token_ids(datasets["train"]))
    # the length-sorted samplers, image augmentation and masked-LM masks draw from (seed, epoch): resume-exact
    trainer.training_epoch = recipe.training_epoch
    trainer.add_callback(epoch_callback(recipe.training_epoch))
    # with load_best_model_at_end the weights change after the last evaluation: nothing to reuse
    trainer.reuse_final_eval = (speed.reuse_final_eval and speedup_available("reuse_final_eval")
                                and not args.load_best_model_at_end)
    # what actually ran, recorded in the run's manifest (a switch can be on and not apply to a model), and the
    # private APIs found changed, with the tricks they turned off. reuse_final_eval is True only once an evaluation
    # was reused (a bf16 run's report computes float32 logits again); the runner records it after evaluation
    trainer.applied_speedups = {"sort_eval_by_length": trainer.sort_eval_by_length,
                                "length_buckets": trainer.length_buckets, "reuse_final_eval": False,
                                "cheap_dropout": False, "first_token_last_layer": False,
                                "token_budget": trainer.token_budget or False,
                                "turned_off": {name: {"tricks": private_hooks.HOOKS[name].trick, "reason": reason}
                                               for name, reason in turned_off.items()}}
    if speed.cheap_dropout is True or (speed.cheap_dropout == "auto" and args.device.type == "cpu"):
        from hftl.speed.cheap_dropout import use_cheap_dropout

        changed = use_cheap_dropout(trainer.model)
        trainer.applied_speedups["cheap_dropout"] = changed > 0
        logger.info("cheap dropout masks in %d dropout layers", changed)
    if speed.first_token_last_layer is not False:
        from hftl.speed.first_token_last_layer import use_first_token_last_layer

        if use_first_token_last_layer(trainer.model):
            trainer.applied_speedups["first_token_last_layer"] = True
            logger.info("last encoder layer computed at position 0 only (speed.first_token_last_layer)")
        elif speed.first_token_last_layer is True:
            logger.warning("speed.first_token_last_layer: not applicable to this model; it runs unchanged")
    return trainer


def _has_token_ids(dataset) -> bool:
    return "input_ids" in (getattr(dataset, "column_names", None) or ())


def token_cross_entropy(outputs, labels, num_items_in_batch=None):
    """The Trainer's `compute_loss_func` of token-level tasks (token classification, masked-LM): cross-entropy
    summed over the labelled tokens (-100 ignored) and divided by `num_items_in_batch`, the labelled tokens of the
    whole accumulated, all-process batch that the Trainer counts. The models' own heads take a plain mean per
    forward pass, which weighs micro-batches with few labelled tokens too much under gradient accumulation and DDP.
    """
    import torch

    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    labels = labels.to(logits.device)
    total = torch.nn.functional.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=-100,
                                              reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum()
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)


def sample_batch(collator, dataset, device, size: int = 2) -> dict:
    """A training batch of the first `size` examples, collated without touching any random generator the run uses."""
    import random

    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        batch = collator([dataset[i] for i in range(min(size, len(dataset)))])
    random.setstate(python_state)
    np.random.set_state(numpy_state)
    return {key: value.to(device) for key, value in batch.items() if hasattr(value, "to")}


def loss_uses_num_items(model, batch: dict) -> bool:
    """Whether `model`'s loss divides by the `num_items_in_batch` it is given (transformers' token-sum losses) or
    ignores it (a plain mean): one forward pass at two values, in eval mode, without gradients."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            one = model(**batch, num_items_in_batch=torch.tensor(1, device=model.device)).loss
            two = model(**batch, num_items_in_batch=torch.tensor(2, device=model.device)).loss
    except TypeError:  # a forward that takes no such argument
        return False
    finally:
        model.train(was_training)
    return not torch.allclose(one, two)
