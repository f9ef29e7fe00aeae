"""Instruction tuning: masks on two template families, end of turn trained, no double BOS, packing without
contamination, one rendering for training and inference, bad conversations reported at once, and a tiny run
through the CLI (train, validate --show-example, generate with messages, the merged export in a pipeline)."""

from __future__ import annotations

import json

import pytest
import torch

from chat_fixtures import build_model_dir, build_tokenizer, chat_rows, write_jsonl
from hftl.chat import IGNORE, encode, marked_text, prompt_ids, stop_token_ids
from hftl.data.conversations import Conversation
from hftl.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")

MESSAGES = [{"role": "system", "content": "you are a bot"}, {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "positive answer"}, {"role": "user", "content": "was it boring"},
            {"role": "assistant", "content": "negative"}]


def conversation(messages=MESSAGES):
    return Conversation([dict(m) for m in messages], [m["role"] == "assistant" for m in messages], where="test")


def trained_pieces(tokenizer, encoded) -> list[str]:
    """The decoded runs of consecutive trained tokens."""
    pieces, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels):
        if label != IGNORE:
            current.append(token)
        elif current:
            pieces.append(tokenizer.decode(current))
            current = []
    if current:
        pieces.append(tokenizer.decode(current))
    return pieces


@pytest.mark.parametrize("family, end", [("chatml", "<|im_end|>\n"), ("llama3", "<|eot_id|>")])
def test_masks_train_exactly_the_replies_and_their_end_of_turn(family, end):
    tokenizer = build_tokenizer(family)
    encoded = encode(tokenizer, conversation())
    assert trained_pieces(tokenizer, encoded) == [f"positive answer{end}", f"negative{end}"]
    assert all(label in (IGNORE, token) for token, label in zip(encoded.input_ids, encoded.labels))
    assert "[[negative" in marked_text(tokenizer, encoded)


def test_masks_are_the_same_with_and_without_generation_tags():
    """The template with {% generation %} tags gives transformers' own assistant mask: ours equals it, and ours
    is the same on the template without tags."""
    tagged = build_tokenizer("chatml", tags=True)
    reference = tagged.apply_chat_template(MESSAGES, return_assistant_tokens_mask=True, return_dict=True)
    ours_tagged = encode(tagged, conversation())
    ours_plain = encode(build_tokenizer("chatml"), conversation())
    mask = [int(label != IGNORE) for label in ours_tagged.labels]
    assert ours_tagged.input_ids == reference["input_ids"]
    assert mask == reference["assistant_masks"]
    assert [int(label != IGNORE) for label in ours_plain.labels] == mask


@pytest.mark.parametrize("family", ["chatml", "llama3"])
def test_end_of_turn_is_trained_and_generation_stops_at_it(family):
    tokenizer = build_tokenizer(family)
    encoded = encode(tokenizer, conversation())
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>" if family == "chatml" else "<|eot_id|>")
    trained = [t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE]
    assert trained.count(end_of_turn) == 2  # one per assistant turn, although pad = EOS for ChatML
    assert end_of_turn in stop_token_ids(tokenizer)
    if family == "llama3":
        assert tokenizer.eos_token_id != end_of_turn and tokenizer.eos_token_id in stop_token_ids(tokenizer)


def test_no_double_bos_where_template_and_tokenizer_both_add_one():
    tokenizer = build_tokenizer("llama3")
    assert tokenizer("hello")["input_ids"][0] == tokenizer.bos_token_id  # the tokenizer adds one by itself
    encoded = encode(tokenizer, conversation())
    assert encoded.input_ids.count(tokenizer.bos_token_id) == 1 and encoded.input_ids[0] == tokenizer.bos_token_id
    assert prompt_ids(tokenizer, MESSAGES[:2]).count(tokenizer.bos_token_id) == 1


@pytest.mark.parametrize("family", ["chatml", "llama3"])
def test_training_and_inference_render_the_same_prompt(family):
    """The tokens a reply is trained after are the tokens the model is prompted with (hftl generate / chat)."""
    tokenizer = build_tokenizer(family)
    encoded = encode(tokenizer, conversation())
    for turn in (2, 4):
        prompt = prompt_ids(tokenizer, MESSAGES[:turn])
        assert encoded.input_ids[:len(prompt)] == prompt
        assert encoded.labels[len(prompt) - 1] == IGNORE and encoded.labels[len(prompt)] != IGNORE


