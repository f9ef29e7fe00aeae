"""What every classification task shares (text and image today): a label map built from the training labels, a
head sized to it, metrics through `hftl.metrics` with an exact loss, `labels.json`, and predictions with class
probabilities. A classification task declares its data and implements the data hooks and `encode_inputs`.
"""

from __future__ import annotations

import logging

from hftl.data.labels import LabelMap
from hftl.metrics import (
    classification_report, logits_to_predictions, make_compute_metrics, mean_cross_entropy, prediction_records,
)
from hftl.modeling import load_pretrained_model, read_model_config
from hftl.recipe import PreparedData, Recipe

logger = logging.getLogger(__name__)


class ClassificationRecipe(Recipe):
    """Base of the classification recipes (not a task itself: it registers nothing)."""

    summary_metrics = ("accuracy", "precision", "recall", "f1")
    card_metrics = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "f1_weighted", "matthews_correlation",
                    "loss")
    index_metrics = {
        "accuracy": ("accuracy", "Accuracy", None),
        "f1": ("f1", "F1 (macro)", {"average": "macro"}),
        "precision": ("precision", "Precision (macro)", {"average": "macro"}),
        "recall": ("recall", "Recall (macro)", {"average": "macro"}),
    }
    curve_metrics = ("accuracy", "f1")

    # -- labels -----------------------------------------------------------------------------------
    @staticmethod
    def with_label_ids(dataset, labels: LabelMap, values, source: str, keep: list[str]):
        """`dataset` reduced to the `keep` columns plus `labels`: the ids of `values` (an unknown label names its row)."""
        return dataset.select_columns(keep).add_column("labels", labels.encode(values, source))

    def encode_splits(self, splits: dict, values: dict, sources: dict, keep: list[str]) -> tuple[dict, LabelMap]:
        """The label map of the training labels, and every split with label ids (see `with_label_ids`)."""
        labels = LabelMap.from_values(values["train"], source=sources["train"])
        return {name: self.with_label_ids(dataset, labels, values[name], sources[name], keep)
                for name, dataset in splits.items()}, labels

    # -- model ------------------------------------------------------------------------------------
    def load_model(self, processor, labels: LabelMap):
        import transformers

        source_config, _ = read_model_config(self.config.model)
        model, new = load_pretrained_model(
            getattr(transformers, self.auto_model_class), self.config.model, num_labels=len(labels),
            id2label=labels.id2label, label2id=labels.label2id, ignore_mismatched_sizes=True,
        )
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

    # -- metrics ----------------------------------------------------------------------------------
    def compute_metrics(self, labels: LabelMap):
        return make_compute_metrics(list(labels.names))

    def evaluate_split(self, trainer, name: str, dataset, labels: LabelMap) -> dict:
        """The classification report of one split, with the mean cross-entropy of the gathered logits as its loss
        (exact under distributed evaluation, where the Trainer's loss counts padding repeats)."""
        output = trainer.predict(dataset)
        report = classification_report(logits_to_predictions(output.predictions), output.label_ids, list(labels.names))
        report["loss"] = mean_cross_entropy(output.predictions, output.label_ids)
        return report

    # -- prediction -------------------------------------------------------------------------------
    def encode_inputs(self, processor, items: list, first_row: int):
        """The model inputs (a `BatchEncoding` / `BatchFeature` of tensors) of raw `items` (rows counted from 1 +
        `first_row` in error messages)."""
        raise NotImplementedError

    def predict(self, model, processor, inputs: list, labels: LabelMap | None = None, batch_size: int = 64,
                **kwargs) -> list[dict]:
        """{label, score, probabilities} for each input."""
        import torch

        results = []
        for start in range(0, len(inputs), batch_size):
            batch = self.encode_inputs(processor, inputs[start:start + batch_size], start).to(model.device)
            with torch.inference_mode():
                probs = model(**batch).logits.float().softmax(-1).cpu()
            results += prediction_records(probs, labels.names)
        return results


__all__ = ["ClassificationRecipe", "PreparedData"]
