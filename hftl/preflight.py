"""Pre-flight: every check a run makes before any weights or data are loaded, for a config naming any
registered task.

`load_config` finds the config's task in the registry and reads it with `hftl.checks.read_checked_config`
(the config is read with the registered tasks' data classes, the task decides what the config leaves to the data,
then the output folder, the training arguments, the
checkpoint and the task's own data checks run, and one `ConfigError` lists every problem).
"""

from __future__ import annotations

from hftl.checks import config_problems, read_checked_config
from hftl.config.schema import RunConfig
from hftl.errors import ConfigError
from hftl.tasks import get_recipe_class, registered_tasks


def load_config(source, overrides=(), check: bool = True, recipe_cls=None) -> RunConfig:
    """Load, override, resolve and validate a run config; one `ConfigError` lists every problem, structural and
    data alike (the checks run on every section that parsed).

    Args:
        source (`str`, `Path` or `dict`): a YAML file, or the config data itself.
        overrides (`list[str]`, *optional*): `section.key=value` strings applied on top.
        check (`bool`, *optional*, defaults to `True`): also run the checks that read files and
            checkpoint configs (`hftl.checks.config_problems`); they never load weights.
        recipe_cls (`type[Recipe]`, *optional*): read the config for this task only (default: any registered task).
    """
    recipes = {recipe_cls.task: recipe_cls} if recipe_cls else registered_tasks()
    return read_checked_config(source, recipes, overrides, check)


def validate_config(config: RunConfig, recipe_cls=None, source: str | None = None) -> None:
    """Run every check and raise one `ConfigError` listing all problems found.

    Args:
        config (`RunConfig`): the config read by `load_config` or `hftl.config.read_config`.
        recipe_cls (`type[Recipe]`, *optional*): the task's recipe class (default: the registered one).
        source (`str`, *optional*): the config file, named in the error.
    """
    problems = config_problems(config, recipe_cls or get_recipe_class(config.task))
    if problems:
        raise ConfigError(problems, source)
