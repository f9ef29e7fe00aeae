"""The task registry: task name -> recipe class.

A task is one module in this package whose recipe class declares everything that differs between tasks and
ends with one line, `register_task(MyRecipe)` (from `hftl.recipe`, below the task modules: a task module
never imports this registry, which imports it). Shared code asks the registry and never names a task. The
modules are found on first use, so adding a module here is all it takes; a task defined elsewhere (a plugin,
a test) calls `register_task` itself.
"""

from __future__ import annotations

import importlib
import pkgutil

from pathlib import Path

from hftl.config import read_config
from hftl.config.parse import did_you_mean
from hftl.errors import ConfigError
from hftl.recipe import _REGISTERED, register_task  # noqa: F401 (hftl.tasks.register_task, as before)
from hftl.run_dir import RunDir

_discovered = False


def _discover() -> None:
    """Import every module of this package once: each registers its task as it is imported."""
    global _discovered
    if not _discovered:
        _discovered = True
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")


def registered_tasks() -> dict[str, type]:
    """Task name -> recipe class, for every registered task, by name (whatever order they were imported in)."""
    _discover()
    return dict(sorted(_REGISTERED.items()))


def task_names() -> list[str]:
    return list(registered_tasks())


def task_data_classes() -> dict[str, type]:
    """Task name -> the class of its config's `data` section (what `hftl.config` needs to parse a config)."""
    return {name: recipe.data_config_class for name, recipe in registered_tasks().items()}


def get_recipe_class(name: str) -> type:
    """The recipe class of task `name`; a `ConfigError` with a suggestion if there is none."""
    tasks = registered_tasks()
    if name not in tasks:
        raise ConfigError([f"task: unknown task '{name}'.{did_you_mean(name, tasks)} Known tasks: {', '.join(tasks)}."])
    return tasks[name]


def recipe_for_run(run_dir: str | Path, trust_remote_code: bool = False, allow_pickle: bool = False):
    """The recipe of a finished run, with the run's saved config.

    The config's `model.trust_remote_code` and `model.allow_pickle` are *not* taken from the folder: a run folder
    from elsewhere must not switch on code execution by itself. They are the caller's arguments.
    """
    run = RunDir.existing(run_dir)
    recipe_class = get_recipe_class(str(run.task_name()))
    config = read_config(run.config_file, {recipe_class.task: recipe_class.data_config_class})
    config.model.trust_remote_code, config.model.allow_pickle = trust_remote_code, allow_pickle
    return recipe_class(config)
