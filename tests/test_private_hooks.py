"""`hftl.speed.private_hooks`: each private API a trick relies on is checked at start-up; where one is gone or
changed, the trick is off with a logged reason and the run gives the stock path's results (issue 23, item 7).

Each test takes one API away as a new transformers / torch release could (a module without the attribute, a method
with other parameters, a class the Trainer no longer tests for) and checks the reason in the log, that the trick
did not run, and that the result equals the stock computation.
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import sys
import types

import pytest
import torch

from hftl import TextClassificationRecipe
from hftl.runner import run_recipe
from hftl.speed import private_hooks
from tests.test_first_token_last_layer import _batch, _bert, _last_layer
from tests.test_language_modeling import lm_config, lm_data  # noqa: F401 (fixtures)


@pytest.fixture(autouse=True)
def fresh_probes():
    """Probes run once per process: forget their results before and after each test."""
    private_hooks.recheck()
    yield
    private_hooks.recheck()


def test_every_hook_holds_on_the_pinned_versions():
    assert private_hooks.check_private_hooks() == {}
    for name, hook in private_hooks.HOOKS.items():
        assert hook.relies_on and hook.used_in and hook.checked_on and hook.trick, name


def test_first_token_shortcut_off_where_it_cannot_tell_whether_hidden_states_are_collected(monkeypatch, caplog):
    from hftl.speed.first_token_last_layer import use_first_token_last_layer

    torch.manual_seed(0)
    stock = _bert().train()
    fast = copy.deepcopy(stock)
    assert use_first_token_last_layer(fast) is True  # patched while the collector was there
    # transformers' own functions keep their module's globals; hftl finds a module without the collector
    monkeypatch.setitem(sys.modules, "transformers.utils.output_capturing", types.ModuleType("stand-in"))
    private_hooks.recheck()
    seen = []
    _last_layer(fast).register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape)))
    batch = _batch(4)
    torch.testing.assert_close(fast(**batch).logits, stock(**batch).logits, atol=1e-5, rtol=1e-4)
    assert seen == [(4, 9, 32)]  # every position: the stock forward, not the shortcut
    with caplog.at_level(logging.WARNING):
        assert use_first_token_last_layer(_bert()) is False  # and a new model is left as it is
    assert "speed.first_token_last_layer: off" in caplog.text and "_active_collector" in caplog.text


def test_cheap_dropout_without_transformers_sdpa_keeps_the_models_attention(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "transformers.integrations.sdpa_attention", types.ModuleType("stand-in"))
    monkeypatch.delitem(sys.modules, "hftl.speed.cheap_dropout", raising=False)
    cheap_dropout = importlib.import_module("hftl.speed.cheap_dropout")  # imports without it
    model = _bert()
    model.config._attn_implementation = "sdpa"
    with caplog.at_level(logging.WARNING):
        assert cheap_dropout.use_cheap_dropout(model) > 0  # the nn.Dropout layers still change
    assert model.config._attn_implementation == "sdpa"
    assert "speed.cheap_dropout in attention" in caplog.text and "sdpa_attention" in caplog.text


def test_sdpa_math_kernel_missing_keeps_the_models_attention(monkeypatch, caplog):
    from hftl.speed.cheap_dropout import use_cheap_dropout

    monkeypatch.delattr(torch, "_scaled_dot_product_attention_math")
    model = _bert()
    model.config._attn_implementation = "sdpa"
    with caplog.at_level(logging.WARNING):
        use_cheap_dropout(model)
    assert model.config._attn_implementation == "sdpa"
    assert "torch has no _scaled_dot_product_attention_math" in caplog.text


@pytest.mark.parametrize("method", ["_save", "_load_from_checkpoint", "evaluation_loop"])
def test_a_changed_trainer_method_leaves_its_override_out(monkeypatch, caplog, method):
    from transformers import Trainer

    from hftl.speed.trainer import trainer_class

    original = getattr(Trainer, method)

    def changed(self, renamed, *args, **kwargs):  # what a new release could look like: another first parameter
        return original(self, renamed, *args, **kwargs)

    monkeypatch.setattr(Trainer, method, changed)
    with caplog.at_level(logging.WARNING):
        hftl_trainer = trainer_class()
    assert method not in vars(hftl_trainer) and "_get_eval_sampler" in vars(hftl_trainer)
    assert f"Trainer.{method} takes" in caplog.text and ": off" in caplog.text


def test_changed_eval_sampler_turns_sorted_evaluation_off_and_the_run_matches_the_stock_one(
        monkeypatch, caplog, text_config, tmp_path):
    from transformers import Trainer

    stock = run_recipe(TextClassificationRecipe(text_config(**{"speed.sort_eval_by_length": False,
                                                               "training.output_dir": str(tmp_path / "stock")})))
    original = Trainer._get_eval_sampler
    monkeypatch.setattr(Trainer, "_get_eval_sampler", lambda self, eval_dataset, shuffle=False: original(
        self, eval_dataset))
    private_hooks.recheck()
    with caplog.at_level(logging.WARNING):
        result = run_recipe(TextClassificationRecipe(text_config(**{"speed.sort_eval_by_length": True})))
    assert "speed.sort_eval_by_length: off" in caplog.text and "Trainer._get_eval_sampler takes" in caplog.text
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["speedups"]["sort_eval_by_length"] is False
    assert "Trainer._get_eval_sampler" in manifest["speedups"]["turned_off"]["eval_sampler"]["reason"]
    for split in ("validation", "test"):
        assert result.metrics[split]["accuracy"] == stock.metrics[split]["accuracy"]
        assert result.metrics[split]["eval_loss" if "eval_loss" in stock.metrics[split] else "loss"] == pytest.approx(
            stock.metrics[split].get("eval_loss", stock.metrics[split].get("loss")), abs=1e-6)


def test_token_budget_off_where_the_trainer_tests_for_another_batch_sampler_class(monkeypatch, caplog, text_config):
    """The Trainer tests `isinstance(sampler, BatchRebalanceSampler)` against its own reference: where the class
    hftl subclasses is not that one, the sampler would reach the DataLoader as a plain sampler."""
    import transformers.trainer  # noqa: F401 (holds its own reference to the class, taken at import)
    import transformers.trainer_pt_utils as trainer_pt_utils

    monkeypatch.setattr(trainer_pt_utils, "BatchRebalanceSampler",
                        type("BatchRebalanceSampler", (torch.utils.data.Sampler,), {}))
    from hftl.speed.samplers import TokenBudgetSampler

    with caplog.at_level(logging.WARNING):
        trainer = run_recipe(TextClassificationRecipe(text_config(**{"speed.token_budget": 256,
                                                                     "training.max_steps": 1}))).trainer
    assert "speed.token_budget: off" in caplog.text  # the probe's batches were not the sampler's
    assert trainer.applied_speedups["token_budget"] is False
    assert not isinstance(trainer._get_train_sampler(), TokenBudgetSampler)


def test_metrics_write_nothing_to_the_users_metrics_cache(monkeypatch, tmp_path):
    import evaluate

    from hftl.metrics import F1

    monkeypatch.setattr(evaluate.config, "HF_METRICS_CACHE", str(tmp_path / "metrics"))
    assert F1().compute(predictions=[0, 1, 1], references=[0, 1, 0])["f1"] == pytest.approx(2 / 3)
    assert not (tmp_path / "metrics").exists()


def test_without_the_trainers_running_loss_the_nan_check_says_it_runs_late(caplog):
    from hftl.callbacks import NonFiniteLossCallback

    callback = NonFiniteLossCallback(types.SimpleNamespace())  # a Trainer without `_tr_loss`
    with caplog.at_level(logging.WARNING):
        callback.on_pre_optimizer_step(None, None, None)
        callback.on_pre_optimizer_step(None, None, None)
    assert caplog.text.count("the Trainer has no _tr_loss") == 1


def test_reused_evaluation_off_without_dataset_fingerprints(monkeypatch, caplog):
    import datasets

    from hftl.speed.trainer import speedup_available

    monkeypatch.setattr(datasets.Dataset, "_fingerprint", None, raising=False)
    monkeypatch.setattr(datasets.Dataset, "from_dict", classmethod(lambda cls, data: types.SimpleNamespace()))
    with caplog.at_level(logging.WARNING):
        assert speedup_available("reuse_final_eval") is False
    assert "speed.reuse_final_eval: off" in caplog.text


def test_bf16_auto_is_off_without_the_cpu_check(monkeypatch, caplog):
    from hftl.trainer import bf16_is_fast

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    with caplog.at_level(logging.WARNING):
        assert bf16_is_fast() is False
    assert "torch.cpu._is_avx512_bf16_supported is missing" in caplog.text


def test_without_accelerates_prepared_flag_a_run_trains_with_no_figures_before_training(
        monkeypatch, caplog, lm_config):
    """Where `Accelerator.prepare_model` no longer works as `forget_evaluation_prepare` assumes, evaluating the
    untrained model first could leave it half prepared for training: the run skips that evaluation, says so, and
    evaluates after training in the precision it trained in."""
    from accelerate import Accelerator

    from hftl.tasks.language_modeling import CausalLMRecipe
    from hftl.trainer import bf16_is_fast

    original = Accelerator.prepare_model

    def prepare_model(self, model, device_placement=None, evaluation_mode=False):
        return original(self, model, device_placement, evaluation_mode)

    monkeypatch.setattr(Accelerator, "prepare_model", prepare_model)
    config = lm_config(**{"training.num_train_epochs": 1})
    del config["speed"]["bf16"]
    with caplog.at_level(logging.WARNING):
        result = run_recipe(CausalLMRecipe(config))
    assert "Accelerator.prepare_model no longer reads _is_accelerate_prepared" in caplog.text
    assert "no figures before training" in caplog.text
    assert "before_training" not in result.metrics and result.metrics["test"]["loss"] > 0
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["training"]["inference_precision"] == ("bfloat16" if bf16_is_fast() else "float32")
