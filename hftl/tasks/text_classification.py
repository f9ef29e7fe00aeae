"""Text classification: single sentences or sentence pairs, encoder or decoder checkpoints."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from hftl.config.parse import field
from hftl.data import fingerprint, load_split, load_splits
from hftl.data.columns import check_loaded_columns, check_sources, check_texts, require_source, split_sources
from hftl.errors import ConfigError, DataError
from hftl.modeling import check_length_limit, load_tokenizer
from hftl.precision import BFLOAT16, FLOAT32
from hftl.recipe import PreparedData, register_task
from hftl.tasks.classification import (
    MULTI, REGRESSION, SINGLE, ClassificationData, ClassificationRecipe, detect_problem_type, is_label_list,
    label_option_problems, label_set, outside_score_range, score_range_problems, target_value,
)

logger = logging.getLogger(__name__)


@dataclass
class TextClassificationData(ClassificationData):
    text_column: str = field("text", help="column with the text to classify")
    text_pair_column: str | None = field(None, help="optional second text column (sentence pairs, e.g. NLI, STS-B)")
    label_column: str = field(
        "label", help="column with the label: a class (string or integer), a list of labels (multi-label: a JSON "
        "list, or a string split on label_separator) or a number (regression)"
    )
    max_length: int = field(128, help="longest input in tokens; longer texts are truncated")
    problem_type: Literal["auto", "single_label_classification", "multi_label_classification", "regression"] = field(
        "auto", help="'auto' = detected from the training labels (lists or label_separator: multi-label; numbers not "
        "all whole: regression; else single-label) and logged"
    )
    label_separator: str | None = field(
        None, help="multi-label: the character between labels in a label cell (e.g. ',' for 'admiration,joy')"
    )
    score_range: list[float] | None = field(
        None, help="regression with bounded scores: [low, high]; the model predicts low + (high - low) x "
        "sigmoid(output) and trains with binary cross-entropy on (score - low) / (high - low), as "
        "sentence-transformers' CrossEncoder does; null = plain regression (mean squared error)"
    )
    symmetric_pairs: bool = field(
        False, help="sentence pairs: also train on every pair in the other order, (text_pair, text), with the same "
        "label (for symmetric labels such as similarity scores; doubles the training rows; evaluation unchanged)"
    )

    def check(self) -> list[str]:
        problems = super().check()
        if self.max_length < 8:
            problems.append(f"max_length: must be at least 8 tokens, got {self.max_length}.")
        if self.label_separator is not None and self.problem_type in (SINGLE, REGRESSION):
            problems.append(f"label_separator: splits multi-label cells, but problem_type is {self.problem_type}. "
                            "Remove label_separator, or set problem_type: multi_label_classification (or auto).")
        if self.symmetric_pairs and not self.text_pair_column:
            problems.append("symmetric_pairs: needs data.text_pair_column (the second text of each pair). Set it, or "
                            "remove symmetric_pairs.")
        if self.label_separator is not None and not self.label_separator:
            problems.append("label_separator: must not be empty (e.g. ',' or '|'), or null.")
        return problems + score_range_problems(self.score_range, self.problem_type)

    def declared_problem_type(self) -> str:
        return self.problem_type

    def text_columns(self) -> list[str]:
        return [self.text_column] + ([self.text_pair_column] if self.text_pair_column else [])


class TextClassificationRecipe(ClassificationRecipe):
    """Fine-tune a text encoder or decoder for sequence classification.

    Example:
        ```python
        from hftl import TextClassificationRecipe, run_recipe
        result = run_recipe(TextClassificationRecipe.from_yaml("recipes/configs/sst2_minilm_lora.yaml"))
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
    input_pair_column = "text_pair_column"

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
        data = config.data
        tables = cls._label_tables(data)  # the readable ones, even when another split has a problem
        problem = data.problem_type
        if problem == "auto" and "train" in tables:
            problem, _ = detect_problem_type(tables["train"][1], data.label_separator)
        if "train" in tables:
            problems += label_option_problems(cls._training_label_names(tables["train"][1], data, problem), data, problem)
        if problem != REGRESSION:  # also when the data decided it (`resolve_config`); preflight drops repeats
            problems += score_range_problems(data.score_range, problem)
        if not problems:  # row-level checks (empty cells, label sets, split sizes) need readable files
            from hftl.data.checks import check_rows

            if problem == SINGLE or problem == "auto":  # class names: the shared label-set checks apply
                problems += cls._single_label_cells(tables, data)
                problems += check_rows(data, data.text_columns(), data.label_column, seed=config.seed)
            else:
                problems += check_rows(data, data.text_columns(), None, seed=config.seed)
                problems += cls._label_cell_problems(tables, data, problem)
        if model_ok:
            problems += check_length_limit(config.model, "max_length", config.data.max_length)
        return problems

    @classmethod
    def resolve_config(cls, config) -> list[str]:
        """`data.problem_type: auto` decided from the training labels (`detect_problem_type`) and logged: from a
        scan of a local file, else the split as `datasets` loads (and caches) it. Unreadable data stays 'auto'
        (`check_config` names the problem)."""
        data = config.data
        if data.problem_type != "auto":
            return []
        cells = cls._training_label_cells(data)
        if cells is not None:
            data.problem_type, why = detect_problem_type(cells, data.label_separator)
            logger.info("data.problem_type: %s (detected in %s: %s). Set data.problem_type to choose otherwise.",
                        data.problem_type, data.train, why)
        return []

    @staticmethod
    def _training_label_cells(data) -> list | None:
        """The label cells of the training rows the run uses (`max_train_samples`), or None if unreadable."""
        from hftl.data.checks import read_table

        if not data.train:
            return None
        try:
            table = read_table(data.train, data.column_names)
            if table is not None:
                cells = table.values.get(data.label_column)
            else:  # a Hub dataset or a file too large to scan: `datasets` reads it (and caches it for the run)
                train = load_split(data.train, data.dataset_config, split="train", column_names=data.column_names)
                cells = train[data.label_column] if data.label_column in train.column_names else None
        except Exception as err:  # any failure to read is reported by the source checks, with its fix
            logger.debug("data.problem_type left undecided: %s", err)
            return None
        return None if cells is None else list(cells)[: data.max_train_samples]

    @staticmethod
    def _label_tables(data) -> dict:
        """split -> (table, label cells used) for the local files among the splits that have the label column."""
        from hftl.data.checks import read_table

        tables = {}
        for name, source in data.splits().items():
            try:
                table = read_table(source, data.column_names)
            except DataError:
                continue  # reported by the source checks
            if table is not None and data.label_column in table.values:
                limit = data.max_train_samples if name == "train" else data.max_eval_samples
                tables[name] = (table, table.values[data.label_column][:limit])
        return tables

    @staticmethod
    def _training_label_names(cells, data, problem: str) -> list[str] | None:
        """The label names of the training cells (None for regression, or cells that do not parse: reported
        elsewhere)."""
        if problem == REGRESSION:
            return None
        if problem == MULTI:
            try:
                return sorted({n for v in cells for n in label_set(v, data.label_separator, "")})
            except DataError:
                return None
        return sorted({str(v).strip() for v in cells if not is_label_list(v)})

    @staticmethod
    def _single_label_cells(tables: dict, data) -> list[str]:
        """A cell holding several labels where the config says single-label: named by its line."""
        problems = []
        for name, (table, cells) in tables.items():
            bad = next((i for i, v in enumerate(cells) if is_label_list(v)), None)
            if bad is not None:
                problems.append(
                    f"data.{name}: {table.path}, {table.where(bad)}: label cell {cells[bad]!r} holds several labels, "
                    f"but data.problem_type is {data.problem_type}. Set data.problem_type: multi_label_classification "
                    "(or auto), or fix the row.")
        return problems

    @staticmethod
    def _label_cell_problems(tables: dict, data, problem: str) -> list[str]:
        """Multi-label cells parse and use labels train has; regression cells are numbers (first bad row named)."""
        problems, known = [], None
        for name, (table, cells) in tables.items():
            where = f"data.{name}: {table.path}"
            try:
                if problem == REGRESSION:
                    targets = [target_value(value, f"{where}, {table.where(i)}") for i, value in enumerate(cells)]
                    outside = outside_score_range(targets, data.score_range) if data.score_range else []
                    if outside:
                        low, high = map(float, data.score_range)
                        problems.append(
                            f"{where}, {table.where(outside[0])}: the target {targets[outside[0]]} is outside "
                            f"data.score_range [{low}, {high}] ({len(outside)} row(s) like this). Widen the range, "
                            "or fix the rows.")
                    continue
                sets = [label_set(v, data.label_separator, f"{where}, {table.where(i)}") for i, v in enumerate(cells)]
            except DataError as err:
                problems.append(str(err))
                continue
            if name == "train":
                known = {n for cell in sets for n in cell}
            elif known is not None:
                unseen = [i for i, cell in enumerate(sets) if set(cell) - known]
                if unseen:
                    first = unseen[0]
                    problems.append(
                        f"{where}, {table.where(first)}: label(s) {', '.join(map(repr, sorted(set(sets[first]) - known)))}"
                        f" do not occur in the training data ({len(unseen)} row(s) like this). Fix the rows, or add "
                        "examples of them to data.train.")
        if known is not None and len(known) < 2:
            problems.append(f"data.train: the label cells name {len(known)} label(s); multi-label classification "
                            "needs at least two.")
        return problems

    # -- data -------------------------------------------------------------------------------------
    def _check_split(self, dataset, source: str) -> None:
        data = self.config.data
        check_loaded_columns(dataset, self.required_columns(data), source)
        for column in data.text_columns():
            check_texts(dataset[column], f"{source} (column '{column}')")

    def load_data(self) -> PreparedData:
        data = self.config.data
        if data.problem_type == "auto":  # preflight decides it; only unreadable training data leaves it open
            raise ConfigError([f"data.problem_type: 'auto' could not be decided from {data.train} (its label column "
                               f"'{data.label_column}' could not be read). Fix data.train, or set data.problem_type."])
        splits = load_splits(data, seed=self.config.seed, stratify=data.problem_type == SINGLE)
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
        splits = dict(data.splits)
        if self.config.data.symmetric_pairs:
            splits["train"] = both_orders(splits["train"], self.config.data.text_column,
                                          self.config.data.text_pair_column)
        return {name: self._tokenize(dataset, tokenizer, name) for name, dataset in splits.items()}

    def data_collator(self, tokenizer):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=self.config.speed.pad_to_multiple_of)

    # -- model ------------------------------------------------------------------------------------
    def adapt_model(self, model, tokenizer) -> None:
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        # Decoders pool the last non-pad token: the model must know which id is padding.
        model.config.pad_token_id = tokenizer.pad_token_id

    def predict_logits(self, model, tokenizer, inputs: list, batch_size: int, precision: str = FLOAT32):
        """Tokenised once, sorted by length, batched by a token budget (`hftl.batch_inference`), returned in input
        order; in `precision` (the run's decisions say which: float32 unless `speed.bf16: true`); the last layer
        at the pooled position only unless `speed.first_token_last_layer: false`."""
        import numpy as np

        from hftl.batch_inference import uncalibrated_probabilities

        texts = self._checked_inputs(inputs, 0)
        speed = self.config.speed
        chunks = [logits for _, logits in uncalibrated_probabilities(
            model, tokenizer, texts, max_length=self.config.data.max_length, bf16=precision == BFLOAT16,
            progress=False, return_logits=True, first_token_last_layer=speed.first_token_last_layer is not False)]
        return np.concatenate(chunks) if chunks else np.zeros((0, model.config.num_labels), dtype=np.float32)

    def example_inputs(self, dataset, tokenizer) -> list:
        """Each example's text as the model read it (decoded tokens: truncated, as the tokenizer normalised it)."""
        return [tokenizer.decode(list(ids), skip_special_tokens=True) for ids in dataset["input_ids"]]

    def _checked_inputs(self, texts: list, first_row: int) -> list:
        """Texts, or (text, text_pair) pairs for a sentence-pair run; `DataError` naming the input otherwise."""
        texts = list(texts)
        pairs = [isinstance(t, (list, tuple)) for t in texts]
        if self.config.data.text_pair_column and not all(pairs):
            row = first_row + pairs.index(False) + 1
            raise DataError(f"input {row}: this run reads text pairs ('{self.config.data.text_column}', "
                            f"'{self.config.data.text_pair_column}'); give [text, text_pair] for each input.")
        if any(pairs) and not all(len(t) == 2 for t in texts if isinstance(t, (list, tuple))):
            raise DataError(f"inputs {first_row + 1}-{first_row + len(texts)}: a pair must hold two texts.")
        return [tuple(t) if isinstance(t, (list, tuple)) else t for t in texts]


def both_orders(dataset, first: str, second: str):
    """`dataset` followed by a copy with the `first` and `second` text columns swapped (`data.symmetric_pairs`)."""
    from datasets import concatenate_datasets

    swapped = dataset.map(lambda batch: {first: batch[second], second: batch[first]}, batched=True,
                          desc="Swapping sentence pairs")
    return concatenate_datasets([dataset, swapped])


register_task(TextClassificationRecipe)
