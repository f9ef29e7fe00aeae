"""Token classification (named-entity recognition): a tag per word, IOB2 tags, entity-level metrics.

Data is a list of words and a list of tags per sentence: CoNLL column files (`.txt`/`.conll`), JSON(L) or
parquet files with a tokens and a tags column, saved datasets or Hub datasets. Words are split into
sub-tokens by the checkpoint's fast tokenizer; the first sub-token of a word carries its tag (`align_labels`).
Sentences longer than `data.max_length` sub-tokens are cut into overlapping windows (`data.stride`) and each
word's prediction is taken from the window where it has the most context (`stitch_windows`).

Metrics are entity-level (seqeval, strict IOB2: an entity counts only with its exact span and type), computed
on whole sentences after stitching; `predict` on raw text returns entity spans with character offsets, grouped
the way `pipeline("token-classification", aggregation_strategy="first")` groups them.

The task logic lives in module-level functions (`read_conll`, `check_tag_sets`, `align_labels`,
`tokenize_and_align`, `stitch_windows`, `decode_entities`, `token_classification_report`); the recipe class at
the bottom only wires them into `hftl.recipe.Recipe`.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from hftl.config.parse import did_you_mean, field
from hftl.config.schema import DataConfig
from hftl.data import LabelMap, check_source, fingerprint, load_split
from hftl.data.checks import check_validation_split
from hftl.data.columns import split_sources
from hftl.data.holdout import holdout_indices
from hftl.data.loading import FILE_FORMATS, source_kind
from hftl.errors import DataError, HftlError
from hftl.modeling import check_length_limit, load_pretrained_model, load_tokenizer
from hftl.recipe import PreparedData, Recipe, register_task

logger = logging.getLogger(__name__)

#: CoNLL column files; `.txt` is plain text for the other tasks, a CoNLL file here
CONLL_SUFFIXES = (".txt", ".conll")
#: what `check_source` accepts for this task (csv/tsv cannot hold a list of words per row)
FORMATS = {**{s: FILE_FORMATS[s] for s in (".json", ".jsonl", ".parquet")},
           ".txt": ("conll", {}), ".conll": ("conll", {})}
#: at most this many problems of one kind are listed per file
MAX_LISTED = 5
#: label id of positions the loss and the metrics ignore (special tokens, continuation sub-tokens)
IGNORE = -100
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


# -- reading and checking -------------------------------------------------------------------------------
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


# -- the tokenizer: words given one by one become the pieces a text gives ---------------------------------------
#: words without punctuation that the word path and the text path must split alike (`words_as_in_text`)
PROBE_WORDS = ("Alice", "met", "Bob", "Smith", "in", "Paris", "on", "Monday")


def _byte_level_parts(pre_tokenizer) -> list:
    """The `tokenizers.pre_tokenizers.ByteLevel` parts of a backend pre-tokenizer (itself, or inside a Sequence)."""
    from tokenizers import pre_tokenizers

    if isinstance(pre_tokenizer, pre_tokenizers.ByteLevel):
        return [pre_tokenizer]
    parts = []
    if isinstance(pre_tokenizer, pre_tokenizers.Sequence):
        index = 0
        while True:
            try:
                part = pre_tokenizer[index]
            except IndexError:
                break
            parts += _byte_level_parts(part)
            index += 1
    return parts


def words_as_in_text(tokenizer, name: str):
    """`tokenizer` set up so that words given one by one (`is_split_into_words`, how sentences are trained and
    tagged) become the pieces the same words give inside a text (how raw text is predicted), checked on a probe.

    Byte-level BPE (GPT-2, RoBERTa, Llama-3) marks a word's leading space in its first piece (`Ġ`): a word
    given alone has no space before it unless the pre-tokenizer adds one, so `add_prefix_space` is switched on
    in the backend's ByteLevel pre-tokenizer itself (transformers 5's generic backend only stores the attribute
    when the tokenizer is loaded with it). Raw text then gets the space before its first word too.

    Raises:
        `HftlError` naming the tokenizer, where the probe's two paths still give different pieces.
    """
    backend = tokenizer.backend_tokenizer
    for part in _byte_level_parts(backend.pre_tokenizer):
        part.add_prefix_space = True  # changes the backend in place (a view of its pre-tokenizer)
        tokenizer.add_prefix_space = True
    words = list(PROBE_WORDS)
    by_word = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    in_text = tokenizer(" ".join(words), add_special_tokens=False)
    if by_word["input_ids"] != in_text["input_ids"] or by_word.word_ids() != in_text.word_ids():
        raise HftlError(
            f"model.name_or_path: {name}: its tokenizer ({type(tokenizer).__name__}, pre-tokenizer "
            f"{backend.pre_tokenizer!r}) splits words given one by one differently from the same words in a "
            f"text: {by_word.tokens()} against {in_text.tokens()} for {' '.join(words)!r}. Token classification "
            "trains on words and predicts on texts, so it would serve pieces it never trained on. Use a checkpoint "
            "whose tokenizer splits text into words before its sub-tokens (BERT, RoBERTa, GPT-2, Llama and "
            "SentencePiece models do), or fix the pre_tokenizer in its tokenizer.json.")
    tokenizer.padding_side = "right"  # predictions are read back at each sub-token's unpadded position
    return tokenizer


# -- sub-token alignment and windows -------------------------------------------------------------------------
def word_starts(word_ids: list) -> list[bool]:
    """True at the first sub-token of each word of one sequence (`word_ids` of a fast tokenizer's encoding)."""
    starts, previous = [], None
    for word in word_ids:
        starts.append(word is not None and word != previous)
        previous = word
    return starts


def window_word_starts(word_ids: list[list], docs: list[int], stride: int) -> list[list[bool]]:
    """Word starts of overflowing windows: True only at a word's first sub-token in its whole sentence.

    A window can begin inside a word; its first position then continues that word and is no start. The
    tokenizer's windows of one sentence are consecutive and each repeats the last `stride` sub-tokens of the
    one before, so the position of every sub-token in the whole sentence follows from the window lengths.
    """
    result, previous_doc, base, previous_count, sentence = [], None, 0, 0, {}
    for ids, doc in zip(word_ids, docs):
        if doc != previous_doc:
            base, sentence, previous_doc = 0, {}, doc
        else:
            base += previous_count - stride
        starts, count = [], 0
        for word in ids:
            if word is None:
                starts.append(False)
                continue
            index = base + count
            sentence[index] = word
            starts.append(index == 0 or sentence.get(index - 1) != word)
            count += 1
        result.append(starts)
        previous_count = count
    return result


def align_labels(word_ids: list, word_label_ids: list[int], label_all_subtokens: bool = False,
                 b_to_i: dict[int, int] | None = None, starts: list[bool] | None = None) -> list[int]:
    """Sub-token labels of one sequence from its words' label ids.

    Args:
        word_ids (`list[int | None]`): the word of each sub-token (None for special tokens), as `encoding.word_ids()`.
        word_label_ids (`list[int]`): the label id of each word.
        label_all_subtokens (`bool`, *optional*, defaults to `False`): label continuation sub-tokens too, with the
            I- version of the word's tag (`b_to_i`); otherwise they get -100 (ignored by the loss).
        b_to_i (`dict[int, int]`, *optional*): B-x id -> I-x id; a B- id missing here leaves its continuations ignored.
        starts (`list[bool]`, *optional*): which positions begin a word (default: where the word id changes;
            windows pass `window_word_starts`).

    Returns:
        `list[int]`: one label id per sub-token, -100 where ignored.
    """
    starts = word_starts(word_ids) if starts is None else starts
    labels = []
    for word, start in zip(word_ids, starts):
        if word is None:
            labels.append(IGNORE)
        elif start:
            labels.append(word_label_ids[word])
        elif label_all_subtokens:
            label = word_label_ids[word]
            labels.append(label if b_to_i is None else b_to_i.get(label, label))
        else:
            labels.append(IGNORE)
    return labels


def b_to_i_map(names: list[str] | tuple[str, ...]) -> dict[int, int]:
    """B-x id -> I-x id for the label names (B- tags without an I- tag map to -100: continuations ignored)."""
    ids = {name: i for i, name in enumerate(names)}
    return {i: ids.get("I-" + name[2:], IGNORE) for i, name in enumerate(names) if name.startswith("B-")}


def window_size(tokenizer, max_length: int) -> int:
    """Sub-tokens of content a window of `max_length` holds (the rest are special tokens)."""
    return max_length - tokenizer.num_special_tokens_to_add(pair=False)


def check_windows(tokenizer, max_length: int, stride: int) -> None:
    content = window_size(tokenizer, max_length)
    if stride >= content:
        raise HftlError(f"data.stride: {stride} must be smaller than the {content} sub-tokens a window of max_length "
                        f"{max_length} holds (after special tokens). Lower data.stride or raise data.max_length.")


def shorten_long_words(tokenizer, sentences: list[list[str]], limit: int) -> tuple[list[list[str]], int]:
    """Cut words longer than `limit` sub-tokens to their first `limit` (a window must hold at least one word).

    Returns the sentences (copied where changed) and how many words were cut. Only the first sub-token carries
    a word's tag, so cutting loses no label.
    """
    # a sub-token covers at least one character, or a single byte of one (byte-level BPE): 4 bytes at most
    suspects = sorted({w for words in sentences for w in words if len(w) * 4 > limit})
    if not suspects:
        return sentences, 0
    encoded = tokenizer(suspects, add_special_tokens=False, return_offsets_mapping=True)
    cut = {}
    for word, ids, offsets in zip(suspects, encoded["input_ids"], encoded["offset_mapping"]):
        if len(ids) > limit:
            cut[word] = word[: offsets[limit - 1][1]]
    if not cut:
        return sentences, 0
    count = sum(w in cut for words in sentences for w in words)
    return [[cut.get(w, w) for w in words] if any(w in cut for w in words) else words for words in sentences], count


def encode_windows(tokenizer, inputs: list, max_length: int, stride: int, is_split_into_words: bool = True,
                   offsets: bool = False) -> dict:
    """Tokenize sentences (lists of words) or texts into windows of `max_length` overlapping by `stride`.

    Returns:
        `dict`: `encoding` (the `BatchEncoding`, one row per window), `doc` (the input of each window),
        `word_ids` (per window, None at special tokens) and `starts` (per window, True at each word's first
        sub-token in its whole input; see `window_word_starts`).
    """
    check_windows(tokenizer, max_length, stride)
    encoding = tokenizer(inputs, is_split_into_words=is_split_into_words, truncation=True, max_length=max_length,
                         stride=stride, return_overflowing_tokens=True, return_offsets_mapping=offsets)
    docs = list(encoding.pop("overflow_to_sample_mapping"))
    word_ids = [encoding.word_ids(i) for i in range(len(encoding["input_ids"]))]
    starts = window_word_starts(word_ids, docs, stride)
    return {"encoding": encoding, "doc": docs, "word_ids": word_ids, "starts": starts}


def tokenize_and_align(tokenizer, sentences: list[list[str]], label_ids: list[list[int]] | None, max_length: int,
                       stride: int, label_all_subtokens: bool = False, b_to_i: dict[int, int] | None = None) -> dict:
    """Model inputs (`input_ids`, `attention_mask`, ..., `labels`) of word-split sentences, one row per window.

    Sentences longer than a window are split into windows overlapping by `stride` sub-tokens; words longer
    than a window are cut (with a warning that counts them). The returned dict also holds `doc`, `word_ids`
    (-1 at special tokens) and `starts`, which `stitch_windows` needs to put predictions back on words.
    """
    sentences, cut = shorten_long_words(tokenizer, sentences, window_size(tokenizer, max_length))
    if cut:
        logger.warning("%d word(s) longer than a window (%d sub-tokens) were cut to fit; each keeps its tag on its "
                       "first sub-token.", cut, window_size(tokenizer, max_length))
    windows = encode_windows(tokenizer, sentences, max_length, stride)
    features = {key: [list(v) for v in values] for key, values in windows["encoding"].items()}
    if label_ids is not None:
        features["labels"] = [
            align_labels(ids, label_ids[doc], label_all_subtokens, b_to_i, starts)
            for ids, doc, starts in zip(windows["word_ids"], windows["doc"], windows["starts"])
        ]
    features["doc"] = windows["doc"]
    features["word_ids"] = [[-1 if w is None else w for w in ids] for ids in windows["word_ids"]]
    features["starts"] = windows["starts"]
    return features


def stitch_windows(word_ids: list[list], starts: list[list[bool]], docs: list[int], predictions,
                   num_words: list[int]) -> list[list]:
    """One prediction per word from per-window, per-sub-token predictions.

    Each word's prediction is read at its first sub-token, in the window where that sub-token is farthest from
    a window edge (the most context on both sides); ties go to the earlier window.

    Args:
        word_ids (`list[list[int | None]]`): per window, the word of each position (None or -1: special token).
        starts (`list[list[bool]]`): per window, True at each word's first sub-token.
        docs (`list[int]`): the sentence of each window.
        predictions: per window, per position, anything (label ids, probability vectors).
        num_words (`list[int]`): words per sentence.

    Returns:
        `list[list]`: per sentence, the prediction of each word (None for a word no window holds, e.g. a word
        the tokenizer turned into no sub-token at all).
    """
    best = [[None] * n for n in num_words]
    context = [[-1] * n for n in num_words]
    for ids, flags, doc, values in zip(word_ids, starts, docs, predictions):
        content = [p for p, word in enumerate(ids) if word is not None and word != -1]
        if not content:
            continue
        low, high = content[0], content[-1]
        for p in content:
            if flags[p]:
                word, room = ids[p], min(p - low, high - p)
                if room > context[doc][word]:
                    context[doc][word], best[doc][word] = room, values[p]
    return best


# -- entities and metrics ------------------------------------------------------------------------------------
def _tag_parts(tag: str) -> tuple[str, str]:
    """(B or I, type) the way the transformers pipeline reads a tag (a tag without prefix continues as I)."""
    if tag.startswith(("B-", "I-")):
        return tag[0], tag[2:]
    return "I", tag


def decode_entities(text: str, spans: list[tuple[int, int] | None], tags: list[str], scores: list[float]) -> list[dict]:
    """Entity spans from word tags, grouped as `pipeline("token-classification", aggregation_strategy="first")` does.

    Consecutive words join an entity while their type stays the same and the next word is not a `B-`; an `I-x`
    after `O` starts an entity too. An entity's score is the mean of its words' scores.

    Args:
        text (`str`): the input text (for the `text` of each entity).
        spans (`list[tuple[int, int]]`): each word's (start, end) character offsets in `text` (None: no sub-token).
        tags (`list[str]`): each word's tag.
        scores (`list[float]`): each word's tag probability.

    Returns:
        `list[dict]`: `{"entity", "start", "end", "text", "score"}` per entity, in text order.
    """
    entities, group = [], []

    def close():
        if group:
            _, kind = _tag_parts(group[0][1])
            if kind != "O":
                start, end = group[0][0][0], group[-1][0][1]
                score = sum(s for _, _, s in group) / len(group)
                entities.append({"entity": kind, "start": start, "end": end, "text": text[start:end], "score": score})
        group.clear()

    for span, tag, score in zip(spans, tags, scores):
        if span is None:
            continue
        if group:
            prefix, kind = _tag_parts(tag)
            if not (kind == _tag_parts(group[-1][1])[1] and prefix != "B"):
                close()
        group.append((span, tag, score))
    close()
    return entities


def word_span(text: str, span: tuple[int, int] | None) -> tuple[int, int] | None:
    """`span` without the whitespace at its ends: byte-level BPE pieces carry the space before a word, and their
    offsets cover it. None for a span of whitespace only (a run of spaces the tokenizer keeps as a word)."""
    if span is None:
        return None
    start, end = span
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def entities_from_words(texts: list[str], windows: dict, probabilities, names: list[str]) -> tuple[list[dict], list]:
    """Entities of texts from their windows (`encode_windows` with offsets) and per-sub-token probabilities.

    Words are the tokenizer's pre-tokenised words (`word_ids`), spanning their sub-tokens' character offsets;
    each word takes the tag of its first sub-token (windows stitched), then `decode_entities` groups them.

    Returns:
        `tuple`: (entities per text, per text each word's probability vector or None).
    """
    import numpy as np

    encoding = windows["encoding"]
    num_docs = len(texts)
    num_words = [0] * num_docs
    spans = [dict() for _ in range(num_docs)]
    for i, (ids, doc) in enumerate(zip(windows["word_ids"], windows["doc"])):
        for p, word in enumerate(ids):
            if word is None:
                continue
            num_words[doc] = max(num_words[doc], word + 1)
            start, end = encoding["offset_mapping"][i][p]
            old = spans[doc].get(word)
            spans[doc][word] = (start, end) if old is None else (min(old[0], start), max(old[1], end))
    per_word = stitch_windows(windows["word_ids"], windows["starts"], windows["doc"], probabilities, num_words)
    results = []
    for doc in range(num_docs):
        probs = [None if p is None else np.asarray(p) for p in per_word[doc]]
        tags = [names[int(p.argmax())] if p is not None else "O" for p in probs]
        scores = [float(p.max()) if p is not None else 0.0 for p in probs]
        word_spans = [word_span(texts[doc], spans[doc].get(w)) for w in range(num_words[doc])]
        results.append(decode_entities(texts[doc], word_spans, tags, scores))
    return results, per_word


@functools.lru_cache(maxsize=None)
def seqeval_metric_class():
    """`Seqeval`, an `evaluate.Metric` over IOB2 tag sequences computed by the `seqeval` package (strict mode).

    Defined on first use: `import evaluate` takes seconds. (evaluate's own `seqeval` module lives on the Hub.)
    """
    import datasets
    import evaluate

    sequence = datasets.List(datasets.Value("string"))
    features = datasets.Features({"predictions": sequence, "references": sequence})

    class Seqeval(evaluate.Metric):
        """Entity-level precision, recall and F1 (micro over entities, macro over types), per type, and token accuracy.

        Entities are matched in seqeval's strict IOB2 mode: exact span and type; an I- without its B- begins nothing.
        """

        def __init__(self, **kwargs):
            kwargs.setdefault("keep_in_memory", True)  # nothing written to the HF metrics cache, no file locks
            super().__init__(**kwargs)

        def _info(self):
            return evaluate.MetricInfo(description=self.__doc__ or "", citation="", features=features,
                                       inputs_description="predictions, references: one list of IOB2 tags a sentence.")

        def _build_data_dir(self):
            # The base class runs os.makedirs(~/.cache/huggingface/metrics/...) even when keep_in_memory=True.
            path = os.path.join(self._data_dir_root, self.name, self.config_name)
            return path if self.keep_in_memory else super()._build_data_dir()

        def _compute(self, predictions, references, **kwargs):
            return seqeval_scores(list(map(list, predictions)), list(map(list, references)))

    return Seqeval


def seqeval_scores(predictions: list[list[str]], references: list[list[str]]) -> dict:
    """The scores of `Seqeval` (see there), computed directly."""
    from seqeval.metrics import accuracy_score, classification_report
    from seqeval.scheme import IOB2

    with warnings.catch_warnings():  # no entity on either side: numpy warns about the mean of no types
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(references, predictions, mode="strict", scheme=IOB2, output_dict=True,
                                       zero_division=0)
    micro, macro = report.pop("micro avg"), report.pop("macro avg")
    report.pop("weighted avg", None)
    per_type = {kind: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]),
                       "support": int(v["support"])} for kind, v in sorted(report.items())}
    macro = {k: float(macro[k]) if per_type else 0.0 for k in ("precision", "recall", "f1-score")}
    return {
        "precision": float(micro["precision"]), "recall": float(micro["recall"]), "f1": float(micro["f1-score"]),
        "precision_macro": macro["precision"], "recall_macro": macro["recall"], "f1_macro": macro["f1-score"],
        "accuracy": float(accuracy_score(references, predictions)), "per_type": per_type,
    }


