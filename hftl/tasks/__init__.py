"""The task registry: task name -> recipe class, imported only when asked for (keeps `hftl --help` fast)."""

from __future__ import annotations

import importlib

from hftl.config.parse import did_you_mean

TASKS: dict[str, str] = {
    "text-classification": "hftl.tasks.text_classification:TextClassificationRecipe",
    "causal-lm": "hftl.tasks.language_modeling:CausalLMRecipe",
    "masked-lm": "hftl.tasks.language_modeling:MaskedLMRecipe",
    "image-classification": "hftl.tasks.image_classification:ImageClassificationRecipe",
}


def register_task(name: str, target: str) -> None:
    """Register a recipe class under a task name, e.g. `register_task("my-task", "pkg.mod:MyRecipe")`."""
    TASKS[name] = target


def get_recipe_class(name: str):
    """The recipe class of task `name`; `KeyError` with a suggestion if there is none."""
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}'.{did_you_mean(name, TASKS)} Known tasks: {', '.join(TASKS)}.")
    module_name, class_name = TASKS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
