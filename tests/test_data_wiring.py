"""End to end through the tasks: headerless files and the held-out split's label check, via `hftl validate`."""

from __future__ import annotations

import pytest
import yaml

from hftl import TextClassificationRecipe
from hftl.cli import main
from hftl.runner import run_recipe
from conftest import make_sentences


def _headerless(path, rows):
    path.write_text("".join(f"{text}\t{label}\n" for text, label in rows), encoding="utf-8")
    return path


def test_headerless_tsv_validates_trains_and_evaluates(tmp_path, text_config, capsys):
    train = _headerless(tmp_path / "train.tsv", make_sentences(64, seed=1))
    test = _headerless(tmp_path / "test.tsv", make_sentences(16, seed=3))
    config = text_config(**{"data.train": str(train), "data.test": str(test), "data.validation": None,
                            "data.column_names": ["sentence", "label"], "training.num_train_epochs": 1})
    path = tmp_path / "headerless.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    result = run_recipe(TextClassificationRecipe.from_yaml(path))
    assert result.metrics["test"]["num_examples"] == 16  # the first line is a row, not a header
    from hftl.inference import load

    again = load(result.run_dir).evaluate(str(test))  # the run's saved config carries data.column_names
    assert again["accuracy"] == result.metrics["test"]["accuracy"]


def test_validate_reports_a_singleton_class_held_out_for_validation(tmp_path, text_config, capsys):
    rows = make_sentences(40, seed=1) + [("a lonely neutral sentence", "neutral")]
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    from hftl.data.splits import holdout_indices

    seed = next(s for s in range(100) if 40 in holdout_indices(41, 4, s, [y for _, y in rows]).validation)
    config = text_config(**{"data.train": str(train), "data.validation": None, "data.test": None,
                            "training.seed": seed})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "data.validation (rows held out from data.train" in err and "'neutral'" in err