def entity_confusion_matrix(predictions: list[list[str]], references: list[list[str]]) -> dict:
    """Entity types against each other, matched by exact span (strict IOB2), plus a `missed` column and a
    `spurious` row.

    Cell (true type, predicted type) counts true entities whose exact span was predicted with that type (the
    diagonal are the correct entities); `missed` counts true entities whose span no prediction has; `spurious`
    counts predicted spans that are no true entity's span.

    Returns:
        `dict`: `rows` (types + "spurious"), `columns` (types + "missed") and `matrix` (rows x columns counts).
    """
    from seqeval.scheme import IOB2, Entities

    true = {(e.sent_id, e.start, e.end): e.tag for s in Entities(references, IOB2).entities for e in s}
    pred = {(e.sent_id, e.start, e.end): e.tag for s in Entities(predictions, IOB2).entities for e in s}
    types = sorted(set(true.values()) | set(pred.values()))
    index = {t: i for i, t in enumerate(types)}
    n = len(types)
    matrix = [[0] * (n + 1) for _ in range(n + 1)]
    for span, kind in true.items():
        matrix[index[kind]][index[pred[span]] if span in pred else n] += 1
    for span, kind in pred.items():
        if span not in true:
            matrix[n][index[kind]] += 1
    return {"rows": types + ["spurious"], "columns": types + ["missed"], "matrix": matrix}


