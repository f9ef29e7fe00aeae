"""Checks that read the file system and checkpoint configs, run before any weights or data are loaded."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from hftl.config.parse import coerce, did_you_mean
from hftl.config.schema import RunConfig
from hftl.errors import ConfigError

# Keys hftl sets itself, or that moved in transformers 5: a pointer beats "unknown key".
_MOVED_TRAINING_KEYS = {
    "group_by_length": "use speed.group_by_length (hftl turns on train_sampling_strategy='group_by_length')",
    "warmup_ratio": "transformers 5 removed it; use warmup_steps (an int, or a float < 1 read as a fraction of steps)",
    "overwrite_output_dir": "use the top-level 'overwrite: true' (or --overwrite on the command line)",
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


def check_output_dir(config: RunConfig) -> list[str]:
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        return [f"training.output_dir: {out} exists and is not a folder."]
    if out.is_dir() and any(out.iterdir()) and not (config.overwrite or config.resume):
        return [
            f"training.output_dir: {out} already holds files. Choose a new output_dir, continue the run with "
            "--resume (resume: true), or replace it with --overwrite (overwrite: true)."
        ]
    if config.overwrite and config.resume:
        return ["overwrite and resume are both true: choose one."]
    return []


def validate_config(config: RunConfig, source: str | None = None) -> None:
    """Run every check and raise one `ConfigError` listing all problems found."""
    from hftl.modeling import check_model_source
    from hftl.tasks import get_recipe_class

    problems = check_training_args(config.training)
    problems += check_output_dir(config)
    model_problems = check_model_source(config.model)
    problems += model_problems
    problems += get_recipe_class(config.task).check_config(config, model_ok=not model_problems)
    if problems:
        raise ConfigError(problems, source)
