"""A study and its workers: everything `hftl tune` resolves before the first trial (`prepare`), and the loop of one
worker (`run_worker`).

The Optuna storage is the only state workers share (no scheduler, no lock between machines): a worker asks it for
a trial, samples the trial's configuration once, checks it as `hftl validate` does, and trains it as
`hftl train CONFIG --set ...` in a process of its own (or under `accelerate launch`), which reports each
evaluation back through `hftl.tune.report`. While the trial trains the worker records a heartbeat in the
storage; a trial whose worker is gone (its process dead on this machine, or no heartbeat for `stale_after_s`)
is marked failed by the next worker that looks, so it is never counted, and a new trial takes its place.
Completed trials are never re-run: a restarted worker only adds trials until the study holds `--trials`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shlex
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from hftl.errors import ConfigError, HftlError
from hftl.run_dir import RunDir
from hftl.tune.defaults import DEFAULT_PRUNE_AFTER_EPOCHS, DEFAULT_PRUNER, PRUNERS, startup_trials
from hftl.tune.folder import StudyDir
from hftl.tune.pruners import make_pruner
from hftl.tune.report import PRUNED_AT, TRIAL_ENV, open_storage, shown_url
from hftl.tune.space import SearchSpace, overrides, read_space
from hftl.tune.trial_process import _Stop, launch, process_alive

logger = logging.getLogger(__name__)

#: trial user attributes the tuner writes
WORKER, HEARTBEAT, FAILED_BECAUSE, PROCESS_S, PROCESS_CPU_S, PROCESS_START_S, STARTED_BY, TUNER_S, VALUES = (
    "worker", "heartbeat", "failed_because", "process_seconds", "process_cpu_seconds", "process_start_seconds",
    "process_started_by", "tuner_seconds", "config_values")
#: how many trials in a row may fail on one worker before it stops (a space whose every sample is broken)
MAX_FAILURES_IN_A_ROW = 3


@dataclass
class TuneOptions:
    """The options of `hftl tune` (see `hftl tune --help`)."""

    trials: int = 20
    timeout: float | None = None
    storage: str | None = None
    study_name: str | None = None
    pruner: str = DEFAULT_PRUNER
    prune_after_epochs: float = DEFAULT_PRUNE_AFTER_EPOCHS
    sampler_seed: int | None = None
    launcher: str | None = None
    metric: str | None = None
    top: int = 1
    seeds: int = 1
    select: bool = True
    heartbeat_s: float = 10.0
    stale_after_s: float = 120.0


@dataclass
class Plan:
    """A study resolved before its first trial: the base config (checked), the space, the objective, where it lives."""

    config_path: Path
    overrides: list[str]
    config: object  # RunConfig
    recipe_cls: type
    space: SearchSpace
    space_sources: dict
    metric: str
    direction: str
    folder: StudyDir
    storage_url: str
    study_name: str
    pruner: str
    startup_trials: int  # `hftl.tune.defaults.startup_trials` of the trial budget: TPE's and the pruner's
    prune_after_epochs: float = DEFAULT_PRUNE_AFTER_EPOCHS
    sampler_seed: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def metric_key(self) -> str:
        return f"eval_{self.metric}"

    def identity(self) -> dict:
        """What every worker of one study must agree on (checked against the storage)."""
        config = self.config.to_dict()
        config.pop("search", None)
        for section, key in (("model", "name_or_path"), ("data", "train"), ("data", "validation"), ("data", "test")):
            value = config.get(section, {}).get(key)
            if isinstance(value, str) and os.path.isabs(value):
                config[section][key] = Path(value).name  # workers on other machines hold the files elsewhere
        config["training"] = {k: v for k, v in config["training"].items() if k != "output_dir"}
        digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return {"space": self.space.to_data(), "metric": self.metric, "direction": self.direction, "config": digest}


# -- before any trial ---------------------------------------------------------------------------------------
def default_metric(config, recipe_cls) -> str:
    """The metric the task judges a best checkpoint by (what it sets as `metric_for_best_model` when early stopping
    is on; macro-F1 for classification), else the validation loss."""
    probe = copy.deepcopy(config)
    probe.training = {**config.training, "load_best_model_at_end": True}
    return recipe_cls(probe).training_defaults().get("metric_for_best_model") or "loss"


def prepare(config_path: str | Path, user_overrides: list[str], options: TuneOptions) -> Plan:
    """Read and check everything a study needs, all problems in one `ConfigError`: the config as `hftl validate`
    checks it (output folder aside: it is the study folder), the search space and every value it can give, the
    options."""
    from hftl.config import read_config
    from hftl.preflight import load_config
    from hftl.tasks import get_recipe_class, task_data_classes

    config_path = Path(config_path)
    first, problems, _ = read_config(config_path, task_data_classes(), user_overrides, partial=True)
    folder = StudyDir(first.output_dir)
    if options.trials < 1:
        problems.append(f"--trials: must be at least 1, got {options.trials}.")
    if options.top < 1 or options.seeds < 1:
        problems.append(f"--top and --seeds: must be at least 1, got {options.top} and {options.seeds}.")
    if options.pruner not in PRUNERS:
        problems.append(f"--pruner: expected one of {', '.join(PRUNERS)}, got {options.pruner!r}.")
    if options.prune_after_epochs < 0:
        problems.append(f"--prune-after-epochs: must be 0 or more, got {options.prune_after_epochs}.")
    if problems:
        raise ConfigError(problems, str(config_path))
    # the base config as a trial will be checked (a fresh trial folder), so the study folder's contents are no problem
    probe_dir = folder.path / ".preflight-never-created"
    try:
        config = load_config(config_path, [*user_overrides, f"training.output_dir={probe_dir}"])
    except ConfigError as err:
        config, problems = None, list(err.problems)
    recipe_cls = get_recipe_class(first.task)
    space, sources, space_problems = read_space(config_path, user_overrides)
    problems += space_problems
    if problems or config is None:
        raise ConfigError(problems, str(config_path))
    config.training["output_dir"] = str(folder.path)
    metric = options.metric or config.training.get("metric_for_best_model") or default_metric(config, recipe_cls)
    metric = metric.removeprefix("eval_")
    greater = config.training.get("greater_is_better")
    direction = ("maximize" if greater else "minimize") if greater is not None else \
        ("minimize" if metric.endswith("loss") else "maximize")  # TrainingArguments' own rule
    return Plan(config_path=config_path, overrides=list(user_overrides), config=config, recipe_cls=recipe_cls,
                space=space, space_sources=sources,
                metric=metric, direction=direction, folder=folder,
                storage_url=options.storage or f"journal:{folder.journal}",
                study_name=options.study_name or folder.path.resolve().name, pruner=options.pruner,
                startup_trials=startup_trials(options.trials), prune_after_epochs=options.prune_after_epochs,
                sampler_seed=options.sampler_seed)


def open_study(plan: Plan, options: TuneOptions, create: bool = True):
    """(study, storage): the study in its storage, created by the first worker; a worker whose config, space or
    objective differs from the study's is refused."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plan.folder.path.mkdir(parents=True, exist_ok=True)
    storage = open_storage(plan.storage_url)

    def sampler(seed=None):
        with warnings.catch_warnings():  # multivariate, group and constant_liar are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # multivariate + group: TPE models settings that go together (a learning rate with the strategy it was
            # drawn for; LoRA settings only where they apply); constant_liar: workers running at once do not all
            # draw the same point
            return optuna.samplers.TPESampler(n_startup_trials=plan.startup_trials,
                                              multivariate=True, group=True, constant_liar=True, seed=seed)

    study = optuna.create_study(study_name=plan.study_name, storage=storage, direction=plan.direction,
                                sampler=sampler(), pruner=make_pruner(plan.pruner, plan.startup_trials),
                                load_if_exists=True)
    if plan.sampler_seed is not None:
        # offset by the trials the study holds: a restarted worker does not draw its first trials' points again
        study.sampler = sampler(plan.sampler_seed + len(study.get_trials(deepcopy=False)))
    identity, recorded = plan.identity(), study.user_attrs.get("hftl")
    if recorded is None:
        study.set_user_attr("hftl", identity)
    elif recorded != identity:
        differ = [k for k in identity if identity[k] != recorded.get(k)]
        raise HftlError(f"study '{plan.study_name}' in {shown_url(plan.storage_url)} was started with another "
                        f"{', '.join(differ)} (recorded: {json.dumps({k: recorded.get(k) for k in differ})}). "
                        "Tune this config under a new training.output_dir (or --study NAME), or restore the one the "
                        "study was started with.")
    return study, storage