def token_classification_report(pred_tags: list[list[str]], true_tags: list[list[str]]) -> dict:
    """Every token-classification metric of word-level tag sequences, as plain JSON-serialisable values.

    Args:
        pred_tags (`list[list[str]]`): predicted IOB2 tags, one list per sentence.
        true_tags (`list[list[str]]`): true IOB2 tags, the same shape.

    Returns:
        `dict`: `precision`, `recall`, `f1` (entity-level, micro over entities), `precision_macro`,
        `recall_macro`, `f1_macro` (unweighted mean over types), `accuracy` (per word), `per_type`
        (`{type: {precision, recall, f1, support}}`), `entity_confusion_matrix` (see `entity_confusion_matrix`),
        `num_examples` (sentences), `num_words`, `num_entities` (true) and `num_predicted_entities`.
    """
    if len(pred_tags) != len(true_tags) or any(len(p) != len(t) for p, t in zip(pred_tags, true_tags)):
        raise ValueError("pred_tags and true_tags must hold the same number of sentences and of tags per sentence.")
    if not true_tags:
        raise ValueError("no sentences to evaluate.")
    metric = seqeval_metric_class()()
    report = metric.compute(predictions=pred_tags, references=true_tags)
    confusion = entity_confusion_matrix(pred_tags, true_tags)
    report["entity_confusion_matrix"] = confusion
    report["num_examples"] = len(true_tags)
    report["num_words"] = sum(len(t) for t in true_tags)
    report["num_entities"] = sum(map(sum, confusion["matrix"][:-1]))
    report["num_predicted_entities"] = sum(row[c] for row in confusion["matrix"] for c in range(len(row) - 1))
    return report


