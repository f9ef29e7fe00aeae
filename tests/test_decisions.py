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
    from hftl.runner import run_recipe
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
    from hftl.runner import run_recipe
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


# -- items 5 and 6: one decisions object, a positive label -----------------------------------------------
def test_decisions_positive_label_threshold_by_hand():
    """The binary threshold is on `positive_label`'s probability, whichever id it has; saved and loaded whole."""
    import numpy as np

    from hftl.calibration import tune_binary_threshold
    from hftl.decisions import Decisions

    names = ["churn", "stay"]
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 2, 300)
    logits = np.stack([2.0 * (ids == 0) + rng.normal(0, 1.5, 300), np.zeros(300)], axis=1)
    decisions = Decisions.fit(logits, ids, names, "single_label_classification", calibration="none",
                              threshold="tuned", positive_label="churn")
    p_churn = np.exp(logits[:, 0]) / np.exp(logits).sum(axis=1)
    assert decisions.threshold == tune_binary_threshold(p_churn, (ids == 0).astype(int))  # on churn, not stay
    answers = decisions.apply(logits, names)
    assert [a["label"] for a in answers] == ["churn" if p >= decisions.threshold else "stay" for p in p_churn]
    assert Decisions.from_dict(decisions.to_dict()) == decisions
    default = Decisions.fit(logits, ids, names, "single_label_classification", calibration="none")
    assert default.positive_label == "stay" and default.threshold is None  # auto: argmax, tuned one reported
    old_run = Decisions.from_dict({"problem_type": "single_label_classification", "threshold": 0.9})
    assert [a["label"] for a in old_run.apply(logits, names)] == [
        "stay" if 1 - p >= 0.9 else "churn" for p in p_churn]  # a run saved before positive_label: id 1


def test_positive_label_is_checked_up_front(tmp_path, tiny_bert_dir, text_data):
    import pytest

    from hftl.errors import ConfigError
    from hftl.preflight import load_config
    from tests.test_classification_options import _config

    config = _config(tmp_path, tiny_bert_dir, {"train": text_data["train"]}, positive_label="postive")
    with pytest.raises(ConfigError, match="'postive' is not a label of the training data. Labels: neg, pos"):
        load_config(config)
    assert load_config(_config(tmp_path, tiny_bert_dir, {"train": text_data["train"]},
                               positive_label="neg")).data.positive_label == "neg"


# -- item 6b: a baseline, warnings, the most confident mistakes ------------------------------------------
def test_collapsed_run_shows_the_baseline_warns_and_lists_its_errors(tmp_path, tiny_bert_dir, capsys):
    """A run whose answers collapse to one class (an untrained model and a fixed threshold of 0.01 on `pos`):
    the summary, metrics and card show the majority-class baseline and warn; errors.jsonl lists the mistakes."""
    import json
    from collections import Counter

    import pytest

    from conftest import make_sentences, write_tsv
    from hftl import TextClassificationRecipe
    from hftl.runner import run_recipe
    from hftl.report import print_summary
    from tests.test_classification_options import _config

    test_rows = [r for r in make_sentences(40, seed=3) if r[1] == "pos"][:20] + \
        [r for r in make_sentences(40, seed=4) if r[1] == "neg"][:12]
    files = {"train": write_tsv(tmp_path / "train.tsv", make_sentences(32, seed=1)),
             "validation": write_tsv(tmp_path / "dev.tsv", make_sentences(16, seed=2)),
             "test": write_tsv(tmp_path / "test.tsv", test_rows)}
    config = _config(tmp_path, tiny_bert_dir, files, threshold=0.01)
    config["training"].update(learning_rate=1e-12, num_train_epochs=1)
    result = run_recipe(TextClassificationRecipe(config))
    test = result.metrics["test"]

    gold = [label for _, label in test_rows]
    majority, count = Counter(gold).most_common(1)[0]
    assert majority == "pos" and test["baseline"]["label"] == "pos"
    assert test["baseline"]["accuracy"] == pytest.approx(count / len(gold))
    assert test["accuracy"] == pytest.approx(count / len(gold))  # every answer is pos
    assert any("predicts one class (pos) for every example" in w for w in test["warnings"])
    assert any("does not beat the baseline" in w for w in test["warnings"])

    print_summary(result)
    out = capsys.readouterr().out
    assert "WARNING the model predicts one class (pos) for every example" in out
    assert f"baseline, the most frequent class of this split (pos): accuracy {count / len(gold):.4f}" in out

    errors = [json.loads(line) for line in (result.run_dir / "errors.jsonl").read_text().splitlines()]
    test_errors = [e for e in errors if e["split"] == "test"]
    assert len(test_errors) == gold.count("neg")  # every neg row, answered pos
    assert all(e["gold"] == "neg" and e["predicted"] == "pos" for e in test_errors)
    assert [e["confidence"] for e in test_errors] == sorted((e["confidence"] for e in test_errors), reverse=True)
    assert all(test_rows[e["row"] - 1][1] == "neg" for e in test_errors)
    card = (result.run_dir / "README.md").read_text()
    assert "> **Warning (test):** the model predicts one class (pos) for every example." in card
    assert "| baseline |" in card and "most confident mistakes on the test set" in card
    assert "The positive class" in card and "`pos`" in card


