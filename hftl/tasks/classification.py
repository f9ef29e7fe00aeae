"""What every classification task shares (text and image today): a label map built from the training labels, a
head sized to it, metrics through `hftl.metrics` with an exact loss, `labels.json`, and predictions with class
probabilities. A classification task declares its data and implements the data hooks and `encode_inputs`.

Three problem types (transformers' own `config.problem_type`, a data setting here):

* `single_label_classification`: one class per row (softmax, cross-entropy);
* `multi_label_classification`: a set of labels per row, a JSON list or a string split on `data.label_separator`
  (sigmoid, binary cross-entropy), with per-label decision thresholds tuned on validation;
* `regression`: one number per row (one output, mean squared error).

After training, a temperature is fitted on the validation logits (`data.calibration`) and decision thresholds are
tuned there (`data.threshold`); both are saved in the run folder (`RunDir.write_calibration`) and applied by
`hftl predict` / `hftl evaluate`. Which metrics the summary and the card show depends on the problem type: the
declaration attributes are properties of the instance.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from typing import Literal

from hftl.config.parse import field
from hftl.config.schema import DataConfig
from hftl.data.labels import LabelMap
from hftl.decisions import MULTI, REGRESSION, SINGLE, Decisions, regression_scores
from hftl.precision import FLOAT32, autocast_for
from hftl.errors import ConfigError, DataError
from hftl.metrics import make_compute_metrics, make_multilabel_compute_metrics, make_regression_compute_metrics
from hftl.modeling import load_pretrained_model, read_model_config
from hftl.recipe import Evaluation, PreparedData, Recipe
from hftl.tasks.classification_evaluation import chance_scores, error_rows, split_report

logger = logging.getLogger(__name__)

PROBLEM_TYPES = (SINGLE, MULTI, REGRESSION)
RELIABILITY_PNG = "reliability_diagram.png"
SCATTER_PNG = "regression_scatter.png"


# -- the data settings every classification task shares ---------------------------------------------------
@dataclass
class ClassificationData(DataConfig):
    """`data` settings of every classification task: class weights, calibration, decision thresholds."""

    class_weights: str | dict[str, float] = field(
        "none", help="loss weights per class: 'none', 'auto' (inverse frequency in train, normalised; multi-label: "
        "negatives/positives per label as pos_weight) or a mapping label -> weight (unlisted labels weigh 1)"
    )
    calibration: Literal["auto", "temperature", "none"] = field(
        "auto", help="fit a temperature on the validation logits after training (applied by predict and evaluate); "
        "'auto' = temperature for classification, none for regression"
    )
    threshold: Literal["auto", "tuned"] | float = field(
        "auto", help="decision threshold: 'auto' = per-label thresholds tuned on validation for multi-label, argmax "
        "for single-label (the tuned binary threshold is reported beside it); 'tuned' also applies the tuned one to "
        "binary tasks; a number in (0, 1) is one fixed threshold (multi-label, or the positive class of binary tasks)"
    )

    positive_label: str | None = field(
        None, help="binary tasks: the class that is 'positive' (scikit-learn's pos_label): the one a decision "
        "threshold and the positive-class F1 are about; null = the second label in sorted order (e.g. 'pos' of "
        "neg/pos, 'stay' of churn/stay: name it when that is not the class you care about)"
    )

    def check(self) -> list[str]:
        problems, weights = [], self.class_weights
        if isinstance(weights, str) and weights not in ("auto", "none"):
            problems.append(f"class_weights: expected 'auto', 'none' or a mapping label -> weight, got {weights!r}.")
        elif isinstance(weights, dict):
            bad = {k: v for k, v in weights.items()
                   if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0}
            if not weights or bad:
                problems.append(f"class_weights: every weight must be a positive number, got {bad or weights}. "
                                "Example: class_weights: {neg: 1.0, pos: 4.0}.")
        if isinstance(self.threshold, float) and not 0.0 < self.threshold < 1.0:
            problems.append(f"threshold: a fixed threshold must be between 0 and 1, got {self.threshold}.")
        problem = self.declared_problem_type()
        if problem == REGRESSION:
            used = [f"{name}: {value!r}" for name, value, default in (
                ("class_weights", weights, "none"), ("threshold", self.threshold, "auto"),
                ("calibration", self.calibration, "auto")) if value not in (default, "none")]
            if used:
                problems.append(f"problem_type: regression has no classes, so {', '.join(used)} cannot apply. "
                                "Remove them, or choose a classification problem_type.")
        return problems

    def declared_problem_type(self) -> str:
        """The problem type the config names ('auto' until the data says)."""
        return SINGLE


# -- label cells ----------------------------------------------------------------------------------------
def is_label_list(value) -> bool:
    """A cell holding several labels: a list, or a string written as a JSON list."""
    return isinstance(value, (list, tuple)) or (isinstance(value, str) and value.lstrip().startswith("["))


def as_number(value) -> float | None:
    """`value` as a finite float if it is a number or a numeric string (CSV cells before typing), else None."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def detect_problem_type(values, separator: str | None) -> tuple[str, str]:
    """(problem type, why) of training label `values`: label lists or a separator mean multi-label, numbers
    that are not all whole mean regression, anything else single-label."""
    values = list(values)
    if separator:
        return MULTI, f"data.label_separator is {separator!r}"
    if any(is_label_list(v) for v in values):
        return MULTI, "label cells hold lists of labels"
    numbers = [as_number(v) for v in values]
    if values and None not in numbers and any(n != int(n) for n in numbers):
        return REGRESSION, "the labels are numbers, not all whole"
    return SINGLE, "one class name or id per row"


