"""Token-classification metrics: seqeval's entity-level scores (an `evaluate.Metric`), the entity confusion
matrix, the report of whole sentences stitched from their windows (the final evaluation's, and every
evaluation's during training), and the error analysis (the sentences with the most entity errors)."""

from __future__ import annotations

import functools
import warnings

from hftl.tasks.token_classification.windows import IGNORE, stitch_windows

#: what the Trainer logs at each evaluation during training (the final report holds every metric)
TRAINING_METRICS = ("accuracy", "precision", "recall", "f1", "f1_macro")
#: sentences kept per split in the run's errors.jsonl, the most entity errors first
MAX_ERRORS = 20


@functools.lru_cache(maxsize=None)
def seqeval_metric_class():
    """`Seqeval`, an `evaluate.Metric` over IOB2 tag sequences computed by the `seqeval` package (strict mode).

    Defined on first use: `import evaluate` takes seconds. (evaluate's own `seqeval` module lives on the Hub.)
    """
    import datasets
    import evaluate

    from hftl.metrics import metric_cache_dir

    sequence = datasets.List(datasets.Value("string"))
    features = datasets.Features({"predictions": sequence, "references": sequence})

    class Seqeval(evaluate.Metric):
        """Entity-level precision, recall and F1 (micro over entities, macro over types), per type, and token accuracy.

        Entities are matched in seqeval's strict IOB2 mode: exact span and type; an I- without its B- begins nothing.
        """

        def __init__(self, **kwargs):
            # in memory: nothing written to the HF metrics cache, no file locks; the folder evaluate still creates
            # goes under `cache_dir` (public argument), a temporary one of this process
            kwargs.setdefault("keep_in_memory", True)
            kwargs.setdefault("cache_dir", metric_cache_dir())
            super().__init__(**kwargs)

        def _info(self):
            return evaluate.MetricInfo(description=self.__doc__ or "", citation="", features=features,
                                       inputs_description="predictions, references: one list of IOB2 tags a sentence.")

        def _compute(self, predictions, references, **kwargs):
            return seqeval_scores(list(map(list, predictions)), list(map(list, references)))

    return Seqeval


def seqeval_scores(predictions: list[list[str]], references: list[list[str]]) -> dict:
    """The scores of `Seqeval` (see there), computed directly."""
    from seqeval.metrics import accuracy_score, classification_report
    from seqeval.scheme import IOB2

    with warnings.catch_warnings():  # no entity on either side: numpy warns about the mean of no types
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(references, predictions, mode="strict", scheme=IOB2, output_dict=True,
                                       zero_division=0)
    micro, macro = report.pop("micro avg"), report.pop("macro avg")
    report.pop("weighted avg", None)
    per_type = {kind: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]),
                       "support": int(v["support"])} for kind, v in sorted(report.items())}
    macro = {k: float(macro[k]) if per_type else 0.0 for k in ("precision", "recall", "f1-score")}
    return {
        "precision": float(micro["precision"]), "recall": float(micro["recall"]), "f1": float(micro["f1-score"]),
        "precision_macro": macro["precision"], "recall_macro": macro["recall"], "f1_macro": macro["f1-score"],
        "accuracy": float(accuracy_score(references, predictions)), "per_type": per_type,
    }


def entity_confusion_matrix(predictions: list[list[str]], references: list[list[str]]) -> dict:
    """Entity types against each other, matched by exact span (strict IOB2), plus a `missed` column and a
    `spurious` row.

    Cell (true type, predicted type) counts true entities whose exact span was predicted with that type (the
    diagonal are the correct entities); `missed` counts true entities whose span no prediction has; `spurious`
    counts predicted spans that are no true entity's span.

    Returns:
        `dict`: `rows` (types + "spurious"), `columns` (types + "missed") and `matrix` (rows x columns counts).
    """
    from seqeval.scheme import IOB2, Entities

    true = {(e.sent_id, e.start, e.end): e.tag for s in Entities(references, IOB2).entities for e in s}
    pred = {(e.sent_id, e.start, e.end): e.tag for s in Entities(predictions, IOB2).entities for e in s}
    types = sorted(set(true.values()) | set(pred.values()))
    index = {t: i for i, t in enumerate(types)}
    n = len(types)
    matrix = [[0] * (n + 1) for _ in range(n + 1)]
    for span, kind in true.items():
        matrix[index[kind]][index[pred[span]] if span in pred else n] += 1
    for span, kind in pred.items():
        if span not in true:
            matrix[n][index[kind]] += 1
    return {"rows": types + ["spurious"], "columns": types + ["missed"], "matrix": matrix}


