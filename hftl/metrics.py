"""Classification and regression metrics computed through 🤗 Evaluate, with scikit-learn and SciPy doing the maths.

`import evaluate` takes seconds, so the `evaluate.Metric` subclasses are only defined on first use; `hftl.metrics.F1`
etc. still work (PEP 562). Single-label: `Accuracy`, `Precision`, `Recall`, `F1`, `BalancedAccuracy`,
`MatthewsCorrelation`, `PerClassReport`, `ConfusionMatrix`. Multi-label (binary indicator matrices):
`MultilabelScores`, `MultilabelPerLabelReport`. Regression: `MeanSquaredError`, `MeanAbsoluteError`, `R2`,
`Pearson`, `Spearman`. `Combined` computes several of them on one copy of the inputs (the reports use it).

Averages over classes run over the classes present in the split (in its references or its predictions), as
scikit-learn does when `labels` is not given: a class the split lacks would otherwise count as a 0 and pull a perfect
classifier's macro-F1 down to 2/3 on a split holding 2 of 3 classes. Such classes are reported with support 0 and
null scores.
"""

from __future__ import annotations

import functools
import math
import types
import warnings
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "mean_cross_entropy",
    "classification_report", "combined_metrics", "logits_to_predictions", "make_compute_metrics",
    "make_multilabel_compute_metrics", "make_regression_compute_metrics", "multilabel_report", "prediction_records",
    "regression_report",
]

_SINGLE_LABEL = ("Accuracy", "Precision", "Recall", "F1", "BalancedAccuracy", "MatthewsCorrelation", "PerClassReport",
                 "ConfusionMatrix")
_MULTI_LABEL = ("MultilabelScores", "MultilabelPerLabelReport")
_REGRESSION = ("MeanSquaredError", "MeanAbsoluteError", "R2", "Pearson", "Spearman")
_METRIC_CLASS_NAMES = _SINGLE_LABEL + _MULTI_LABEL + _REGRESSION + ("Combined",)
_AVERAGES = ("macro", "weighted", "micro")


def _check_average(average: str) -> str:
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {_AVERAGES}, got {average!r}")
    return average


@functools.cache
def metric_cache_dir() -> str:
    """A temporary folder of this process, removed at exit: the `cache_dir` of in-memory metrics, under which
    `evaluate.EvaluationModule.__init__` creates a folder per metric even with `keep_in_memory=True` (evaluate 0.4),
    instead of the user's ~/.cache/huggingface/metrics."""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="hftl-metrics-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.lru_cache(maxsize=None)
