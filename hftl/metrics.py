"""Classification metrics computed through 🤗 Evaluate, with scikit-learn doing the maths.

`import evaluate` takes seconds, so the `evaluate.Metric` subclasses (`Accuracy`, `Precision`, `Recall`, `F1`,
`PerClassReport`, `ConfusionMatrix`) are only defined on first use; `hftl.metrics.F1` etc. still work (PEP 562).
"""

from __future__ import annotations

import functools
import os
import types
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "classification_report", "combined_metrics", "logits_to_predictions", "make_compute_metrics", "prediction_records",
]

_METRIC_CLASS_NAMES = ("Accuracy", "Precision", "Recall", "F1", "PerClassReport", "ConfusionMatrix")
_AVERAGES = ("macro", "weighted", "micro")


def _check_average(average: str) -> str:
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {_AVERAGES}, got {average!r}")
    return average


@functools.lru_cache(maxsize=None)
def _metric_classes() -> types.SimpleNamespace:
    import datasets
    import evaluate
    import numpy as np
    from sklearn import metrics as skm

    features = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})

    class _SklearnMetric(evaluate.Metric):
        """Base class: `labels` and `average` given here are defaults that `compute(...)` kwargs override."""

        def __init__(self, labels: Sequence[int] | None = None, average: str = "macro", **kwargs):
            self.labels = None if labels is None else [int(label) for label in labels]
            self.average = _check_average(average)
            # In-memory Arrow buffer: nothing is written to the HF metrics cache and no file locks are taken.
            kwargs.setdefault("keep_in_memory", True)
            super().__init__(**kwargs)

        def _info(self):
            return evaluate.MetricInfo(
                description=self.__doc__ or "", citation="", features=features, format="numpy",
                inputs_description="predictions, references: integer class ids; labels: all class ids.",
            )

        def _build_data_dir(self):
            # The base class runs os.makedirs(~/.cache/huggingface/metrics/...) even when keep_in_memory=True.
            path = os.path.join(self._data_dir_root, self.name, self.config_name)
            return path if self.keep_in_memory else super()._build_data_dir()

        def _labels(self, labels):
            return self.labels if labels is None else [int(label) for label in labels]

    # Every `_compute` takes **kwargs: `evaluate.combine` forwards all compute kwargs to every module.
    class Accuracy(_SklearnMetric):
        """Fraction of predictions equal to the references."""

        def _compute(self, predictions, references, **kwargs):
            return {"accuracy": float(skm.accuracy_score(references, predictions))}

    class _AveragedMetric(_SklearnMetric):
        _score_fn: staticmethod  # a scikit-learn `*_score` function
        _key: str

        def _compute(self, predictions, references, labels=None, average=None, **kwargs):
            average = self.average if average is None else _check_average(average)
            score = self._score_fn(references, predictions, labels=self._labels(labels), average=average, zero_division=0)
            # One key per average, so combined macro + weighted modules never trigger combine's collision renaming.
            return {self._key if average == "macro" else f"{self._key}_{average}": float(score)}

    class Precision(_AveragedMetric):
        """Precision averaged over `labels`; a never-predicted class scores 0."""

        _score_fn, _key = staticmethod(skm.precision_score), "precision"

    class Recall(_AveragedMetric):
        """Recall averaged over `labels`; a class without references scores 0."""

        _score_fn, _key = staticmethod(skm.recall_score), "recall"

    class F1(_AveragedMetric):
        """F1 averaged over `labels`; 0 where precision and recall are both 0."""

        _score_fn, _key = staticmethod(skm.f1_score), "f1"

    class PerClassReport(_SklearnMetric):
        """Precision, recall, F1 and support for each class id in `labels`."""

        def _compute(self, predictions, references, labels=None, **kwargs):
            labels = self._labels(labels) or np.union1d(predictions, references).tolist()
            p, r, f, s = skm.precision_recall_fscore_support(
                references, predictions, labels=labels, average=None, zero_division=0
            )
            scores = zip(labels, p.tolist(), r.tolist(), f.tolist(), s.tolist())
            return {"per_class": {c: {"precision": pc, "recall": rc, "f1": fc, "support": sc} for c, pc, rc, fc, sc in scores}}

    class ConfusionMatrix(_SklearnMetric):
        """Confusion matrix over `labels`: rows are true classes, columns predicted classes."""

        def _compute(self, predictions, references, labels=None, **kwargs):
            return {"confusion_matrix": skm.confusion_matrix(references, predictions, labels=self._labels(labels)).tolist()}

    return types.SimpleNamespace(**{name: obj for name, obj in locals().items() if name in _METRIC_CLASS_NAMES})