def test_plain_prompt_completion_trains_completion_and_eos():
    tokenizer = build_tokenizer("chatml")
    encoded = encode(tokenizer, Conversation(prompt="the film was ", completion="great"))
    assert trained_pieces(tokenizer, encoded) == ["great<|im_end|>"]


def test_train_on_all_trains_every_token():
    encoded = encode(build_tokenizer("chatml"), conversation(), train_on="all")
    assert encoded.labels == encoded.input_ids


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_packed_loss_equals_unpacked_loss(tmp_path, attention):
    """Padding-free packing: one row, positions restart, attention kept inside each example: the loss of the
    packed batch equals that of the padded batch (same targets, same logits)."""
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

    from hftl.tasks.instruction_tuning import packing_collator

    folder = build_model_dir(tmp_path / "llama", "llama3")
    tokenizer = build_tokenizer("llama3")
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attention).eval()
    rows = [encode(tokenizer, conversation(m["messages"]), train_on="all") for m in chat_rows(3)]
    rows.append(encode(tokenizer, conversation()))
    features = [{"input_ids": r.input_ids, "labels": r.labels} for r in rows]
    tokenizer.pad_token = tokenizer.eos_token
    padded = DataCollatorForSeq2Seq(tokenizer, padding=True)(features)
    packed = packing_collator()(features)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    with torch.no_grad():
        loss_padded = model(**padded).loss
        loss_packed = model(**packed).loss
        # attention that crossed examples (no restarted positions, or a cache: transformers then ignores them)
        # changes the logits of every example after the first
        crossed = model(**{**packed, "use_cache": True}).loss
    torch.testing.assert_close(loss_packed, loss_padded, atol=1e-5, rtol=1e-5)
    assert abs(float(crossed) - float(loss_padded)) > 1e-3


def test_bad_conversations_are_reported_all_at_once_with_lines(tmp_path):
    from hftl.data.conversations import read_conversations
    from hftl.tasks.instruction_tuning import InstructionData

    rows = chat_rows(2)
    rows.append({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]})  # line 3
    rows.append({"messages": [{"role": "assistant", "content": "y"}, {"role": "user", "content": "x"}]})  # line 4
    rows.append({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]})  # line 5
    rows += chat_rows(1)
    rows.append({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                              {"role": "user", "content": "z"}]})  # line 7
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as err:
        read_conversations(str(path), InstructionData(train=str(path)), "train")
    message = str(err.value)
    assert "4 problem(s)" in message
    for line, words in ((3, "unknown role 'robot'"), (4, "turns out of order"), (5, "empty assistant turn"),
                        (7, "ends without an assistant turn")):
        assert f"bad.jsonl: line {line}: " in message and words in message


def test_instruction_columns_and_prompt_completion_layouts(tmp_path):
    from hftl.data.conversations import read_conversations
    from hftl.tasks.instruction_tuning import InstructionData

    alpaca = write_jsonl(tmp_path / "alpaca.jsonl", [{"q": "classify", "ctx": "a lovely story", "a": "positive"},
                                                     {"q": "say hi", "ctx": "", "a": "hi"}])
    data = InstructionData(train=str(alpaca), instruction_column="q", input_column="ctx", output_column="a")
    first, second = read_conversations(str(alpaca), data, "train")
    assert first.messages == [{"role": "user", "content": "classify\n\na lovely story"},
                              {"role": "assistant", "content": "positive"}] and first.trained == [False, True]
    assert second.messages[0]["content"] == "say hi"
    chat = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": [{"role": "user", "content": "hi"}],
                                                "completion": [{"role": "assistant", "content": "yo"}]}])
    (pc,) = read_conversations(str(chat), InstructionData(train=str(chat)), "train")
    assert pc.trained == [False, True] and pc.reference() == "yo"


# -- a tiny run, end to end -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A full fine-tuning run of the tiny ChatML GPT-2 on a learnable chat task, through `hftl train`."""
    import yaml

    from hftl.cli import main

    root = tmp_path_factory.mktemp("sft")
    model = build_model_dir(root / "model", "chatml")
    data = {name: write_jsonl(root / f"{name}.jsonl", chat_rows(n, offset)) for name, n, offset in
            (("train", 48, 0), ("validation", 6, 1), ("test", 6, 2))}
    config = {"task": "instruction-tuning",
              "model": {"name_or_path": str(model), "strategy": "full"},
              "data": {"train": str(data["train"]), "validation": str(data["validation"]), "test": str(data["test"]),
                       "max_length": 64, "answer_labels": ["positive", "negative"], "generation_max_new_tokens": 12},
              "training": {"output_dir": str(root / "run"), "max_steps": 40, "learning_rate": 5e-3,
                           "per_device_train_batch_size": 8, "logging_steps": 5, "eval_strategy": "no",
                           "save_strategy": "no", "seed": 1},
              "speed": {"bf16": False}}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    return root, path


