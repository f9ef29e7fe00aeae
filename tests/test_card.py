"""Model cards: rendered at the end of a run and by `hftl card`, valid for huggingface_hub, free of local paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tiny_runs import train_tiny_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_bert_dir):
    return train_tiny_run(tmp_path_factory.mktemp("card_lora"), tiny_bert_dir, **{"model.strategy": "lora"})


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_bert_dir):
    return train_tiny_run(tmp_path_factory.mktemp("card_full"), tiny_bert_dir)


def _eval_results(card) -> dict:
    return {(r.dataset_split, r.metric_type, r.metric_name): r.metric_value for r in card.data.eval_results}


def test_card_parses_and_its_model_index_holds_the_test_metrics(lora_run):
    from huggingface_hub import ModelCard

    run_dir = lora_run.run_dir
    card = ModelCard.load(run_dir / "README.md")
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    results = _eval_results(card)
    assert results[("test", "accuracy", "Test Accuracy")] == pytest.approx(test["accuracy"], abs=1e-6)
    assert results[("test", "f1", "Test F1 (macro)")] == pytest.approx(test["f1"], abs=1e-6)
    raw_index = card.data.to_dict()["model-index"][0]
    assert raw_index["results"][0]["task"]["type"] == "text-classification"
    assert {m["type"] for m in raw_index["results"][0]["metrics"]} == {"accuracy", "f1", "precision", "recall"}

    data = card.data
    assert data.pipeline_tag == "text-classification"
    assert data.library_name == "peft"
    assert data.license == "unknown"  # the fixture checkpoint declares none: no license is made up
    assert {"hftl", "text-classification", "lora", "peft"} <= set(data.tags)
    assert data.base_model is None  # a local base is no Hub id
    for image in ("confusion_matrix.png", "training_curves.png"):
        assert (run_dir / image).read_bytes().startswith(PNG_MAGIC)
        assert f"]({image})" in card.text


def test_card_sections(lora_run):
    import transformers

    text = (lora_run.run_dir / "README.md").read_text()
    train = lora_run.metrics["train"]
    for heading in ("## Model details", "## How to use", "## Training data", "## Training procedure",
                    "## Evaluation", "## Intended use and limitations", "## Framework versions"):
        assert heading in text
    assert f"{train['trainable_params']:,} of {train['total_params']:,}" in text
    assert "PeftModel.from_pretrained(base, " in text and "merge_and_unload" in text
    assert "hftl export run --merged OUT_DIR" in text
    assert f"- transformers {transformers.__version__}" in text
    assert "| neg | " in text and "| pos | " in text  # per-class table
    assert "| learning_rate | 0.005 |" in text
    assert "rank 8, alpha 16" in text
    assert "`test.tsv`" not in text and "/test.tsv`" in text  # local data named by folder and file only


def test_no_absolute_local_path_in_card_or_saved_configs(lora_run, tmp_path_factory):
    root = str(tmp_path_factory.getbasetemp())  # holds the data, the base checkpoint and the run
    run_dir = lora_run.run_dir
    saved = [run_dir / name for name in ("README.md", "config.yaml", "adapter_config.json", "manifest.json",
                                         "labels.json", "metrics.json", "trainer_state.json")]
    saved += list(run_dir.glob("checkpoint-*/adapter_config.json")) + list(run_dir.glob("checkpoint-*/README.md"))
    for path in saved:
        assert root not in path.read_text(), path
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["train"] == "../train.tsv"
    assert not Path(config["model"]["name_or_path"]).is_absolute()
    assert config["training"]["output_dir"] == "run"
    adapter = json.loads((run_dir / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == config["model"]["name_or_path"]


def test_saved_config_still_loads_and_evaluates(lora_run):
    from hftl import load

    loaded = load(lora_run.run_dir)
    assert Path(loaded.recipe.config.data.test).is_absolute()  # resolved in memory only
    assert loaded.evaluate()["accuracy"] == pytest.approx(lora_run.metrics["test"]["accuracy"])


def test_hftl_card_rerenders_the_same_card(lora_run, capsys):
    from hftl.cli import main

    run_dir = lora_run.run_dir
    before = (run_dir / "README.md").read_text()
    for name in ("README.md", "confusion_matrix.png", "training_curves.png"):
        (run_dir / name).unlink()
    assert main(["card", str(run_dir)]) == 0
    assert (run_dir / "README.md").read_text() == before
    assert (run_dir / "confusion_matrix.png").is_file() and (run_dir / "training_curves.png").is_file()
    assert "README.md" in capsys.readouterr().out


def test_card_for_a_repository_and_license(lora_run, tmp_path):
    from huggingface_hub import ModelCard

    from hftl.card import render_card

    path = render_card(lora_run.run_dir, repo_id="someone/tiny-sentiment", license="mit", out_dir=tmp_path)
    card = ModelCard.load(path)
    assert card.data.license == "mit"
    assert card.data.model_name == "tiny-sentiment"
    assert 'PeftModel.from_pretrained(base, "someone/tiny-sentiment")' in card.text
    assert (tmp_path / "confusion_matrix.png").is_file()


def test_full_run_card_loads_with_plain_transformers(full_run):
    from huggingface_hub import ModelCard

    card = ModelCard.load(full_run.run_dir / "README.md")
    assert card.data.library_name == "transformers"
    assert 'pipeline("text-classification", model="path/to/run")' in card.text
    assert "PeftModel" not in card.text
    assert "a complete transformers model" in card.text


def test_license_and_base_from_the_base_checkpoint_card(tmp_path, tiny_bert_dir):
    """A base folder whose own card declares a license passes it on; the card names the folder, not its path."""
    import shutil

    from hftl.card import base_model_info, base_license

    base = tmp_path / "my-base"
    shutil.copytree(tiny_bert_dir, base)
    (base / "README.md").write_text("---\nlicense: mit\n---\n# base\n")
    info = base_model_info(str(base), str(base))
    assert info == {"hub_id": None, "display": "my-base", "packaged": None}
    assert base_license(info, str(base)) == "mit"
    assert base_model_info("packaged:all-MiniLM-L6-v2")["hub_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model_info("google-bert/bert-base-uncased")["hub_id"] == "google-bert/bert-base-uncased"


TASK_METRICS = {
    "text-classification": None,  # trained for real above
    "image-classification": {"accuracy": 0.9, "precision": 0.9, "recall": 0.89, "f1": 0.895, "loss": 0.3,
                             "per_class": {"cat": {"precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 10},
                                           "dog": {"precision": 0.9, "recall": 0.88, "f1": 0.89, "support": 10}},
                             "confusion_matrix": [[9, 1], [1, 9]], "num_examples": 20},
    "causal-lm": {"loss": 2.0, "perplexity": 7.389, "blocks": 10, "tokens": 1280},
    "masked-lm": {"loss": 2.5, "pseudo_perplexity": 12.18, "blocks": 10, "tokens": 1280},
}


@pytest.mark.parametrize("task", [t for t, m in TASK_METRICS.items() if m])
def test_every_task_template_renders_a_valid_card(task, tmp_path):
    """Each task's template, from the files a run of that task leaves (written here, no training)."""
    from huggingface_hub import ModelCard

    from hftl.card import render_card, template_name
    from hftl.tasks import task_names

    if task not in task_names():
        pytest.skip(f"task {task} is not registered")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = {"task": task, "model": {"name_or_path": "some-org/some-model", "strategy": "lora"},
              "data": {"train": "train.txt"}, "training": {"output_dir": "run", "learning_rate": 1e-4}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = TASK_METRICS[task]
    (run_dir / "metrics.json").write_text(json.dumps({"train": {"trainable_params": 10, "total_params": 100,
                                                                "trainable_percent": 10.0}, "test": metrics}))
    if "per_class" in metrics:
        (run_dir / "labels.json").write_text(json.dumps({"id2label": {"0": "cat", "1": "dog"}}))
    (run_dir / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "some-org/some-model"}))
    (run_dir / "trainer_state.json").write_text(json.dumps({"global_step": 4, "log_history": [
        {"step": 2, "loss": 3.0}, {"step": 4, "loss": 2.5}, {"step": 4, "eval_loss": 2.0}]}))

    assert template_name(task) == task.replace("-", "_") + ".md"
    card = ModelCard.load(render_card(run_dir))
    assert card.data.base_model == "some-org/some-model"
    assert card.data.library_name == "peft"
    main_metric = next(m for m in ("accuracy", "perplexity", "pseudo_perplexity") if m in metrics)
    assert any(r.dataset_split == "test" and r.metric_value == pytest.approx(metrics[main_metric])
               for r in card.data.eval_results)
    assert "from_pretrained(\"some-org/some-model\"" in card.text
    assert (run_dir / "training_curves.png").is_file()
    assert ("confusion_matrix.png" in card.text) == ("confusion_matrix" in metrics)


def test_loading_a_lora_run_does_not_use_the_adapters_base_path(lora_run):
    """hftl loads the base from config.yaml: the base path peft records in adapter_config.json is only a record."""
    import shutil

    from hftl import load

    copy = lora_run.run_dir.parent / "run-copy"  # a sibling: the relative paths in config.yaml still hold
    shutil.copytree(lora_run.run_dir, copy, ignore=shutil.ignore_patterns("checkpoint-*"))
    adapter = json.loads((copy / "adapter_config.json").read_text())
    adapter["base_model_name_or_path"] = "nobody/does-not-exist"
    (copy / "adapter_config.json").write_text(json.dumps(adapter))
    texts = ["the film was great", "it was awful"]
    assert load(copy).predict(texts) == load(lora_run.run_dir).predict(texts)
