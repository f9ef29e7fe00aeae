"""Running a recipe end to end: config to a saved, evaluated, carded (and optionally pushed) run folder.

The runner sits above the tasks: it calls a `Recipe`'s hooks in order and owns everything around them that is
the same for every task (the run folder, the Trainer, saving the model, the card, the push). `Recipe` is the task
contract alone: its declaration, its hooks, and using a finished run.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from hftl.config.schema import RunConfig
from hftl.run_dir import RunDir

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What `run_recipe` returns: where the run was saved, its metrics by split, and the recipe that ran."""

    run_dir: Path
    metrics: dict
    config: RunConfig
    trainer: object = field(default=None, repr=False)
    recipe: "Recipe" = field(default=None, repr=False)  # noqa: F821 (hftl.recipe.Recipe; the runner needs no import of it)

    def push_to_hub(self, repo_id: str | None = None, **kwargs):
        """Push the run to the Hub (see `hftl.hub.push_run`)."""
        from hftl.hub import push_run

        return push_run(self.run_dir, repo_id=repo_id or self.config.hub.repo_id, **kwargs)

    def predict(self, inputs, **kwargs):
        """Predictions of the saved model (see `hftl.load`)."""
        from hftl.inference import load

        return load(self.run_dir).predict(inputs, **kwargs)


def save_full_model(trainer, folder: Path) -> None:
    """Save the trained model in `folder` as complete weights, from every process.

    `Trainer.save_model` is called on every rank: under FSDP, gathering the full state dict is a collective (a
    rank that skipped it would leave the others waiting), and the Trainer writes on the main process only
    (`args.should_save`, checked in `Trainer._save`; transformers 5.24). An FSDP run checkpointing with
    `SHARDED_STATE_DICT` gets its final save with `FULL_STATE_DICT` (accelerate's `set_state_dict_type`), for
    which alone the Trainer writes weights: a run folder always holds a model that loads without hftl.
    """
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None) if trainer.is_fsdp_enabled else None
    if plugin is not None and "FULL_STATE_DICT" not in str(plugin.state_dict_type):
        plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(folder))


def run_recipe(recipe) -> RunResult:
    """Train `recipe` (a `hftl.recipe.Recipe`), evaluate on validation and test, save everything in
    `training.output_dir`: the model, the task's extras, metrics.json, the card; push if `hub.push`."""
    from hftl.launch_check import check_world_size

    config = recipe.config
    args = recipe.training_arguments()  # bad arguments fail here, before loading
    check_world_size(args.world_size)  # a launch asked for more processes than this run has: stop here
    run = RunDir(config.output_dir)
    lock = None
    with args.main_process_first(local=False, desc="preparing the output folder"):
        if args.process_index == 0:  # every process runs the recipe; only one holds the folder and may replace it
            lock = run.lock().acquire()  # another live run writing this folder: refused, naming it
            try:
                run.prepare(config.overwrite, config.resume)
            except BaseException:
                lock.release()
                raise
    try:
        return _train_and_save(recipe, args, run)
    finally:
        if lock is not None:
            lock.release()


def _evaluate_before_training(recipe, trainer, datasets: dict, labels, precision: str) -> dict:
    """The untrained model's figures (`Recipe.evaluate_before`, in the run's evaluation `precision`), leaving the
    Trainer as training expects to find it (`hftl.trainer.forget_evaluation_prepare`). Where that cannot be done
    (the private hook `accelerate_prepare`, its reason logged), no figures: a correct training run comes first."""
    from hftl.precision import evaluating_in
    from hftl.speed.private_hooks import available
    from hftl.trainer import forget_evaluation_prepare

    if not available("accelerate_prepare"):
        logger.warning("no figures before training: evaluating first could leave the model half prepared for training")
        return {}
    with evaluating_in(trainer, precision), _random_state_kept():
        before = recipe.evaluate_before(trainer, datasets, labels)
    forget_evaluation_prepare(trainer)
    return before


@contextlib.contextmanager
def _random_state_kept():
    """Python's, numpy's and torch's random states (every device's) as they were before: what runs inside (an
    evaluation, a generation) leaves training's draws (dropout masks...) to the seed alone."""
    import random

    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    devices = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        if devices is not None:
            torch.cuda.set_rng_state_all(devices)


def _train_and_save(recipe, args, run: RunDir) -> RunResult:
    """The run itself, in the folder `run_recipe` prepared and holds."""
    from transformers import set_seed

    from hftl.card import render_run_card
    from hftl.precision import evaluating_in, evaluation_precision
    from hftl.run_dir import training_settings
    from hftl.strategies import apply_strategy, count_parameters
    from hftl.trainer import build_trainer

    config = recipe.config
    set_seed(args.seed)

    data = recipe.load_data()
    processor = recipe.load_processor()
    model, newly_initialised = recipe.load_model(processor, data.labels)
    model = apply_strategy(model, config.model, recipe.head_module_names(model, newly_initialised), recipe.peft_task_type)
    parameters = count_parameters(model)
    logger.info("trainable parameters: %(trainable_params)d of %(total_params)d (%(trainable_percent).2f%%)", parameters)
    datasets = recipe.preprocess(data, processor)

    trainer = build_trainer(recipe, model, datasets, processor, args, data.labels)
    precision = evaluation_precision(trainer, recipe.inference_precision())  # before and after training alike
    if trainer.is_world_process_zero():
        run.write_record(config, data.fingerprints, {**training_settings(trainer.args), "inference_precision": precision},
                         getattr(trainer, "applied_speedups", None))
    before = _evaluate_before_training(recipe, trainer, datasets, data.labels, precision)
    train_output = trainer.train(resume_from_checkpoint=run.last_checkpoint() if config.resume else None)
    metrics = {"train": {**train_output.metrics, **parameters}, **({"before_training": before} if before else {})}
    with evaluating_in(trainer, precision):
        evaluation = recipe.evaluate_splits(trainer, datasets, data.labels)  # validation fits, test is scored with
    metrics.update(evaluation.metrics)
    if trainer.is_world_process_zero():  # what ran during evaluation too (a reused final evaluation)
        run.record_speedups(getattr(trainer, "applied_speedups", None))

    save_full_model(trainer, run.path)
    if trainer.is_world_process_zero():
        trainer.save_state()
        recipe.save_extras(run, trainer, processor, data.labels)
        recipe.save_evaluation(run, evaluation)
        run.write_metrics(metrics)
        render_run_card(run.path, recipe)  # README.md: the model card, with its figures
    result = RunResult(run_dir=run.path, metrics=metrics, config=config, trainer=trainer, recipe=recipe)
    if config.hub.push and trainer.is_world_process_zero():
        result.push_to_hub(private=config.hub.private, mode=config.hub.mode)
    return result
