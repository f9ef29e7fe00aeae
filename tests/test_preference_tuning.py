"""Preference tuning (DPO through TRL): bad pairs reported at once, TRL's tokens are hftl's rendering, the LoRA
reference is the base with the adapter disabled (no second copy), and a tiny run moves the preferences."""

from __future__ import annotations

import json

import pytest

from chat_fixtures import QUESTIONS, build_model_dir, write_jsonl
from hftl.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")
OPPOSITE = {"positive": "negative", "negative": "positive"}


def pair_rows(n: int, offset: int = 0) -> list[dict]:
    rows = []
    for i in range(n):
        question, answer = QUESTIONS[(i + offset) % len(QUESTIONS)]
        rows.append({"prompt": [{"role": "user", "content": question}],
                     "chosen": [{"role": "assistant", "content": answer}],
                     "rejected": [{"role": "assistant", "content": OPPOSITE[answer]}]})
    return rows


def test_bad_pairs_are_reported_all_at_once(tmp_path):
    from hftl.data.conversations import read_pairs
    from hftl.tasks.preference_tuning import PreferenceData

    rows = pair_rows(2)
    rows.append({**rows[0], "chosen": [{"role": "assistant", "content": ""}]})  # line 3
    rows.append({**rows[0], "prompt": [{"role": "assistant", "content": "hi"}]})  # line 4
    rows.append({**rows[0], "rejected": [{"role": "user", "content": "hi"}]})  # line 5
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(DataError) as err:
        read_pairs(str(path), PreferenceData(train=str(path)), "train")
    message = str(err.value)
    for line, words in ((3, "empty assistant turn"), (4, "turns out of order"), (5, "turns out of order")):
        assert f"pairs.jsonl: line {line}: " in message and words in message
    assert "line 1:" not in message and "line 2:" not in message


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo")
    model = build_model_dir(root / "model", "chatml")
    data = {name: write_jsonl(root / f"{name}.jsonl", pair_rows(n, offset))
            for name, n, offset in (("train", 32, 0), ("validation", 6, 1), ("test", 12, 2))}
    return root, model, data


def config(tiny, strategy: str, name: str, **training) -> dict:
    root, model, data = tiny
    return {"task": "preference-tuning",
            "model": {"name_or_path": str(model), "strategy": strategy, "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
            "data": {"train": str(data["train"]), "validation": str(data["validation"]), "test": str(data["test"]),
                     "max_length": 64, "beta": 0.5},
            "training": {"output_dir": str(root / name), "max_steps": 16, "learning_rate": 1e-2,
                         "per_device_train_batch_size": 8, "logging_steps": 4, "eval_strategy": "no",
                         "save_strategy": "no", "seed": 3, **training},
            "speed": {"bf16": False}}


def test_trl_tokens_are_hftl_rendering_and_lora_reference_is_the_adapter_disabled(tiny):
    """TRL tokenises the pairs itself: its prompt + reply tokens equal hftl.chat's for every pair, and with LoRA
    there is no reference copy (no ref model, no 'ref' adapter): TRL then disables the adapter."""
    from hftl.runner import run_recipe  # noqa: F401  (the run path the CLI takes)
    from hftl.strategies import apply_strategy
    from hftl.tasks.preference_tuning import PreferenceTuningRecipe, check_same_tokens
    from hftl.trainer import build_trainer

    recipe = PreferenceTuningRecipe(config(tiny, "lora", "check"))
    data = recipe.load_data()
    tokenizer = recipe.load_processor()
    model, new = recipe.load_model(tokenizer)
    model = apply_strategy(model, recipe.config.model, recipe.head_module_names(model, new), recipe.peft_task_type)
    datasets = recipe.preprocess(data, tokenizer)
    trainer = build_trainer(recipe, model, datasets, tokenizer, recipe.training_arguments())
    check_same_tokens(datasets["train"].encoded, trainer.train_dataset, "train", count=len(datasets["train"]))
    assert trainer.ref_model is None and list(trainer.model.peft_config) == ["default"]
    assert "reply" not in tokenizer.decode(datasets["train"].encoded[0].chosen)
    assert tokenizer.decode(datasets["train"].encoded[0].chosen) == "positive<|im_end|>\n"


@pytest.mark.parametrize("strategy, loss_type", [("lora", "sigmoid"), ("full", "sigmoid"), ("lora", "sigmoid_norm")])
def test_tiny_dpo_run_moves_preferences_towards_chosen(tiny, strategy, loss_type):
    import yaml

    from hftl.cli import main

    root = tiny[0]
    name = f"run-{strategy}-{loss_type}"
    settings = config(tiny, strategy, name)
    settings["data"]["loss_type"] = loss_type
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(settings))
    assert main(["train", str(path)]) == 0
    metrics = json.loads((root / name / "metrics.json").read_text())
    before, after = metrics["before_training"]["test"], metrics["test"]
    assert after["reward_accuracy"] >= 0.75 and after["reward_margin"] > 0
    assert after["preference_accuracy"] > before["preference_accuracy"]
    assert before["length_baseline"] == after["length_baseline"]
    assert "reward_accuracy" not in before  # zero margin by definition before training
    # the flips, counted pair by pair against the reference, account for the change of the two evaluations' accuracy
    flips = after["ranking_flipped_right"] - after["ranking_flipped_wrong"]
    assert flips / after["pairs"] == pytest.approx(after["preference_accuracy"] - before["preference_accuracy"])
    assert after["ranking_flipped_right"] > 0
    card = (root / name / "README.md").read_text()
    assert "Preference tuning (DPO)" in card and "reward margin" in card and "ranking flipped right" in card
    from hftl.tasks.preference_tuning import PreferenceTuningRecipe

    unsaved = config(tiny, strategy, f"{name}-args")  # the same settings, a fresh folder: the loss TRL is given
    unsaved["data"]["loss_type"] = loss_type
    assert PreferenceTuningRecipe(unsaved).training_arguments().loss_type == [loss_type]


