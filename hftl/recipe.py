"""The recipe base class: the contract of a task, which `hftl.runner.run_recipe` runs end to end.

A task is a `Recipe` subclass that *declares* what differs (class attributes: data schema, Auto class, head
modules, peft task type, pipeline tag, card template, the metrics its summary, card and model index show,
its input column) and implements the hooks below. Hooks take values and return values: `load_data` returns a
`PreparedData`, `evaluate_split` a metrics dict; the only state a recipe keeps is its config. The whole path
(`hftl.runner.run_recipe`) reads top to bottom in the runner; loading, evaluating and predicting with a finished
run are implemented once here, parameterised by the declaration.

Imports of torch/transformers-heavy modules stay inside the methods: the task registry imports every task
module to list them in `hftl --help`, which must stay under a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hftl.config.schema import DataConfig, RunConfig
from hftl.data import check_source
from hftl.data.labels import LabelMap
from hftl.epoch import TrainingEpoch
from hftl.errors import ConfigError, DataError
from hftl.precision import BFLOAT16, FLOAT32
from hftl.run_dir import RunDir


@dataclass
class PreparedData:
    """What `Recipe.load_data` returns.

    Args:
        splits (`dict[str, datasets.Dataset]`): train / validation / test, labels encoded as ids in `labels`.
        sources (`dict[str, str]`): where each split came from, as error messages name it.
        fingerprints (`dict[str, str]`): a fingerprint of each configured source (saved in the manifest).
        labels (`LabelMap`, *optional*): the classes, for tasks that have them.
    """

    splits: dict
    sources: dict[str, str]
    fingerprints: dict[str, str] = field(default_factory=dict)
    labels: LabelMap | None = None


@dataclass
class Evaluation:
    """What evaluating a trained model on validation and test returns (`Recipe.evaluate_splits`).

    Args:
        metrics (`dict`): the report of each split (`validation`, `test`).
        decisions (*optional*): what the task fitted on validation and applied to test (a classifier's
            `hftl.decisions.Decisions`), saved with the run and applied by predict and evaluate; None if nothing.
        errors (`list[dict]`): the most confident mistakes, one row each (the run's `errors.jsonl`).
    """

    metrics: dict
    decisions: object | None = None
    errors: list[dict] = field(default_factory=list)


class Recipe:
    """Base of every task recipe. Subclasses set the declaration and implement the hooks below."""

    # -- the task's declaration ---------------------------------------------------------------------
    #: the task name configs use (`task: ...`)
    task: str = ""
    #: how the card and the docs name the task
    title: str = ""
    #: the dataclass of the config's `data` section
    data_config_class: type[DataConfig] = DataConfig
    #: name of the transformers Auto class the task loads (checked against the checkpoint before loading)
    auto_model_class: str | None = None
    #: module names of the task head (trained by every strategy; `modules_to_save` under LoRA)
    head_modules: tuple[str, ...] = ()
    #: peft's task type for LoRA (None: the generic `PeftModel`)
    peft_task_type: str | None = None
    #: the Hub's pipeline tag of the task's models
    pipeline_tag: str = ""
    #: model card template in model_cards/ (default: the task name with underscores, e.g. text_classification.md)
    card_template: str | None = None
    #: metrics printed by the end-of-run summary and `hftl evaluate`, in order
    summary_metrics: tuple[str, ...] = ()
    #: scalar metrics shown in the card's table, in order
    card_metrics: tuple[str, ...] = ()
    #: metrics reported in the card's `model-index`: metrics.json key -> (Hub metric type, name, metric args)
    index_metrics: dict[str, tuple] = {}
    #: validation metrics drawn beside the loss in the training curves
    curve_metrics: tuple[str, ...] = ()
    #: the `data` field naming the column `hftl predict` reads from tabular input (e.g. "text_column")
    input_column: str | None = None
    #: the `data` field naming the column of the second text of sentence pairs (e.g. "text_pair_column"): where a
    #: run sets it, `hftl predict` reads (text, text_pair) from it beside `input_column`
    input_pair_column: str | None = None
    #: predict takes file paths (read relative to the input file), not raw values
    inputs_are_paths: bool = False
    #: the task's models continue text (`hftl generate`)
    generates_text: bool = False
    #: False for losses that are per-example means (classification); True for token-summed LM losses
    loss_is_token_mean: bool = False
    #: the loss is a cross-entropy over labelled tokens (`hftl.trainer.token_cross_entropy`): weighted by token
    #: across micro-batches and processes, whatever the model's head does
    token_level_loss: bool = False
    #: what `speed.eval_batch_size_factor: auto` means for this task (evaluation keeps no gradients)
    auto_eval_batch_size_factor: int = 4
    #: the evaluation batch of `hftl evaluate` on a finished run
    evaluation_batch_size: int = 128

    def __init__(self, config: RunConfig | dict | str | Path, overrides=()):
        if isinstance(config, RunConfig):
            self.config = config
        else:
            from hftl.checks import read_checked_config

            if isinstance(config, dict):
                config = {"task": self.task, **config}
            self.config = read_checked_config(config, {self.task: type(self)}, overrides)
        #: the Trainer's current epoch, kept current while the runner trains (`hftl.trainer.build_trainer` adds its
        #: callback): what a task draws per (seed, epoch, example) reads it, as image augmentation and
        #: masked-LM masks do, so that a resumed or distributed run draws what one uninterrupted process draws
        self.training_epoch = TrainingEpoch()
        if self.task and self.config.task != self.task:
            raise ConfigError([f"task: {type(self).__name__} runs task '{self.task}', the config says '{self.config.task}'."])

    @classmethod
    def from_yaml(cls, path: str | Path, overrides=()) -> "Recipe":
        return cls(str(path), overrides)

    @classmethod
    def template(cls) -> str:
        """The model card template of the task."""
        return cls.card_template or f"{cls.task.replace('-', '_')}.md"

    # -- hooks a task implements ------------------------------------------------------------------
    @classmethod
    def check_config(cls, config: RunConfig, model_ok: bool) -> list[str]:
        """Cheap checks of the data sources (existence, format, columns) before anything heavy."""
        data = config.data
        return [p for name, src in data.splits().items()
                for p in check_source(src, f"data.{name}", column_names=data.column_names)]

    @classmethod
    def resolve_config(cls, config: RunConfig) -> list[str]:
        """Decide, in place, the settings the config leaves to the data (e.g. `data.problem_type: auto`) from a
        cheap read of it, before anything is built: preflight calls it, so the config a run uses is final and
        never changes afterwards. Returns problems (an unreadable source is left to `check_config`)."""
        return []

    def load_data(self) -> PreparedData:
        raise NotImplementedError

    def load_processor(self):
        raise NotImplementedError

    def load_model(self, processor, labels: LabelMap | None):
        """Returns (model, names of parameters the checkpoint lacked)."""
        raise NotImplementedError

    def preprocess(self, data: PreparedData, processor) -> dict:
        """The model-ready datasets by split."""
        raise NotImplementedError

    def prepare_source(self, source: str, processor, labels: LabelMap | None):
        """One data source, checked, loaded and preprocessed: what a finished run is evaluated on."""
        raise NotImplementedError

    def data_collator(self, processor):
        return None

    def compute_metrics(self, labels: LabelMap | None, dataset=None):
        """The Trainer's `compute_metrics` for its evaluations during training, of `dataset` (the preprocessed
        validation split: a task whose metric needs more than the rows' logits and labels reads it there)."""
        return None

    def chance_scores(self, dataset, labels: LabelMap | None) -> dict | None:
        """The best that an answer ignoring the input (a constant, a random guess) scores on `dataset` (the
        preprocessed validation split), by the metric names of `compute_metrics`: the bar a trial of `hftl tune`
        must clear to have learned anything. None: the task has no such answer."""
        return None

    def loss_function(self, train_dataset, labels: LabelMap | None):
        """The Trainer's `compute_loss_func`, or None for the model's own loss (token-level tasks: a cross-entropy
        weighted by labelled token across micro-batches and processes, `hftl.trainer.token_cross_entropy`)."""
        if not self.token_level_loss:
            return None
        from hftl.trainer import token_cross_entropy

        return token_cross_entropy

    def training_defaults(self) -> dict:
        """Task defaults for `TrainingArguments`, under the user's `training` section."""
        return {}

    def training_arguments(self):
        """The run's `TrainingArguments`: hftl's defaults, then this task's, then the user's `training` section."""
        from hftl.trainer import training_arguments

        return training_arguments(self.config, self.training_defaults(), self.auto_eval_batch_size_factor)

    def inference_precision(self) -> str:
        """The one precision of a run's figures, before and after training, and of its use once finished (`hftl
        evaluate`, `predict`, `generate`, `chat`: `LoadedRun.in_run_precision`): bfloat16 autocast only when
        `speed.bf16: true` asks for it, else float32 (also when `auto` trained in bf16). The runner holds it while
        the run evaluates (`hftl.precision`)."""
        return BFLOAT16 if self.config.speed.bf16 is True else FLOAT32

    def evaluate_split(self, trainer, name: str, dataset, labels: LabelMap | None) -> dict:
        """Metrics of the trainer's model on one split (a task with decisions also takes `decisions=`)."""
        return trainer.evaluate(dataset)

    def evaluate_splits(self, trainer, datasets: dict, labels: LabelMap | None) -> Evaluation:
        """The trained model on validation, then test: their metrics, and what validation fitted (returned, not
        kept: the recipe holds no state but its config)."""
        return Evaluation({split: self.evaluate_split(trainer, split, datasets[split], labels)
                           for split in ("validation", "test") if split in datasets})

    def save_evaluation(self, run: RunDir, evaluation: Evaluation) -> None:
        """Save what `evaluate_splits` fitted and found beside the model: its decisions, its errors."""
        if evaluation.decisions is not None:
            evaluation.decisions.save(run)
        if evaluation.errors:
            run.write_errors(evaluation.errors)

    def load_decisions(self, run: RunDir, model=None):
        """What a finished run fitted on validation (`Evaluation.decisions`), for predict and evaluate; None."""
        return None

    def evaluate_before(self, trainer, datasets: dict, labels: LabelMap | None) -> dict:
        """Metrics of the untrained model by split (saved as metrics['before_training']); {} to skip."""
        return {}

    def save_extras(self, run: RunDir, trainer, processor, labels: LabelMap | None) -> None:
        """Task files saved beside the model (label maps, merged weights...)."""
        if labels is not None:
            run.write_labels(labels)

    def card_figures(self, metrics: dict, folder: Path) -> dict[str, str]:
        """The task's own figures for the card, drawn into `folder` from the run's metrics: {key: file name}."""
        return {}

    def head_module_names(self, model, newly_initialised) -> list[str]:
        from hftl.strategies.params import head_module_names

        return head_module_names(model, self.head_modules, newly_initialised)

    # -- using a finished run ---------------------------------------------------------------------
    def load_trained_processor(self, folder: Path):
        """The processor saved with a finished run (the tokenizer, by default)."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def load_trained(self, run: RunDir, model=None):
        """(processor, model, labels) of a finished run, from safetensors only: a complete model (the run, or the
        merged model a LoRA run saved beside its adapter), else the base model plus the run's LoRA adapter.
        `model`, if given, is used instead of loading one (an ONNX export's `OnnxClassifier`, `hftl.load`)."""
        import transformers

        labels = run.labels()
        folder = run.model_dir
        processor = self.load_trained_processor(folder)
        if model is not None:
            return processor, model, labels
        if folder == run.path and run.is_adapter:
            from peft import PeftModel

            from hftl.modeling import quiet_load_report

            with quiet_load_report():  # the head it reports missing comes from the adapter (modules_to_save)
                base, _ = self.load_model(processor, labels)
            return processor, PeftModel.from_pretrained(base, run.path), labels
        if not (folder / RunDir.MODEL_CONFIG).is_file():
            raise DataError(f"{run.path}: no {RunDir.MODEL_CONFIG} and no adapter; it holds no complete model.")
        model = getattr(transformers, self.auto_model_class).from_pretrained(folder, use_safetensors=True)
        return processor, model, labels

    def evaluation_source(self, source: str | None) -> str:
        """The data a finished run is evaluated on: `source`, else the run's test, else its validation data."""
        source = source or self.config.data.test or self.config.data.validation
        if not source:
            raise DataError("no data to evaluate: give --data FILE (the run has no test or validation data).")
        return source

    def evaluate_trained(self, model, processor, labels: LabelMap | None, source: str | None = None,
                         decisions=None) -> dict:
        """Metrics of a finished run's model on `source` (default: the run's test, else validation, data), with
        the run's `decisions` (`load_decisions`) where it has them."""
        import tempfile

        from transformers import Trainer, TrainingArguments

        dataset = self.prepare_source(self.evaluation_source(source), processor, labels)
        defaults = self.training_defaults()
        with tempfile.TemporaryDirectory() as tmp:
            args = TrainingArguments(
                output_dir=tmp, report_to="none", per_device_eval_batch_size=self.evaluation_batch_size,
                remove_unused_columns=defaults.get("remove_unused_columns", True),
                prediction_loss_only=defaults.get("prediction_loss_only", False),
            )
            trainer = Trainer(model=model, args=args, data_collator=self.data_collator(processor))
            with_decisions = {} if decisions is None else {"decisions": decisions}
            return self.evaluate_split(trainer, "test", dataset, labels, **with_decisions)

    def predict(self, model, processor, inputs: list, labels: LabelMap | None = None, batch_size: int = 64, **kwargs) -> list[dict]:
        """Predictions for raw inputs, one dict each."""
        raise NotImplementedError


#: task name -> recipe class, filled by `register_task`; `hftl.tasks` (the registry) imports the task modules
#: and reads it. It lives here, below the task modules, so that registering imports nothing above them.
_REGISTERED: dict[str, type] = {}


def register_task(recipe_class: type) -> type:
    """Register `recipe_class` (a `Recipe` subclass) under its `task` name; usable as a decorator. A task module
    ends with this one line; `hftl.tasks` finds the modules of its package, a task defined elsewhere (a plugin, a
    test) calls it itself."""
    name = getattr(recipe_class, "task", "")
    if not name:
        raise TypeError(f"{recipe_class.__name__} declares no task name (class attribute `task`).")
    _REGISTERED[name] = recipe_class
    return recipe_class
