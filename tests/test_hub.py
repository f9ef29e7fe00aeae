"""Pushing runs through the local Hub server (tests/hub_server.py) with the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from hub_server import local_hub  # noqa: F401  (the fixture: HF_ENDPOINT and HF_TOKEN point at a local Hub)
from tiny_runs import TEXTS, train_tiny_run


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_bert_dir):
    return train_tiny_run(tmp_path_factory.mktemp("hub_full"), tiny_bert_dir)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_bert_dir):
    return train_tiny_run(tmp_path_factory.mktemp("hub_lora"), tiny_bert_dir, **{"model.strategy": "lora"})


def run_logits(run_dir) -> torch.Tensor:
    from hftl import load

    loaded = load(run_dir)
    with torch.no_grad():
        return loaded.model(**loaded.processor(TEXTS, padding=True, return_tensors="pt")).logits


def snapshot(folder) -> dict:
    """Every file of a folder with its content hash and modification time."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_push_full_run_and_from_pretrained_gives_identical_predictions(local_hub, full_run):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hftl.hub import push_run

    url = push_run(full_run.run_dir, repo_id="user/tiny-full")
    repo = local_hub.repos["user/tiny-full"]
    assert repo.sha in url
    files = repo.files()
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "config.yaml", "metrics.json",
            "confusion_matrix.png", "training_curves.png"} <= set(files)
    assert not any(p.startswith("checkpoint-") or p.endswith((".bin", ".pt", ".pth")) for p in files)
    # the error analysis quotes the user's validation and test texts: kept local
    assert (full_run.run_dir / "errors.jsonl").is_file() and "errors.jsonl" not in files
    assert len(repo.commits) == 2  # the repo's creation, then one push

    model = AutoModelForSequenceClassification.from_pretrained("user/tiny-full").eval()
    tokenizer = AutoTokenizer.from_pretrained("user/tiny-full")
    with torch.no_grad():
        logits = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(logits, run_logits(full_run.run_dir), rtol=0, atol=1e-6)
    assert model.config.id2label == {0: "neg", 1: "pos"}

    card = ModelCard.load("user/tiny-full")
    assert card.data.library_name == "transformers"
    assert 'pipeline("text-classification", model="user/tiny-full")' in card.text
    assert (full_run.run_dir / "README.md").read_text() != card.text  # the run's own card is left as it was
    assert "most confident mistakes" in (full_run.run_dir / "README.md").read_text()
    assert "most confident mistakes" not in card.text  # nor does the pushed card quote the evaluation inputs


def test_push_adapter_only_and_load_with_peft(local_hub, lora_run, tiny_bert_dir):
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hftl.cli import main

    before = snapshot(lora_run.run_dir)
    assert main(["push", str(lora_run.run_dir), "--repo-id", "user/tiny-lora", "--adapter-only"]) == 0
    assert snapshot(lora_run.run_dir) == before
    files = local_hub.repos["user/tiny-lora"].files()
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(files)
    assert "model.safetensors" not in files
    adapter_config = json.loads(files["adapter_config.json"].content)
    assert adapter_config["base_model_name_or_path"] == tiny_bert_dir.name  # a local base: its name, no path

    # What the card says to do.
    card = ModelCard.load("user/tiny-lora")
    assert card.data.library_name == "peft"
    assert 'PeftModel.from_pretrained(base, "user/tiny-lora")' in card.text
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2,
                                                              id2label=dict(enumerate(["neg", "pos"])))
    model = PeftModel.from_pretrained(base, "user/tiny-lora").eval()
    tokenizer = AutoTokenizer.from_pretrained("user/tiny-lora")
    with torch.no_grad():
        logits = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(logits, run_logits(lora_run.run_dir), rtol=0, atol=1e-6)


def test_push_merged_replaces_an_earlier_adapter_push(local_hub, lora_run):
    from transformers import pipeline

    from hftl import load
    from hftl.hub import push_run

    push_run(lora_run.run_dir, repo_id="user/tiny", mode="adapter")
    push_run(lora_run.run_dir, repo_id="user/tiny", mode="merged")
    files = local_hub.repos["user/tiny"].files()
    assert "model.safetensors" in files
    assert "adapter_config.json" not in files and "adapter_model.safetensors" not in files  # stale adapter removed
    assert "a plain transformers model with the LoRA adapter merged" in files["README.md"].content.decode()

    classify = pipeline("text-classification", model="user/tiny", top_k=None)
    # pipeline() gives the model's own softmax: it knows nothing of the temperature hftl's predict applies
    from hftl.calibration import apply_temperature

    run = load(lora_run.run_dir)
    expected = apply_temperature(run.recipe.predict_logits(run.model, run.processor, TEXTS, 8), 1.0)
    for got, want in zip(classify(TEXTS), expected):
        assert {d["label"]: d["score"] for d in got} == pytest.approx(dict(zip(run.labels.names, map(float, want))),
                                                                      abs=1e-5)


