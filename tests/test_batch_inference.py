"""Streaming, length-sorted, token-budget prediction (hftl.batch_inference) and its file reader/writer
(hftl.prediction_io)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hftl.batch_inference import chunked, plan_batches, run_batched, torch_forward, uncalibrated_probabilities
from hftl.errors import DataError
from hftl.prediction_io import PredictionWriter, iter_inputs

WORDS = "the film was really quite great and the acting story felt very boring plot".split()


def varied_texts(n: int) -> list[str]:
    """Texts from 1 to ~40 words, in an order that mixes lengths (so sorting moves every row)."""
    return [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(1 + (i * 13) % 40)) for i in range(n)]


@pytest.fixture(scope="module")
def classifier(tiny_bert_dir):
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3).eval()
    with torch.no_grad():  # a freshly initialised head gives near-uniform outputs: make inputs tell apart
        model.classifier.weight.normal_(0, 3.0)
        model.bert.pooler.dense.weight.normal_(0, 1.0)
    return model, AutoTokenizer.from_pretrained(tiny_bert_dir)


def one_by_one(model, tokenizer, texts, max_length=64, pairs=None) -> np.ndarray:
    """The reference: each input alone (no padding at all), plain float32 forward."""
    import torch

    rows = []
    for i, text in enumerate(texts):
        batch = tokenizer(text, pairs[i] if pairs else None, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            rows.append(model(**batch).logits.softmax(-1)[0].numpy())
    return np.stack(rows)


def collect(chunks) -> tuple[list, np.ndarray]:
    inputs, scores = [], []
    for chunk, probs in chunks:
        inputs += chunk
        scores.append(probs)
    return inputs, np.concatenate(scores)


def test_results_in_input_order_equal_to_one_by_one_forward(classifier):
    model, tokenizer = classifier
    texts = varied_texts(37)
    inputs, probs = collect(uncalibrated_probabilities(model, tokenizer, texts, max_length=64, token_budget=200,
                                                       chunk_size=16, bf16=False, progress=False))
    assert inputs == texts
    assert probs.shape == (37, 3)
    np.testing.assert_allclose(probs, one_by_one(model, tokenizer, texts), atol=1e-5)


def test_truncation_to_max_length(classifier):
    model, tokenizer = classifier
    texts = varied_texts(9)
    _, probs = collect(uncalibrated_probabilities(model, tokenizer, texts, max_length=8, bf16=False, progress=False))
    np.testing.assert_allclose(probs, one_by_one(model, tokenizer, texts, max_length=8), atol=1e-5)


def test_sentence_pairs(classifier):
    model, tokenizer = classifier
    firsts, seconds = varied_texts(11), varied_texts(14)[3:]
    inputs, probs = collect(uncalibrated_probabilities(model, tokenizer, list(zip(firsts, seconds)), max_length=64,
                                                       token_budget=150, chunk_size=4, bf16=False, progress=False))
    assert inputs == list(zip(firsts, seconds))
    np.testing.assert_allclose(probs, one_by_one(model, tokenizer, firsts, pairs=seconds), atol=1e-5)
    # a pair is not the concatenated text: the token types differ
    assert not np.allclose(probs, one_by_one(model, tokenizer, [a + " " + b for a, b in zip(firsts, seconds)]))


def test_generator_is_read_lazily_chunk_by_chunk(classifier):
    model, tokenizer = classifier
    texts = varied_texts(25)
    pulled = []

    def source():
        for text in texts:
            pulled.append(text)
            yield text

    results = uncalibrated_probabilities(model, tokenizer, source(), chunk_size=10, bf16=False, progress=False)
    assert pulled == []  # nothing read before the first result is asked for
    first, _ = next(results)
    assert len(first) == 10 and len(pulled) == 10
    second, _ = next(results)
    assert second == texts[10:20] and len(pulled) == 20
    rest = [chunk for chunk, _ in results]
    assert rest == [texts[20:]] and len(pulled) == 25


def test_token_budget_respected_by_every_forward_pass(classifier):
    model, tokenizer = classifier
    texts = varied_texts(60)
    shapes = []
    forward = torch_forward(model, bf16=False)

    def recording(arrays):
        shapes.append(arrays["input_ids"].shape)
        return forward(arrays)

    _, logits = collect(run_batched(recording, tokenizer, texts, max_length=64, token_budget=120, progress=False))
    assert sum(rows for rows, _ in shapes) == 60
    assert all(rows * width <= 120 for rows, width in shapes)
    assert len(shapes) > 1 and max(rows for rows, _ in shapes) > min(rows for rows, _ in shapes)  # wide and narrow
    lengths = sorted((len(ids) for ids in tokenizer(texts)["input_ids"]), reverse=True)
    assert [width for _, width in shapes] == sorted((width for _, width in shapes), reverse=True)
    assert shapes[0][1] == lengths[0]  # the longest batch first, padded to its own longest row only


def test_first_token_last_layer_in_prediction_keeps_the_probabilities(classifier):
    """The default (last layer at [CLS] only) gives the probabilities of the full computation within float32
    rounding, and leaves the model's layers as they were."""
    model, tokenizer = classifier
    texts = varied_texts(30)
    layer = model.bert.encoder.layer[-1]
    seen = []
    handle = layer.register_forward_hook(lambda m, a, out: seen.append(out.shape[1]))
    kwargs = {"max_length": 64, "token_budget": 300, "bf16": False, "progress": False}
    _, fast = collect(uncalibrated_probabilities(model, tokenizer, texts, **kwargs))
    shortcut_lengths, seen[:] = list(seen), []
    _, full = collect(uncalibrated_probabilities(model, tokenizer, texts, first_token_last_layer=False, **kwargs))
    handle.remove()
    assert set(shortcut_lengths) == {1} and min(seen) > 1
    np.testing.assert_allclose(fast, full, atol=1e-5)
    assert (fast.argmax(-1) == full.argmax(-1)).all() and "forward" not in vars(layer)


