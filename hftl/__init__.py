"""hftl: transfer learning on Hugging Face. Fine-tune a pretrained checkpoint on your data, measure it, share it.

Public API (imported lazily, so `import hftl` and `hftl --help` stay fast):
    the task recipes (TextClassificationRecipe, ...), Recipe and register_task (to add a task), load_config,
    load (a finished run), RunDir (a run folder's layout), __version__
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Recipe": "hftl.recipe",
    "RunResult": "hftl.recipe",
    "PreparedData": "hftl.recipe",
    "RunDir": "hftl.run_dir",
    "register_task": "hftl.tasks",
    "TextClassificationRecipe": "hftl.tasks.text_classification",
    "CausalLMRecipe": "hftl.tasks.language_modeling",
    "MaskedLMRecipe": "hftl.tasks.language_modeling",
    "ImageClassificationRecipe": "hftl.tasks.image_classification",
    "TokenClassificationRecipe": "hftl.tasks.token_classification",
    "load_config": "hftl.preflight",
    "load": "hftl.inference",
    "RunConfig": "hftl.config",
    "HftlError": "hftl.errors",
    "ConfigError": "hftl.errors",
    "DataError": "hftl.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hftl' has no attribute '{name}'")
