"""The run configuration: one typed dataclass per YAML section.

`training` is not modelled here: it is passed through to `transformers.TrainingArguments`, whose own
fields are the reference (unknown keys are rejected with a suggestion in `hftl.config.validate`).
Each task declares its own `data` section (a subclass of `DataConfig`) in its recipe module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from hftl.config.parse import field

Strategy = Literal["full", "freeze", "lora"]
#: the seed of a run whose `training` section sets none (as `TrainingArguments`)
DEFAULT_SEED = 42


@dataclass
class LoraConfig:
    r: int = field(8, help="rank of the LoRA update matrices")
    alpha: int = field(16, help="LoRA scaling numerator (the update is scaled by alpha / r)")
    dropout: float = field(0.1, help="dropout on the LoRA input")
    target_modules: str | list[str] = field(
        "auto", help="module names to adapt; 'auto' picks the attention projections of the architecture"
    )

    def __post_init__(self):
        problems = []
        if self.r < 1:
            problems.append(f"r: must be a positive integer, got {self.r}. Typical values are 4 to 64.")
        if self.alpha < 1:
            problems.append(f"alpha: must be a positive integer, got {self.alpha}.")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout: must be in [0, 1), got {self.dropout}.")
        if isinstance(self.target_modules, list) and not self.target_modules:
            problems.append("target_modules: the list is empty; use 'auto' or name modules such as [query, value].")
        if problems:
            raise ValueError("\n".join(problems))


@dataclass
class ModelConfig:
    name_or_path: str = field(
        help="a local checkpoint folder, a Hub model id, an earlier hftl run folder, "
        "or 'packaged:<name>' for a checkpoint shipped by a Python package (see `hftl models`)"
    )
    strategy: Strategy = field("full", help="full: train everything; freeze: train only the head; lora: peft adapters")
    lora: LoraConfig = field(default_factory=LoraConfig, help="LoRA settings (strategy: lora)")
    trainable_layers: int = field(
        0, help="with strategy freeze: also train the top N transformer blocks (0 = head only, a linear probe)"
    )
    revision: str | None = field(None, help="Hub revision (branch, tag or commit) of the checkpoint")
    gguf_file: str | None = field(None, help="file name of a GGUF checkpoint inside name_or_path (needs `gguf`)")
    trust_remote_code: bool = field(False, help="run modelling code shipped with the checkpoint (off for safety)")
    allow_pickle: bool = field(
        False, help="allow loading pickle (.bin) weights when no safetensors exist; pickle can run arbitrary code"
    )
    config_overrides: dict[str, Any] = field(
        default_factory=dict,
        help="settings of the checkpoint's transformers config to change before the model is built, e.g. "
        "{hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}; only settings that keep the weights' "
        "shapes (checked before loading)",
    )

    def __post_init__(self):
        problems = []
        if not self.name_or_path:
            problems.append("name_or_path: must not be empty.")
        if self.trainable_layers < 0:
            problems.append(f"trainable_layers: must be >= 0, got {self.trainable_layers}.")
        if self.trainable_layers and self.strategy != "freeze":
            problems.append(f"trainable_layers: only applies to strategy 'freeze', not '{self.strategy}'.")
        if problems:
            raise ValueError("\n".join(problems))


@dataclass
class DataConfig:
    """Settings shared by every task's `data` section."""

    train: str = field(help="training data: a csv/tsv/json/jsonl/parquet file, a saved datasets folder, or a Hub dataset id")
    validation: str | None = field(None, help="validation data; default: a seeded split of train (validation_fraction)")
    test: str | None = field(None, help="test data, evaluated once after training")
    dataset_config: str | None = field(None, help="configuration name of a Hub dataset")
    validation_fraction: float = field(0.1, help="share of train held out for validation when no validation file is given")
    max_train_samples: int | None = field(None, help="use only the first N training rows (quick runs)")
    max_eval_samples: int | None = field(None, help="use only the first N rows of validation and test")
    column_names: list[str] | None = field(
        None, help="CSV/TSV files without a header line: the names of their columns, in order (every line is then "
        "data); default: the first line names the columns"
    )

    def __post_init__(self):
        problems = []
        if not 0.0 < self.validation_fraction < 1.0:
            problems.append(f"validation_fraction: must be between 0 and 1, got {self.validation_fraction}.")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name}: must be a positive integer or null, got {value}.")
        if self.column_names is not None:
            repeated = sorted({n for n in self.column_names if self.column_names.count(n) > 1})
            if not self.column_names or not all(n.strip() for n in self.column_names):
                problems.append("column_names: must name at least one column, with no empty names (or be null).")
            elif repeated:
                problems.append(f"column_names: names {', '.join(map(repr, repeated))} twice; each column needs its own name.")
        problems.extend(self.check())
        if problems:
            raise ValueError("\n".join(problems))

    def check(self) -> list[str]:
        """Task-specific range checks; subclasses extend."""
        return []

    def splits(self) -> dict[str, str]:
        """The data sources given, by split name."""
        return {name: getattr(self, name) for name in ("train", "validation", "test") if getattr(self, name)}


