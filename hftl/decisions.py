"""`Decisions`: how a classifier's outputs become answers, fitted once on the validation split and applied by
everything that answers (the run's test report, `hftl evaluate`, `hftl predict`, the ONNX export, the card).

They are the problem type, and where fitted the temperature (calibrated probabilities), the binary threshold on
the positive class (`data.positive_label`), the per-label thresholds (multi-label) and the score range
(regression); the precision the logits are computed in, the same for fitting, reporting and serving; and what
was tuned but not applied, for the reports. Saved as the run's `calibration.json` (`RunDir.write_calibration`).
Below the recipes and the ONNX path, above `hftl.calibration` (the fitting functions) only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hftl.metrics import prediction_records
from hftl.precision import FLOAT32

if TYPE_CHECKING:
    import numpy as np

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


@dataclass
class Decisions:
    """What turns a classifier's logits into answers.

    Args:
        problem_type (`str`): single-label, multi-label or regression (transformers' names).
        temperature (`float`, *optional*): divides the logits before the softmax / sigmoid (None: not fitted).
        threshold (`float`, *optional*): binary tasks: answer `positive_label` when its probability is at least
            this (None: the most probable class).
        thresholds (`list[float]`, *optional*): multi-label: one per label (None: 0.5 for every label).
        positive_label (`str`, *optional*): binary tasks: the class `threshold` and the positive-class F1 are
            about (default: the second label, as scikit-learn's `pos_label=1`).
        score_range (`list[float]`, *optional*): regression: scores are low + (high - low) x sigmoid(output).
        inference_precision (`str`): the precision of the logits the decisions were fitted on, the run's reports
            were computed in, and `hftl evaluate` / `hftl predict` compute them in.
        tuned_threshold, tuned_thresholds, best_single_threshold: tuned on validation, reported beside the
            applied ones (a binary task applies its tuned threshold only with `data.threshold: tuned`).
    """

    problem_type: str = SINGLE
    temperature: float | None = None
    threshold: float | None = None
    thresholds: list[float] | None = None
    positive_label: str | None = None
    score_range: list[float] | None = None
    inference_precision: str = FLOAT32
    tuned_threshold: float | None = None
    tuned_thresholds: list[float] | None = None
    best_single_threshold: float | None = None

    # -- fitting ------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, logits, label_ids, label_names, problem_type: str, *, calibration: str = "auto",
            threshold="auto", positive_label: str | None = None, score_range=None, precision: str = FLOAT32
            ) -> "Decisions":
        """Fit the temperature (L-BFGS on the negative log-likelihood) and tune the thresholds on validation
        `logits` and `label_ids` (class ids, or indicator rows for multi-label).

        `calibration` ('auto', 'temperature', 'none') and `threshold` ('auto', 'tuned' or a number) are the
        `data` settings of the same names."""
        from hftl.calibration import best_global_threshold, fit_temperature, tune_binary_threshold, tune_thresholds

        import numpy as np

        decisions = cls.untuned(problem_type, label_names, positive_label, score_range, precision)
        if problem_type == REGRESSION:
            return decisions
        multi = problem_type == MULTI
        if calibration != "none":
            decisions.temperature = fit_temperature(logits, label_ids, multi_label=multi)
        probabilities = decisions.probabilities(logits)
        if multi:
            decisions.tuned_thresholds = tune_thresholds(probabilities, label_ids)
            decisions.best_single_threshold = best_global_threshold(probabilities, label_ids)
            decisions.thresholds = ([float(threshold)] * len(label_names) if isinstance(threshold, float)
                                    else decisions.tuned_thresholds)
        elif len(label_names) == 2:
            positive = decisions.positive_id(label_names)
            decisions.tuned_threshold = tune_binary_threshold(probabilities[:, positive],
                                                              (np.asarray(label_ids) == positive).astype(np.int64))
            decisions.threshold = (decisions.tuned_threshold if threshold == "tuned"
                                   else float(threshold) if isinstance(threshold, float) else None)
        return decisions

    @classmethod
    def untuned(cls, problem_type: str, label_names=None, positive_label: str | None = None, score_range=None,
                precision: str = FLOAT32) -> "Decisions":
        """The decisions before anything is fitted: raw probabilities, the most probable class, 0.5 per label."""
        if problem_type == SINGLE and label_names is not None and len(label_names) == 2:
            positive_label = positive_label or str(label_names[1])
        else:
            positive_label = None
        return cls(problem_type=problem_type, positive_label=positive_label, inference_precision=precision,
                   score_range=[float(v) for v in score_range] if problem_type == REGRESSION and score_range else None)

    # -- applying -----------------------------------------------------------------------------------
    def positive_id(self, label_names) -> int:
        """The class id of the positive label (binary tasks)."""
        names = [str(n) for n in label_names]
        return names.index(self.positive_label) if self.positive_label in names else 1

    def probabilities(self, logits) -> np.ndarray:
        """Calibrated probabilities: softmax (sigmoid for multi-label) of logits / temperature."""
        from hftl.calibration import apply_temperature

        return apply_temperature(logits, self.temperature or 1.0, multi_label=self.problem_type == MULTI)

    def decide(self, probabilities, label_names, threshold=None) -> np.ndarray:
        """The one decision rule. Single-label: class ids (the positive class where its probability reaches the
        binary threshold, else the most probable class). Multi-label: 0/1 indicators (probability >= the label's
        threshold). `threshold` replaces the applied threshold(s) (for the comparisons in reports)."""
        import numpy as np

        probabilities = np.asarray(probabilities, dtype=np.float64)
        if self.problem_type == MULTI:
            chosen = self.thresholds if threshold is None else threshold
            chosen = np.broadcast_to(np.asarray(0.5 if chosen is None else chosen, dtype=np.float64),
                                     (probabilities.shape[1],))
            return (probabilities >= chosen).astype(np.int64)
        chosen = self.threshold if threshold is None else threshold
        if chosen is None or probabilities.shape[1] != 2:
            return probabilities.argmax(axis=1)
        positive = self.positive_id(label_names)
        return np.where(probabilities[:, positive] >= chosen, positive, 1 - positive)

    def apply(self, logits, label_names) -> list[dict]:
        """One answer per row of `logits`: {label, score, probabilities} (single-label), {labels, probabilities}
        (multi-label) or {score} (regression). The one place answers are made from outputs, for the PyTorch
        model and its ONNX export alike."""
        if self.problem_type == REGRESSION:
            return [{"score": float(score)} for score in regression_scores(logits, self.score_range)]
        names = [str(n) for n in label_names]
        probabilities = self.probabilities(logits)
        chosen = self.decide(probabilities, names)
        if self.problem_type == MULTI:
            return [{"labels": [n for n, on in zip(names, row) if on],
                     "probabilities": {n: float(p) for n, p in zip(names, probs)}}
                    for row, probs in zip(chosen, probabilities)]
        records = prediction_records(probabilities, names)
        for record, best, row in zip(records, chosen, probabilities):
            record["label"], record["score"] = names[best], float(row[best])
        return records

    # -- saving -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, problem_type: str | None = None) -> "Decisions":
        """From a saved `calibration.json` (unknown keys ignored; {} or a missing problem type: `problem_type`,
        else single-label)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in (values or {}).items() if k in known and v is not None}
        kept.setdefault("problem_type", problem_type or SINGLE)
        return cls(**kept)

    def save(self, run) -> None:
        """Write the run's `calibration.json` (`run` a `RunDir`)."""
        run.write_calibration(self.to_dict())

    @classmethod
    def load(cls, run, problem_type: str | None = None) -> "Decisions":
        """The decisions saved in run folder `run` (a `RunDir`); `problem_type` where it saved none."""
        return cls.from_dict(run.calibration(), problem_type)


def predictions_from_logits(logits, decisions, label_names) -> list[dict]:
    """`Decisions.apply` for `decisions` given as a `Decisions` or a saved `calibration.json` dict."""
    if not isinstance(decisions, Decisions):
        decisions = Decisions.from_dict(decisions)
    return decisions.apply(logits, label_names)
