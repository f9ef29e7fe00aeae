"""`speed.cheap_dropout`: the same dropout (Bernoulli masks, 1 / (1 - p) scaling) from a cheaper random stream."""

import json
import math

import pytest
import torch
from torch import nn

from hftl import TextClassificationRecipe
from hftl.runner import run_recipe
from hftl.speed.cheap_dropout import (
    ATTENTION_NAME,
    CheapDropout,
    effective_p,
    keep_mask,
    sdpa_cheap_dropout,
    use_cheap_dropout,
)


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_keep_mask_is_bernoulli_with_the_requested_rate(p):
    torch.manual_seed(0)
    mask = keep_mask((400, 1001), p)  # an odd count: the last 64-bit draw is only partly used
    assert mask.dtype == torch.bool and mask.shape == (400, 1001)
    assert abs(effective_p(p) - p) <= 1 / 65536
    dropped = 1 - mask.float()
    # binomial standard error at 400k draws is <= 0.0008: 5 of them
    assert abs(dropped.mean().item() - p) < 0.004
    # every 16-bit lane of the 64-bit draws is equally random (lane k = elements k, k+4, ...)
    lanes = dropped.view(-1)[: 400 * 1000].view(-1, 4).mean(0)
    assert torch.all((lanes - p).abs() < 0.006), lanes
    # neighbours are independent: P(both dropped) = p^2
    pairs = (dropped.view(-1)[:-1] * dropped.view(-1)[1:]).mean().item()
    assert abs(pairs - p * p) < 0.003


def test_keep_mask_follows_the_global_seed():
    torch.manual_seed(3)
    first = keep_mask((64, 33), 0.1)
    torch.manual_seed(3)
    assert torch.equal(first, keep_mask((64, 33), 0.1))
    assert not torch.equal(first, keep_mask((64, 33), 0.1))


def test_cheap_dropout_scales_kept_values_and_their_gradients():
    layer = CheapDropout(0.25)
    x = torch.randn(50, 40, requires_grad=True)
    y = layer(x)
    kept = y != 0
    scale = 1 / (1 - effective_p(0.25))
    torch.testing.assert_close(y[kept], x[kept] * scale)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() * scale)
    layer.eval()
    assert torch.equal(layer(x), x)


def _attention_module(training=True):
    module = nn.Module()
    module.is_causal = False
    return module.train(training)


def test_attention_equals_the_math_of_sdpa_with_the_same_mask():
    query, key, value = (torch.randn(2, 3, 5, 8) for _ in range(3))
    attend = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    attend[1, ..., 3:] = False  # the second example has 3 tokens
    torch.manual_seed(11)
    output, weights = sdpa_cheap_dropout(_attention_module(), query, key, value, attend, dropout=0.2, scaling=0.4)
    assert weights is None and output.shape == (2, 5, 3, 8)
    torch.manual_seed(11)
    mask = keep_mask((2, 3, 5, 5), 0.2)
    scores = (query @ key.transpose(-1, -2) * 0.4).masked_fill(~attend, float("-inf")).softmax(-1)
    expected = (scores * mask / (1 - effective_p(0.2))) @ value
    torch.testing.assert_close(output, expected.transpose(1, 2))


def test_attention_outside_training_is_transformers_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    query, key, value = (torch.randn(2, 3, 5, 8) for _ in range(3))
    module = _attention_module(training=False)
    expected, _ = sdpa_attention_forward(module, query, key, value, None, dropout=0.0, scaling=0.4)
    output, _ = sdpa_cheap_dropout(module, query, key, value, None, dropout=0.0, scaling=0.4)
    assert torch.equal(output, expected)


def test_use_cheap_dropout_changes_layers_not_weights(tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dropouts = sum(type(m) is nn.Dropout for m in model.modules())
    assert use_cheap_dropout(model) == dropouts > 0
    assert all(type(m) is not nn.Dropout for m in model.modules())
    assert model.config._attn_implementation == ATTENTION_NAME
    assert "attn_implementation" not in model.config.to_json_string()
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # evaluation is untouched: same logits as a fresh copy
    fresh = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2).eval()
    fresh.load_state_dict(before)
    inputs = {"input_ids": torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]]),
              "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])}
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(**inputs).logits, fresh(**inputs).logits)


@pytest.mark.parametrize("setting", ["auto", False])
def test_runs_use_it_on_cpu_unless_switched_off(text_config, setting, monkeypatch):
    seen = {}
    import hftl.trainer

    original = hftl.trainer.build_trainer

    def spy(*args, **kwargs):
        trainer = original(*args, **kwargs)
        seen["cheap"] = any(isinstance(m, CheapDropout) for m in trainer.model.modules())
        return trainer

    monkeypatch.setattr(hftl.trainer, "build_trainer", spy)
    config = text_config(**{"speed.cheap_dropout": setting, "training.num_train_epochs": 1})
    result = run_recipe(TextClassificationRecipe(config))
    assert seen["cheap"] is (setting == "auto")
    assert math.isfinite(result.metrics["train"]["train_loss"])
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["speedups"]["cheap_dropout"] is (setting == "auto")  # what ran is on record
