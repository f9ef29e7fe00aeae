"""Assemble train / validation / test from the configured sources."""

from __future__ import annotations

from hftl.config.schema import DataConfig
from hftl.data.loading import load_split
from hftl.errors import DataError


def load_splits(config: DataConfig, seed: int, folder_builder: str | None = None) -> dict:
    """Load every configured split; hold out a seeded `validation_fraction` of train when no validation is given.

    Returns a dict split name -> `datasets.Dataset` (plus `sources`: split name -> source string).
    """
    splits = {}
    for name, source in config.splits().items():
        dataset = load_split(source, config.dataset_config, split=name, folder_builder=folder_builder)
        if len(dataset) == 0:
            raise DataError(f"data.{name}: {source} holds no rows.")
        limit = config.max_train_samples if name == "train" else config.max_eval_samples
        if limit is not None and len(dataset) > limit:
            dataset = dataset.select(range(limit))
        splits[name] = dataset
    if "validation" not in splits:
        train = splits["train"]
        n_val = int(round(len(train) * config.validation_fraction))
        if n_val < 1 or len(train) - n_val < 1:
            raise DataError(
                f"data.train: {len(train)} rows are too few to hold out validation_fraction "
                f"{config.validation_fraction}. Add rows, or give data.validation."
            )
        parts = train.train_test_split(test_size=n_val, seed=seed, shuffle=True)
        splits["train"], splits["validation"] = parts["train"], parts["test"]
    return splits
