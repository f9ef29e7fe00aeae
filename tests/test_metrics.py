"""Tests for hftl.metrics: values are checked against confusion matrices worked out by hand."""

import json
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from hftl import metrics

REPO_ROOT = Path(__file__).resolve().parents[1]

# 3-class example. Confusion matrix (rows = true, cols = predicted):
#            pred0 pred1 pred2 | support
#   true0      2     1     1   |   4
#   true1      1     2     0   |   3
#   true2      0     1     2   |   3
#   column     3     4     3
REFS_3 = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
PREDS_3 = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]
NAMES_3 = ["neg", "neu", "pos"]


def test_three_class_report_matches_hand_computation():
    report = metrics.classification_report(PREDS_3, REFS_3, NAMES_3)

    assert report["confusion_matrix"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    # precision = diagonal / column sum, recall = diagonal / row sum, f1 = 2PR / (P + R)
    precision = [2 / 3, 2 / 4, 2 / 3]
    recall = [2 / 4, 2 / 3, 2 / 3]
    f1 = [4 / 7, 4 / 7, 2 / 3]
    support = [4, 3, 3]
    for i, name in enumerate(NAMES_3):
        assert report["per_class"][name] == pytest.approx(
            {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]}
        )
    assert report["accuracy"] == pytest.approx(6 / 10)
    assert report["precision"] == pytest.approx(11 / 18)  # (2/3 + 1/2 + 2/3) / 3
    assert report["recall"] == pytest.approx(11 / 18)  # (1/2 + 2/3 + 2/3) / 3
    assert report["f1"] == pytest.approx(38 / 63)  # (4/7 + 4/7 + 2/3) / 3
    assert report["precision_weighted"] == pytest.approx(37 / 60)  # (4*2/3 + 3*1/2 + 3*2/3) / 10
    assert report["recall_weighted"] == pytest.approx(6 / 10)  # weighted recall is always accuracy
    assert report["f1_weighted"] == pytest.approx(6 / 10)  # (4*4/7 + 3*4/7 + 3*2/3) / 10
    assert report["num_examples"] == 10
    assert report["balanced_accuracy"] == pytest.approx(11 / 18)  # macro recall over the classes in the references
    # MCC = (c*s - sum_k p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)), c = 6 correct, s = 10,
    # predicted counts p = (3, 4, 3), true counts t = (4, 3, 3): (60 - 33) / sqrt(66 * 66) = 27/66.
    assert report["matthews_correlation"] == pytest.approx(27 / 66)
    assert report["absent_classes"] == []
    assert set(report) == {
        "accuracy", "precision", "recall", "f1", "precision_weighted", "recall_weighted", "f1_weighted",
        "balanced_accuracy", "matthews_correlation", "per_class", "absent_classes", "confusion_matrix", "num_examples",
    }


