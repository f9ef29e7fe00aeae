"""hftl's speed switches (`speed:`) change how fast a run is, never what it computes."""

import json

import pytest
import torch
from transformers import Trainer

from hftl import TextClassificationRecipe
from hftl.config.schema import SpeedConfig
from hftl.runner import run_recipe


@pytest.fixture
def count_eval_loops(monkeypatch):
    calls = []
    original = Trainer.evaluation_loop

    def counted(self, dataloader, description, *args, **kwargs):
        calls.append(description)
        return original(self, dataloader, description, *args, **kwargs)

    monkeypatch.setattr(Trainer, "evaluation_loop", counted)
    return calls


def test_reuse_final_eval_runs_validation_once_with_the_same_result(text_config, count_eval_loops):
    metrics = {}
    for reuse in (False, True):
        count_eval_loops.clear()
        config = text_config(**{"training.num_train_epochs": 1, "speed.reuse_final_eval": reuse,
                                "training.output_dir": text_config()["training"]["output_dir"] + str(reuse)})
        result = run_recipe(TextClassificationRecipe(config))
        metrics[reuse] = result.metrics
        # in-training evaluation of validation, the report's validation, the report's test
        assert len(count_eval_loops) == (2 if reuse else 3)
        assert json.loads((result.run_dir / "manifest.json").read_text())["speedups"]["reuse_final_eval"] is reuse
    for split in ("validation", "test"):
        assert metrics[True][split] == metrics[False][split]


def test_reuse_final_eval_recorded_off_where_the_half_precision_evaluation_was_not_reused(text_config,
                                                                                        count_eval_loops):
    """A bf16 run's last evaluation in training ran under autocast; the float32 report computes validation again,
    and the manifest, which lists the speed-ups that ran, must not say the evaluation was reused."""
    config = text_config(**{"training.num_train_epochs": 1, "speed.reuse_final_eval": True,
                            "training.bf16": True, "training.use_cpu": True})  # autocast in training, float32 report
    result = run_recipe(TextClassificationRecipe(config))
    assert len(count_eval_loops) == 3  # validation computed again in float32
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["training"]["bf16"] is True
    assert manifest["speedups"]["reuse_final_eval"] is False


def test_sorted_evaluation_returns_predictions_in_data_order(tmp_path, tiny_bert_dir):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, TrainingArguments

    from hftl.speed.trainer import trainer_class

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2).eval()
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", per_device_eval_batch_size=2, use_cpu=True)
    trainer = trainer_class()(model=model, args=args, processing_class=tokenizer,
                              data_collator=DataCollatorWithPadding(tokenizer))
    trainer.sort_eval_by_length = True
    texts = ["great", "the film was really quite boring and the plot was tedious", "awful acting", "it felt very lovely"]
    dataset = Dataset.from_dict({**tokenizer(texts, truncation=True), "labels": [1, 0, 0, 1]})
    sampler = trainer._get_eval_sampler(dataset)
    assert list(sampler) == [1, 3, 2, 0]  # longest first
    output = trainer.predict(dataset)
    with torch.no_grad():
        expected = torch.cat([model(**tokenizer([t], return_tensors="pt")).logits for t in texts])
    torch.testing.assert_close(torch.as_tensor(output.predictions), expected, atol=1e-5, rtol=1e-4)
    assert output.label_ids.tolist() == [1, 0, 0, 1]


def test_pad_to_multiple_of_pads_batches(text_config):
    recipe = TextClassificationRecipe(text_config(**{"speed.pad_to_multiple_of": 8}))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(recipe.config.model.name_or_path)
    batch = recipe.data_collator(tokenizer)([tokenizer("great"), tokenizer("the film was great")])
    assert batch["input_ids"].shape[1] % 8 == 0


def test_speed_config_rejects_bad_values():
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        SpeedConfig(pad_to_multiple_of=0)