def test_tiny_run_learns_the_replies_and_records_generation_metrics(tiny_run):
    root, _ = tiny_run
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    before, after = metrics["before_training"]["test"], metrics["test"]
    assert after["loss"] < before["loss"]
    assert after["accuracy"] >= 0.8 and after["stopped"] == 1.0
    assert {"accuracy", "f1", "unparseable", "samples"} <= set(after)
    assert len(after["samples"]) == 5
    # every test generation, in errors.jsonl; metrics.json keeps the shares of each ending, not the generations
    rows = [json.loads(line) for line in (root / "run" / "errors.jsonl").read_text().splitlines()]
    assert len(rows) == after["generated"] == 6 and sorted(row["row"] for row in rows) == list(range(6))
    for end in ("stopped", "repeating", "cut"):
        assert after[end] == sum(row["end"] == end for row in rows) / 6
    assert after["mean_new_tokens"] == sum(row["new_tokens"] for row in rows) / 6
    assert all(row["answer"] in ("positive", "negative") for row in rows)
    assert "generations" not in after and "generations" not in before and before["generated"] == 6
    card = (root / "run" / "README.md").read_text()
    assert "### Base model against the tuned model" in card and card.count("| positive |") + card.count("| negative |") >= 5
    assert 'chat(messages, max_new_tokens=128, do_sample=False)' in card


def test_validate_show_example_marks_trained_tokens(tiny_run, capsys):
    from hftl.cli import main

    root, path = tiny_run
    assert main(["validate", str(path), "--show-example", "0", "--set", "overwrite=true"]) == 0
    out = capsys.readouterr().out
    print(out)
    assert "<|im_start|>assistant\n[[positive<|im_end|>\n]]" in out
    assert "BOS tokens at the start: 1 " in out and "end of turn trained: yes" in out
    assert "exceed max_length" in out


def test_generate_with_messages_matches_the_merged_export_in_a_pipeline(tiny_run, capsys, tmp_path):
    from transformers import pipeline

    from hftl.cli import main
    from hftl.export import export_merged

    root, _ = tiny_run
    assert main(["generate", str(root / "run"), "--message", "was it boring", "--max-new-tokens", "12"]) == 0
    ours = capsys.readouterr().out.strip().splitlines()[-1]
    out = export_merged(root / "run", tmp_path / "merged", card=False)
    chat = pipeline("text-generation", model=str(out))
    theirs = chat([{"role": "user", "content": "was it boring"}], max_new_tokens=12, do_sample=False)
    assert theirs[0]["generated_text"][-1]["content"].strip() == ours.strip()


def test_chat_repl_streams_replies_with_the_conversation_so_far(tiny_run, capsys):
    from argparse import Namespace

    from hftl.commands.chat import run

    root, _ = tiny_run
    said = iter(["was it boring", "/reset", "a lovely story", "/exit"])
    args = Namespace(run_dir=str(root / "run"), system=None, max_new_tokens=12, sample=False, seed=None,
                     temperature=0.7, top_p=0.95, repetition_penalty=1.0, trust_remote_code=False,
                     allow_pickle=False)
    assert run(args, read=lambda prompt: next(said)) == 0
    out = capsys.readouterr().out
    assert out.count("model> ") == 2
    assert "model> negative" in out and "model> positive" in out  # streamed as generated, one reply per turn


@pytest.mark.parametrize("command", ["chat", "generate"])
def test_decoding_flags_out_of_range_are_named_before_any_model_loads(tmp_path, capsys, command):
    """`hftl chat` and `hftl generate` share their decoding flags and their checks: a bad value is refused before the
    run folder is read (here it does not exist)."""
    from hftl.cli import main

    message = ["--message", "hi"] if command == "generate" else []
    assert main([command, str(tmp_path / "no-run"), "--max-new-tokens", "0", *message]) == 2
    assert "--max-new-tokens must be at least 1, got 0" in capsys.readouterr().err
    assert main([command, str(tmp_path / "no-run"), "--repetition-penalty", "0", *message]) == 2
    assert "--repetition-penalty must be above 0" in capsys.readouterr().err


