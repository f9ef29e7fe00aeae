"""The held-out validation split: stratified by label for classification, seeded, and label-checked as used."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from hftl.data import load_splits
from hftl.data.checks import check_rows
from hftl.data.holdout import holdout_indices, keeps_every_class
from hftl.errors import DataError
from hftl.tasks.language_modeling import CausalLMData
from hftl.tasks.text_classification import TextClassificationData
from tests.conftest import write_tsv


def _rows(counts: dict[str, int]) -> list[tuple[str, str]]:
    rows = [(f"{label} example {i}", label) for label, n in counts.items() for i in range(n)]
    return rows


def _data(path, **kwargs) -> TextClassificationData:
    return TextClassificationData(train=str(path), text_column="sentence", **kwargs)


def test_rare_class_is_in_both_parts_for_every_seed(tmp_path):
    path = write_tsv(tmp_path / "train.tsv", _rows({"common": 18, "rare": 2}))
    data = _data(path, validation_fraction=0.5)
    for seed in range(8):
        splits = load_splits(data, seed=seed)
        train, validation = Counter(splits["train"]["label"]), Counter(splits["validation"]["label"])
        assert train == {"common": 9, "rare": 1}, (seed, train)
        assert validation == {"common": 9, "rare": 1}, (seed, validation)


def test_stratified_split_keeps_proportions_and_string_labels(tmp_path):
    path = write_tsv(tmp_path / "train.tsv", _rows({"a": 90, "b": 10}))
    splits = load_splits(_data(path), seed=3)
    assert Counter(splits["validation"]["label"]) == {"a": 9, "b": 1}
    assert Counter(splits["train"]["label"]) == {"a": 81, "b": 9}
    assert "string" in splits["train"].features["label"].dtype  # the column is not recast to ClassLabel ids


def test_split_is_deterministic_for_a_seed(tmp_path):
    path = write_tsv(tmp_path / "train.tsv", _rows({"a": 30, "b": 20, "c": 10}))
    data = _data(path, validation_fraction=0.2)
    first, again, other = (load_splits(data, seed=s)["validation"]["sentence"] for s in (7, 7, 8))
    assert first == again
    assert first != other


def test_label_from_a_class_label_column_is_stratified(tmp_path):
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    rows = _rows({"neg": 18, "pos": 2})
    dataset = datasets.Dataset.from_dict(
        {"sentence": [t for t, _ in rows], "label": [0 if y == "neg" else 1 for _, y in rows]}, features=features)
    dataset.save_to_disk(str(tmp_path / "saved"))
    data = _data(tmp_path / "saved", validation_fraction=0.5)
    for seed in range(4):
        splits = load_splits(data, seed=seed)
        assert Counter(splits["validation"]["label"]) == {0: 9, 1: 1}


def test_language_model_split_is_the_plain_seeded_split(tmp_path):
    import datasets

    path = tmp_path / "train.txt"
    path.write_text("".join(f"line {i}\n" for i in range(50)), encoding="utf-8")
    splits = load_splits(CausalLMData(train=str(path)), seed=11)
    plain = datasets.load_dataset("text", data_files={"data": str(path)}, split="data").train_test_split(
        test_size=5, seed=11, shuffle=True)
    assert splits["validation"]["text"] == plain["test"]["text"]
    assert splits["train"]["text"] == plain["train"]["text"]


def test_single_example_class_falls_back_to_a_plain_split_and_says_which(tmp_path, caplog):
    path = write_tsv(tmp_path / "train.tsv", _rows({"a": 12, "b": 12, "solo": 1}))
    data = _data(path, validation_fraction=0.2)
    outcomes = set()
    for seed in range(30):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hftl.data.splits"):
            try:
                splits = load_splits(data, seed=seed)
            except DataError as err:
                message = str(err)
                assert "'solo'" in message and "single example" in message and "data.validation" in message
                held_out = True
            else:
                assert "solo" in splits["train"]["label"]
                held_out = False
        outcomes.add(held_out)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert any("not stratified" in w and "'solo'" in w for w in warnings), warnings
        # validate predicts the same outcome from the file alone, given the run's seed
        predicted = check_rows(data, ["sentence"], "label", seed=seed)
        assert any("'solo'" in p for p in predicted) == held_out, (seed, predicted)
    assert outcomes == {True, False}


def test_too_few_validation_rows_for_every_class_falls_back(tmp_path, caplog):
    path = write_tsv(tmp_path / "train.tsv", _rows({c: 4 for c in "abcdef"}))
    with caplog.at_level(logging.WARNING, logger="hftl.data.splits"):
        splits = load_splits(_data(path, validation_fraction=0.1), seed=0)
    assert len(splits["validation"]) == 2
    assert any("fewer than the 6 classes" in r.getMessage() for r in caplog.records)


def test_test_labels_are_checked_against_the_training_part(tmp_path):
    train = write_tsv(tmp_path / "train.tsv", _rows({"a": 10, "b": 10, "solo": 1}))
    test = write_tsv(tmp_path / "test.tsv", _rows({"a": 2, "solo": 1}))
    data = _data(train, test=str(test), validation_fraction=0.3)
    for seed in range(30):
        indices = holdout_indices(21, 6, seed, labels=["a"] * 10 + ["b"] * 10 + ["solo"])
        if 20 in indices.validation:
            break
    else:
        pytest.fail("no seed holds out the single example")
    with pytest.raises(DataError, match=r"data.test: .*'solo'.*training"):
        load_splits(data, seed=seed)
    assert any("data.test" in p and "'solo'" in p for p in check_rows(data, ["sentence"], "label", seed=seed))


def test_holdout_indices_partition_the_rows():
    labels = ["x"] * 7 + ["y"] * 5
    split = holdout_indices(12, 4, seed=1, labels=labels)
    assert sorted(split.train + split.validation) == list(range(12))
    assert Counter(labels[i] for i in split.validation) == {"x": 2, "y": 2}
    assert split.reason is None
    plain = holdout_indices(12, 4, seed=1)
    assert sorted(plain.train + plain.validation) == list(range(12)) and len(plain.validation) == 4


def test_keeps_every_class_is_a_safe_shortcut():
    import random

    rng = random.Random(0)
    for _ in range(200):
        labels = [rng.choice("abcd") for _ in range(rng.randint(4, 30))] + ["a", "b"]
        n_val = rng.randint(1, len(labels) - 1)
        if keeps_every_class(labels, n_val):
            split = holdout_indices(len(labels), n_val, rng.randint(0, 99), labels)
            assert split.reason is None
            assert {labels[i] for i in split.train} == set(labels)
    assert not keeps_every_class(["a", "a", "b"], 1)  # 'b' has a single example
    assert not keeps_every_class(["a", "a", "b", "b"], 3)  # the training part could lose a class


def test_chat_hold_out_keeps_each_prompt_on_one_side():
    """Preference pairs ranked from one conversation tree share its first user turn (oasst1: 1,568 pairs of 544
    prompts). A plain row split put prompts on both sides, and validation scored prompts the model trained on (0.79
    preference accuracy against 0.62 on the test's unseen prompts). Whole prompts are held out, about the asked
    share; where every prompt is distinct the split is the plain one, as before."""
    from types import SimpleNamespace

    from hftl.data.conversations import Conversation, Pair
    from hftl.tasks.instruction_tuning import hold_out

    def pair(tree: int, turn: int) -> Pair:
        prompt = [{"role": "user", "content": f"question {tree}"}]
        if turn:  # a deeper node of the same tree
            prompt += [{"role": "assistant", "content": "an answer"}, {"role": "user", "content": f"and {turn}?"}]
        return Pair(prompt, [{"role": "assistant", "content": "good"}], [{"role": "assistant", "content": "bad"}])

    train = [pair(tree, turn) for tree in range(12) for turn in range(1 + tree % 4)]  # 30 pairs of 12 prompts
    data = SimpleNamespace(validation_fraction=0.2)
    for seed in range(5):
        splits = {"train": list(train)}
        sources = {"train": "pairs.jsonl"}
        hold_out(splits, sources, data, seed)
        assert sources["validation"] == "pairs.jsonl (held-out share 0.2, whole prompts)"
        seen = {p.prompt[0]["content"] for p in splits["train"]}
        held = {p.prompt[0]["content"] for p in splits["validation"]}
        assert not seen & held and seen | held == {f"question {t}" for t in range(12)}
        assert 6 <= len(splits["validation"]) <= 6 + 3 and len(splits["train"]) + len(splits["validation"]) == 30

    distinct = [Conversation(messages=[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}],
                             trained=[False, True]) for i in range(20)]
    splits = {"train": list(distinct)}
    sources = {"train": "chats.jsonl"}
    hold_out(splits, sources, data, 3)
    assert sources["validation"] == "chats.jsonl (held-out share 0.2)"
    plain = holdout_indices(20, 4, 3)
    assert splits["validation"] == [distinct[i] for i in sorted(plain.validation)]