@dataclass
class HubConfig:
    push: bool = field(False, help="push the trained model and its card to the Hub at the end of the run")
    repo_id: str | None = field(None, help="the Hub repository, 'user/name' or 'org/name'")
    private: bool = field(False, help="create the repository as private")
    mode: Literal["auto", "adapter", "merged"] = field(
        "auto", help="what to push for LoRA runs: the adapter, or the merged model ('auto' = adapter)"
    )
    license: str | None = field(
        None, help="license id for the model card (e.g. apache-2.0); default: the base model's, if its card says"
    )

    def __post_init__(self):
        if self.push and not self.repo_id:
            raise ValueError("repo_id: required when push is true, e.g. repo_id: your-name/sst2-minilm.")


@dataclass
class SpeedConfig:
    """hftl's speed defaults (each one a switch; `docs/benchmarks.md` has the measured effect of each)."""

    padding: Literal["longest", "max_length"] = field(
        "longest", help="pad each batch to its longest example (dynamic) or every example to max_length"
    )
    group_by_length: bool = field(True, help="batch examples of similar length together (less padding)")
    bf16: Literal["auto"] | bool = field(
        "auto", help="bfloat16 mixed precision; 'auto' = on where the hardware runs it fast (AVX512-BF16 CPUs, Ampere+ GPUs)"
    )
    eval_batch_size_factor: Literal["auto"] | int = field(
        "auto", help="evaluation batch = this x the training batch; 'auto' = 4 (no gradients kept), but 1 for language "
        "models, whose vocabulary-sized logits per token make larger batches cost memory and no time"
    )
    sort_eval_by_length: bool = field(
        True, help="evaluate examples sorted by length (less padding; per-example-loss tasks); predictions come back in the data's order"
    )
    reuse_final_eval: bool = field(
        True, help="the validation evaluation at the last training step is reused by the final report, not run twice "
        "(not after half-precision training: the report is computed in float32)"
    )
    length_buckets: bool = field(
        False, help="batch examples sorted by length over the whole epoch, batch order shuffled (least padding; "
        "changes which examples share a batch)"
    )
    token_budget: int | None = field(
        None, help="training batches of at most N padded tokens (rows x longest row; at least one row) instead of "
        "per_device_train_batch_size rows: examples sorted by length over the epoch, batch order shuffled, same "
        "epochs. Each batch weighs equally in the loss (a per-example mean per batch). Must be >= data.max_length; "
        "null = off"
    )
    pad_to_multiple_of: int | None = field(
        None, help="round each batch's padded length up to a multiple of N (fewer distinct shapes for kernels)"
    )
    cheap_dropout: Literal["auto"] | bool = field(
        "auto", help="draw dropout masks 16 bits at a time from torch's generator instead of one draw per element; "
        "'auto' = when training on CPU, where torch's per-element draws take ~15% of a BERT step"
    )
    first_token_last_layer: Literal["auto"] | bool = field(
        "auto", help="run the last encoder layer at position 0 only, the one BERT/RoBERTa/XLM-R/ELECTRA/DistilBERT "
        "sequence classifiers read (same logits, ~14% fewer FLOPs at 6 layers), in training and in predict; 'auto' = "
        "where it applies, true = also warn where it does not"
    )

    def __post_init__(self):
        problems = []
        if self.eval_batch_size_factor != "auto" and self.eval_batch_size_factor < 1:
            problems.append(f"eval_batch_size_factor: must be >= 1, got {self.eval_batch_size_factor}.")
        if self.token_budget is not None and (isinstance(self.token_budget, bool) or self.token_budget < 1):
            problems.append(f"token_budget: must be a positive integer (tokens per batch) or null, "
                            f"got {self.token_budget}.")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            problems.append(f"pad_to_multiple_of: must be a positive integer or null, got {self.pad_to_multiple_of}.")
        if problems:
            raise ValueError("\n".join(problems))


