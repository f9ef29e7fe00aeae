"""Shared fixtures: tiny models built here (no downloads), small data written here, an isolated cache.

Fixtures:
    tiny_bert_dir   a 2-layer BERT (hidden 32) with a WordPiece tokenizer trained on the fixture corpus
    tiny_gpt2_dir   a 2-layer GPT-2 (n_embd 32) with a byte-level BPE tokenizer, no pad token (like GPT-2)
    text_data       {"train": path, "validation": path, "test": path} TSVs of a learnable 2-class task
    text_config     a function returning a text-classification config dict over the two above
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

POSITIVE = ["great", "wonderful", "superb", "lovely", "brilliant", "delightful", "excellent", "charming"]
NEGATIVE = ["awful", "terrible", "dreadful", "boring", "horrible", "clumsy", "tedious", "dismal"]
FILLER = ["the", "film", "was", "really", "quite", "plot", "and", "acting", "story", "it", "felt", "very"]


def make_sentences(n: int, seed: int) -> list[tuple[str, str]]:
    """A learnable 2-class task: a sentiment word decides the label, filler words vary the length."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.sample(FILLER, rng.randint(2, 8)) + [rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_tsv(path: Path, rows, header=("sentence", "label")) -> Path:
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows), encoding="utf-8")
    return path


def with_changes(config: dict, changes: dict) -> dict:
    """Apply {'section.key': value} changes to a config dict (the fixtures' keyword-argument convention)."""
    for dotted, value in changes.items():
        section, key = dotted.split("__") if "__" in dotted else dotted.split(".")
        config.setdefault(section, {})[key] = value
    return config


def corpus() -> list[str]:
    return [s for s, _ in make_sentences(400, seed=123)] + [" ".join(POSITIVE + NEGATIVE + FILLER)]


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads; on a busy machine, OpenMP spinning costs many times the work.
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "hf_datasets_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-bert")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(corpus(), trainers.WordPieceTrainer(vocab_size=200, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    tokenizer.save_pretrained(out)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=tok.token_to_id("[PAD]"))
    import torch

    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-gpt2")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                        unk_token="<|endoftext|>", model_max_length=64)
    tokenizer.save_pretrained(out)
    config = GPT2Config(vocab_size=tok.get_vocab_size(), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    import torch

    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(out)
    return out


@pytest.fixture
def text_data(tmp_path) -> dict[str, Path]:
    return {
        "train": write_tsv(tmp_path / "train.tsv", make_sentences(96, seed=1)),
        "validation": write_tsv(tmp_path / "dev.tsv", make_sentences(32, seed=2)),
        "test": write_tsv(tmp_path / "test.tsv", make_sentences(32, seed=3)),
    }


@pytest.fixture
def text_config(tmp_path, tiny_bert_dir, text_data):
    """Returns make(**changes): a text-classification config dict; `changes` are 'section.key' -> value."""

    def make(model_dir=None, **changes):
        config = {
            "task": "text-classification",
            "model": {"name_or_path": str(model_dir or tiny_bert_dir), "strategy": "full"},
            "data": {"train": str(text_data["train"]), "validation": str(text_data["validation"]),
                     "test": str(text_data["test"]), "text_column": "sentence", "label_column": "label",
                     "max_length": 32},
            "training": {"output_dir": str(tmp_path / "run"), "num_train_epochs": 2, "learning_rate": 5e-3,
                         "per_device_train_batch_size": 16, "seed": 42, "logging_steps": 5},
            "speed": {"bf16": False},
        }
        return with_changes(config, changes)

    return make
