"""The token-classification recipe: the steps of `reading`, `windows`, `entities` and `metrics` wired into
`hftl.recipe.Recipe`, and the task registered."""

from __future__ import annotations

import logging
from collections import Counter

from hftl.data import LabelMap, check_source, fingerprint
from hftl.data.checks import check_validation_split
from hftl.data.columns import split_sources
from hftl.data.holdout import holdout_indices
from hftl.data.loading import source_kind
from hftl.errors import DataError, HftlError
from hftl.modeling import check_length_limit, load_pretrained_model, load_tokenizer
from hftl.recipe import Evaluation, PreparedData, Recipe, register_task
from hftl.tasks.token_classification.entities import entities_from_words
from hftl.tasks.token_classification.metrics import (
    make_compute_metrics, sentence_errors, sentence_report, stitched_tags, token_loss, word_tags,
)
from hftl.tasks.token_classification.reading import (
    FORMATS, TokenClassificationData, check_tag_sets, read_local_rows, read_sentences, sentences_dataset,
)
from hftl.tasks.token_classification.windows import (
    b_to_i_map, encode_windows, first_windows, sentence_windows, stitch_windows, tokenize_and_align,
    words_as_in_text,
)

logger = logging.getLogger(__name__)


class TokenClassificationRecipe(Recipe):
    """Fine-tune an encoder (BERT family) or a decoder with a `*ForTokenClassification` head for NER / tagging.

    Example:
        ```python
        from hftl import TokenClassificationRecipe, run_recipe
        result = run_recipe(TokenClassificationRecipe.from_yaml("recipes/configs/wnut17_minilm_lora.yaml"))
        result.metrics["test"]["f1"]  # entity-level, strict IOB2
        ```
    """

    task = "token-classification"
    title = "Token classification (named entities)"
    data_config_class = TokenClassificationData
    peft_task_type = "TOKEN_CLS"
    auto_model_class = "AutoModelForTokenClassification"
    head_modules = ("classifier", "score")
    pipeline_tag = "token-classification"
    summary_metrics = ("precision", "recall", "f1", "f1_macro", "accuracy")
    card_metrics = ("precision", "recall", "f1", "precision_macro", "recall_macro", "f1_macro", "accuracy", "loss")
    index_metrics = {
        "f1": ("f1", "Entity F1 (micro, strict IOB2)", {"average": "micro"}),
        "precision": ("precision", "Entity precision (micro)", {"average": "micro"}),
        "recall": ("recall", "Entity recall (micro)", {"average": "micro"}),
        "accuracy": ("accuracy", "Token accuracy", None),
    }
    curve_metrics = ("f1",)
    token_level_loss = True
    evaluation_batch_size = 64

    # -- checks before anything heavy -------------------------------------------------------------
    @classmethod
    def check_config(cls, config, model_ok: bool) -> list[str]:
        data, problems, splits = config.data, [], {}
        sources = data.splits()
        for name, source in sources.items():
            where = f"data.{name}"
            found = check_source(source, where, formats=FORMATS)
            if found:
                problems += found
                continue
            if source_kind(source) != "file":
                continue  # saved and Hub datasets are checked when loaded
            file_problems: list[str] = []
            rows = read_local_rows(source, data, file_problems)
            problems += [f"{where}: {p}" for p in file_problems]
            if rows is not None and not file_problems:
                splits[name] = rows
        if problems:
            return problems
        problems += check_tag_sets(splits, sources)
        if "train" in splits:
            problems += check_validation_split(len(splits["train"]), data)
        if model_ok:
            problems += check_length_limit(config.model, "max_length", data.max_length)
        return problems

    # -- data -------------------------------------------------------------------------------------
    def load_data(self) -> PreparedData:
        data = self.config.data
        sources = data.splits()
        rows = {name: read_sentences(source, data, name) for name, source in sources.items()}
        for name, limit in (("train", data.max_train_samples), ("validation", data.max_eval_samples),
                            ("test", data.max_eval_samples)):
            if name in rows and limit is not None:
                rows[name] = rows[name][:limit]
        problems = check_tag_sets(rows, sources)
        if problems:
            raise DataError(" ".join(problems))
        if "validation" not in rows:
            train = rows["train"]
            n_val = int(round(len(train) * data.validation_fraction))
            if n_val < 1 or len(train) - n_val < 1:
                raise DataError(f"data.train: {len(train)} sentences are too few to hold out validation_fraction "
                                f"{data.validation_fraction}. Add sentences, or give data.validation.")
            holdout = holdout_indices(len(train), n_val, self.config.seed)
            rows["validation"] = [train[i] for i in holdout.validation]
            rows["train"] = [train[i] for i in sorted(holdout.train)]
        if data.label_names:
            labels = LabelMap(tuple(data.label_names))
        else:
            labels = LabelMap.from_values([t for row in rows["train"] for t in row["tags"]], source=sources["train"])
        splits = {name: sentences_dataset(split) for name, split in rows.items()}
        fingerprints = {name: fingerprint(src) for name, src in sources.items()}
        return PreparedData(splits, split_sources(data), fingerprints, labels)

    def prepare_source(self, source: str, tokenizer, labels: LabelMap):
        problems = check_source(source, "--data", formats=FORMATS)
        if problems:
            raise DataError(" ".join(problems))
        rows = read_sentences(source, self.config.data, "test")
        unknown = check_tag_sets({"train": [{"tags": list(labels.names), "line": 0}], "test": rows},
                                 {"train": "the run's labels", "test": source})
        if unknown:
            raise DataError(" ".join(unknown))
        return self._windows(sentences_dataset(rows), tokenizer, labels, "test")

    def load_processor(self):
        tokenizer = load_tokenizer(self.config.model)
        if not tokenizer.is_fast:
            raise HftlError(f"model.name_or_path: {self.config.model.name_or_path} has no fast tokenizer "
                            "(tokenizer.json); token classification needs one to map sub-tokens to words.")
        return words_as_in_text(tokenizer, self.config.model.name_or_path)

    def load_trained_processor(self, folder):
        return words_as_in_text(super().load_trained_processor(folder), str(folder))

    def _windows(self, sentences, tokenizer, labels: LabelMap, name: str):
        """Model inputs of a split's sentences (windows of at most max_length sub-tokens), with the bookkeeping to
        stitch predictions back per word (`WINDOW_COLUMNS`)."""
        import datasets

        data = self.config.data
        words = [list(w) for w in sentences["tokens"]]
        tags = [list(t) for t in sentences["tags"]]
        label2id = labels.label2id
        features = tokenize_and_align(tokenizer, words, [[label2id[t] for t in row] for row in tags], data.max_length,
                                      data.stride, data.label_all_subtokens, b_to_i_map(labels.names))
        features["num_words"] = [len(words[doc]) for doc in features["doc"]]
        first = [is_first for _, is_first in first_windows(features["doc"])]
        features["gold"] = [tags[doc] if is_first else [] for doc, is_first in zip(features["doc"], first)]
        features["words"] = [words[doc] if is_first else [] for doc, is_first in zip(features["doc"], first)]
        split_up = sum(1 for count in Counter(features["doc"]).values() if count > 1)
        if split_up:
            logger.info("%s: %d sentence(s) longer than max_length %d were split into overlapping windows "
                        "(stride %d): %d windows for %d sentences.", name, split_up, data.max_length, data.stride,
                        len(features["doc"]), len(words))
        return datasets.Dataset.from_dict(features)

    def preprocess(self, data: PreparedData, tokenizer) -> dict:
        return {name: self._windows(split, tokenizer, data.labels, name) for name, split in data.splits.items()}

    def data_collator(self, tokenizer):
        from transformers import DataCollatorForTokenClassification

        speed, data = self.config.speed, self.config.data
        if speed.padding == "max_length":
            return DataCollatorForTokenClassification(tokenizer, padding="max_length", max_length=data.max_length)
        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=speed.pad_to_multiple_of)

    # -- model ------------------------------------------------------------------------------------
    def load_model(self, tokenizer, labels: LabelMap):
        from transformers import AutoModelForTokenClassification

        model, new = load_pretrained_model(
            AutoModelForTokenClassification, self.config.model, num_labels=len(labels),
            id2label=labels.id2label, label2id=labels.label2id, ignore_mismatched_sizes=True,
        )
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
        return model, new

    def compute_metrics(self, labels: LabelMap, dataset=None):
        """The Trainer's metric for `dataset`, the split it evaluates during training: whole sentences, stitched,
        scored as the final evaluation scores them (`sentence_report`)."""
        if dataset is None:
            return None
        return make_compute_metrics(list(labels.names), sentence_windows(dataset))

    # -- evaluation -------------------------------------------------------------------------------
    def _scored(self, trainer, dataset, labels: LabelMap) -> tuple[dict, dict, list[list[str]]]:
        """(the report of a split's whole sentences with its sub-token loss, its windows, each word's tag)."""
        metric, trainer.compute_metrics = trainer.compute_metrics, None  # built for validation: scored here instead
        try:
            output = trainer.predict(dataset)
        finally:
            trainer.compute_metrics = metric
        windows = sentence_windows(dataset)
        tags = stitched_tags(output.predictions, windows, labels.names)
        report = sentence_report(output.predictions, windows, labels.names, tags)
        report["loss"] = token_loss(output.predictions, output.label_ids)
        return report, windows, tags[0]

    def evaluate_split(self, trainer, name: str, dataset, labels: LabelMap) -> dict:
        """Entity-level metrics of whole sentences (windows stitched back per word), their sub-token loss."""
        return self._scored(trainer, dataset, labels)[0]

    def evaluate_splits(self, trainer, datasets: dict, labels: LabelMap) -> Evaluation:
        """The metrics of validation and test, and their sentences with the most entity errors (errors.jsonl)."""
        metrics, errors = {}, []
        for split in ("validation", "test"):
            if split in datasets:
                metrics[split], windows, predicted = self._scored(trainer, datasets[split], labels)
                errors += sentence_errors(split, windows["words"], windows["gold"], predicted)
        return Evaluation(metrics, errors=errors)

    # -- prediction -------------------------------------------------------------------------------
    def _window_probabilities(self, model, tokenizer, encoding, batch_size: int):
        """Per window, per position, the label probabilities (float32; uniform past a window's end, never read) of
        a PyTorch model or its ONNX export, windows of similar length batched together
        (`hftl.batch_inference.run_batched`), at most `batch_size` full-length windows a batch."""
        import numpy as np

        from hftl.batch_inference import model_forward, run_batched, softmax

        forward, _ = model_forward(model, bf16=False)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoding]
        rows = len(encoding["input_ids"])
        width = max((len(ids) for ids in encoding["input_ids"]), default=0)

        def encode(_tokenizer, chunk: list[int], _max_length, first_index=0) -> dict:
            return {key: [encoding[key][row] for row in chunk] for key in keys}

        parts = []
        for chunk, logits in run_batched(forward, tokenizer, range(rows), encode=encode, progress=False,
                                         token_budget=batch_size * self.config.data.max_length):
            padded = np.zeros((len(chunk), width, logits.shape[-1]), dtype=np.float32)
            padded[:, :logits.shape[1]] = logits
            parts.append(padded)
        return softmax(np.concatenate(parts)) if parts else np.zeros((0, width, 0), dtype=np.float32)

    def predict(self, model, tokenizer, inputs: list, labels: LabelMap | None = None, batch_size: int = 64,
                **kwargs) -> list[dict]:
        """Entities of raw texts, or a tag per token of pre-tokenised inputs (lists of words).

        A text gives `{"entities": [{"entity", "start", "end", "text", "score"}, ...]}` with character offsets into
        it (words grouped as the transformers pipeline with `aggregation_strategy="first"` does); a list of words
        gives `{"tags": [...], "scores": [...]}`, one per word.
        """
        data = self.config.data
        names = list(labels.names)
        results: list[dict | None] = [None] * len(inputs)
        texts = [i for i, item in enumerate(inputs) if isinstance(item, str)]
        words = [i for i, item in enumerate(inputs) if not isinstance(item, str)]
        if texts:
            windows = encode_windows(tokenizer, [inputs[i] for i in texts], data.max_length, data.stride,
                                     is_split_into_words=False, offsets=True)
            probabilities = self._window_probabilities(model, tokenizer, windows["encoding"], batch_size)
            entities, _ = entities_from_words([inputs[i] for i in texts], windows, probabilities, names)
            found = dict(enumerate(entities))
            for n, i in enumerate(texts):
                results[i] = {"entities": found.get(n, [])}
        if words:
            sentences = [[str(w) for w in inputs[i]] for i in words]
            features = tokenize_and_align(tokenizer, sentences, None, data.max_length, data.stride)
            encoding = {k: v for k, v in features.items() if k not in ("doc", "word_ids", "starts")}
            probabilities = self._window_probabilities(model, tokenizer, encoding, batch_size)
            per_word = stitch_windows(features["word_ids"], features["starts"], features["doc"], probabilities,
                                      [len(s) for s in sentences])
            for n, (i, tags) in enumerate(zip(words, word_tags(per_word, names))):
                results[i] = {"tags": tags, "scores": [float(p.max()) if p is not None else 0.0 for p in per_word[n]]}
        return results


register_task(TokenClassificationRecipe)
