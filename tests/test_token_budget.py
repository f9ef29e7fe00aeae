"""`speed.token_budget`: training batches of at most N padded tokens, every example once per epoch, exact on resume."""

from __future__ import annotations

import json
import os
import random
import signal

import pytest
import yaml

from hftl import TextClassificationRecipe
from hftl.cli import main
from hftl.config.schema import SpeedConfig
from faults import signal_at_step
from hftl.epoch import TrainingEpoch, epoch_callback
from hftl.runner import run_recipe
from hftl.speed.samplers import TokenBudgetSampler, budget_batches, padded_length

pytestmark = pytest.mark.usefixtures("one_thread")

BUDGET = 64  # tokens per batch in the end-to-end runs; the fixture's rows are 5-11 tokens, max_length 32


def _lengths(n=203, seed=0, low=3, high=90):
    rng = random.Random(seed)
    return [rng.randint(low, high) for _ in range(n)]


def _cost(batch, lengths):
    return len(batch) * max(lengths[i] for i in batch)


@pytest.mark.parametrize("budget", [90, 256, 1000])
def test_every_batch_is_within_budget_and_every_example_comes_once_per_epoch(budget):
    lengths = _lengths()
    sampler = TokenBudgetSampler(lengths, budget, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)  # the same count every epoch: the Trainer's steps per epoch
        assert all(_cost(b, lengths) <= budget for b in batches)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))


def test_batches_are_filled_up_to_the_budget():
    """Sorted longest first, a batch holds budget // longest rows (all but the shortest examples' last batch)."""
    lengths = _lengths()
    batches = budget_batches(lengths, 256, seed=0, epoch=0)
    full = [b for b in batches if len(b) == 256 // max(lengths[i] for i in b)]
    assert len(full) >= len(batches) - 1
    ranges = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(ranges, ranges[1:]))  # no overlap in length


def test_a_row_longer_than_the_budget_gets_a_batch_of_its_own():
    batches = budget_batches([10, 500, 10, 10], budget=40, seed=0, epoch=0)
    assert [1] in batches and sorted(map(len, batches)) == [1, 3]


def test_padded_length_follows_the_collator():
    class Collator:
        padding, max_length, pad_to_multiple_of = True, None, 8

    assert [padded_length(n, Collator) for n in (1, 8, 9)] == [8, 8, 16]
    Collator.padding, Collator.max_length = "max_length", 32
    assert padded_length(5, Collator) == 32
    assert padded_length(5, object()) == 5


def test_batch_order_is_deterministic_for_a_seed_and_varies_with_seed_and_epoch():
    lengths = _lengths()
    first = list(TokenBudgetSampler(lengths, 256, seed=1))
    assert first == list(TokenBudgetSampler(lengths, 256, seed=1))
    assert first != list(TokenBudgetSampler(lengths, 256, seed=2))
    later = TokenBudgetSampler(lengths, 256, seed=1)
    later.set_epoch(1)
    assert list(later) != first