def _metric_classes() -> types.SimpleNamespace:
    import datasets
    import evaluate
    import numpy as np
    from scipy import stats
    from sklearn import metrics as skm

    class _Module(evaluate.Metric):
        """Base class: in-memory, described by `_features` and `_inputs`."""

        _features = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})
        _inputs = "predictions, references: integer class ids; labels: all class ids."
        _format = "numpy"

        def __init__(self, **kwargs):
            # In-memory Arrow buffer: nothing is written to the HF metrics cache and no file locks are taken. The
            # base class still creates a folder under `cache_dir` (public argument): a temporary one of this process
            kwargs.setdefault("keep_in_memory", True)
            kwargs.setdefault("cache_dir", metric_cache_dir())
            super().__init__(**kwargs)

        def _info(self):
            return evaluate.MetricInfo(description=self.__doc__ or "", citation="", features=self._features,
                                       format=self._format, inputs_description=self._inputs)

    class _SklearnMetric(_Module):
        """Single-label base: `labels` and `average` given here are defaults that `compute(...)` kwargs override."""

        def __init__(self, labels: Sequence[int] | None = None, average: str = "macro", **kwargs):
            self.labels = None if labels is None else [int(label) for label in labels]
            self.average = _check_average(average)
            super().__init__(**kwargs)

        def _labels(self, labels):
            return self.labels if labels is None else [int(label) for label in labels]

        def _present(self, labels, predictions, references):
            """The given labels that occur in the references or predictions (None: scikit-learn's own union)."""
            labels = self._labels(labels)
            present = set(np.union1d(predictions, references).tolist())
            return None if labels is None else [label for label in labels if label in present]

    # Every `_compute` takes **kwargs: `Combined` (as `evaluate.combine`) forwards all compute kwargs to every part.
    class Accuracy(_SklearnMetric):
        """Fraction of predictions equal to the references."""

        def _compute(self, predictions, references, **kwargs):
            return {"accuracy": float(skm.accuracy_score(references, predictions))}

    class _AveragedMetric(_SklearnMetric):
        _score_fn: staticmethod  # a scikit-learn `*_score` function
        _key: str

        def _compute(self, predictions, references, labels=None, average=None, **kwargs):
            average = self.average if average is None else _check_average(average)
            labels = self._present(labels, predictions, references)
            score = self._score_fn(references, predictions, labels=labels, average=average, zero_division=0)
            # One key per average, so combined macro + weighted modules never trigger combine's collision renaming.
            return {self._key if average == "macro" else f"{self._key}_{average}": float(score)}

    class Precision(_AveragedMetric):
        """Precision averaged over the classes present; a present but never-predicted class scores 0."""

        _score_fn, _key = staticmethod(skm.precision_score), "precision"

    class Recall(_AveragedMetric):
        """Recall averaged over the classes present; a class only in the predictions scores 0."""

        _score_fn, _key = staticmethod(skm.recall_score), "recall"

    class F1(_AveragedMetric):
        """F1 averaged over the classes present; 0 where precision and recall are both 0."""

        _score_fn, _key = staticmethod(skm.f1_score), "f1"

    class BalancedAccuracy(_SklearnMetric):
        """Recall averaged over the classes present in the references (macro recall of scikit-learn's definition)."""

        def _compute(self, predictions, references, **kwargs):
            with warnings.catch_warnings():
                # Raised when a class is predicted but absent from the references: it is left out, as documented.
                warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
                return {"balanced_accuracy": float(skm.balanced_accuracy_score(references, predictions))}

    class MatthewsCorrelation(_SklearnMetric):
        """Matthews correlation coefficient (multi-class generalisation); 0 when it is undefined."""

        def _compute(self, predictions, references, **kwargs):
            return {"matthews_correlation": float(skm.matthews_corrcoef(references, predictions))}

    class PerClassReport(_SklearnMetric):
        """Precision, recall, F1 and support for each class id in `labels`; null scores for absent classes."""

        def _compute(self, predictions, references, labels=None, **kwargs):
            labels = self._labels(labels) or np.union1d(predictions, references).tolist()
            p, r, f, s = skm.precision_recall_fscore_support(
                references, predictions, labels=labels, average=None, zero_division=0
            )
            present = set(np.union1d(predictions, references).tolist())
            return {"per_class": {
                c: _scores(pc, rc, fc, sc, c in present) for c, pc, rc, fc, sc in zip(labels, p, r, f, s)
            }}

    class ConfusionMatrix(_SklearnMetric):
        """Confusion matrix over `labels`: rows are true classes, columns predicted classes."""

        def _compute(self, predictions, references, labels=None, **kwargs):
            return {"confusion_matrix": skm.confusion_matrix(references, predictions, labels=self._labels(labels)).tolist()}

    # -- multi-label: rows of 0/1 indicators, one column per label ------------------------------------
    class _MultilabelMetric(_Module):
        _features = datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64")),
                                       "references": datasets.Sequence(datasets.Value("int64"))})
        _inputs = "predictions, references: binary indicator rows of shape (num_labels,)."
        _format = None  # evaluate's numpy format only takes `Value` features: rows come back as lists


        @staticmethod
        def _matrices(predictions, references):
            predictions, references = np.asarray(predictions), np.asarray(references)
            present = np.flatnonzero(predictions.any(axis=0) | references.any(axis=0))
            return predictions, references, present

    class MultilabelScores(_MultilabelMetric):
        """Micro, macro (over labels present) and samples precision/recall/F1, subset accuracy and Hamming loss.

        In samples averages a row the model rightly leaves empty scores 1 (scikit-learn `zero_division=1`)."""

        def _compute(self, predictions, references, **kwargs):
            predictions, references, present = self._matrices(predictions, references)
            results = {}
            for average, labels, zero_division in (("micro", None, 0), ("macro", present, 0), ("samples", None, 1)):
                if average == "macro" and not len(labels):  # nothing predicted, nothing true: nothing to average
                    p = r = f = float("nan")
                else:
                    p, r, f, _ = skm.precision_recall_fscore_support(
                        references, predictions, labels=labels, average=average, zero_division=zero_division)
                results.update({f"precision_{average}": float(p), f"recall_{average}": float(r),
                                f"f1_{average}": float(f)})
            results["subset_accuracy"] = float(skm.accuracy_score(references, predictions))
            results["hamming_loss"] = float(skm.hamming_loss(references, predictions))
            return results

    class MultilabelPerLabelReport(_MultilabelMetric):
        """Precision, recall, F1 and support (positive references) per label index; null scores if absent."""

        def _compute(self, predictions, references, **kwargs):
            predictions, references, present = self._matrices(predictions, references)
            p, r, f, s = skm.precision_recall_fscore_support(references, predictions, average=None, zero_division=0)
            present = set(present.tolist())
            return {"per_label": {i: _scores(*row, i in present) for i, row in enumerate(zip(p, r, f, s))}}

    # -- regression: one float per example ------------------------------------------------------------
    class _RegressionMetric(_Module):
        _features = datasets.Features({"predictions": datasets.Value("float64"),
                                       "references": datasets.Value("float64")})
        _inputs = "predictions, references: one float per example."

    class MeanSquaredError(_RegressionMetric):
        """Mean of the squared errors."""

        def _compute(self, predictions, references, **kwargs):
            return {"mse": float(skm.mean_squared_error(references, predictions))}

    class MeanAbsoluteError(_RegressionMetric):
        """Mean of the absolute errors."""

        def _compute(self, predictions, references, **kwargs):
            return {"mae": float(skm.mean_absolute_error(references, predictions))}

    class R2(_RegressionMetric):
        """Coefficient of determination; NaN (not a made-up 0 or 1) when the references are constant."""

        def _compute(self, predictions, references, **kwargs):
            with np.errstate(divide="ignore", invalid="ignore"):  # constant references: 0 / 0, reported as NaN
                return {"r2": float(skm.r2_score(references, predictions, force_finite=False))}

    class _Correlation(_RegressionMetric):
        _fn: staticmethod
        _key: str

        def _compute(self, predictions, references, **kwargs):
            with warnings.catch_warnings():
                # A constant input makes the correlation undefined: SciPy warns and returns NaN, which we report.
                warnings.simplefilter("ignore", stats.ConstantInputWarning)
                return {self._key: float(self._fn(predictions, references).statistic)}

    class Pearson(_Correlation):
        """Pearson's linear correlation; NaN when either side is constant."""

        _fn, _key = staticmethod(stats.pearsonr), "pearson"

    class Spearman(_Correlation):
        """Spearman's rank correlation (ties get their average rank); NaN when either side is constant."""

        _fn, _key = staticmethod(stats.spearmanr), "spearman"

    class Combined(_Module):
        """Several of the metrics above computed on one copy of the inputs.

        `evaluate.combine` feeds the inputs to each module: every module encodes them into its own Arrow buffer
        and decodes them back, so ten metrics cost ten round-trips (about 90% of a classification report's time,
        measured). Here the inputs go through Arrow once, then each part's `_compute` (the hook the metrics above
        implement) runs on them. The parts must take the same inputs and return distinct keys.

        Args:
            parts (`dict[str, Metric]` or `list[Metric]`): the metrics, constructed with their settings.
        """

        def __init__(self, parts, **kwargs):
            self.parts = list(parts.values()) if isinstance(parts, dict) else list(parts)
            first = self.parts[0]
            if any((part._features, part._format) != (first._features, first._format) for part in self.parts):
                raise ValueError("Combined: every part must take the same inputs (one kind of metric).")
            self._features, self._format, self._inputs = first._features, first._format, first._inputs
            super().__init__(**kwargs)

        def _compute(self, predictions, references, **kwargs):
            results = {}
            for part in self.parts:
                values = part._compute(predictions, references, **kwargs)
                if results.keys() & values.keys():
                    raise ValueError(f"Combined: two parts return {sorted(results.keys() & values.keys())}.")
                results.update(values)
            return results

    return types.SimpleNamespace(**{name: obj for name, obj in locals().items() if name in _METRIC_CLASS_NAMES})