def make_compute_metrics(names: list[str]):
    """`compute_metrics` for the Trainer's evaluations during training: seqeval over the labelled sub-tokens of
    each window (word-level and stitched in the final report; the same when no sentence exceeds a window)."""

    def compute_metrics(eval_pred) -> dict:
        import numpy as np

        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        predicted = np.asarray(logits).argmax(-1)
        labels = np.asarray(eval_pred.label_ids)
        pred_tags, true_tags = [], []
        for row_pred, row_true in zip(predicted, labels):
            keep = row_true != IGNORE
            pred_tags.append([names[i] for i in row_pred[keep]])
            true_tags.append([names[i] for i in row_true[keep]])
        scores = seqeval_scores(pred_tags, true_tags)
        return {k: scores[k] for k in ("accuracy", "precision", "recall", "f1", "f1_macro")}

    return compute_metrics


# -- the recipe ----------------------------------------------------------------------------------------------
class TokenClassificationRecipe(Recipe):
    """Fine-tune an encoder (BERT family) or a decoder with a `*ForTokenClassification` head for NER / tagging.

    Example:
        ```python
        from hftl import TokenClassificationRecipe, run_recipe
        result = run_recipe(TokenClassificationRecipe.from_yaml("recipes/configs/wnut17_minilm_lora.yaml"))
        result.metrics["test"]["f1"]  # entity-level, strict IOB2
        ```
    """

    task = "token-classification"
    title = "Token classification (named entities)"
    data_config_class = TokenClassificationData
    peft_task_type = "TOKEN_CLS"
    auto_model_class = "AutoModelForTokenClassification"
    head_modules = ("classifier", "score")
    pipeline_tag = "token-classification"
    summary_metrics = ("precision", "recall", "f1", "f1_macro", "accuracy")
    card_metrics = ("precision", "recall", "f1", "precision_macro", "recall_macro", "f1_macro", "accuracy", "loss")
    index_metrics = {
        "f1": ("f1", "Entity F1 (micro, strict IOB2)", {"average": "micro"}),
        "precision": ("precision", "Entity precision (micro)", {"average": "micro"}),
        "recall": ("recall", "Entity recall (micro)", {"average": "micro"}),
        "accuracy": ("accuracy", "Token accuracy", None),
    }
    curve_metrics = ("f1",)
    token_level_loss = True
    evaluation_batch_size = 64
    #: per-window bookkeeping kept beside the model inputs (the Trainer drops them from its batches)
    WINDOW_COLUMNS = ("doc", "word_ids", "starts", "num_words", "gold")

    # -- checks before anything heavy -------------------------------------------------------------
    @classmethod
    def check_config(cls, config, model_ok: bool) -> list[str]:
        data, problems, splits = config.data, [], {}
        sources = data.splits()
        for name, source in sources.items():
            where = f"data.{name}"
            found = check_source(source, where, formats=FORMATS)
            if found:
                problems += found
                continue
            if source_kind(source) != "file":
                continue  # saved and Hub datasets are checked when loaded
            file_problems: list[str] = []
            rows = read_local_rows(source, data, file_problems)
            problems += [f"{where}: {p}" for p in file_problems]
            if rows is not None and not file_problems:
                splits[name] = rows
        if problems:
            return problems
        problems += check_tag_sets(splits, sources)
        if "train" in splits:
            problems += check_validation_split(len(splits["train"]), data)
        if model_ok:
            problems += check_length_limit(config.model, "max_length", data.max_length)
        return problems

    # -- data -------------------------------------------------------------------------------------
    def read_split(self, source: str, split: str) -> list[dict]:
        """The sentences of one source (a CoNLL file, a JSON(L)/parquet file, a saved or Hub dataset)."""
        data = self.config.data
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

    def load_data(self) -> PreparedData:
        data = self.config.data
        sources = data.splits()
        rows = {name: self.read_split(source, name) for name, source in sources.items()}
        for name, limit in (("train", data.max_train_samples), ("validation", data.max_eval_samples),
                            ("test", data.max_eval_samples)):
            if name in rows and limit is not None:
                rows[name] = rows[name][:limit]
        problems = check_tag_sets(rows, sources)
        if problems:
            raise DataError(" ".join(problems))
        if "validation" not in rows:
            train = rows["train"]
            n_val = int(round(len(train) * data.validation_fraction))
            if n_val < 1 or len(train) - n_val < 1:
                raise DataError(f"data.train: {len(train)} sentences are too few to hold out validation_fraction "
                                f"{data.validation_fraction}. Add sentences, or give data.validation.")
            holdout = holdout_indices(len(train), n_val, self.config.seed)
            rows["validation"] = [train[i] for i in holdout.validation]
            rows["train"] = [train[i] for i in sorted(holdout.train)]
        if data.label_names:
            labels = LabelMap(tuple(data.label_names))
        else:
            labels = LabelMap.from_values([t for row in rows["train"] for t in row["tags"]], source=sources["train"])
        splits = {name: self._sentences(split) for name, split in rows.items()}
        fingerprints = {name: fingerprint(src) for name, src in sources.items()}
        return PreparedData(splits, split_sources(data), fingerprints, labels)

    @staticmethod
    def _sentences(rows: list[dict]):
        import datasets

        return datasets.Dataset.from_dict({"tokens": [row["tokens"] for row in rows], "tags": [row["tags"] for row in rows]})

    def prepare_source(self, source: str, tokenizer, labels: LabelMap):
        problems = check_source(source, "--data", formats=FORMATS)
        if problems:
            raise DataError(" ".join(problems))
        rows = self.read_split(source, "test")
        unknown = check_tag_sets({"train": [{"tags": list(labels.names), "line": 0}], "test": rows},
                                 {"train": "the run's labels", "test": source})
        if unknown:
            raise DataError(" ".join(unknown))
        return self._windows(self._sentences(rows), tokenizer, labels, "test")

    def load_processor(self):
        tokenizer = load_tokenizer(self.config.model)
        if not tokenizer.is_fast:
            raise HftlError(f"model.name_or_path: {self.config.model.name_or_path} has no fast tokenizer "
                            "(tokenizer.json); token classification needs one to map sub-tokens to words.")
        return words_as_in_text(tokenizer, self.config.model.name_or_path)

    def load_trained_processor(self, folder):
        return words_as_in_text(super().load_trained_processor(folder), str(folder))

    def _windows(self, sentences, tokenizer, labels: LabelMap, name: str):
        """Model inputs of a split's sentences (windows of at most max_length sub-tokens), with the bookkeeping to
        stitch predictions back per word (`WINDOW_COLUMNS`)."""
        import datasets

        data = self.config.data
        words = [list(w) for w in sentences["tokens"]]
        tags = [list(t) for t in sentences["tags"]]
        label2id = labels.label2id
        features = tokenize_and_align(tokenizer, words, [[label2id[t] for t in row] for row in tags], data.max_length,
                                      data.stride, data.label_all_subtokens, b_to_i_map(labels.names))
        features["num_words"] = [len(words[doc]) for doc in features["doc"]]
        features["gold"] = [tags[doc] if first else [] for doc, first in _first_windows(features["doc"])]
        split_up = sum(1 for count in Counter(features["doc"]).values() if count > 1)
        if split_up:
            logger.info("%s: %d sentence(s) longer than max_length %d were split into overlapping windows "
                        "(stride %d): %d windows for %d sentences.", name, split_up, data.max_length, data.stride,
                        len(features["doc"]), len(words))
        return datasets.Dataset.from_dict(features)

    def preprocess(self, data: PreparedData, tokenizer) -> dict:
        return {name: self._windows(split, tokenizer, data.labels, name) for name, split in data.splits.items()}

    def data_collator(self, tokenizer):
        from transformers import DataCollatorForTokenClassification

        speed, data = self.config.speed, self.config.data
        if speed.padding == "max_length":
            return DataCollatorForTokenClassification(tokenizer, padding="max_length", max_length=data.max_length)
        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=speed.pad_to_multiple_of)

    # -- model ------------------------------------------------------------------------------------
    def load_model(self, tokenizer, labels: LabelMap):
        from transformers import AutoModelForTokenClassification

        model, new = load_pretrained_model(
            AutoModelForTokenClassification, self.config.model, num_labels=len(labels),
            id2label=labels.id2label, label2id=labels.label2id, ignore_mismatched_sizes=True,
        )
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
        return model, new

    def compute_metrics(self, labels: LabelMap):
        return make_compute_metrics(list(labels.names))

    # -- evaluation -------------------------------------------------------------------------------
    @staticmethod
    def word_predictions(logits, windows: dict) -> list[list]:
        """Per sentence, each word's probability vector (None for a word without sub-tokens), windows stitched."""
        import numpy as np
        import torch

        logits = logits[0] if isinstance(logits, tuple) else logits
        probabilities = torch.as_tensor(np.asarray(logits), dtype=torch.float32).softmax(-1).numpy()
        return stitch_windows(windows["word_ids"], windows["starts"], windows["doc"], probabilities,
                              windows["num_words"])

    def report(self, logits, windows: dict, gold: list[list[str]], labels: LabelMap) -> dict:
        names = labels.names
        per_word = self.word_predictions(logits, windows)
        predicted = [[names[int(p.argmax())] if p is not None else "O" for p in words] for words in per_word]
        missing = sum(p is None for words in per_word for p in words)
        result = token_classification_report(predicted, gold)
        result["words_without_subtokens"] = missing
        return result

    def evaluate_split(self, trainer, name: str, dataset, labels: LabelMap) -> dict:
        """Entity-level metrics of whole sentences (windows stitched back per word)."""
        output = trainer.predict(dataset)
        docs = dataset["doc"]
        num_words = dict(zip(docs, dataset["num_words"]))
        windows = {"doc": docs, "word_ids": dataset["word_ids"], "starts": dataset["starts"],
                   "num_words": [num_words[doc] for doc in sorted(num_words)]}
        gold = [tags for tags, (_, first) in zip(dataset["gold"], _first_windows(docs)) if first]
        result = self.report(output.predictions, windows, gold, labels)
        result["loss"] = token_loss(output.predictions, output.label_ids)
        return result

    # -- prediction -------------------------------------------------------------------------------
    @staticmethod
    def _window_logits(model, tokenizer, encoding, batch_size: int, num_labels: int):
        """Per window, per position, the label probabilities (float32, zero past a window's end) of a PyTorch model
        or its ONNX export (`hftl.batch_inference.model_forward`)."""
        import numpy as np

        from hftl.batch_inference import model_forward, softmax

        forward, _ = model_forward(model, bf16=False)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoding]
        rows, length = len(encoding["input_ids"]), max((len(ids) for ids in encoding["input_ids"]), default=0)
        out = np.zeros((rows, length, num_labels), dtype=np.float32)
        for start in range(0, rows, batch_size):
            batch = tokenizer.pad({k: encoding[k][start:start + batch_size] for k in keys}, return_tensors="np")
            logits = forward({k: np.asarray(v, dtype=np.int64) for k, v in batch.items()})
            out[start:start + len(logits), :logits.shape[1]] = logits
        return softmax(out)

    def predict(self, model, tokenizer, inputs: list, labels: LabelMap | None = None, batch_size: int = 64,
                **kwargs) -> list[dict]:
        """Entities of raw texts, or a tag per token of pre-tokenised inputs (lists of words).

        A text gives `{"entities": [{"entity", "start", "end", "text", "score"}, ...]}` with character offsets into
        it (words grouped as the transformers pipeline with `aggregation_strategy="first"` does); a list of words
        gives `{"tags": [...], "scores": [...]}`, one per word.
        """
        data = self.config.data
        names = list(labels.names)
        results: list[dict | None] = [None] * len(inputs)
        texts = [i for i, item in enumerate(inputs) if isinstance(item, str)]
        words = [i for i, item in enumerate(inputs) if not isinstance(item, str)]
        if texts:
            windows = encode_windows(tokenizer, [inputs[i] for i in texts], data.max_length, data.stride,
                                     is_split_into_words=False, offsets=True)
            probabilities = self._window_logits(model, tokenizer, windows["encoding"], batch_size, len(names))
            entities, _ = entities_from_words([inputs[i] for i in texts], windows, probabilities, names)
            found = dict(enumerate(entities))
            for n, i in enumerate(texts):
                results[i] = {"entities": found.get(n, [])}
        if words:
            sentences = [[str(w) for w in inputs[i]] for i in words]
            features = tokenize_and_align(tokenizer, sentences, None, data.max_length, data.stride)
            encoding = {k: v for k, v in features.items() if k not in ("doc", "word_ids", "starts")}
            probabilities = self._window_logits(model, tokenizer, encoding, batch_size, len(names))
            per_word = stitch_windows(features["word_ids"], features["starts"], features["doc"], probabilities,
                                      [len(s) for s in sentences])
            for n, i in enumerate(words):
                results[i] = {"tags": [names[int(p.argmax())] if p is not None else "O" for p in per_word[n]],
                              "scores": [float(p.max()) if p is not None else 0.0 for p in per_word[n]]}
        return results


def token_loss(logits, label_ids) -> float:
    """The mean cross-entropy over every labelled sub-token of gathered evaluation logits: exact under distributed
    evaluation, where the Trainer's loss averages batch means that include the sampler's padding repeats."""
    import numpy as np
    import torch

    logits = torch.as_tensor(np.asarray(logits[0] if isinstance(logits, tuple) else logits), dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(label_ids), dtype=torch.long)
    return float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE))


def _first_windows(docs: list[int]):
    """(doc, whether this is the doc's first window) for each window, windows of a doc being consecutive."""
    previous = None
    for doc in docs:
        yield doc, doc != previous
        previous = doc


register_task(TokenClassificationRecipe)