def test_ranking_shift_counts_flips_against_the_reference_gap():
    from hftl.tasks.preference_tuning import ranking_shift

    # (summed log-prob, tokens): pairs 0-2 chosen, then 0-2 rejected. Per-token gaps, chosen minus rejected:
    # reference  0: -4/2 - -3/3 = -1.0 (wrong)   1: -2/2 - -6/3 = 1.0 (right)   2: -6/3 - -4/4 = -1.0 (wrong)
    # policy     0: -2/2 - -4/4 =  0.0 (wrong)   1: -4/2 - -3/3 = -1.0 (flipped wrong)   2: -3/3 - -8/4 = 1.0 (flipped right)
    reference = [(-4.0, 2), (-2.0, 2), (-6.0, 3), (-3.0, 3), (-6.0, 3), (-4.0, 4)]
    policy = [(-2.0, 2), (-4.0, 2), (-3.0, 3), (-4.0, 4), (-3.0, 3), (-8.0, 4)]
    shift = ranking_shift(policy, reference)
    assert shift == {"ranking_flipped_right": 1, "ranking_flipped_wrong": 1, "ranking_gap_shift": 1.0,
                     "reference_wrong_gap": 1.0}


def test_validate_show_example_marks_both_replies(tiny, capsys):
    import yaml

    from hftl.cli import main

    root = tiny[0]
    path = root / "show.yaml"
    path.write_text(yaml.safe_dump(config(tiny, "lora", "show")))
    assert main(["validate", str(path), "--show-example", "1"]) == 0
    out = capsys.readouterr().out
    assert "<|im_start|>assistant\n[[negative<|im_end|>\n]]" in out and "[[positive<|im_end|>\n]]" in out
    assert out.count("end of turn scored: yes") == 2 and "0 of 32 pairs exceed max_length=64" in out


def test_misnamed_columns_and_template_are_reported_together(tiny, capsys):
    import yaml

    from hftl.cli import main

    root = tiny[0]
    settings = config(tiny, "lora", "misnamed")
    settings["data"].update({"chosen_column": "chosn", "chat_template": str(root / "missing.jinja")})
    path = root / "misnamed.yaml"
    path.write_text(yaml.safe_dump(settings))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    for split in ("train", "validation", "test"):
        assert f"data.{split}: " in err and "no chosen_column column 'chosn'. Did you mean 'chosen'?" in err
    assert "data.chat_template: " in err and "missing.jinja is not a file" in err


