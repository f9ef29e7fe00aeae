"""Reading token-classification data and checking its tags: CoNLL column files, a tokens and a tags column
(JSON(L), parquet, saved or Hub datasets), and the IOB2 checks across splits. Every problem is collected, with
file and line, before anything heavy runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hftl.config.parse import did_you_mean, field
from hftl.config.schema import DataConfig
from hftl.data.loading import FILE_FORMATS, source_kind
from hftl.errors import DataError

#: CoNLL column files; `.txt` is plain text for the other tasks, a CoNLL file here
CONLL_SUFFIXES = (".txt", ".conll")
#: what `check_source` accepts for this task (csv/tsv cannot hold a list of words per row)
FORMATS = {**{s: FILE_FORMATS[s] for s in (".json", ".jsonl", ".parquet")},
           ".txt": ("conll", {}), ".conll": ("conll", {})}
#: at most this many problems of one kind are listed per file
MAX_LISTED = 5
DOCSTART = "-DOCSTART-"


@dataclass
class TokenClassificationData(DataConfig):
    tokens_column: str = field(
        "tokens", help="column with each sentence's words, a list of strings (not for CoNLL files)"
    )
    tags_column: str = field(
        "ner_tags",
        help="column with one tag per word: IOB2 strings (O, B-type, I-type) or integer ids (not for CoNLL files)",
    )
    tag_column_index: int = field(
        -1, help="CoNLL files (.txt/.conll): the column holding the tag (the word is column 0; default the last)"
    )
    label_names: list[str] | None = field(
        None, help="tag names in id order, for integer tags (a ClassLabel feature of a saved or Hub dataset gives them)"
    )
    label_all_subtokens: bool = field(
        False, help="also train on a word's continuation sub-tokens (with the I- version of its tag); default: only "
        "the first sub-token carries the tag, the others are ignored"
    )
    max_length: int = field(
        128, help="window length in sub-tokens; longer sentences are split into overlapping windows"
    )
    stride: int = field(32, help="sub-tokens shared by consecutive windows of a long sentence (context for both)")

    def check(self) -> list[str]:
        problems = []
        if self.max_length < 8:
            problems.append(f"max_length: must be at least 8 sub-tokens, got {self.max_length}.")
        elif not 0 <= self.stride < self.max_length - 2:
            problems.append(f"stride: must be >= 0 and smaller than max_length - 2 ({self.max_length - 2}), "
                            f"got {self.stride}.")
        if self.tag_column_index == 0:
            problems.append("tag_column_index: column 0 holds the word; the tag is column 1 or later (-1 = the last).")
        return problems


def _listed(items: list[str]) -> str:
    more = f"; and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return "; ".join(items[:MAX_LISTED]) + more


def read_conll(path: str | Path, tag_column_index: int = -1, problems: list[str] | None = None) -> list[dict]:
    """Read a CoNLL column file: `word<TAB or spaces>...tag` per line, a blank line between sentences.

    `-DOCSTART-` lines are skipped. Columns are split on tabs where a line has one, else on whitespace.

    Args:
        path (`str` or `Path`): the file.
        tag_column_index (`int`, *optional*, defaults to -1): the column holding the tag (the word is column 0).
        problems (`list[str]`, *optional*): where to collect problems; without it, a `DataError` listing them
            all is raised.

    Returns:
        `list[dict]`: one `{"tokens": [...], "tags": [...], "line": first line, "lines": line of each word}` per
        sentence.
    """
    path = Path(path)
    collect = problems is not None
    problems = [] if problems is None else problems
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        problems.append(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}). Re-save the file as UTF-8.")
        text = ""
    except OSError as err:
        problems.append(f"{path}: cannot be read ({err}).")
        text = ""
    rows, tokens, tags, lines, ragged, empty_tags = [], [], [], [], [], []

    def flush():
        if tokens:
            rows.append({"tokens": list(tokens), "tags": list(tags), "line": lines[0], "lines": list(lines)})
        tokens.clear(), tags.clear(), lines.clear()

    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            flush()
            continue
        parts = [p.strip() for p in line.split("\t")] if "\t" in line else line.split()
        if parts[0] == DOCSTART:
            flush()
            continue
        if len(parts) < 2 or not -len(parts) <= tag_column_index < len(parts) or tag_column_index == 0:
            ragged.append(f"line {number} has {len(parts)} column(s) ({line.strip()[:40]!r})")
            continue
        tag = parts[tag_column_index]
        if not tag:
            empty_tags.append(f"line {number}")
            continue
        tokens.append(parts[0]), tags.append(tag), lines.append(number)
    flush()
    if ragged:
        problems.append(f"{path}: {len(ragged)} line(s) do not hold a word and a tag in column {tag_column_index}: "
                        f"{_listed(ragged)}. Each line must be `word<TAB>tag` (set data.tag_column_index for more "
                        "columns), with a blank line between sentences.")
    if empty_tags:
        problems.append(f"{path}: {len(empty_tags)} line(s) have an empty tag: {_listed(empty_tags)}. "
                        "Fill in the tags.")
    if not rows and not problems:
        problems.append(f"{path}: no sentences found. A CoNLL file holds `word<TAB>tag` lines, a blank line "
                        "between sentences.")
    if problems and not collect:
        raise DataError(" ".join(problems))
    return rows


def rows_from_columns(tokens: list, tags: list, source: str, positions: list[int] | None = None, unit: str = "row",
                      label_names: list[str] | None = None, problems: list[str] | None = None) -> list[dict]:
    """Sentences from a tokens and a tags column: count mismatches and empty sentences are collected in `problems`.

    Integer tags are turned into names with `label_names` (their id order).
    """
    collect = problems is not None
    problems = [] if problems is None else problems
    positions = positions or list(range(1, len(tokens) + 1))
    rows, mismatched, empty, not_lists, bad_ids = [], [], [], [], []
    for position, words, labels in zip(positions, tokens, tags):
        where = f"{unit} {position}"
        if not isinstance(words, (list, tuple)) or not isinstance(labels, (list, tuple)):
            not_lists.append(where)
            continue
        if not words:
            empty.append(where)
            continue
        if len(words) != len(labels):
            mismatched.append(f"{where} has {len(words)} tokens and {len(labels)} tags")
            continue
        if any(isinstance(t, int) and not isinstance(t, bool) for t in labels):
            if not label_names or any(not isinstance(t, int) or not 0 <= t < len(label_names) for t in labels):
                bad_ids.append(where)
                continue
            labels = [label_names[t] for t in labels]
        rows.append({"tokens": [str(w) for w in words], "tags": [str(t) for t in labels], "line": position,
                     "unit": unit})
    if not_lists:
        problems.append(f"{source}: {len(not_lists)} {unit}(s) do not hold a list of tokens and a list of tags: "
                        f"{_listed(not_lists)}. Each row needs both, as lists.")
    if mismatched:
        problems.append(f"{source}: {len(mismatched)} {unit}(s) have different numbers of tokens and tags: "
                        f"{_listed(mismatched)}. Give exactly one tag per token.")
    if empty:
        problems.append(f"{source}: {len(empty)} empty sentence(s) (no tokens): {_listed(empty)}. Drop those {unit}s.")
    if bad_ids:
        hint = (f"ids must be in [0, {len(label_names)})" if label_names
                else "give their names in id order in data.label_names")
        problems.append(f"{source}: integer tags in {len(bad_ids)} {unit}(s) ({_listed(bad_ids)}): {hint}.")
    if problems and not collect:
        raise DataError(" ".join(problems))
    return rows


def _tag_where(row: dict, index: int) -> str:
    if "lines" in row:
        return f"line {row['lines'][index]}"
    return f"{row.get('unit', 'row')} {row['line']}"


def check_tag_sets(splits: dict[str, list[dict]], sources: dict[str, str]) -> list[str]:
    """Tag problems across splits, all at once (each listing capped).

    * every tag is IOB2: `O`, `B-type` or `I-type`;
    * an `I-x` in training needs `x` to begin somewhere in training (a `B-x`);
    * validation and test may only use tags that training has.

    Args:
        splits (`dict[str, list[dict]]`): split name -> sentences (`tokens`, `tags`, `line`), as `read_conll` gives.
        sources (`dict[str, str]`): split name -> the file or dataset, for the messages.
    """
    problems = []
    first = {}  # split -> tag -> where it first occurs
    for name, rows in splits.items():
        seen = first.setdefault(name, {})
        for row in rows:
            for i, tag in enumerate(row["tags"]):
                if tag not in seen:
                    seen[tag] = _tag_where(row, i)
        bad = [f"{tag!r} ({where})" for tag, where in seen.items() if tag != "O" and not tag.startswith(("B-", "I-"))]
        if bad:
            problems.append(f"data.{name}: {sources.get(name)}: {len(bad)} tag(s) are not IOB2: {_listed(bad)}. "
                            "Tags must be O, B-<type> (first word of an entity) or I-<type> (the following "
                            "words); convert other schemes (BIOES, IOB1) to IOB2 first.")
    train = first.get("train", {})
    began = {tag[2:] for tag in train if tag.startswith("B-")}
    orphans = [f"{tag!r} ({where})" for tag, where in train.items() if tag.startswith("I-") and tag[2:] not in began]
    if orphans:
        problems.append(f"data.train: {sources.get('train')}: I- tag(s) of a type that never begins (no B-<type> "
                        f"anywhere in training): {_listed(orphans)}. In IOB2 an entity starts with B-<type>; fix "
                        "the tags (IOB1 data: turn the first I- of each entity into B-).")
    for name, seen in first.items():
        if name == "train" or not train:
            continue
        unseen = [f"{tag!r} ({where})" for tag, where in seen.items() if tag not in train]
        if unseen:
            problems.append(f"data.{name}: {sources.get(name)}: tag(s) that never occur in the training data: "
                            f"{_listed(unseen)}. The model cannot predict them; fix the tags, or add examples of them "
                            f"to data.train. Training tags: {', '.join(sorted(train))}.")
    return problems


def is_conll(source: str) -> bool:
    return source_kind(source) == "file" and Path(source).suffix.lower() in CONLL_SUFFIXES


def read_local_rows(source: str, data: TokenClassificationData, problems: list[str]) -> list[dict] | None:
    """Sentences of a local CoNLL or JSON(L)/parquet file, problems collected; None for other sources."""
    if is_conll(source):
        return read_conll(source, data.tag_column_index, problems)
    from hftl.data.checks import read_table

    try:
        table = read_table(source)
    except DataError as err:
        problems.append(str(err))
        return None
    if table is None:
        return None
    missing = [f"no {role} column '{name}'.{did_you_mean(name, table.columns)}"
               for role, name in (("tokens_column", data.tokens_column), ("tags_column", data.tags_column))
               if name not in table.values]
    if missing:
        problems.append(f"{source}: {' '.join(missing)} Columns: {', '.join(table.columns)}. Set data.tokens_column / "
                        "data.tags_column.")
        return None
    return rows_from_columns(table.values[data.tokens_column], table.values[data.tags_column], source, table.positions,
                             table.unit, data.label_names, problems)


def read_sentences(source: str, data: TokenClassificationData, split: str) -> list[dict]:
    """The sentences of one source (a CoNLL file, a JSON(L)/parquet file, a saved or Hub dataset), as
    `rows_from_columns` gives them; a `DataError` naming the source if its columns are missing."""
    from hftl.data import load_split

    if is_conll(source):
        return read_conll(source, data.tag_column_index)
    dataset = load_split(source, data.dataset_config, split=split)
    missing = [name for name in (data.tokens_column, data.tags_column) if name not in dataset.column_names]
    if missing:
        raise DataError(f"{source}: no column(s) {missing}. Columns: {', '.join(dataset.column_names)}. Set "
                        "data.tokens_column and data.tags_column.")
    names = data.label_names
    inner = getattr(dataset.features[data.tags_column], "feature", None)
    if names is None and hasattr(inner, "names"):  # Sequence(ClassLabel): the dataset names its tags
        names = list(inner.names)
    return rows_from_columns(list(dataset[data.tokens_column]), list(dataset[data.tags_column]), source,
                             label_names=names)


def sentences_dataset(rows: list[dict]):
    """A `datasets.Dataset` of sentences (`tokens`, `tags`) from read rows."""
    import datasets

    return datasets.Dataset.from_dict({"tokens": [row["tokens"] for row in rows], "tags": [row["tags"] for row in rows]})