@dataclass
class DistillationConfig:
    """Knowledge distillation: the model learns from a finished teacher run's outputs as well as from the labels
    (`hftl distill`, docs/deployment.md)."""

    teacher: str | None = field(
        None, help="a finished run of the same task and labels (text or token classification) whose logits the "
        "model learns to match; its tokenizer must be the model's. null = no distillation"
    )
    alpha: float = field(
        0.5, help="weight of the distillation term; the hard-label loss weighs 1 - alpha (1 = the teacher alone, "
        "0 = the labels alone)"
    )
    temperature: float = field(
        2.0, help="divides the teacher's and the model's logits before their distributions are compared (KL "
        "divergence, times temperature^2 so its gradients keep their size); regression matches the outputs by "
        "squared error, without temperature"
    )

    def __post_init__(self):
        problems = []
        if not 0.0 <= self.alpha <= 1.0:
            problems.append(f"alpha: must be between 0 and 1, got {self.alpha}.")
        if not self.temperature > 0:
            problems.append(f"temperature: must be > 0, got {self.temperature}. 1 compares the plain "
                            "distributions; 2 to 4 are usual.")
        if problems:
            raise ValueError("\n".join(problems))


@dataclass
class RunConfig:
    """A whole run. `data` holds the task's own data dataclass."""

    task: str = field(help="which task runs: one of the registered tasks (`hftl --help` lists them)")
    model: ModelConfig = field(help="the pretrained checkpoint and how to adapt it")
    data: Any = field(help="where the data is and how to read it (fields depend on the task)")
    training: dict = field(
        default_factory=dict, help="passed to transformers.TrainingArguments (output_dir, learning_rate, ...)"
    )
    hub: HubConfig = field(default_factory=HubConfig, help="pushing the result to the Hugging Face Hub")
    speed: SpeedConfig = field(default_factory=SpeedConfig, help="speed switches")
    distillation: DistillationConfig = field(
        default_factory=DistillationConfig, help="knowledge distillation from a finished teacher run"
    )
    search: dict[str, Any] = field(
        default_factory=dict,
        help="`hftl tune`'s search space: dotted config keys -> a range {low, high} (optional log: true, step) or a "
        "list of choices, e.g. {training.learning_rate: {low: 1e-5, high: 3e-4, log: true}, model.strategy: [full, "
        "lora]} (docs/tuning.md); `hftl train` trains the config's own values and ignores it",
    )
    overwrite: bool = field(False, help="replace an existing run in output_dir")
    resume: bool = field(False, help="continue from the last checkpoint in output_dir")

    @property
    def output_dir(self) -> str:
        return self.training["output_dir"]

    @property
    def seed(self) -> int:
        """The run's seed: data order, initialisation and splits all follow it."""
        return self.training.get("seed", DEFAULT_SEED)

    def to_dict(self) -> dict:
        """Plain data for the saved `config.yaml` (no secrets: the config never holds a token); an empty search
        space is left out."""
        data = dataclasses.asdict(self)
        if not data.get("search"):
            data.pop("search", None)
        return data
