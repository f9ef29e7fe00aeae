"""The Task contract: a new task written here, in a few dozen lines, registers with one line and then works
through every shared path (validate, train, save, reload, predict, evaluate, card, `hftl --help`, the config
reference) without any other file knowing its name."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import yaml

from hftl import register_task
from hftl.config.parse import field
from hftl.config.schema import DataConfig
from hftl.data import fingerprint, load_split, load_splits
from hftl.data.columns import check_sources, require_source, split_sources
from hftl.recipe import PreparedData
from hftl.tasks.classification import ClassificationRecipe

TOY = "first-word-classification"


@dataclass
class FirstWordData(DataConfig):
    sentence_column: str = field("sentence", help="the sentence, whose first two words decide its class")
    label_column: str = field("label", help="the class")


class FirstWordRecipe(ClassificationRecipe):
    """A toy task: classify a sentence from its first two words only (everything after them is cut off)."""

    task = TOY
    title = "First-word classification"
    data_config_class = FirstWordData
    auto_model_class = "AutoModelForSequenceClassification"
    head_modules = ("classifier",)
    peft_task_type = "SEQ_CLS"
    pipeline_tag = "text-classification"
    input_column = "sentence_column"

    @classmethod
    def check_config(cls, config, model_ok):
        data = config.data
        return check_sources(data, {"sentence_column": data.sentence_column, "label_column": data.label_column})

    def load_data(self):
        data = self.config.data
        splits, sources = load_splits(data, seed=self.config.seed), split_sources(data)
        values = {name: ds[data.label_column] for name, ds in splits.items()}
        splits, labels = self.encode_splits(splits, values, sources, [data.sentence_column])
        return PreparedData(splits, sources, {n: fingerprint(s) for n, s in data.splits().items()}, labels)

    def load_processor(self):
        from hftl.modeling import load_tokenizer

        return load_tokenizer(self.config.model)

    def encode_inputs(self, tokenizer, sentences, first_row):
        return tokenizer([" ".join(s.split()[:2]) for s in sentences], padding=True, return_tensors="pt")

    def preprocess(self, data, tokenizer):
        column = self.config.data.sentence_column
        return {name: ds.map(lambda b: dict(self.encode_inputs(tokenizer, b[column], 0)), batched=True, batch_size=len(ds),
                             remove_columns=[column]) for name, ds in data.splits.items()}

    def prepare_source(self, source, tokenizer, labels):
        data = self.config.data
        require_source(source, "--data", {"sentence_column": data.sentence_column, "label_column": data.label_column})
        dataset = load_split(source, data.dataset_config, split="test")
        dataset = self.with_label_ids(dataset, labels, dataset[data.label_column], source, [data.sentence_column])
        return self.preprocess(PreparedData({"test": dataset}, {"test": source}), tokenizer)["test"]


@pytest.fixture
def toy_task():
    from hftl.recipe import _REGISTERED

    register_task(FirstWordRecipe)  # the one registration line
    yield FirstWordRecipe
    _REGISTERED.pop(TOY)


def test_a_task_declared_in_a_test_module_works_end_to_end(toy_task, tmp_path, tiny_bert_dir, text_data, capsys):
    from hftl import load
    from hftl.cli import main
    from hftl.reference import render
    from hftl.run_dir import RunDir

    # the first two words decide the label: "great film ..." is positive, "awful film ..." negative
    rows = [(f"{word} film {filler}", label) for i in range(24)
            for word, label, filler in [("great", "pos", "story " * (i % 5)), ("awful", "neg", "plot " * (i % 3))]]
    tsv = tmp_path / "train.tsv"
    tsv.write_text("sentence\tlabel\n" + "".join(f"{s.strip()}\t{l}\n" for s, l in rows), encoding="utf-8")
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({
        "task": TOY,
        "model": {"name_or_path": str(tiny_bert_dir), "strategy": "full"},
        "data": {"train": str(tsv), "test": str(tsv)},
        "training": {"output_dir": str(tmp_path / "run"), "num_train_epochs": 3, "learning_rate": 5e-3,
                     "per_device_train_batch_size": 8},
        "speed": {"bf16": False},
    }), encoding="utf-8")

    assert main(["validate", str(config)]) == 0
    assert main(["train", str(config)]) == 0
    run = RunDir(tmp_path / "run")
    assert not run.is_adapter and run.labels().names == ("neg", "pos")
    assert {"accuracy", "f1", "per_class", "loss"} <= set(run.metrics()["test"])
    assert run.manifest()["task"] == TOY and run.manifest()["training"]["per_device_train_batch_size"] == 8
    card = (run.path / "README.md").read_text(encoding="utf-8")
    assert "First-word classification" in card and "pipeline_tag: text-classification" in card

    loaded = load(run.path)
    predictions = loaded.predict(["great film plot plot", "awful film story story"])
    assert [p["label"] for p in predictions] == ["pos", "neg"]
    assert loaded.evaluate()["accuracy"] == run.metrics()["test"]["accuracy"]

    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--help"])
    assert TOY in capsys.readouterr().out
    assert f"data (task: {TOY})" in render()


def test_registering_needs_a_task_name():
    class Nameless(ClassificationRecipe):
        pass

    with pytest.raises(TypeError, match="task name"):
        register_task(Nameless)


def test_unknown_task_lists_the_registered_ones(tmp_path):
    from hftl import load_config
    from hftl.errors import ConfigError

    with pytest.raises(ConfigError, match="text-classificaton'.*Did you mean 'text-classification'") as err:
        load_config({"task": "text-classificaton", "model": {"name_or_path": "x"}, "data": {"train": "x.tsv"},
                     "training": {"output_dir": str(tmp_path)}})
    assert "image-classification" in str(err.value)
