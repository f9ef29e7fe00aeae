"""Text classification: single sentences or sentence pairs, encoder or decoder checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

from hftl.config.parse import field
from hftl.config.schema import DataConfig
from hftl.data import fingerprint, load_split, load_splits
from hftl.data.columns import check_loaded_columns, check_sources, check_texts, require_source, split_sources
from hftl.modeling import check_length_limit, load_tokenizer
from hftl.recipe import PreparedData
from hftl.tasks import register_task
from hftl.tasks.classification import ClassificationRecipe


@dataclass
class TextClassificationData(DataConfig):
    text_column: str = field("text", help="column with the text to classify")
    text_pair_column: str | None = field(None, help="optional second text column (sentence pairs, e.g. NLI)")
    label_column: str = field("label", help="column with the class label (string or integer)")
    max_length: int = field(128, help="longest input in tokens; longer texts are truncated")

    def check(self) -> list[str]:
        return [] if self.max_length >= 8 else [f"max_length: must be at least 8 tokens, got {self.max_length}."]

    def text_columns(self) -> list[str]:
        return [self.text_column] + ([self.text_pair_column] if self.text_pair_column else [])


class TextClassificationRecipe(ClassificationRecipe):
    """Fine-tune a text encoder or decoder for sequence classification.

    Example:
        ```python
        from hftl import TextClassificationRecipe
        result = TextClassificationRecipe.from_yaml("recipes/configs/sst2_minilm_lora.yaml").run()
        result.metrics["test"]["f1"]
        ```
    """

    task = "text-classification"
    title = "Text classification"
    data_config_class = TextClassificationData
    auto_model_class = "AutoModelForSequenceClassification"
    head_modules = ("classifier", "score", "pre_classifier")
    peft_task_type = "SEQ_CLS"
    pipeline_tag = "text-classification"
    input_column = "text_column"

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
            problems += check_rows(data, data.text_columns(), data.label_column, seed=config.seed)
        if model_ok:
            problems += check_length_limit(config.model, "max_length", config.data.max_length)
        return problems

    # -- data -------------------------------------------------------------------------------------
    def _check_split(self, dataset, source: str) -> None:
        data = self.config.data
        check_loaded_columns(dataset, self.required_columns(data), source)
        for column in data.text_columns():
            check_texts(dataset[column], f"{source} (column '{column}')")

    def load_data(self) -> PreparedData:
        data = self.config.data
        splits = load_splits(data, seed=self.config.seed)
        sources = split_sources(data)
        for name, dataset in splits.items():
            self._check_split(dataset, sources[name])
        values = {name: dataset[data.label_column] for name, dataset in splits.items()}
        splits, labels = self.encode_splits(splits, values, sources, data.text_columns())
        fingerprints = {name: fingerprint(src, splits.get(name)) for name, src in data.splits().items()}
        return PreparedData(splits, sources, fingerprints, labels)

    def prepare_source(self, source: str, tokenizer, labels):
        data = self.config.data
        require_source(source, "--data", self.required_columns(data), data.column_names)
        dataset = load_split(source, data.dataset_config, split="test", column_names=data.column_names)
        self._check_split(dataset, source)
        dataset = self.with_label_ids(dataset, labels, dataset[data.label_column], source, data.text_columns())
        return self._tokenize(dataset, tokenizer, "test")

    def load_processor(self):
        return load_tokenizer(self.config.model)

    def _tokenize(self, dataset, tokenizer, name: str):
        data = self.config.data
        pad = "max_length" if self.config.speed.padding == "max_length" else False

        def tokenize(batch):
            texts = [batch[column] for column in data.text_columns()]
            return tokenizer(*texts, truncation=True, max_length=data.max_length, padding=pad)

        return dataset.map(tokenize, batched=True, remove_columns=data.text_columns(), desc=f"Tokenizing {name}")

    def preprocess(self, data: PreparedData, tokenizer) -> dict:
        return {name: self._tokenize(dataset, tokenizer, name) for name, dataset in data.splits.items()}

    def data_collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=self.config.speed.pad_to_multiple_of)

    # -- model ------------------------------------------------------------------------------------
    def adapt_model(self, model, tokenizer) -> None:
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        # Decoders pool the last non-pad token: the model must know which id is padding.
        model.config.pad_token_id = tokenizer.pad_token_id

    def encode_inputs(self, tokenizer, texts: list, first_row: int):
        return tokenizer(texts, truncation=True, max_length=self.config.data.max_length, padding=True,
                         return_tensors="pt")


register_task(TextClassificationRecipe)