def test_training_batches_pairs_of_similar_length(tiny, tmp_path):
    """With `speed.group_by_length` (the default) DPO's pairs are batched by length, as every other task's
    examples. Half the pairs are short, half long (12-word replies): Trainer's length-grouped sampler sorts each
    mega-batch of 48 pairs (for 192 pairs in batches of 4), so at most one batch per mega-batch mixes the two;
    random batches (what DPO had, for want of an `input_ids` column to group by) mix in ~7 of 8 batches."""
    from hftl.strategies import apply_strategy
    from hftl.tasks.preference_tuning import PreferenceTuningRecipe
    from hftl.trainer import build_trainer

    rows = []
    for i in range(192):
        words = 1 if i % 2 else 12
        rows.append({"prompt": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)][0]}],
                     "chosen": [{"role": "assistant", "content": " ".join(["positive"] * words)}],
                     "rejected": [{"role": "assistant", "content": " ".join(["negative"] * words)}]})
    settings = config(tiny, "lora", "grouped", per_device_train_batch_size=4)
    settings["data"].update(train=str(write_jsonl(tmp_path / "train.jsonl", rows)), max_length=512)
    recipe = PreferenceTuningRecipe(settings)
    tokenizer = recipe.load_processor()
    model, new = recipe.load_model(tokenizer)
    model = apply_strategy(model, recipe.config.model, recipe.head_module_names(model, new), recipe.peft_task_type)
    datasets = recipe.preprocess(recipe.load_data(), tokenizer)
    trainer = build_trainer(recipe, model, datasets, tokenizer, recipe.training_arguments())

    short = max(len(e.prompt) + len(e.chosen) for e in datasets["train"].encoded if len(e.chosen) < 20)
    mixed = 0
    for batch in trainer.get_train_dataloader():
        rows_in_batch = batch["attention_mask"].sum(1).view(2, -1).amax(0)  # chosen rows, then rejected rows
        mixed += len({int(n) > short for n in rows_in_batch}) > 1
    assert len(trainer.train_dataset) == 192 and mixed <= 4


