"""Tests for hftl.calibration: values worked out by hand, temperature scaling on data sampled from known logits."""

import math

import numpy as np
import pytest
import torch

from hftl import calibration


def _sample_calibrated(n, num_labels, seed, multi_label=False):
    """Logits, and labels drawn from softmax (or sigmoid) of those logits: a perfectly calibrated model."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, num_labels, generator=generator, dtype=torch.float64) * 2
    if multi_label:
        labels = torch.bernoulli(logits.sigmoid(), generator=generator).long()
    else:
        labels = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
    return logits.numpy(), labels.numpy()


def test_temperature_scaling_softens_over_confident_logits_and_keeps_argmax():
    logits, labels = _sample_calibrated(20_000, 4, seed=0)
    over_confident = 3 * logits
    temperature = calibration.fit_temperature(over_confident, labels)

    assert temperature == pytest.approx(3.0, rel=0.05)
    before = calibration.apply_temperature(over_confident)
    after = calibration.apply_temperature(over_confident, temperature)
    nll, ece = calibration.negative_log_likelihood, calibration.expected_calibration_error
    assert nll(after, labels) < nll(before, labels) - 0.1
    assert ece(after, labels) < ece(before, labels)
    assert (after.argmax(1) == before.argmax(1)).all()


def test_temperature_of_calibrated_logits_is_one():
    logits, labels = _sample_calibrated(20_000, 4, seed=1)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.05)
    ml_logits, ml_labels = _sample_calibrated(5_000, 3, seed=2, multi_label=True)
    assert calibration.fit_temperature(ml_logits, ml_labels, multi_label=True) == pytest.approx(1.0, abs=0.05)
    assert calibration.fit_temperature(ml_logits / 2, ml_labels, multi_label=True) == pytest.approx(0.5, rel=0.1)
    with pytest.raises(ValueError, match="multi_label=True"):
        calibration.fit_temperature(ml_logits, ml_labels)


# Top-label confidences: bin (13/15, 14/15] holds 0.88, 0.88, 0.92, 0.92 (mean 0.9), 3 of 4 right;
# bin (9/15, 10/15] holds six rows of 0.62, 3 of 6 right. ECE = 0.4 * |0.75 - 0.9| + 0.6 * |0.5 - 0.62|.
ECE_PROBS = (
    [[0.88, 0.06, 0.06], [0.06, 0.88, 0.06], [0.92, 0.04, 0.04], [0.04, 0.04, 0.92]]
    + [[0.62, 0.2, 0.18]] * 3 + [[0.18, 0.2, 0.62]] * 3
)
ECE_LABELS = [0, 1, 0, 0] + [0, 1, 1] + [2, 2, 0]


def test_expected_calibration_error_by_hand():
    assert calibration.expected_calibration_error(ECE_PROBS, ECE_LABELS) == pytest.approx(0.4 * 0.15 + 0.6 * 0.12)
    bins = calibration.reliability_bins(ECE_PROBS, ECE_LABELS)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 10
    assert bins[13] == pytest.approx({"lower": 13 / 15, "upper": 14 / 15, "count": 4, "confidence": 0.9,
                                      "accuracy": 0.75})
    assert bins[9]["count"] == 6 and bins[9]["accuracy"] == pytest.approx(0.5)
    assert bins[0] == {"lower": 0.0, "upper": 1 / 15, "count": 0, "confidence": None, "accuracy": None}
    # With 2 bins both groups fall in (0.5, 1]: mean confidence 0.732, accuracy 0.6.
    assert calibration.expected_calibration_error(ECE_PROBS, ECE_LABELS, bins=2) == pytest.approx(0.732 - 0.6)


def test_multilabel_ece_and_nll_use_every_cell():
    probabilities, labels = [[0.1, 0.7], [0.1, 0.7]], [[0, 1], [0, 0]]
    # cells at 0.1: positive rate 0 (gap 0.1); cells at 0.7: positive rate 0.5 (gap 0.2)
    assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(0.5 * 0.1 + 0.5 * 0.2)
    expected = -(2 * math.log(0.9) + math.log(0.7) + math.log(0.3)) / 4
    assert calibration.negative_log_likelihood(probabilities, labels) == pytest.approx(expected)


def test_single_label_nll_by_hand():
    probabilities = [[0.9, 0.05, 0.05], [0.2, 0.5, 0.3]]
    expected = -(math.log(0.9) + math.log(0.3)) / 2
    assert calibration.negative_log_likelihood(probabilities, [0, 2]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="class ids"):
        calibration.negative_log_likelihood(probabilities, [0, 2, 1])


def _f1(predicted, truth):
    tp = int((predicted & truth).sum())
    return 2 * tp / (predicted.sum() + truth.sum()) if tp else 0.0


def test_tuned_thresholds_beat_one_half_respect_the_floor_and_never_predict_everywhere():
    # label 0: an under-confident model, positives at 0.3-0.4, negatives at 0.1-0.2: 0.5 predicts nothing.
    # label 1: every probability >= 0.6; positives at 0.7-0.9, negatives at 0.6-0.65.
    # label 2: every example positive: the best F1 would predict all, which is not allowed.
    # label 3: positives at 0.03, 0.04 and 0.3, negatives at 0.01, 0.02: the best threshold 0.03 is under the floor.
    probabilities = np.array([
        [0.3, 0.9, 0.2, 0.03], [0.35, 0.8, 0.5, 0.04], [0.4, 0.7, 0.9, 0.3],
        [0.1, 0.65, 0.6, 0.01], [0.2, 0.6, 0.7, 0.02],
    ])
    references = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 0], [0, 0, 1, 0]])
    thresholds = calibration.tune_thresholds(probabilities, references)

    assert thresholds[0] == pytest.approx(0.3)
    assert thresholds[1] == pytest.approx(0.7)
    assert thresholds[2] == pytest.approx(0.5)  # the smallest observed value above the minimum 0.2
    assert thresholds[3] == pytest.approx(0.3)  # ties between the floor and 0.3 go to the higher
    assert calibration.tune_thresholds(probabilities, references, floor=0.0)[3] == pytest.approx(0.03)
    assert all(t >= 0.05 for t in thresholds)
    tuned = probabilities >= np.array(thresholds)
    assert not tuned.all(axis=0).any()  # no label predicted for every example
    f1_tuned = [_f1(tuned[:, j], references[:, j] == 1) for j in range(4)]
    f1_half = [_f1(probabilities[:, j] >= 0.5, references[:, j] == 1) for j in range(4)]
    assert all(t >= h for t, h in zip(f1_tuned, f1_half))
    assert f1_tuned[0] == 1.0 and f1_half[0] == 0.0
    assert f1_tuned[1] == 1.0 and f1_half[1] < 1.0


def test_untunable_labels_keep_the_default_within_the_limits():
    probabilities = np.array([[0.6, 0.7], [0.8, 0.7], [0.9, 0.7]])
    references = np.array([[0, 0], [0, 1], [0, 0]])
    thresholds = calibration.tune_thresholds(probabilities, references)
    assert thresholds[0] == pytest.approx(0.8)  # no positive: 0.5 would predict all three, so the next observed value
    assert thresholds[1] > 0.7  # all probabilities equal: predicting none is the only way not to predict all


def test_global_and_binary_thresholds():
    probabilities = np.array([[0.3, 0.45], [0.35, 0.1], [0.1, 0.4], [0.2, 0.05]])
    references = np.array([[1, 1], [1, 0], [0, 1], [0, 0]])
    # cells sorted: 0.45+ 0.4+ 0.35+ 0.3+ 0.2 0.1 0.1 0.05: t = 0.3 catches all 4 positives and nothing else
    assert calibration.best_global_threshold(probabilities, references) == pytest.approx(0.3)
    # positive probabilities 0.2, 0.4, 0.45 are positives; 0.1, 0.5 negatives: t = 0.2 -> TP 3, FP 1, F1 6/7;
    # t = 0.4 -> TP 2, FP 1, F1 4/6; t = 0.5 -> F1 0; so 0.2.
    assert calibration.tune_binary_threshold([0.1, 0.2, 0.4, 0.45, 0.5], [0, 1, 1, 1, 0]) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="0/1"):
        calibration.tune_binary_threshold([0.1, 0.2], [0, 2])


def test_aggregate_seeds_by_hand():
    runs = [
        {"test": {"accuracy": 0.8, "f1": 0.7, "per_class": {"neg": {"f1": 0.6, "support": 10}},
                  "confusion_matrix": [[1]], "absent_classes": []},
         "validation": {"accuracy": 0.9}, "seed": 1},
        {"test": {"accuracy": 0.9, "f1": 0.8, "per_class": {"neg": {"f1": None, "support": 10}}, "note": "x"},
         "validation": {"accuracy": 0.9}, "seed": 2},
        {"test": {"accuracy": 1.0, "f1": float("nan"), "flag": True}, "seed": 3},
    ]
    result = calibration.aggregate_seeds(runs)
    assert set(result) == {"test", "validation"}
    assert result["test"]["accuracy"] == pytest.approx({"mean": 0.9, "std": 0.1, "n": 3})
    assert result["test"]["f1"] == pytest.approx({"mean": 0.75, "std": math.sqrt(0.005), "n": 2})
    assert result["test"]["per_class.neg.f1"] == {"mean": 0.6, "std": None, "n": 1}
    assert result["test"]["per_class.neg.support"] == {"mean": 10.0, "std": 0.0, "n": 2}
    assert set(result["test"]) == {"accuracy", "f1", "per_class.neg.f1", "per_class.neg.support"}
    assert result["validation"] == {"accuracy": {"mean": 0.9, "std": 0.0, "n": 2}}


def test_class_weights_by_hand():
    # 8 examples: 6, 2, 0. Present classes C = 2: weights 8/(2*6) = 2/3 and 8/(2*2) = 2; the absent class gets 1.
    weights = calibration.class_weights_from_counts([6, 2, 0])
    assert weights == pytest.approx([2 / 3, 2.0, 1.0])
    assert (6 * weights[0] + 2 * weights[1]) / 8 == pytest.approx(1.0)  # average weight over examples is 1
    # 10 examples, positives per label 2, 5, 0, 10 -> negatives/positives 4, 1, then 1 for the degenerate labels.
    assert calibration.class_weights_from_counts([2, 5, 0, 10], "pos_weight", num_examples=10) == [4.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="num_examples"):
        calibration.class_weights_from_counts([2, 5], "pos_weight")
    with pytest.raises(ValueError, match="mode"):
        calibration.class_weights_from_counts([2, 5], "sqrt")


def test_reliability_diagram_is_written(tmp_path):
    from PIL import Image

    from hftl.plots import plot_reliability_diagram

    before = calibration.reliability_bins(ECE_PROBS, ECE_LABELS)
    after = calibration.reliability_bins(calibration.apply_temperature(np.log(ECE_PROBS), 2.0), ECE_LABELS)
    path = plot_reliability_diagram(before, after, tmp_path / "reliability.png", "validation")
    assert Image.open(path).size == (550, 600)
    assert plot_reliability_diagram(before, None, tmp_path / "before.png", "validation").is_file()


def test_import_is_light():
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, hftl.calibration; print([m for m in ('torch', 'numpy', 'scipy') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
