"""Inside a trial's own process: report the validation metric of each evaluation to the study, and stop training
when the pruner says so. `hftl.trainer.build_trainer` adds the callback when `hftl tune` started the process (it
sets `HFTL_TUNE_TRIAL`); parameters were sampled once, by the tuner, before the process (or the processes of an
`accelerate launch` trial) started.

A pruned trial is not killed: training stops after the evaluation, and the run finishes as any run does (its
validation report, model and card saved), so its folder is a complete run of fewer steps.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable

from transformers import TrainerCallback

from hftl.callbacks import any_process
from hftl.tune.defaults import DEFAULT_PRUNE_AFTER_EPOCHS
from hftl.tune.pruners import SCHEDULE_EXAMPLES, make_pruner

logger = logging.getLogger(__name__)

#: the environment variable through which `hftl tune` names the trial a process trains
TRIAL_ENV = "HFTL_TUNE_TRIAL"
#: trial user attributes written from inside the trial's process
PRUNED_AT = "pruned_at_evaluation"
#: why: the study's pruner, or no better than an answer that ignores the input (`PRUNED_AT_CHANCE`)
PRUNED_BECAUSE = "pruned_because"
PRUNED_AT_CHANCE = "no better than chance"
TRAIN_STARTED = "train_started"
TRAIN_ENDED = "train_ended"


def open_storage(url: str):
    """The Optuna storage at `url`: a journal file (`journal:PATH`, or a path), or any RDB URL Optuna takes."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if url.startswith("journal:"):
        return JournalStorage(JournalFileBackend(url[len("journal:"):]))
    if "://" not in url:
        return JournalStorage(JournalFileBackend(url))
    return _open_rdb(url)


def _open_rdb(url: str, attempts: int = 5):
    """`optuna.storages.RDBStorage(url)`, retried: workers started together on a new database race to create its
    tables (RDBStorage checks for each table, then creates it; the loser fails with "table ... already exists" or a
    duplicate key); a retry finds the tables the winner made. SQLite waits up to 60 s for a lock (Python's default
    is 5) while another worker writes."""
    import random

    import optuna
    import sqlalchemy.exc

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as err:
            if attempt == attempts - 1:
                raise
            logger.info("opening %s failed (%s); retrying (another worker may be creating its tables).",
                        shown_url(url), str(err).splitlines()[0])
            time.sleep(0.2 + random.random() * (attempt + 1))