def test_default_token_budget_follows_the_models_device(classifier, monkeypatch):
    from hftl import batch_inference

    model, tokenizer = classifier
    budgets = []

    def recording_run_batched(forward, tokenizer, texts, *, token_budget, **kwargs):
        budgets.append(token_budget)
        return iter([])

    monkeypatch.setattr(batch_inference, "run_batched", recording_run_batched)
    list(uncalibrated_probabilities(model, tokenizer, ["a text"], bf16=False, progress=False))
    list(uncalibrated_probabilities(model, tokenizer, ["a text"], bf16=False, progress=False, token_budget=300))
    assert budgets == [batch_inference.DEFAULT_TOKEN_BUDGET, 300]
    assert batch_inference.default_token_budget("cuda") == batch_inference.ACCELERATOR_TOKEN_BUDGET
    assert batch_inference.ACCELERATOR_TOKEN_BUDGET > batch_inference.DEFAULT_TOKEN_BUDGET


def test_plan_batches_covers_every_row_once_and_isolates_rows_over_budget():
    lengths = [5, 50, 3, 12, 12, 7, 100]
    batches = plan_batches(lengths, token_budget=40)
    assert sorted(i for batch in batches for i in batch) == list(range(7))
    assert batches[0] == [6] and batches[1] == [1]  # over budget alone, longest first
    for batch in batches[2:]:
        assert len(batch) * max(lengths[i] for i in batch) <= 40
    assert all(len(b) * 16 <= 40 for b in plan_batches([12, 12, 12], 40, pad_to_multiple_of=8))


def test_input_checks(classifier):
    model, tokenizer = classifier
    with pytest.raises(DataError, match="input 3: expected a text"):
        next(uncalibrated_probabilities(model, tokenizer, ["a", "b", None], bf16=False, progress=False))
    with pytest.raises(DataError, match="input 2: expected a \\(text, text_pair\\) pair"):
        next(uncalibrated_probabilities(model, tokenizer, [("a", "b"), "c"], bf16=False, progress=False))


def test_chunked_pulls_only_what_it_returns():
    source = iter(range(7))
    chunks = chunked(source, 3)
    assert next(chunks) == [0, 1, 2]
    assert next(source) == 3  # nothing read ahead
    assert list(chunks) == [[4, 5, 6]]


# -- reading and writing files ---------------------------------------------------------------------

