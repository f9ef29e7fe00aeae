"""Causal-LM and masked-LM recipes on tiny fixture models, the masked-LM -> classification chain, and bad input."""

import json

import pytest
import torch

from hftl import CausalLMRecipe, MaskedLMRecipe, TextClassificationRecipe
from hftl.errors import ConfigError, DataError
from hftl.inference import load
from hftl.runner import run_recipe
from conftest import make_sentences, write_tsv, with_changes


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def lm_data(tmp_path):
    """train as a plain .txt file (one document per line, blank lines between some), held-out text as TSVs."""
    train = [s for s, _ in make_sentences(300, seed=11)]
    lines = [s if i % 10 else s + "\n" for i, s in enumerate(train)]  # blank lines are skipped, not errors
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {
        "train": tmp_path / "train.txt",
        "validation": write_tsv(tmp_path / "dev.tsv", make_sentences(40, seed=12)),
        "test": write_tsv(tmp_path / "test.tsv", make_sentences(40, seed=13)),
    }


@pytest.fixture
def lm_config(tmp_path, tiny_gpt2_dir, tiny_bert_dir, lm_data):
    """make(task, **{"section.key": value}) -> config dict for causal-lm (tiny GPT-2) or masked-lm (tiny BERT)."""

    def make(task="causal-lm", **changes):
        config = {
            "task": task,
            "model": {"name_or_path": str(tiny_gpt2_dir if task == "causal-lm" else tiny_bert_dir), "strategy": "full"},
            # .txt files have one column, 'text'; the held-out TSVs name theirs 'sentence': give them as .txt too
            "data": {"train": str(lm_data["train"]), "validation": str(_as_txt(lm_data["validation"])),
                     "test": str(_as_txt(lm_data["test"])), "block_size": 32},
            "training": {"output_dir": str(tmp_path / f"run-{task}"), "num_train_epochs": 4, "learning_rate": 5e-3,
                         "per_device_train_batch_size": 8, "seed": 42, "logging_steps": 10},
            "speed": {"bf16": False},
        }
        return with_changes(config, changes)

    return make


def _as_txt(tsv):
    txt = tsv.with_suffix(".txt")
    lines = tsv.read_text(encoding="utf-8").splitlines()[1:]
    txt.write_text("\n".join(line.split("\t")[0] for line in lines) + "\n", encoding="utf-8")
    return txt


def _logits(model, tokenizer, texts=("the film was great", "it felt really boring")):
    batch = tokenizer(list(texts), return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


# -- causal LM ------------------------------------------------------------------------------------
def test_causal_lm_full_halves_perplexity(lm_config):
    result = run_recipe(CausalLMRecipe(lm_config()))
    before = result.metrics["before_training"]["test"]["perplexity"]
    after = result.metrics["test"]["perplexity"]
    assert after * 2 <= before, (before, after)
    assert result.metrics["test"]["loss"] == pytest.approx(torch.tensor(after).log().item(), rel=1e-4)
    train = result.metrics["train"]
    assert train["trainable_params"] == train["total_params"]
    run_dir = result.run_dir
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["test"]["perplexity"] == pytest.approx(after)
    assert (run_dir / "model.safetensors").is_file() and not (run_dir / "merged").exists()
    # the saved run reloads and scores the same data the same way
    assert load(run_dir).evaluate()["perplexity"] == pytest.approx(after, rel=1e-4)


def test_causal_lm_lora_merged_equals_adapter(lm_config, tiny_gpt2_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = lm_config(**{"model.strategy": "lora", "model.lora": {"r": 8, "alpha": 16, "dropout": 0.0},
                          "training.learning_rate": 2e-2})
    result = run_recipe(CausalLMRecipe(config))
    train = result.metrics["train"]
    assert 0 < train["trainable_params"] < 0.2 * train["total_params"]
    assert result.metrics["test"]["perplexity"] < result.metrics["before_training"]["test"]["perplexity"]
    run_dir = result.run_dir
    assert (run_dir / "adapter_config.json").is_file()
    assert json.loads((run_dir / "adapter_config.json").read_text())["target_modules"] == ["c_attn"]
    assert (run_dir / "merged" / "model.safetensors").is_file() and (run_dir / "merged" / "tokenizer.json").is_file()

    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    tokenizer.pad_token = tokenizer.eos_token
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir), run_dir).eval()
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "merged").eval()
    torch.testing.assert_close(_logits(adapter, tokenizer), _logits(merged, tokenizer), atol=1e-5, rtol=1e-4)
    # hftl.load uses the merged folder: no base checkpoint (or GGUF file) needed
    loaded = load(run_dir)
    torch.testing.assert_close(_logits(loaded.model, loaded.processor), _logits(merged, tokenizer), atol=1e-5, rtol=1e-4)


