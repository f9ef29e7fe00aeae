"""Instruction tuning (chat SFT): conversations rendered with the model's chat template, loss on the replies only.

Data layouts (`hftl.data.conversations`): chat `messages`, prompt-completion (plain or conversational),
Alpaca-style instruction/input/output columns; every problem of every row is reported at once, with file and line.
Rendering and masks come from `hftl.chat` (one function for training and inference): assistant turns (the
completion, for prompt-completion) train, with the end-of-turn token the template writes after them;
`data.train_on: all` trains every token. A run in which some example would train on no token is refused.

Why hftl's own encoding and not TRL's `SFTTrainer`: TRL finds assistant tokens through `{% generation %}` tags
(`assistant_only_loss`), which most templates lack (SmolLM2's among them), and it keeps its own Trainer subclass;
hftl locates each reply by rendering the conversation's prefixes (right with or without tags), and trains with
hftl's Trainer, so resume, fault handling, the token-weighted loss and the run record are those of every task.
Packing (`data.packing`) is transformers' padding-free `DataCollatorWithFlattening` (what TRL's `padding_free`
uses): the examples of a batch are one row, positions restart per example and the first token of each example is
not a target, and transformers' mask functions keep attention inside each example (`packed_sequence_mask` for
eager / sdpa / flex, with the cache off: see `packing_collator`). The packed loss equals the unpacked one (test).

Evaluation: the loss and perplexity on trained tokens (validation, test; also before training, `data.baseline`),
and generation on the test split: with `data.answer_labels`, answers are parsed to labels (accuracy / macro
precision, recall, F1 through `hftl.metrics`, unparseable answers counted as wrong and reported); otherwise
ROUGE-L and exact match; always how the generations end (stopped on their own, or at the token limit repeating
themselves or cut), every generation in the run's errors.jsonl, and samples of the base model beside the tuned one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from hftl.config.parse import field
from hftl.config.schema import DataConfig
from hftl.data.conversations import FORMATS, format_problem, read_conversations
from hftl.data.loading import check_source, fingerprint
from hftl.errors import DataError
from hftl.recipe import Evaluation, PreparedData, register_task
from hftl.tasks.language_modeling import LanguageModelingRecipe, perplexity

logger = logging.getLogger(__name__)

#: attention implementations on which transformers keeps packed examples apart
PACKING_ATTENTION = ("eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3")
UNPARSEABLE = "unparseable"


@dataclass
class InstructionData(DataConfig):
    format: str = field("auto", help=f"layout of the rows: {' / '.join(FORMATS)} (auto: from the columns)")
    messages_column: str = field("messages", help="column of chat messages (format messages)")
    prompt_column: str = field("prompt", help="prompt column (format prompt-completion; text or messages)")
    completion_column: str = field("completion", help="completion column (format prompt-completion)")
    instruction_column: str = field("instruction", help="instruction column (format instruction, Alpaca-style)")
    input_column: str = field("input", help="optional input column appended to the instruction (format instruction)")
    output_column: str = field("output", help="answer column (format instruction)")
    system_prompt: str | None = field(None, help="a system message put first in every conversation that has none")
    chat_template: str | None = field(None, help="a Jinja chat template file; default: the tokenizer's own")
    train_on: Literal["assistant", "all"] = field(
        "assistant", help="assistant: the replies only (the completion for prompt-completion), end-of-turn included; "
        "all: every token")
    max_length: int = field(512, help="the most tokens of one example")
    too_long: Literal["drop", "truncate"] = field(
        "drop", help="examples longer than max_length: drop them, or truncate them (keeping the start); the count "
        "is logged and recorded")
    packing: bool = field(False, help="padding-free batches: the examples of a batch in one row, kept apart")
    baseline: bool = field(True, help="also evaluate the untouched checkpoint before training (loss, generations)")
    answer_labels: list[str] | None = field(
        None, help="the answers are these labels (instruction-formatted classification): generated answers are "
        "parsed to a label and scored as a classification")
    generation_max_new_tokens: int = field(64, help="the most tokens generated per test example")
    generation_samples: int | None = field(200, help="test examples evaluated by generation (null: all)")
    generation_repetition_penalty: float = field(
        1.0, help="1.0: plain greedy replies; above 1, tokens already in the reply (not the prompt) are made less "
        "likely (transformers' repetition penalty, from CTRL), which breaks the loops small models fall into")

    def check(self) -> list[str]:
        problems = []
        if self.format not in FORMATS:
            problems.append(f"format: must be one of {', '.join(FORMATS)}, got '{self.format}'.")
        if self.max_length < 8:
            problems.append(f"max_length: must be at least 8 tokens, got {self.max_length}.")
        if self.answer_labels is not None and len(set(a.strip().lower() for a in self.answer_labels)) < 2:
            problems.append("answer_labels: give at least two distinct labels, or null for free-form answers.")
        if self.generation_repetition_penalty <= 0:
            problems.append("generation_repetition_penalty: must be above 0 (1.0: none), got "
                            f"{self.generation_repetition_penalty}.")
        return problems


def hold_out(splits: dict, sources: dict, data, seed: int) -> None:
    """Without validation data, hold out a seeded `data.validation_fraction` of train (in place): whole prompts
    where examples share their first user turn (`root_prompt`), so validation scores prompts training never saw."""
    from hftl.data.holdout import grouped_holdout_indices, holdout_indices

    if "validation" in splits:
        return
    train = splits["train"]
    n_val = max(1, round(len(train) * data.validation_fraction))
    grouped = grouped_holdout_indices([example.root_prompt() for example in train], n_val, seed)
    split = grouped or holdout_indices(len(train), n_val, seed)
    held = set(int(i) for i in split.validation)
    splits["validation"] = [c for i, c in enumerate(train) if i in held]
    splits["train"] = [c for i, c in enumerate(train) if i not in held]
    sources["validation"] = (f"{sources['train']} (held-out share {data.validation_fraction}"
                             f"{', whole prompts' if grouped else ''})")


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased alphanumeric words (rouge_score's default tokenisation, no stemming)."""
    import re

    a, b = re.findall(r"[a-z0-9]+", prediction.lower()), re.findall(r"[a-z0-9]+", reference.lower())
    if not a or not b:
        return float(a == b)
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def parse_label(text: str, labels: list[str]) -> str:
    """The label a generated answer names: the one label word it contains (first word first), else unparseable."""
    import re

    words = re.findall(r"[a-z0-9_-]+", text.lower())
    wanted = {label.lower(): label for label in labels}
    if words and words[0] in wanted:
        return wanted[words[0]]
    found = {wanted[w] for w in words if w in wanted}
    return found.pop() if len(found) == 1 else UNPARSEABLE