# -- the worker ---------------------------------------------------------------------------------------------
def is_stale(trial, stale_after_s: float, now: float | None = None) -> bool:
    """A running trial whose worker is gone: its process is dead on this machine, or it sent no heartbeat for
    `stale_after_s` seconds."""
    now = now or time.time()
    worker = trial.user_attrs.get(WORKER) or {}
    if worker.get("host") == socket.gethostname() and worker.get("pid") and not process_alive(worker["pid"]):
        return True
    last = trial.user_attrs.get(HEARTBEAT) or (trial.datetime_start.timestamp() if trial.datetime_start else now)
    return now - last > stale_after_s


def fail_stale_trials(study, storage, stale_after_s: float) -> list[int]:
    """Mark every stale running trial failed (so it is never counted); returns their numbers."""
    import optuna
    from optuna.trial import TrialState

    failed = []
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_stale(trial, stale_after_s):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            try:
                storage.set_trial_user_attr(trial_id, FAILED_BECAUSE, "interrupted: its tuner stopped mid-trial")
                storage.set_trial_state_values(trial_id, TrialState.FAIL)
                failed.append(trial.number)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker got there first
    if failed:
        logger.warning("trials %s were interrupted (their tuner stopped): marked failed; new trials replace them.",
                       ", ".join(map(str, failed)))
    return failed


