"""Conversations: every supported input layout detected once and turned into one internal form.

The internal form (`Conversation`) is a list of messages, each with a `trained` flag: which turns the loss
sees is data, decided here from the layout, not found later by matching strings in rendered text (see
../shared/STYLE.md pattern 15, after torchtune's `Message(masked=...)`). Layouts:

* `messages`: a list of {"role", "content"} (system / user / assistant, multi-turn); assistant turns train.
* `prompt-completion`: `prompt` and `completion`, both plain text (no chat template: the text is the prompt, then
  the completion and EOS) or both lists of messages (the completion's messages train).
* `instruction`: Alpaca-style columns mapped by config (instruction, optional input, output): one user turn
  (the instruction, a blank line, the input) and one assistant turn.

`read_conversations` reads a whole source and checks every row, raising one `DataError` that lists every problem
with its file and line (row number for parquet, saved datasets and the Hub).
"""

from __future__ import annotations

from dataclasses import dataclass

from hftl.errors import DataError

ROLES = ("system", "user", "assistant")
FORMATS = ("auto", "messages", "prompt-completion", "instruction")
#: problems listed in one error before the rest are only counted
SHOWN = 40


def first_user_turn(messages: list[dict]) -> str:
    """The content of the first user message ("" if none)."""
    return next((str(m.get("content", "")) for m in messages if m.get("role") == "user"), "")


@dataclass
class Conversation:
    """One example. `messages` is None for plain-text prompt-completion (then `prompt` / `completion` hold it)."""

    messages: list[dict] | None = None
    trained: list[bool] | None = None
    prompt: str | None = None
    completion: str | None = None
    where: str = ""

    @property
    def is_plain(self) -> bool:
        return self.messages is None

    def root_prompt(self) -> str:
        """The first user turn (the plain prompt): what examples of one prompt share, for a grouped hold-out."""
        return first_user_turn(self.messages) if self.messages is not None else self.prompt or ""

    def prompt_messages(self) -> list[dict]:
        """The messages before the last trained turn: what a model is given at inference."""
        last = max(i for i, t in enumerate(self.trained) if t)
        return self.messages[:last]

    def reference(self) -> str:
        """The answer to compare a generation with: the last trained turn (or the plain completion)."""
        if self.is_plain:
            return self.completion
        last = max(i for i, t in enumerate(self.trained) if t)
        return self.messages[last]["content"]


def detect_format(columns, data) -> str | None:
    """The layout `data.format: auto` means for a source with these columns (None: none fits)."""
    if data.messages_column in columns:
        return "messages"
    if data.prompt_column in columns and data.completion_column in columns:
        return "prompt-completion"
    if data.instruction_column in columns and data.output_column in columns:
        return "instruction"
    return None


def required_columns(data, fmt: str) -> dict[str, str]:
    """config field -> column name, for layout `fmt`."""
    if fmt == "messages":
        return {"messages_column": data.messages_column}
    if fmt == "prompt-completion":
        return {"prompt_column": data.prompt_column, "completion_column": data.completion_column}
    return {"instruction_column": data.instruction_column, "output_column": data.output_column}


def format_problem(columns, data, where: str, source: str) -> str | None:
    fmt = data.format if data.format != "auto" else detect_format(columns, data)
    if fmt is None:
        return (f"{where}: {source} has columns {', '.join(columns)}; none of the layouts fits. Give a "
                f"'{data.messages_column}' column (chat messages), '{data.prompt_column}' + '{data.completion_column}', "
                f"or '{data.instruction_column}' + '{data.output_column}' (names set by data.messages_column, "
                "data.prompt_column... ; data.format picks the layout).")
    missing = [f"{field} '{name}'" for field, name in required_columns(data, fmt).items() if name not in columns]
    if missing:
        return f"{where}: {source} lacks the column(s) {', '.join(missing)} of data.format '{fmt}'."
    return None