def test_push_at_end_of_training_never_writes_the_token(local_hub, tmp_path, tiny_bert_dir):
    """`hub.push: true` pushes when training ends; the token (HF_TOKEN, set by the fixture) is written nowhere."""
    result = train_tiny_run(tmp_path, tiny_bert_dir, **{"model.strategy": "lora", "training.num_train_epochs": 1,
                                                         "hub.push": True, "hub.repo_id": "user/auto"})
    token = local_hub.token.encode()
    files = local_hub.repos["user/auto"].files()
    assert "adapter_model.safetensors" in files
    assert all(token not in f.content for f in files.values())
    for path in result.run_dir.rglob("*"):
        if path.is_file():
            assert token not in path.read_bytes(), path


def test_no_token_is_a_clear_error_and_leaves_the_run_intact(local_hub, lora_run, monkeypatch):
    from hftl.errors import HubError
    from hftl.hub import push_run

    monkeypatch.delenv("HF_TOKEN")
    before = snapshot(lora_run.run_dir)
    with pytest.raises(HubError) as err:
        push_run(lora_run.run_dir, repo_id="user/nope")
    message = str(err.value)
    assert "hf auth login" in message and "HF_TOKEN" in message
    assert f"hftl push {lora_run.run_dir} --repo-id user/nope" in message
    assert snapshot(lora_run.run_dir) == before
    assert "user/nope" not in local_hub.repos


def test_offline_is_a_clear_error(local_hub, lora_run, monkeypatch):
    from huggingface_hub import constants

    from hftl.errors import HubError
    from hftl.hub import push_run

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        push_run(lora_run.run_dir, repo_id="user/nope")


def test_refused_token_is_a_clear_error(local_hub, lora_run, capsys):
    from hftl.cli import main
    from hftl.errors import HubError
    from hftl.hub import push_run

    before = snapshot(lora_run.run_dir)
    with pytest.raises(HubError) as err:
        push_run(lora_run.run_dir, repo_id="user/nope", token="hf_wrong_token")
    assert "401" in str(err.value) and "hf auth login" in str(err.value)
    assert "hf_wrong_token" not in str(err.value)
    with pytest.raises(HubError, match="403"):  # another user's namespace
        push_run(lora_run.run_dir, repo_id="someone-else/nope")
    assert snapshot(lora_run.run_dir) == before
    # the CLI prints it without a traceback and exits 2
    assert main(["push", str(lora_run.run_dir), "--repo-id", "someone-else/nope"]) == 2
    assert "hftl push: error:" in capsys.readouterr().err


def test_unreachable_hub_is_a_clear_error(local_hub, lora_run, monkeypatch):
    from huggingface_hub import constants

    from hftl.errors import HubError
    from hftl.hub import push_run

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(HubError, match="could not reach the Hub at http://127.0.0.1:9"):
        push_run(lora_run.run_dir, repo_id="user/nope")


def test_push_argument_errors(full_run, lora_run):
    from hftl.errors import HftlError, HubError
    from hftl.hub import push_run

    with pytest.raises(HubError, match="--adapter-only"):
        push_run(full_run.run_dir, repo_id="user/x", mode="adapter")
    with pytest.raises(HubError, match="--repo-id"):
        push_run(lora_run.run_dir)
    with pytest.raises(HubError, match="not valid"):
        push_run(lora_run.run_dir, repo_id="user/has space")
    with pytest.raises(HftlError, match="not an hftl run folder"):
        push_run(lora_run.run_dir.parent, repo_id="user/x")


def test_a_token_in_the_config_is_refused(tmp_path):
    from hftl import load_config
    from hftl.errors import ConfigError

    config = {"task": "text-classification", "model": {"name_or_path": "x"}, "data": {"train": "t.tsv"},
              "training": {"output_dir": str(tmp_path / "run"), "hub_token": "hf_secret"}}
    with pytest.raises(ConfigError, match="training.hub_token: not accepted: never put a token in a config"):
        load_config(config, check=False)
