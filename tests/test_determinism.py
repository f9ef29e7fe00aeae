"""Same config and seed -> identical results on CPU: metrics, predictions, weights, validation split."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hftl import TextClassificationRecipe
from hftl.runner import run_recipe

VOLATILE = {"train_runtime", "train_samples_per_second", "train_steps_per_second"}


def _run(text_config, name: str, seed: int = 42):
    # LoRA (random A matrices) + a new classifier head + dropout + a seeded validation split
    # (no validation file) + length-grouped sampling: every seeded source of randomness is in play.
    config = text_config(**{
        "model.strategy": "lora", "model.lora": {"r": 4, "alpha": 8, "dropout": 0.1},
        "training.output_dir": str(text_config()["training"]["output_dir"]) + f"-{name}",
        "training.seed": seed, "training.num_train_epochs": 1, "training.learning_rate": 1e-2,
    })
    del config["data"]["validation"]
    config["data"]["validation_fraction"] = 0.25
    return run_recipe(TextClassificationRecipe(config))


def _comparable(metrics: dict) -> dict:
    return {split: {k: v for k, v in values.items() if k not in VOLATILE} for split, values in metrics.items()}


def test_same_seed_same_results(text_config):
    first, second = _run(text_config, "a"), _run(text_config, "b")
    assert _comparable(first.metrics) == _comparable(second.metrics)  # exact, not approximate
    a = load_file(first.run_dir / "adapter_model.safetensors")
    b = load_file(second.run_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    history = [json.loads((r.run_dir / "trainer_state.json").read_text())["log_history"] for r in (first, second)]
    losses = [[h["loss"] for h in log if "loss" in h] for log in history]
    assert losses[0] and losses[0] == losses[1]
    manifests = [json.loads((r.run_dir / "manifest.json").read_text()) for r in (first, second)]
    assert manifests[0]["seed"] == manifests[1]["seed"] == 42
    assert manifests[0]["data"] == manifests[1]["data"]

    other = _run(text_config, "c", seed=43)
    assert _comparable(other.metrics)["validation"]["loss"] != pytest.approx(first.metrics["validation"]["loss"], abs=1e-7)