def test_causal_lm_freeze_trains_head_and_top_block(lm_config):
    result = run_recipe(CausalLMRecipe(lm_config(**{"model.strategy": "freeze", "model.trainable_layers": 1})))
    model = result.trainer.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # GPT-2's LM head is tied to the token embeddings: training the head trains them (one shared matrix)
    assert "transformer.wte.weight" in trainable or "lm_head.weight" in trainable
    assert any(n.startswith("transformer.h.1.") for n in trainable)
    assert not any(n.startswith(("transformer.h.0.", "transformer.wpe")) for n in trainable)
    assert result.metrics["test"]["perplexity"] < result.metrics["before_training"]["test"]["perplexity"]


def test_generate_greedy_and_seeded_sampling(lm_config, capsys):
    from hftl.cli import main
    from hftl.generation import generate

    result = run_recipe(CausalLMRecipe(lm_config(**{"data.baseline": False, "training.num_train_epochs": 2})))
    assert "before_training" not in result.metrics
    loaded = load(result.run_dir)
    prompt = "the film was"
    greedy = generate(loaded.model, loaded.processor, prompt, max_new_tokens=8)
    assert greedy == generate(loaded.model, loaded.processor, prompt, max_new_tokens=8)
    sampled = [generate(loaded.model, loaded.processor, prompt, max_new_tokens=8, sample=True, seed=s) for s in (1, 1, 2, 3)]
    assert sampled[0] == sampled[1] and any(text.strip() for text in sampled)
    capsys.readouterr()  # drop the training logs
    assert main(["generate", str(result.run_dir), "--prompt", prompt, "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.strip() == (prompt + greedy).strip()
    assert main(["generate", str(result.run_dir), "--prompt", "x", "--max-new-tokens", "0"]) == 2


# -- masked LM and the chain ----------------------------------------------------------------------
def test_masked_lm_adapts_and_chains_into_classification(lm_config, text_config, tiny_bert_dir, tmp_path):
    result = run_recipe(MaskedLMRecipe(lm_config("masked-lm", **{"training.num_train_epochs": 6})))
    before = result.metrics["before_training"]["test"]
    after = result.metrics["test"]
    assert after["loss"] < 0.8 * before["loss"], (before, after)
    assert after["pseudo_perplexity"] == pytest.approx(torch.tensor(after["loss"]).exp().item(), rel=1e-4)
    mlm_dir = result.run_dir
    # a plain transformers checkpoint: config.json + safetensors + tokenizer
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (mlm_dir / name).is_file(), name

    # The chain: the masked-LM run folder is the classification model; same budget from the original checkpoint.
    runs = {}
    for name, model_dir in (("adapted", mlm_dir), ("original", tiny_bert_dir)):
        config = text_config(model_dir=model_dir, **{"training.output_dir": str(tmp_path / f"cls-{name}")})
        runs[name] = run_recipe(TextClassificationRecipe(config))
    assert {"accuracy", "f1"} <= set(runs["adapted"].metrics["test"]) and {"accuracy", "f1"} <= set(runs["original"].metrics["test"])
    assert runs["adapted"].metrics["test"]["accuracy"] >= 0.5  # the adapted encoder is a working starting point
    # the classifier is new; the encoder weights are the adapted ones, not the original ones
    adapted_cls = load(runs["adapted"].run_dir).model
    from transformers import AutoModelForMaskedLM

    mlm = AutoModelForMaskedLM.from_pretrained(mlm_dir)
    original = AutoModelForMaskedLM.from_pretrained(tiny_bert_dir)
    emb = "embeddings.word_embeddings.weight"
    assert not torch.equal(mlm.bert.get_parameter(emb), original.bert.get_parameter(emb))
    assert adapted_cls.config.num_labels == 2


def test_masked_lm_lora_saves_merged_checkpoint_usable_for_classification(lm_config, text_config, tmp_path):
    config = lm_config("masked-lm", **{"model.strategy": "lora", "data.whole_word_masking": True,
                                       "training.num_train_epochs": 1})
    result = run_recipe(MaskedLMRecipe(config))
    merged = result.run_dir / "merged"
    assert (merged / "config.json").is_file() and (merged / "model.safetensors").is_file()
    assert not (merged / "adapter_config.json").exists()
    loaded = load(result.run_dir)
    assert loaded.evaluate()["pseudo_perplexity"] == pytest.approx(result.metrics["test"]["pseudo_perplexity"], rel=0.05)
    fills = loaded.predict(["the film was [MASK]"])
    assert len(fills[0]["masks"]) == 1 and len(fills[0]["masks"][0]) == 5
    cls = run_recipe(TextClassificationRecipe(text_config(model_dir=merged, **{"training.num_train_epochs": 1})))
    assert "accuracy" in cls.metrics["test"]


def test_masked_lm_eval_masks_are_fixed(lm_config, tiny_bert_dir):
    recipe = MaskedLMRecipe(lm_config("masked-lm"))
    raw = recipe.load_data()
    tokenizer = recipe.load_processor()
    first = recipe.preprocess(raw, tokenizer)["test"]
    second = recipe.preprocess(raw, tokenizer)["test"]
    assert first["labels"] == second["labels"] and first["input_ids"] == second["input_ids"]
    labels = torch.tensor(first["labels"])
    share = (labels != -100).float().mean().item()
    assert 0.05 < share < 0.3  # about mlm_probability of the non-special tokens


# -- bad input ------------------------------------------------------------------------------------
def _problems(config) -> str:
    from hftl import load_config

    with pytest.raises(ConfigError) as err:
        load_config(config)
    return str(err.value)


def test_empty_text_file_is_reported(lm_config, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert "is empty" in _problems(lm_config(**{"data.train": str(empty)}))


def test_blank_lines_only_is_reported(lm_config, tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no text|no rows"):
        run_recipe(CausalLMRecipe(lm_config(**{"data.train": str(blank)})))


def test_text_shorter_than_one_block_is_reported(lm_config, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("the film\nwas great\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"fewer than one block of data.block_size=32.*lower data.block_size"):
        run_recipe(CausalLMRecipe(lm_config(**{"data.validation": str(short)})))


def test_missing_text_column_is_reported(lm_config, lm_data):
    message = _problems(lm_config(**{"data.validation": str(lm_data["validation"]), "data.text_column": "sentense"}))
    assert "no text_column column 'sentense'" in message and "Did you mean 'sentence'?" in message


def test_non_text_column_is_reported(lm_config, tmp_path):
    numbers = write_tsv(tmp_path / "numbers.tsv", [(s, i % 2) for i, (s, _) in enumerate(make_sentences(40, seed=5))])
    config = lm_config(**{"data.train": str(numbers), "data.validation": str(numbers), "data.test": None,
                          "data.text_column": "label"})
    with pytest.raises(DataError, match="column 'label' holds .* not text"):
        run_recipe(CausalLMRecipe(config))


def test_tokenizer_without_mask_token_is_reported(lm_config, tiny_bert_dir, tmp_path):
    import shutil

    no_mask = shutil.copytree(tiny_bert_dir, tmp_path / "bert-no-mask")
    tokenizer_config = json.loads((no_mask / "tokenizer_config.json").read_text())
    tokenizer_config.pop("mask_token", None)
    (no_mask / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    message = _problems(lm_config("masked-lm", **{"model.name_or_path": str(no_mask)}))
    assert "has no mask token" in message and "causal-lm" in message


def test_decoder_for_masked_lm_is_reported(lm_config, tiny_gpt2_dir):
    message = _problems(lm_config("masked-lm", **{"model.name_or_path": str(tiny_gpt2_dir)}))
    assert "'gpt2' checkpoint" in message and "AutoModelForMaskedLM" in message


def test_block_size_over_model_limit_is_reported(lm_config):
    assert "exceeds the model's limit of 64" in _problems(lm_config(**{"data.block_size": 128}))


def test_bad_mlm_probability_is_reported(lm_config):
    assert "mlm_probability: must be between 0 and 1" in _problems(lm_config("masked-lm", **{"data.mlm_probability": 1.5}))