def chat_template_problems(data) -> list[str]:
    """`data.chat_template`, when set, names a Jinja template file."""
    from pathlib import Path

    if data.chat_template and not Path(data.chat_template).is_file():
        return [f"data.chat_template: {data.chat_template} is not a file. Give a Jinja template file."]
    return []


class InstructionTuningRecipe(LanguageModelingRecipe):
    """Fine-tune a chat model on conversations (assistant tokens trained).

    Example:
        ```python
        import hftl
        from hftl import InstructionTuningRecipe
        result = hftl.run_recipe(InstructionTuningRecipe.from_yaml("recipes/configs/dolly_smollm2_lora.yaml"))
        ```
    """

    task = "instruction-tuning"
    title = "Instruction tuning (chat SFT)"
    pipeline_tag = "text-generation"
    summary_metrics = ("loss", "perplexity", "accuracy", "f1", "rouge_l", "stopped")
    card_metrics = ("loss", "perplexity", "accuracy", "f1", "rouge_l", "exact_match", "stopped", "repeating",
                    "unparseable")
    index_metrics = {"perplexity": ("perplexity", "Perplexity", None)}
    generates_text = True
    chat = True
    labels_are_shifted = True
    data_config_class = InstructionData
    peft_task_type = "CAUSAL_LM"
    head_modules = ("lm_head",)
    auto_model_class = "AutoModelForCausalLM"
    input_column = "messages_column"

    # -- config and data --------------------------------------------------------------------------
    @classmethod
    def check_config(cls, config, model_ok: bool) -> list[str]:
        from hftl.data.loading import read_columns

        data = config.data
        problems = []
        for name, source in data.splits().items():
            found = check_source(source, f"data.{name}")
            problems += found
            if not found:
                try:
                    columns = read_columns(source)
                except DataError as err:
                    problems.append(f"data.{name}: {err}")
                    continue
                if columns:
                    problem = format_problem(columns, data, f"data.{name}", source)
                    problems += [problem] if problem else []
        return problems + chat_template_problems(data)

    def load_data(self) -> PreparedData:
        """Every split as a list of `Conversation`s (checked whole); validation: a seeded share of train if none."""
        data = self.config.data
        splits, sources = {}, {}
        for name, source in data.splits().items():
            limit = data.max_train_samples if name == "train" else data.max_eval_samples
            splits[name] = read_conversations(source, data, name, limit)
            sources[name] = source
        hold_out(splits, sources, data, self.config.seed)
        fingerprints = {name: fingerprint(src) for name, src in data.splits().items()}
        return PreparedData(splits, sources, fingerprints)

    def load_processor(self):
        from hftl.chat import set_chat_template, template_problems

        tokenizer = super().load_processor()
        data = self.config.data
        if getattr(data, "format", None) == "prompt-completion" and not data.chat_template and not getattr(tokenizer, "chat_template", None):
            return tokenizer  # plain prompt-completion needs no template
        set_chat_template(tokenizer, data.chat_template)
        problems = template_problems(tokenizer, {"system", "user", "assistant"} if data.system_prompt else {"user", "assistant"})
        if problems:
            raise DataError("\n".join(problems))
        return tokenizer

    def encode_split(self, conversations, tokenizer, name: str) -> tuple[list, dict]:
        """(encoded examples, a report of lengths, truncation and empty examples) of one split."""
        from hftl.chat import IGNORE, encode

        data = self.config.data
        if any(not c.is_plain for c in conversations):
            from hftl.chat import template_problems

            roles = {m["role"] for c in conversations if not c.is_plain for m in c.messages}
            problems = template_problems(tokenizer, roles)
            if problems:
                raise DataError("\n".join(problems))
        encoded, lengths, too_long, empty = [], [], [], []
        for conversation in conversations:
            example = encode(tokenizer, conversation, data.train_on)
            lengths.append(len(example.input_ids))
            if len(example.input_ids) > data.max_length:
                too_long.append(conversation.where)
                if data.too_long == "drop":
                    continue
                example.input_ids, example.labels = example.input_ids[:data.max_length], example.labels[:data.max_length]
            # the first token is never a target (nothing predicts it): it does not count as trained
            if all(label == IGNORE for label in example.labels[1:]):
                empty.append(conversation.where)
            encoded.append((conversation, example))
        if empty:
            shown = "; ".join(empty[:20]) + (f"; and {len(empty) - 20} more" if len(empty) > 20 else "")
            raise DataError(f"data.{name}: {len(empty)} example(s) would train on no token (after truncation to "
                            f"data.max_length={data.max_length}): {shown}. Raise max_length, use too_long: drop, or "
                            "fix the rows.")
        if not encoded:
            raise DataError(f"data.{name}: no example is left (all {len(too_long)} exceed data.max_length="
                            f"{data.max_length} and too_long is drop). Raise data.max_length.")
        report = {"examples": len(conversations), "kept": len(encoded), "too_long": len(too_long),
                  "too_long_action": data.too_long, "max_tokens": max(lengths),
                  "mean_tokens": sum(lengths) / len(lengths)}
        if too_long:
            logger.warning("data.%s: %d of %d examples exceed max_length=%d and were %s (first: %s)", name,
                           len(too_long), len(conversations), data.max_length,
                           "dropped" if data.too_long == "drop" else "truncated", too_long[0])
        return encoded, report

    def preprocess(self, data: PreparedData, tokenizer) -> dict:
        import datasets

        out = {}
        for name, conversations in data.splits.items():
            encoded, report = self.encode_split(conversations, tokenizer, name)
            dataset = datasets.Dataset.from_dict({"input_ids": [e.input_ids for _, e in encoded],
                                                  "labels": [e.labels for _, e in encoded]})
            dataset.conversations = [c for c, _ in encoded]  # generation evaluation prompts with these
            dataset.report = report
            out[name] = dataset
        return out

    def prepare_source(self, source: str, tokenizer, labels=None):
        conversations = read_conversations(source, self.config.data, "test", self.config.data.max_eval_samples)
        return self.preprocess(PreparedData({"test": conversations}, {"test": source}), tokenizer)["test"]

    def data_collator(self, tokenizer):
        from transformers import DataCollatorForSeq2Seq

        if self.config.data.packing:
            return packing_collator()
        # pads input_ids with pad and labels with -100 (pad = EOS is harmless: labels are not derived from ids)
        return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)

    def training_defaults(self) -> dict:
        return {"prediction_loss_only": True, "remove_unused_columns": False}

    def load_model(self, tokenizer, labels=None):
        model, new = super().load_model(tokenizer, labels)
        attention = getattr(model.config, "_attn_implementation", None)
        if getattr(self.config.data, "packing", False) and attention not in PACKING_ATTENTION:
            raise DataError(f"data.packing: the model uses attention '{attention}', on which hftl cannot keep packed "
                            f"examples apart ({', '.join(PACKING_ATTENTION)} can). Turn packing off.")
        from hftl.chat import stop_token_ids

        model.generation_config.eos_token_id = stop_token_ids(tokenizer)  # pipelines stop at the end of turn too
        return model, new

    def describe_example(self, index: int) -> str:
        """`hftl validate --show-example N`: training example N as the model sees it, and the training set's lengths."""
        from hftl.chat import IGNORE, encode, marked_text, stop_token_ids

        data = self.config.data
        conversations = self.load_data().splits["train"]
        if not 0 <= index < len(conversations):
            raise DataError(f"--show-example {index}: the training set has {len(conversations)} examples (0 to "
                            f"{len(conversations) - 1}).")
        tokenizer = self.load_processor()
        encoded = [encode(tokenizer, c, data.train_on) for c in conversations]
        example = encoded[index]
        trained = [t for t, label in zip(example.input_ids, example.labels) if label != IGNORE]
        stops = stop_token_ids(tokenizer)
        stop_names = ", ".join(tokenizer.convert_ids_to_tokens(stops))
        lengths = [len(e.input_ids) for e in encoded]
        over = sum(n > data.max_length for n in lengths)
        action = "dropped" if data.too_long == "drop" else f"truncated to {data.max_length} tokens"
        lines = [f"example {index} ({conversations[index].where}), {len(example.input_ids)} tokens, "
                 f"{len(trained)} trained (between [[ and ]]):", "", marked_text(tokenizer, example), "",
                 f"BOS tokens at the start: {leading_count(example.input_ids, tokenizer.bos_token_id)} (more than 1 is "
                 "a double BOS)",
                 f"end of turn trained: {'yes' if any(t in stops for t in trained) else 'NO'} (stop tokens: {stop_names})",
                 "", f"token lengths of the {len(lengths)} training examples:", length_histogram(lengths),
                 f"{over} of {len(lengths)} examples exceed max_length={data.max_length}: they will be {action} "
                 "(data.too_long: drop or truncate)."]
        return "\n".join(lines)

    # -- evaluation -------------------------------------------------------------------------------
    def token_loss(self, trainer, dataset) -> dict:
        loss, tokens = self.token_loss_sums(trainer, dataset)
        return {"loss": loss, "perplexity": perplexity(loss),
                "trained_tokens": int(tokens), "examples": len(dataset)}

    def evaluate_trained(self, model, processor, labels=None, source: str | None = None, **kwargs) -> dict:
        """`hftl evaluate`: the split's metrics with the run's tokenizer (generation needs it)."""
        import tempfile

        from transformers import Trainer, TrainingArguments

        dataset = self.prepare_source(self.evaluation_source(source), processor, labels)
        with tempfile.TemporaryDirectory() as tmp:
            args = TrainingArguments(output_dir=tmp, report_to="none", per_device_eval_batch_size=8,
                                     remove_unused_columns=False)
            trainer = Trainer(model=model, args=args, data_collator=self.data_collator(processor),
                              processing_class=processor)
            return self.evaluate_split(trainer, "test", dataset)

    def evaluate_split(self, trainer, name: str, dataset, labels=None, **kwargs) -> dict:
        metrics = self.token_loss(trainer, dataset)
        conversations = getattr(dataset, "conversations", None)
        # FSDP: every process runs the generation forward passes of rank 0's (each gathers the others' shards);
        # only rank 0 records the figures. DDP: rank 0 alone, on its full copy of the model
        every_process = getattr(trainer, "is_fsdp_enabled", False)
        if name == "test" and conversations and (trainer.is_world_process_zero() or every_process):
            metrics.update(self.generation_metrics(trainer.model, trainer.processing_class, conversations))
        return metrics

    def evaluate_splits(self, trainer, datasets: dict, labels=None) -> Evaluation:
        """Validation and test metrics; the test generations (`generation_metrics`) become the run's errors.jsonl."""
        metrics = {split: self.evaluate_split(trainer, split, datasets[split]) for split in ("validation", "test")
                   if split in datasets}
        return Evaluation(metrics, errors=metrics.get("test", {}).pop("generations", []))

    def evaluate_before(self, trainer, datasets: dict, labels=None) -> dict:
        """The base model's metrics: its generations' summary and samples, not each generation."""
        if not self.config.data.baseline or self.config.resume:
            return {}
        metrics = {split: self.evaluate_split(trainer, split, datasets[split]) for split in ("validation", "test")
                   if split in datasets}
        metrics.get("test", {}).pop("generations", None)
        return metrics

    def generation_metrics(self, model, tokenizer, conversations) -> dict:
        """Greedy replies to the first `data.generation_samples` test prompts, scored against the references."""
        from hftl.metrics import classification_report

        data = self.config.data
        chosen = conversations[:data.generation_samples] if data.generation_samples else conversations
        replies = generate_batch(model, tokenizer, [c.prompt_messages() if not c.is_plain else c.prompt
                                                    for c in chosen], data.generation_max_new_tokens,
                                 repetition_penalty=data.generation_repetition_penalty)
        references = [c.reference() for c in chosen]
        metrics = {"generated": len(chosen), **{end: sum(r["end"] == end for r in replies) / len(chosen)
                                                for end in ("stopped", "repeating", "cut")},
                   "mean_new_tokens": sum(r["new_tokens"] for r in replies) / len(chosen)}
        rows = [{"split": "test", "row": i, "prompt": (c.prompt_messages()[-1]["content"] if not c.is_plain
                                                      else c.prompt)[:500], "reference": ref[:500],
                 "generated": r["text"], "end": r["end"], "new_tokens": r["new_tokens"]}
                for i, (c, ref, r) in enumerate(zip(chosen, references, replies))]
        if data.answer_labels:
            names = list(data.answer_labels) + [UNPARSEABLE]
            predicted = [names.index(parse_label(r["text"], data.answer_labels)) for r in replies]
            truth = [names.index(parse_label(ref, data.answer_labels)) for ref in references]
            if UNPARSEABLE in (names[t] for t in truth):
                raise DataError(f"data.answer_labels: some test answers name none of {data.answer_labels} "
                                f"(e.g. {references[truth.index(len(names) - 1)]!r}).")
            report = classification_report(predicted, truth, names)
            per_class = [report["per_class"][label] for label in data.answer_labels]
            mean = lambda key: sum((row[key] or 0.0) for row in per_class) / len(per_class)  # noqa: E731
            metrics.update(accuracy=report["accuracy"], precision=mean("precision"), recall=mean("recall"),
                           f1=mean("f1"), unparseable=sum(p == len(names) - 1 for p in predicted))
            for row, p in zip(rows, predicted):
                row["answer"] = names[p]
        else:
            for row, r, ref in zip(rows, replies, references):
                row["rouge_l"] = rouge_l(r["text"], ref)
            metrics.update(rouge_l=sum(row["rouge_l"] for row in rows) / len(chosen),
                           exact_match=sum(r["text"].strip() == ref.strip() for r, ref in zip(replies, references))
                           / len(chosen))
        metrics["samples"] = [{**{key: row[key] for key in ("prompt", "reference", "end")},
                               "generated": row["generated"][:500], "stopped": row["end"] == "stopped"}
                              for row in rows[:5]]
        # every generation, those that ran to the limit first: the run saves them as its errors.jsonl
        metrics["generations"] = sorted(rows, key=lambda row: ("cut", "repeating", "stopped").index(row["end"]))
        return metrics

    def predict(self, model, tokenizer, inputs: list, labels=None, batch_size: int = 8, max_new_tokens: int = 128,
                **kwargs) -> list[dict]:
        """Replies to each input: a user message (text) or a list of messages."""
        prompts = [[{"role": "user", "content": x}] if isinstance(x, str) else x for x in inputs]
        replies = generate_batch(model, tokenizer, prompts, max_new_tokens, batch_size)
        return [{"messages": p, "generated_text": r["text"], "stopped": r["stopped"]} for p, r in zip(prompts, replies)]