def test_length_buckets_batches_similar_lengths_and_keeps_every_example():
    from hftl.speed.samplers import LengthBucketSampler

    torch.manual_seed(0)
    lengths = [int(n) for n in torch.randint(3, 60, (103,))]
    sampler = LengthBucketSampler(lengths, batch_size=8, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(103))  # a permutation: every example once per epoch
    batches = [order[i:i + 8] for i in range(0, 103, 8)]
    assert len(batches[-1]) == 103 % 8  # the incomplete batch comes last
    ranges = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(ranges, ranges[1:]))  # batches do not overlap in length
    assert order == list(LengthBucketSampler(lengths, batch_size=8, seed=3))  # a function of (seed, epoch)
    sampler.set_epoch(1)
    assert order != list(sampler)  # a new batch order each epoch


def test_length_buckets_switch_trains_with_the_bucket_sampler(text_config):
    from hftl.speed.samplers import LengthBucketSampler

    result = run_recipe(TextClassificationRecipe(text_config(**{"speed.length_buckets": True, "training.max_steps": 2})))
    assert isinstance(result.trainer._get_train_sampler(), LengthBucketSampler)
    assert result.trainer.state.global_step == 2


@pytest.mark.parametrize("factor, expected_eval_batch", [("auto", 6), (2, 12)])
def test_language_models_evaluate_with_the_training_batch_by_default(tmp_path, tiny_gpt2_dir, factor, expected_eval_batch):
    """Vocabulary-sized logits per token: a 4x evaluation batch costs memory and no time (docs/benchmarks.md)."""
    from hftl import CausalLMRecipe

    train = tmp_path / "train.txt"
    train.write_text("a few words of text\n" * 20, encoding="utf-8")
    config = {"task": "causal-lm", "model": {"name_or_path": str(tiny_gpt2_dir)}, "data": {"train": str(train), "block_size": 16},
              "training": {"output_dir": str(tmp_path / "out"), "per_device_train_batch_size": 6},
              "speed": {"eval_batch_size_factor": factor}}
    assert CausalLMRecipe(config).training_arguments().per_device_eval_batch_size == expected_eval_batch


def test_classification_evaluates_with_four_times_the_training_batch(text_config):
    recipe = TextClassificationRecipe(text_config(**{"training.per_device_train_batch_size": 5}))
    assert recipe.training_arguments().per_device_eval_batch_size == 20


def test_bf16_keeps_a_non_cuda_accelerator(monkeypatch, text_config):
    """bf16 on an XPU/MPS-like accelerator must not move training to the CPU (use_cpu is only for machines with no
    accelerator at all)."""
    import torch
    import transformers

    from hftl.trainer import training_arguments

    recipe = TextClassificationRecipe(text_config(**{"speed.bf16": True}))
    seen = {}
    monkeypatch.setattr(transformers, "TrainingArguments", lambda **kwargs: seen.update(kwargs) or kwargs)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    training_arguments(recipe.config)
    assert seen["bf16"] is True and "use_cpu" not in seen
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    training_arguments(recipe.config)
    assert seen["use_cpu"] is True


def test_a_multi_process_cpu_launch_is_told_it_runs_on_cpu(monkeypatch, text_config):
    """Under `accelerate launch --config_file recipes/accelerate/cpu_ddp.yaml` (WORLD_SIZE=2, no accelerator) the
    Trainer sets up a gloo process group only with use_cpu; without it each process trained alone."""
    import torch
    import transformers

    from hftl.trainer import training_arguments

    recipe = TextClassificationRecipe(text_config(**{"speed.bf16": False}))
    seen = {}
    monkeypatch.setattr(transformers, "TrainingArguments", lambda **kwargs: seen.update(kwargs) or kwargs)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    training_arguments(recipe.config)
    assert seen.get("use_cpu") is True
    seen.clear()
    monkeypatch.setenv("WORLD_SIZE", "1")
    training_arguments(recipe.config)
    assert "use_cpu" not in seen
