"""The seeded hold-out of validation rows from train: one definition, used by `hftl.data.splits.load_splits` on the
loaded data and by `hftl.data.checks.check_rows` on the file, so `hftl validate` checks the label sets of the
split training will use. Stratified by label where the data has labels (see `holdout_indices`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


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


def grouped_holdout_indices(groups: list, n_val: int, seed: int) -> Holdout | None:
    """Hold out whole groups (rows sharing a key, e.g. pairs of one prompt), about `n_val` rows, seeded.

    Rows of one group on both sides would let validation score prompts the model trained on: oasst1's pairs share
    their prompts (1,568 pairs of 544 prompts), and a plain split read 0.79 preference accuracy on validation where
    the unseen-prompt test read 0.62. Groups are taken in a seeded order until `n_val` rows are held. None when no
    group has two rows (the plain split of `holdout_indices` is then the same thing, and earlier runs' splits stay
    as they were) or when there are fewer than two groups.
    """
    import numpy as np

    rows_of: dict = {}  # group -> its rows, groups in first-seen order, so the seed alone fixes the draw
    for i, key in enumerate(groups):
        rows_of.setdefault(key, []).append(i)
    if len(rows_of) < 2 or len(rows_of) == len(groups):
        return None
    order = list(rows_of.values())
    held: list[int] = []
    for g in np.random.default_rng(seed).permutation(len(order)):
        if len(held) >= n_val or len(held) + len(order[g]) == len(groups):  # keep a group for training
            break
        held += order[g]
    held_set = set(held)
    return Holdout([i for i in range(len(groups)) if i not in held_set], sorted(held))


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