def leading_count(ids: list[int], token: int | None) -> int:
    """How many times `token` opens `ids` (2 or more: a double BOS)."""
    count = 0
    while token is not None and count < len(ids) and ids[count] == token:
        count += 1
    return count


def length_histogram(lengths: list[int], bins: int = 8, width: int = 40) -> str:
    """A text histogram of token lengths (power-of-two-ish bins from the data's range)."""
    low, high = min(lengths), max(lengths)
    step = max(1, -(-(high - low + 1) // bins))
    counts = [0] * bins
    for n in lengths:
        counts[min((n - low) // step, bins - 1)] += 1
    most = max(counts)
    rows = []
    for i, count in enumerate(counts):
        start = low + i * step
        if start > high:
            break
        rows.append(f"  {start:>6}-{min(start + step - 1, high):<6} {count:>6} {'#' * round(width * count / most)}")
    return "\n".join(rows)


def packing_collator():
    """transformers' padding-free collator, with the key-value cache off: transformers builds the per-example
    attention mask from `position_ids` only when no cache is passed (`masking_utils._preprocess_mask_arguments`,
    5.25), and decoders such as Llama create one whenever `use_cache` is on, training included: the examples of a
    row would then attend to each other (tests/test_instruction_tuning.py shows the difference)."""
    from transformers import DataCollatorWithFlattening

    class PackingCollator(DataCollatorWithFlattening):
        def __call__(self, features, return_tensors=None, separator_id=None):
            batch = super().__call__(features, return_tensors, separator_id)
            batch["use_cache"] = False
            return batch

    return PackingCollator(return_position_ids=True, separator_id=-100)


def is_sharded(model) -> bool:
    """Whether FSDP shards `model` across processes: its forward passes are then collective, and `generate` must
    keep every process stepping until all are done (`synced_gpus`; transformers detects only the FSDP it applies
    itself, not accelerate's `fully_shard` of a PEFT model's wrapper)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FSDPModule

    return (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
            and any(isinstance(m, FSDPModule) for m in model.modules()))


def generate_batch(model, tokenizer, prompts: list, max_new_tokens: int, batch_size: int = 16,
                   repetition_penalty: float = 1.0, stop_loops: bool = False) -> list[dict]:
    """Greedy replies to prompts (lists of messages, rendered by `hftl.chat`; or plain text), in left-padded batches.

    `repetition_penalty` above 1 penalises tokens already in the reply (`hftl.chat.reply_penalty`): still
    deterministic, but not plain greedy. `stop_loops` ends a reply as soon as it loops (`hftl.chat.loop_stop`):
    the same tokens up to there, and the reply says `repeating`, but it may be shorter than the limit."""
    import torch
    from transformers import StoppingCriteriaList

    from hftl.chat import loop_stop, prompt_ids, reply, reply_penalty, stop_token_ids

    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    synced = is_sharded(model)
    encoded = [prompt_ids(tokenizer, p) if isinstance(p, list) else tokenizer(p)["input_ids"] for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
    replies: list = [None] * len(encoded)
    model.eval()
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in rows], device=model.device)
        mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in rows], device=model.device)
        loops = loop_stop(tokenizer, width, stops) if stop_loops else None
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 temperature=None, top_p=None, top_k=None, eos_token_id=stops, pad_token_id=pad,
                                 logits_processor=reply_penalty(repetition_penalty, width), synced_gpus=synced,
                                 stopping_criteria=StoppingCriteriaList([loops] if loops else []))
        for row, i in enumerate(rows):
            new = out[row, width:].tolist()
            replies[i] = reply(tokenizer, new[:loops.looped[row]] if loops and row in loops.looped else new, stops)
    return replies


register_task(InstructionTuningRecipe)
