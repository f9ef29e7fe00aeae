"""Tiny chat tokenizers and models of two template families, built here (no downloads), and small chat data.

* ChatML (SmolLM2, Qwen): `<|im_start|>role\\ncontent<|im_end|>\\n`; EOS is `<|im_end|>` and so is pad (the
  trap that masks EOS in other tools); no BOS. A second copy of the template marks replies with
  `{% generation %}` tags.
* Llama-3: `<|begin_of_text|>` written by the template AND added by the tokenizer (the double-BOS trap);
  end of turn `<|eot_id|>` differs from EOS `<|end_of_text|>` (the Qwen/Llama trap).
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import corpus

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CHATML_TAGS = ("{% for message in messages %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
               "{% generation %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endgeneration %}{% else %}"
               "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endif %}"
               "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


def _bpe(special: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    words = corpus() + ["user assistant system you are a helpful bot hello answer positive negative"] * 5
    tok.train_from_iterator(words, trainers.BpeTrainer(vocab_size=320, special_tokens=special,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def build_tokenizer(family: str, tags: bool = False):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    if family == "chatml":
        tok = _bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                            bos_token="<|im_start|>", unk_token="<|endoftext|>", model_max_length=128)
        tokenizer.chat_template = CHATML_TAGS if tags else CHATML
        return tokenizer
    tok = _bpe(["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                                        model_max_length=128)
    tokenizer.chat_template = LLAMA3
    return tokenizer


def build_model_dir(out: Path, family: str) -> Path:
    """A tiny causal LM with the family's tokenizer: GPT-2 for ChatML, Llama for Llama-3 (no dropout)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(family)
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    if family == "chatml":
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                            eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        GPT2LMHeadModel(config).save_pretrained(out)
    else:
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        LlamaForCausalLM(config).save_pretrained(out)
    return out


QUESTIONS = [("is the film great", "positive"), ("was it boring", "negative"), ("a lovely story", "positive"),
             ("the plot was dreadful", "negative"), ("it felt wonderful", "positive"), ("quite tedious acting", "negative")]


def chat_rows(n: int, offset: int = 0) -> list[dict]:
    rows = []
    for i in range(n):
        question, answer = QUESTIONS[(i + offset) % len(QUESTIONS)]
        rows.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