@pytest.mark.parametrize("drop_last", [False, True])
def test_ddp_ranks_take_every_nth_batch_in_equal_numbers(drop_last):
    lengths = _lengths()
    world = 3
    everything = budget_batches(lengths, 256, seed=5, epoch=2)
    assert len(everything) % world  # the uneven case
    shares = []
    for rank in range(world):
        sampler = TokenBudgetSampler(lengths, 256, seed=5, rank=rank, world_size=world, drop_last=drop_last)
        sampler.set_epoch(2)
        shares.append(list(sampler))
        assert len(shares[-1]) == len(sampler)
    assert len({len(s) for s in shares}) == 1  # the same number of steps on every rank
    interleaved = [batch for step in zip(*shares) for batch in step]
    if drop_last:
        assert interleaved == everything[:len(everything) // world * world]
    else:  # every batch once, the list wrapping around to its start to even out the ranks
        assert interleaved[:len(everything)] == everything
        assert interleaved[len(everything):] == everything[:len(interleaved) - len(everything)]


def test_the_epoch_reaches_the_sampler_inside_accelerates_resume_wrappers():
    """A DDP run resumed mid-epoch iterates SkipBatchSampler(BatchSamplerShard(sampler)): the Trainer's own
    `set_epoch` does not reach that deep; the callback does."""
    from accelerate.data_loader import BatchSamplerShard, SkipBatchSampler
    from torch.utils.data import DataLoader
    from transformers import TrainerState

    holder = TrainingEpoch()
    sampler = TokenBudgetSampler(_lengths(), 256, seed=5, rank=1, world_size=2, training_epoch=holder)
    loader = DataLoader(range(203), batch_sampler=SkipBatchSampler(BatchSamplerShard(sampler, 2, 1), 3))
    epoch_callback(holder).on_epoch_begin(None, TrainerState(epoch=2.5), None, train_dataloader=loader)
    assert sampler.epoch == 2


def test_config_rejects_bad_budgets(text_config):
    from hftl import load_config
    from hftl.errors import ConfigError

    for bad in (0, -5, True):
        with pytest.raises(ValueError, match="token_budget: must be a positive integer"):
            SpeedConfig(token_budget=bad)
    with pytest.raises(ConfigError) as info:
        load_config(text_config(**{"speed.token_budget": 30}))
    assert "speed.token_budget: 30 tokens cannot hold one row of data.max_length 32 tokens. Raise " \
           "speed.token_budget to at least 32" in str(info.value)
    with pytest.raises(ConfigError, match="32 rounded up to speed.pad_to_multiple_of 24"):
        load_config(text_config(**{"speed.token_budget": 40, "speed.pad_to_multiple_of": 24}))
    fits = load_config(text_config(**{"speed.token_budget": 48, "speed.pad_to_multiple_of": 24}))
    assert fits.speed.token_budget == 48


def _expected_batches(tiny_bert_dir, text_data, budget, seed):
    """The sampler's batch count over the training file, tokenised as the text-classification task does."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    lines = text_data["train"].read_text(encoding="utf-8").splitlines()[1:]
    lengths = [len(tokenizer(line.split("\t")[0], truncation=True, max_length=32)["input_ids"]) for line in lines]
    return len(TokenBudgetSampler(lengths, budget, seed))


def test_hftl_train_with_a_token_budget_records_it_and_steps_once_per_batch(text_config, text_data, tiny_bert_dir,
                                                                              tmp_path):
    config = text_config(**{"speed.token_budget": BUDGET, "training.gradient_accumulation_steps": 2})
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["speedups"]["token_budget"] == BUDGET
    assert manifest["speedups"]["length_buckets"] is False
    batches = _expected_batches(tiny_bert_dir, text_data, BUDGET, seed=42)
    assert batches != 96 // 16  # not the fixed batches of per_device_train_batch_size
    assert _last_step(run) == 2 * -(-batches // 2)  # 2 epochs of ceil(batches / gradient_accumulation_steps) steps


def _last_step(run) -> int:
    """The optimizer steps of a finished run, from its last checkpoint (one per epoch)."""
    last = max(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return json.loads((last / "trainer_state.json").read_text())["global_step"]


def test_the_trainers_dataloader_gives_the_samplers_batches_within_budget(text_config):
    recipe = TextClassificationRecipe(text_config(**{"speed.token_budget": BUDGET, "training.max_steps": 1}))
    trainer = run_recipe(recipe).trainer
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, TokenBudgetSampler)
    loader = trainer.get_train_dataloader()
    batches = [batch["input_ids"].shape for batch in loader]
    assert len(batches) == len(sampler)
    assert len({rows for rows, _ in batches}) > 1  # rows vary with length: not per_device_train_batch_size
    assert all(rows * columns <= BUDGET for rows, columns in batches)
    assert sum(rows for rows, _ in batches) == len(trainer.train_dataset)


def test_without_the_batch_sampler_path_it_warns_and_trains_fixed_batches(text_config, monkeypatch, caplog):
    import hftl.speed.token_budget as token_budget

    monkeypatch.setattr(token_budget, "trainer_sampler_class", lambda: None)
    config = text_config(**{"speed.token_budget": BUDGET, "training.max_steps": 1})
    trainer = run_recipe(TextClassificationRecipe(config)).trainer
    assert "no batch-sampler path" in caplog.text
    assert trainer.applied_speedups["token_budget"] is False
    assert not isinstance(trainer._get_train_sampler(), TokenBudgetSampler)


@pytest.mark.parametrize("switch", [{"speed.token_budget": BUDGET}, {"speed.length_buckets": True}],
                         ids=["token_budget", "length_buckets"])
def test_resumed_mid_epoch_ends_with_the_same_weights(text_config, tmp_path, switch):
    """Stopped in the second epoch (Ctrl-C saves a checkpoint), resumed: the same batches, the same final weights,
    for both samplers that sort by length."""
    import torch
    from safetensors.torch import load_file
    def write(name):
        config = text_config(**{**switch, "training.output_dir": str(tmp_path / name),
                                "training.eval_strategy": "no", "training.save_strategy": "epoch"})
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    assert main(["train", str(write("reference"))]) == 0
    reference = tmp_path / "reference"
    steps = _last_step(reference)
    stop_at = steps // 2 + 2  # mid second epoch

    undo = signal_at_step(signal.SIGINT, stop_at)
    stopped = write("stopped")
    try:
        assert main(["train", str(stopped)]) == 130
    finally:
        undo()
    assert (tmp_path / "stopped" / f"checkpoint-{stop_at}").is_dir()
    assert main(["train", str(stopped), "--resume"]) == 0
    a, b = load_file(tmp_path / "stopped" / "model.safetensors"), load_file(reference / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)