def test_iter_inputs_reads_every_format(tmp_path):
    (tmp_path / "in.txt").write_text("one\n\n two \r\nthree\n", encoding="utf-8")
    assert list(iter_inputs(str(tmp_path / "in.txt"))) == ["one", " two ", "three"]
    # TSV: no quoting, so quotes are part of the text
    (tmp_path / "in.tsv").write_text('id\ttext\n1\tsay "hi\n2\tbye"\n', encoding="utf-8")
    assert list(iter_inputs(str(tmp_path / "in.tsv"), default_column="text")) == ['say "hi', 'bye"']
    (tmp_path / "in.csv").write_text('text,other\n"a, quoted",x\nplain,y\n', encoding="utf-8")
    assert list(iter_inputs(str(tmp_path / "in.csv"), column="text")) == ["a, quoted", "plain"]
    assert list(iter_inputs(str(tmp_path / "in.csv"), column="text", pair_column="other")) == [("a, quoted", "x"),
                                                                                             ("plain", "y")]
    (tmp_path / "in.jsonl").write_text('{"sentence": "a", "n": 1}\n\n{"sentence": "b"}\n', encoding="utf-8")
    assert list(iter_inputs(str(tmp_path / "in.jsonl"), default_column="sentence")) == ["a", "b"]
    (tmp_path / "list.json").write_text('["x", "y"]', encoding="utf-8")
    assert list(iter_inputs(str(tmp_path / "list.json"))) == ["x", "y"]


def test_iter_inputs_reads_lazily(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a"}\n{"text": 5}\n', encoding="utf-8")
    inputs = iter_inputs(str(path))
    assert next(inputs) == "a"  # the bad second line is not read yet
    with pytest.raises(DataError, match=r"in.jsonl, line 2: expected a text in 'text', got 5"):
        next(inputs)


@pytest.mark.parametrize("name, content, kwargs, message", [
    ("in.tsv", "text\tlabel\na\tb\tc\n", {"column": "text"}, r"in.tsv, line 2: 3 fields for 2 columns"),
    ("in.csv", "text,label\na\n", {"column": "label"}, r"in.csv, line 2: no value in column 'label'"),
    ("in.csv", "text,label\na,b\n", {"column": "txt"}, r"in.csv has no column 'txt'. Did you mean 'text'\?"),
    ("in.csv", "a,b\n1,2\n", {}, r"which column holds the inputs\? Give --column"),
    ("in.jsonl", '{"text": "a"}\n{"text": \n', {}, r"in.jsonl, line 2: not valid JSON"),
    ("in.jsonl", '{"text": "a"}\n["a"]\n', {}, r"in.jsonl, line 2: expected a JSON object"),
    ("in.json", '{"text": "a"}', {}, r"in.json: expected a list of objects or strings, got dict"),
])
def test_iter_inputs_errors_name_file_and_row(tmp_path, name, content, kwargs, message):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        list(iter_inputs(str(tmp_path / name), **kwargs))


def test_iter_inputs_missing_file_fails_at_once(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        iter_inputs(str(tmp_path / "absent.txt"))


def test_writer_writes_rows_as_they_come(tmp_path):
    rows = [{"input": "a", "label": "pos", "score": 0.75, "probabilities": {"neg": 0.25, "pos": 0.75}},
            {"input": ["b", "c"], "label": "neg", "score": 0.5, "probabilities": {"neg": 0.5, "pos": 0.5}}]
    with PredictionWriter(str(tmp_path / "out.jsonl")) as writer:
        writer.write(rows[:1])
        assert (tmp_path / "out.jsonl").read_text(encoding="utf-8").count("\n") == 1  # flushed before the end
        writer.write(rows[1:])
    assert [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()] == rows
    with PredictionWriter(str(tmp_path / "out.csv")) as writer:
        writer.write(iter(rows))
    lines = (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()
    assert lines == ["input,label,score,prob_neg,prob_pos", "a,pos,0.75,0.25,0.75",
                     '"[""b"", ""c""]",neg,0.5,0.5,0.5']
    with PredictionWriter(str(tmp_path / "out.tsv")) as writer:
        writer.write(rows[:1])
    assert (tmp_path / "out.tsv").read_text(encoding="utf-8").splitlines()[1] == "a\tpos\t0.75\t0.25\t0.75"
