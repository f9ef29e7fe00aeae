"""Classification beyond single-label argmax: regression, multi-label with tuned thresholds, class weights,
temperature scaling, early stopping, the checks `hftl validate` makes, and multi-seed aggregates."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_tsv
from hftl import TextClassificationRecipe
from hftl.errors import ConfigError, DataError
from hftl.inference import load
from hftl.preflight import load_config
from hftl.tasks.classification import (
    MULTI, REGRESSION, SINGLE, BoundedScoreLoss, WeightedLoss, class_weight_list, detect_problem_type,
    label_set, regression_scores,
)
from hftl.data.labels import LabelMap
from hftl.runner import run_recipe

WORDS = {"joy": ["great", "lovely", "happy"], "anger": ["awful", "furious", "dismal"], "fear": ["scary", "afraid"]}


def _config(tmp_path, model_dir, files: dict, **data):
    return {
        "task": "text-classification",
        "model": {"name_or_path": str(model_dir), "strategy": "full"},
        "data": {**{k: str(v) for k, v in files.items()}, "text_column": "sentence", "label_column": "label",
                 "max_length": 24, **data},
        "training": {"output_dir": str(tmp_path / "run"), "num_train_epochs": 2, "learning_rate": 5e-3,
                     "per_device_train_batch_size": 16, "seed": 42, "logging_steps": 2},
        "speed": {"bf16": False},
    }


def _multilabel_rows(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        chosen = [name for name in WORDS if rng.random() < 0.4] or ["joy"]
        words = [rng.choice(WORDS[name]) for name in chosen] + ["the", "film"]
        rng.shuffle(words)
        rows.append((" ".join(words), ",".join(chosen)))
    return rows


def _pair_rows(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.sample(["great film", "lovely story", "awful plot", "dismal acting", "happy end"], 2)
        score = round(rng.uniform(0, 5), 2) if a.split()[0] != b.split()[0] else 5.0
        rows.append((a, b, score))
    return rows


# -- pure functions -----------------------------------------------------------------------------------
def test_detect_problem_type():
    assert detect_problem_type(["pos", "neg"], None)[0] == SINGLE
    assert detect_problem_type([0, 1, 2], None)[0] == SINGLE  # whole numbers are class ids
    assert detect_problem_type([0.5, 3.2, 4.0], None)[0] == REGRESSION
    assert detect_problem_type([["a", "b"], ["a"]], None)[0] == MULTI
    assert detect_problem_type(['["a", "b"]', '["a"]'], None)[0] == MULTI
    assert detect_problem_type(["a", "a,b"], ",")[0] == MULTI


def test_label_set_cells():
    assert label_set("admiration, gratitude", ",", "x") == ["admiration", "gratitude"]
    assert label_set('["a", "b", "a"]', None, "x") == ["a", "b"]
    assert label_set([1, 2], None, "x") == ["1", "2"]
    assert label_set("[]", None, "x") == []
    with pytest.raises(DataError, match=r"train.tsv, row 7: label cell .* not a valid JSON list"):
        label_set('["a", ', None, "train.tsv, row 7")


def test_weighted_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.5, 1.5], [0.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    weights = [1.0, 3.0]
    log_p = torch.log_softmax(logits, -1)
    by_hand = -(1.0 * log_p[0, 0] + 3.0 * log_p[1, 1] + 3.0 * log_p[2, 1]) / 3
    loss = WeightedLoss(weights, multi_label=False)({"logits": logits}, labels)
    torch.testing.assert_close(loss, by_hand)
    # under gradient accumulation the Trainer passes the examples of the whole accumulated batch
    loss = WeightedLoss(weights, multi_label=False)({"logits": logits}, labels, num_items_in_batch=torch.tensor(6))
    torch.testing.assert_close(loss, by_hand / 2)
    # weights change the loss: the unweighted mean differs
    assert not torch.isclose(WeightedLoss([1.0, 1.0], False)({"logits": logits}, labels), by_hand)


def test_weighted_binary_cross_entropy_by_hand():
    logits = torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos_weight = [2.0, 5.0]
    sig = torch.sigmoid(logits)
    cells = [-(2.0 * torch.log(sig[0, 0])), -torch.log(1 - sig[0, 1]), -torch.log(1 - sig[1, 0]),
             -(5.0 * torch.log(sig[1, 1]))]
    loss = WeightedLoss(pos_weight, multi_label=True)({"logits": logits}, labels)
    torch.testing.assert_close(loss, torch.stack(cells).mean())


def test_bounded_score_loss_by_hand():
    """`data.score_range`: binary cross-entropy of the logit against the score rescaled to [0, 1]."""
    logits = torch.tensor([[0.0], [2.0], [-1.0]])
    scores = torch.tensor([2.5, 5.0, 1.0])
    unit = torch.tensor([0.5, 1.0, 0.2])
    p = torch.sigmoid(logits.view(-1))
    by_hand = -(unit * torch.log(p) + (1 - unit) * torch.log(1 - p)).mean()
    loss = BoundedScoreLoss(0.0, 5.0)({"logits": logits}, scores)
    torch.testing.assert_close(loss, by_hand)
    torch.testing.assert_close(BoundedScoreLoss(0.0, 5.0)({"logits": logits}, scores, num_items_in_batch=6),
                               by_hand / 2)
    assert regression_scores(np.array([[0.0], [100.0], [-100.0]]), [1.0, 3.0]).tolist() == \
        pytest.approx([2.0, 3.0, 1.0])


def test_class_weight_settings():
    labels = LabelMap(("neg", "pos"))
    auto = class_weight_list("auto", labels, [0, 0, 0, 1], multi_label=False)
    assert auto == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])
    assert class_weight_list({"pos": 3}, labels, [0, 1], False) == [1.0, 3.0]
    assert class_weight_list("none", labels, [0, 1], False) is None
    with pytest.raises(ConfigError, match="'neutral' do not occur"):
        class_weight_list({"neutral": 2.0}, labels, [0, 1], False)
    multi = class_weight_list("auto", labels, [[1, 0], [1, 1], [0, 0], [1, 0]], multi_label=True)
    assert multi == pytest.approx([1 / 3, 3 / 1])  # negatives / positives per label


def test_fitted_decisions_improve_held_out_data(tmp_path, tiny_bert_dir):
    """Thresholds tuned and a temperature fitted on one split beat 0.5 and lower the NLL on another split drawn
    the same way (held out: not the rows they were fitted on)."""
    from hftl.calibration import negative_log_likelihood
    from hftl.tasks.classification_evaluation import split_report

    files = {"train": write_tsv(tmp_path / "t.tsv", _multilabel_rows(20, 1))}
    recipe = TextClassificationRecipe(_config(tmp_path, tiny_bert_dir, files, label_separator=",", problem_type=MULTI))
    rng = np.random.default_rng(0)

    def draw(n):  # over-confident logits whose ranking is informative but shifted: 0.5 is the wrong cut
        references = (rng.random((n, 3)) < [0.1, 0.3, 0.5]).astype(np.int64)
        return 6 * (references + rng.normal(0, 0.5, references.shape)) - 6.5, references

    (fit_logits, fit_refs), (held_logits, held_refs) = draw(400), draw(400)
    labels = LabelMap(("anger", "fear", "joy"))
    decisions = recipe.fit_decisions(fit_logits, fit_refs, labels)
    assert decisions.temperature > 1  # over-confident: softened
    assert all(0.05 <= t < 1 for t in decisions.thresholds)
    held = split_report(held_logits, held_refs, list(labels.names), decisions)
    untuned = split_report(held_logits, held_refs, list(labels.names), recipe.untuned_decisions(labels))
    assert held["f1_macro"] > untuned["f1_macro"]  # tuned thresholds, on rows they never saw
    from sklearn.metrics import f1_score  # the reported figure, independently: sigmoid(logits / T) >= thresholds

    decided = (1 / (1 + np.exp(-held_logits / decisions.temperature)) >= np.array(decisions.thresholds)).astype(int)
    assert held["f1_macro"] == pytest.approx(f1_score(held_refs, decided, average="macro", zero_division=0))
    # independent check of the calibration on the held-out rows: sigmoid(logits / T) against sigmoid(logits)
    calibrated = 1 / (1 + np.exp(-held_logits / decisions.temperature))
    raw = 1 / (1 + np.exp(-held_logits))
    assert negative_log_likelihood(calibrated, held_refs) < negative_log_likelihood(raw, held_refs)
    assert held["nll_after"] == pytest.approx(negative_log_likelihood(calibrated, held_refs))


# -- checks before training (hftl validate) --------------------------------------------------------------
def _problems(config) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(config)
    return "\n".join(err.value.problems)


def test_validate_rejects_impossible_combinations(tmp_path, tiny_bert_dir):
    files = {"train": write_tsv(tmp_path / "t.tsv", [(a, b) for a, _, b in _pair_rows(20, 1)])}
    config = _config(tmp_path, tiny_bert_dir, files, problem_type="regression", class_weights="auto", threshold=0.3)
    problems = _problems(config)
    assert "regression has no classes" in problems and "class_weights: 'auto'" in problems
    assert "threshold: 0.3" in problems


def test_validate_score_range(tmp_path, tiny_bert_dir):
    rows = [(a, b) for a, _, b in _pair_rows(20, 1)] + [("far off", 7.5)]
    files = {"train": write_tsv(tmp_path / "t.tsv", rows)}
    problems = _problems(_config(tmp_path, tiny_bert_dir, files, problem_type="regression", score_range=[0, 5]))
    assert "t.tsv, line 22: the target 7.5 is outside data.score_range [0.0, 5.0] (1 row(s) like this)" in problems
    assert "score_range: expected [low, high] with low < high" in _problems(
        _config(tmp_path, tiny_bert_dir, files, problem_type="regression", score_range=[5, 0]))
    # data hftl validate cannot read (a Hub dataset) is checked when the loss is built, before training
    in_range = {"train": write_tsv(tmp_path / "ok.tsv", rows[:-1])}
    recipe = TextClassificationRecipe(_config(tmp_path, tiny_bert_dir, in_range, problem_type="regression",
                                              score_range=[0, 5]))
    with pytest.raises(DataError, match="lie outside data.score_range") as info:
        recipe.loss_function({"labels": [1.0, 7.5]}, None)
    assert "1 training target(s)" in str(info.value) and "[0.0, 5.0], e.g. 7.5" in str(info.value)
    classes = {"train": write_tsv(tmp_path / "c.tsv", [("good film", "pos"), ("bad film", "neg")] * 5)}
    assert "score_range applies to regression" in _problems(_config(tmp_path, tiny_bert_dir, classes,
                                                                     score_range=[0, 1]))


def test_validate_names_a_multilabel_cell_in_a_single_label_task(tmp_path, tiny_bert_dir):
    rows = [("good film", "pos"), ("bad film", "neg")] * 5 + [("both", '["pos", "neg"]')]
    files = {"train": write_tsv(tmp_path / "t.tsv", rows)}
    problems = _problems(_config(tmp_path, tiny_bert_dir, files, problem_type="single_label_classification"))
    assert "line 12: label cell '[\"pos\", \"neg\"]' holds several labels" in problems
    assert "multi_label_classification" in problems


def test_validate_multilabel_unknown_label_names_the_row(tmp_path, tiny_bert_dir):
    files = {"train": write_tsv(tmp_path / "t.tsv", _multilabel_rows(20, 1)),
             "test": write_tsv(tmp_path / "test.tsv", [("great", "joy"), ("what", "joy,surprise")])}
    problems = _problems(_config(tmp_path, tiny_bert_dir, files, label_separator=","))
    assert "test.tsv, line 3: label(s) 'surprise' do not occur in the training data" in problems


def test_validate_checks_class_weights_and_threshold_against_the_training_labels(tmp_path, tiny_bert_dir):
    """A class weight for a label train does not have, and a threshold on a 3-class task, are reported by
    `hftl validate` together with the other problems, before any model loads."""
    rows = [("good film", "pos"), ("bad film", "neg"), ("a film", "neutral")] * 4
    files = {"train": write_tsv(tmp_path / "t.tsv", rows), "validation": tmp_path / "missing.tsv"}
    config = _config(tmp_path, tiny_bert_dir, files, class_weights={"pos": 2.0, "postive": 3.0}, threshold=0.3)
    problems = _problems(config)
    assert "data.class_weights: label(s) 'postive' do not occur in the training data" in problems
    assert "data.threshold: 0.3 applies to binary or multi-label tasks; this one has 3 classes" in problems
    assert "missing.tsv" in problems  # every problem at once
    multi = _config(tmp_path, tiny_bert_dir, {"train": write_tsv(tmp_path / "m.tsv", _multilabel_rows(20, 1))},
                    label_separator=",", class_weights={"joy": 2.0, "sadness": 1.0})
    assert "'sadness' do not occur" in _problems(multi)


def test_validate_early_stopping(tmp_path, tiny_bert_dir, text_data):
    config = _config(tmp_path, tiny_bert_dir, {"train": text_data["train"]})
    config["training"].update(early_stopping_patience=2, eval_strategy="steps", eval_steps=5)
    assert "eval_strategy is 'steps' but save_strategy is 'epoch'" in _problems(config)
    config["training"] = {"output_dir": str(tmp_path / "r"), "early_stopping_threshold": 0.01}
    assert "only applies with training.early_stopping_patience" in _problems(config)
    config["training"] = {"output_dir": str(tmp_path / "r"), "early_stopping_patience": 0, "eval_strategy": "no"}
    problems = _problems(config)
    assert "early_stopping_patience: expected a positive integer" in problems and "cannot be 'no'" in problems


# -- whole runs ------------------------------------------------------------------------------------------
def test_regression_sentence_pairs(tmp_path, tiny_bert_dir):
    header = ("sentence", "sentence2", "label")
    files = {name: write_tsv(tmp_path / f"{name}.tsv", _pair_rows(n, seed), header=header)
             for name, n, seed in (("train", 64, 1), ("validation", 24, 2), ("test", 24, 3))}
    config = _config(tmp_path, tiny_bert_dir, files, text_pair_column="sentence2")
    result = run_recipe(TextClassificationRecipe(config))
    run = result.run_dir
    assert result.recipe.problem_type == REGRESSION  # detected: scores that are not whole numbers
    test = result.metrics["test"]
    assert {"mse", "mae", "r2", "pearson", "spearman"} <= set(test) and test["loss"] == test["mse"]
    assert len(test["points"]["predicted"]) == 24
    assert json.loads((run / "calibration.json").read_text())["problem_type"] == REGRESSION
    assert json.loads((run / "config.json").read_text())["problem_type"] == "regression"
    assert "problem_type: regression" in (run / "config.yaml").read_text()
    assert (run / "regression_scatter.png").is_file() and "regression_scatter.png" in (run / "README.md").read_text()

    loaded = load(run)
    assert loaded.evaluate()["mse"] == pytest.approx(test["mse"], rel=1e-5)
    predictions = loaded.predict([["great film", "lovely story"], ["awful plot", "awful plot"]])
    assert all(set(p) == {"score"} and isinstance(p["score"], float) for p in predictions)
    with pytest.raises(DataError, match="give \\[text, text_pair\\]"):
        loaded.predict(["great film"])


def test_bounded_regression_scores_stay_in_range(tmp_path, tiny_bert_dir):
    """With `data.score_range` the reported metrics, the saved decisions and `predict` use
    low + (high - low) x sigmoid(logit)."""
    header = ("sentence", "sentence2", "label")
    files = {name: write_tsv(tmp_path / f"{name}.tsv", _pair_rows(n, seed), header=header)
             for name, n, seed in (("train", 64, 1), ("validation", 24, 2), ("test", 24, 3))}
    config = _config(tmp_path, tiny_bert_dir, files, text_pair_column="sentence2", problem_type="regression",
                     score_range=[0, 5])
    result = run_recipe(TextClassificationRecipe(config))
    test = result.metrics["test"]
    assert all(0.0 <= v <= 5.0 for v in test["points"]["predicted"])
    assert json.loads((result.run_dir / "calibration.json").read_text())["score_range"] == [0.0, 5.0]
    loaded = load(result.run_dir)
    pairs = [["great film", "lovely story"], ["awful plot", "awful plot"]]
    scores = [p["score"] for p in loaded.predict(pairs)]
    tokenizer, model = loaded.processor, loaded.model
    with torch.no_grad():
        raw = model(**tokenizer([a for a, _ in pairs], [b for _, b in pairs], return_tensors="pt",
                                padding=True)).logits.view(-1)
    assert scores == pytest.approx((5.0 * torch.sigmoid(raw)).tolist(), abs=1e-5)
    assert loaded.evaluate()["pearson"] == pytest.approx(test["pearson"], abs=1e-5)


def test_symmetric_pairs_train_on_both_orders(tmp_path, tiny_bert_dir):
    """`data.symmetric_pairs`: every training pair (a, b) also as (b, a), labels kept; evaluation splits unchanged."""
    from transformers import AutoTokenizer

    header = ("sentence", "sentence2", "label")
    rows = _pair_rows(10, 1)
    files = {"train": write_tsv(tmp_path / "train.tsv", rows, header=header),
             "validation": write_tsv(tmp_path / "validation.tsv", _pair_rows(6, 2), header=header)}
    recipe = TextClassificationRecipe(_config(tmp_path, tiny_bert_dir, files, text_pair_column="sentence2",
                                              symmetric_pairs=True))
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    splits = recipe.preprocess(recipe.load_data(), tokenizer)
    assert len(splits["train"]) == 20 and len(splits["validation"]) == 6
    encoded = {(tuple(r["input_ids"]), round(float(r["labels"]), 4)) for r in splits["train"]}
    for a, b, score in rows:
        for first, second in ((a, b), (b, a)):
            assert (tuple(tokenizer(first, second)["input_ids"]), round(score, 4)) in encoded
    problems = _problems(_config(tmp_path, tiny_bert_dir, files, symmetric_pairs=True))
    assert "data.symmetric_pairs: needs data.text_pair_column" in problems


def test_multilabel_thresholds_saved_and_used_by_predict(tmp_path, tiny_bert_dir):
    files = {name: write_tsv(tmp_path / f"{name}.tsv", _multilabel_rows(n, seed))
             for name, n, seed in (("train", 96, 1), ("validation", 48, 2), ("test", 32, 3))}
    config = _config(tmp_path, tiny_bert_dir, files, label_separator=",", class_weights="auto")
    config["training"]["num_train_epochs"] = 4
    result = run_recipe(TextClassificationRecipe(config))
    run = result.run_dir
    test = result.metrics["test"]
    for key in ("f1_micro", "f1_macro", "f1_samples", "subset_accuracy", "hamming_loss", "per_label",
                "threshold_comparison", "ece_before", "ece_after", "temperature"):
        assert key in test, key
    saved = json.loads((run / "calibration.json").read_text())
    assert saved["problem_type"] == MULTI and len(saved["thresholds"]) == 3 and saved["temperature"] > 0
    assert set(result.metrics["validation"]["class_weights"]) == {"anger", "fear", "joy"}
    assert json.loads((run / "config.json").read_text())["problem_type"] == "multi_label_classification"
    card = (run / "README.md").read_text()
    assert "tuned per label on validation" in card and "Class weights" in card and "| anger |" in card

    loaded = load(run)
    assert loaded.evaluate()["f1_macro"] == pytest.approx(test["f1_macro"])
    texts = ["great happy film", "awful scary film"]
    predictions = loaded.predict(texts)
    for p in predictions:
        assert set(p["probabilities"]) == {"anger", "fear", "joy"}
        expected = [n for n, t in zip(("anger", "fear", "joy"), saved["thresholds"]) if p["probabilities"][n] >= t]
        assert p["labels"] == expected
    # the probabilities are the calibrated ones: logits / temperature
    batch = loaded.processor(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = loaded.model(**batch).logits
    expected = torch.sigmoid(logits / saved["temperature"])[0].tolist()
    assert [predictions[0]["probabilities"][n] for n in ("anger", "fear", "joy")] == pytest.approx(expected, rel=1e-4)


def test_binary_calibration_and_threshold(text_config):
    result = run_recipe(TextClassificationRecipe(text_config(**{"data.threshold": "tuned"})))
    test, run = result.metrics["test"], result.run_dir
    saved = json.loads((run / "calibration.json").read_text())
    assert saved["threshold"] == saved["tuned_threshold"]
    assert test["threshold_comparison"]["tuned"]["threshold"] == saved["threshold"]
    assert {"ece_before", "ece_after", "nll_before", "nll_after"} <= set(test)
    assert (run / "reliability_diagram.png").is_file()
    assert saved["positive_label"] == "pos"  # the second label, named
    # on the held-out test split, computed here: softmax(logits / T) of the model, the threshold on P(pos)
    loaded = load(run)
    rows = [line.split("\t") for line in Path(result.config.data.test).read_text().splitlines()[1:]]
    batch = loaded.processor([t for t, _ in rows], padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        p_pos = torch.softmax(loaded.model(**batch).logits.double() / saved["temperature"], dim=-1)[:, 1].numpy()
    for name, threshold in (("tuned", saved["threshold"]), ("0.5", 0.5)):
        answers = np.where(p_pos >= threshold, "pos", "neg")
        accuracy = np.mean(answers == np.array([gold for _, gold in rows]))
        assert test["threshold_comparison"][name]["accuracy"] == pytest.approx(accuracy), name
    assert test["accuracy"] == test["threshold_comparison"]["tuned"]["accuracy"]  # the tuned one is applied
    predictions = loaded.predict([t for t, _ in rows])
    assert [p["label"] for p in predictions] == list(np.where(p_pos >= saved["threshold"], "pos", "neg"))


def test_early_stopping_stops_when_the_metric_stalls(text_config):
    # learning rate ~0: the first evaluation sets the best macro-F1, the second does not improve it: stop there
    config = text_config(**{"training.learning_rate": 1e-12, "training.num_train_epochs": 5,
                            "training.early_stopping_patience": 1})
    result = run_recipe(TextClassificationRecipe(config))
    state = json.loads((result.run_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 2 * 6  # 96 rows / batch 16 = 6 steps per epoch; stopped after epoch 2 of 5
    assert [e["epoch"] for e in state["log_history"] if "eval_f1" in e] == [1.0, 2.0]


def test_seeds_aggregate_mean_and_spread(text_config, tmp_path):
    import statistics

    from hftl.config import read_config
    from hftl.seeds import run_seeds
    from hftl.tasks import task_data_classes

    config = read_config(text_config(**{"training.num_train_epochs": 1}), task_data_classes())
    result = run_seeds(config, 2)
    out = result.run_dir
    assert result.seeds == [42, 43]
    per_seed = [json.loads((out / f"seed-{s}" / "metrics.json").read_text()) for s in (42, 43)]
    assert [json.loads((out / f"seed-{s}" / "manifest.json").read_text())["seed"] for s in (42, 43)] == [42, 43]
    saved = json.loads((out / "metrics.json").read_text())
    values = [m["test"]["loss"] for m in per_seed]
    assert values[0] != values[1]  # the seed changed the run
    assert saved["test"]["loss"]["mean"] == pytest.approx(statistics.fmean(values))
    assert saved["test"]["loss"]["std"] == pytest.approx(statistics.stdev(values))
    assert saved["seeds"] == [42, 43]
    card = (out / "README.md").read_text()
    assert "| test |" in card and f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}" in card