# -- item 3: one precision for fitting, reporting and serving --------------------------------------------
def test_bf16_run_reports_what_evaluate_and_predict_serve(tmp_path, tiny_bert_dir, text_data):
    """With bf16 autocast on for training (`speed.bf16: auto` on a CPU with native bf16, or forced), the run's
    decisions and metrics.json come from float32 logits, as `hftl evaluate` and `hftl predict` compute them."""
    import json

    import numpy as np
    import pytest
    import torch

    from hftl import TextClassificationRecipe
    from hftl.runner import run_recipe
    from hftl.calibration import fit_temperature
    from hftl.inference import load
    from hftl.trainer import bf16_is_fast
    from tests.test_classification_options import _config

    files = {"train": text_data["train"], "validation": text_data["validation"], "test": text_data["test"]}
    config = _config(tmp_path, tiny_bert_dir, files, threshold="tuned")
    config["speed"] = {"bf16": "auto"} if bf16_is_fast() else {}
    config["training"]["bf16"] = True  # autocast in training, whatever the machine
    result = run_recipe(TextClassificationRecipe(config))
    run = result.run_dir
    assert json.loads((run / "manifest.json").read_text())["training"]["bf16"] is True
    saved = json.loads((run / "calibration.json").read_text())
    assert saved["inference_precision"] == "float32"

    loaded = load(run)
    # the temperature is the one float32 validation logits give (computed here without hftl's batching)
    dev = [line.split("\t") for line in text_data["validation"].read_text().splitlines()[1:]]
    batch = loaded.processor([t for t, _ in dev], padding=True, truncation=True, max_length=24, return_tensors="pt")
    with torch.no_grad():
        dev_logits = loaded.model.float()(**batch).logits.numpy()
    dev_ids = np.array([loaded.labels.names.index(label) for _, label in dev])
    assert saved["temperature"] == pytest.approx(fit_temperature(dev_logits, dev_ids), rel=1e-4)

    test = result.metrics["test"]
    evaluated = loaded.evaluate()
    for key in ("accuracy", "f1", "balanced_accuracy"):
        assert evaluated[key] == test[key], key
    for key in ("loss", "nll_after", "ece_after"):
        assert evaluated[key] == pytest.approx(test[key], rel=1e-5, abs=1e-6), key
    rows = [line.split("\t") for line in text_data["test"].read_text().splitlines()[1:]]
    predicted = [p["label"] for p in loaded.predict([t for t, _ in rows])]
    assert np.mean([p == gold for p, (_, gold) in zip(predicted, rows)]) == pytest.approx(test["accuracy"])
    mistakes = {e["row"] for e in loaded_errors(run) if e["split"] == "test"}  # the run's, row by row
    assert mistakes == {i + 1 for i, (p, (_, gold)) in enumerate(zip(predicted, rows)) if p != gold}


def loaded_errors(run):
    return RunDir(run).errors()