def _scores(precision, recall, f1, support, present: bool) -> dict:
    """One per-class row; scores are None for a class absent from both references and predictions."""
    if not present:
        return {"precision": None, "recall": None, "f1": None, "support": 0}
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(support)}


def __getattr__(name: str) -> Any:
    if name in _METRIC_CLASS_NAMES:
        return getattr(_metric_classes(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def combined_metrics(labels: Sequence[int], *, full: bool = True):
    """
    The hftl classification metrics as one `Combined` metric (the inputs go through Arrow once).

    Args:
        labels (`Sequence[int]`): All class ids: per-class rows and the confusion matrix cover every one, while
            averages run over those present in the references or predictions.
        full (`bool`, *optional*, defaults to `True`): Also compute weighted precision/recall, per-class scores and
            the confusion matrix; otherwise only the scalars accuracy, balanced accuracy, Matthews correlation,
            macro precision/recall/F1 and weighted F1.

    Returns:
        `Combined`: one `evaluate.Metric`; use `add_batch(predictions=..., references=...)` and `compute()`.
    """
    m, labels = _metric_classes(), list(labels)
    modules = {"accuracy": m.Accuracy(), "precision": m.Precision(labels), "recall": m.Recall(labels), "f1": m.F1(labels)}
    if full:
        modules["precision_weighted"] = m.Precision(labels, average="weighted")
        modules["recall_weighted"] = m.Recall(labels, average="weighted")
    modules["f1_weighted"] = m.F1(labels, average="weighted")
    modules["balanced_accuracy"] = m.BalancedAccuracy()
    modules["matthews_correlation"] = m.MatthewsCorrelation()
    if full:
        modules["per_class"] = m.PerClassReport(labels)
        modules["confusion_matrix"] = m.ConfusionMatrix(labels)
    return m.Combined(modules)


def logits_to_predictions(logits) -> np.ndarray:
    """
    Turn classification logits of shape `(n, num_labels)` into class ids of shape `(n,)`.

    `logits` may be a tuple whose first element is the logits, as `Trainer` passes when the model returns extras.
    """
    import numpy as np  # lazy, like everything heavy here: keeps `import hftl.metrics` well under 0.1 s

    logits = np.asarray(logits[0] if isinstance(logits, tuple) else logits)
    if logits.ndim != 2 or logits.shape[-1] < 2:
        # num_labels=1 means regression in transformers, so argmax would silently predict class 0 everywhere.
        raise ValueError(f"Expected logits of shape (n, num_labels >= 2), got {logits.shape}")
    return logits.argmax(axis=-1)


def _as_class_ids(values, num_labels: int, what: str) -> np.ndarray:
    import numpy as np

    values = np.asarray(values)
    # Out-of-range ids (e.g. -100 padding) would be silently dropped from the confusion matrix by scikit-learn.
    if values.ndim != 1 or (values.size and (values.dtype.kind not in "iu" or values.min() < 0 or values.max() >= num_labels)):
        raise ValueError(f"{what} must be a 1-D array of integer class ids in [0, {num_labels}), got {values!r}")
    return values.astype(np.int64)


def classification_report(predictions, references, label_names: list[str]) -> dict:
    """
    Compute all classification metrics as a JSON-serialisable dict of plain Python values.

    Args:
        predictions (`Sequence[int]`): Predicted class ids (see `logits_to_predictions`).
        references (`Sequence[int]`): True class ids.
        label_names (`list[str]`): `label_names[i]` is the name of class id `i`.

    Returns:
        `dict`: `accuracy`, `balanced_accuracy`, `matthews_correlation`, macro `precision`/`recall`/`f1` (over the
        classes present in `references` or `predictions`), `precision_weighted`/`recall_weighted`/`f1_weighted`,
        `per_class` (`{name: {precision, recall, f1, support}}`, scores None for an absent class), `absent_classes`
        (names found in neither), `confusion_matrix` (rows true, columns predicted, over all of `label_names`) and
        `num_examples`.
    """
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"label_names must be unique, got {label_names}")
    predictions = _as_class_ids(predictions, len(label_names), "predictions")
    references = _as_class_ids(references, len(label_names), "references")
    if len(predictions) != len(references) or len(references) == 0:
        raise ValueError(f"Need as many predictions as references (> 0), got {len(predictions)} and {len(references)}")
    results = combined_metrics(range(len(label_names))).compute(predictions=predictions, references=references)
    results["per_class"] = {label_names[i]: scores for i, scores in results["per_class"].items()}
    results["absent_classes"] = [name for name, row in results["per_class"].items() if row["f1"] is None]
    results["num_examples"] = len(references)
    return results


def make_compute_metrics(label_names: list[str]) -> Callable[[Any], dict]:
    """
    Build a `compute_metrics` function for `transformers.Trainer`.

    Args:
        label_names (`list[str]`): `label_names[i]` is the name of class id `i`.

    Returns:
        `Callable[[EvalPrediction], dict[str, float]]`: maps `predictions` (logits) and `label_ids` to the scalars
        `accuracy`, `balanced_accuracy`, `matthews_correlation`, `precision`, `recall`, `f1` (macro over the classes
        present) and `f1_weighted`, which the Trainer can log.
    """
    num_labels, metrics = len(label_names), None

    def compute_metrics(eval_pred) -> dict:
        nonlocal metrics
        if metrics is None:  # built once, on first use, so creating the Trainer skips `import evaluate`
            metrics = combined_metrics(range(num_labels), full=False)
        predictions = _as_class_ids(logits_to_predictions(eval_pred.predictions), num_labels, "predictions")
        references = _as_class_ids(eval_pred.label_ids, num_labels, "label_ids")
        return metrics.compute(predictions=predictions, references=references)

    return compute_metrics


def _json_float(value):
    """None for NaN/inf, which strict JSON cannot hold (an undefined score, e.g. a correlation with a constant)."""
    return value if not isinstance(value, float) or math.isfinite(value) else None


# -- multi-label --------------------------------------------------------------------------------------
def _as_indicators(values, num_labels: int, what: str) -> np.ndarray:
    import numpy as np

    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] != num_labels or not np.isin(values, (0, 1)).all():
        raise ValueError(f"{what} must be a 0/1 indicator matrix of shape (n, {num_labels}), got shape {values.shape}")
    return values.astype(np.int64)


