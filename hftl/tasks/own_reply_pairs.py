"""Preference pairs from a tuned chat model's own replies that do not end.

Supervised tuning shows a model how answers end, but nothing in it marks a loop as wrong: a small model decoded
greedily can repeat a list item or a passage until the token limit (docs/results.md, the Dolly runs). A preference
step can say so. For each prompt of an instruction data set, the model gives its plain greedy reply; where the
reply does not stop on its own (it loops, or is cut at the limit), the prompt becomes a pair with the data's
reference answer chosen and the model's reply rejected. These are the pairs of SPIN (Chen et al. 2024,
"Self-Play Fine-Tuning Converts Weak Language Models to Strong Language Models"), kept to the replies that did not
end. They are written in TRL's conversational preference format, for preference tuning of the same model.

A reply is ended as soon as its last 32 tokens (numbers masked) occur earlier in it (`hftl.chat.loop_stop`), which
saves most of the generation time of a loop: the rejected reply holds its repeated window twice, not the loop up to
the limit. A reply that repeats itself so and would later have moved on is rejected too.
"""

from __future__ import annotations

import logging
from collections import Counter

from hftl.errors import DataError

logger = logging.getLogger(__name__)
#: prompts generated for between two progress lines in the log, in batches of `batch_size`
CHUNK = 64


def own_reply_pairs(model, tokenizer, conversations: list, max_new_tokens: int, batch_size: int = 16,
                    max_length: int | None = None) -> tuple[list[dict], dict[str, int]]:
    """(pairs, how many replies ended each way) for chat `conversations` (`hftl.data.conversations.Conversation`).

    A pair is {"prompt", "chosen", "rejected", "end", "source"}: the messages before the last trained turn, that
    turn as the chosen reply, the model's reply as the rejected one, how the reply ended (`repeating` or `cut`) and
    the row it came from. With `max_length`, conversations longer than that in tokens (prompt and reference, as
    `hftl.chat` renders them) are skipped, counted as `too_long`: preference tuning at that `data.max_length` would
    drop or cut their pairs, and their long prompts are the slowest to generate for.
    """
    from hftl.chat import encode
    from hftl.tasks.instruction_tuning import generate_batch

    plain = [c.where for c in conversations if c.is_plain]
    if plain:
        raise DataError(f"{len(plain)} conversation(s) are plain text, not chat messages (first: {plain[0]}): pairs "
                        "for preference tuning need a chat prompt.")
    ends: Counter = Counter()
    if max_length is not None:
        fitting = [c for c in conversations if len(encode(tokenizer, c).input_ids) <= max_length]
        ends["too_long"] = len(conversations) - len(fitting)
        conversations = fitting
    replies: list[dict] = []
    for start in range(0, len(conversations), CHUNK):
        replies += generate_batch(model, tokenizer, [c.prompt_messages() for c in conversations[start:start + CHUNK]],
                                  max_new_tokens, batch_size, stop_loops=True)
        logger.info("replied to %d of %d prompts", len(replies), len(conversations))
    ends.update(r["end"] for r in replies)
    pairs = [{"prompt": c.prompt_messages(), "chosen": [{"role": "assistant", "content": c.reference()}],
              "rejected": [{"role": "assistant", "content": r["text"]}], "end": r["end"], "source": c.where}
             for c, r in zip(conversations, replies)
             if not r["stopped"] and r["text"] and r["text"] != c.reference().strip()]
    return pairs, dict(ends)
