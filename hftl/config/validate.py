"""Checks that read the file system and checkpoint configs, run before any weights or data are loaded."""

from __future__ import annotations

import dataclasses
import functools
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


def check_output_dir(config: RunConfig) -> list[str]:
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        return [f"training.output_dir: {out} exists and is not a folder. Choose another training.output_dir."]
    if out.is_dir() and any(out.iterdir()) and not (config.overwrite or config.resume):
        from hftl.trainer import last_checkpoint

        found = last_checkpoint(out, quiet=True)
        held = f"an unfinished run (last complete checkpoint: {Path(found).name})" if found else "files"
        return [
            f"training.output_dir: {out} already holds {held}. Choose a new output_dir, continue the run with "
            "--resume (resume: true), or replace it with --overwrite (overwrite: true)."
        ]
    if config.overwrite and config.resume:
        return ["overwrite and resume are both true: choose one."]
    return []


def read_model_config(model) -> tuple[object | None, list[str]]:
    """(the checkpoint's transformers config, problems); (None, []) where there is none to read cheaply.

    Only `config.json` is read (locally, or from the Hub cache `check_model_source` filled), or a GGUF
    file's metadata: no weights. Cached, since several checks ask (a GGUF header takes seconds to parse).
    """
    from hftl.modeling import resolve_checkpoint

    path, gguf_file = resolve_checkpoint(model)
    local = Path(path).expanduser()
    source = local / (gguf_file or "config.json")
    stamp = source.stat().st_mtime_ns if source.is_file() else 0  # a changed file is read again
    model_config, problems = _read_model_config(
        str(path), gguf_file, model.revision, model.trust_remote_code, model.name_or_path, stamp
    )
    return model_config, list(problems)


@functools.lru_cache(maxsize=8)
def _read_model_config(path, gguf_file, revision, trust_remote_code, name_or_path, stamp):
    import json

    from transformers import AutoConfig

    from hftl.config.schema import ModelConfig
    from hftl.modeling import load_kwargs

    model = ModelConfig(name_or_path=name_or_path, revision=revision, gguf_file=gguf_file,
                        trust_remote_code=trust_remote_code)
    local = Path(path).expanduser()
    if local.is_dir() and not gguf_file:
        config_file = local / "config.json"
        if not config_file.is_file():
            return None, []  # an adapter-only folder: its base model is checked when it loads
        try:
            raw = json.loads(config_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return None, [f"model.name_or_path: {config_file} is not valid JSON ({err}). Restore the file."]
        if raw.get("auto_map") and not model.trust_remote_code:
            from transformers import CONFIG_MAPPING

            if raw.get("model_type") not in CONFIG_MAPPING:
                return None, [
                    f"model.name_or_path: {local} ships its own modelling code (auto_map in config.json, "
                    f"model_type {raw.get('model_type')!r} unknown to transformers). hftl runs such code only with "
                    "model.trust_remote_code: true; set it if you trust the source, or pick a supported checkpoint."
                ]
    try:
        return AutoConfig.from_pretrained(path, **load_kwargs(model)), []
    except Exception as err:  # ValueError (unknown model_type, remote code), OSError, GGUF parse errors...
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "trust_remote_code" in str(err) and not model.trust_remote_code:
            return None, [
                f"model.name_or_path: '{model.name_or_path}' needs its own modelling code, which hftl runs only "
                "with model.trust_remote_code: true; set it if you trust the source."
            ]
        return None, [f"model.name_or_path: the checkpoint config cannot be read ({first_line})."]


def check_model_architecture(config: RunConfig, recipe_cls) -> list[str]:
    """The checkpoint suits the task, and the strategy fits the model, checked on an empty (meta-device) model.

    * the config's `model_type` must be in the task's Auto class mapping (an image model cannot
      do text classification);
    * LoRA `target_modules` must name layers of the model; `freeze.trainable_layers` must not exceed its blocks.
    The model is built with `accelerate.init_empty_weights` from its config: no weights are read or allocated.
    """
    model_config, problems = read_model_config(config.model)
    auto_name = getattr(recipe_cls, "auto_model_class", None)
    if problems or model_config is None or not auto_name:
        return problems
    import transformers

    auto_cls = getattr(transformers, auto_name)
    supported = auto_cls._model_mapping
    if type(model_config) not in supported and auto_name not in (getattr(model_config, "auto_map", None) or {}):
        types = sorted(supported._model_mapping)
        shown = ", ".join(types[:10]) + (", ..." if len(types) > 10 else "")
        return [
            f"model.name_or_path: '{config.model.name_or_path}' is a '{model_config.model_type}' checkpoint, which "
            f"has no {auto_name} head, so it cannot be used for task '{config.task}'. Choose a checkpoint "
            f"of a suitable architecture ({shown})."
        ]
    if config.model.strategy == "full" or (config.model.strategy == "freeze" and not config.model.trainable_layers):
        return []
    from accelerate import init_empty_weights

    try:
        with init_empty_weights():
            model = auto_cls.from_config(model_config, trust_remote_code=config.model.trust_remote_code)
    except Exception as err:  # an architecture that cannot be built from its config alone: checked at load time
        import logging

        logging.getLogger(__name__).debug("meta-device model check skipped: %s", err)
        return []
    if config.model.strategy == "lora":
        from hftl.strategies.lora import resolve_lora_targets

        try:
            resolve_lora_targets(model, config.model.lora.target_modules)
        except ValueError as err:
            return [str(err)]
    else:
        from hftl.strategies.freeze import transformer_blocks

        blocks = transformer_blocks(model)
        found = 0 if blocks is None else len(blocks)
        if config.model.trainable_layers > found:
            return [
                f"model.trainable_layers: {config.model.trainable_layers} asked, but the model has {found} "
                f"transformer blocks. Use at most {found}."
            ]
    return []


def check_training_combination(config: RunConfig, recipe_cls) -> list[str]:
    """Build the run's `TrainingArguments` (hftl's and the task's defaults under `training`), so that
    their cross-field checks (e.g. `load_best_model_at_end` needs matching eval and save strategies)
    fail here rather than after the data is loaded."""
    try:
        recipe_cls(config).training_arguments()
    except (ValueError, TypeError) as err:
        message = " ".join(str(err).split())
        return [f"training: {message} Change the training section accordingly."]
    return []


def validate_config(config: RunConfig, source: str | None = None) -> None:
    """Run every check and raise one `ConfigError` listing all problems found."""
    from hftl.modeling import check_model_source
    from hftl.tasks import get_recipe_class

    recipe_cls = get_recipe_class(config.task)
    problems = check_output_dir(config) + check_training_combination(config, recipe_cls)
    model_problems = check_model_source(config.model)
    if not model_problems:
        model_problems = check_model_architecture(config, recipe_cls)
    problems += model_problems
    problems += recipe_cls.check_config(config, model_ok=not model_problems)
    if problems:
        raise ConfigError(problems, source)


def check_length_limit(model, key: str, value: int) -> list[str]:
    """A problem if `data.<key>` asks for more positions than the checkpoint has (read from its config only)."""
    model_config, _ = read_model_config(model)  # cached: read once per validation
    if model_config is None:
        return []  # unreadable configs are reported by the model checks
    limit = next((v for attr in ("max_position_embeddings", "n_positions")
                  if isinstance(v := getattr(model_config, attr, None), int) and v > 0), None)
    if limit and value > limit:
        return [f"data.{key}: {value} exceeds the model's limit of {limit} positions. Use at most {limit}."]
    return []