def _check_messages(messages, what: str, problems: list[str], need_assistant_last: bool) -> list[dict] | None:
    """Problems of one list of messages (appended to `problems`); the messages, cleaned, if there are none."""
    if not isinstance(messages, list) or not messages:
        problems.append(f"{what} is {'empty' if isinstance(messages, list) else type(messages).__name__}: "
                        "expected a list of {\"role\": ..., \"content\": ...} messages")
        return None
    found = len(problems)
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or \
                not isinstance(message.get("content"), str):
            problems.append(f"{what} message {i + 1} is not an object with string 'role' and 'content'")
            continue
        role = message["role"]
        if role not in ROLES:
            problems.append(f"{what} message {i + 1} has unknown role '{role}' (known: {', '.join(ROLES)})")
            continue
        if role == "assistant" and not message["content"].strip():
            problems.append(f"{what} message {i + 1} is an empty assistant turn (nothing to learn; remove the row)")
        clean.append({"role": role, "content": message["content"]})
    if len(problems) > found:
        return None
    roles = [m["role"] for m in clean]
    if "system" in roles[1:]:
        problems.append(f"{what}: a system message at position {roles.index('system', 1) + 1}; only the first may be one")
        return None
    turns = roles[1:] if roles[0] == "system" else roles
    expected = ["user", "assistant"]
    for i, role in enumerate(turns):
        if role != expected[i % 2]:
            position = i + 1 + (roles[0] == "system")
            problems.append(f"{what}: turns out of order: message {position} is '{role}' where '{expected[i % 2]}' "
                            "was expected (user and assistant alternate, starting with user)")
            return None
    if need_assistant_last and (not turns or turns[-1] != "assistant"):
        problems.append(f"{what}: the conversation ends without an assistant turn (nothing to train on); end it with "
                        "the assistant's reply, or drop the trailing turn")
        return None
    return clean


def to_conversation(row: dict, data, fmt: str, where: str, problems: list[str]) -> Conversation | None:
    """One row in layout `fmt` as a `Conversation`; problems (prefixed with `where`) appended to `problems`."""
    found = []
    conversation = None
    if fmt == "messages":
        messages = _check_messages(row.get(data.messages_column), f"'{data.messages_column}'", found, True)
        if messages is not None:
            conversation = Conversation(messages, [m["role"] == "assistant" for m in messages])
    elif fmt == "prompt-completion":
        prompt, completion = row.get(data.prompt_column), row.get(data.completion_column)
        if isinstance(prompt, str) and isinstance(completion, str):
            if not prompt.strip():
                found.append(f"'{data.prompt_column}' is empty")
            if not completion.strip():
                found.append(f"'{data.completion_column}' is empty (nothing to train on)")
            conversation = Conversation(prompt=prompt, completion=completion)
        elif isinstance(prompt, list) and isinstance(completion, list):
            both = f"'{data.prompt_column}' + '{data.completion_column}'"
            messages = _check_messages(prompt + completion, both, found, True)
            if messages is not None:
                if not prompt or not completion:
                    found.append(f"{both}: the prompt and the completion each need at least one message")
                elif any(m["role"] != "assistant" for m in messages[len(prompt):]):
                    found.append(f"'{data.completion_column}' holds non-assistant turns; it must hold the reply only")
                else:
                    conversation = Conversation(messages, [i >= len(prompt) for i in range(len(messages))])
        else:
            found.append(f"'{data.prompt_column}' and '{data.completion_column}' must be both text or both lists of "
                         f"messages, got {type(prompt).__name__} and {type(completion).__name__}")
    else:
        instruction, extra, output = (row.get(data.instruction_column), row.get(data.input_column),
                                      row.get(data.output_column))
        for name, value in ((data.instruction_column, instruction), (data.output_column, output)):
            if not isinstance(value, str) or not value.strip():
                found.append(f"'{name}' is empty" + (" (nothing to train on)" if name == data.output_column else ""))
        if not found:
            user = instruction if not (isinstance(extra, str) and extra.strip()) else f"{instruction}\n\n{extra}"
            conversation = Conversation([{"role": "user", "content": user}, {"role": "assistant", "content": output}],
                                        [False, True])
    if conversation is not None and conversation.messages is not None and data.system_prompt \
            and conversation.messages[0]["role"] != "system":
        conversation.messages.insert(0, {"role": "system", "content": data.system_prompt})
        conversation.trained.insert(0, False)
    problems.extend(f"{where}: {p}" for p in found)
    if found:
        return None
    conversation.where = where
    return conversation


def read_rows(source: str, dataset_config: str | None, split: str) -> tuple[list[dict], list[str]]:
    """(rows, where each row is): local JSON(L)/parquet files by line or row; other sources by row number."""
    from hftl.data.checks import read_table
    from hftl.data.loading import load_split

    table = read_table(source)
    if table is not None:
        rows = [{name: table.values[name][i] for name in table.columns} for i in range(len(table))]
        return rows, [f"{source}: {table.where(i)}" for i in range(len(table))]
    dataset = load_split(source, dataset_config, split=split)
    return dataset.to_list(), [f"{source}: row {i + 1}" for i in range(len(dataset))]


