"""Chat rendering, in one place: training, evaluation, `hftl generate` and `hftl chat` all call the functions here,
so the text a model is trained on and the text it is prompted with cannot differ. The template is saved with the
run's tokenizer, so the card's usage (a `text-generation` pipeline given messages) renders the same text too
(tests/test_instruction_tuning.py compares the pipeline's greedy reply with hftl's).

* `set_chat_template`: the tokenizer's own template, or a Jinja file named in the config (saved with the run's
  tokenizer, so every later user renders with it); `template_problems` checks it renders every role used.
* `render` / `prompt_ids`: the template applied to messages (the prompt ends with the generation prompt).
* `encode`: a `Conversation` as `input_ids` and `labels`. The trained spans are found by rendering the
  conversation's prefixes: the reply to turn i is the text between render(messages[:i], generation prompt) and
  render(messages[:i+1]), so it includes the end-of-turn token the template writes after the reply (trained: the
  model learns to stop) whether or not the template has `{% generation %}` tags, and however pad and EOS relate.
  The rendered text is tokenised once, with `add_special_tokens=False` (the template writes BOS if the model
  wants one: no double BOS), and tokens are assigned to spans by their character offsets.
* `generate`: greedy or sampled replies to messages, stopping at EOS or the end-of-turn token, optionally
  streamed (`hftl chat`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hftl.errors import DataError

IGNORE = -100
#: probe text for the role checks (any text the template keeps verbatim)
_PROBE = "hftl probe {role} {i}"


def set_chat_template(tokenizer, template_file: str | None):
    """Put the configured template on `tokenizer` (a Jinja file), or check it has its own."""
    if template_file:
        tokenizer.chat_template = Path(template_file).read_text(encoding="utf-8")
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("the tokenizer has no chat template: give one as a Jinja file in data.chat_template "
                        "(e.g. a ChatML template), or use data.format prompt-completion with plain text.")
    return tokenizer


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The template applied to `messages`: THE rendering, used for training and inference alike."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def tokenize_text(tokenizer, text: str) -> list[int]:
    """Rendered text as tokens, without the tokenizer's own special tokens (the template wrote BOS if wanted)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The tokens a model is prompted with for a reply to `messages`."""
    return tokenize_text(tokenizer, render(tokenizer, messages, add_generation_prompt=True))


def template_problems(tokenizer, roles: set[str]) -> list[str]:
    """Problems of the tokenizer's template with the roles the data uses (each must render, with its text)."""
    problems = []
    conversation = []
    if "system" in roles:
        conversation.append({"role": "system", "content": _PROBE.format(role="system", i=0)})
    for i in range(2):
        conversation += [{"role": "user", "content": _PROBE.format(role="user", i=i)},
                         {"role": "assistant", "content": _PROBE.format(role="assistant", i=i)}]
    try:
        text = render(tokenizer, conversation)
        render(tokenizer, conversation[:-1], add_generation_prompt=True)
    except Exception as err:  # jinja errors, templates that raise_exception on a role
        return [f"the chat template cannot render a conversation with roles {', '.join(sorted(roles))}: {err}"]
    for message in conversation:
        if message["content"] not in text:
            problems.append(f"the chat template drops the '{message['role']}' messages' text; the model would never "
                            "see it. Use a template that renders every role the data uses (data.chat_template).")
    return problems


def end_of_turn_text(tokenizer) -> str:
    """What the template writes right after an assistant reply (e.g. '<|im_end|>\\n'): trained with the reply."""
    reply = _PROBE.format(role="assistant", i=0)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": reply}]
    text = render(tokenizer, messages)
    return text[text.index(reply) + len(reply):]


def stop_token_ids(tokenizer) -> list[int]:
    """Token ids generation stops at: EOS, and the first token of the template's end of turn."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if getattr(tokenizer, "chat_template", None):
        tail = tokenize_text(tokenizer, end_of_turn_text(tokenizer))
        if tail and tail[0] not in ids:
            ids.append(tail[0])
    return ids


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    text: str
    #: each trained span's characters (start, end) in `text`
    spans: list[tuple[int, int]]


def _spans(tokenizer, conversation) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans of its trained turns."""
    messages = conversation.messages
    text = render(tokenizer, messages)
    spans = []
    for i, trained in enumerate(conversation.trained):
        if not trained:
            continue
        start_text = render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        end_text = render(tokenizer, messages[:i + 1])
        if not text.startswith(start_text) or not text.startswith(end_text):
            raise DataError(
                f"{conversation.where}: the chat template renders the first {i} turns differently alone and inside "
                "the whole conversation (e.g. it rewrites earlier turns), so the trained turns cannot be located. "
                "Use another template (data.chat_template) or data.train_on: all.")
        spans.append((len(start_text), len(end_text)))
    return text, spans


