"""Assemble train / validation / test from the configured sources.

Without a validation source, a seeded `validation_fraction` of train is held out. For classification
(a data config with a `label_column`) the hold-out is stratified by label, so a rare class keeps its share
in both parts; where that is impossible (a class with a single example, fewer held-out rows than classes)
it is a plain seeded split, and the reason is logged. `holdout_indices` is the one definition of the
split: `load_splits` uses it on the loaded data and `hftl.data.checks.check_rows` on the file, so
`hftl validate` checks the label sets of the split training will use.
"""

from __future__ import annotations

import logging

from hftl.config.schema import DataConfig
from hftl.data.holdout import holdout_indices, label_values, unseen_label_problems
from hftl.data.loading import load_split
from hftl.errors import DataError

logger = logging.getLogger(__name__)


def load_splits(config: DataConfig, seed: int, folder_builder: str | None = None, stratify: bool = True) -> dict:
    """Load every configured split; hold out a seeded `validation_fraction` of train when no validation is given.

    Args:
        config (`DataConfig`): the data section (`column_names` is honoured for CSV/TSV files).
        seed (`int`): seeds the hold-out.
        folder_builder (`str`, *optional*): the `datasets` builder for plain folders (e.g. "imagefolder").
        stratify (`bool`, *optional*, defaults to `True`): stratify the hold-out by `config.label_column`
            where the config has one (classification), and check that validation/test labels occur in the
            training split as used.

    Returns:
        `dict`: split name -> `datasets.Dataset`.

    Raises:
        `DataError`: a source cannot be read or is empty, train is too small to hold out validation, or
        validation/test labels do not occur in the training split.
    """
    import numpy as np

    label_column = getattr(config, "label_column", None) if stratify else None
    column_names = getattr(config, "column_names", None)
    sources = config.splits()
    splits = {}
    for name, source in sources.items():
        dataset = load_split(source, config.dataset_config, split=name, folder_builder=folder_builder,
                             column_names=column_names)
        if len(dataset) == 0:
            raise DataError(f"data.{name}: {source} holds no rows.")
        limit = config.max_train_samples if name == "train" else config.max_eval_samples
        if limit is not None and len(dataset) > limit:
            dataset = dataset.select(range(limit))
        splits[name] = dataset
    holdout, labels = None, {}
    if label_column:
        labels = {name: label_values(dataset, label_column) for name, dataset in splits.items()}
    if "validation" not in splits:
        train = splits["train"]
        n_val = int(round(len(train) * config.validation_fraction))
        if n_val < 1 or len(train) - n_val < 1:
            raise DataError(
                f"data.train: {len(train)} rows are too few to hold out validation_fraction "
                f"{config.validation_fraction}. Add rows, or give data.validation."
            )
        train_labels = labels.get("train")
        holdout = holdout_indices(len(train), n_val, seed, train_labels)
        if holdout.reason:
            logger.warning("data.train: the held-out validation split is not stratified by '%s': %s; it is a plain "
                           "seeded split instead.", label_column, holdout.reason)
        # numpy indices: `select` fingerprints a list by pickling it, ~1.5 s for 60k rows
        splits["train"] = train.select(np.asarray(holdout.train, dtype=np.int64))
        splits["validation"] = train.select(np.asarray(holdout.validation, dtype=np.int64))
        if train_labels is not None:
            labels["train"] = [train_labels[i] for i in holdout.train]
            labels["validation"] = [train_labels[i] for i in holdout.validation]
    if labels:
        problems = unseen_label_problems(labels, sources, holdout)
        if problems:
            raise DataError(" ".join(problems))
    return splits