def _thresholds(thresholds, num_labels: int) -> np.ndarray:
    import numpy as np

    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim > 1 or thresholds.size not in (1, num_labels):
        raise ValueError(f"thresholds must be one float or one per label ({num_labels}), got shape {thresholds.shape}")
    return np.broadcast_to(thresholds.reshape(-1), (num_labels,))


def multilabel_report(predictions, references, label_names: list[str], thresholds: float | Sequence[float] = 0.5
                      ) -> dict:
    """
    Compute all multi-label metrics as a JSON-serialisable dict of plain Python values.

    Args:
        predictions (`array-like` of shape `(n, num_labels)`): 0/1 indicators of the predicted labels, as
            `hftl.decisions.Decisions.decide` (the one threshold rule) gives them.
        references (`array-like` of shape `(n, num_labels)`): 0/1 indicators of the true labels.
        label_names (`list[str]`): `label_names[j]` is the name of column `j`.
        thresholds (`float` or `Sequence[float]`, *optional*, defaults to 0.5): The thresholds that made
            `predictions` (one, or one per label), recorded in the report.

    Returns:
        `dict`: `precision_`/`recall_`/`f1_` + `micro`/`macro`/`samples` (macro over the labels present in the
        references or predictions), `subset_accuracy`, `hamming_loss`, `per_label` (`{name: {precision, recall,
        f1, support}}`, support = positive references, scores None for an absent label), `absent_labels`,
        `thresholds` (one per label) and `num_examples`.
    """
    import numpy as np

    if len(set(label_names)) != len(label_names):
        raise ValueError(f"label_names must be unique, got {label_names}")
    references = _as_indicators(references, len(label_names), "references")
    predictions = _as_indicators(predictions, len(label_names), "predictions")
    if predictions.shape != references.shape or len(references) == 0:
        raise ValueError(f"Need predictions of the references' shape {references.shape} (n > 0), "
                         f"got {predictions.shape}")
    thresholds = _thresholds(thresholds, len(label_names))
    m = _metric_classes()
    results = m.Combined([m.MultilabelScores(), m.MultilabelPerLabelReport()]).compute(
        predictions=predictions, references=references)
    results = {key: _json_float(value) for key, value in results.items()}
    results["per_label"] = {label_names[i]: row for i, row in results["per_label"].items()}
    results["absent_labels"] = [name for name, row in results["per_label"].items() if row["f1"] is None]
    results["thresholds"] = [float(t) for t in thresholds]
    results["num_examples"] = len(references)
    return results


