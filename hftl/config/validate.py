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


def check_training_args(training: dict) -> list[str]:
    """Keys must be `TrainingArguments` fields of the right type; a few values are range-checked."""
    from transformers import TrainingArguments

    problems = []
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
                f"training: unknown key '{key}'.{did_you_mean(key, fields)} "
                "Keys are transformers.TrainingArguments fields."
            )
        elif key in hints and value is not None:
            coerce(value, hints[key], f"training.{key}", problems)
    for key in ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size"):
        value = training.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            problems.append(f"training.{key}: must be positive, got {value}.")
    return problems
