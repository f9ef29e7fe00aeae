"""Token-budget batching (`speed.token_budget`): training batches of similar padded size rather than a fixed count.
The sampler itself is `hftl.speed.samplers.TokenBudgetSampler`; this module wires it into the Trainer.

Each epoch the examples are sorted by (padded) length, longest first, ties in random order, and cut into batches
of `budget // longest row` rows (at least one), so that rows x longest row <= budget; the batch order is then
shuffled. The number of batches is fixed by the lengths alone, so every epoch has the same number of steps.
Randomness comes from (seed, epoch) only, never from a global generator: a resumed run, and every DDP rank,
draws the same batches.

Loss semantics are unchanged: a per-example mean loss is a mean per micro-batch and the Trainer averages
micro-batches (gradient accumulation) and processes (DDP) with equal weights, so each *batch* weighs equally and
one example in a short-text batch (many rows) weighs less than one in a long-text batch (few rows). Token-level
losses divided by the Trainer's `num_items_in_batch` (`hftl.trainer.token_cross_entropy`) stay token-weighted.

Under DDP every rank takes every `world_size`-th batch of the same global list; ranks get the same number of
batches (the list wraps around to its start, as `DistributedSampler` pads, or drops the rest with
`training.dataloader_drop_last`).

The sampler reaches the `DataLoader` as a `batch_sampler` through transformers' own path: `Trainer._get_dataloader`
(transformers 5.24, 5.25) passes a sampler that is a `trainer_pt_utils.BatchRebalanceSampler` as `batch_sampler` and
turns accelerate's `BatchSamplerShard` into a pass-through, the sampler being rank-aware. `trainer_sampler_class()`
subclasses it for that `isinstance` check only. `hftl.speed.private_hooks` ("batch_sampler_path") runs that path
once on a stand-in Trainer; where it does not batch by such a sampler, `trainer_sampler_class()` returns None (a
warning, fixed batches).
"""

from __future__ import annotations

import functools
import logging

from hftl.speed import private_hooks
from hftl.speed.samplers import TokenBudgetSampler, padded_length, sampler_seed

logger = logging.getLogger(__name__)


def trainer_sampler_class():
    """`TokenBudgetSampler` made a `BatchRebalanceSampler` for the Trainer's `isinstance` check (none of that class's
    methods run: `TokenBudgetSampler`'s come first), or None where this transformers has no batch-sampler path."""
    if not private_hooks.available("batch_sampler_path"):
        return None
    from transformers.trainer_pt_utils import BatchRebalanceSampler

    return _subclass(BatchRebalanceSampler)


@functools.cache
def _subclass(base):
    # no `batch_size` attribute: accelerate's BatchSamplerShard would then keep only batches of that size
    return type("TrainerTokenBudgetSampler", (TokenBudgetSampler, base), {})


def trainer_sampler(trainer, dataset) -> TokenBudgetSampler:
    """The training batch sampler of `trainer` (its `token_budget`, seed, rank and collator's padding)."""
    args = trainer.args
    lengths = [padded_length(len(ids), trainer.data_collator) for ids in dataset["input_ids"]]
    sampler = trainer_sampler_class()(lengths, trainer.token_budget, sampler_seed(args), rank=args.process_index,
                                      world_size=max(1, args.world_size), drop_last=args.dataloader_drop_last,
                                      training_epoch=trainer.training_epoch)
    logger.info("speed.token_budget: %d batches of at most %d padded tokens per epoch (%d per process), not "
                "per_device_train_batch_size rows", sampler.total_batches, trainer.token_budget, len(sampler))
    return sampler


def token_budget_applies(train_dataset) -> bool:
    """Whether `speed.token_budget` can run: a tokenised dataset and a transformers with the batch-sampler path
    (warns where not; training then uses fixed batches)."""
    if "input_ids" not in (getattr(train_dataset, "column_names", None) or ()):
        logger.warning("speed.token_budget: the training data has no input_ids (not tokenised text); "
                       "training uses fixed batches of per_device_train_batch_size")
        return False
    if trainer_sampler_class() is None:
        logger.warning("speed.token_budget: this transformers' Trainer has no batch-sampler path "
                       "(Trainer._get_dataloader and BatchRebalanceSampler; see hftl.speed.private_hooks); training "
                       "uses fixed batches of per_device_train_batch_size")
        return False
    return True


def token_budget_problems(config) -> list[str]:
    """Config problems of `speed.token_budget`: a single row of the longest length the data section allows (after
    `pad_to_multiple_of`) must fit in the budget."""
    budget = config.speed.token_budget
    if budget is None:
        return []
    problems = []
    for name in ("max_length", "block_size"):  # the data fields that bound a row's tokens
        longest = getattr(config.data, name, None)
        if not isinstance(longest, int):
            continue
        multiple = config.speed.pad_to_multiple_of
        padded = -(-longest // multiple) * multiple if multiple else longest
        if budget < padded:
            rounded = f" ({longest} rounded up to speed.pad_to_multiple_of {multiple})" if padded != longest else ""
            problems.append(f"speed.token_budget: {budget} tokens cannot hold one row of data.{name} {padded} "
                            f"tokens{rounded}. Raise speed.token_budget to at least {padded} (e.g. {padded * 16}), "
                            f"or set it to null for fixed batches.")
    return problems