def test_evaluate_command_scores_a_finished_run(tiny_run, capsys):
    from hftl.cli import main

    root, _ = tiny_run
    assert main(["evaluate", str(root / "run")]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((root / "run" / "metrics.json").read_text())["test"]
    assert f"{metrics['accuracy']:.4f}" in out and f"{metrics['loss']:.4f}" in out


@pytest.mark.parametrize("bf16, precision", [("auto", "float32"), (True, "bfloat16")])
def test_recorded_figures_after_bf16_training_are_what_a_fresh_load_computes(tmp_path, monkeypatch, bf16, precision):
    """With bf16 on (`auto`: the default where the CPU runs it natively), accelerate leaves its autocast on the
    model's forward, before training (the Trainer's first evaluation wraps it) and after. The run's figures must be
    float32, as `hftl evaluate` computes them on the finished run and on the base checkpoint: loss and generations
    alike; with `speed.bf16: true`, bfloat16 in both. A finished run serves in that precision too."""
    import yaml
    from transformers import AutoModelForCausalLM

    from hftl.cli import main
    from hftl.inference import load
    from hftl.precision import autocast_for
    from hftl.tasks.instruction_tuning import InstructionTuningRecipe
    from hftl.trainer import bf16_is_fast

    if bf16 == "auto" and not bf16_is_fast():
        pytest.skip("bf16 is off by default on this CPU (no AVX512-BF16 or AMX)")
    model = build_model_dir(tmp_path / "model", "chatml")
    data = {name: write_jsonl(tmp_path / f"{name}.jsonl", chat_rows(n, offset)) for name, n, offset in
            (("train", 48, 0), ("validation", 6, 1), ("test", 6, 2))}
    config = {"task": "instruction-tuning", "model": {"name_or_path": str(model), "strategy": "full"},
              "data": {"train": str(data["train"]), "validation": str(data["validation"]), "test": str(data["test"]),
                       "max_length": 64, "generation_max_new_tokens": 12},
              "training": {"output_dir": str(tmp_path / "run"), "max_steps": 40, "learning_rate": 5e-3,
                           "per_device_train_batch_size": 8, "eval_strategy": "no", "save_strategy": "no", "seed": 1},
              "speed": {"bf16": bf16}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    training = json.loads((tmp_path / "run" / "manifest.json").read_text())["training"]
    assert training["bf16"] is True and training["inference_precision"] == precision
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())

    recipe = InstructionTuningRecipe({**config, "overwrite": True})  # the run's config, to read the base's figures
    tokenizer = recipe.load_processor()
    base_model = AutoModelForCausalLM.from_pretrained(model).eval()
    with autocast_for(base_model, precision):
        base = recipe.evaluate_trained(base_model, tokenizer)
    tuned = load(tmp_path / "run").evaluate()
    for recorded, fresh in ((metrics["before_training"]["test"], base), (metrics["test"], tuned)):
        assert recorded["loss"] == pytest.approx(fresh["loss"], rel=1e-5)
        assert recorded["rouge_l"] == fresh["rouge_l"] and recorded["stopped"] == fresh["stopped"]

    # serving computes in the same precision: predict (the UI's Try page), `hftl generate` and `hftl chat`
    from argparse import Namespace

    from hftl.commands.chat import run as chat

    autocast = []
    loaded = load(tmp_path / "run")
    loaded.model.register_forward_hook(lambda *_: autocast.append(torch.is_autocast_enabled("cpu")))
    loaded.predict(["was it boring"], max_new_tokens=2)
    monkeypatch.setattr("hftl.inference.load", lambda *args, **kwargs: loaded)
    assert main(["generate", str(tmp_path / "run"), "--message", "was it boring", "--max-new-tokens", "2"]) == 0
    said = iter(["was it boring", "/exit"])
    args = Namespace(run_dir=str(tmp_path / "run"), system=None, max_new_tokens=2, sample=False, seed=None,
                     temperature=0.7, top_p=0.95, repetition_penalty=1.0, trust_remote_code=False, allow_pickle=False)
    assert chat(args, read=lambda prompt: next(said)) == 0
    assert len(autocast) >= 6 and set(autocast) == {precision == "bfloat16"}


def test_reply_says_how_a_generation_ended():
    """Stopped: cut after the first stop token (the rest is padding); at the limit: repeating when the last 32
    tokens, numbers masked, already occur earlier (a loop of any period, counters included), cut otherwise."""
    from hftl.chat import reply

    tokenizer = build_tokenizer("chatml")
    stops = stop_token_ids(tokenizer)
    words = tokenizer("the cat sat on a mat", add_special_tokens=False)["input_ids"]
    stopped = reply(tokenizer, words + [stops[0]] + [tokenizer.pad_token_id] * 4, stops)
    assert stopped == {"text": "the cat sat on a mat", "stopped": True, "end": "stopped",
                       "new_tokens": len(words) + 1}

    distinct = list(range(30, 80))  # 50 tokens, none repeated, none a digit
    assert reply(tokenizer, distinct, stops)["end"] == "cut"
    period_40 = distinct[:40] * 2  # a loop longer than the window: still seen
    assert reply(tokenizer, distinct[:5] + period_40, stops)["end"] == "repeating"
    period_3 = [11, 12, 13] * 12
    assert reply(tokenizer, distinct[:20] + period_3, stops) | {"text": ""} == {
        "text": "", "stopped": False, "end": "repeating", "new_tokens": 56}
    # a last window that repeats only partly: not a loop
    assert reply(tokenizer, distinct[:31] + [99] + distinct[:31], stops)["end"] == "cut"
    # a numbered list repeating its item under a rising counter (what SmolLM2 does on Dolly): a loop
    counting = tokenizer("".join(f"{n}. the cat sat on a mat\n" for n in range(7, 40)), add_special_tokens=False)
    assert reply(tokenizer, counting["input_ids"], stops)["end"] == "repeating"
    listing = tokenizer("".join(f"{n}. {w}\n" for n, w in enumerate("the cat sat on a mat with my dog".split())),
                        add_special_tokens=False)  # numbered, but the items differ
    assert reply(tokenizer, listing["input_ids"], stops)["end"] == "cut"


def test_repetition_penalty_spares_the_prompt_and_its_end_of_turn():
    """The loop breaker penalises the reply's own tokens only: every chat prompt holds the end-of-turn token, and a
    penalty on it would make replies stop less (transformers' `generate(repetition_penalty=...)` counts the prompt)."""
    from hftl.chat import reply_penalty

    tokenizer = build_tokenizer("chatml")
    prompt = prompt_ids(tokenizer, [{"role": "user", "content": "was it boring"}])
    end_of_turn = stop_token_ids(tokenizer)[0]
    assert end_of_turn in prompt
    ids = torch.tensor([prompt + [40, 41, 40]])  # the reply so far
    scores = torch.full((1, len(tokenizer)), 2.0)
    out = reply_penalty(1.5, len(prompt))(ids, scores.clone())
    assert torch.nonzero(out[0] != 2.0).flatten().tolist() == [40, 41]
    assert out[0, 40].item() == pytest.approx(2.0 / 1.5) and out[0, end_of_turn].item() == 2.0
    assert reply_penalty(1.0, len(prompt))(ids, scores.clone()).equal(scores)


def _penalised_greedy(model, tokenizer, messages, penalty: float, max_new_tokens: int) -> list[int]:
    """Greedy decoding written out: CTRL's penalty on the tokens of the reply so far (divide a positive logit,
    multiply a negative one), the prompt left out; stops at the first stop token."""
    stops = stop_token_ids(tokenizer)
    ids, new = prompt_ids(tokenizer, messages), []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(torch.tensor([ids + new])).logits[0, -1].clone()
            for token in set(new):
                logits[token] = logits[token] / penalty if logits[token] > 0 else logits[token] * penalty
            new.append(int(logits.argmax()))
            if new[-1] in stops:
                break
    return new


def test_replies_with_a_repetition_penalty_match_penalised_greedy_written_out(tmp_path):
    """`generate_batch` (the run's test replies, left-padded batches) and `hftl.chat.generate` (`hftl generate` /
    `hftl chat`) both apply the penalty to the reply only: their replies equal the loop above, token for token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hftl.chat import generate, reply
    from hftl.tasks.instruction_tuning import generate_batch

    folder = build_model_dir(tmp_path / "model", "llama3")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    prompts = [[{"role": "user", "content": "was it boring"}],
               [{"role": "user", "content": "the plot was dreadful and the acting quite tedious"}]]
    stops = stop_token_ids(tokenizer)
    expected = {penalty: [reply(tokenizer, _penalised_greedy(model, tokenizer, p, penalty, 24), stops) for p in prompts]
                for penalty in (1.0, 3.0)}
    assert expected[1.0] != expected[3.0]  # the untrained model repeats itself: the penalty changes its replies
    for penalty, replies in expected.items():
        assert generate_batch(model, tokenizer, prompts, 24, repetition_penalty=penalty) == replies
        assert [generate(model, tokenizer, p, 24, repetition_penalty=penalty) for p in prompts] == replies