def label_set(value, separator: str | None, where: str) -> list[str]:
    """The labels of one multi-label cell: a list, a JSON list string, or a string split on `separator`."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: label cell {value!r} is not a valid JSON list ({err.msg}). "
                            'Write it as ["a", "b"], or use data.label_separator.') from None
        if not isinstance(value, list):
            raise DataError(f"{where}: label cell {value!r} is not a JSON list.")
    if isinstance(value, (list, tuple)):
        names = [str(v).strip() for v in value]
    elif value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: the label cell is empty. Write [] for a row with no label, or drop the row.")
    elif isinstance(value, str) and separator:
        names = [part.strip() for part in value.split(separator)]
    else:
        names = [str(value).strip()]
    if any(not name for name in names):
        raise DataError(f"{where}: label cell {value!r} holds an empty label name.")
    return list(dict.fromkeys(names))


def target_value(value, where: str) -> float:
    """One regression target: a finite number (a numeric string is accepted)."""
    import math

    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise DataError(f"{where}: the target {value!r} is not a number. problem_type regression needs one finite "
                        "number per row; fix the cell or drop the row.")
    return number


def score_range_problems(score_range, problem: str) -> list[str]:
    """`data.score_range` only for regression (`problem` may still be 'auto'), as [low, high] with low < high."""
    if score_range is None:
        return []
    if problem not in (REGRESSION, "auto"):
        return [f"data.score_range applies to regression, not {problem}. Remove it, or set data.problem_type: "
                "regression."]
    if len(score_range) != 2 or not score_range[0] < score_range[1]:
        return [f"data.score_range: expected [low, high] with low < high, got {score_range}. Example: [0, 5]."]
    return []


def outside_score_range(values, score_range) -> list[int]:
    """Indices of the regression targets in `values` that lie outside `score_range`."""
    low, high = score_range
    return [i for i, v in enumerate(values) if not low <= float(v) <= high]


def label_option_problems(names: list[str] | None, data, problem: str) -> list[str]:
    """What `data.class_weights` and `data.threshold` ask that the training labels `names` (None: regression or
    unknown) cannot give: a weight for a label train lacks, a threshold on a task of more than two classes."""
    if names is None:
        return []
    problems = []
    weights = data.class_weights
    if isinstance(weights, dict):
        problems += unknown_weight_labels(weights, names)
    threshold = data.threshold
    if problem != MULTI and threshold != "auto" and len(names) > 2:
        problems.append(threshold_problem(threshold, len(names)))
    problems += positive_label_problems(getattr(data, "positive_label", None), names, problem)
    return problems


def positive_label_problems(positive, names, problem: str) -> list[str]:
    """`data.positive_label` names one of the two classes of a binary single-label task."""
    if positive is None:
        return []
    if problem != SINGLE or len(names) != 2:
        kind = problem if problem != SINGLE else f"a task of {len(names)} classes"
        return [f"data.positive_label: applies to binary tasks (two classes), not {kind}. Remove it."]
    if str(positive) not in names:
        return [f"data.positive_label: {positive!r} is not a label of the training data. Labels: {', '.join(names)}."]
    return []


def unknown_weight_labels(weights: dict, names, where: str = "data.class_weights") -> list[str]:
    unknown = sorted(set(map(str, weights)) - set(names))
    if not unknown:
        return []
    return [f"{where}: label(s) {', '.join(map(repr, unknown))} do not occur in the training data. "
            f"Labels: {', '.join(names)}."]


def threshold_problem(threshold, num_classes: int) -> str:
    return (f"data.threshold: {threshold!r} applies to binary or multi-label tasks; this one has {num_classes} "
            "classes, where the prediction is the most probable class. Remove it.")


def class_weight_list(setting, labels: LabelMap, train_ids, multi_label: bool, where: str = "data.class_weights"
                      ) -> list[float] | None:
    """The loss weights of `setting` ('none', 'auto' or {label: weight}) for the training labels `train_ids`
    (class ids, or indicator rows when `multi_label`); None for 'none'."""
    import numpy as np

    from hftl.calibration import class_weights_from_counts

    if setting == "none":
        return None
    if isinstance(setting, dict):
        unknown = unknown_weight_labels(setting, labels.names, where)
        if unknown:
            raise ConfigError(unknown)
        chosen = {str(k): float(v) for k, v in setting.items()}
        return [chosen.get(name, 1.0) for name in labels.names]
    ids = np.asarray(train_ids)
    if multi_label:
        return class_weights_from_counts(ids.sum(axis=0).astype(int).tolist(), "pos_weight", num_examples=len(ids))
    return class_weights_from_counts(np.bincount(ids, minlength=len(labels)).tolist(), "auto")


class WeightedLoss:
    """A `compute_loss_func` for `transformers.Trainer`: cross-entropy with class weights, or binary cross-entropy
    with `pos_weight` (multi-label).

    The weighted per-example (per-cell) losses are summed and divided by `num_items_in_batch` when the Trainer
    passes it (the labelled items of the whole accumulated batch, across processes: gradient accumulation and
    data parallelism stay exact), else by their number.

    Args:
        weights (`list[float]`): one weight per class (single-label) or per label (multi-label `pos_weight`).
        multi_label (`bool`): binary cross-entropy on indicator labels.
    """

    def __init__(self, weights: list[float], multi_label: bool):
        self.weights, self.multi_label = list(weights), multi_label

    def __call__(self, outputs, labels, num_items_in_batch=None):
        import torch
        import torch.nn.functional as F

        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        weights = torch.tensor(self.weights, dtype=torch.float32, device=logits.device)
        if self.multi_label:
            per_item = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=weights,
                                                          reduction="none")
        else:
            per_item = F.cross_entropy(logits.float(), labels.long(), weight=weights, reduction="none")
        count = per_item.numel() if num_items_in_batch is None else num_items_in_batch
        return per_item.sum() / count


class BoundedScoreLoss:
    """A `compute_loss_func` for a regression on scores in [low, high] (`data.score_range`): binary cross-entropy
    of the one logit against (score - low) / (high - low), summed and divided by `num_items_in_batch` when the
    Trainer passes it (exact under gradient accumulation and data parallelism), else by the batch size."""

    def __init__(self, low: float, high: float):
        self.low, self.high = float(low), float(high)

    def __call__(self, outputs, labels, num_items_in_batch=None):
        import torch.nn.functional as F

        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        unit = (labels.float() - self.low) / (self.high - self.low)
        per_item = F.binary_cross_entropy_with_logits(logits.float().view(-1), unit.view(-1), reduction="none")
        count = per_item.numel() if num_items_in_batch is None else num_items_in_batch
        return per_item.sum() / count


# -- the recipe -------------------------------------------------------------------------------------------
_OPTION_DEFAULTS = {"class_weights": "none", "calibration": "auto", "threshold": "auto", "score_range": None,
                    "positive_label": None}
_DECLARATIONS = {
    SINGLE: {
        "summary": ("accuracy", "balanced_accuracy", "precision", "recall", "f1"),
        "card": ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "f1_weighted", "matthews_correlation",
                 "loss", "ece_before", "ece_after"),
        "index": {
            "accuracy": ("accuracy", "Accuracy", None),
            "f1": ("f1", "F1 (macro)", {"average": "macro"}),
            "precision": ("precision", "Precision (macro)", {"average": "macro"}),
            "recall": ("recall", "Recall (macro)", {"average": "macro"}),
        },
        "curve": ("accuracy", "f1"),
        "best": "f1",
    },
    MULTI: {
        "summary": ("f1_macro", "f1_micro", "f1_samples", "subset_accuracy", "hamming_loss"),
        "card": ("f1_macro", "f1_micro", "f1_samples", "precision_macro", "recall_macro", "subset_accuracy",
                 "hamming_loss", "f1_macro_threshold_0_5", "f1_macro_best_single_threshold", "loss", "ece_before",
                 "ece_after"),
        "index": {
            "f1_macro": ("f1", "F1 (macro)", {"average": "macro"}),
            "f1_micro": ("f1", "F1 (micro)", {"average": "micro"}),
            "f1_samples": ("f1", "F1 (samples)", {"average": "samples"}),
            "subset_accuracy": ("accuracy", "Subset accuracy", None),
        },
        "curve": ("f1_macro", "f1_micro"),
        "best": "f1_macro",
    },
    REGRESSION: {
        "summary": ("pearson", "spearman", "mse", "mae", "r2"),
        "card": ("pearson", "spearman", "mse", "mae", "r2"),
        "index": {
            "pearson": ("pearsonr", "Pearson correlation", None),
            "spearman": ("spearmanr", "Spearman correlation", None),
            "mse": ("mse", "Mean squared error", None),
        },
        "curve": ("pearson", "spearman"),
        "best": "loss",
    },
}


class ClassificationRecipe(Recipe):
    """Base of the classification recipes (not a task itself: it registers nothing)."""

    # -- the declaration, by problem type ---------------------------------------------------------
    def __init__(self, config, overrides=()):
        super().__init__(config, overrides)
        if self._declared_problem_type() == "auto":  # a RunConfig that did not come through preflight's load_config
            import copy

            self.config = copy.deepcopy(self.config)  # the caller's object is not ours to change
            problems = type(self).resolve_config(self.config)
            if problems:
                raise ConfigError(problems)

    def _declared_problem_type(self) -> str:
        declared = getattr(self.config.data, "declared_problem_type", None)  # a data class without the options
        return declared() if declared else SINGLE

    @property
    def problem_type(self) -> str:
        """The run's problem type, final from preflight on (`resolve_config` decides 'auto' from the training
        labels). Single-label only while 'auto' could not be decided because the data is unreadable: `load_data`
        then refuses to run."""
        value = self._declared_problem_type()
        return SINGLE if value == "auto" else value

    def option(self, name: str):
        """A `ClassificationData` setting, or its default for a task whose data class does not have it."""
        return getattr(self.config.data, name, _OPTION_DEFAULTS[name])

    @property
    def summary_metrics(self) -> tuple[str, ...]:
        return _DECLARATIONS[self.problem_type]["summary"]

    @property
    def card_metrics(self) -> tuple[str, ...]:
        return _DECLARATIONS[self.problem_type]["card"]

    @property
    def index_metrics(self) -> dict:
        return _DECLARATIONS[self.problem_type]["index"]

    @property
    def curve_metrics(self) -> tuple[str, ...]:
        return _DECLARATIONS[self.problem_type]["curve"]

    def training_defaults(self) -> dict:
        """With early stopping or `load_best_model_at_end`, the metric they judge by: macro-F1, or the loss for
        regression (set only then: the Trainer looks the metric up at every evaluation once it is named)."""
        training = self.config.training
        if training.get("early_stopping_patience") or training.get("load_best_model_at_end"):
            return {"metric_for_best_model": _DECLARATIONS[self.problem_type]["best"]}
        return {}

    # -- labels -----------------------------------------------------------------------------------
    def with_label_ids(self, dataset, labels: LabelMap | None, values, source: str, keep: list[str]):
        """`dataset` reduced to the `keep` columns plus `labels`: class ids, indicator rows (multi-label) or
        numbers (regression) of `values`; a bad cell (unknown label, not a number) names its row."""
        import datasets

        dataset = dataset.select_columns(keep)
        problem = self.problem_type
        if problem == SINGLE:
            bad = next((row for row, v in enumerate(values, start=1) if is_label_list(v)), None)
            if bad is not None:
                raise DataError(f"{source}, row {bad}: label cell {values[bad - 1]!r} holds several labels, but "
                                "data.problem_type is single_label_classification. Set data.problem_type: "
                                "multi_label_classification (or auto), or fix the row.")
            return dataset.add_column("labels", labels.encode(values, source))
        if problem == REGRESSION:
            targets = [target_value(v, f"{source}, row {row}") for row, v in enumerate(values, start=1)]
            return dataset.add_column("labels", targets, feature=datasets.Value("float32"))
        rows = self.indicator_rows(values, labels, source)
        return dataset.add_column("labels", rows, feature=datasets.Sequence(datasets.Value("float32")))

    def label_sets(self, values, source: str) -> list[list[str]]:
        separator = getattr(self.config.data, "label_separator", None)
        return [label_set(v, separator, f"{source}, row {row}") for row, v in enumerate(values, start=1)]

    def indicator_rows(self, values, labels: LabelMap, source: str) -> list[list[float]]:
        index, rows = labels.label2id, []
        for row, names in enumerate(self.label_sets(values, source), start=1):
            unknown = [n for n in names if n not in index]
            if unknown:
                raise DataError(f"{source}, row {row}: label(s) {', '.join(map(repr, unknown))} do not occur in the "
                                f"training data (known labels: {', '.join(labels.names)}). Fix the row, or add "
                                "examples of them to train.")
            indicators = [0.0] * len(labels)
            for name in names:
                indicators[index[name]] = 1.0
            rows.append(indicators)
        return rows

    def encode_splits(self, splits: dict, values: dict, sources: dict, keep: list[str]) -> tuple[dict, LabelMap]:
        """The label map of the training labels (None for regression), and every split with its `labels` column
        (see `with_label_ids`)."""
        problem = self.problem_type
        labels = None
        if problem == SINGLE:
            labels = LabelMap.from_values(values["train"], source=sources["train"])
        elif problem == MULTI:
            names = {n for cell in self.label_sets(values["train"], sources["train"]) for n in cell}
            labels = LabelMap.from_values(names, source=sources["train"])
        self.check_threshold_setting(labels)
        return {name: self.with_label_ids(dataset, labels, values[name], sources[name], keep)
                for name, dataset in splits.items()}, labels

    def check_threshold_setting(self, labels: LabelMap | None) -> None:
        """The threshold and positive label settings against the labels read (data `hftl validate` could not)."""
        threshold = self.option("threshold")
        problems = []
        if self.problem_type == SINGLE and threshold != "auto" and len(labels) != 2:
            problems.append(threshold_problem(threshold, len(labels)))
        if labels is not None:
            problems += positive_label_problems(self.option("positive_label"), list(labels.names), self.problem_type)
        if problems:
            raise ConfigError(problems)

    # -- model ------------------------------------------------------------------------------------
    def load_model(self, processor, labels: LabelMap | None):
        import transformers

        source_config, _ = read_model_config(self.config.model)
        problem = self.problem_type
        if problem == REGRESSION:
            head = {"num_labels": 1}
        else:
            head = {"num_labels": len(labels), "id2label": labels.id2label, "label2id": labels.label2id}
        # transformers' own problem_type: it picks the loss, and `pipeline()` the output function (saved in config.json)
        model, new = load_pretrained_model(
            getattr(transformers, self.auto_model_class), self.config.model, problem_type=problem,
            ignore_mismatched_sizes=True, **head,
        )
        if labels is not None:
            new |= self._reset_foreign_head(model, source_config, labels)
        self.adapt_model(model, processor)
        return model, new

    def _reset_foreign_head(self, model, source_config, labels: LabelMap) -> set[str]:
        """Start afresh a head the checkpoint trained on other classes of the same number (its shapes match, so
        `from_pretrained` kept it, but its weights mean the source task's classes); returns its parameter names."""
        id2label = getattr(source_config, "id2label", None) or {}
        old_names = [str(id2label[i]) for i in sorted(id2label)]
        trained_head = old_names and not all(n == f"LABEL_{i}" for i, n in enumerate(old_names))
        if not trained_head or old_names == list(labels.names) or len(old_names) != len(labels):
            return set()
        reset = set()
        children = dict(model.named_children())
        for name in self.head_modules:
            if name in children:
                for module in children[name].modules():
                    if hasattr(module, "reset_parameters"):
                        module.reset_parameters()
                reset |= {f"{name}.{p}" for p, _ in children[name].named_parameters()}
        logger.info("the checkpoint's head was trained on other classes (%s...): re-initialised", old_names[:3])
        return reset

    def adapt_model(self, model, processor) -> None:
        """Task-specific fixes to a freshly loaded model (e.g. the pad token of decoders)."""

    def loss_function(self, train_dataset, labels: LabelMap | None):
        """The Trainer's `compute_loss_func`: a `BoundedScoreLoss` for a regression with `data.score_range`, a
        `WeightedLoss` when `data.class_weights` asks for one, else None (the model's own loss, chosen by its
        `problem_type`)."""
        score_range = self.option("score_range")
        if self.problem_type == REGRESSION and score_range:
            # `hftl validate` names the rows of local files; this catches data it could not read (Hub datasets)
            outside = outside_score_range(train_dataset["labels"], score_range)
            if outside:
                raise DataError(f"data.train: {len(outside)} training target(s) lie outside data.score_range "
                                f"{list(score_range)}, e.g. {float(train_dataset['labels'][outside[0]])}. Widen the "
                                "range, or fix the rows.")
            logger.info("scores bounded to %s: sigmoid output, binary cross-entropy", list(score_range))
            return BoundedScoreLoss(*score_range)
        setting = self.option("class_weights")
        if setting == "none" or labels is None:
            return None
        multi = self.problem_type == MULTI
        weights = class_weight_list(setting, labels, train_dataset["labels"], multi)
        logger.info("class weights (%s): %s", "pos_weight per label" if multi else "per class",
                    ", ".join(f"{n} {w:.3g}" for n, w in zip(labels.names, weights)))
        return WeightedLoss(weights, multi)

    # -- metrics ----------------------------------------------------------------------------------
    def compute_metrics(self, labels: LabelMap | None, dataset=None):
        if self.problem_type == REGRESSION:
            return make_regression_compute_metrics(functools.partial(regression_scores,
                                                                     score_range=self.option("score_range")))
        if self.problem_type == MULTI:
            names, decisions = list(labels.names), self.untuned_decisions(labels)  # 0.5 per label, as trained
            return make_multilabel_compute_metrics(names, lambda logits: decisions.decide(
                decisions.probabilities(logits), names))
        return make_compute_metrics(list(labels.names))

    def chance_scores(self, dataset, labels: LabelMap | None) -> dict | None:
        """`chance_scores` of the split: the most frequent class or a random guess (single-label), no label
        (multi-label), the mean (regression)."""
        if dataset is None or "labels" not in dataset.column_names:
            return None
        return chance_scores(dataset["labels"], list(labels.names) if labels is not None else None, self.problem_type)

    def evaluate_splits(self, trainer, datasets: dict, labels: LabelMap | None) -> Evaluation:
        """Validation first: reported with untuned decisions (out of sample), then the decisions are fitted on it
        (their in-sample figures kept apart, under `with_fitted_decisions`); test is reported with them. Logits
        are computed in `inference_precision` (the runner holds it), as `hftl evaluate` and `hftl predict` do."""
        names = list(labels.names) if labels is not None else None
        decisions = self.untuned_decisions(labels)
        metrics, errors = {}, []
        if "validation" in datasets:
            logits, label_ids = _split_logits(trainer, datasets["validation"])
            report = split_report(logits, label_ids, names, decisions)
            decisions = self.fit_decisions(logits, label_ids, labels)
            fitted = split_report(logits, label_ids, names, decisions)
            report["with_fitted_decisions"] = {
                "note": "in-sample: the decisions were fitted on this split",
                **{k: fitted[k] for k in (*self.summary_metrics, *self.card_metrics) if k in fitted}}
            weights = getattr(getattr(trainer, "compute_loss_func", None), "weights", None)
            if weights is not None:  # what the loss weighed, for the card
                report["class_weights"] = dict(zip(names, weights))
            metrics["validation"] = report
            errors += error_rows("validation", self.example_inputs(datasets["validation"], trainer.processing_class),
                                 logits, label_ids, names, decisions)
        if "test" in datasets:
            logits, label_ids = _split_logits(trainer, datasets["test"])
            metrics["test"] = split_report(logits, label_ids, names, decisions)
            errors += error_rows("test", self.example_inputs(datasets["test"], trainer.processing_class),
                                 logits, label_ids, names, decisions)
        return Evaluation(metrics, decisions, errors)

    def evaluate_split(self, trainer, name: str, dataset, labels: LabelMap | None, decisions: Decisions | None = None
                       ) -> dict:
        """The report of one split with `decisions` (default: untuned), e.g. a finished run's on new data."""
        logits, label_ids = _split_logits(trainer, dataset)
        names = list(labels.names) if labels is not None else None
        return split_report(logits, label_ids, names, decisions or self.untuned_decisions(labels))

    def evaluate_trained(self, model, processor, labels, source=None, decisions: Decisions | None = None) -> dict:
        """`Recipe.evaluate_trained` in the precision the run's decisions were fitted in."""
        decisions = decisions or self.untuned_decisions(labels)
        with autocast_for(model, decisions.inference_precision):
            return super().evaluate_trained(model, processor, labels, source, decisions)

    def untuned_decisions(self, labels: LabelMap | None) -> Decisions:
        return Decisions.untuned(self.problem_type, labels.names if labels is not None else None,
                                 self.option("positive_label"), self.option("score_range"), self.inference_precision())

    def fit_decisions(self, logits, label_ids, labels: LabelMap | None) -> Decisions:
        """Temperature (L-BFGS on the validation NLL) and decision thresholds, fitted on validation logits."""
        decisions = Decisions.fit(
            logits, label_ids, labels.names if labels is not None else None, self.problem_type,
            calibration=self.option("calibration"), threshold=self.option("threshold"),
            positive_label=self.option("positive_label"), score_range=self.option("score_range"),
            precision=self.inference_precision())
        if decisions.temperature is not None:
            logger.info("temperature fitted on validation: %.4f", decisions.temperature)
        return decisions

    def example_inputs(self, dataset, processor) -> list:
        """What error analysis shows of each example of a preprocessed split (default: nothing but its row)."""
        return [None] * len(dataset)

    def load_decisions(self, run, model=None) -> Decisions:
        """The run's `calibration.json`; untuned decisions of the model's problem type where it has none."""
        default = getattr(getattr(model, "config", None), "problem_type", None) or self.problem_type
        return Decisions.load(run, default)


    # -- card -------------------------------------------------------------------------------------
    def card_figures(self, metrics: dict, folder) -> dict:
        """Figures of the test (else validation) split: the reliability diagram (calibrated runs) or the
        predicted-vs-true scatter (regression); returns {name: file} for the card."""
        from pathlib import Path

        from hftl.plots import plot_regression_scatter, plot_reliability_diagram

        split = "test" if "test" in metrics else "validation"
        report, figures = metrics.get(split) or {}, {}
        if report.get("reliability"):
            bins = report["reliability"]
            title = f"{split}: ECE {report['ece_before']:.3f} before, {report['ece_after']:.3f} after"
            plot_reliability_diagram(bins["before"], bins["after"], Path(folder) / RELIABILITY_PNG, title)
            figures["reliability"] = RELIABILITY_PNG
        if report.get("points"):
            points = report["points"]
            title = f"{split}: Pearson {report.get('pearson') or float('nan'):.3f}"
            plot_regression_scatter(points["predicted"], points["true"], Path(folder) / SCATTER_PNG, title)
            figures["scatter"] = SCATTER_PNG
        return figures

    # -- prediction -------------------------------------------------------------------------------
    def encode_inputs(self, processor, items: list, first_row: int):
        """The model inputs (a `BatchEncoding` / `BatchFeature` of tensors) of raw `items` (rows counted from 1 +
        `first_row` in error messages)."""
        raise NotImplementedError

    def predict_logits(self, model, processor, inputs: list, batch_size: int, precision: str = FLOAT32):
        """The logits of raw inputs, (len(inputs), num_labels) float32, in input order, computed in `precision`."""
        import numpy as np
        import torch

        chunks = []
        for start in range(0, len(inputs), batch_size):
            batch = self.encode_inputs(processor, inputs[start:start + batch_size], start).to(model.device)
            with torch.inference_mode(), autocast_for(model, precision):
                chunks.append(model(**batch).logits.float().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, model.config.num_labels), dtype=np.float32)

    def predict(self, model, processor, inputs: list, labels: LabelMap | None = None, batch_size: int = 64,
                decisions: Decisions | None = None, **kwargs) -> list[dict]:
        """One dict per input (see `Decisions.apply`), with the run's `decisions` (`load_decisions`; default:
        untuned), in their precision."""
        if decisions is None:
            problem = getattr(model.config, "problem_type", None) or self.problem_type
            decisions = Decisions.untuned(problem, labels.names if labels else None)
        logits = self.predict_logits(model, processor, inputs, batch_size, decisions.inference_precision)
        return decisions.apply(logits, labels.names if labels else None)


def _split_logits(trainer, dataset):
    """(logits, label ids) of a preprocessed split, from `Trainer.predict` (a tuple of outputs: the first)."""
    output = trainer.predict(dataset)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    return logits, output.label_ids


__all__ = ["ClassificationData", "ClassificationRecipe", "PreparedData", "WeightedLoss", "detect_problem_type",
           "label_set"]
