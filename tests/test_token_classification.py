"""Token classification (NER): CoNLL reading and checks, sub-token alignment, windows, seqeval metrics, entity
spans, and tiny end-to-end runs (full, LoRA, GPT-2) that save, reload and predict the same."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest

from hftl.errors import ConfigError, DataError
from hftl.runner import run_recipe
from hftl.tasks.token_classification.entities import decode_entities, entities_from_words
from hftl.tasks.token_classification.metrics import (
    entity_confusion_matrix, make_compute_metrics, sentence_errors, sentence_report, token_classification_report,
)
from hftl.tasks.token_classification.reading import check_tag_sets, read_conll
from hftl.tasks.token_classification.windows import (
    IGNORE, align_labels, b_to_i_map, encode_windows, stitch_windows, tokenize_and_align, word_starts,
)

FILLER = ["the", "film", "was", "really", "quite", "plot", "and", "acting", "story", "it", "felt", "very"]
PEOPLE = [["alice"], ["bob", "smith"], ["carol"], ["dave", "jones"]]
PLACES = [["paris"], ["new", "york"], ["rome"]]


def make_sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """A learnable NER task: names and places from small lists inside filler words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.randint(2, 5)):
            roll = rng.random()
            if roll < 0.2:
                entity, kind = rng.choice(PEOPLE), "person"
            elif roll < 0.35:
                entity, kind = rng.choice(PLACES), "location"
            else:
                words.append(rng.choice(FILLER)), tags.append("O")
                continue
            words += entity
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(entity) - 1)
        rows.append((words, tags))
    return rows


def write_conll(path: Path, rows, docstart: bool = False) -> Path:
    lines = ["-DOCSTART-\tO", ""] if docstart else []
    for words, tags in rows:
        lines += [f"{w}\t{t}" for w, t in zip(words, tags)] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def conll_data(tmp_path) -> dict[str, Path]:
    return {
        "train": write_conll(tmp_path / "train.txt", make_sentences(64, seed=1), docstart=True),
        "validation": write_conll(tmp_path / "dev.txt", make_sentences(16, seed=2)),
        "test": write_conll(tmp_path / "test.txt", make_sentences(16, seed=3)),
    }


@pytest.fixture
def ner_config(tmp_path, tiny_bert_dir, conll_data):
    def make(model_dir=None, **changes):
        config = {
            "task": "token-classification",
            "model": {"name_or_path": str(model_dir or tiny_bert_dir), "strategy": "full"},
            "data": {**{k: str(v) for k, v in conll_data.items()}, "max_length": 32, "stride": 8},
            "training": {"output_dir": str(tmp_path / "run"), "max_steps": 16, "learning_rate": 5e-3,
                         "per_device_train_batch_size": 16, "seed": 42, "logging_steps": 2},
            "speed": {"bf16": False},
        }
        for dotted, value in changes.items():
            section, key = dotted.split("__")
            config.setdefault(section, {})[key] = value
        return config

    return make


def tokenizer_of(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


# -- reading and checking ---------------------------------------------------------------------------------
def test_read_conll_skips_docstart_and_picks_the_tag_column(tmp_path):
    path = tmp_path / "multi.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-org\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-per\n",
                    encoding="utf-8")
    rows = read_conll(path)
    assert [r["tokens"] for r in rows] == [["EU", "rejects"], ["Peter"]]
    assert [r["tags"] for r in rows] == [["B-org", "O"], ["B-per"]]
    assert [r["lines"] for r in rows] == [[3, 4], [6]]
    assert read_conll(path, tag_column_index=2)[0]["tags"] == ["B-NP", "B-VP"]


