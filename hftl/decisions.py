"""Predictions from a classifier's outputs and a run's decisions (its `calibration.json`): the problem type, and
where fitted the temperature, thresholds and score range. Shared by the PyTorch recipes and the ONNX Runtime
path (`hftl.onnx_export`), below both."""

from __future__ import annotations

from hftl.metrics import prediction_records

SINGLE, MULTI, REGRESSION = "single_label_classification", "multi_label_classification", "regression"


def regression_scores(logits, score_range=None):
    """The predicted scores of a regression model's (n, 1) or (n,) outputs: the outputs themselves, or with a
    `data.score_range` [low, high], low + (high - low) x sigmoid(output). A tuple (a model returning more than
    its logits, as `Trainer.predict` gives it) is read from its first element."""
    import numpy as np

    logits = np.asarray(logits[0] if isinstance(logits, tuple) else logits, dtype=np.float64).reshape(-1)
    if not score_range:
        return logits
    low, high = score_range
    return low + (high - low) / (1.0 + np.exp(-logits))


def predictions_from_logits(logits, decisions: dict, label_names: list[str] | None) -> list[dict]:
    """One dict per row of `logits`: {label, score, probabilities} (single-label), {labels, probabilities}
    (multi-label: the labels at or above their thresholds) or {score} (regression).

    `decisions` are a run's `calibration.json`: its problem type, and where fitted the temperature (probabilities
    are calibrated), the binary threshold on the positive class, per-label thresholds, or the score range. The
    one place predictions are made from outputs, for the PyTorch model and its ONNX export alike.
    """
    import numpy as np

    from hftl.calibration import apply_temperature

    problem = decisions.get("problem_type") or SINGLE
    if problem == REGRESSION:
        return [{"score": float(score)} for score in regression_scores(logits, decisions.get("score_range"))]
    probabilities = apply_temperature(logits, decisions.get("temperature") or 1.0, multi_label=problem == MULTI)
    if problem == MULTI:
        thresholds = np.broadcast_to(np.asarray(decisions.get("thresholds", 0.5)), (len(label_names),))
        return [{"labels": [n for n, p, t in zip(label_names, row, thresholds) if p >= t],
                 "probabilities": {n: float(p) for n, p in zip(label_names, row)}} for row in probabilities]
    records = prediction_records(probabilities, label_names)
    threshold = decisions.get("threshold")
    if threshold is not None:  # binary, with a chosen threshold on the positive class (id 1)
        for record, row in zip(records, probabilities):
            best = int(row[1] >= threshold)
            record["label"], record["score"] = label_names[best], float(row[best])
    return records
