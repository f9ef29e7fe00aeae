"""hftl: transfer learning on Hugging Face. Fine-tune a pretrained checkpoint on your data, measure it, share it.

Public API (imported lazily, so `import hftl` and `hftl --help` stay fast):
    the recipe class of every registered task (`hftl.<Name>Recipe`, found through the task registry,
    so a new task needs no line here), Recipe and register_task (to add a task), run_recipe (train one), load_config, load (a finished
    run), RunDir (a run folder's layout), __version__
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Recipe": "hftl.recipe",
    "RunResult": "hftl.runner",
    "run_recipe": "hftl.runner",
    "PreparedData": "hftl.recipe",
    "RunDir": "hftl.run_dir",
    "register_task": "hftl.recipe",
    "load_config": "hftl.preflight",
    "load": "hftl.inference",
    "RunConfig": "hftl.config",
    "HftlError": "hftl.errors",
    "ConfigError": "hftl.errors",
    "DataError": "hftl.errors",
}



def _recipe_classes() -> dict[str, type]:
    """Class name -> recipe class of every registered task."""
    from hftl.tasks import registered_tasks

    return {recipe.__name__: recipe for recipe in registered_tasks().values()}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "__all__":  # asked by `from hftl import *`: the recipes are known once the registry has looked
        return sorted([*_LAZY, *_recipe_classes(), "__version__"])
    recipe = _recipe_classes().get(name) if name.endswith("Recipe") else None
    if recipe is not None:
        return recipe
    raise AttributeError(f"module 'hftl' has no attribute '{name}'")


def __dir__() -> list[str]:
    return __getattr__("__all__")