def test_class_missing_from_predictions_scores_zero_and_class_missing_everywhere_is_left_out():
    from sklearn.exceptions import UndefinedMetricWarning

    # Class 2 is never predicted; class 3 appears nowhere but is still one of the labels.
    references, predictions = [0, 1, 2, 2], [0, 1, 1, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedMetricWarning)  # zero_division=0 must silence these
        report = metrics.classification_report(predictions, references, ["a", "b", "c", "d"])

    assert report["confusion_matrix"] == [[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    assert report["per_class"]["a"] == pytest.approx({"precision": 1 / 2, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert report["per_class"]["b"] == pytest.approx({"precision": 1 / 2, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert report["per_class"]["d"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert report["absent_classes"] == ["d"]
    # Macro averages divide by the 3 classes present; the never-predicted class 2 still counts as a 0.
    assert report["precision"] == pytest.approx((1 / 2 + 1 / 2) / 3)
    assert report["recall"] == pytest.approx((1 + 1) / 3)
    assert report["f1"] == pytest.approx((2 / 3 + 2 / 3) / 3)
    assert report["accuracy"] == pytest.approx(2 / 4)
    assert report["balanced_accuracy"] == pytest.approx(2 / 3)
    # c = 2, s = 4, p = (2, 2, 0, 0), t = (1, 1, 2, 0): (8 - 4) / sqrt((16 - 8) * (16 - 6))
    assert report["matthews_correlation"] == pytest.approx(4 / 80 ** 0.5)


def test_binary_balanced_accuracy_and_matthews_correlation():
    # TP = 2, FN = 2, TN = 2, FP = 0
    references, predictions = [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]
    assert metrics.BalancedAccuracy().compute(predictions=predictions, references=references) == {
        "balanced_accuracy": pytest.approx((2 / 4 + 2 / 2) / 2)}
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 4 / sqrt(2*4*2*4)
    assert metrics.MatthewsCorrelation().compute(predictions=predictions, references=references) == {
        "matthews_correlation": pytest.approx(0.5)}
    # A class only in the predictions is left out of balanced accuracy, without a warning reaching the user.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = metrics.BalancedAccuracy().compute(predictions=[0, 2, 1], references=[0, 1, 1])
    assert result == {"balanced_accuracy": pytest.approx((1 + 1 / 2) / 2)}


def test_binary_case():
    # true0: [2, 0], true1: [2, 2] -> P0 = 1/2, R0 = 1, P1 = 1, R1 = 1/2, F1 = 2/3 for both classes.
    references, predictions = [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]
    report = metrics.classification_report(predictions, references, ["no", "yes"])

    assert report["confusion_matrix"] == [[2, 0], [2, 2]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["precision"] == pytest.approx(3 / 4)
    assert report["recall"] == pytest.approx(3 / 4)
    assert report["f1"] == pytest.approx(2 / 3)
    assert report["precision_weighted"] == pytest.approx((2 * 1 / 2 + 4 * 1) / 6)
    assert report["per_class"]["yes"] == pytest.approx({"precision": 1.0, "recall": 1 / 2, "f1": 2 / 3, "support": 4})


def test_weighted_differs_from_macro_on_imbalanced_data():
    # 9 examples of class 0, 1 of class 1, model always predicts 0: F1_0 = 2*0.9*1/1.9 = 18/19, F1_1 = 0.
    references, predictions = [0] * 9 + [1], [0] * 10
    report = metrics.classification_report(predictions, references, ["major", "minor"])

    assert report["f1"] == pytest.approx((18 / 19) / 2)
    assert report["f1_weighted"] == pytest.approx(0.9 * 18 / 19)
    assert report["f1_weighted"] > report["f1"]
    assert report["precision_weighted"] == pytest.approx(0.9 * 0.9)
    assert report["precision"] == pytest.approx(0.9 / 2)


def test_metric_classes_average_and_labels():
    f1 = metrics.F1(labels=[0, 1, 2], average="weighted")
    assert f1.name == "f1"
    assert f1.compute(predictions=PREDS_3, references=REFS_3) == {"f1_weighted": pytest.approx(6 / 10)}
    # compute-time kwargs override the constructor defaults; micro over all labels equals accuracy.
    assert f1.compute(predictions=PREDS_3, references=REFS_3, average="micro") == {"f1_micro": pytest.approx(0.6)}
    assert metrics.Precision().compute(predictions=PREDS_3, references=REFS_3) == {"precision": pytest.approx(11 / 18)}
    # Accuracy ignores `labels`, which evaluate.combine forwards to every module.
    assert metrics.Accuracy().compute(predictions=[0, 1], references=[0, 0], labels=[0, 1]) == {"accuracy": 0.5}
    matrix = metrics.ConfusionMatrix(labels=[2, 1, 0]).compute(predictions=PREDS_3, references=REFS_3)
    assert matrix == {"confusion_matrix": [[2, 1, 0], [0, 2, 1], [1, 1, 2]]}  # label order is respected
    with pytest.raises(ValueError, match="average"):
        metrics.Recall(average="samples")


def test_combined_metrics_streaming_matches_one_shot():
    combined = metrics.combined_metrics([0, 1, 2])
    for start in range(0, 10, 4):
        combined.add_batch(predictions=PREDS_3[start : start + 4], references=REFS_3[start : start + 4])
    streamed = combined.compute()
    report = metrics.classification_report(PREDS_3, REFS_3, NAMES_3)
    assert streamed["f1"] == pytest.approx(report["f1"])
    assert streamed["confusion_matrix"] == report["confusion_matrix"]
    assert streamed["per_class"][1] == report["per_class"]["neu"]


def test_combined_gives_what_evaluate_combine_gives_with_one_pass_through_arrow(monkeypatch):
    """`Combined` (one Arrow round-trip for all parts) returns exactly what `evaluate.combine` (one per part) does."""
    import evaluate

    m = metrics
    parts = lambda: {"accuracy": m.Accuracy(), "f1": m.F1([0, 1, 2]), "f1_weighted": m.F1([0, 1, 2], average="weighted"),
                     "per_class": m.PerClassReport([0, 1, 2]), "confusion_matrix": m.ConfusionMatrix([0, 1, 2])}
    expected = evaluate.combine(parts()).compute(predictions=PREDS_3, references=REFS_3)
    combined = m.Combined(parts())
    batches = []
    for module in (combined, *combined.parts):  # evaluate binds add_batch per instance
        monkeypatch.setattr(module, "add_batch",
                            lambda real=module.add_batch, name=module.name, **kw: batches.append(name) or real(**kw))
    assert combined.compute(predictions=PREDS_3, references=REFS_3) == expected
    assert batches == ["combined"]  # the inputs went into one Arrow buffer, not one per part
    regression = [m.MeanSquaredError(), m.Pearson()]
    got = m.Combined(regression).compute(predictions=[0.1, 0.5, 0.9], references=[0.0, 0.6, 1.0])
    assert got == evaluate.combine(regression).compute(predictions=[0.1, 0.5, 0.9], references=[0.0, 0.6, 1.0])
    with pytest.raises(ValueError, match="same inputs"):
        m.Combined([m.Accuracy(), m.MeanSquaredError()])
    with pytest.raises(ValueError, match="two parts return"):
        m.Combined([m.F1(), m.F1()]).compute(predictions=PREDS_3, references=REFS_3)


def test_compute_metrics_on_fake_eval_prediction_with_logits_tuple(monkeypatch):
    builds = []
    real_combined_metrics = metrics.combined_metrics
    monkeypatch.setattr(
        metrics, "combined_metrics", lambda *a, **k: builds.append(1) or real_combined_metrics(*a, **k)
    )
    logits = np.full((10, 3), -1.0, dtype=np.float32)
    logits[np.arange(10), PREDS_3] = 2.0
    hidden = np.zeros((10, 4, 8), dtype=np.float32)
    eval_pred = types.SimpleNamespace(predictions=(logits, hidden), label_ids=np.array(REFS_3))

    compute_metrics = metrics.make_compute_metrics(NAMES_3)
    first = compute_metrics(eval_pred)
    second = compute_metrics(eval_pred)

    assert first == second
    assert len(builds) == 1  # evaluate modules built once per callable, not per call
    assert set(first) == {"accuracy", "precision", "recall", "f1", "f1_weighted", "balanced_accuracy",
                          "matthews_correlation"}
    assert all(type(value) is float for value in first.values())
    assert first["accuracy"] == pytest.approx(0.6)
    assert first["precision"] == pytest.approx(11 / 18)
    assert first["f1"] == pytest.approx(38 / 63)
    assert first["matthews_correlation"] == pytest.approx(27 / 66)


def test_logits_to_predictions():
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 0.5]])
    assert metrics.logits_to_predictions(logits).tolist() == [1, 0, 1]
    assert metrics.logits_to_predictions((logits, None)).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="num_labels"):
        metrics.logits_to_predictions(np.zeros((3, 1)))  # num_labels=1 is regression in transformers


def test_report_is_json_serialisable_plain_python():
    report = metrics.classification_report(np.array(PREDS_3), np.array(REFS_3), NAMES_3)
    assert json.loads(json.dumps(report)) == report
    assert type(report["num_examples"]) is int
    assert all(type(report[key]) is float for key in ("accuracy", "precision", "f1_weighted"))
    assert type(report["per_class"]["neg"]["support"]) is int
    assert all(type(count) is int for row in report["confusion_matrix"] for count in row)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="class ids"):
        metrics.classification_report([0, 3], [0, 1], ["a", "b"])  # 3 is out of range
    with pytest.raises(ValueError, match="class ids"):
        metrics.classification_report([0, -100], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="as many"):
        metrics.classification_report([0, 1], [0], ["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        metrics.classification_report([0], [0], ["a", "a"])


def test_nothing_written_to_metrics_cache(tmp_path, monkeypatch):
    import evaluate

    cache = tmp_path / "metrics"
    monkeypatch.setattr(evaluate.config, "HF_METRICS_CACHE", cache)
    metrics.classification_report(PREDS_3, REFS_3, NAMES_3)
    assert not cache.exists()


def test_import_is_lazy_and_fast():
    code = (
        "import json, sys, time\n"
        "start = time.perf_counter()\n"
        "import hftl.metrics\n"
        "elapsed = time.perf_counter() - start\n"
        "heavy = [m for m in ('evaluate', 'datasets', 'sklearn', 'transformers', 'torch') if m in sys.modules]\n"
        "print(json.dumps({'elapsed': elapsed, 'heavy': heavy}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["elapsed"] < 0.1


def test_macro_average_ignores_classes_absent_from_the_split():
    # A perfect classifier on a split that holds only 2 of the 3 classes: every average is 1, not 2/3.
    references = [0, 0, 1, 1, 1]
    report = metrics.classification_report(references, references, NAMES_3)

    assert report["accuracy"] == 1.0
    assert report["f1"] == pytest.approx(1.0)
    assert report["precision"] == pytest.approx(1.0)
    assert report["recall"] == pytest.approx(1.0)
    assert report["absent_classes"] == ["pos"]
    assert report["per_class"]["pos"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert report["per_class"]["neu"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 3}
    assert report["confusion_matrix"] == [[2, 0, 0], [0, 3, 0], [0, 0, 0]]  # still over every class


# Multi-label, 4 examples x 3 labels. Per label: L0 and L1 perfect (TP 2 each), L2 has one FN (row 0) and one FP
# (row 1).
ML_REFS = [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]]
ML_PREDS = [[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 0]]
ML_NAMES = ["sports", "politics", "tech"]


def test_multilabel_report_matches_hand_computation():
    report = metrics.multilabel_report(ML_PREDS, ML_REFS, ML_NAMES)

    # micro: TP 4, FP 1, FN 1
    assert report["precision_micro"] == pytest.approx(4 / 5)
    assert report["recall_micro"] == pytest.approx(4 / 5)
    assert report["f1_micro"] == pytest.approx(4 / 5)
    # macro: per-label scores (1, 1, 0)
    assert report["f1_macro"] == pytest.approx(2 / 3)
    assert report["precision_macro"] == pytest.approx(2 / 3)
    # samples: row 0 P 1, R 1/2, F 2/3; row 1 P 1/2, R 1, F 2/3; row 2 exact; row 3 empty and rightly left empty.
    assert report["precision_samples"] == pytest.approx((1 + 1 / 2 + 1 + 1) / 4)
    assert report["recall_samples"] == pytest.approx((1 / 2 + 1 + 1 + 1) / 4)
    assert report["f1_samples"] == pytest.approx((2 / 3 + 2 / 3 + 1 + 1) / 4)
    assert report["subset_accuracy"] == pytest.approx(2 / 4)  # rows 2 and 3
    assert report["hamming_loss"] == pytest.approx(2 / 12)  # two wrong cells of twelve
    assert report["per_label"]["tech"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["per_label"]["sports"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert report["absent_labels"] == []
    assert report["thresholds"] == [0.5, 0.5, 0.5]
    assert report["num_examples"] == 4
    assert json.loads(json.dumps(report)) == report


def test_multilabel_absent_label_and_per_label_thresholds():
    from hftl.decisions import MULTI, Decisions

    names = ML_NAMES + ["art"]
    refs = np.hstack([np.array(ML_REFS), np.zeros((4, 1), dtype=int)])
    probabilities = np.hstack([np.where(np.array(ML_PREDS) == 1, 0.8, 0.2), np.full((4, 1), 0.3)])
    decisions = Decisions.untuned(MULTI, names)
    report = metrics.multilabel_report(decisions.decide(probabilities, names), refs, names)
    assert report["f1_macro"] == pytest.approx(2 / 3)  # "art" is neither true nor predicted: left out
    assert report["per_label"]["art"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert report["absent_labels"] == ["art"]
    assert report["hamming_loss"] == pytest.approx(2 / 16)

    # A threshold of 0.25 on "art" predicts it everywhere: 4 false positives, and it now counts in the macro average.
    # The decisions apply the thresholds (the one rule); the report scores their indicators and records them.
    decisions.thresholds = [0.5, 0.5, 0.5, 0.25]
    report = metrics.multilabel_report(decisions.decide(probabilities, names), refs, names, decisions.thresholds)
    assert report["f1_macro"] == pytest.approx(2 / 4)
    assert report["precision_micro"] == pytest.approx(4 / 9)
    assert report["thresholds"] == [0.5, 0.5, 0.5, 0.25]
    with pytest.raises(ValueError, match="one per label"):
        metrics.multilabel_report(refs, refs, names, thresholds=[0.5, 0.5])
    with pytest.raises(ValueError, match="indicator"):
        metrics.multilabel_report(refs, refs * 2, names)
    with pytest.raises(ValueError, match="predictions must be a 0/1 indicator"):
        metrics.multilabel_report(probabilities, refs, names)  # probabilities are decided first, not here


def test_multilabel_compute_metrics_applies_sigmoid_to_logits():
    logits = np.where(np.array(ML_PREDS) == 1, 1.5, -1.5).astype(np.float32)
    eval_pred = types.SimpleNamespace(predictions=(logits, None), label_ids=np.array(ML_REFS, dtype=np.float32))
    from hftl.decisions import MULTI, Decisions

    decisions = Decisions.untuned(MULTI, ML_NAMES)

    def decide(logits):
        return decisions.decide(decisions.probabilities(logits), ML_NAMES)

    result = metrics.make_multilabel_compute_metrics(ML_NAMES, decide)(eval_pred)
    assert result["f1_micro"] == pytest.approx(4 / 5)
    assert result["subset_accuracy"] == pytest.approx(1 / 2)
    assert all(type(value) is float for value in result.values())
    # sigmoid(1.5) = 0.818 < 0.9: nothing is predicted, so every true label is missed.
    decisions.thresholds = [0.9] * 3  # sigmoid(1.5) = 0.82: nothing predicted
    assert metrics.make_multilabel_compute_metrics(ML_NAMES, decide)(eval_pred)["recall_micro"] == 0.0


# Regression: errors (0, 0, -1, 0, -2). Ranks of the predictions with the tie at 2: (1, 2.5, 2.5, 5, 4).
REG_REFS = [1.0, 2.0, 3.0, 4.0, 5.0]
REG_PREDS = [1.0, 2.0, 2.0, 4.0, 3.0]


def test_regression_report_matches_hand_computation():
    report = metrics.regression_report(REG_PREDS, REG_REFS)
    assert report["mse"] == pytest.approx(5 / 5)
    assert report["mae"] == pytest.approx(3 / 5)
    assert report["r2"] == pytest.approx(1 - 5 / 10)  # SS_res 5, SS_tot 10
    # centred refs (-2, -1, 0, 1, 2); centred preds (mean 2.4): (-1.4, -0.4, -0.4, 1.6, 0.6)
    assert report["pearson"] == pytest.approx(6.0 / (10 * 5.2) ** 0.5)
    # centred ranks (-2, -0.5, -0.5, 2, 1): sum of products 8.5, sums of squares 10 and 9.5
    assert report["spearman"] == pytest.approx(8.5 / (10 * 9.5) ** 0.5)
    assert report["num_examples"] == 5


def test_regression_undefined_scores_are_null_and_compute_metrics_takes_a_column():
    report = metrics.regression_report([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert report["pearson"] is None and report["spearman"] is None and report["r2"] is None
    assert report["mse"] == pytest.approx(2 / 3)
    eval_pred = types.SimpleNamespace(predictions=np.array(REG_PREDS)[:, None], label_ids=np.array(REG_REFS))
    result = metrics.make_regression_compute_metrics()(eval_pred)
    assert set(result) == {"mse", "mae", "r2", "pearson", "spearman"}
    assert result["r2"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one finite number"):
        metrics.regression_report(np.zeros((5, 2)), REG_REFS)


def test_regression_scatter_is_written(tmp_path):
    from PIL import Image

    from hftl.plots import plot_regression_scatter

    path = plot_regression_scatter(np.array(REG_PREDS), REG_REFS, tmp_path / "scatter.png", "test")
    assert Image.open(path).size == (500, 500)
