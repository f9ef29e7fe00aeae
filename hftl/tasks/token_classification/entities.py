"""Word tags to entities: the spans of a raw text's entities, grouped as `pipeline("token-classification",
aggregation_strategy="first")` groups them, with character offsets on the words themselves."""

from __future__ import annotations

from hftl.tasks.token_classification.windows import stitch_windows


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

