"""Text classification: single sentences or sentence pairs, encoder or decoder checkpoints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hftl.config.parse import did_you_mean, field
from hftl.config.validate import check_length_limit
from hftl.config.schema import DataConfig
from hftl.data import LabelMap, check_source, fingerprint, load_splits, read_columns
from hftl.errors import DataError
from hftl.outputs import LABELS_FILE, write_json
from hftl.train import Recipe


@dataclass
class TextClassificationData(DataConfig):
    text_column: str = field("text", help="column with the text to classify")
    text_pair_column: str | None = field(None, help="optional second text column (sentence pairs, e.g. NLI)")
    label_column: str = field("label", help="column with the class label (string or integer)")
    max_length: int = field(128, help="longest input in tokens; longer texts are truncated")

    def check(self) -> list[str]:
        return [] if self.max_length >= 8 else [f"max_length: must be at least 8 tokens, got {self.max_length}."]


def check_columns(source: str, where: str, required: dict[str, str]) -> list[str]:
    """Problems for each required column (role -> name) missing from the first line of a local file."""
    columns = read_columns(source)
    if columns is None:
        return []
    return [
        f"{where}: {source} has no {role} column '{name}'.{did_you_mean(name, columns)} Columns: {', '.join(columns)}. "
        f"Set data.{role} to one of them."
        for role, name in required.items()
        if name not in columns
    ]


def check_sources(data, required: dict[str, str]) -> list[str]:
    """Problems of every configured split: existence, format, and the required columns of its first line."""
    problems = []
    for name, source in data.splits().items():
        where = f"data.{name}"
        try:
            problems += check_source(source, where) or check_columns(source, where, required)
        except DataError as err:
            problems.append(f"{where}: {err}")
    return problems


class TextClassificationRecipe(Recipe):
    """Fine-tune a text encoder or decoder for sequence classification.

    Example:
        ```python
        from hftl import TextClassificationRecipe
        result = TextClassificationRecipe.from_yaml("recipes/configs/sst2_minilm_lora.yaml").run()
        result.metrics["test"]["f1"]
        ```
    """

    task = "text-classification"
    data_config_class = TextClassificationData
    peft_task_type = "SEQ_CLS"
    auto_model_class = "AutoModelForSequenceClassification"
    head_modules = ("classifier", "score", "pre_classifier")

    @classmethod
    def required_columns(cls, data: TextClassificationData, with_label=True) -> dict[str, str]:
        required = {"text_column": data.text_column}
        if data.text_pair_column:
            required["text_pair_column"] = data.text_pair_column
        if with_label:
            required["label_column"] = data.label_column
        return required

    @classmethod
    def check_config(cls, config, model_ok: bool) -> list[str]:
        problems = check_sources(config.data, cls.required_columns(config.data))
        if not problems:  # row-level checks (empty cells, label sets, split sizes) need readable files
            from hftl.data.checks import check_rows

            data = config.data
            problems += check_rows(data, [c for c in (data.text_column, data.text_pair_column) if c], data.label_column)
        if model_ok:
            problems += check_length_limit(config.model, "max_length", config.data.max_length)
        return problems

    # -- data -------------------------------------------------------------------------------------
    def load_data(self) -> dict:
        data = self.config.data
        splits = load_splits(data, seed=self.config.training.get("seed", 42))
        sources = data.splits()
        required = self.required_columns(data)
        for name, dataset in splits.items():
            source = sources.get(name, sources["train"])
            missing = [col for col in required.values() if col not in dataset.column_names]
            if missing:
                raise DataError(f"{source}: missing column(s) {missing}. Columns: {', '.join(dataset.column_names)}.")
            for column in [data.text_column] + ([data.text_pair_column] if data.text_pair_column else []):
                self._check_texts(dataset[column], f"{source} (column '{column}')")
        self.labels = LabelMap.from_values(splits["train"][data.label_column], source=sources["train"])
        for name, dataset in splits.items():
            ids = self.labels.encode(dataset[data.label_column], sources.get(name, sources["train"]))
            splits[name] = dataset.remove_columns(data.label_column).add_column("labels", ids)
        self.data_fingerprints = {name: fingerprint(src, splits.get(name)) for name, src in sources.items()}
        return splits

    @staticmethod
    def _check_texts(texts, where: str) -> None:
        for row, text in enumerate(texts, start=1):
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{where}, row {row}: the text is empty or not text ({text!r}). Fill it in or drop the row.")

    def load_processor(self):
        from hftl.modeling import load_tokenizer

        return load_tokenizer(self.config.model)

    def preprocess(self, splits: dict, tokenizer) -> dict:
        data = self.config.data
        pad = "max_length" if self.config.speed.padding == "max_length" else False

        def tokenize(batch):
            texts = (batch[data.text_column],)
            if data.text_pair_column:
                texts += (batch[data.text_pair_column],)
            return tokenizer(*texts, truncation=True, max_length=data.max_length, padding=pad)

        return {
            name: ds.map(tokenize, batched=True, remove_columns=[c for c in ds.column_names if c != "labels"],
                         desc=f"Tokenizing {name}")
            for name, ds in splits.items()
        }

    # -- model ------------------------------------------------------------------------------------
    def load_model(self, tokenizer):
        from transformers import AutoModelForSequenceClassification

        from hftl.modeling import load_pretrained_model

        model, new = load_pretrained_model(
            AutoModelForSequenceClassification,
            self.config.model,
            num_labels=len(self.labels),
            id2label=self.labels.id2label,
            label2id=self.labels.label2id,
            ignore_mismatched_sizes=True,
        )
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        # Decoders pool the last non-pad token: the model must know which id is padding.
        model.config.pad_token_id = tokenizer.pad_token_id
        return model, new

    def data_collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=self.config.speed.pad_to_multiple_of)

    def compute_metrics(self):
        from hftl.metrics import make_compute_metrics

        return make_compute_metrics(list(self.labels.names))

    def evaluate_split(self, trainer, dataset) -> dict:
        from hftl.metrics import classification_report, logits_to_predictions
        from hftl.trainer import mean_cross_entropy

        output = trainer.predict(dataset)
        report = classification_report(
            logits_to_predictions(output.predictions), output.label_ids, list(self.labels.names)
        )
        report["loss"] = mean_cross_entropy(output.predictions, output.label_ids)
        return report

    def save_extras(self, out: Path, tokenizer) -> None:
        write_json(out / LABELS_FILE, {"id2label": self.labels.id2label, "label2id": self.labels.label2id})

    # -- using a finished run ---------------------------------------------------------------------
    def load_trained(self, run_dir: Path):
        """(tokenizer, model) of a finished run: a full model, or the base plus its LoRA adapter."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        labels = json.loads((run_dir / LABELS_FILE).read_text(encoding="utf-8"))["id2label"]
        self.labels = LabelMap(tuple(labels[str(i)] for i in range(len(labels))))
        tokenizer = AutoTokenizer.from_pretrained(run_dir)
        if (run_dir / "adapter_config.json").is_file():
            from peft import PeftModel

            base, _ = self.load_model(tokenizer)
            return tokenizer, PeftModel.from_pretrained(base, run_dir)
        return tokenizer, AutoModelForSequenceClassification.from_pretrained(run_dir, use_safetensors=True)

    def predict(self, model, tokenizer, texts: list[str], batch_size: int = 64) -> list[dict]:
        import torch

        from hftl.metrics import prediction_records

        results = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], truncation=True, max_length=self.config.data.max_length,
                              padding=True, return_tensors="pt").to(model.device)
            with torch.inference_mode():
                probs = model(**batch).logits.float().softmax(-1).cpu()
            results += prediction_records(probs, self.labels.names)
        return results

    def evaluate_trained(self, model, tokenizer, source: str | None = None) -> dict:
        import tempfile

        from transformers import Trainer, TrainingArguments

        from hftl.data import load_split
        from hftl.metrics import classification_report, logits_to_predictions

        data = self.config.data
        source = self.evaluation_source(source)
        problems = check_source(source, "--data") or check_columns(source, "--data", self.required_columns(data))
        if problems:
            raise DataError(" ".join(problems))
        dataset = load_split(source, data.dataset_config, split="test")
        dataset = dataset.add_column("labels", self.labels.encode(dataset[data.label_column], source))
        dataset = self.preprocess({"test": dataset.remove_columns(data.label_column)}, tokenizer)["test"]
        with tempfile.TemporaryDirectory() as tmp:
            args = TrainingArguments(output_dir=tmp, report_to="none", per_device_eval_batch_size=128)
            output = Trainer(model=model, args=args, data_collator=self.data_collator(tokenizer)).predict(dataset)
        return classification_report(logits_to_predictions(output.predictions), output.label_ids, list(self.labels.names))
