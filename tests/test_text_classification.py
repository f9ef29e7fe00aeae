"""End-to-end text classification on tiny fixture models: every strategy trains, saves, reloads, predicts."""

import json

import pytest
import torch

from hftl import TextClassificationRecipe
from hftl.inference import load
from hftl.runner import run_recipe


@pytest.mark.parametrize("strategy", ["full", "freeze", "lora"])
def test_strategies_train_save_reload(text_config, strategy):
    config = text_config(**{"model.strategy": strategy, "model.lora": {"r": 4, "alpha": 8, "dropout": 0.0}})
    result = run_recipe(TextClassificationRecipe(config))
    run_dir = result.run_dir
    for name in ("config.yaml", "manifest.json", "metrics.json", "labels.json", "tokenizer.json"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"train", "validation", "test"}
    test = metrics["test"]
    assert {"accuracy", "precision", "recall", "f1", "per_class", "confusion_matrix"} <= set(test)
    assert sum(map(sum, test["confusion_matrix"])) == 32
    train = metrics["train"]
    if strategy == "full":
        assert train["trainable_params"] == train["total_params"]
    elif strategy == "freeze":
        # the classifier (32 x 2 + 2) and the pooler (32 x 32 + 32), which the MLM fixture checkpoint
        # lacks: newly initialised weights must train, the rest of the backbone stays frozen
        assert train["trainable_params"] == (32 * 2 + 2) + (32 * 32 + 32)
    else:
        assert 0 < train["trainable_params"] < train["total_params"] * 0.5
        assert (run_dir / "adapter_config.json").is_file()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["seed"] == 42 and manifest["data"]["train"].startswith("sha256:")
    assert "transformers" in manifest["packages"]

    # The saved run reloads and predicts what the trained model predicted.
    loaded = load(run_dir)
    reloaded = loaded.evaluate()
    assert reloaded["accuracy"] == pytest.approx(test["accuracy"])
    preds = loaded.predict(["the film was great", "it was awful"])
    assert {p["label"] for p in preds} <= {"neg", "pos"}
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-5 for p in preds)


def test_full_finetune_learns(text_config):
    result = run_recipe(TextClassificationRecipe(text_config(**{"training.num_train_epochs": 6})))
    assert result.metrics["test"]["accuracy"] >= 0.8


def test_lora_merged_equals_adapter(text_config):
    result = run_recipe(TextClassificationRecipe(text_config(**{"model.strategy": "lora"})))
    loaded = load(result.run_dir)
    batch = loaded.processor(["the film was great", "it was really awful and boring"], padding=True, return_tensors="pt")
    with torch.no_grad():
        adapter_logits = loaded.model(**batch).logits
        merged = loaded.model.merge_and_unload()
        merged_logits = merged(**batch).logits
    torch.testing.assert_close(adapter_logits, merged_logits, atol=1e-5, rtol=1e-4)


def test_decoder_lora_padding_does_not_change_predictions(text_config, tiny_gpt2_dir):
    config = text_config(model_dir=tiny_gpt2_dir, **{"model.strategy": "lora"})
    result = run_recipe(TextClassificationRecipe(config))
    loaded = load(result.run_dir)
    assert loaded.processor.pad_token is not None
    texts = ["great", "the film was really quite boring and the plot was tedious", "dismal plot", "a lovely story"]
    masks = []
    hook = loaded.model.register_forward_pre_hook(
        lambda module, args, kwargs: masks.append(kwargs["attention_mask"].clone()), with_kwargs=True)
    batched = loaded.predict(texts)  # the predict path's own batching (a token budget): one batch of 4 rows
    hook.remove()
    assert len(masks) == 1 and masks[0].shape[0] == len(texts)
    assert (masks[0] == 0).sum(dim=1).gt(0).sum() == len(texts) - 1  # every row but the longest is padded
    single = [loaded.predict([t])[0] for t in texts]  # no padding
    for b, s in zip(batched, single):
        assert b["label"] == s["label"]
        assert b["probabilities"] == pytest.approx(s["probabilities"], abs=1e-5)


def test_string_labels_map_is_sorted_and_saved(text_config):
    result = run_recipe(TextClassificationRecipe(text_config()))
    labels = json.loads((result.run_dir / "labels.json").read_text())
    assert labels["label2id"] == {"neg": 0, "pos": 1}
    model_config = json.loads((result.run_dir / "config.json").read_text())
    assert model_config["id2label"] == {"0": "neg", "1": "pos"}


def test_head_trained_on_other_classes_is_reinitialised(text_config, tiny_bert_dir, tmp_path):
    """A checkpoint whose 2-class head means other classes (here: 'spam', 'ham') is not silently reused for
    'neg'/'pos' just because the shapes match: the head starts afresh, as a missing one would."""
    import shutil

    from transformers import AutoModelForSequenceClassification

    trained = tmp_path / "spam-model"
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, num_labels=2, id2label={0: "ham", 1: "spam"}, label2id={"ham": 0, "spam": 1})
    model.save_pretrained(trained)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_bert_dir / name, trained / name)
    recipe = TextClassificationRecipe(text_config(model_dir=trained))
    data = recipe.load_data()
    loaded, new = recipe.load_model(recipe.load_processor(), data.labels)
    assert {"classifier.weight", "classifier.bias"} <= new
    assert not torch.equal(loaded.classifier.weight, model.classifier.weight)
    assert loaded.config.id2label == {0: "neg", 1: "pos"}