def test_activation_checkpointing_is_on_by_default_and_changes_no_weight(tiny):
    """DPO checkpoints activations by default (TRL's DPOConfig default; on a CPU it was also faster,
    docs/benchmarks.md), a user's `gradient_checkpointing: false` (the old name) still turns it off, and it
    changes nothing but memory and time: LoRA weights after 16 steps equal those of a run without it."""
    import torch
    import yaml
    from safetensors.torch import load_file

    from hftl.cli import main
    from hftl.tasks.preference_tuning import PreferenceTuningRecipe

    root = tiny[0]
    assert PreferenceTuningRecipe(config(tiny, "lora", "x")).training_arguments().activation_checkpointing is True
    off = config(tiny, "lora", "x", gradient_checkpointing=False)
    assert PreferenceTuningRecipe(off).training_arguments().activation_checkpointing is False
    weights = {}
    for name, checkpointing in (("gc-on", True), ("gc-off", False)):
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config(tiny, "lora", name, activation_checkpointing=checkpointing)))
        assert main(["train", str(path)]) == 0
        weights[name] = load_file(str(root / name / "adapter_model.safetensors"))
    # the adapter trained (LoRA's B starts at zero), so equal weights mean equal gradients
    assert any(float(w.abs().max()) > 1e-3 for k, w in weights["gc-on"].items() if "lora_B" in k)
    for key, value in weights["gc-on"].items():
        torch.testing.assert_close(value, weights["gc-off"][key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("per_token, expected", [(False, [0.5 * (2.0 - -1.0), 0.5 * (0.0 - 3.0)]),
                                                  (True, [0.5 * (2.0 / 2 - -1.0 / 4), 0.5 * (0.0 / 3 - 3.0 / 3)])])
def test_reward_margins_are_per_token_for_the_length_normalised_losses(per_token, expected):
    """sigmoid_norm and IPO train log-ratios per reply token (TRL divides them by the reply's tokens): their
    reported reward margin must be that quantity, not the summed log-ratio that plain DPO trains."""
    from hftl.tasks.preference_tuning import PER_TOKEN_LOSSES, reward_margins

    # (summed log-prob, tokens): chosen 0-1, then rejected 0-1; log-ratios policy - reference: 2, 0 | -1, 3
    reference = [(-6.0, 2), (-5.0, 3), (-7.0, 4), (-9.0, 3)]
    policy = [(-4.0, 2), (-5.0, 3), (-8.0, 4), (-6.0, 3)]
    assert reward_margins(policy, reference, 0.5, per_token) == pytest.approx(expected)
    assert set(PER_TOKEN_LOSSES) == {"sigmoid_norm", "ipo"}


def float32_reply_logps(model, encoded) -> list[float]:
    """Summed log-probabilities of each pair's chosen then rejected reply, one unpadded sequence at a time."""
    import torch

    out = []
    for which in ("chosen", "rejected"):
        for pair in encoded:
            reply = getattr(pair, which)
            ids = torch.tensor([pair.prompt + reply])
            with torch.no_grad():
                logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            out.append(sum(float(logps[len(pair.prompt) - 1 + k, token]) for k, token in enumerate(reply)))
    return out


def test_figures_after_bf16_training_are_float32_as_before_training(tiny):
    """With bf16 on (the default where the CPU runs it natively), accelerate leaves its autocast on the trained
    model's forward. The test figures after training must be computed in float32, as before training and as a run
    loaded afresh computes them: the reward margin equals an independent float32 computation from the saved merged
    model and the base checkpoint."""
    import yaml
    from transformers import AutoModelForCausalLM

    from hftl.cli import main
    from hftl.tasks.preference_tuning import PreferenceTuningRecipe
    from hftl.trainer import bf16_is_fast

    if not bf16_is_fast():
        pytest.skip("bf16 is off by default on this CPU (no AVX512-BF16 or AMX)")
    root, model_dir, _ = tiny
    settings = config(tiny, "lora", "run-bf16")
    settings["speed"] = {"bf16": "auto"}
    path = root / "bf16.yaml"
    path.write_text(yaml.safe_dump(settings))
    assert main(["train", str(path)]) == 0
    run = root / "run-bf16"
    assert json.loads((run / "manifest.json").read_text())["training"]["bf16"] is True
    after = json.loads((run / "metrics.json").read_text())["test"]

    recipe = PreferenceTuningRecipe(config(tiny, "lora", "encode-only"))  # the same data and tokenizer
    tokenizer = recipe.load_processor()
    encoded = recipe.preprocess(recipe.load_data(), tokenizer)["test"].encoded
    tuned = float32_reply_logps(AutoModelForCausalLM.from_pretrained(run / "merged").eval(), encoded)
    base = float32_reply_logps(AutoModelForCausalLM.from_pretrained(model_dir).eval(), encoded)
    n, beta = len(encoded), settings["data"]["beta"]
    margins = [beta * ((tuned[i] - base[i]) - (tuned[n + i] - base[n + i])) for i in range(n)]
    assert abs(after["reward_margin"]) > 0.05
    assert after["reward_margin"] == pytest.approx(sum(margins) / n, rel=1e-4, abs=1e-5)


def test_sft_weight_adds_trls_sft_loss_and_keeps_the_chosen_replies_likely(tiny):
    """`data.sft_weight` (RPO) adds TRL's 'sft' loss with that weight: trained with it, the chosen test replies are
    more likely (summed log-probability, float32, from each run's merged weights) than after the same run without
    it; a negative weight is refused."""
    import yaml
    from transformers import AutoModelForCausalLM

    from hftl.cli import main
    from hftl.tasks.preference_tuning import PreferenceData, PreferenceTuningRecipe

    root = tiny[0]
    recipe = PreferenceTuningRecipe(config(tiny, "lora", "encode-only"))  # the same data and tokenizer
    encoded = recipe.preprocess(recipe.load_data(), recipe.load_processor())["test"].encoded
    chosen = {}
    for weight in (0.0, 2.0):
        name = f"run-sft-weight-{weight:g}"
        settings = config(tiny, "lora", name)
        settings["data"].update(sft_weight=weight, baseline=False)
        unsaved = config(tiny, "lora", f"{name}-args") | {"data": settings["data"]}  # a fresh folder: the losses
        args = PreferenceTuningRecipe(unsaved).training_arguments()
        expected = (["sigmoid", "sft"], [1.0, 2.0]) if weight else (["sigmoid"], [1.0])
        assert (args.loss_type, args.loss_weights) == expected
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(settings))
        assert main(["train", str(path)]) == 0
        logps = float32_reply_logps(AutoModelForCausalLM.from_pretrained(root / name / "merged").eval(), encoded)
        chosen[weight] = sum(logps[:len(encoded)]) / len(encoded)
    assert chosen[2.0] > chosen[0.0] + 0.1, chosen
    with pytest.raises(ValueError, match=r"sft_weight: must be 0 \(off\) or positive, got -1.0."):
        PreferenceData(train="x.jsonl", sft_weight=-1.0)