def counted(study, up_to: int | None = None) -> int:
    """Trials that count towards --trials: complete, pruned, or running (failed ones are replaced)."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    return sum(1 for t in study.get_trials(deepcopy=False, states=states) if up_to is None or t.number <= up_to)


def best_value(log_history: list[dict], key: str, direction: str) -> float | None:
    """The objective of a run: `key` at its best evaluation (not its last)."""
    values = [e[key] for e in log_history if isinstance(e.get(key), (int, float))]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


def run_objective(run: RunDir, plan: Plan) -> float | None:
    """The objective of a finished run folder: the metric at its best evaluation, else its final validation."""
    value = best_value(run.trainer_state().get("log_history", []), plan.metric_key, plan.direction)
    if value is None:
        value = (run.metrics().get("validation") or {}).get(plan.metric)
    return None if value is None else float(value)


def train_command(plan: Plan, options: TuneOptions, settings: list[str]) -> list[str]:
    """`hftl train CONFIG --set ...` as a process of its own (under `--launcher`, e.g. accelerate launch)."""
    prefix = [*shlex.split(options.launcher), "-m", "hftl.cli"] if options.launcher else [sys.executable, "-m",
                                                                                          "hftl.cli"]
    command = [*prefix, "train", str(plan.config_path)]
    for item in settings:
        command += ["--set", item]
    return command


def run_settings(plan: Plan, values: dict, output_dir: Path, seed: int | None = None, test: bool = False) -> list[str]:
    """The overrides of one run of the study: the user's, the sampled values, its folder; the test split only
    when `test` (never during the search)."""
    settings = [*plan.overrides, *overrides(values), f"training.output_dir={output_dir}", "overwrite=false",
                "resume=false"]
    if seed is not None:
        settings.append(f"training.seed={seed}")
    if not test:
        settings.append("data.test=")
    return settings


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_trial(plan: Plan, options: TuneOptions, study, storage, trial) -> str:
    """Sample, check, train and record one trial; returns its final state's name."""
    import optuna
    from optuna.trial import TrialState

    from hftl.preflight import load_config

    started = time.time()
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name),
                                                                trial.number)
    trial.set_user_attr(WORKER, {"host": socket.gethostname(), "pid": os.getpid()})
    trial.set_user_attr(HEARTBEAT, time.time())
    values = plan.space.sample(trial, plan.config.model.strategy)
    trial.set_user_attr(VALUES, values)
    run_dir = plan.folder.trial_dir(trial.number)
    settings = run_settings(plan, values, run_dir)
    try:  # hftl validate's checks, on the sampled configuration, before any process starts
        load_config(plan.config_path, settings)
    except ConfigError as err:
        logger.warning("trial %d: the sampled configuration fails the config checks; marked failed:\n%s",
                       trial.number, err)
        trial.set_user_attr(FAILED_BECAUSE, f"config checks: {'; '.join(err.problems)}")
        study.tell(trial, state=TrialState.FAIL)
        return "FAIL"
    logger.info("trial %d: %s -> %s", trial.number, ", ".join(f"{k}={v}" for k, v in values.items()), run_dir)
    spec = {"storage": plan.storage_url, "study": plan.study_name, "trial_id": trial_id,
            "metric": plan.metric_key, "direction": plan.direction, "pruner": plan.pruner,
            "startup_trials": plan.startup_trials,
            "prune_after_epochs": plan.prune_after_epochs}
    env = {**os.environ, TRIAL_ENV: json.dumps(spec)}
    log_path = plan.folder.log_file(run_dir.name)
    process_started, measured = time.time(), {}
    try:
        code = launch(train_command(plan, options, settings), log_path, env,
                      beat=lambda: storage.set_trial_user_attr(trial_id, HEARTBEAT, time.time()),
                      heartbeat_s=options.heartbeat_s, measured=measured)
    except _Stop as err:
        storage.set_trial_user_attr(trial_id, FAILED_BECAUSE, f"interrupted by {err}")
        study.tell(trial, state=TrialState.FAIL)
        raise
    process_s = time.time() - process_started
    state = TrialState.FAIL
    value = None
    if code == 0:
        value = run_objective(RunDir(run_dir), plan)
        pruned = storage.get_trial(trial_id).user_attrs.get(PRUNED_AT)
        state = TrialState.PRUNED if pruned else TrialState.COMPLETE if value is not None else TrialState.FAIL
        if value is None:
            trial.set_user_attr(FAILED_BECAUSE, f"no validation {plan.metric} was logged; choose one the task logs "
                                                "with --metric")
    else:
        trial.set_user_attr(FAILED_BECAUSE, f"hftl train exited with status {code}; see {log_path}")
        logger.warning("trial %d failed (exit status %d); the end of %s:\n%s", trial.number, code, log_path,
                       _tail(log_path))
    trial.set_user_attr(PROCESS_S, round(process_s, 3))
    trial.set_user_attr(STARTED_BY, measured.get("how"))
    if measured.get("cpu_s") is not None:  # unknown for a forked trial killed by a signal
        trial.set_user_attr(PROCESS_CPU_S, round(measured["cpu_s"], 3))
    if measured.get("start_s") is not None:  # from starting the process to entering hftl.cli's main (forked trials)
        trial.set_user_attr(PROCESS_START_S, round(measured["start_s"], 3))
    trial.set_user_attr(TUNER_S, round(time.time() - started - process_s, 3))
    try:
        if state == TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:  # judged stale meanwhile (a heartbeat came too late)
        logger.warning("trial %d was marked failed by another worker while it ran; its result is not counted.",
                       trial.number)
        return "FAIL"
    logger.info("trial %d: %s%s", trial.number, state.name.lower(),
                f" ({plan.metric} {value:.4f})" if value is not None else "")
    return state.name