def __getattr__(name: str) -> Any:
    if name in _METRIC_CLASS_NAMES:
        return getattr(_metric_classes(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def combined_metrics(labels: Sequence[int], *, full: bool = True):
    """
    Build an `evaluate.CombinedEvaluations` over the hftl classification metrics.

    Args:
        labels (`Sequence[int]`): All class ids, so classes missing from the data still count in macro averages.
        full (`bool`, *optional*, defaults to `True`): Also compute weighted precision/recall, per-class scores and
            the confusion matrix; otherwise only accuracy, macro precision/recall/F1 and weighted F1.

    Returns:
        `evaluate.CombinedEvaluations`: use `add_batch(predictions=..., references=...)` and `compute()`.
    """
    import evaluate

    m, labels = _metric_classes(), list(labels)
    modules = {"accuracy": m.Accuracy(), "precision": m.Precision(labels), "recall": m.Recall(labels), "f1": m.F1(labels)}
    if full:
        modules["precision_weighted"] = m.Precision(labels, average="weighted")
        modules["recall_weighted"] = m.Recall(labels, average="weighted")
    modules["f1_weighted"] = m.F1(labels, average="weighted")
    if full:
        modules["per_class"] = m.PerClassReport(labels)
        modules["confusion_matrix"] = m.ConfusionMatrix(labels)
    return evaluate.combine(modules)


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
        `dict`: `accuracy`, macro `precision`/`recall`/`f1`, `precision_weighted`/`recall_weighted`/`f1_weighted`,
        `per_class` (`{name: {precision, recall, f1, support}}`), `confusion_matrix` (rows true, columns
        predicted, in `label_names` order) and `num_examples`.
    """
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"label_names must be unique, got {label_names}")
    predictions = _as_class_ids(predictions, len(label_names), "predictions")
    references = _as_class_ids(references, len(label_names), "references")
    if len(predictions) != len(references) or len(references) == 0:
        raise ValueError(f"Need as many predictions as references (> 0), got {len(predictions)} and {len(references)}")
    results = combined_metrics(range(len(label_names))).compute(predictions=predictions, references=references)
    results["per_class"] = {label_names[i]: scores for i, scores in results["per_class"].items()}
    results["num_examples"] = len(references)
    return results


def make_compute_metrics(label_names: list[str]) -> Callable[[Any], dict]:
    """
    Build a `compute_metrics` function for `transformers.Trainer`.

    Args:
        label_names (`list[str]`): `label_names[i]` is the name of class id `i`.

    Returns:
        `Callable[[EvalPrediction], dict[str, float]]`: maps `predictions` (logits) and `label_ids` to the scalars
        `accuracy`, `precision`, `recall`, `f1` (macro) and `f1_weighted`, which the Trainer can log.
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


def prediction_records(probabilities, label_names: Sequence[str]) -> list[dict]:
    """One {label, score, probabilities} dict per row of a (n, num_labels) probability tensor or array."""
    records = []
    for row in probabilities:
        scores = [float(p) for p in row]
        best = max(range(len(scores)), key=scores.__getitem__)
        records.append({"label": label_names[best], "score": scores[best],
                        "probabilities": dict(zip(label_names, scores))})
    return records
