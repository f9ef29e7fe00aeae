"""Calibration and decision thresholds, fitted on the validation split: temperature scaling, expected calibration
error, reliability bins, per-label thresholds; and two helpers for honest reports (seed aggregates, class weights).

Conventions: single-label `labels` are class ids of shape `(n,)` and probabilities have shape `(n, num_classes)`;
multi-label `labels` are 0/1 indicators of shape `(n, num_labels)`, like the probabilities. Where a function takes
no `multi_label` argument, the shape of `labels` says which. A label is predicted when its probability is `>=` its
threshold. Everything returns plain Python values (JSON-ready).
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "aggregate_seeds", "apply_temperature", "best_global_threshold", "class_weights_from_counts",
    "expected_calibration_error", "fit_temperature", "negative_log_likelihood", "reliability_bins",
    "tune_binary_threshold", "tune_thresholds",
]


# -- temperature scaling ------------------------------------------------------------------------------
def _logits_and_targets(logits, labels, multi_label: bool):
    import torch

    logits = torch.as_tensor(logits, dtype=torch.float64)
    labels = torch.as_tensor(labels)
    if multi_label:
        if logits.ndim != 2 or labels.shape != logits.shape:
            raise ValueError(f"multi_label: expected logits and 0/1 labels of one shape (n, num_labels), got "
                             f"{tuple(logits.shape)} and {tuple(labels.shape)}")
        return logits, labels.to(torch.float64)
    if logits.ndim != 2 or logits.shape[1] < 2 or labels.shape != logits.shape[:1]:
        hint = " (pass multi_label=True for indicator labels)" if labels.shape == logits.shape else ""
        raise ValueError(f"Expected logits (n, num_classes >= 2) and class ids (n,), got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}{hint}")
    return logits, labels.to(torch.long)


def fit_temperature(logits, labels, multi_label: bool = False, max_iter: int = 100) -> float:
    """
    Fit one temperature `T` that minimises the negative log-likelihood of `logits / T` (Guo et al., 2017).

    Fit it on the validation split, never on the test split. Dividing by `T` leaves every argmax unchanged, so
    accuracy is untouched; `T > 1` softens an over-confident model.

    Args:
        logits (`array-like` of shape `(n, num_labels)`): Validation logits.
        labels (`array-like`): Class ids `(n,)`, or 0/1 indicators `(n, num_labels)` when `multi_label`.
        multi_label (`bool`, *optional*, defaults to `False`): Sigmoid + binary cross-entropy instead of softmax +
            cross-entropy.
        max_iter (`int`, *optional*, defaults to 100): L-BFGS iterations.

    Returns:
        `float`: the temperature (> 0).
    """
    import torch
    import torch.nn.functional as F

    logits, targets = _logits_and_targets(logits, labels, multi_label)
    loss_fn = F.binary_cross_entropy_with_logits if multi_label else F.cross_entropy
    # Optimise log T: T stays positive without a constrained optimiser.
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def apply_temperature(logits, temperature: float = 1.0, multi_label: bool = False) -> np.ndarray:
    """Probabilities of `logits / temperature`: softmax over the last axis, or sigmoid when `multi_label`."""
    import numpy as np
    from scipy.special import expit, softmax

    scaled = np.asarray(logits, dtype=np.float64) / temperature
    return expit(scaled) if multi_label else softmax(scaled, axis=-1)


# -- calibration measures -----------------------------------------------------------------------------
def _confidence_and_outcome(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    """Single-label: top-label confidence and whether the top label is right. Multi-label: every cell."""
    import numpy as np

    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    if probabilities.ndim != 2 or len(probabilities) == 0:
        raise ValueError(f"probabilities must have shape (n > 0, num_labels), got {probabilities.shape}")
    if labels.shape == probabilities.shape:  # multi-label indicators
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("multi-label labels must be 0/1 indicators")
        return probabilities.ravel(), labels.ravel().astype(np.float64)
    if labels.shape != probabilities.shape[:1]:
        raise ValueError(f"labels must be class ids of shape ({len(probabilities)},) or indicators of shape "
                         f"{probabilities.shape}, got {labels.shape}")
    return probabilities.max(axis=1), (probabilities.argmax(axis=1) == labels).astype(np.float64)


def reliability_bins(probabilities, labels, bins: int = 15) -> list[dict]:
    """
    The points of a reliability diagram: equal-width confidence bins `(lower, upper]` (the first also holds 0).

    Args:
        probabilities (`array-like` of shape `(n, num_labels)`): Predicted probabilities.
        labels (`array-like`): Class ids `(n,)` (top-label confidence against accuracy) or 0/1 indicators
            `(n, num_labels)` (every probability against the frequency of its label).
        bins (`int`, *optional*, defaults to 15): Number of bins on [0, 1].

    Returns:
        `list[dict]`: one `{lower, upper, confidence, accuracy, count}` per bin; `confidence` (mean probability)
        and `accuracy` (fraction right, or of positives) are None for an empty bin.
    """
    import numpy as np

    confidence, outcome = _confidence_and_outcome(probabilities, labels)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    right_sum = np.bincount(index, weights=outcome, minlength=bins)
    return [{"lower": b / bins, "upper": (b + 1) / bins, "count": int(counts[b]),
             "confidence": float(conf_sum[b] / counts[b]) if counts[b] else None,
             "accuracy": float(right_sum[b] / counts[b]) if counts[b] else None} for b in range(bins)]


def expected_calibration_error(probabilities, labels, bins: int = 15) -> float:
    """
    Expected calibration error: the count-weighted mean of |accuracy - confidence| over `reliability_bins`.

    Single-label labels `(n,)` use the top-label confidence; multi-label indicators `(n, num_labels)` use every
    (example, label) probability.
    """
    rows = reliability_bins(probabilities, labels, bins)
    total = sum(row["count"] for row in rows)
    return float(sum(row["count"] * abs(row["accuracy"] - row["confidence"]) for row in rows if row["count"]) / total)


def negative_log_likelihood(probabilities, labels, eps: float = 1e-12) -> float:
    """
    Mean negative log-likelihood of the labels (lower is better); probabilities are clipped to `[eps, 1 - eps]`.

    Single-label: `-log p[label]` per example. Multi-label (indicators): binary cross-entropy averaged over every
    (example, label) cell, as `BCEWithLogitsLoss` does.
    """
    import numpy as np

    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    _confidence_and_outcome(probabilities, labels)  # shape checks
    p = np.clip(probabilities, eps, 1 - eps)
    if labels.shape == probabilities.shape:
        return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    return float(-np.mean(np.log(p[np.arange(len(labels)), labels.astype(np.int64)])))


# -- decision thresholds ------------------------------------------------------------------------------
def _best_f1_threshold(p: np.ndarray, y: np.ndarray, floor: float, default: float) -> float:
    """The threshold in max(observed, floor) maximising F1 of `p >= t`, never predicting every example."""
    import numpy as np

    order = np.sort(p)
    positives_at_or_above = np.concatenate([np.cumsum(y[np.argsort(p, kind="stable")][::-1])[::-1], [0]])
    # Candidates above the smallest probability, so at least that example is not predicted.
    candidates = np.unique(np.maximum(p, floor))
    candidates = candidates[candidates > order[0]]
    chosen = None
    if len(candidates) and y.any():
        first = np.searchsorted(order, candidates, side="left")  # index of the first p >= t
        predicted = len(p) - first
        true_positive = positives_at_or_above[first]
        f1 = 2 * true_positive / (predicted + y.sum())
        best = len(f1) - 1 - np.argmax(f1[::-1])  # ties: the highest threshold, fewest predictions
        chosen = float(candidates[best]) if f1[best] > 0 else None
    if chosen is None:  # nothing to learn from (no positive, or no threshold finds one): keep the default
        chosen = max(default, floor)
        if chosen <= order[0]:
            above = order[order > order[0]]
            chosen = float(above[0]) if len(above) else float(np.nextafter(order[-1], np.inf))
    return float(chosen)


def _indicator_inputs(probabilities, references) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    probabilities, references = np.asarray(probabilities, dtype=np.float64), np.asarray(references)
    if probabilities.ndim != 2 or references.shape != probabilities.shape or not len(probabilities):
        raise ValueError(f"Expected probabilities and 0/1 references of one shape (n > 0, num_labels), got "
                         f"{probabilities.shape} and {references.shape}")
    if not np.isin(references, (0, 1)).all():
        raise ValueError("references must be 0/1 indicators")
    return probabilities, references.astype(np.int64)


def tune_thresholds(probabilities, references, floor: float = 0.05, default: float = 0.5) -> list[float]:
    """
    Per label, the threshold that maximises that label's F1 on the validation split.

    The search runs over the observed probabilities (raised to `floor`); ties go to the highest threshold. A label
    is never given a threshold that predicts it for every validation example, nor one below `floor`. A label with no
    positive example, or for which no threshold finds one, keeps `default` (within the same limits).

    Args:
        probabilities (`array-like` of shape `(n, num_labels)`): Validation probabilities (sigmoid outputs).
        references (`array-like` of shape `(n, num_labels)`): 0/1 indicators.
        floor (`float`, *optional*, defaults to 0.05): Lowest threshold allowed.
        default (`float`, *optional*, defaults to 0.5): Threshold for labels the data cannot tune.

    Returns:
        `list[float]`: one threshold per label, for `Decisions.thresholds`.
    """
    probabilities, references = _indicator_inputs(probabilities, references)
    return [_best_f1_threshold(probabilities[:, j], references[:, j], floor, default)
            for j in range(probabilities.shape[1])]


def best_global_threshold(probabilities, references, floor: float = 0.05, default: float = 0.5) -> float:
    """One threshold for every label, maximising micro-F1 on the validation split (same rules as
    `tune_thresholds`, over all cells: never below `floor`, never predicting every label of every example)."""
    probabilities, references = _indicator_inputs(probabilities, references)
    return _best_f1_threshold(probabilities.ravel(), references.ravel(), floor, default)


def tune_binary_threshold(probabilities_of_positive, labels, floor: float = 0.05, default: float = 0.5) -> float:
    """
    The probability of the positive class (id 1) above which a binary classifier should answer positive: the
    one maximising the positive class's F1 on the validation split (same rules as `tune_thresholds`).

    Args:
        probabilities_of_positive (`array-like` of shape `(n,)`): `softmax(logits)[:, 1]` on the validation split.
        labels (`array-like` of shape `(n,)`): 0/1 class ids.
    """
    import numpy as np

    p, labels = np.asarray(probabilities_of_positive, dtype=np.float64), np.asarray(labels)
    if p.ndim != 1 or labels.shape != p.shape or not len(p) or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"Expected probabilities (n,) and 0/1 labels (n,), got {p.shape} and {labels.shape}")
    return _best_f1_threshold(p, labels.astype(np.int64), floor, default)


# -- across runs --------------------------------------------------------------------------------------
def _numeric_leaves(values: dict, prefix: str = ""):
    """(dotted key, float) for every finite number in nested dicts; booleans, None, NaN, lists, strings skipped."""
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _numeric_leaves(value, f"{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            yield name, float(value)


def aggregate_seeds(runs: Sequence[dict]) -> dict:
    """
    Mean and sample standard deviation of every metric over runs that differ only in their seed.

    Args:
        runs (`Sequence[dict]`): one `metrics.json`-like dict per run, `{split: {metric: value, ...}}`. Nested
            dicts are followed (`per_class.neg.f1`); non-numeric values, NaN and top-level non-dicts are dropped.

    Returns:
        `dict`: `{split: {metric: {"mean": m, "std": s, "n": k}}}`, `k` the number of runs holding the metric, `s`
        None when `k < 2`.
    """
    collected: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for split, values in run.items():
            if isinstance(values, dict):
                for key, value in _numeric_leaves(values):
                    collected.setdefault(split, {}).setdefault(key, []).append(value)
    return {split: {key: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else None,
                          "n": len(v)} for key, v in values.items()} for split, values in collected.items()}


# -- class imbalance ----------------------------------------------------------------------------------
def class_weights_from_counts(counts: Sequence[int], mode: str = "auto", num_examples: int | None = None
                              ) -> list[float]:
    """
    Loss weights from training-set label counts.

    Args:
        counts (`Sequence[int]`): Examples per class (single-label) or positives per label (multi-label).
        mode (`str`, *optional*, defaults to `"auto"`):
            - `"auto"`: `N / (C * count)` over the `C` classes present, the inverse frequency normalised so the
              weights average 1 over the training examples (scikit-learn's "balanced"), for `CrossEntropyLoss(weight=)`.
            - `"pos_weight"`: negatives / positives per label, for `BCEWithLogitsLoss(pos_weight=)`.
        num_examples (`int`, *optional*): Number of training examples; required for `"pos_weight"`.

    Returns:
        `list[float]`: one weight per class or label. A class with no example, or a label with no positive or no
        negative example, gets 1 (there is nothing to rebalance).
    """
    counts = [int(c) for c in counts]
    if not counts or min(counts) < 0 or not any(counts):
        raise ValueError(f"counts must be non-negative with at least one non-zero, got {counts}")
    if mode == "auto":
        total, present = sum(counts), sum(1 for c in counts if c)
        return [total / (present * c) if c else 1.0 for c in counts]
    if mode == "pos_weight":
        if num_examples is None or num_examples < max(counts):
            raise ValueError(f"pos_weight needs num_examples >= every positive count, got {num_examples}")
        return [(num_examples - c) / c if 0 < c < num_examples else 1.0 for c in counts]
    raise ValueError(f"mode must be 'auto' or 'pos_weight', got {mode!r}")