def run_worker(plan: Plan, options: TuneOptions) -> dict:
    """Run trials until the study holds `options.trials` (complete, pruned or running), the timeout passes, or
    `MAX_FAILURES_IN_A_ROW` trials fail in a row. Returns what this worker did, by final state."""
    from optuna.trial import TrialState

    from hftl.tune.summary import write_study_record

    study, storage = open_study(plan, options)
    deadline = time.time() + options.timeout if options.timeout else None
    done: dict[str, int] = {}
    failures = 0
    try:
        while True:
            fail_stale_trials(study, storage, options.stale_after_s)
            if counted(study) >= options.trials:
                break
            if deadline and time.time() > deadline:
                logger.info("--timeout reached: no new trial starts.")
                break
            if failures >= MAX_FAILURES_IN_A_ROW:
                raise HftlError(f"{failures} trials in a row failed; stopping. Their reasons are in "
                                f"{plan.folder.path / StudyDir.RECORD} (failed_because) and {plan.folder.path / 'logs'}.")
            trial = study.ask()
            if counted(study, up_to=trial.number) > options.trials:  # another worker asked at the same moment
                trial.set_user_attr(FAILED_BECAUSE, "surplus: the study already had --trials trials")
                study.tell(trial, state=TrialState.FAIL)
                break
            state = run_trial(plan, options, study, storage, trial)
            done[state] = done.get(state, 0) + 1
            failures = failures + 1 if state == "FAIL" else 0
            write_study_record(plan, study)
    finally:
        write_study_record(plan, study)
    return done


def wait_for_others(plan: Plan, options: TuneOptions, study, storage, poll_s: float = 5.0) -> None:
    """Wait until no trial of the study runs (other workers finish theirs; stale ones are failed)."""
    from optuna.trial import TrialState

    while True:
        fail_stale_trials(study, storage, options.stale_after_s)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return
        logger.info("waiting for %d trial(s) of other workers: %s", len(running),
                    ", ".join(str(t.number) for t in running))
        time.sleep(poll_s)
