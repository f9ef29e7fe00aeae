"""Pairs from a model's own replies that do not end (`hftl.tasks.own_reply_pairs`), and the loop stop that makes them
cheap (`hftl.chat.loop_stop`): a reply is ended at the first token where the `is_looping` rule holds, with the plain
greedy tokens up to there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chat_fixtures import QUESTIONS, build_model_dir, chat_rows, write_jsonl
from hftl.chat import is_looping, numbers_masked, reply, stop_token_ids
from hftl.data.conversations import Conversation, read_pairs
from test_instruction_tuning import _penalised_greedy

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def _untrained(tmp_path, family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_model_dir(tmp_path / family, family)
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("family", ["chatml", "llama3"])
def test_loop_stop_ends_each_reply_at_the_first_token_where_it_repeats_itself(tmp_path, family):
    """Against greedy decoding written out (one prompt at a time, no stop rule) and the loop rule applied to every
    prefix of it: the early reply is the greedy reply cut at the first looping prefix; replies that never loop are
    the plain ones."""
    from hftl.tasks.instruction_tuning import generate_batch

    model, tokenizer = _untrained(tmp_path, family)
    prompts = [[{"role": "user", "content": question}] for question, _ in QUESTIONS]
    stops, limit = stop_token_ids(tokenizer), 96
    early = generate_batch(model, tokenizer, prompts, limit, stop_loops=True)
    looped = 0
    for prompt, got in zip(prompts, early):
        tokens = _penalised_greedy(model, tokenizer, prompt, 1.0, limit)
        first = next((n for n in range(1, len(tokens) + 1) if is_looping(numbers_masked(tokenizer, tokens[:n]))), None)
        expected = reply(tokenizer, tokens[:first] if first else tokens, stops)
        assert got == expected
        if first:
            looped += 1
            assert got["end"] == "repeating" and got["new_tokens"] == first < limit
    assert looped >= 1  # the untrained models fall into loops: the case is exercised
    # without the option, every reply runs to the limit
    assert [r["new_tokens"] for r in generate_batch(model, tokenizer, prompts, limit)] == [limit] * len(prompts)


def test_loop_stop_sees_loops_under_rising_counters_and_leaves_stopped_rows_alone():
    """The criterion fed token by token, three rows beside a prompt of 3: a numbered list repeating its item (a loop
    only with numbers masked), a list whose items differ (never a loop) and a loop after a stop token (padding:
    left alone). It stops the first row exactly where the rule, applied to each prefix, first holds."""
    import torch

    from chat_fixtures import build_tokenizer
    from hftl.chat import loop_stop

    tokenizer = build_tokenizer("chatml")
    stops = stop_token_ids(tokenizer)
    words = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    counting = words("".join(f"{n}. the cat sat on a mat\n" for n in range(7, 40)))
    listing = words("".join(f"{n}. {w}\n" for n, w in enumerate("the cat sat on a mat with my dog".split())))
    stopped = words("the cat") + [stops[0]] + [11, 12, 13] * 40
    width = min(map(len, (counting, listing, stopped)))
    rows = [counting[:width], listing[:width], stopped[:width]]
    criterion = loop_stop(tokenizer, 3, stops)
    done_at = {}
    for n in range(1, width + 1):
        done = criterion(torch.tensor([[0, 0, 0] + row[:n] for row in rows]), None)
        for row in torch.nonzero(done).flatten().tolist():
            done_at.setdefault(row, n)
    first = next(n for n in range(1, width + 1) if is_looping(numbers_masked(tokenizer, counting[:n])))
    assert done_at == {0: first} and criterion.looped == {0: first}
    assert not is_looping(numbers_masked(tokenizer, counting[:first - 1]))


def test_pairs_reject_the_replies_that_do_not_end_and_choose_the_reference(tmp_path, monkeypatch):
    from hftl.tasks import own_reply_pairs as module
    from hftl.tasks import instruction_tuning

    from chat_fixtures import build_tokenizer

    conversations = [Conversation([{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                  [False, True], where=f"data.jsonl: line {i + 1}")
                     for i, (q, a) in enumerate(QUESTIONS[:5] + [("tell a long story", "and then " * 20)])]
    canned = [{"text": "loop loop", "stopped": False, "end": "repeating", "new_tokens": 40},
              {"text": "fine", "stopped": True, "end": "stopped", "new_tokens": 2},
              {"text": "on and on", "stopped": False, "end": "cut", "new_tokens": 96},
              {"text": "", "stopped": False, "end": "cut", "new_tokens": 96},  # nothing to reject
              {"text": QUESTIONS[4][1], "stopped": False, "end": "cut", "new_tokens": 96}]  # the reference itself
    asked = {}

    def fake_generate_batch(model, tokenizer, prompts, max_new_tokens, batch_size, stop_loops=False):
        asked.update(prompts=prompts, max_new_tokens=max_new_tokens, stop_loops=stop_loops)
        return canned

    monkeypatch.setattr(instruction_tuning, "generate_batch", fake_generate_batch)
    # 29-33 tokens each with the ChatML template; the long story, far over 40, is skipped
    pairs, ends = module.own_reply_pairs(None, build_tokenizer("chatml"), conversations, 96, max_length=40)
    assert asked == {"prompts": [[{"role": "user", "content": q}] for q, _ in QUESTIONS[:5]], "max_new_tokens": 96,
                     "stop_loops": True}
    assert ends == {"too_long": 1, "repeating": 1, "stopped": 1, "cut": 3}
    answer = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    assert pairs == [
        {"prompt": [{"role": "user", "content": QUESTIONS[0][0]}], "chosen": answer("positive"),
         "rejected": answer("loop loop"), "end": "repeating", "source": "data.jsonl: line 1"},
        {"prompt": [{"role": "user", "content": QUESTIONS[2][0]}], "chosen": answer("positive"),
         "rejected": answer("on and on"), "end": "cut", "source": "data.jsonl: line 3"}]


def test_script_writes_pairs_that_preference_tuning_reads(tmp_path):
    """recipes/data/own_reply_pairs.py on a finished run (an untrained model tuned for two steps: it loops), rows
    after --skip; the file it writes reads as preference pairs, and it is never overwritten. A preference run
    tuned on them gives a second round's pairs, with --max-new-tokens (it has no generation settings)."""
    import yaml

    from hftl.cli import main
    from hftl.tasks.preference_tuning import PreferenceData

    model = build_model_dir(tmp_path / "model", "chatml")
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(12))
    config = {"task": "instruction-tuning", "model": {"name_or_path": str(model), "strategy": "full"},
              "data": {"train": str(data), "test": str(data), "validation_fraction": 0.25, "max_length": 64,
                       "generation_max_new_tokens": 48, "generation_samples": 2, "baseline": False},
              "training": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "per_device_train_batch_size": 4,
                           "eval_strategy": "no", "save_strategy": "no", "seed": 1},
              "speed": {"bf16": False}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "config.yaml")]) == 0
    out = tmp_path / "pairs" / "train.jsonl"
    command = [sys.executable, str(ROOT / "recipes" / "data" / "own_reply_pairs.py"), str(tmp_path / "run"),
               "--data", str(data), "--skip", "6", "--limit", "4", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and "4 prompts" in done.stdout and "4 pairs written" in done.stdout
    assert [r["source"] for r in rows] == [f"{data}: line {n}" for n in (7, 8, 9, 10)]
    assert [r["chosen"][0]["content"] for r in rows] == [row["messages"][1]["content"] for row in chat_rows(12)[6:10]]
    pairs = read_pairs(str(out), PreferenceData(train=str(out)), "train")
    assert [p.prompt for p in pairs] == [r["prompt"] for r in rows]
    again = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 2 and "nothing is overwritten" in again.stderr
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows

    # a second round: the pairs tune a preference run, whose own replies give the next pairs
    config.update(task="preference-tuning",
                  data={"train": str(out), "validation": str(out), "max_length": 128, "baseline": False})
    config["training"]["output_dir"] = str(tmp_path / "dpo")
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "dpo.yaml")]) == 0
    second = [sys.executable, str(ROOT / "recipes" / "data" / "own_reply_pairs.py"), str(tmp_path / "dpo"),
              "--data", str(data), "--skip", "10", "--limit", "2"]
    refused = subprocess.run(second + ["--out", str(tmp_path / "pairs" / "second.jsonl")], capture_output=True,
                             text=True, cwd=tmp_path)
    assert refused.returncode == 2 and "give --max-new-tokens" in refused.stderr
    done = subprocess.run(second + ["--max-new-tokens", "24", "--out", str(tmp_path / "pairs" / "second.jsonl")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "pairs" / "second.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rows] == [f"{data}: line {n}" for n in (11, 12)]
    assert [r["chosen"][0]["content"] for r in rows] == [row["messages"][1]["content"] for row in chat_rows(12)[10:]]