def test_read_conll_raises_one_error_naming_every_bad_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("Alice\tB-person\nsmiles\n\nin\tO\nParis\t\nthere\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_conll(path)
    message = str(info.value)
    assert f"{path}: 2 line(s) do not hold a word and a tag" in message
    assert "line 2 has 1 column(s) ('smiles')" in message and "line 6 has 1 column(s)" in message
    assert f"{path}: 1 line(s) have an empty tag: line 5" in message
    problems: list[str] = []
    assert [r["tokens"] for r in read_conll(path, problems=problems)] == [["Alice"], ["in"]] and len(problems) == 2


def test_bad_conll_files_are_rejected_with_file_and_line_all_at_once(tmp_path, ner_config, conll_data):
    from hftl import load_config

    train = tmp_path / "bad_train.txt"
    train.write_text("Alice\tB-person\nsmiles\n\nin\tO\nParis\tI-location\n\nRome\tBAD\n", encoding="utf-8")
    dev = tmp_path / "bad_dev.jsonl"
    dev.write_text(json.dumps({"tokens": ["a", "b"], "ner_tags": ["O"]}) + "\n"
                   + json.dumps({"tokens": [], "ner_tags": []}) + "\n", encoding="utf-8")
    config = ner_config(data__train=str(train), data__validation=str(dev))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    message = str(info.value)
    assert f"{train}: 1 line(s) do not hold a word and a tag" in message and "line 2 has 1 column" in message
    assert f"{dev}: 1 line(s) have different numbers of tokens and tags: line 1 has 2 tokens and 1 tags" in message
    assert "empty sentence(s) (no tokens): line 2" in message
    # the ragged line stops the tag checks of that file, so check the tags of a readable one next
    train.write_text("Alice\tB-person\nsmiles\tO\n\nin\tO\nParis\tI-location\n\nRome\tBAD\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(ner_config(data__train=str(train)))
    message = str(info.value)
    assert "'BAD' (line 7)" in message and "not IOB2" in message
    assert "'I-location' (line 5)" in message and "never begins" in message


def test_unseen_test_tag_is_rejected(tmp_path, ner_config, conll_data):
    from hftl import load_config

    odd = [(["alice", "went", "to", "mass"], ["B-person", "O", "O", "B-event"])]
    test = write_conll(tmp_path / "odd_test.txt", odd)
    with pytest.raises(ConfigError) as info:
        load_config(ner_config(data__test=str(test)))
    assert f"data.test: {test}: tag(s) that never occur in the training data: 'B-event' (line 4)" in str(info.value)


def test_check_tag_sets_lists_capped():
    train = [{"tags": ["B-a", "I-a"], "line": 1, "unit": "row"}]
    test = [{"tags": [f"B-x{i}"], "line": i, "unit": "row"} for i in range(1, 9)]
    (problem,) = check_tag_sets({"train": train, "test": test}, {"train": "t.jsonl", "test": "u.jsonl"})
    assert "'B-x5' (row 5); and 3 more" in problem and "B-x6" not in problem


def test_integer_tags_need_names(tmp_path, ner_config):
    from hftl import load_config

    rows = [{"tokens": ["alice", "smiles"], "ner_tags": [1, 0]}, {"tokens": ["paris"], "ner_tags": [2]}]
    path = tmp_path / "ids.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = ner_config(data__train=str(path), data__validation=str(path), data__test=str(path))
    with pytest.raises(ConfigError, match="integer tags in 2 line"):
        load_config(config)
    config["data"]["label_names"] = ["O", "B-person", "B-location"]
    assert load_config(config).data.label_names == ["O", "B-person", "B-location"]


# -- alignment and windows ---------------------------------------------------------------------------------
def test_align_labels_hand_labelled():
    names = ["B-per", "I-per", "O"]
    # [CLS] bob ##by smith ##son ##s says [SEP]: words 0 (2 pieces), 1 (3 pieces), 2 (1 piece)
    word_ids = [None, 0, 0, 1, 1, 1, 2, None]
    words = [0, 1, 2]  # B-per I-per O
    assert align_labels(word_ids, words) == [IGNORE, 0, IGNORE, 1, IGNORE, IGNORE, 2, IGNORE]
    assert align_labels(word_ids, words, True, b_to_i_map(names)) == [IGNORE, 0, 1, 1, 1, 1, 2, IGNORE]
    # a B- type without an I- tag: its continuations stay ignored
    assert align_labels([None, 0, 0, None], [0], True, b_to_i_map(["B-per", "O"])) == [IGNORE, 0, IGNORE, IGNORE]


def test_align_labels_with_a_real_tokenizer(tiny_bert_dir):
    tokenizer = tokenizer_of(tiny_bert_dir)
    words = ["alice", "filmxyz", "was"]
    encoding = tokenizer(words, is_split_into_words=True)
    pieces = encoding.tokens()
    assert len(pieces) > len(words) + 2  # the made-up words are split into several sub-tokens
    labels = align_labels(encoding.word_ids(), [0, 1, 2])
    first = {w: pieces[p] for p, w in enumerate(encoding.word_ids()) if labels[p] != IGNORE}
    assert sorted(first) == [0, 1, 2] and not any(piece.startswith("##") for piece in first.values())
    assert sum(label != IGNORE for label in labels) == 3


def test_windows_cover_a_long_document_and_stitch_back_to_one_prediction_per_word(tiny_bert_dir):
    tokenizer = tokenizer_of(tiny_bert_dir)
    rng = random.Random(0)
    words = [rng.choice(FILLER + ["alicexyz", "bobbyq"]) for _ in range(40)]
    features = tokenize_and_align(tokenizer, [words, ["short"]], [list(range(40)), [0]], max_length=12, stride=4)
    assert features["doc"].count(0) > 3 and features["doc"].count(1) == 1
    assert all(len(ids) <= 12 for ids in features["input_ids"])
    # windows overlap by the stride and reassemble to the un-windowed tokenization
    whole = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
    content = [[i for i, w in zip(ids, wids) if w != -1]
               for ids, wids, d in zip(features["input_ids"], features["word_ids"], features["doc"]) if d == 0]
    rebuilt = content[0] + [i for part in content[1:] for i in part[4:]]
    assert rebuilt == whole["input_ids"]
    # each word's label sits at its first sub-token only: a window that starts inside a word labels nothing there
    global_starts = word_starts(whole.word_ids())
    labelled = {(d, p) for d, labels in zip(features["doc"], features["labels"]) for p in labels if p != IGNORE}
    assert {w for d, w in labelled if d == 0} == set(range(40))
    for labels, starts, wids in zip(features["labels"], features["starts"], features["word_ids"]):
        assert [label != IGNORE for label in labels] == starts
    assert sum(global_starts) == 40
    # stitching: the label at each word's first sub-token comes back as that word's prediction
    stitched = stitch_windows(features["word_ids"], features["starts"], features["doc"], features["labels"], [40, 1])
    assert stitched == [list(range(40)), [0]]


def test_stitch_takes_the_window_with_most_context():
    word_ids = [[None, 0, 1, 2, 3, None], [None, 2, 3, 4, 5, None]]  # window 2 repeats words 2 and 3
    starts = [[w is not None for w in ids] for ids in word_ids]
    predictions = [["a0"] * 6, ["b1"] * 6]  # which window a prediction came from
    (words,) = stitch_windows(word_ids, starts, [0, 0], predictions, [6])
    # word 2: 1 position from window 0's edge, at window 1's edge -> window 0; word 3: the other way round
    assert words == ["a0", "a0", "a0", "b1", "b1", "b1"]


def test_words_longer_than_a_window_are_cut_with_a_warning(tiny_bert_dir, caplog):
    tokenizer = tokenizer_of(tiny_bert_dir)
    long_word = "filmplotacting" * 4  # letters of the tiny vocabulary: many sub-tokens, no [UNK]
    with caplog.at_level(logging.WARNING):
        features = tokenize_and_align(tokenizer, [["alice", long_word, "was"], [long_word]], [[0, 1, 2], [1]],
                                      max_length=12, stride=2)
    assert "2 word(s) longer than a window (10 sub-tokens) were cut" in caplog.text
    stitched = stitch_windows(features["word_ids"], features["starts"], features["doc"], features["labels"], [3, 1])
    assert stitched == [[0, 1, 2], [1]]


# -- metrics ----------------------------------------------------------------------------------------------
TRUE = [["B-per", "I-per", "O", "B-loc"], ["B-org", "O", "B-org"]]
PRED = [["B-per", "O", "O", "B-loc"], ["B-org", "O", "O"]]


def test_seqeval_report_against_hand_counted_entities():
    report = token_classification_report(PRED, TRUE)
    # true: per(0-2), loc, org, org; predicted: per(0-1) (a B- without its full span), loc, org -> 2 correct
    assert report["precision"] == pytest.approx(2 / 3) and report["recall"] == pytest.approx(2 / 4)
    assert report["f1"] == pytest.approx(4 / 7)
    assert report["per_type"]["per"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["per_type"]["org"]["recall"] == pytest.approx(0.5) and report["per_type"]["org"]["support"] == 2
    assert report["f1_macro"] == pytest.approx((1 + 2 / 3 + 0) / 3)  # macro: unweighted over types
    assert report["precision_macro"] == pytest.approx(2 / 3) and report["recall_macro"] == pytest.approx(0.5)
    assert report["accuracy"] == pytest.approx(5 / 7)
    assert report["num_entities"] == 4 and report["num_predicted_entities"] == 3


def test_strict_mode_ignores_an_i_without_its_b():
    report = token_classification_report([["I-per", "I-per", "O"]], [["B-per", "I-per", "O"]])
    assert report["num_predicted_entities"] == 0 and report["f1"] == 0.0


def test_no_entities_anywhere_scores_zero_not_nan():
    report = token_classification_report([["O", "O"]], [["O", "O"]])
    assert report["f1"] == 0.0 and report["f1_macro"] == 0.0 and report["accuracy"] == 1.0
    assert report["per_type"] == {} and report["num_entities"] == 0


def test_entity_confusion_matrix_with_missed_and_spurious():
    confusion = entity_confusion_matrix([["B-per", "O", "B-per"], ["B-org", "O", "O"]],
                                        [["B-loc", "O", "O"], ["B-org", "O", "B-org"]])
    assert confusion["rows"] == ["loc", "org", "per", "spurious"]
    assert confusion["columns"] == ["loc", "org", "per", "missed"]
    assert confusion["matrix"] == [[0, 0, 1, 0],  # the loc span was predicted as per
                                   [0, 1, 0, 1],  # one org found, one missed
                                   [0, 0, 0, 0],
                                   [0, 0, 1, 0]]  # a per where there is no entity


def test_metric_is_an_evaluate_metric_accumulating_batches():
    import evaluate

    from hftl.tasks.token_classification.metrics import seqeval_metric_class

    metric = seqeval_metric_class()()
    assert isinstance(metric, evaluate.Metric)
    for pred, true in zip(PRED, TRUE):
        metric.add_batch(predictions=[pred], references=[true])
    assert metric.compute()["f1"] == pytest.approx(4 / 7)


def _windows_of(tokenizer, sentences, names, max_length=12, stride=4, label_all_subtokens=True):
    """A split's windows as the recipe makes them (`sentence_windows` of its preprocessed dataset)."""
    import datasets

    from hftl.tasks.token_classification.windows import sentence_windows

    ids = {name: i for i, name in enumerate(names)}
    features = tokenize_and_align(tokenizer, [w for w, _ in sentences], [[ids[t] for t in tags] for _, tags in sentences],
                                  max_length, stride, label_all_subtokens, b_to_i_map(names))
    first = [i == 0 or features["doc"][i - 1] != doc for i, doc in enumerate(features["doc"])]
    features["num_words"] = [len(sentences[doc][0]) for doc in features["doc"]]
    features["gold"] = [sentences[doc][1] if f else [] for doc, f in zip(features["doc"], first)]
    features["words"] = [sentences[doc][0] if f else [] for doc, f in zip(features["doc"], first)]
    return sentence_windows(datasets.Dataset.from_dict(features))


def test_training_metrics_score_whole_sentences_once(tiny_bert_dir):
    """The Trainer's metric during training stitches windows into sentences as the final report does: an entity
    in two overlapping windows counts once, and continuation sub-tokens (label_all_subtokens) are not words."""
    import numpy as np
    from transformers import EvalPrediction

    tokenizer = tokenizer_of(tiny_bert_dir)
    names = ["B-location", "B-person", "I-location", "I-person", "O"]
    sentences = make_sentences(12, seed=5) + [(["the", "filmxyz", "bob", "smith", "was", "quite", "alicexyz", "in",
                                                "new", "york", "and", "it", "felt", "very", "rome"],
                                               ["O", "O", "B-person", "I-person", "O", "O", "B-person", "O",
                                                "B-location", "I-location", "O", "O", "O", "O", "B-location"])]
    windows = _windows_of(tokenizer, sentences, names)
    assert len(windows["doc"]) > len(sentences)  # the long sentence spans overlapping windows
    width = max(map(len, windows["labels"]))
    labels = np.full((len(windows["doc"]), width), IGNORE)
    for row, values in enumerate(windows["labels"]):
        labels[row, :len(values)] = values
    # each word's tag is right only where stitching reads it; every other position (a continuation sub-token,
    # a word's start in the window with less context) says O
    where = stitch_windows(windows["word_ids"], windows["starts"], windows["doc"],
                           [[(w, p) for p in range(len(ids))] for w, ids in enumerate(windows["word_ids"])],
                           windows["num_words"])
    logits = np.zeros((*labels.shape, len(names)), dtype=np.float32)
    logits[..., names.index("O")] = 5.0
    for doc, (words, gold) in enumerate(zip(where, windows["gold"])):
        for (window, position), tag in zip(words, gold):
            logits[window, position] = 0.0
            logits[window, position, names.index(tag)] = 5.0
    scores = make_compute_metrics(names, windows)(EvalPrediction(predictions=logits, label_ids=labels))
    assert scores == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "f1_macro": 1.0}
    report = sentence_report(logits, windows, names)
    true_entities = sum(tag.startswith("B-") for _, tags in sentences for tag in tags)
    assert report["num_entities"] == report["num_predicted_entities"] == true_entities
    assert report["num_words"] == sum(len(words) for words, _ in sentences)
    # rows out of the split's order cannot be stitched: refused, not scored
    with pytest.raises(RuntimeError, match="not the .* windows of the split"):
        make_compute_metrics(names, windows)(EvalPrediction(predictions=logits[::-1], label_ids=labels[::-1]))


def test_sentence_errors_rank_sentences_by_entity_errors():
    words = [["a", "b", "c"], ["d", "e"], ["f", "g", "h"], ["i"]]
    gold = [["B-per", "I-per", "O"], ["B-loc", "O"], ["B-per", "O", "B-loc"], ["O"]]
    pred = [["B-per", "O", "O"], ["B-loc", "O"], ["B-loc", "O", "B-per"], ["O"]]
    rows = sentence_errors("test", words, gold, pred)
    assert [(r["sentence"], r["entity_errors"]) for r in rows] == [(2, 4), (0, 2)]  # correct sentences left out
    first = rows[0]
    assert first["split"] == "test" and first["tokens"] == ["f", "g", "h"] and first["predicted"] == pred[2]
    assert first["missed"] == [{"type": "per", "start": 0, "end": 1, "text": "f"},
                               {"type": "loc", "start": 2, "end": 3, "text": "h"}]
    assert [e["type"] for e in first["spurious"]] == ["loc", "per"]
    assert rows[1]["missed"] == [{"type": "per", "start": 0, "end": 2, "text": "a b"}]
    assert [r["sentence"] for r in sentence_errors("test", words, gold, pred, limit=1)] == [2]


def test_window_probabilities_batch_by_length_like_one_window_at_a_time(tiny_bert_dir, ner_config):
    import numpy as np
    import torch
    from transformers import AutoModelForTokenClassification

    tokenizer = tokenizer_of(tiny_bert_dir)
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(tiny_bert_dir, num_labels=3).eval()
    texts = ["alice", "the film was really quite good and the plot felt very long indeed", "bob smith in rome"]
    windows = encode_windows(tokenizer, texts, max_length=12, stride=4, is_split_into_words=False)
    encoding = windows["encoding"]
    got = _recipe(ner_config(data__max_length=12, data__stride=4))._window_probabilities(model, tokenizer, encoding, 2)
    assert got.shape[:2] == (len(encoding["input_ids"]), max(map(len, encoding["input_ids"])))
    for row, ids in enumerate(encoding["input_ids"]):
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([ids])).logits.softmax(-1)[0].numpy()
        assert np.allclose(got[row, :len(ids)], alone, atol=1e-5)


# -- entity spans ---------------------------------------------------------------------------------------
def test_decode_entities_groups_like_the_pipeline():
    text = "Bob Smith met Ann in Paris"
    spans = [(0, 3), (4, 9), (10, 13), (14, 17), (18, 20), (21, 26)]
    tags = ["B-per", "I-per", "O", "I-per", "O", "B-loc"]
    found = decode_entities(text, spans, tags, [0.9, 0.7, 0.99, 0.6, 0.9, 0.8])
    assert [(e["entity"], e["text"], e["start"], e["end"]) for e in found] == [
        ("per", "Bob Smith", 0, 9), ("per", "Ann", 14, 17), ("loc", "Paris", 21, 26)]
    assert found[0]["score"] == pytest.approx(0.8)


def test_entity_offsets_on_text_with_punctuation_and_emoji(tiny_bert_dir):
    import numpy as np

    tokenizer = tokenizer_of(tiny_bert_dir)
    text = "Hi, Bob-Smith 😀 visited New York!! (again)"
    names = ["B-loc", "B-per", "I-loc", "I-per", "O"]
    wanted = {"bob": "B-per", "-": "I-per", "smith": "I-per", "new": "B-loc", "york": "I-loc"}
    windows = encode_windows(tokenizer, [text], max_length=8, stride=2, is_split_into_words=False, offsets=True)
    assert len(windows["encoding"]["input_ids"]) > 1  # the text spans several windows
    spans = {}  # word -> its characters, over all its sub-tokens in every window
    for i, ids in enumerate(windows["word_ids"]):
        for p, word in enumerate(ids):
            if word is not None:
                start, end = windows["encoding"]["offset_mapping"][i][p]
                spans[word] = (min(start, spans.get(word, (start, end))[0]), max(end, spans.get(word, (start, end))[1]))
    assert "😀" in [text[a:b] for a, b in spans.values()]
    probabilities = [[np.eye(len(names))[names.index(wanted.get(text[slice(*spans[w])].lower(), "O") if w is not None
                                                     else "O")] * 0.9 + 0.02 for w in ids]
                     for ids in windows["word_ids"]]
    (entities,), _ = entities_from_words([text], windows, probabilities, names)
    assert [(e["entity"], e["text"]) for e in entities] == [("per", "Bob-Smith"), ("loc", "New York")]
    for entity in entities:
        assert text[entity["start"]:entity["end"]] == entity["text"]
    assert entities[1]["start"] == text.index("New York")


# -- byte-level BPE tokenizers (GPT-2, RoBERTa, Llama-3 style) --------------------------------------------------
#: Llama-3's pre-tokenizer: a regex split, then byte-level without its own regex
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")


def bpe_checkpoint(folder: Path, style: str, corpus: list[str] | None = None) -> Path:
    """A tiny GPT-2 with a BPE tokenizer saved as the generic `PreTrainedTokenizerFast` (what transformers 5 loads
    as its `TokenizersBackend`), set up as the checkpoints it imitates ship it.

    `style`: "gpt2" (ByteLevel with its regex, `add_prefix_space` off), "llama3" (a regex Split, then ByteLevel
    without regex), "metaspace" (SentencePiece's `▁`, not split into words: transformers 5's Llama tokenizer) or
    "no-split" (ByteLevel without any regex: BPE merges cross word boundaries).
    """
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = {
        "gpt2": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False),
        "llama3": lambda: pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
                                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        "metaspace": lambda: pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
        "no-split": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    }[style]()
    tok.decoder = decoders.Metaspace() if style == "metaspace" else decoders.ByteLevel()
    sentences = corpus or [" ".join(words) for words, _ in make_sentences(300, seed=7)]
    alphabet = [] if style == "metaspace" else pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(sentences, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                           initial_alphabet=alphabet))
    if style == "metaspace":  # trained on words (SentencePiece's pieces never cross a ▁), served unsplit
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                            unk_token="<|endoftext|>", model_max_length=64).save_pretrained(folder)
    config = GPT2Config(vocab_size=tok.get_vocab_size(), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                        bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def pieces(tokenizer, words: list[str]) -> tuple[list[str], list[str]]:
    """(pieces of the words given one by one, pieces of the same words in a text)."""
    by_word = tokenizer(words, is_split_into_words=True, add_special_tokens=False).tokens()
    in_text = tokenizer(" ".join(words), add_special_tokens=False).tokens()
    return by_word, in_text


@pytest.mark.parametrize("style", ["gpt2", "llama3", "metaspace"])
def test_byte_level_words_train_on_the_pieces_a_text_gives(tmp_path, ner_config, style):
    """Words given one by one (training) and the same words in a text (prediction) become the same pieces, each
    word with its leading space, when the tokenizer is loaded for training and when a run is loaded."""
    folder = bpe_checkpoint(tmp_path / style, style)
    recipe = _recipe(ner_config(model_dir=folder))
    words = ["alice", "met", "bob", "smith", "in", "paris"]
    for tokenizer in (recipe.load_processor(), None):
        if tokenizer is None:  # what a finished run saved, loaded again
            recipe.load_processor().save_pretrained(tmp_path / "saved")
            tokenizer = recipe.load_trained_processor(tmp_path / "saved")
        by_word, in_text = pieces(tokenizer, words)
        assert by_word == in_text
        starts = [tokenizer.convert_ids_to_tokens(i) for i in
                  tokenizer(words, is_split_into_words=True, add_special_tokens=False)["input_ids"]]
        encoding = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
        first = [starts[p] for p, flag in enumerate(word_starts(encoding.word_ids())) if flag]
        assert len(first) == len(words) and all(piece.startswith(("Ġ", "▁")) for piece in first), first
        text = " ".join(words)  # and a text has the words: one per word given
        assert tokenizer(text, add_special_tokens=False).word_ids() == encoding.word_ids()
        assert tokenizer.padding_side == "right"


def test_a_tokenizer_whose_words_cannot_match_a_text_is_refused(tmp_path, ner_config):
    from hftl.errors import HftlError

    # no pre-tokenizer regex: BPE learns pieces across spaces, so a text's pieces span several words
    corpus = ["Alice met Bob Smith in Paris on Monday"] * 50 + [" ".join(w) for w, _ in make_sentences(50, 7)]
    folder = bpe_checkpoint(tmp_path / "no-split", "no-split", corpus)
    with pytest.raises(HftlError) as info:
        _recipe(ner_config(model_dir=folder)).load_processor()
    message = str(info.value)
    assert str(folder) in message and "TokenizersBackend" in message and "ByteLevel" in message
    assert "differently" in message and "tokenizer.json" in message


def test_entity_spans_start_on_the_word_not_the_space_before_it(tmp_path, ner_config):
    import numpy as np

    tokenizer = _recipe(ner_config(model_dir=bpe_checkpoint(tmp_path / "bpe", "gpt2"))).load_processor()
    text = "Alice met  Bob Smith in Paris"
    names = ["B-loc", "B-per", "I-per", "O"]
    wanted = {"Alice": "B-per", "Bob": "B-per", "Smith": "I-per", "Paris": "B-loc"}
    windows = encode_windows(tokenizer, [text], max_length=64, stride=8, is_split_into_words=False, offsets=True)
    offsets, word_ids = windows["encoding"]["offset_mapping"][0], windows["word_ids"][0]
    spans = {}  # the tokenizer's word -> its characters (the space before it included, as the offsets give it)
    for (start, end), word in zip(offsets, word_ids):
        if word is not None:
            spans[word] = (min(start, spans.get(word, (start, end))[0]), max(end, spans.get(word, (start, end))[1]))
    assert text[slice(*spans[word_ids[-1]])] == " Paris"  # the defect: offsets start on the space
    tags = {word: wanted.get(text[a:b].strip(), "O") for word, (a, b) in spans.items()}
    probabilities = [[np.eye(4)[names.index(tags[w])] * 0.9 + 0.025 if w is not None else np.full(4, 0.25)
                      for w in word_ids]]
    (entities,), _ = entities_from_words([text], windows, probabilities, names)
    assert [(e["entity"], e["text"], e["start"], e["end"]) for e in entities] == [
        ("per", "Alice", 0, 5), ("per", "Bob Smith", 11, 20), ("loc", "Paris", 24, 29)]


# -- recipes end to end -----------------------------------------------------------------------------------
def _recipe(config):
    from hftl.tasks.token_classification import TokenClassificationRecipe

    return TokenClassificationRecipe(config)


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_tiny_run_trains_saves_reloads_and_predicts_the_same(ner_config, strategy):
    import hftl

    config = ner_config(model__strategy=strategy, training__learning_rate=5e-3 if strategy == "full" else 3e-2)
    result = run_recipe(_recipe(config))
    test = result.metrics["test"]
    for key in ("precision", "recall", "f1", "f1_macro", "accuracy", "per_type", "entity_confusion_matrix", "loss"):
        assert key in test
    assert test["num_examples"] == 16 and test["num_entities"] > 0
    assert test["num_predicted_entities"] > 0 and test["f1"] > 0  # the comparisons below compare entities
    assert set(test["per_type"]) <= {"person", "location"}
    run = hftl.load(result.run_dir)
    inputs = ["alice and bob smith went to new york", ["the", "film", "carol", "rome"],
              "Paris!! 😀 was, really, quite"]
    in_memory = run.recipe.predict(result.trainer.model.eval(), run.processor, inputs, run.labels)
    reloaded = run.predict(inputs)
    assert in_memory[0]["entities"] and set(in_memory[1]["tags"]) != {"O"}
    assert [r.get("tags") for r in reloaded] == [r.get("tags") for r in in_memory]
    assert reloaded[1]["tags"] and len(reloaded[1]["tags"]) == 4
    for a, b in zip(reloaded, in_memory):
        assert [(e["entity"], e["start"], e["end"]) for e in a.get("entities", [])] == \
               [(e["entity"], e["start"], e["end"]) for e in b.get("entities", [])]
        assert a.get("scores", [0]) == pytest.approx(b.get("scores", [0]), abs=1e-5)
    evaluated = run.evaluate()
    assert evaluated["f1"] == pytest.approx(test["f1"]) and evaluated["accuracy"] == pytest.approx(test["accuracy"])
    card = (result.run_dir / "README.md").read_text(encoding="utf-8")
    assert "aggregation_strategy=\"first\"" in card and "| type | precision | recall | f1 | support |" in card
    assert "| true \\ predicted | location | person | missed |" in card
    # error analysis: the sentences with entity errors, most first, counted as the entity-level metrics count them
    from hftl.run_dir import RunDir

    rows = RunDir(result.run_dir).errors()
    for split in ("validation", "test"):
        confusion = result.metrics[split]["entity_confusion_matrix"]["matrix"]
        correct = sum(confusion[i][i] for i in range(len(confusion) - 1))
        report = result.metrics[split]
        wrong = report["num_entities"] - correct + report["num_predicted_entities"] - correct
        found = [row for row in rows if row["split"] == split]
        assert sum(row["entity_errors"] for row in found) == wrong  # fewer sentences than the limit of 20
        assert [row["entity_errors"] for row in found] == sorted((row["entity_errors"] for row in found), reverse=True)
    shown = [row for row in rows if row["split"] == "test"][:5]
    if shown:
        assert "| sentence | words | missed | spurious |" in card
        assert f"| {shown[0]['sentence']} | {' '.join(shown[0]['tokens'])} |" in card


def test_label_all_subtokens_end_to_end_scores_words_during_training_as_after(ner_config, conll_data):
    """With continuation sub-tokens labelled and sentences split into windows, the metrics logged during training
    are the final report's (whole sentences): the last evaluation and the validation report agree."""
    result = run_recipe(_recipe(ner_config(data__label_all_subtokens=True, data__max_length=10, data__stride=3)))
    validation = result.metrics["validation"]
    assert validation["num_predicted_entities"] > 0
    assert validation["num_words"] == sum(len(row["tokens"]) for row in read_conll(conll_data["validation"]))
    last = [entry for entry in result.trainer.state.log_history if "eval_f1" in entry][-1]
    assert last["step"] == result.trainer.state.global_step
    for key in ("accuracy", "precision", "recall", "f1", "f1_macro"):
        assert last[f"eval_{key}"] == pytest.approx(validation[key]), key


def test_predict_matches_the_transformers_pipeline(tmp_path, tiny_bert_dir, ner_config):
    import torch
    from transformers import AutoModelForTokenClassification, pipeline

    from hftl.data import LabelMap

    names = ("B-location", "B-person", "I-location", "I-person", "O")
    torch.manual_seed(3)
    model = AutoModelForTokenClassification.from_pretrained(
        tiny_bert_dir, num_labels=5, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    with torch.no_grad():  # a random head with large weights: many entities of both kinds
        model.classifier.weight.normal_(0, 3.0)
    export = tmp_path / "export"
    model.save_pretrained(export)
    tokenizer = tokenizer_of(tiny_bert_dir)
    tokenizer.save_pretrained(export)
    recipe = _recipe(ner_config(data__max_length=64))
    texts = ["Alice met Bob Smith in New York, then flew to Paris!", "the film was really quite good, said carol.",
             "bob 😀 jones: rome & paris (again)"]
    ours = recipe.predict(model.eval(), tokenizer, texts, LabelMap(names))
    pipe = pipeline("token-classification", model=str(export), aggregation_strategy="first")
    total = 0
    for text, mine in zip(texts, ours):
        theirs = pipe(text)
        assert [(e["entity"], e["start"], e["end"]) for e in mine["entities"]] == \
               [(e["entity_group"], e["start"], e["end"]) for e in theirs]
        assert [e["score"] for e in mine["entities"]] == pytest.approx([float(e["score"]) for e in theirs], abs=1e-4)
        total += len(theirs)
    assert total >= 3


def test_tiny_gpt2_run(ner_config, tmp_path):
    """A decoder with a byte-level BPE tokenizer (GPT-2's, add_prefix_space off): it learns the entities, and a text
    of words gets the tags those words get one by one (the same pieces), with spans that start on each word."""
    import hftl

    checkpoint = bpe_checkpoint(tmp_path / "gpt2", "gpt2")
    result = run_recipe(_recipe(ner_config(model_dir=checkpoint, training__max_steps=12, training__learning_rate=1e-2)))
    test = result.metrics["test"]
    assert test["num_predicted_entities"] > 0 and test["f1"] > 0.3, test
    run = hftl.load(result.run_dir)
    words = ["alice", "went", "to", "new", "york", "with", "bob", "smith"]
    text = " ".join(words)
    by_word, by_text = run.predict([words, text])
    assert by_word["tags"][0] == "B-person" and "I-person" in by_word["tags"], by_word
    starts = [len(" ".join(words[:i])) + (i > 0) for i in range(len(words))]
    spans = [(start, start + len(word)) for start, word in zip(starts, words)]
    expected = decode_entities(text, spans, by_word["tags"], by_word["scores"])
    assert [(e["entity"], e["text"], e["start"], e["end"]) for e in by_text["entities"]] == \
           [(e["entity"], e["text"], e["start"], e["end"]) for e in expected]
    assert [e["score"] for e in by_text["entities"]] == pytest.approx([e["score"] for e in expected], abs=1e-5)


def test_onnx_export_of_a_lora_run_predicts_like_the_run(ner_config, tmp_path):
    """`hftl export RUN --onnx OUT` of a token-classification run (LoRA, merged on export): `hftl.load(OUT)` and
    `hftl predict OUT` give the run's entities and tags, through the same recipe code on ONNX Runtime."""
    pytest.importorskip("onnxruntime")
    import json

    import hftl
    from hftl.cli import main
    from hftl.onnx_export import OnnxClassifier, export_onnx

    result = run_recipe(_recipe(ner_config(model__strategy="lora", training__learning_rate=3e-2)))
    assert result.metrics["test"]["num_predicted_entities"] > 0
    out = export_onnx(result.run_dir, tmp_path / "onnx")
    texts = ["alice and bob smith went to new york", "Paris!! 😀 was, really, quite", "carol flew to rome"]
    inputs = [*texts, ["the", "film", "carol", "rome"]]
    expected = hftl.load(result.run_dir).predict(inputs)
    assert any(e["entities"] for e in expected[:3]) and set(expected[3]["tags"]) != {"O"}
    exported = hftl.load(out)
    assert isinstance(exported.model, OnnxClassifier)
    got = exported.predict(inputs)
    assert got[3]["tags"] == expected[3]["tags"] and got[3]["scores"] == pytest.approx(expected[3]["scores"], abs=1e-4)
    for a, b in zip(got[:3], expected[:3]):
        assert [(e["entity"], e["start"], e["end"]) for e in a["entities"]] == \
               [(e["entity"], e["start"], e["end"]) for e in b["entities"]]
        assert [e["score"] for e in a["entities"]] == pytest.approx([e["score"] for e in b["entities"]], abs=1e-4)
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert main(["predict", str(out), "--input", str(tmp_path / "texts.txt"), "--output",
                 str(tmp_path / "out.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["input"] for row in rows] == texts
    assert [[e["entity"] for e in row["entities"]] for row in rows] == \
           [[e["entity"] for e in b["entities"]] for b in expected[:3]]
    with pytest.raises(hftl.errors.HftlError, match="evaluation runs the PyTorch model"):
        exported.evaluate()