def token_classification_report(pred_tags: list[list[str]], true_tags: list[list[str]]) -> dict:
    """Every token-classification metric of word-level tag sequences, as plain JSON-serialisable values.

    Args:
        pred_tags (`list[list[str]]`): predicted IOB2 tags, one list per sentence.
        true_tags (`list[list[str]]`): true IOB2 tags, the same shape.

    Returns:
        `dict`: `precision`, `recall`, `f1` (entity-level, micro over entities), `precision_macro`,
        `recall_macro`, `f1_macro` (unweighted mean over types), `accuracy` (per word), `per_type`
        (`{type: {precision, recall, f1, support}}`), `entity_confusion_matrix` (see `entity_confusion_matrix`),
        `num_examples` (sentences), `num_words`, `num_entities` (true) and `num_predicted_entities`.
    """
    if len(pred_tags) != len(true_tags) or any(len(p) != len(t) for p, t in zip(pred_tags, true_tags)):
        raise ValueError("pred_tags and true_tags must hold the same number of sentences and of tags per sentence.")
    if not true_tags:
        raise ValueError("no sentences to evaluate.")
    metric = seqeval_metric_class()()
    report = metric.compute(predictions=pred_tags, references=true_tags)
    confusion = entity_confusion_matrix(pred_tags, true_tags)
    report["entity_confusion_matrix"] = confusion
    report["num_examples"] = len(true_tags)
    report["num_words"] = sum(len(t) for t in true_tags)
    report["num_entities"] = sum(map(sum, confusion["matrix"][:-1]))
    report["num_predicted_entities"] = sum(row[c] for row in confusion["matrix"] for c in range(len(row) - 1))
    return report



# -- whole sentences from windows ----------------------------------------------------------------------------
def _logits(predictions):
    return predictions[0] if isinstance(predictions, tuple) else predictions


def word_probabilities(logits, windows: dict) -> list[list]:
    """Per sentence, each word's probability vector (None for a word without sub-tokens), windows stitched.

    Args:
        logits: per window, per position, the label logits (the Trainer's predictions of a split).
        windows (`dict`): the split's bookkeeping (`hftl.tasks.token_classification.windows.sentence_windows`).
    """
    import numpy as np
    import torch

    probabilities = torch.as_tensor(np.asarray(_logits(logits)), dtype=torch.float32).softmax(-1).numpy()
    return stitch_windows(windows["word_ids"], windows["starts"], windows["doc"], probabilities,
                          windows["num_words"])


def word_tags(per_word: list[list], names) -> list[list[str]]:
    """The tag of each word from its probabilities (`O` for a word without sub-tokens)."""
    return [[names[int(p.argmax())] if p is not None else "O" for p in words] for words in per_word]


def stitched_tags(logits, windows: dict, names) -> tuple[list[list[str]], int]:
    """(the tag of each word of each sentence, how many words had no sub-token and were tagged `O`).

    Each word's tag is read at its first sub-token in the window that gives it the most context, so an entity
    in two overlapping windows counts once and continuation sub-tokens (`data.label_all_subtokens`) are not
    words.
    """
    per_word = word_probabilities(logits, windows)
    return word_tags(per_word, names), sum(p is None for words in per_word for p in words)


def sentence_report(logits, windows: dict, names, tags: tuple | None = None) -> dict:
    """Every metric of a split's whole sentences (`token_classification_report` of `stitched_tags`) from its
    windows' logits, plus `words_without_subtokens`: the final evaluation's report, and (its
    `TRAINING_METRICS`) every evaluation's during training. `tags`: `stitched_tags` if already computed."""
    predicted, missing = tags or stitched_tags(logits, windows, names)
    report = token_classification_report(predicted, windows["gold"])
    report["words_without_subtokens"] = missing
    return report