def make_multilabel_compute_metrics(label_names: list[str], decide: Callable[[Any], Any]) -> Callable[[Any], dict]:
    """
    Build a `compute_metrics` function for `transformers.Trainer` on a multi-label model.

    Args:
        label_names (`list[str]`): One name per output column.
        decide (`Callable`): logits `(n, num_labels)` -> 0/1 indicators, the run's decisions (`Decisions.decide`
            on `Decisions.probabilities`: the one threshold rule).

    Returns:
        `Callable[[EvalPrediction], dict[str, float]]`: the scalars of `MultilabelScores` (`f1_micro`, `f1_macro`,
        `f1_samples`, the matching precision and recall, `subset_accuracy`, `hamming_loss`).
    """
    num_labels, metric = len(label_names), None

    def compute_metrics(eval_pred) -> dict:
        nonlocal metric
        if metric is None:  # built once, on first use, so creating the Trainer skips `import evaluate`
            metric = _metric_classes().MultilabelScores()
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        predictions = _as_indicators(decide(_as_logits(logits, num_labels)), num_labels, "decided predictions")
        references = _as_indicators(eval_pred.label_ids, num_labels, "label_ids")
        return metric.compute(predictions=predictions, references=references)

    return compute_metrics


def _as_logits(logits, num_labels: int) -> np.ndarray:
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != num_labels:
        raise ValueError(f"Expected logits of shape (n, {num_labels}), got {logits.shape}")
    return logits