def encode(tokenizer, conversation, train_on: str = "assistant") -> Encoded:
    """`conversation` (a `hftl.data.conversations.Conversation`) as tokens and labels (-100: not trained)."""
    if conversation.is_plain:
        text = conversation.prompt + conversation.completion
        spans = [(len(conversation.prompt), len(text))]
        encoding = tokenizer(text, return_offsets_mapping=True)  # plain text: the tokenizer adds BOS if it wants
        ids, offsets = list(encoding["input_ids"]), list(encoding["offset_mapping"])
        if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
            ids.append(tokenizer.eos_token_id)  # the model learns to stop after the completion
            offsets.append((len(text), len(text)))
        trained = [s >= spans[0][0] and (s, e) != (0, 0) for s, e in offsets]
        trained[-1] = trained[-1] or ids[-1] == tokenizer.eos_token_id
    else:
        text, spans = _spans(tokenizer, conversation)
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(encoding["input_ids"]), list(encoding["offset_mapping"])
        trained = [any(a <= s < b for a, b in spans) for s, _ in offsets]
    if train_on == "all":
        trained = [True] * len(ids)
    return Encoded(ids, [t if keep else IGNORE for t, keep in zip(ids, trained)], text, spans)


def marked_text(tokenizer, encoded: Encoded, start: str = "[[", end: str = "]]") -> str:
    """The rendered example with trained tokens between `start` and `end` (what `hftl validate --show-example` prints)."""
    parts, inside = [], False
    for token, label in zip(encoded.input_ids, encoded.labels):
        if (label != IGNORE) != inside:
            parts.append(start if not inside else end)
            inside = not inside
        parts.append(tokenizer.decode([token]))
    if inside:
        parts.append(end)
    return "".join(parts)


def generate(model, tokenizer, messages: list[dict], max_new_tokens: int = 128, sample: bool = False,
             seed: int | None = None, temperature: float = 0.7, top_p: float = 0.95, stream: bool = False,
             repetition_penalty: float = 1.0) -> dict:
    """The model's reply to `messages` (`reply`: its text, and whether it stopped on its own or ran to the limit).

    `stream=True` prints the reply as it is generated (`hftl chat`); `repetition_penalty`: see `reply_penalty`.
    """
    import torch
    from transformers import TextStreamer, set_seed

    ids = torch.tensor([prompt_ids(tokenizer, messages)], device=model.device)
    stops = stop_token_ids(tokenizer)
    options = {"max_new_tokens": max_new_tokens, "do_sample": sample, "eos_token_id": stops,
               "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0],
               "logits_processor": reply_penalty(repetition_penalty, ids.shape[1])}
    if sample:
        options.update(temperature=temperature, top_p=top_p, top_k=0)
        if seed is not None:
            set_seed(seed)
    else:  # a checkpoint's generation_config may ask for sampling; greedy means greedy
        options.update(temperature=None, top_p=None, top_k=None)
    if stream:
        options["streamer"] = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    model.eval()
    with torch.inference_mode():
        output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **options)
    return reply(tokenizer, output[0, ids.shape[1]:].tolist(), stops)


def reply_penalty(repetition_penalty: float, prompt_length: int):
    """transformers' repetition penalty (CTRL's: the logits of tokens already used are divided by it) on the reply's
    own tokens only. Left as `generate(repetition_penalty=...)` does it, it would count the prompt too, and every
    chat prompt holds the end-of-turn token: a penalty meant to break loops would make the model stop less."""
    from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

    if repetition_penalty == 1.0:
        return LogitsProcessorList()
    return LogitsProcessorList([RepetitionPenaltyLogitsProcessor(float(repetition_penalty), prompt_length)])


