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
from collections import Counter
from dataclasses import dataclass

from hftl.config.schema import DataConfig
from hftl.data.loading import load_split
from hftl.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holdout:
    """Row indices of the two parts of a held-out split.

    Attributes:
        train (`list[int]`): rows that stay in training.
        validation (`list[int]`): rows held out for validation.
        reason (`str`, *optional*): why a split asked to be stratified is not (None when it is, or was not asked).
    """

    train: list[int]
    validation: list[int]
    reason: str | None = None


def _why_not_stratified(keys: list[str], n_val: int) -> str | None:
    counts = Counter(keys)
    single = sorted(name for name, n in counts.items() if n < 2)
    if single:
        names = ", ".join(map(repr, single))
        return (f"class {names} has a single example" if len(single) == 1
                else f"classes {names} have a single example each") + ", which cannot be in both parts"
    if n_val < len(counts):
        return f"the validation part would hold {n_val} rows, fewer than the {len(counts)} classes"
    if len(keys) - n_val < len(counts):
        return f"the training part would hold {len(keys) - n_val} rows, fewer than the {len(counts)} classes"
    return None


def keeps_every_class(labels: list, n_val: int) -> bool:
    """Whether a stratified hold-out of `n_val` rows surely leaves every class in training (no split needed).

    Stratified shares give each class at least floor(n_train * count / n_rows) training rows, at least 1
    when `smallest count * n_train >= n_rows`.
    """
    keys = [str(v) for v in labels]
    if not keys or _why_not_stratified(keys, n_val) is not None:
        return False
    return min(Counter(keys).values()) * (len(keys) - n_val) >= len(keys)


def holdout_indices(n_rows: int, n_val: int, seed: int, labels: list | None = None) -> Holdout:
    """Split rows `0..n_rows-1` into training and `n_val` held-out rows, seeded, stratified when `labels` are given.

    Stratified: scikit-learn's `train_test_split(stratify=...)` on the row numbers (the data's own columns
    are never recast to a `ClassLabel`, as `datasets`' `stratify_by_column` would need; and `datasets` 5.2
    reads that column row by row, ~40 s for SST-2's 60k rows). Plain: the permutation
    `datasets.Dataset.train_test_split(seed=seed)` draws (a PCG64 `default_rng(seed)`, held-out rows first),
    so unlabelled splits are the ones earlier hftl versions made (checked by tests/test_data_splits.py).

    Args:
        n_rows (`int`): rows to split.
        n_val (`int`): rows to hold out (at least 1, fewer than `n_rows`).
        seed (`int`): the run's seed; the same seed gives the same split.
        labels (`list`, *optional*): one label per row (any values; compared as strings). Without them,
            or where stratifying is impossible (see `Holdout.reason`), the split is a plain shuffle.
    """
    import numpy as np

    reason = None
    if labels is not None:
        keys = [str(v) for v in labels]
        reason = _why_not_stratified(keys, n_val)
        if reason is None:
            from sklearn.model_selection import train_test_split

            try:
                train, held_out = train_test_split(np.arange(n_rows), test_size=n_val, random_state=seed,
                                                   shuffle=True, stratify=keys)
                return Holdout(train.tolist(), held_out.tolist())
            except ValueError as err:  # a case the checks above do not foresee: split plainly, say why
                reason = str(err)
    permutation = np.random.default_rng(seed).permutation(n_rows)
    return Holdout(permutation[n_val:].tolist(), permutation[:n_val].tolist(), reason)


def label_values(dataset, column: str) -> list | None:
    """The labels of a loaded split, class names for a `ClassLabel` column; None if the column is missing."""
    import datasets

    if column not in dataset.column_names:
        return None  # reported by the task, which knows which column it needs
    values = dataset[column][:]  # a list (a `Column` is read row by row when iterated)
    feature = dataset.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return [feature.int2str(v) for v in values]
    return values


def unseen_label_problems(labels: dict, sources: dict, holdout: Holdout | None = None) -> list[str]:
    """Validation/test labels that the training split (as used, after any hold-out) never has.

    Args:
        labels (`dict[str, list]`): split name -> its labels, as training will use the splits (None: unknown).
        sources (`dict[str, str]`): split name -> configured source, for messages.
        holdout (`Holdout`, *optional*): the hold-out that made the validation split, if one did.
    """
    if labels.get("train") is None:
        return []
    known = {str(v) for v in labels["train"]}
    problems = []
    for name, values in labels.items():
        if name == "train":
            continue
        unseen = sorted({str(v) for v in values or () if v is not None and str(v) not in known})
        if not unseen:
            continue
        held_out = holdout is not None and name == "validation"
        where = (f"data.validation (rows held out from data.train, {sources['train']})" if held_out
                 else f"data.{name}: {sources.get(name, sources['train'])}")
        rest = " (data.train less the rows held out for validation)" if holdout is not None else ""
        why = f" The held-out split is not stratified: {holdout.reason}." if holdout and holdout.reason else ""
        fix = ", or give a data.validation file." if holdout is not None else ", or fix the labels."
        problems.append(
            f"{where}: label(s) {', '.join(map(repr, unseen))} do not occur in the training data{rest}.{why} "
            f"Known labels: {', '.join(sorted(known))}. Add examples of them to data.train{fix}"
        )
    return problems


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
