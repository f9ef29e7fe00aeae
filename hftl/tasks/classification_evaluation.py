"""Reports of a classifier on one split, with its `Decisions` applied: the metrics, what the thresholds change,
calibration, a baseline that answers the same thing for every example (and warnings when the model does no
better, or answers one class for everything), and the most confident mistakes (the run's `errors.jsonl`).

Pure functions of logits, labels and decisions (numpy inside), shared by the run's evaluation and `hftl evaluate`.
"""

from __future__ import annotations

from hftl.decisions import MULTI, REGRESSION, Decisions, regression_scores
from hftl.metrics import classification_report, mean_cross_entropy, multilabel_report, regression_report

#: test points kept in metrics.json for the regression scatter (rounded; enough for a figure)
MAX_POINTS = 5000
#: mistakes kept per split in errors.jsonl, most confident first
MAX_ERRORS = 50
#: what the baseline is compared on, by problem type: (metric, True if higher is better)
_BASELINE_METRIC = {MULTI: ("hamming_loss", False), REGRESSION: ("mse", False), None: ("accuracy", True)}
#: the baseline's figures worth keeping, by problem type
_BASELINE_KEYS = {
    MULTI: ("f1_macro", "f1_micro", "f1_samples", "subset_accuracy", "hamming_loss"),
    REGRESSION: ("mse", "mae", "r2"),
    None: ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "f1_weighted"),
}


def split_report(logits, label_ids, label_names, decisions: Decisions) -> dict:
    """Every metric of `logits` against `label_ids` with `decisions` applied, the baseline beside them and the
    warnings they call for (`report["baseline"]`, `report["warnings"]`)."""
    import numpy as np

    problem = decisions.problem_type
    if problem == REGRESSION:
        predicted = regression_scores(logits, decisions.score_range)
        report = regression_report(predicted, label_ids)
        report["loss"] = report["mse"]
        report["inference_precision"] = decisions.inference_precision
        keep = slice(0, MAX_POINTS)
        report["points"] = {"predicted": [round(float(v), 4) for v in predicted[keep]],
                            "true": [round(float(v), 4) for v in np.asarray(label_ids).reshape(-1)[keep]]}
        report["baseline"] = baseline_report(label_ids, None, problem)
        report["warnings"] = warnings(report, predicted, problem, None)
        return report
    names = [str(n) for n in label_names]
    probabilities = decisions.probabilities(logits)
    predicted = decisions.decide(probabilities, names)
    if problem == MULTI:
        report = multilabel_report(predicted, label_ids, names, decisions.thresholds or 0.5)
        report["loss"] = _binary_cross_entropy(logits, label_ids)
        report["threshold_comparison"] = _multilabel_comparison(probabilities, label_ids, names, decisions)
        report["f1_macro_threshold_0_5"] = report["threshold_comparison"]["0.5"]["f1_macro"]
        if "best_single" in report["threshold_comparison"]:
            report["f1_macro_best_single_threshold"] = report["threshold_comparison"]["best_single"]["f1_macro"]
    else:
        report = classification_report(predicted, label_ids, names)
        report["loss"] = mean_cross_entropy(logits, label_ids)
        if decisions.positive_label is not None:
            report["positive_label"] = decisions.positive_label
        if decisions.tuned_threshold is not None:
            report["threshold_comparison"] = _binary_comparison(probabilities, label_ids, names, decisions)
    if decisions.temperature is not None:
        report.update(_calibration_report(logits, probabilities, label_ids, decisions.temperature, problem == MULTI))
    report["baseline"] = baseline_report(label_ids, names, problem)
    report["warnings"] = warnings(report, predicted, problem, names)
    report["inference_precision"] = decisions.inference_precision  # what the logits were computed in
    return report


