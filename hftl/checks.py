"""The checks a run makes before any weights or data are loaded, over the whole config at once, for a task whose
recipe class is known.

`read_checked_config` reads a config with the given recipes' data classes (`hftl.config` knows no task), lets the
task decide what the config leaves to the data (`Recipe.resolve_config`: e.g. `problem_type: auto`), then
`config_problems` checks the output folder, the training arguments as the task builds them, the checkpoint (its
config only, and the model on the meta device) and the task's own data checks, and raises one `ConfigError`
listing every problem. Nothing here looks a task up by name: this module sits below the tasks (a `Recipe` built
from a YAML file or a dict reads its config here); `hftl.preflight` adds the registry on top.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hftl.config import read_config
from hftl.config.schema import RunConfig
from hftl.errors import ConfigError
from hftl.modeling import check_model_source, config_override_problems, read_model_config
from hftl.run_dir import RunDir
from hftl.speed.token_budget import token_budget_problems
from hftl.strategies.freeze import transformer_blocks
from hftl.strategies.lora import resolve_lora_targets

logger = logging.getLogger(__name__)


def read_checked_config(source, recipes: dict[str, type], overrides=(), check: bool = True) -> RunConfig:
    """Read, override, resolve and validate a run config for one of `recipes`; one `ConfigError` lists every
    problem, structural and data alike (the checks run on every section that parsed).

    Args:
        source (`str`, `Path` or `dict`): a YAML file, or the config data itself.
        recipes (`dict[str, type[Recipe]]`): task name -> recipe class, the tasks the config may name.
        overrides (`list[str]`, *optional*): `section.key=value` strings applied on top.
        check (`bool`, *optional*, defaults to `True`): also run the checks that read files and
            checkpoint configs (`config_problems`); they never load weights.
    """
    name = None if isinstance(source, dict) else str(source)
    tasks = {task: recipe.data_config_class for task, recipe in recipes.items()}
    config, problems, failed = read_config(source, tasks, overrides, partial=True)
    if check and config.task in tasks:
        recipe_cls = recipes[config.task]
        if "data" not in failed:  # settings left to the data are decided first: every check sees the final config
            problems += recipe_cls.resolve_config(config)
        problems += config_problems(config, recipe_cls, failed)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)), name)  # a check may repeat what the schema found
    return config


def check_output_dir(config: RunConfig) -> list[str]:
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        return [f"training.output_dir: {out} exists and is not a folder. Choose another training.output_dir."]
    if os.environ.get("RANK", "0") == "0":  # the main process, before it locks the folder itself
        in_use = RunDir(out).lock().in_use_by()
        if in_use:
            return [f"training.output_dir: {in_use}"]
    if RunDir(out).holds_files() and not (config.overwrite or config.resume):
        if (out / RunDir.METRICS).is_file():  # written last, when a run finished
            held = "a finished run"
        else:
            found = RunDir(out).last_checkpoint(quiet=True)
            held = f"an unfinished run (last complete checkpoint: {Path(found).name})" if found else "files"
        return [
            f"training.output_dir: {out} already holds {held}. Choose a new output_dir, continue the run with "
            "--resume (resume: true), or replace it with --overwrite (overwrite: true)."
        ]
    if config.overwrite and config.resume:
        return ["overwrite and resume are both true: choose one."]
    return []


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
        logger.debug("meta-device model check skipped: %s", err)
        return []
    if config.model.strategy == "lora":
        try:
            resolve_lora_targets(model, config.model.lora.target_modules)
        except ConfigError as err:
            return err.problems
    else:
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


def config_problems(config: RunConfig, recipe_cls, failed=frozenset()) -> list[str]:
    """Every problem the checks find, skipping those that need a section that did not parse (`failed`)."""
    problems = check_output_dir(config)
    if not failed & {"training", "speed"}:
        problems += check_training_combination(config, recipe_cls)
    if not failed & {"data", "speed"}:
        problems += token_budget_problems(config)
    model_ok = False
    if "model" not in failed:
        model_problems = check_model_source(config.model) or check_model_architecture(config, recipe_cls) or \
            config_override_problems(config.model, getattr(recipe_cls, "auto_model_class", None))
        problems += model_problems
        model_ok = not model_problems
    if "distillation" not in failed:
        from hftl.distillation import distillation_problems

        problems += distillation_problems(config, recipe_cls)
    if "data" not in failed:
        problems += recipe_cls.check_config(config, model_ok=model_ok)
    return problems
