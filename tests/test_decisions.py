"""The decisions a classification run fits on validation and every consumer applies, and the run's error analysis."""

from __future__ import annotations

from hftl.run_dir import RunDir
from hftl.runner import run_recipe


def test_errors_jsonl_round_trip(tmp_path):
    run = RunDir(tmp_path)
    assert run.errors() == []
    rows = [{"split": "test", "input": "ça va \"bien\"\nnon", "gold": "neg", "predicted": "pos", "confidence": 0.97},
            {"split": "validation", "input": ["a", "b"], "gold": "pos", "predicted": "neg", "confidence": 0.8}]
    run.write_errors(rows)
    assert (tmp_path / RunDir.ERRORS).read_text(encoding="utf-8").count("\n") == 2  # one object a line
    assert run.errors() == rows


# -- item 1: the problem type is resolved before anything is built ------------------------------------------
def _multilabel_files(tmp_path):
    from conftest import write_tsv
    from tests.test_classification_options import _multilabel_rows

    return {name: write_tsv(tmp_path / f"{name}.tsv", _multilabel_rows(n, seed))
            for name, n, seed in (("train", 32, 1), ("validation", 16, 2))}


def test_auto_problem_type_is_resolved_in_preflight(tmp_path, tiny_bert_dir):
    """`problem_type: auto` is final when the config is loaded: `hftl validate` and the TrainingArguments see
    the detected type (the metric early stopping judges by exists for it)."""
    from conftest import write_tsv
    from hftl import TextClassificationRecipe
    from hftl.preflight import load_config
    from tests.test_classification_options import _config, _pair_rows

    config = _config(tmp_path, tiny_bert_dir, _multilabel_files(tmp_path), label_separator=",")
    config["training"]["early_stopping_patience"] = 1
    loaded = load_config(config)
    assert loaded.data.problem_type == "multi_label_classification"
    assert TextClassificationRecipe(loaded).training_arguments().metric_for_best_model == "f1_macro"

    header = ("sentence", "sentence2", "label")
    pairs = {"train": write_tsv(tmp_path / "p.tsv", _pair_rows(20, 1), header=header)}
    config = _config(tmp_path, tiny_bert_dir, pairs, text_pair_column="sentence2")
    config["training"]["early_stopping_patience"] = 1
    recipe = TextClassificationRecipe(config)
    assert recipe.config.data.problem_type == "regression"
    assert recipe.training_arguments().metric_for_best_model == "loss"


def test_auto_multilabel_run_with_early_stopping(tmp_path, tiny_bert_dir):
    """Reproduces `KeyError: eval_f1`: a multi-label run detected from its labels, with early stopping."""
    import yaml

    from hftl import TextClassificationRecipe
    from tests.test_classification_options import _config

    config = _config(tmp_path, tiny_bert_dir, _multilabel_files(tmp_path), label_separator=",")
    config["training"].update(early_stopping_patience=1, num_train_epochs=2)
    recipe = TextClassificationRecipe(config)
    before = recipe.config.data.problem_type
    result = run_recipe(recipe)
    assert before == result.config.data.problem_type == "multi_label_classification"  # not changed mid-run
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["data"]["problem_type"] == "multi_label_classification"
    assert "f1_macro" in result.metrics["validation"]
