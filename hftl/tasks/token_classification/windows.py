"""From words to sub-tokens and back: the tokenizer set up for words, sub-token labels, windows of long
sentences, and one prediction per word stitched from the windows. Pure functions of a fast tokenizer and lists
(`words_as_in_text` alone changes the tokenizer it is given)."""

from __future__ import annotations

import logging

from hftl.errors import HftlError

logger = logging.getLogger(__name__)

#: label id of positions the loss and the metrics ignore (special tokens, continuation sub-tokens)
IGNORE = -100
#: per-window bookkeeping kept beside the model inputs (the Trainer drops them from its batches): the sentence of
#: each window, the word of each position, where words begin, how many words its sentence has, and (on a
#: sentence's first window) the sentence's gold tags and words
WINDOW_COLUMNS = ("doc", "word_ids", "starts", "num_words", "gold", "words")


# -- the tokenizer: words given one by one become the pieces a text gives ---------------------------------
#: words without punctuation that the word path and the text path must split alike (`words_as_in_text`)
PROBE_WORDS = ("Alice", "met", "Bob", "Smith", "in", "Paris", "on", "Monday")


def _parts(pre_tokenizer, kind: type) -> list:
    """The parts of a backend pre-tokenizer of type `kind` (itself, or inside a `Sequence`)."""
    from tokenizers import pre_tokenizers

    if isinstance(pre_tokenizer, kind):
        return [pre_tokenizer]
    parts = []
    if isinstance(pre_tokenizer, pre_tokenizers.Sequence):
        index = 0
        while True:
            try:
                part = pre_tokenizer[index]
            except IndexError:
                break
            parts += _parts(part, kind)
            index += 1
    return parts


def words_as_in_text(tokenizer, name: str):
    """`tokenizer` set up so that words given one by one (`is_split_into_words`, how sentences are trained and
    tagged) become the pieces the same words give inside a text (how raw text is predicted), checked on a probe.

    Byte-level BPE (GPT-2, RoBERTa, Llama-3) marks a word's leading space in its first piece (`Ġ`): a word
    given alone has no space before it unless the pre-tokenizer adds one, so `add_prefix_space` is switched on
    in the backend's ByteLevel pre-tokenizer itself (transformers 5's generic backend only stores the attribute
    when the tokenizer is loaded with it). Raw text then gets the space before its first word too. A Metaspace
    pre-tokenizer that does not split (transformers 5's Llama tokenizer) is made to split at its `▁`, so that a
    text has words (the pieces stay the same: SentencePiece pieces do not cross a `▁`; the probe checks it).

    Raises:
        `HftlError` naming the tokenizer, where the probe's two paths still give different pieces or words.
    """
    from tokenizers import pre_tokenizers

    backend = tokenizer.backend_tokenizer
    for part in _parts(backend.pre_tokenizer, pre_tokenizers.ByteLevel):
        part.add_prefix_space = True  # changes the backend in place (a view of its pre-tokenizer)
        tokenizer.add_prefix_space = True
    for part in _parts(backend.pre_tokenizer, pre_tokenizers.Metaspace):
        part.split = True
    words = list(PROBE_WORDS)
    by_word = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    in_text = tokenizer(" ".join(words), add_special_tokens=False)
    if by_word["input_ids"] != in_text["input_ids"] or by_word.word_ids() != in_text.word_ids():
        raise HftlError(
            f"model.name_or_path: {name}: its tokenizer ({type(tokenizer).__name__}, pre-tokenizer "
            f"{backend.pre_tokenizer!r}) splits words given one by one differently from the same words in a "
            f"text: pieces {by_word.tokens()} of words {by_word.word_ids()} against pieces {in_text.tokens()} of "
            f"words {in_text.word_ids()}, for {' '.join(words)!r}. Token classification trains on words and finds "
            "the words of a text with the same tokenizer, so it would serve pieces it never trained on. Use a "
            "checkpoint whose tokenizer splits text into words before its sub-tokens (BERT, RoBERTa, GPT-2, "
            "Llama-3 and Metaspace SentencePiece models do), or give its tokenizer.json a pre_tokenizer that does.")
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



def first_windows(docs: list[int]):
    """(doc, whether this is the doc's first window) for each window, windows of a doc being consecutive."""
    previous = None
    for doc in docs:
        yield doc, doc != previous
        previous = doc


def sentence_windows(dataset) -> dict:
    """The bookkeeping of a split's windows (`WINDOW_COLUMNS`) as `stitch_windows` and the report read it.

    Returns:
        `dict`: per window `doc`, `word_ids`, `starts` and `labels` (None without labels); per sentence
        `num_words`, `gold` (tags) and `words`.
    """
    docs = list(dataset["doc"])
    num_words = dict(zip(docs, dataset["num_words"]))
    columns = dataset.column_names

    def per_sentence(column: str) -> list:
        return [value for value, (_, first) in zip(dataset[column], first_windows(docs)) if first]

    return {"doc": docs, "word_ids": list(dataset["word_ids"]), "starts": list(dataset["starts"]),
            "labels": list(dataset["labels"]) if "labels" in columns else None,
            "num_words": [num_words[doc] for doc in sorted(num_words)], "gold": per_sentence("gold"),
            "words": per_sentence("words") if "words" in columns else None}
