"""The training epoch, for what a run draws per (seed, epoch, example) instead of from a generator's history
(image augmentation, masked-LM masks): a resumed run draws what the uninterrupted run drew, whatever came
before, and every process of a distributed run draws the same for the same example."""

from __future__ import annotations


class TrainingEpoch:
    """The training epoch (0-based), set by the Trainer at the start of every epoch, the epoch a resumed run
    continues included. Dataloader workers read it when they start: with `dataloader_persistent_workers` they
    would keep the first epoch's value."""

    epoch: int = 0


def epoch_callback(holder: TrainingEpoch):
    """A `TrainerCallback` that copies the Trainer's epoch into `holder` (built here: keeps transformers out of
    the module's imports)."""
    import math

    from transformers import TrainerCallback

    class _EpochCallback(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            # state.epoch is epoch + steps done / steps per epoch: whole at an epoch's start, fractional on resume
            holder.epoch = math.floor((state.epoch or 0) + 1e-9)

    return _EpochCallback()


def example_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed for one example in one epoch (numpy's SeedSequence mixes the three)."""
    import numpy as np

    return int(np.random.SeedSequence((seed, epoch, index)).generate_state(1, np.uint64)[0])