def baseline_report(label_ids, label_names, problem: str) -> dict:
    """What answering the same thing for every example scores on this split: its most frequent class
    (single-label), no label at all (multi-label), or its mean (regression)."""
    import numpy as np

    references = np.asarray(label_ids)
    if problem == REGRESSION:
        values = references.reshape(-1).astype(np.float64)
        scores = regression_report(np.full_like(values, values.mean()), values)
        return {"name": "the mean of this split", **{k: scores.get(k) for k in _BASELINE_KEYS[REGRESSION]}}
    if problem == MULTI:
        scores = multilabel_report(np.zeros(references.shape, dtype=np.int64), references, list(label_names), 0.5)
        return {"name": "no label for any example", **{k: scores[k] for k in _BASELINE_KEYS[MULTI]}}
    ids = references.astype(np.int64)
    majority = int(np.bincount(ids, minlength=len(label_names)).argmax())
    scores = classification_report(np.full_like(ids, majority), ids, list(label_names))
    return {"name": f"the most frequent class of this split ({label_names[majority]})", "label": label_names[majority],
            **{k: scores[k] for k in _BASELINE_KEYS[None]}}


def chance_scores(label_ids, label_names, problem: str) -> dict:
    """The best that an answer ignoring the input scores on this split, metric by metric: the baseline's constant
    answer (`baseline_report`) and, for single-label classes, guessing at random, uniformly or in proportion to the
    classes (every metric kept here is higher-is-better). A guess is scored at its expected confusion matrix: each
    class's examples are dealt out to the predicted classes in the guess's shares, so no random draw is needed."""
    import numpy as np

    scores = {k: v for k, v in baseline_report(label_ids, label_names, problem).items()
              if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if problem in (MULTI, REGRESSION):
        return scores
    ids = np.asarray(label_ids).astype(np.int64).reshape(-1)
    counts = np.bincount(ids, minlength=len(label_names))
    for shares in (np.full(len(label_names), 1 / len(label_names)), counts / counts.sum()):
        dealt = np.empty_like(ids)
        for label in np.flatnonzero(counts):
            rows = np.flatnonzero(ids == label)
            positions = (np.arange(len(rows)) + 0.5) / len(rows)
            dealt[rows] = np.minimum(np.searchsorted(np.cumsum(shares), positions), len(label_names) - 1)
        guessed = classification_report(dealt, ids, list(label_names))
        scores = {k: max(v, guessed[k]) for k, v in scores.items()}
    return scores


def warnings(report: dict, predicted, problem: str, label_names) -> list[str]:
    """Plain-language warnings: the model answers the same for every example, or does no better than the
    baseline on the metric that shows it (accuracy; Hamming loss for multi-label; MSE for regression)."""
    import numpy as np

    found = []
    predicted = np.asarray(predicted)
    if problem == MULTI:
        if len(np.unique(predicted, axis=0)) == 1:
            chosen = [n for n, on in zip(label_names, predicted[0]) if on]
            found.append(f"the model predicts the same labels ({', '.join(chosen) or 'none'}) for every example.")
    elif problem != REGRESSION and len(predicted) and len(np.unique(predicted)) == 1:
        found.append(f"the model predicts one class ({label_names[int(predicted[0])]}) for every example.")
    metric, higher_is_better = _BASELINE_METRIC.get(problem, _BASELINE_METRIC[None])
    model, baseline = report.get(metric), report["baseline"].get(metric)
    if model is not None and baseline is not None and (model <= baseline if higher_is_better else model >= baseline):
        found.append(f"the model does not beat the baseline ({report['baseline']['name']}): {metric} {model:.4f} "
                     f"against {baseline:.4f}.")
    return found


def error_rows(split: str, inputs, logits, label_ids, label_names, decisions: Decisions,
               limit: int = MAX_ERRORS) -> list[dict]:
    """The most confident mistakes of a split: {split, row (from 1), input, gold, predicted, confidence} (for
    regression `error` instead of `confidence`), most confident (largest error) first, at most `limit`."""
    import numpy as np

    problem = decisions.problem_type
    references = np.asarray(label_ids)
    rows = []
    if problem == REGRESSION:
        predicted = regression_scores(logits, decisions.score_range)
        gold = references.reshape(-1).astype(np.float64)
        error = np.abs(predicted - gold)
        for i in np.argsort(-error, kind="stable")[:limit]:
            rows.append({"split": split, "row": int(i) + 1, "input": inputs[i], "gold": float(gold[i]),
                         "predicted": float(predicted[i]), "error": float(error[i])})
        return rows
    names = [str(n) for n in label_names]
    probabilities = decisions.probabilities(logits)
    predicted = decisions.decide(probabilities, names)
    if problem == MULTI:
        references = references.astype(np.int64)
        wrong = (predicted != references)
        # how sure the model was of its worst wrong call: p for a label it added, 1 - p for one it missed
        sureness = np.where(predicted == 1, probabilities, 1 - probabilities)
        confidence = np.where(wrong, sureness, -np.inf).max(axis=1)
        mistakes = np.flatnonzero(wrong.any(axis=1))
        for i in mistakes[np.argsort(-confidence[mistakes], kind="stable")][:limit]:
            rows.append({"split": split, "row": int(i) + 1, "input": inputs[i],
                         "gold": [n for n, on in zip(names, references[i]) if on],
                         "predicted": [n for n, on in zip(names, predicted[i]) if on],
                         "confidence": float(confidence[i])})
        return rows
    ids = references.astype(np.int64)
    confidence = probabilities[np.arange(len(ids)), predicted]
    mistakes = np.flatnonzero(predicted != ids)
    for i in mistakes[np.argsort(-confidence[mistakes], kind="stable")][:limit]:
        rows.append({"split": split, "row": int(i) + 1, "input": inputs[i], "gold": names[ids[i]],
                     "predicted": names[predicted[i]], "confidence": float(confidence[i])})
    return rows


def _binary_cross_entropy(logits, label_ids) -> float:
    import torch
    import torch.nn.functional as F

    return float(F.binary_cross_entropy_with_logits(torch.as_tensor(logits, dtype=torch.float64),
                                                    torch.as_tensor(label_ids, dtype=torch.float64)))


def _calibration_report(logits, calibrated, label_ids, temperature: float, multi: bool) -> dict:
    """ECE (15 bins) and NLL before and after temperature scaling, and the reliability bins of both."""
    import numpy as np

    from hftl.calibration import (
        apply_temperature, expected_calibration_error, negative_log_likelihood, reliability_bins,
    )

    raw = apply_temperature(logits, 1.0, multi_label=multi)
    references = np.asarray(label_ids).astype(np.int64)
    return {
        "temperature": temperature,
        "ece_before": expected_calibration_error(raw, references),
        "ece_after": expected_calibration_error(calibrated, references),
        "nll_before": negative_log_likelihood(raw, references),
        "nll_after": negative_log_likelihood(calibrated, references),
        "reliability": {"before": reliability_bins(raw, references), "after": reliability_bins(calibrated, references)},
    }


def _multilabel_comparison(probabilities, label_ids, names, decisions: Decisions) -> dict:
    """Macro/micro/samples F1 at 0.5, at the best single threshold and at the tuned per-label thresholds."""
    keys = ("f1_macro", "f1_micro", "f1_samples", "precision_macro", "recall_macro")
    chosen = {"0.5": 0.5}
    if decisions.best_single_threshold is not None:
        chosen["best_single"] = decisions.best_single_threshold
    if decisions.tuned_thresholds is not None:
        chosen["tuned_per_label"] = decisions.tuned_thresholds
    comparison = {}
    for name, thresholds in chosen.items():
        scores = multilabel_report(decisions.decide(probabilities, names, threshold=thresholds), label_ids, names,
                                   thresholds)
        comparison[name] = {k: scores[k] for k in keys}
        if not isinstance(thresholds, list):
            comparison[name]["threshold"] = float(thresholds)
    return comparison


def _binary_comparison(probabilities, label_ids, names, decisions: Decisions) -> dict:
    """Accuracy, balanced accuracy, macro-F1 and the positive class's F1 at 0.5 and at the tuned threshold."""
    positive = names[decisions.positive_id(names)]
    comparison = {}
    for name, threshold in (("0.5", 0.5), ("tuned", decisions.tuned_threshold)):
        scores = classification_report(decisions.decide(probabilities, names, threshold), label_ids, names)
        comparison[name] = {"threshold": float(threshold), "accuracy": scores["accuracy"],
                            "balanced_accuracy": scores["balanced_accuracy"], "f1": scores["f1"],
                            "f1_positive": scores["per_class"][positive]["f1"], "positive_label": positive}
    return comparison