def _check_rows(label_ids, windows: dict) -> None:
    """The rows the Trainer scored are the split's windows, in its order (stitching reads them by position)."""
    import numpy as np

    label_ids = np.asarray(label_ids)
    expected = windows.get("labels")
    same = len(label_ids) == len(windows["doc"]) and (expected is None or all(
        np.array_equal(row[:len(labels)], labels) and (row[len(labels):] == IGNORE).all()
        for row, labels in zip(label_ids, expected)))
    if not same:
        raise RuntimeError(f"the Trainer's evaluation gave {len(label_ids)} rows that are not the {len(windows['doc'])} "
                           "windows of the split its metrics were built for, in their order; sentences cannot be "
                           "stitched back from them.")


def make_compute_metrics(names, windows: dict):
    """`compute_metrics` for the Trainer's evaluations of one split during training: `TRAINING_METRICS` of
    `sentence_report`, the metric of the final evaluation (whole sentences, windows stitched).

    Args:
        names: the tag names in id order.
        windows (`dict`): the split's bookkeeping (`sentence_windows`), its `labels` included: the rows the
            Trainer gives are checked against them (same windows, same order).
    """

    def compute_metrics(eval_pred) -> dict:
        _check_rows(eval_pred.label_ids, windows)
        report = sentence_report(eval_pred.predictions, windows, names)
        return {k: report[k] for k in TRAINING_METRICS}

    return compute_metrics


def token_loss(logits, label_ids) -> float:
    """The mean cross-entropy over every labelled sub-token of gathered evaluation logits: exact under distributed
    evaluation, where the Trainer's loss averages batch means that include the sampler's padding repeats."""
    import numpy as np
    import torch

    logits = torch.as_tensor(np.asarray(logits[0] if isinstance(logits, tuple) else logits), dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(label_ids), dtype=torch.long)
    return float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE))



# -- error analysis ------------------------------------------------------------------------------------------
def _entities(tags: list[str]) -> dict[tuple[int, int], str]:
    """(first word, end word) -> type of one sentence's entities (strict IOB2, as the metrics match them)."""
    from seqeval.scheme import IOB2, Entities

    (entities,) = Entities([tags], IOB2).entities
    return {(e.start, e.end): e.tag for e in entities}


def sentence_errors(split: str, words: list[list[str]], gold: list[list[str]], predicted: list[list[str]],
                    limit: int = MAX_ERRORS) -> list[dict]:
    """The sentences of a split with the most entity errors, most first (ties in sentence order).

    An entity error is a true entity whose exact span and type were not predicted (`missed`, a wrong type
    included) or a predicted one that is no true entity (`spurious`), as the strict entity-level metrics count
    them.

    Returns:
        `list[dict]`: per sentence, `split`, `sentence` (its index in the split), `tokens`, `gold` and
        `predicted` tags, `missed` and `spurious` entities (`{"type", "start", "end", "text"}`, word indices,
        `end` exclusive) and `entity_errors` (how many); at most `limit`, sentences without errors left out.
    """
    rows = []
    for index, (tokens, true_tags, pred_tags) in enumerate(zip(words, gold, predicted)):
        true, pred = _entities(true_tags), _entities(pred_tags)

        def listed(spans: dict, other: dict) -> list[dict]:
            return [{"type": kind, "start": start, "end": end, "text": " ".join(tokens[start:end])}
                    for (start, end), kind in sorted(spans.items()) if other.get((start, end)) != kind]

        missed, spurious = listed(true, pred), listed(pred, true)
        if missed or spurious:
            rows.append({"split": split, "sentence": index, "tokens": list(tokens), "gold": list(true_tags),
                         "predicted": list(pred_tags), "missed": missed, "spurious": spurious,
                         "entity_errors": len(missed) + len(spurious)})
    rows.sort(key=lambda row: -row["entity_errors"])  # stable: ties stay in sentence order
    return rows[:limit]
