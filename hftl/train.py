"""The recipe base class: one run from config to saved, evaluated model, on top of `transformers.Trainer`.

A task subclasses `Recipe` and fills in what differs (data checks, preprocessing, model class, collator,
metrics); `Recipe.run` is the whole path and reads top to bottom.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from hftl.config import load_config
from hftl.config.schema import DataConfig, RunConfig
from hftl.outputs import METRICS_FILE, save_run_record, write_json

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What `Recipe.run` returns: where the run was saved and its metrics by split."""

    run_dir: Path
    metrics: dict
    config: RunConfig
    trainer: object = field(default=None, repr=False)

    def push_to_hub(self, repo_id: str | None = None, **kwargs):
        """Push the run to the Hub (see `hftl.hub.push_run`)."""
        from hftl.hub import push_run

        return push_run(self.run_dir, repo_id=repo_id or self.config.hub.repo_id, **kwargs)

    def predict(self, inputs, **kwargs):
        """Predictions of the saved model (see `hftl.load`)."""
        from hftl.inference import load

        return load(self.run_dir).predict(inputs, **kwargs)


class Recipe:
    """Base of every task recipe. Subclasses set the class attributes and the hooks below."""

    task: str = ""
    data_config_class: type[DataConfig] = DataConfig
    peft_task_type: str | None = None
    #: name of the transformers Auto class the task loads (checked against the checkpoint before loading)
    auto_model_class: str | None = None
    #: module names of the task head (trained by every strategy; `modules_to_save` under LoRA)
    head_modules: tuple[str, ...] = ()
    #: model card template in model_cards/ (default: the task name with underscores, e.g. text_classification.md)
    card_template: str | None = None

    def __init__(self, config: RunConfig | dict | str | Path, overrides=()):
        if isinstance(config, RunConfig):
            self.config = config
        else:
            if isinstance(config, dict):
                config = {"task": self.task, **config}
            self.config = load_config(config, overrides)
        if self.task and self.config.task != self.task:
            raise ValueError(f"{type(self).__name__} runs task '{self.task}', the config says '{self.config.task}'.")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides=()) -> "Recipe":
        return cls(str(path), overrides)

    # -- hooks a task implements ------------------------------------------------------------------
    @classmethod
    def check_config(cls, config: RunConfig, model_ok: bool) -> list[str]:
        """Cheap checks of the data sources (existence, format, columns) before anything heavy."""
        from hftl.data import check_source

        return [p for name, src in config.data.splits().items() for p in check_source(src, f"data.{name}")]

    def load_data(self) -> dict:
        raise NotImplementedError

    def load_processor(self):
        raise NotImplementedError

    def load_model(self, processor):
        """Returns (model, names of parameters the checkpoint lacked)."""
        raise NotImplementedError

    def preprocess(self, splits: dict, processor) -> dict:
        raise NotImplementedError

    def data_collator(self, processor):
        return None

    def compute_metrics(self):
        return None

    #: False for losses that are per-example means (classification); True for token-summed LM losses
    loss_is_token_mean: bool = False

    def training_defaults(self) -> dict:
        """Task defaults for `TrainingArguments`, under the user's `training` section."""
        return {}

    #: what `speed.eval_batch_size_factor: auto` means for this task (evaluation keeps no gradients)
    auto_eval_batch_size_factor: int = 4

    def training_arguments(self):
        """The run's `TrainingArguments`: hftl's defaults, then this task's, then the user's `training` section."""
        from hftl.trainer import training_arguments

        return training_arguments(self.config, self.training_defaults(), self.auto_eval_batch_size_factor)

    def evaluate_split(self, trainer, dataset) -> dict:
        return trainer.evaluate(dataset)

    def evaluate_before(self, trainer, datasets: dict) -> dict:
        """Metrics of the untrained model by split (saved as metrics['before_training']); {} to skip."""
        return {}

    def evaluation_source(self, source: str | None) -> str:
        """The data a finished run is evaluated on: `source`, else the run's test, else its validation data."""
        from hftl.errors import DataError

        source = source or self.config.data.test or self.config.data.validation
        if not source:
            raise DataError("no data to evaluate: give --data FILE (the run has no test or validation data).")
        return source

    def save_extras(self, out: Path, processor) -> None:
        """Task files saved beside the model (label maps...)."""

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Train, evaluate on validation and test, save everything in `training.output_dir`."""
        from transformers import set_seed

        from hftl.strategies import apply_strategy, count_parameters
        from hftl.trainer import build_trainer, last_checkpoint, prepare_run_dir

        config = self.config
        args = self.training_arguments()  # bad arguments fail here, before loading
        seed = args.seed
        out = prepare_run_dir(config, args)  # main process only; the others wait
        set_seed(seed)

        raw = self.load_data()
        processor = self.load_processor()
        model, newly_initialised = self.load_model(processor)
        model = apply_strategy(model, config.model, self.head_module_names(model, newly_initialised), self.peft_task_type)
        parameters = count_parameters(model)
        logger.info("trainable parameters: %(trainable_params)d of %(total_params)d (%(trainable_percent).2f%%)", parameters)
        datasets = self.preprocess(raw, processor)

        trainer = build_trainer(self, model, datasets, processor, args)
        if trainer.is_world_process_zero():
            save_run_record(out, config, self.data_fingerprints, seed)
        before = self.evaluate_before(trainer, datasets)
        train_output = trainer.train(resume_from_checkpoint=last_checkpoint(out) if config.resume else None)
        metrics = {"train": {**train_output.metrics, **parameters}, **({"before_training": before} if before else {})}
        for split in ("validation", "test"):
            if split in datasets:
                metrics[split] = self.evaluate_split(trainer, datasets[split])

        if trainer.is_world_process_zero():
            trainer.save_model(str(out))
            trainer.save_state()
            self.save_extras(out, processor)
            write_json(out / METRICS_FILE, metrics)
            from hftl.card import render_run_card

            render_run_card(out)  # README.md: the model card, with its figures
        result = RunResult(run_dir=out, metrics=metrics, config=config, trainer=trainer)
        if config.hub.push and trainer.is_world_process_zero():
            result.push_to_hub(private=config.hub.private, mode=config.hub.mode)
        return result

    def head_module_names(self, model, newly_initialised) -> list[str]:
        from hftl.strategies.params import head_module_names

        return head_module_names(model, self.head_modules, newly_initialised)

    # filled by load_data: source -> fingerprint, saved in the manifest
    data_fingerprints: dict = {}
