"""Loss scaling under gradient accumulation: whether the Trainer divides by `num_items_in_batch` is decided per
model (does its loss consume it?), not per task. BERT's masked-LM head takes a plain mean and ignores it."""

from __future__ import annotations

import pytest
import torch

from hftl import CausalLMRecipe, MaskedLMRecipe
from hftl.runner import run_recipe
from conftest import make_sentences


pytestmark = pytest.mark.usefixtures("one_thread")


def _config(tmp_path, model_dir, name, batch, accumulation):
    train = tmp_path / "train.txt"
    if not train.exists():
        train.write_text("\n".join(s for s, _ in make_sentences(200, seed=5)) + "\n", encoding="utf-8")
    return {
        "model": {"name_or_path": str(model_dir), "strategy": "full"},
        "data": {"train": str(train), "validation_fraction": 0.1, "block_size": 16, "baseline": False},
        "training": {"output_dir": str(tmp_path / name), "max_steps": 1, "learning_rate": 1e-3, "logging_steps": 1,
                     "per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation,
                     "seed": 7, "eval_strategy": "no", "save_strategy": "no"},
        "speed": {"bf16": False},
    }


@pytest.mark.parametrize("recipe_class, fixture", [(MaskedLMRecipe, "tiny_bert_dir"), (CausalLMRecipe, "tiny_gpt2_dir")])
def test_gradient_accumulation_keeps_the_loss_scale(recipe_class, fixture, tmp_path, request):
    """Batch 8 in one step, and 4 + 4 accumulated, report the same first-step loss (masks and dropout draw their
    random numbers differently, hence 25%; the defect doubled it)."""
    model_dir = request.getfixturevalue(fixture)
    losses = []
    for batch, accumulation in ((8, 1), (4, 2)):
        result = run_recipe(recipe_class(_config(tmp_path, model_dir, f"b{batch}", batch, accumulation)))
        history = result.trainer.state.log_history
        losses.append(next(entry["loss"] for entry in history if "loss" in entry))
    assert losses[1] == pytest.approx(losses[0], rel=0.25)


def test_whether_a_loss_consumes_num_items_is_measured_per_model(tiny_bert_dir, tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    from hftl.trainer import loss_uses_num_items

    bert = AutoModelForMaskedLM.from_pretrained(tiny_bert_dir).train()
    tokens = AutoTokenizer.from_pretrained(tiny_bert_dir)(["the film was great", "a dull plot"], padding=True,
                                                          return_tensors="pt")
    labels = tokens["input_ids"].clone()
    assert not loss_uses_num_items(bert, {**tokens, "labels": labels})  # BERT's MLM head: a plain mean
    gpt2 = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).train()
    ids = AutoTokenizer.from_pretrained(tiny_gpt2_dir)(["the film was great"], return_tensors="pt")["input_ids"]
    assert loss_uses_num_items(gpt2, {"input_ids": ids, "labels": ids})  # transformers' loss_function: sum / N
    assert gpt2.training and bert.training  # measuring leaves the mode as it was


def test_masked_lm_evaluation_loss_does_not_depend_on_the_evaluation_batch(tiny_bert_dir, tmp_path):
    """Token-weighted: each evaluation batch holds a different number of masked tokens, so a mean of batch means
    would change with the batch size."""
    losses = []
    for eval_batch in (1, 5):
        config = _config(tmp_path, tiny_bert_dir, f"eval{eval_batch}", 8, 1)
        config["data"]["test"] = config["data"]["train"]
        config["training"]["per_device_eval_batch_size"] = eval_batch
        losses.append(run_recipe(MaskedLMRecipe(config)).metrics["test"]["loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_causal_lm_evaluation_loss_equals_the_models_own(tiny_gpt2_dir, tmp_path):
    """The token-weighted loss hftl computes from the logits is the model's own loss over the whole split in one
    batch: the label shift is right."""
    config = _config(tmp_path, tiny_gpt2_dir, "clm", 8, 1)
    config["data"]["test"] = config["data"]["train"]
    result = run_recipe(CausalLMRecipe(config))
    trainer, dataset = result.trainer, result.trainer.eval_dataset
    recipe_loss = result.recipe.evaluate_split(trainer, "validation", dataset)["loss"]
    batch = trainer.data_collator([dataset[i] for i in range(len(dataset))])
    model = trainer.model.eval()
    with torch.no_grad():
        own = model(**{key: value.to(model.device) for key, value in batch.items()}).loss.item()
    assert recipe_loss == pytest.approx(own, rel=1e-4)