def shown_url(url: str) -> str:
    """A storage URL without its password (RDB URLs may hold one): what the study folder and messages show."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def examples_seen(args, state, steps: int | None = None) -> int:
    """Training examples seen after `steps` (default `state.global_step`) optimizer steps: steps x the effective
    batch (per device x accumulation x processes; a short last batch counted whole)."""
    steps = state.global_step if steps is None else steps
    return steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size


def no_better(value: float, bar: float, direction: str) -> bool:
    """`value` does not beat `bar` (a tie does not beat it; 1e-9 absorbs float noise between two computations)."""
    return value <= bar + 1e-9 if direction == "maximize" else value >= bar - 1e-9


class TrialReportCallback(TrainerCallback):
    """Report `metric` at each evaluation and stop a pruned trial.

    The step reported is the number of training examples seen (`examples_seen`), not the evaluation's number:
    Optuna's pruners compare trials at equal steps, and trials of different batch sizes (or accumulation, or world
    sizes) evaluating every N optimizer steps have trained on different amounts of data at their k-th evaluation.

    Once warmed up, a trial is also stopped, whatever the pruner and however few trials have finished, while its
    best value so far is no better than `chance`: the best that an answer ignoring the input scores on the
    validation split (a classifier's most frequent class, or a random guess). Such a trial has learned nothing yet;
    the pruner's median needs `startup_trials` finished trials first, and a study's hopeless trials (a learning
    rate far too low) often fall among them.

    Args:
        spec (`dict`): `storage` (URL), `study` (name), `trial_id`, `metric` (the logged key, e.g. `eval_f1`),
            `direction` (`maximize` or `minimize`), `pruner` and `startup_trials` (see `make_pruner`; pruner `none`
            stops nothing), `prune_after_epochs` (no pruning before the trial has trained this many epochs; default
            `DEFAULT_PRUNE_AFTER_EPOCHS`).
        chance (`float`, *optional*): chance's `metric` on the validation split (`Recipe.chance_scores`); None: no
            such bar.
    """

    def __init__(self, spec: dict, chance: float | None = None):
        self.spec = spec
        self.chance = chance if spec.get("pruner", "none") != "none" else None
        self.evaluations = 0
        self.best = None
        self._trial = None

    def trial(self):
        if self._trial is None:
            import optuna

            study = optuna.load_study(study_name=self.spec["study"], storage=open_storage(self.spec["storage"]),
                                      pruner=make_pruner(self.spec["pruner"], self.spec["startup_trials"]))
            self._trial = optuna.trial.Trial(study, self.spec["trial_id"])
        return self._trial

    def _set(self, key: str, value) -> None:
        try:
            self.trial().set_user_attr(key, value)
        except Exception as err:  # the study may have marked the trial finished (its tuner is gone): report, go on
            logger.warning("hftl tune: could not record %s for this trial: %s", key, err)

    def on_train_begin(self, args, state, control, **kwargs):
        self.evaluations, self.best = 0, None
        if state.is_world_process_zero:
            self._set(TRAIN_STARTED, time.time())
            self._set(SCHEDULE_EXAMPLES, examples_seen(args, state, state.max_steps))  # for the `progress` pruner

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._set(TRAIN_ENDED, time.time())

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.evaluations += 1
        prune = False
        if state.is_world_process_zero:
            value = (metrics or {}).get(self.spec["metric"])
            if value is None:
                logger.warning("hftl tune: the evaluation logged no %s (logged: %s); nothing reported to the study.",
                               self.spec["metric"], ", ".join(sorted(metrics or {})))
            else:
                seen, direction = examples_seen(args, state), self.spec.get("direction", "maximize")
                if self.best is None or not no_better(float(value), self.best, direction):
                    self.best = float(value)
                warmed_up = (state.epoch or 0) >= self.spec.get("prune_after_epochs", DEFAULT_PRUNE_AFTER_EPOCHS)
                hopeless = warmed_up and self.chance is not None and no_better(self.best, self.chance, direction)
                reason = PRUNED_AT_CHANCE if hopeless else "pruner"
                try:
                    trial = self.trial()
                    trial.report(float(value), seen)
                    prune = hopeless or (warmed_up and trial.should_prune())
                except Exception as err:  # e.g. the tuner was killed and the trial marked failed: stop training
                    logger.warning("hftl tune: this trial can no longer report to its study (%s); stopping.", err)
                    prune, reason = True, None
                if prune:
                    logger.info("hftl tune: pruned at evaluation %d (%d training examples seen, %s = %.4f%s): "
                                "training stops here.", self.evaluations, seen, self.spec["metric"], value,
                                f"; best so far no better than chance, {self.chance:.4f}"
                                if reason == PRUNED_AT_CHANCE else "")
                    self._set(PRUNED_AT, self.evaluations)
                    if reason:
                        self._set(PRUNED_BECAUSE, reason)
        if any_process(prune, args.device):
            control.should_training_stop = True
        return control


#: what a trial's process says when a signal stopped it (instead of `hftl train ... --resume`)
STOPPED_TRIAL = ("This is a trial of hftl tune, which is never resumed: the trial is marked failed, and a new trial "
                 "takes its place when the same hftl tune command runs again.")


def add_trial_callback(trainer, chance_scores: Callable[[], dict | None] | None = None) -> None:
    """Add `TrialReportCallback` to `trainer` when this process trains a trial of `hftl tune` (and make a stop by
    signal say what happens to the trial). `chance_scores`: returns `Recipe.chance_scores` of the validation split
    (metric names without `eval_`, None where the task has none); called only for a trial."""
    from hftl.callbacks import GracefulStopCallback

    spec = os.environ.get(TRIAL_ENV)
    if spec:
        spec = json.loads(spec)
        metric = spec["metric"].removeprefix("eval_")
        scores = chance_scores() if chance_scores else None
        trainer.add_callback(TrialReportCallback(spec, (scores or {}).get(metric)))
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, GracefulStopCallback):
                callback.next_step = STOPPED_TRIAL
