"""`hftl.speed.first_token_last_layer`: same logits and gradients as the stock model, fallbacks where it cannot apply.

Tolerance: fp32, atol 1e-5 / rtol 1e-4 (the shortcut multiplies matrices of other shapes, so the
summation order, not the maths, differs).
"""

from __future__ import annotations

import copy

import pytest
import torch

from hftl.runner import run_recipe
from hftl.speed.first_token_last_layer import use_first_token_last_layer

ATOL, RTOL = 1e-5, 1e-4
VOCAB, HIDDEN, HEADS, FFN, LAYERS = 60, 32, 4, 64, 2


def _bert(cls_name="BertForSequenceClassification", config_name="BertConfig", **extra):
    import transformers

    config = getattr(transformers, config_name)(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3,
        max_position_embeddings=64, pad_token_id=0, **extra)
    return getattr(transformers, cls_name)(config)


def _distilbert():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(vocab_size=VOCAB, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN,
                              dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0, num_labels=3,
                              max_position_embeddings=64, pad_token_id=0)
    return DistilBertForSequenceClassification(config)


BUILDERS = {
    "bert": _bert,
    "roberta": lambda: _bert("RobertaForSequenceClassification", "RobertaConfig", classifier_dropout=0.0),
    "xlm-roberta": lambda: _bert("XLMRobertaForSequenceClassification", "XLMRobertaConfig", classifier_dropout=0.0),
    "electra": lambda: _bert("ElectraForSequenceClassification", "ElectraConfig", embedding_size=HIDDEN,
                             classifier_dropout=0.0),
    "distilbert": _distilbert,
}


def _batch(seed=0, batch=4, length=9):
    """Token ids with right padding of different lengths per row (row 0 full, row 2 only 3 tokens)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (batch, length), generator=generator)
    lengths = torch.tensor([length, length - 2, 3, length - 4])[:batch]
    attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    labels = torch.randint(0, 3, (batch,), generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _last_layer(model):
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    base = inner.base_model
    return (base.transformer if hasattr(base, "transformer") else base.encoder).layer[-1]


def _step(model, batch, **kwargs):
    model.zero_grad(set_to_none=True)
    out = model(**batch, **kwargs)
    out.loss.backward()
    grads = {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}
    return out, grads


def _assert_same_step(stock, fast, batch):
    """Same logits, loss and every parameter's gradient; and the shortcut really ran (one output position)."""
    seen = []
    handle = _last_layer(fast).register_forward_hook(lambda m, a, out: seen.append(tuple(out.shape)))
    (stock_out, stock_grads), (fast_out, fast_grads) = _step(stock, batch), _step(fast, batch)
    handle.remove()
    assert seen == [(batch["input_ids"].shape[0], 1, HIDDEN)], "the last layer did not take the shortcut"
    torch.testing.assert_close(fast_out.logits, stock_out.logits, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(fast_out.loss, stock_out.loss, atol=ATOL, rtol=RTOL)
    assert fast_grads.keys() == stock_grads.keys()
    for name, grad in stock_grads.items():
        assert (grad is None) == (fast_grads[name] is None), name
        if grad is not None:
            torch.testing.assert_close(fast_grads[name], grad, atol=ATOL, rtol=RTOL, msg=name)
    # the gradient reaches the last layer's query / feed-forward (the parts computed at one position)
    assert any(g is not None and g.abs().sum() > 0 for n, g in fast_grads.items() if "query" in n or "q_lin" in n)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_same_logits_and_gradients(arch, attention):
    torch.manual_seed(0)
    stock = BUILDERS[arch]()
    stock.config._attn_implementation = attention
    stock.train()  # training path (dropout is 0 in the configs, so both are deterministic)
    fast = copy.deepcopy(stock)
    assert use_first_token_last_layer(fast) is True
    _assert_same_step(stock, fast, _batch())
    fast.eval()  # evaluation path too, without gradients
    stock.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(**_batch(1)).logits, stock(**_batch(1)).logits, atol=ATOL, rtol=RTOL)


def test_lora_wrapped_bert_goes_through_the_lora_modules():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    # init_lora_weights=False: random B matrices, so the adapters change the output and get gradients
    peft_config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["query", "value"],
                             modules_to_save=["classifier"], init_lora_weights=False)
    stock = get_peft_model(_bert(), peft_config)
    fast = copy.deepcopy(stock)
    assert use_first_token_last_layer(fast) is True
    query = _last_layer(fast).attention.self.query
    assert hasattr(query, "lora_A"), "peft replaced the query Linear"
    lengths = []
    handle = query.lora_A["default"].register_forward_hook(lambda m, a, out: lengths.append(out.shape[1]))
    _assert_same_step(stock, fast, _batch(2))
    handle.remove()
    assert lengths == [1], "the LoRA query adapter of the last layer ran on position 0 only"
    trainable = [n for n, p in fast.named_parameters() if p.requires_grad]
    assert any("lora_B" in n for n in trainable)


def test_cheap_dropout_attention_function_takes_the_shortcut():
    from hftl.speed.cheap_dropout import ATTENTION_NAME, use_cheap_dropout

    torch.manual_seed(0)
    stock = _bert()
    stock.config._attn_implementation = "sdpa"
    stock.train()
    fast = copy.deepcopy(stock)
    use_cheap_dropout(fast)
    assert fast.config._attn_implementation == ATTENTION_NAME
    assert use_first_token_last_layer(fast) is True
    _assert_same_step(stock, fast, _batch(3))


