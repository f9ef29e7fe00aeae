"""`hftl predict` on a sentence-pair run (issue 23 item 4): the run's `data.text_pair_column` is read beside its
text column from CSV, TSV, JSON and JSONL input, and the predictions are the model's on both texts."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import make_sentences, write_tsv
from hftl.runner import run_recipe

#: the second text decides the label in the training data, so a run that ignored it would learn nothing
PAIRS = [("the film", "it was great"), ("the plot", "awful and boring"), ("a story, with a twist", "lovely, charming"),
         ("one more", "dismal")]


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory, tiny_bert_dir):
    from hftl import TextClassificationRecipe

    tmp = tmp_path_factory.mktemp("pair_run")
    data = {}
    for name, n, seed in (("train", 64, 1), ("dev", 16, 2)):
        firsts, seconds = make_sentences(n, seed=seed), make_sentences(n, seed=seed + 10)
        rows = [(first, second, label) for (first, _), (second, label) in zip(firsts, seconds)]
        data[name] = write_tsv(tmp / f"{name}.tsv", rows, header=("sentence1", "sentence2", "label"))
    config = {
        "task": "text-classification",
        "model": {"name_or_path": str(tiny_bert_dir), "strategy": "full"},
        "data": {"train": str(data["train"]), "validation": str(data["dev"]), "text_column": "sentence1",
                 "text_pair_column": "sentence2", "label_column": "label", "max_length": 32,
                 "calibration": "none"},  # probabilities are the model's softmax: checked independently below
        "training": {"output_dir": str(tmp / "run"), "num_train_epochs": 1, "learning_rate": 5e-3,
                     "per_device_train_batch_size": 16, "seed": 42},
        "speed": {"bf16": False},
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_CACHE", str(tmp / "datasets_cache"))
        return run_recipe(TextClassificationRecipe(config)).run_dir


@pytest.fixture(scope="module")
def expected(pair_run):
    """label -> probability of each pair, from transformers alone: the saved model on tokenizer(text, text_pair)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pair_run)
    model = AutoModelForSequenceClassification.from_pretrained(pair_run).eval()
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    rows = []
    for first, second in PAIRS:
        with torch.inference_mode():
            logits = model(**tokenizer(first, second, truncation=True, max_length=32, return_tensors="pt")).logits
        rows.append(dict(zip(names, torch.softmax(logits[0].float(), -1).tolist())))
    return rows


def _check(rows: list[dict], expected: list[dict]) -> None:
    assert len(rows) == len(PAIRS)
    for row, want in zip(rows, expected):
        assert row["probabilities"] == pytest.approx(want, abs=1e-5)
        assert row["label"] == max(want, key=want.get)


def test_predict_reads_the_runs_pair_column_from_jsonl(pair_run, expected, tmp_path, capsys):
    from hftl.cli import main

    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps({"id": i, "sentence1": a, "sentence2": b}) + "\n"
                              for i, (a, b) in enumerate(PAIRS)))
    assert main(["predict", str(pair_run), "--input", str(source)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["input"] for row in rows] == [list(pair) for pair in PAIRS]
    _check(rows, expected)


def test_predict_reads_pairs_from_csv_and_json_with_other_column_names(pair_run, expected, tmp_path):
    from hftl.cli import main

    source = tmp_path / "pairs.csv"
    with source.open("w", newline="") as handle:  # commas inside texts: standard CSV quoting
        csv.writer(handle).writerows([["premise", "id", "hypothesis"], *[[a, i, b] for i, (a, b) in enumerate(PAIRS)]])
    output = tmp_path / "predictions.csv"
    assert main(["predict", str(pair_run), "--input", str(source), "--column", "premise",
                 "--pair-column", "hypothesis", "--output", str(output)]) == 0
    rows = list(csv.DictReader(output.open()))
    assert [(row["input"], row["input_pair"]) for row in rows] == PAIRS
    _check([{"label": row["label"], "probabilities": {name[len("prob_"):]: float(value) for name, value in row.items()
                                                      if name.startswith("prob_")}} for row in rows], expected)

    source = tmp_path / "pairs.json"
    source.write_text(json.dumps([{"sentence1": a, "sentence2": b} for a, b in PAIRS]))
    output = tmp_path / "predictions.jsonl"
    assert main(["predict", str(pair_run), "--input", str(source), "--output", str(output)]) == 0
    _check([json.loads(line) for line in output.read_text().splitlines()], expected)


def test_predict_says_what_a_pair_run_needs(pair_run, tmp_path, capsys):
    from hftl.cli import main

    lines = tmp_path / "texts.txt"
    lines.write_text("just one text\n")
    assert main(["predict", str(pair_run), "--input", str(lines)]) == 2
    err = capsys.readouterr().err
    assert "sentence1" in err and "sentence2" in err and ".jsonl" in err
    source = tmp_path / "pairs.csv"
    source.write_text("sentence1,other\na,b\n")
    assert main(["predict", str(pair_run), "--input", str(source)]) == 2
    assert "no column 'sentence2'" in capsys.readouterr().err


def test_pair_column_is_refused_for_a_run_of_single_texts():
    """--pair-column on a run trained on single texts would feed it pairs it never saw: refused, not guessed."""
    import types

    from hftl.commands.predict import _pair_column
    from hftl.errors import DataError

    single = types.SimpleNamespace(input_pair_column="text_pair_column",
                                   config=types.SimpleNamespace(data=types.SimpleNamespace(text_pair_column=None)))
    with pytest.raises(DataError, match="single inputs"):
        _pair_column(types.SimpleNamespace(pair_column="b", run_dir="runs/x"), single)
    assert _pair_column(types.SimpleNamespace(pair_column=None, run_dir="runs/x"), single) is None
    pairs = types.SimpleNamespace(input_pair_column="text_pair_column",
                                  config=types.SimpleNamespace(data=types.SimpleNamespace(text_pair_column="s2")))
    assert _pair_column(types.SimpleNamespace(pair_column=None, run_dir="runs/x"), pairs) == "s2"
    assert _pair_column(types.SimpleNamespace(pair_column="other", run_dir="runs/x"), pairs) == "other"
