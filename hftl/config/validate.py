"""Checks of the `training` section against `transformers.TrainingArguments` (no file is read here)."""

from __future__ import annotations

import dataclasses
import typing

from hftl.config.parse import coerce, did_you_mean

# Keys hftl sets itself, or that moved in transformers 5: a pointer beats "unknown key".
_MOVED_TRAINING_KEYS = {
    "group_by_length": "use speed.group_by_length (hftl turns on train_sampling_strategy='group_by_length')",
    "warmup_ratio": "transformers 5 removed it; use warmup_steps (an int, or a float < 1 read as a fraction of steps)",
    "overwrite_output_dir": "use the top-level 'overwrite: true' (or --overwrite on the command line)",
    "hub_token": "never put a token in a config; hftl reads HF_TOKEN or the login saved by `hf auth login`",
}


#: keys of the `training` section that hftl reads itself (not `TrainingArguments` fields), with their help text
HFTL_TRAINING_KEYS = {
    "early_stopping_patience": "stop after this many evaluations without improvement of metric_for_best_model "
    "(transformers' EarlyStoppingCallback; turns on load_best_model_at_end; metric default: macro-F1 for "
    "classification, the loss otherwise)",
    "early_stopping_threshold": "with early_stopping_patience: the smallest change that counts as an improvement",
}
#: hftl's defaults of the strategies early stopping depends on (`hftl.trainer.training_arguments`)
_DEFAULT_STRATEGY = "epoch"
_DEFAULT_LOGGING_STEPS = 50


def check_early_stopping(training: dict) -> list[str]:
    """Early stopping needs an evaluation to judge and the best checkpoint saved at the same moments: checked here,
    with hftl's defaults, so a bad combination fails before training (not as a Trainer assertion mid-setup)."""
    patience = training.get("early_stopping_patience")
    threshold = training.get("early_stopping_threshold")
    if patience is None:
        return ["training.early_stopping_threshold: only applies with training.early_stopping_patience; set both "
                "or neither."] if threshold is not None else []
    problems = []
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        problems.append(f"training.early_stopping_patience: expected a positive integer (evaluations without "
                        f"improvement), got {patience!r}.")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or threshold < 0):
        problems.append(f"training.early_stopping_threshold: expected a number >= 0, got {threshold!r}.")
    if training.get("load_best_model_at_end") is False:
        problems.append("training.load_best_model_at_end: early stopping keeps the best checkpoint, so it must not be "
                        "false. Remove it (early stopping turns it on).")
    evaluation = str(training.get("eval_strategy", _DEFAULT_STRATEGY))
    saving = str(training.get("save_strategy", "steps" if "save_steps" in training else _DEFAULT_STRATEGY))
    if evaluation == "no":
        problems.append("training.eval_strategy: early stopping judges the validation metrics, so evaluation cannot "
                        "be 'no'. Use 'epoch' (the default) or 'steps'.")
    elif evaluation != saving:
        problems.append(f"training.save_strategy: early stopping restores the best checkpoint, so checkpoints must "
                        f"be saved when the model is evaluated: eval_strategy is '{evaluation}' but save_strategy is "
                        f"'{saving}'. Set both to the same value.")
    elif evaluation == "steps":
        eval_steps = training.get("eval_steps") or training.get("logging_steps", _DEFAULT_LOGGING_STEPS)
        save_steps = training.get("save_steps", 500)
        if isinstance(eval_steps, int) and isinstance(save_steps, int) and save_steps % eval_steps:
            problems.append(f"training.save_steps: with early stopping it must be a multiple of eval_steps "
                            f"({eval_steps}), got {save_steps}. Use e.g. save_steps: {eval_steps}.")
    return problems


def check_training_args(training: dict) -> list[str]:
    """Keys must be `TrainingArguments` fields of the right type (or hftl's own, `HFTL_TRAINING_KEYS`); a few
    values are range-checked."""
    from transformers import TrainingArguments

    problems = check_early_stopping(training)
    training = {k: v for k, v in training.items() if k not in HFTL_TRAINING_KEYS}
    fields = {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}
    try:
        hints = typing.get_type_hints(TrainingArguments)
    except Exception:  # forward references of optional integrations: fall back to no type checks
        hints = {}
    for key, value in training.items():
        if key in _MOVED_TRAINING_KEYS:
            problems.append(f"training.{key}: not accepted: {_MOVED_TRAINING_KEYS[key]}.")
        elif key not in fields:
            problems.append(
                f"training: unknown key '{key}'.{did_you_mean(key, [*fields, *HFTL_TRAINING_KEYS])} "
                "Keys are transformers.TrainingArguments fields."
            )
        elif key in hints and value is not None:
            coerce(value, hints[key], f"training.{key}", problems)
    for key in ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size"):
        value = training.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            problems.append(f"training.{key}: must be positive, got {value}.")
    return problems
