"""Finished tiny text-classification runs for module-scoped fixtures (which cannot use `text_config`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_sentences, write_tsv, with_changes
from hftl.runner import run_recipe

TEXTS = ["the film was great", "it was really awful and boring", "a lovely and charming story", "dismal plot"]


def tiny_config(tmp: Path, model_dir: Path, rows: tuple[int, int, int] = (96, 32, 32), **changes) -> dict:
    """The fixture task's config on the tiny model, its train / dev / test TSVs (`rows` sentences each) written in
    `tmp`, output in `tmp/run`; `changes` are 'section.key' -> value."""
    data = {name: write_tsv(tmp / f"{name}.tsv", make_sentences(n, seed=seed))
            for name, n, seed in zip(("train", "dev", "test"), rows, (1, 2, 3))}
    config = {
        "task": "text-classification",
        "model": {"name_or_path": str(model_dir), "strategy": "full"},
        "data": {"train": str(data["train"]), "validation": str(data["dev"]), "test": str(data["test"]),
                 "text_column": "sentence", "label_column": "label", "max_length": 32},
        "training": {"output_dir": str(tmp / "run"), "num_train_epochs": 2, "learning_rate": 5e-3,
                     "per_device_train_batch_size": 16, "seed": 42, "logging_steps": 2},
        "speed": {"bf16": False},
    }
    return with_changes(config, changes)


def train_tiny_run(tmp: Path, model_dir: Path, **changes):
    """Train the tiny fixture model on the fixture task in `tmp/run`; `changes` are 'section.key' -> value."""
    from hftl import TextClassificationRecipe

    config = tiny_config(tmp, model_dir, **changes)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_CACHE", str(tmp / "datasets_cache"))
        return run_recipe(TextClassificationRecipe(config))