def read_limited_rows(source: str, data, split: str, limit: int | None) -> tuple[list, list, list[str]]:
    """(rows, where each row is, the column names of the first 100 rows) of `source`, at most `limit` rows; an empty
    source is refused."""
    rows, places = read_rows(source, data.dataset_config, split)
    if limit is not None:
        rows, places = rows[:limit], places[:limit]
    if not rows:
        raise DataError(f"{source}: no rows. Add examples.")
    columns = list(dict.fromkeys(key for row in rows[:100] for key in row))
    return rows, places, columns


def read_conversations(source: str, data, split: str, limit: int | None = None) -> list[Conversation]:
    """Every row of `source` as a `Conversation`; one `DataError` lists every problem of every row."""
    rows, places, columns = read_limited_rows(source, data, split, limit)
    problem = format_problem(columns, data, f"data.{split}", source)
    if problem:
        raise DataError(problem)
    fmt = data.format if data.format != "auto" else detect_format(columns, data)
    problems: list[str] = []
    conversations = [to_conversation(row, data, fmt, where, problems) for row, where in zip(rows, places)]
    raise_problems(problems, source)
    return conversations


def raise_problems(problems: list[str], source: str) -> None:
    if not problems:
        return
    shown = "\n".join(f"  - {p}" for p in problems[:SHOWN])
    more = f"\n  ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    raise DataError(f"{len(problems)} problem(s) in {source}:\n{shown}{more}\nFix or remove these rows.")


@dataclass
class Pair:
    """A preference pair: a conversation up to the user's last turn, and a better and a worse assistant reply."""

    prompt: list[dict]
    chosen: list[dict]
    rejected: list[dict]
    where: str = ""

    def root_prompt(self) -> str:
        """The first user turn: pairs ranked from one conversation tree share it."""
        return first_user_turn(self.prompt)

    def conversation(self, which: str) -> Conversation:
        """prompt + the chosen or rejected reply, the reply trained (what `hftl.chat.encode` takes)."""
        reply = self.chosen if which == "chosen" else self.rejected
        return Conversation(self.prompt + reply, [False] * len(self.prompt) + [True] * len(reply), where=self.where)


def to_pair(row: dict, data, where: str, problems: list[str]) -> Pair | None:
    """One row of TRL's conversational preference format as a `Pair`; problems appended to `problems`."""
    found = []
    prompt = row.get(data.prompt_column)
    if not isinstance(prompt, list):
        found.append(f"'{data.prompt_column}' must be a list of messages (TRL's conversational preference format), "
                     f"got {type(prompt).__name__}")
    replies = {}
    for name in (data.chosen_column, data.rejected_column):
        reply = row.get(name)
        if isinstance(prompt, list):
            messages = _check_messages(prompt + (reply if isinstance(reply, list) else [reply]),
                                       f"'{data.prompt_column}' + '{name}'", found, True)
            if messages is not None:
                if not isinstance(reply, list) or any(m["role"] != "assistant" for m in messages[len(prompt):]):
                    found.append(f"'{name}' must hold the assistant's reply only")
                else:
                    replies[name] = messages
    problems.extend(f"{where}: {p}" for p in dict.fromkeys(found))
    if found:
        return None
    n = len(prompt)
    return Pair(replies[data.chosen_column][:n], replies[data.chosen_column][n:], replies[data.rejected_column][n:],
                where)


def read_pairs(source: str, data, split: str, limit: int | None = None) -> list[Pair]:
    """Every row of `source` as a `Pair`; one `DataError` lists every problem of every row."""
    rows, places, columns = read_limited_rows(source, data, split, limit)
    missing = [c for c in (data.prompt_column, data.chosen_column, data.rejected_column) if c not in columns]
    if missing:
        raise DataError(f"data.{split}: {source} lacks the column(s) {', '.join(missing)} (it has {', '.join(columns)}); "
                        "set data.prompt_column / chosen_column / rejected_column.")
    problems: list[str] = []
    pairs = [to_pair(row, data, where, problems) for row, where in zip(rows, places)]
    raise_problems(problems, source)
    return pairs