# -- regression ---------------------------------------------------------------------------------------
def _as_targets(values, what: str) -> np.ndarray:
    import numpy as np

    values = np.asarray(values[0] if isinstance(values, tuple) else values, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == 1:  # a regression head's (n, 1) output
        values = values[:, 0]
    if values.ndim != 1 or not np.isfinite(values).all():
        raise ValueError(f"{what} must be one finite number per example (shape (n,) or (n, 1)), got shape "
                         f"{values.shape}" + ("" if values.ndim != 1 else " with NaN or infinite values"))
    return values


def _regression_metrics():
    m = _metric_classes()
    return m.Combined([m.MeanSquaredError(), m.MeanAbsoluteError(), m.R2(), m.Pearson(), m.Spearman()])


def regression_report(predictions, references) -> dict:
    """
    Compute the regression metrics as a JSON-serialisable dict of plain Python values.

    Args:
        predictions (`array-like` of shape `(n,)` or `(n, 1)`): Predicted values (a regression head's output).
        references (`array-like` of shape `(n,)` or `(n, 1)`): True values.

    Returns:
        `dict`: `mse`, `mae`, `r2`, `pearson`, `spearman` (None where undefined: constant references for R²,
        either side constant for the correlations) and `num_examples`.
    """
    predictions, references = _as_targets(predictions, "predictions"), _as_targets(references, "references")
    if len(predictions) != len(references) or len(references) < 2:
        raise ValueError(f"Need as many predictions as references (at least 2), got {len(predictions)} and "
                         f"{len(references)}")
    results = _regression_metrics().compute(predictions=predictions, references=references)
    return {**{key: _json_float(value) for key, value in results.items()}, "num_examples": len(references)}


def make_regression_compute_metrics(to_scores: Callable | None = None) -> Callable[[Any], dict]:
    """
    Build a `compute_metrics` function for `transformers.Trainer` on a regression model (`num_labels=1`).

    Args:
        to_scores (`Callable`, *optional*): maps the model's outputs to the predicted scores (e.g. a sigmoid
            rescaled to a score range); default: the outputs are the scores.

    Returns:
        `Callable[[EvalPrediction], dict[str, float]]`: `mse`, `mae`, `r2`, `pearson`, `spearman` (NaN where
        undefined).
    """
    metrics = None

    def compute_metrics(eval_pred) -> dict:
        nonlocal metrics
        if metrics is None:  # built once, on first use
            metrics = _regression_metrics()
        predictions = eval_pred.predictions if to_scores is None else to_scores(eval_pred.predictions)
        return metrics.compute(predictions=_as_targets(predictions, "predictions"),
                               references=_as_targets(eval_pred.label_ids, "label_ids"))

    return compute_metrics


def prediction_records(probabilities, label_names: Sequence[str]) -> list[dict]:
    """One {label, score, probabilities} dict per row of a (n, num_labels) probability tensor or array."""
    records = []
    for row in probabilities:
        scores = [float(p) for p in row]
        best = max(range(len(scores)), key=scores.__getitem__)
        records.append({"label": label_names[best], "score": scores[best],
                        "probabilities": dict(zip(label_names, scores))})
    return records


def mean_cross_entropy(logits, label_ids) -> float:
    """The mean per-example cross-entropy of gathered evaluation logits.

    Used instead of the Trainer's evaluation loss, which averages per-batch means: under distributed
    evaluation those batches include the examples the sampler repeats to give every process equal
    batches, so that loss is slightly off while the gathered logits and labels are exact.
    """
    import numpy as np
    import torch

    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(label_ids), dtype=torch.long)
    return float(torch.nn.functional.cross_entropy(logits, labels))