#: a reply that reached its token limit is "repeating" when its last this many tokens already occur earlier in it
#: (greedy decoding caught in a loop, whatever the loop's length), and "cut" otherwise (an answer still going, or a
#: loop this rule cannot see, such as one counting in Roman numerals). Numbers are masked first: a numbered list
#: that repeats its item under a rising counter ("16. The Bravo...", "17. The Bravo...") is a loop.
REPEAT_WINDOW = 32
#: what every run of number tokens becomes before the loop check (no token id is negative)
NUMBER = -1


def reply(tokenizer, new: list[int], stops: list[int]) -> dict:
    """What generated tokens `new` say: {"text", "stopped", "end", "new_tokens"}.

    `end` is "stopped" (it emitted EOS / end of turn: everything after is padding), "repeating" or "cut" (it
    reached the token limit; see `REPEAT_WINDOW`); `new_tokens` counts the reply's tokens, the stop included.
    """
    end = next((k for k, token in enumerate(new) if token in stops), None)
    if end is not None:
        new, how = new[:end + 1], "stopped"
    else:
        how = "repeating" if is_looping(numbers_masked(tokenizer, new)) else "cut"
    return {"text": tokenizer.decode(new, skip_special_tokens=True).strip(), "stopped": how == "stopped",
            "end": how, "new_tokens": len(new)}


def is_number_token(tokenizer, token: int) -> bool:
    """Whether `token` decodes to digits alone (spaces aside): a token that `NUMBER` masks."""
    return tokenizer.decode([token]).strip().isdigit()


def numbers_masked(tokenizer, ids: list[int]) -> list[int]:
    """`ids` with every run of tokens that decode to digits replaced by one `NUMBER` (so 9 and 10 look alike)."""
    masked: list[int] = []
    for token in ids:
        if is_number_token(tokenizer, token):
            if masked and masked[-1] == NUMBER:
                continue
            token = NUMBER
        masked.append(token)
    return masked


def is_looping(ids: list[int], window: int = REPEAT_WINDOW) -> bool:
    """Whether the last `window` tokens of `ids` already occur earlier in `ids`."""
    if len(ids) <= window:
        return False
    tail = ids[-window:]
    return any(ids[start:start + window] == tail for start in range(len(ids) - window))


def loop_stop(tokenizer, prompt_width: int, stops: list[int]):
    """A `generate` stopping criterion that ends each row of a batch as soon as its reply repeats itself: the
    `is_looping` rule (numbers masked) checked at every token, not only at the limit. For callers that only need the
    replies that loop: the rest of the token limit is saved. A row's tokens up to there are the plain greedy reply's
    (the criterion only stops); `looped[row]` is how many reply tokens it had. A reply that repeats a window and
    would later have moved on is ended too, so it reads `repeating` where the full reply might not. Rows that emitted
    a stop token are left alone."""
    from transformers import StoppingCriteria

    class LoopStop(StoppingCriteria):
        def __init__(self):
            self.looped: dict[int, int] = {}
            self._masked: dict[int, list[int]] = {}
            self._seen: dict[int, set] = {}  # each row's earlier windows of `REPEAT_WINDOW` masked tokens
            self._finished: set[int] = set()
            self._is_number: dict[int, bool] = {}  # decoding each token once: this runs at every generated token

        def __call__(self, input_ids, scores, **kwargs):
            import torch

            for row, token in enumerate(input_ids[:, -1].tolist()):
                if token in stops:
                    self._finished.add(row)
                if row not in self.looped and row not in self._finished and self.extend(row, token):
                    self.looped[row] = input_ids.shape[1] - prompt_width
            return torch.tensor([row in self.looped for row in range(input_ids.shape[0])], device=input_ids.device)

        def extend(self, row: int, token: int) -> bool:
            """Add `token` to the row's masked reply; whether its last window now occurs earlier in it."""
            masked = self._masked.setdefault(row, [])
            if token not in self._is_number:
                self._is_number[token] = is_number_token(tokenizer, token)
            if self._is_number[token]:
                if masked and masked[-1] == NUMBER:  # a longer number: the masked reply is unchanged
                    return False
                token = NUMBER
            if len(masked) >= REPEAT_WINDOW:  # the window ending before this token becomes an earlier one
                self._seen.setdefault(row, set()).add(tuple(masked[-REPEAT_WINDOW:]))
            masked.append(token)
            return len(masked) > REPEAT_WINDOW and tuple(masked[-REPEAT_WINDOW:]) in self._seen[row]

    return LoopStop()