def test_unknown_architectures_are_left_untouched():
    from transformers import BertConfig, BertForTokenClassification, GPT2Config, GPT2ForSequenceClassification

    token_classifier = BertForTokenClassification(BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=1,
                                                             num_attention_heads=HEADS, intermediate_size=FFN))
    gpt2 = GPT2ForSequenceClassification(GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=1, n_head=HEADS,
                                                    pad_token_id=0))
    for model in (token_classifier, gpt2):
        assert use_first_token_last_layer(model) is False
        assert not any("forward" in vars(m) for m in model.modules())


def test_configured_hidden_states_fall_back():
    model = _bert(output_hidden_states=True)
    assert use_first_token_last_layer(model) is False
    assert "forward" not in vars(_last_layer(model))


def test_missing_structure_falls_back():
    model = _bert()
    del _last_layer(model).attention.self.scaling  # what a refactored layer class could look like
    assert use_first_token_last_layer(model) is False
    assert "forward" not in vars(_last_layer(model))


@pytest.mark.parametrize("request_kwargs", [{"output_hidden_states": True}, {"output_attentions": True}])
def test_hidden_states_asked_at_call_time_get_every_position(request_kwargs):
    torch.manual_seed(0)
    stock = _bert()
    stock.config._attn_implementation = "eager"  # attentions are only returned by eager attention
    fast = copy.deepcopy(stock)
    assert use_first_token_last_layer(fast) is True
    batch = _batch(4)
    stock_out, fast_out = stock(**batch, **request_kwargs), fast(**batch, **request_kwargs)
    key = next(iter(request_kwargs))[len("output_"):]
    assert len(fast_out[key]) == len(stock_out[key]) > 0
    for fast_value, stock_value in zip(fast_out[key], stock_out[key]):
        assert fast_value.shape == stock_value.shape
        torch.testing.assert_close(fast_value, stock_value, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(fast_out.logits, stock_out.logits, atol=ATOL, rtol=RTOL)


def test_patching_twice_is_harmless_and_undoable():
    torch.manual_seed(0)
    stock = _bert()
    stock.train()
    fast = copy.deepcopy(stock)
    assert use_first_token_last_layer(fast) and use_first_token_last_layer(fast)
    _assert_same_step(stock, fast, _batch(5))
    layer = _last_layer(fast)
    del layer.forward
    seen = []
    layer.register_forward_hook(lambda m, a, out: seen.append(out.shape[1]))
    fast(**_batch(5))
    assert seen == [_batch(5)["input_ids"].shape[1]]


@pytest.mark.parametrize("switch", ["auto", False])
def test_speed_switch_patches_the_trained_model(text_config, monkeypatch, switch):
    import hftl.speed.first_token_last_layer as module
    from hftl import TextClassificationRecipe

    results = []
    original = module.use_first_token_last_layer
    monkeypatch.setattr(module, "use_first_token_last_layer", lambda model: results.append(original(model)) or True)
    config = text_config(**{"training.num_train_epochs": 1, "speed.first_token_last_layer": switch})
    metrics = run_recipe(TextClassificationRecipe(config)).metrics
    assert results == ([True] if switch == "auto" else [])
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0


def test_gradient_checkpointing_keeps_the_shortcut_exact():
    torch.manual_seed(0)
    stock = _bert()
    stock.train()
    fast = copy.deepcopy(stock)
    fast.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert use_first_token_last_layer(fast) is True
    _assert_same_step(stock, fast, _batch(6))


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_first_token_in_eval_for_prediction_then_the_model_as_it_was(arch):
    """Prediction's shortcut (`first_token_in_eval`): same logits in evaluation mode, and the model unchanged after,
    whether or not training had patched it."""
    from hftl.speed.first_token_last_layer import first_token_in_eval

    torch.manual_seed(0)
    model = BUILDERS[arch]().eval()
    batch = {k: v for k, v in _batch(2).items() if k != "labels"}
    with torch.no_grad():
        stock = model(**batch).logits
    layer, seen = _last_layer(model), []
    handle = layer.register_forward_hook(lambda m, a, out: seen.append(tuple(out.shape)))
    with torch.no_grad(), first_token_in_eval(model) as applied:
        fast = model(**batch).logits
    assert applied and seen == [(4, 1, HIDDEN)]
    torch.testing.assert_close(fast, stock, atol=ATOL, rtol=RTOL)
    assert "forward" not in vars(layer)  # left as it was: the stock forward, all positions
    with torch.no_grad():
        model(**batch)
    assert seen[-1] == (4, batch["input_ids"].shape[1], HIDDEN)
    handle.remove()
    assert use_first_token_last_layer(model)  # patched for training: stays patched, and stock in evaluation
    with first_token_in_eval(model):
        pass
    assert "forward" in vars(layer) and not hasattr(layer, "_hftl_first_token_in_eval")


def test_first_token_in_eval_leaves_other_models_alone():
    from transformers import BertConfig, BertForTokenClassification

    from hftl.speed.first_token_last_layer import first_token_in_eval

    model = BertForTokenClassification(BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                                  num_attention_heads=HEADS, intermediate_size=FFN)).eval()
    with first_token_in_eval(model) as applied:
        assert not applied
