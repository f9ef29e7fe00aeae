"""Training samplers that batch examples of similar length: `speed.length_buckets` (a fixed number of rows per
batch) and `speed.token_budget` (rows x longest row <= a budget).

Both sort the epoch's examples by length (ties in random order), cut them into batches and shuffle the batch
order. Their randomness comes from (seed, epoch) only, never from a global generator (`hftl.epoch`): a run
resumed mid-epoch draws the batches the uninterrupted run drew, and every DDP rank draws the same list. (torch's
global generator is restored by the Trainer only after the resumed epoch's first batch indices were drawn.)
"""

from __future__ import annotations

import math

from hftl.epoch import TrainingEpoch


def length_sorted_batches(lengths, seed: int, epoch: int, rows_for) -> list[list[int]]:
    """One epoch's batches over every example: sorted longest first (ties in an order drawn from (seed, epoch)),
    cut into batches of `rows_for(longest row of the batch)` rows (at least one), in an order drawn from (seed,
    epoch)."""
    import numpy as np

    rng = np.random.default_rng([seed, epoch])
    lengths = np.asarray(lengths, dtype=np.int64)
    shuffled = rng.permutation(len(lengths))
    order = shuffled[np.argsort(-lengths[shuffled], kind="stable")]  # longest first, ties in random order
    batches, start = [], 0
    while start < len(order):
        rows = max(1, rows_for(int(lengths[order[start]])))  # the first row is the batch's longest
        batches.append(order[start:start + rows].tolist())
        start += rows
    return [batches[i] for i in rng.permutation(len(batches))]


def budget_batches(lengths, budget: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches of rows x longest row <= `budget` padded tokens (at least one row)."""
    return length_sorted_batches(lengths, seed, epoch, lambda longest: budget // longest)


class EpochSeeded:
    """A sampler whose draw is a function of (seed, epoch). The epoch is read from a `hftl.epoch.TrainingEpoch`
    that `hftl.epoch.epoch_callback` keeps current (the Trainer's own `set_epoch` calls miss the sampler when a run
    resumes mid-epoch: accelerate 1.15 then wraps it in `SkipBatchSampler`, and the Trainer 5.24 looks one level
    deep); `set_epoch` sets it too."""

    training_epoch: TrainingEpoch

    @property
    def epoch(self) -> int:
        return self.training_epoch.epoch

    def set_epoch(self, epoch: int) -> None:
        self.training_epoch.epoch = epoch


class LengthBucketSampler(EpochSeeded):
    """Indices whose consecutive `batch_size` slices are batches of similar length, over the whole epoch.

    `LengthGroupedSampler` sorts only inside windows of at most 50 random batches, so its batches still mix
    lengths. The one incomplete batch comes last: the DataLoader cuts this index list into `batch_size` chunks.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, training_epoch: TrainingEpoch | None = None):
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.training_epoch = training_epoch or TrainingEpoch()

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        batches = length_sorted_batches(self.lengths, self.seed, self.epoch, lambda longest: self.batch_size)
        batches.sort(key=lambda batch: len(batch) < self.batch_size)  # stable: the incomplete one last
        return iter([index for batch in batches for index in batch])


class TokenBudgetSampler(EpochSeeded):
    """Batches of at most `budget` padded tokens (`budget_batches`), this rank's share of them (every
    `world_size`-th batch, the same count on every rank)."""

    def __init__(self, lengths, budget: int, seed: int, rank: int = 0, world_size: int = 1, drop_last: bool = False,
                 training_epoch: TrainingEpoch | None = None):
        if budget < 1:
            raise ValueError(f"token budget must be positive, got {budget}")
        self.lengths, self.budget, self.seed = list(lengths), budget, seed
        self.training_epoch = training_epoch or TrainingEpoch()
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.total_batches = len(budget_batches(self.lengths, budget, seed, 0))  # the same every epoch

    def __len__(self) -> int:
        per_rank = self.total_batches / self.world_size
        return math.floor(per_rank) if self.drop_last else math.ceil(per_rank)

    def __iter__(self):
        batches = budget_batches(self.lengths, self.budget, self.seed, self.epoch)
        needed = len(self) * self.world_size
        while len(batches) < needed:  # wrap around so that every rank takes as many batches
            batches += batches[:needed - len(batches)]
        return iter(batches[self.rank:needed:self.world_size])


def sampler_seed(args) -> int:
    """The seed of the training samplers: `TrainingArguments.data_seed`, else `seed` (as the Trainer's own)."""
    return args.data_seed if args.data_seed is not None else args.seed


def padded_length(length: int, collator) -> int:
    """The length a row of `length` tokens is padded to by `collator` (padding to max_length, pad_to_multiple_of)."""
    if getattr(collator, "padding", None) == "max_length" and getattr(collator, "max_length", None):
        return max(length, collator.max_length)
    multiple = getattr(collator, "pad_to_multiple_of", None)
    return -(-length // multiple) * multiple if multiple else length
