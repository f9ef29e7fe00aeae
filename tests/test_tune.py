"""`hftl tune`: bad spaces fail fast with every problem, conditional LoRA settings, the pruning callback, concurrent
workers on one storage, a killed and restarted worker, the selection over seeds and a best.yaml that reproduces the
picked trial. Trials are real `hftl train` processes on the tiny fixture model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tiny_runs import tiny_config
from hftl.errors import ConfigError
from hftl.run_dir import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")

SPACE = {"model.strategy": ["full", "lora"], "model.lora.r": [2, 4],
         "training.learning_rate": {"low": 5.0e-3, "high": 3.0e-2, "log": True}}


#: the real studies' space: each strategy's learning rate from a range of its own (one Optuna parameter per strategy)
STUDY_SPACE = {"model.strategy": ["full", "lora"], "model.lora.r": [2, 4],
               "training.learning_rate": {"full": {"low": 5.0e-3, "high": 2.0e-2, "log": True},
                                          "lora": {"low": 2.0e-2, "high": 5.0e-2, "log": True}}}


def write_config(folder: Path, model_dir: Path, search: dict | None = SPACE, **training) -> Path:
    config = tiny_config(folder, model_dir, rows=(48, 24, 24), **{
        "data.max_length": 24, "training.output_dir": str(folder / "study"), "training.learning_rate": 1e-2,
        "training.logging_steps": 1, **{f"training.{k}": v for k, v in training.items()}})
    if search is not None:
        config["search"] = search
    path = folder / "tune.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def worker(config: Path, *args: str) -> subprocess.Popen:
    """An `hftl tune` worker in a process of its own (as a user starts one per machine)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "hftl.cli", "tune", str(config), "--pruner", "none", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()  # no worker outlives its test
        raise
    assert process.returncode == 0, out[-3000:]
    return out


def load_trials(study_dir: Path):
    import optuna

    from hftl.tune.report import open_storage

    storage = open_storage(f"journal:{study_dir / 'optuna-journal.log'}")
    return optuna.load_study(study_name=study_dir.name, storage=storage).get_trials(deepcopy=False)


# -- checked before anything runs ---------------------------------------------------------------------------
BAD_SPACE = {
    "training.learnin_rate": {"low": 1e-5, "high": 1e-3},         # unknown key
    "training.weight_decay": {"low": 0.1, "high": 0.01},          # low > high
    "training.warmup_steps": {"low": 0.0, "high": 0.1, "log": True},  # log range <= 0
    "model.strategy": ["full", "lora", "lorra"],                  # a choice the config rejects
    "model.lora.r": [0, 8],                                       # a value the config rejects
    "training.seed": [1, 2],                                      # not a hyperparameter
    "training.num_train_epochs": {"low": 1, "hihg": 3},           # misspelt range key
}
BAD_SPACE_PROBLEMS = (
    "unknown key 'training.learnin_rate'. Did you mean 'training.learning_rate'?",
    "search.training.weight_decay: low (0.1) is greater than high (0.01)",
    "search.training.warmup_steps: a log range needs low > 0",
    "search.model.strategy: the value \"lorra\"", "Did you mean 'lora'?",
    "search.model.lora.r: the value 0 is rejected", "r: must be a positive integer",
    "search.training.seed: cannot be searched", "unknown range key 'hihg'. Did you mean 'high'?")


def test_bad_search_space_lists_every_problem(tmp_path, tiny_bert_dir, capsys):
    from hftl.cli import main
    from hftl.tune.study import TuneOptions, prepare

    config = write_config(tmp_path, tiny_bert_dir, search=BAD_SPACE)
    with pytest.raises(ConfigError) as caught:
        prepare(config, [], TuneOptions(trials=4))
    text = str(caught.value)
    for expected in BAD_SPACE_PROBLEMS:
        assert expected in text, text
    assert len(caught.value.problems) == 8, caught.value.problems
    assert not (tmp_path / "study").exists()  # nothing was created: the checks come first

    # the command: exit 2, every problem, no traceback
    assert main(["tune", str(config)]) == 2
    assert "8 problem(s)" in capsys.readouterr().err


def test_validate_checks_the_search_section(tmp_path, tiny_bert_dir, capsys):
    """`hftl validate` runs hftl tune's up-front checks of `search:`, listed with the config's own problems."""
    from hftl.cli import main

    config = write_config(tmp_path, tiny_bert_dir, search=BAD_SPACE)
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err
    for expected in BAD_SPACE_PROBLEMS:
        assert expected in err, err
    assert "8 problem(s)" in err
    # a problem of the config itself comes in the same message as those of the space
    assert main(["validate", str(config), "--set", "training.learning_rat=0.1"]) == 2
    err = capsys.readouterr().err
    assert "9 problem(s)" in err and "Did you mean 'learning_rate'?" in err and "search.model.lora.r" in err
    # a sound space: OK, and the space is named; a config without search: is no study, nothing more to say
    assert main(["validate", str(write_config(tmp_path, tiny_bert_dir))]) == 0
    assert "search: 3 parameters (model.lora.r in lora trials only)" in capsys.readouterr().out
    assert main(["validate", str(write_config(tmp_path, tiny_bert_dir, search=None))]) == 0
    assert "search" not in capsys.readouterr().out


def test_empty_space_and_unreachable_lora_setting(tmp_path, tiny_bert_dir):
    from hftl.tune.study import TuneOptions, prepare

    with pytest.raises(ConfigError, match="the space is empty"):
        prepare(write_config(tmp_path, tiny_bert_dir, search={}), [], TuneOptions())
    # search: {} is an empty space; no search: at all means the defaults
    config = write_config(tmp_path, tiny_bert_dir, search={"model.lora.r": [4, 8]})
    with pytest.raises(ConfigError, match="applies only to strategy 'lora', which no trial uses"):
        prepare(config, [], TuneOptions())


def test_defaults_per_strategy_with_sources(tmp_path, tiny_bert_dir):
    from hftl.tune.defaults import DEFAULT_SPACES
    from hftl.tune.study import TuneOptions, prepare

    config = write_config(tmp_path, tiny_bert_dir, search=None)
    plan = prepare(config, ["model.strategy=lora"], TuneOptions())
    assert plan.space.source == "defaults"
    assert set(plan.space.to_data()) == set(DEFAULT_SPACES["lora"])
    assert "model.lora.r" in plan.space.to_data() and all(plan.space_sources.values())
    assert (plan.metric, plan.direction) == ("f1", "maximize")  # the task's metric for the best checkpoint
    full = prepare(config, [], TuneOptions(metric="eval_loss"))
    assert "model.lora.r" not in full.space.to_data()
    assert (full.metric, full.direction) == ("loss", "minimize")


# -- sampling, the pruning callback, stale trials (no training) ---------------------------------------------
def test_conditional_lora_settings_are_sampled_only_in_lora_trials():
    import optuna

    from hftl.tasks import get_recipe_class
    from hftl.tune.space import parse_space

    space, problems = parse_space(SPACE, get_recipe_class("text-classification"), "full")
    assert problems == []
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(16):
        trial = study.ask()
        values = space.sample(trial, "full")
        seen.add(values["model.strategy"])
        assert ("model.lora.r" in values) == (values["model.strategy"] == "lora")
        assert ("model.lora.r" in trial.params) == (values["model.strategy"] == "lora")
        study.tell(trial, 0.5)
    assert seen == {"full", "lora"}


PER_STRATEGY = {"model.strategy": ["full", "lora"], "model.lora.r": [2, 4],
                "training.learning_rate": {"full": {"low": 1.0e-5, "high": 1.0e-4, "log": True},
                                           "lora": {"low": 1.0e-3, "high": 1.0e-2, "log": True}},
                "training.num_train_epochs": {"lora": [3, 4]}}


def test_a_range_per_strategy_is_sampled_from_the_trials_strategy_only():
    """Each strategy's learning rate comes from its own range, as an Optuna parameter of its own (so TPE models each
    strategy's rates apart); a strategy the mapping leaves out samples nothing for that key."""
    import optuna

    from hftl.tasks import get_recipe_class
    from hftl.tune.space import parse_space

    space, problems = parse_space(PER_STRATEGY, get_recipe_class("text-classification"), "full")
    assert problems == []
    assert space.to_data() == PER_STRATEGY  # written back as it was given (the study's identity, the report)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(24):
        trial = study.ask()
        values = space.sample(trial, "full")
        rate = values["training.learning_rate"]
        if values["model.strategy"] == "full":
            assert 1.0e-5 <= rate <= 1.0e-4 and "training.num_train_epochs" not in values
            assert set(trial.params) == {"model.strategy", "training.learning_rate[full]"}
        else:
            assert 1.0e-3 <= rate <= 1.0e-2 and values["training.num_train_epochs"] in (3, 4)
            assert set(trial.params) == {"model.strategy", "model.lora.r", "training.learning_rate[lora]",
                                         "training.num_train_epochs[lora]"}
        study.tell(trial, 0.5)
    assert {t.params["model.strategy"] for t in study.trials} == {"full", "lora"}


def test_bad_ranges_per_strategy_list_every_problem():
    from hftl.tasks import get_recipe_class
    from hftl.tune.space import parse_space

    bad = {"model.strategy": ["full", "lora"],
           "training.learning_rate": {"full": {"low": 1e-3, "high": 1e-5}, "lora": {"low": 0, "high": 1, "log": True}},
           "training.weight_decay": {"full": [0.0, 0.1], "high": 0.3},   # strategies mixed with a range key
           "model.lora.r": {"full": [4], "lora": [8]},                    # a LoRA setting for full trials
           "training.warmup_steps": {"freeze": [0.0, 0.1]},               # a strategy no trial uses
           "training.num_train_epochs": {"lroa": [2, 3]}}                 # a misspelt strategy
    _, problems = parse_space(bad, get_recipe_class("text-classification"), "full")
    expected = ["search.training.learning_rate.full: low (0.001) is greater than high (1e-05)",
                "search.training.learning_rate.lora: a log range needs low > 0",
                "search.training.weight_decay: mixes strategies with high",
                "search.model.lora.r: applies only to strategy 'lora'; give one range or list, not one per strategy",
                "search.training.warmup_steps.freeze: applies only to strategy 'freeze', which no trial uses",
                "search.training.num_train_epochs: unknown range key 'lroa'. Did you mean 'lora'?",
                "search.training.num_train_epochs: missing 'low'", "search.training.num_train_epochs: missing 'high'"]
    assert len(problems) == len(expected), problems
    for text in expected:
        assert any(text in problem for problem in problems), (text, problems)


def _callback_setup(tmp_path, finished_values, intermediate_steps=(1,), prune_after_epochs=0.0, pruner="median",
                    startup_trials=4):
    import optuna
    from optuna.trial import create_trial

    from hftl.tune.pruners import make_pruner
    from hftl.tune.report import TrialReportCallback, open_storage

    url = f"journal:{tmp_path / 'journal.log'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize",
                                pruner=make_pruner(pruner, startup_trials))
    for value in finished_values:
        study.add_trial(create_trial(value=value, intermediate_values={step: value for step in intermediate_steps}))
    trial = study.ask()
    storage = open_storage(url)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("s"), trial.number)
    spec = {"storage": url, "study": "s", "trial_id": trial_id, "metric": "eval_f1", "pruner": pruner,
            "startup_trials": startup_trials}
    if prune_after_epochs is not None:
        spec["prune_after_epochs"] = prune_after_epochs
    callback = TrialReportCallback(spec)
    return study, trial, callback


@pytest.mark.parametrize("trials, pruned", [(12, True), (24, False)])
def test_no_trial_is_pruned_before_the_random_start_up_trials_finished(tmp_path, trials, pruned):
    """The pruner waits for as many finished trials as TPE draws at random (`startup_trials`): 4 of a 12-trial
    budget, 8 of a 24-trial one; with 4 finished, a trial far below their median is stopped only in the first."""
    from transformers import TrainerControl

    from hftl.tune.defaults import startup_trials

    assert (startup_trials(12), startup_trials(24), startup_trials(100), startup_trials(3)) == (4, 8, 10, 2)
    study, trial, callback = _callback_setup(tmp_path, [0.8, 0.85, 0.9, 0.9], intermediate_steps=(800,),
                                             startup_trials=startup_trials(trials))
    control = callback.on_evaluate(_train_args(32), _state(25, epoch=0.2), TrainerControl(),
                                   metrics={"eval_f1": 0.1, "eval_loss": 0.3})
    assert control.should_training_stop is pruned


def test_the_pruning_rule_in_words():
    from hftl.tune.summary import pruning_text

    chance = "no better than an answer that ignores the input"
    assert pruning_text("median", 8, 0.5) == \
        f"median, no trial stopped before 8 had finished unless {chance}, none judged before epoch 0.5"
    assert pruning_text("halving", 8, 1.0) == f"halving, a trial {chance} stopped, none judged before epoch 1"
    assert pruning_text("quartile", 4, 0.0) == f"quartile, no trial stopped before 4 had finished unless {chance}"
    assert pruning_text("none", 8, 0.5) == "none"
    assert pruning_text("progress", 8, 0.4) == ("progress (the median at an equal share of each trial's schedule), "
                                                f"no trial stopped before 8 had finished unless {chance}, none judged "
                                                "before epoch 0.4")
    assert pruning_text("progress-examples", 8, 0.4).startswith(
        "progress-examples (the median of the finished trials, each at the earlier of an equal share of its schedule "
        "and equal training examples), no trial stopped before 8")


@pytest.mark.parametrize("pruner", ["progress", "median", "halving", "none"])
def test_a_trial_no_better_than_chance_is_stopped_before_the_start_up_finished(tmp_path, pruner):
    """With no trial finished (the median pruner would stop nothing), a warmed-up trial whose best value so far
    does not beat chance is stopped, and its reason recorded; one that beat it once, one above it, or one not yet
    warmed up goes on. `--pruner none` stops nothing."""
    from transformers import TrainerControl

    from hftl.tune.report import PRUNED_AT, PRUNED_AT_CHANCE, PRUNED_BECAUSE, TrialReportCallback

    study, trial, callback = _callback_setup(tmp_path, [], prune_after_epochs=0.5, pruner=pruner)
    chance = 0.4995  # a random guess's macro-F1 on a binary split
    args = _train_args(32)

    def evaluations(*values_at_epochs):
        """Whether each evaluation stopped a fresh trial's callback (steps 1, 2, ...: no step told twice)."""
        fresh = TrialReportCallback(callback.spec, chance)
        start = evaluations.step
        evaluations.step += len(values_at_epochs)
        return [fresh.on_evaluate(args, _state(start + i, epoch=epoch), TrainerControl(),
                                  metrics={"eval_f1": value}).should_training_stop
                for i, (value, epoch) in enumerate(values_at_epochs)]
    evaluations.step = 1

    stops = pruner != "none"
    assert evaluations((chance, 0.2), (0.6, 0.6)) == [False, False]  # judged from epoch 0.5 only; then beats it
    assert evaluations((0.36, 0.2), (chance + 1e-12, 0.7)) == [False, stops]  # a tie (float noise) does not beat it
    attrs = study.get_trials(deepcopy=False)[trial.number].user_attrs
    assert (attrs.get(PRUNED_BECAUSE), attrs.get(PRUNED_AT)) == ((PRUNED_AT_CHANCE, 2) if stops else (None, None))
    assert evaluations((0.7, 0.2), (0.36, 0.6)) == [False, False]  # its best so far (0.7) beat chance


def test_chance_reaches_the_trial_under_the_metric_names_evaluations_log(tmp_path, tiny_bert_dir, monkeypatch):
    """A classifier's chance is the best of its validation split's most frequent class and random guesses, scored
    under the names its evaluations log (`eval_f1` -> `f1`), and `hftl.trainer` hands it to the trial's callback."""
    import datasets
    import numpy as np
    from transformers import EvalPrediction

    from hftl import TextClassificationRecipe
    from hftl.data.labels import LabelMap
    from hftl.tune.report import TRIAL_ENV, TrialReportCallback, add_trial_callback

    recipe = TextClassificationRecipe(tiny_config(tmp_path, tiny_bert_dir))
    labels = LabelMap(("neg", "pos"))
    validation = datasets.Dataset.from_dict({"input_ids": [[1]] * 8, "labels": [0, 0, 0, 0, 0, 0, 1, 1]})
    scores = recipe.chance_scores(validation, labels)
    # by hand. "neg" for all 8 rows: accuracy 6/8, macro-F1 (6/7 + 0) / 2 = 3/7. A uniform guess deals each class's
    # rows half and half: confusion [[3, 3], [1, 1]], accuracy 4/8, F1 of neg 2 (3/4)(1/2) / (3/4 + 1/2) = 3/5, of
    # pos 2 (1/4)(1/2) / (1/4 + 1/2) = 1/3: macro 7/15, the best of the answers that ignore the input
    assert scores["accuracy"] == pytest.approx(0.75)
    assert scores["f1"] == pytest.approx(7 / 15)
    logged = recipe.compute_metrics(labels, validation)(EvalPrediction(np.zeros((8, 2)), np.array(
        validation["labels"])))
    assert logged["f1"] == pytest.approx(3 / 7)  # an all-"neg" evaluation logs the same name, below chance
    assert recipe.chance_scores(validation.remove_columns("labels"), labels) is None

    trainer = SimpleNamespace(callback_handler=SimpleNamespace(callbacks=[]))
    trainer.add_callback = trainer.callback_handler.callbacks.append
    monkeypatch.setenv(TRIAL_ENV, json.dumps({"storage": "journal:x", "study": "s", "trial_id": 3,
                                              "metric": "eval_f1", "direction": "maximize", "pruner": "median",
                                              "startup_trials": 4}))
    add_trial_callback(trainer, lambda: scores)
    callback, = [c for c in trainer.callback_handler.callbacks if isinstance(c, TrialReportCallback)]
    assert callback.chance == pytest.approx(7 / 15)
    monkeypatch.delenv(TRIAL_ENV)  # not a trial: chance is never computed
    add_trial_callback(trainer, lambda: pytest.fail("chance computed outside a trial"))


@pytest.mark.parametrize("value, pruned", [(0.1, True), (0.95, False)])
def test_report_callback_prunes_below_the_median(tmp_path, value, pruned):
    from transformers import TrainerControl

    from hftl.tune.report import PRUNED_AT

    study, trial, callback = _callback_setup(tmp_path, [0.8, 0.85, 0.9, 0.9], intermediate_steps=(800,))
    control = callback.on_evaluate(_train_args(32), _state(25, epoch=0.2), TrainerControl(),
                                   metrics={"eval_f1": value, "eval_loss": 0.3})
    assert control.should_training_stop is pruned
    frozen = study.get_trials(deepcopy=False)[trial.number]
    assert frozen.intermediate_values == {800: value}  # step = the examples seen: 25 steps x 32
    assert (PRUNED_AT in frozen.user_attrs) is pruned


@pytest.mark.parametrize("pruner, value, pruned", [("median", 0.84, True), ("quartile", 0.84, False),
                                                   ("quartile", 0.82, True)])
def test_the_quartile_pruner_stops_only_the_bottom_quarter(tmp_path, pruner, value, pruned):
    """`--pruner quartile` stops a trial below the finished trials' lower quartile (0.83 of 0.80, 0.84, 0.86,
    0.90 after as many examples), where the median pruner stops anything below their median (0.85): a trial with a
    long schedule, still climbing, is kept (docs/tuning.md, "What the pruner does")."""
    from transformers import TrainerControl

    study, trial, callback = _callback_setup(tmp_path, [0.80, 0.84, 0.86, 0.90], intermediate_steps=(1600,),
                                             pruner=pruner)
    control = callback.on_evaluate(_train_args(32), _state(50, epoch=0.9), TrainerControl(),
                                   metrics={"eval_f1": value})
    assert control.should_training_stop is pruned


def _train_args(batch, accumulation=1, world_size=1):
    return SimpleNamespace(device="cpu", per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
                           world_size=world_size)


def _state(global_step, epoch):
    return SimpleNamespace(is_world_process_zero=True, global_step=global_step, epoch=epoch)


def test_trials_of_different_batch_sizes_are_compared_after_as_many_examples(tmp_path):
    """The pruner compares a trial with the finished ones at the same step: the step is the number of training
    examples seen (optimizer steps x batch x accumulation x processes), not the evaluation's number, so a batch-8
    trial evaluating every 50 steps (400 examples) is judged against batch-32 trials (1,600 examples an evaluation)
    where both have seen 1,600 examples, not at its first evaluation against their first."""
    from transformers import TrainerControl

    finished = [0.80, 0.84, 0.86, 0.90]  # batch 32, an evaluation every 50 steps: 1,600 examples each
    study, trial, callback = _callback_setup(tmp_path, finished, intermediate_steps=(1600, 3200))
    args = _train_args(8)
    reports = [(50, 0.55), (100, 0.70), (150, 0.78), (200, 0.86)]  # at 400, 800, 1200 and 1600 examples
    for step, value in reports:
        control = callback.on_evaluate(args, _state(step, epoch=step / 450), TrainerControl(),
                                       metrics={"eval_f1": value})
        assert not control.should_training_stop  # nothing to compare with before 1,600; then above the median 0.85
    assert study.get_trials(deepcopy=False)[trial.number].intermediate_values == {400: 0.55, 800: 0.70,
                                                                                  1200: 0.78, 1600: 0.86}
    # an effective batch of 2 processes x 4 accumulated x 4 examples is 32 as well
    (tmp_path / "ddp").mkdir()
    study, trial, callback = _callback_setup(tmp_path / "ddp", finished, intermediate_steps=(1600, 3200))
    control = callback.on_evaluate(_train_args(4, accumulation=4, world_size=2), _state(50, epoch=0.9),
                                   TrainerControl(), metrics={"eval_f1": 0.82})
    assert control.should_training_stop  # below the median 0.85 at 1,600 examples


def test_no_pruning_before_the_warm_up_epochs(tmp_path):
    """A trial is judged only once it has trained `prune_after_epochs` (default 0.3): at its first evaluations a
    slow starter (full fine-tuning still in its learning-rate warm-up, F1 at the constant-prediction 0.36 after 800
    examples, 0.82 after 1,600 on SST-2's 3,600 training rows) looks like a bad trial. Its values are reported either
    way. At batch 32 the default judges from 1,600 examples (0.44 epoch there), not from the next evaluation after
    0.5 epoch."""
    from transformers import TrainerControl

    from hftl.tune.defaults import DEFAULT_PRUNE_AFTER_EPOCHS

    assert DEFAULT_PRUNE_AFTER_EPOCHS == 0.3
    study, trial, callback = _callback_setup(tmp_path, [0.8, 0.85, 0.9, 0.9], intermediate_steps=(800, 1600),
                                             prune_after_epochs=None)
    args = _train_args(32)
    early = callback.on_evaluate(args, _state(25, epoch=800 / 3600), TrainerControl(), metrics={"eval_f1": 0.36})
    assert not early.should_training_stop
    late = callback.on_evaluate(args, _state(50, epoch=1600 / 3600), TrainerControl(), metrics={"eval_f1": 0.36})
    assert late.should_training_stop
    assert study.get_trials(deepcopy=False)[trial.number].intermediate_values == {800: 0.36, 1600: 0.36}
    # batch 8 evaluates every 400 examples: judged from 1,200 (0.33 epoch), one evaluation before 0.4 would judge it
    (tmp_path / "batch8").mkdir()
    study, trial, callback = _callback_setup(tmp_path / "batch8", [0.8, 0.85, 0.9, 0.9], intermediate_steps=(800, 1200),
                                             prune_after_epochs=None)
    args = _train_args(8)
    assert not callback.on_evaluate(args, _state(100, epoch=800 / 3600), TrainerControl(),
                                    metrics={"eval_f1": 0.36}).should_training_stop
    assert callback.on_evaluate(args, _state(150, epoch=1200 / 3600), TrainerControl(),
                                metrics={"eval_f1": 0.36}).should_training_stop


def test_sampler_seed_gives_the_same_order_and_a_restart_draws_new_points(tmp_path, tiny_bert_dir):
    """--sampler-seed: two studies visit the same points (how pruning is compared with no pruning); a restarted
    worker continues from seed + trials so far instead of drawing its first points again. No training here."""
    from hftl.tune.study import TuneOptions, open_study, prepare

    config = write_config(tmp_path, tiny_bert_dir)

    def draws(name: str, n: int, seed=7) -> list[dict]:
        options = TuneOptions(trials=24, sampler_seed=seed)
        plan = prepare(config, [f"training.output_dir={tmp_path / name}"], options)
        study, _ = open_study(plan, options)
        points = []
        for _ in range(n):
            trial = study.ask()
            points.append(plan.space.sample(trial, "full"))
            study.tell(trial, 0.5)
        return points

    first = draws("a", 3)
    assert draws("b", 3) == first and draws("c", 3, seed=8) != first
    restarted = draws("a", 2)  # study a holds 3 trials: the restart draws from seed 7 + 3
    assert restarted != first[:2] and restarted == draws("d", 5, seed=10)[:2]


def test_a_stopped_trial_does_not_suggest_resuming_it(monkeypatch):
    """A trial's process stopped by a signal says the study replaces it, not `hftl train ... --resume` (a trial is
    never resumed)."""
    from hftl.callbacks import GracefulStopCallback
    from hftl.errors import TrainingInterrupted
    from hftl.tune.report import TRIAL_ENV, TrialReportCallback, add_trial_callback

    stop = GracefulStopCallback("hftl train c.yaml --set training.output_dir=study/trial-3 --resume")
    trainer = SimpleNamespace(callback_handler=SimpleNamespace(callbacks=[stop]))
    trainer.add_callback = trainer.callback_handler.callbacks.append
    monkeypatch.setenv(TRIAL_ENV, json.dumps({"storage": "journal:x", "study": "s", "trial_id": 3,
                                              "metric": "eval_f1", "pruner": "median",
                                              "startup_trials": 4}))
    add_trial_callback(trainer)
    assert any(isinstance(c, TrialReportCallback) for c in trainer.callback_handler.callbacks)
    stop.received, stop.stopped_at = "SIGTERM", 5
    with pytest.raises(TrainingInterrupted) as caught:
        stop.on_train_end(SimpleNamespace(output_dir="study/trial-3"), SimpleNamespace(max_steps=10), None)
    message = str(caught.value)
    assert "--resume" not in message and "marked failed" in message and "hftl tune" in message, message


def test_stale_trials(monkeypatch):
    import socket
    from datetime import datetime

    from hftl.tune.study import HEARTBEAT, WORKER, is_stale

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = time.time()

    def trial(host, pid, beat):
        return SimpleNamespace(user_attrs={WORKER: {"host": host, "pid": pid}, HEARTBEAT: beat},
                               datetime_start=datetime.fromtimestamp(now))

    here = socket.gethostname()
    assert is_stale(trial(here, dead.pid, now), 120, now)          # its worker died on this machine
    assert not is_stale(trial(here, os.getpid(), now), 120, now)   # alive
    assert not is_stale(trial("elsewhere", 1, now - 60), 120, now)  # another machine, recent heartbeat
    assert is_stale(trial("elsewhere", 1, now - 600), 120, now)     # another machine, silent too long


def test_launcher_runs_the_trial_command_once_per_trial(tmp_path):
    from hftl.tune.study import TuneOptions, run_settings, train_command

    plan = SimpleNamespace(config_path=tmp_path / "c.yaml", overrides=["data.max_train_samples=10"])
    settings = run_settings(plan, {"model.strategy": "lora", "training.learning_rate": 1e-4}, tmp_path / "trial-3")
    command = train_command(plan, TuneOptions(launcher="accelerate launch --num_processes 2"), settings)
    assert command[:6] == ["accelerate", "launch", "--num_processes", "2", "-m", "hftl.cli"]
    assert command[6:8] == ["train", str(tmp_path / "c.yaml")]
    sets = [command[i + 1] for i, a in enumerate(command) if a == "--set"]
    assert sets[:3] == ["data.max_train_samples=10", 'model.strategy="lora"', "training.learning_rate=0.0001"]
    assert f"training.output_dir={tmp_path / 'trial-3'}" in sets and "data.test=" in sets  # test unseen


# -- trials through the storage ----------------------------------------------------------------------------------------------
# A stand-in for a trial's `hftl train` process, run through --launcher (`PY STAND_IN -m hftl.cli train CONFIG --set
# ...`): it reports two evaluations to the study from its own process (as the trial callback does, without loading
# transformers: seconds, not a training run), and writes the run folder records the tuner reads. Its metric is a function of the sampled learning rate, so a trial's value
# shows that it came from that trial's own process.
STAND_IN = """
import json, os, sys, time
from pathlib import Path
import optuna

sets = dict(a.split("=", 1) for a in sys.argv[sys.argv.index("--set") + 1::2])
out = Path(sets["training.output_dir"])
out.mkdir(parents=True)
f1 = float(sets["training.learning_rate"]) * 10
spec = json.loads(os.environ["HFTL_TUNE_TRIAL"])
storage = optuna.storages.RDBStorage(spec["storage"])
study = optuna.load_study(study_name=spec["study"], storage=storage)
trial = optuna.trial.Trial(study, spec["trial_id"])
deadline = time.time() + 120  # the first trials wait for each other: both workers run trials, at the same time
while len({t.user_attrs.get("worker", {}).get("pid") for t in study.get_trials()} - {None}) < 2:
    if time.time() > deadline:
        sys.exit("the other worker never started a trial")
    time.sleep(0.2)
history = []
for step, value in ((1, f1 / 2), (2, f1)):
    trial.report(value, step)
    history.append({spec["metric"]: value, "step": step})
(out / "trainer_state.json").write_text(json.dumps({"log_history": history}))
(out / "metrics.json").write_text(json.dumps({"validation": {"f1": f1}}))
"""


def test_concurrent_workers_on_an_rdb_storage(tmp_path, tiny_bert_dir):
    """Two workers on one SQLite storage (an RDB URL, through SQLAlchemy) give N distinct trials, each valued by its
    own process's reports. The trials' processes are stand-ins (see STAND_IN): the storage is what is tested here;
    real trials on the default journal storage are `concurrent_study`'s."""
    import optuna

    config = write_config(tmp_path, tiny_bert_dir, search={"training.learning_rate": {"low": 1e-3, "high": 9e-2}})
    stand_in = tmp_path / "stand_in.py"
    stand_in.write_text(STAND_IN)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    args = ("--trials", "4", "--no-select", "--storage", url, "--launcher", f"{sys.executable} {stand_in}")
    outputs = [finish(w, timeout=300) for w in [worker(config, *args) for _ in range(2)]]
    trials = optuna.load_study(study_name="study", storage=url).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    others = [t for t in trials if t.state.name != "COMPLETE"]
    assert len(complete) == 4 and len({t.number for t in complete}) == 4, (trials, outputs)
    assert all("surplus" in t.user_attrs["failed_because"] for t in others) and len(others) <= 1
    workers = {t.user_attrs["worker"]["pid"] for t in complete}
    assert len(workers) == 2, "both workers ran trials"
    for t in complete:
        assert t.user_attrs["process_cpu_seconds"] > 0  # the trial process's compute, not the machine's
        f1 = t.params["training.learning_rate"] * 10
        assert t.value == pytest.approx(f1)
        assert t.intermediate_values == pytest.approx({1: f1 / 2, 2: f1})
        assert json.loads((tmp_path / "study" / f"trial-{t.number}" / RunDir.METRICS).read_text()) == {
            "validation": {"f1": pytest.approx(f1)}}
    assert not (tmp_path / "study" / "optuna-journal.log").exists()  # the storage named, no journal besides
    assert url.split("///")[1] in (tmp_path / "study" / "study.json").read_text()


def test_workers_opening_a_new_rdb_storage_at_once(tmp_path):
    """Workers started together on a new database race to create its tables (Optuna checks for a table, then
    creates it): every one of them opens the storage, and the schema is recorded once."""
    import sqlite3
    import threading

    import optuna

    from hftl.tune.report import open_storage

    url = f"sqlite:///{tmp_path / 'new.db'}"
    barrier, errors = threading.Barrier(4), []

    def open_at_once():
        barrier.wait()
        try:
            open_storage(url)
        except Exception as err:  # noqa: BLE001 (any failure is the finding)
            errors.append(err)

    threads = [threading.Thread(target=open_at_once) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with sqlite3.connect(tmp_path / "new.db") as db:
        assert db.execute("select count(*) from alembic_version").fetchone() == (1,)
        assert db.execute("select count(*) from version_info").fetchone() == (1,)
    optuna.create_study(study_name="s", storage=open_storage(url)).optimize(lambda t: t.suggest_float("x", 0, 1), 2)
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 2


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_trial_under_a_two_process_launch(tmp_path, tiny_bert_dir):
    """--launcher: one trial is one `accelerate launch` of two processes (recipes/accelerate/cpu_ddp.yaml, which
    really starts two on CPU), its parameters sampled once by the tuner: one trial in the storage, its run trained
    at world size 2 with the sampled value, each evaluation reported once."""
    config = write_config(tmp_path, tiny_bert_dir, search={"training.learning_rate": {"low": 5e-3, "high": 3e-2}},
                          num_train_epochs=1)
    accelerate_config = Path(__file__).resolve().parent.parent / "recipes" / "accelerate" / "cpu_ddp.yaml"
    launcher = (f"{sys.executable} -m accelerate.commands.launch --config_file {accelerate_config} "
                f"--main_process_port {_free_port()}")
    out = finish(worker(config, "--trials", "1", "--no-select", "--launcher", launcher), timeout=400)
    study = tmp_path / "study"
    trials = load_trials(study)
    assert [t.state.name for t in trials] == ["COMPLETE"], (out[-2000:], _log_tail(study))
    trial, run = trials[0], RunDir(study / "trial-0")
    assert json.loads((run.path / RunDir.MANIFEST).read_text())["training"]["world_size"] == 2
    saved = yaml.safe_load((run.path / RunDir.CONFIG).read_text())
    assert saved["training"]["learning_rate"] == trial.params["training.learning_rate"]
    evals = {e["step"]: e["eval_f1"] for e in run.trainer_state()["log_history"] if "eval_f1" in e}
    examples_per_step = 2 * saved["training"]["per_device_train_batch_size"]  # two processes, no accumulation
    assert trial.intermediate_values == pytest.approx({s * examples_per_step: v for s, v in evals.items()}) and evals
    evals = list(evals.values())
    assert trial.value == pytest.approx(max(evals))


def _log_tail(study: Path) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted((study / "logs").glob("*.log")))


# -- real studies ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def concurrent_study(tmp_path_factory, tiny_bert_dir):
    """Two workers started together on one study (the default journal storage), 3 trials in all."""
    folder = tmp_path_factory.mktemp("tune")
    config = write_config(folder, tiny_bert_dir, search=STUDY_SPACE)
    # the config's own strategy is one no trial samples: whatever shows it instead of a trial's is caught
    data = yaml.safe_load(config.read_text())
    data["model"]["strategy"] = "freeze"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    workers = [worker(config, "--trials", "3", "--no-select") for _ in range(2)]
    outputs = [finish(w) for w in workers]
    return SimpleNamespace(config=config, study=folder / "study", outputs=outputs)


def test_concurrent_workers_give_n_distinct_trials(concurrent_study):
    trials = load_trials(concurrent_study.study)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    others = [t for t in trials if t.state.name != "COMPLETE"]
    assert len(complete) == 3
    assert len({t.number for t in complete}) == 3
    # at most one surplus ask (both workers asked for the last trial at once), never run
    assert all("surplus" in t.user_attrs["failed_because"] for t in others) and len(others) <= 1
    overhead = json.loads((concurrent_study.study / "study.json").read_text())["overhead"]
    assert overhead["started_by"] == {"fork": 3} and overhead["mean_process_start_seconds"] > 0
    for t in complete:
        # each trial a process forked from its worker's preloaded server (hftl.tune.trial_process), its start and
        # compute measured: the first trial of a worker waits for the server's imports, later ones fork at once
        assert t.user_attrs["process_started_by"] == "fork" and t.user_attrs["process_cpu_seconds"] > 0
        assert 0 < t.user_attrs["process_start_seconds"] < t.user_attrs["process_seconds"]
        run = RunDir(concurrent_study.study / f"trial-{t.number}")
        metrics = run.metrics()
        assert "test" not in metrics and "validation" in metrics  # the search never sees test
        # the objective is the best evaluation, not the last
        evals = [e["eval_f1"] for e in run.trainer_state()["log_history"] if "eval_f1" in e]
        assert t.value == pytest.approx(max(evals))
        assert len(t.intermediate_values) == len(evals)  # every evaluation reported
        # the conditional LoRA setting: sampled in lora trials only, and a lora trial trained with it
        strategy = t.params["model.strategy"]
        assert ("model.lora.r" in t.params) == (strategy == "lora")
        saved = yaml.safe_load((run.path / RunDir.CONFIG).read_text())
        assert saved["model"]["strategy"] == strategy
        # the learning rate from the strategy's own range, set on the config key (not on the Optuna name)
        assert saved["training"]["learning_rate"] == t.params[f"training.learning_rate[{strategy}]"]
        assert f"training.learning_rate[{'full' if strategy == 'lora' else 'lora'}]" not in t.params
        if strategy == "lora":
            assert saved["model"]["lora"]["r"] == t.params["model.lora.r"]
            assert json.loads((run.path / "adapter_config.json").read_text())["r"] == t.params["model.lora.r"]


def test_selection_over_seeds_best_yaml_and_compare(concurrent_study, capsys):
    import statistics

    from hftl.cli import main
    from hftl.compare import compare_runs

    study = concurrent_study.study
    before = {p.name: (p / RunDir.METRICS).stat().st_mtime for p in study.glob("trial-*")}
    assert main(["tune", str(concurrent_study.config), "--trials", "3", "--top", "2", "--seeds", "2",
                 "--pruner", "none"]) == 0
    out = capsys.readouterr().out
    trials = load_trials(study)
    assert len(trials) == len(before) + sum(1 for t in trials if "surplus" in t.user_attrs.get("failed_because", ""))
    record = json.loads((study / "study.json").read_text())
    selection = record["selection"]
    ranked = sorted((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: -t.value)[:2]
    assert [c["trial"] for c in selection["candidates"]] == [t.number for t in ranked]
    for candidate in selection["candidates"]:
        group = study / f"rerun-{candidate['trial']}"
        aggregate = RunDir(group).metrics()
        assert aggregate["runs"] == [f"../trial-{candidate['trial']}", "seed-43"] and aggregate["seeds"] == [42, 43]
        objectives = [max(e["eval_f1"] for e in RunDir(group / r).trainer_state()["log_history"] if "eval_f1" in e)
                      for r in aggregate["runs"]]
        assert candidate["mean"] == pytest.approx(statistics.fmean(objectives))
        assert candidate["std"] == pytest.approx(statistics.stdev(objectives))
        assert "test" not in RunDir(group / "seed-43").metrics() or candidate["trial"] == selection["picked"]
        # the group's card names the configuration its runs trained (the trial's), not the study config's
        strategy = next(t.params["model.strategy"] for t in trials if t.number == candidate["trial"])
        assert f"strategy {strategy})" in (group / RunDir.CARD).read_text()
    picked = max(selection["candidates"], key=lambda c: c["mean"])
    assert selection["picked"] == picked["trial"]
    # test: evaluated on the pick's runs only, once
    for trial_dir in study.glob("trial-*"):
        has_test = "test" in RunDir(trial_dir).metrics()
        assert has_test == (trial_dir.name == f"trial-{picked['trial']}")
        if trial_dir.name != f"trial-{picked['trial']}":
            assert (trial_dir / RunDir.METRICS).stat().st_mtime == before[trial_dir.name]  # never re-run
    assert "test" in RunDir(study / f"rerun-{picked['trial']}").metrics()
    card = (study / f"trial-{picked['trial']}" / RunDir.CARD).read_text()
    assert "### How the hyperparameters were chosen" in card and "2 seeds each" in card
    assert "Optuna TPE and no pruner;" in card  # --pruner none
    report = (study / "README.md").read_text()
    assert "**(picked)**" in report and " ± " in report and "evaluated once" in report
    assert "picked trial-" in out and "test (evaluated once)" in out

    # best.yaml is a plain config that hftl train reproduces: the picked trial's validation metric, same seed
    best = yaml.safe_load((study / "best.yaml").read_text())
    assert "search" not in best and best["training"]["seed"] == 42
    assert main(["train", str(study / "best.yaml")]) == 0
    again = RunDir(best["training"]["output_dir"]).trainer_state()["log_history"]
    original = RunDir(study / f"trial-{picked['trial']}").trainer_state()["log_history"]
    for key in ("eval_f1", "eval_loss"):
        assert [e[key] for e in again if key in e] == pytest.approx([e[key] for e in original if key in e], abs=1e-4)

    # hftl compare of the study: one row per trial and per seed group, Optuna's figures
    comparison = compare_runs([study])
    names = [r["run"] for r in comparison.rows]
    assert {f"rerun-{c['trial']}" for c in selection["candidates"]} <= set(names)
    assert {f"trial-{t.number}" for t in trials if t.state.name == "COMPLETE"} <= set(names)
    assert "model.strategy" in comparison.config_diff or len({t.params["model.strategy"] for t in trials}) == 1
    files = comparison.write(study / "compare-again")
    assert {"optimization_history", "parallel_coordinate"} <= set(files)


def test_killed_worker_restarts_without_losing_or_repeating_trials(tmp_path, tiny_bert_dir):
    from optuna.trial import TrialState

    # 200 epochs (600 steps; at 40, a trial on an idle machine finished before the kill reached it): forked trials
    # start at once, so the kill must land in a trial's training, not after it; it is sent as soon as trial 1's log
    # shows its first step
    config = write_config(tmp_path, tiny_bert_dir, search={"training.learning_rate": {"low": 5e-3, "high": 3e-2}},
                          num_train_epochs=200)
    study = tmp_path / "study"
    first = worker(config, "--trials", "2", "--no-select")
    deadline = time.time() + 300
    log = study / "logs" / "trial-1.log"
    while time.time() < deadline:  # kill the worker while trial 1 trains
        if log.is_file() and "'loss'" in log.read_text():
            assert [t.state for t in load_trials(study) if t.number == 1] == [TrialState.RUNNING]
            break
        assert first.poll() is None, first.communicate()[0][-3000:]
        time.sleep(0.2)
    else:
        pytest.fail("trial 1 never started")
    finished_first = (study / "trial-0" / RunDir.METRICS).stat().st_mtime
    first.send_signal(signal.SIGKILL)
    first.communicate()
    out = finish(worker(config, "--trials", "2", "--no-select"))
    trials = load_trials(study)
    states = {t.number: t.state.name for t in trials}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE"}, (states, out[-2000:])
    assert "interrupted" in trials[1].user_attrs["failed_because"]
    assert (study / "trial-0" / RunDir.METRICS).stat().st_mtime == finished_first  # a complete trial is not re-run
    assert (study / "trial-2" / RunDir.METRICS).is_file()
    assert not (study / "trial-1" / RunDir.METRICS).is_file()  # the interrupted trial never finished
    # its tuner's death reached it (through the fork server's exit and PR_SET_PDEATHSIG): it stopped, not finished
    assert "SIGTERM received: stopping after this step" in (study / "logs" / "trial-1.log").read_text()


def _benchmark(name: str):
    """A script of `benchmarks/` (not a package) as a module."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _replayed_trial(number, values):
    """A finished trial as `study.json` records it: `values` at 400, 800, ... examples; 100 CPU s."""
    return {"number": number, "value": max(values), "user_attrs": {"process_cpu_seconds": 100.0},
            "intermediate_values": {str(400 * (i + 1)): v for i, v in enumerate(values)}}


def test_the_pruning_replay_applies_the_chance_bar_during_the_start_up():
    """`benchmarks/pruning_replay.py --chance`: the replay stops a trial whose best value so far never beat the
    bar, from the warm-up on, although too few trials have finished for the median; CPU is charged pro rata, as it
    is in the bound (every trial but the best stopped at its first evaluation past the warm-up)."""
    module = _benchmark("pruning_replay")
    trial = _replayed_trial
    trials = [trial(0, [0.35, 0.35, 0.35, 0.35]), trial(1, [0.6, 0.7, 0.8, 0.85]), trial(2, [0.35, 0.5, 0.6, 0.7])]
    plain = module.replay(trials, 800, warm_up=0.5, startup=8)
    assert (plain["stopped"], plain["saved"]) == ([], 0.0)  # 8 start-up trials: the median stops nothing
    barred = module.replay(trials, 800, warm_up=0.5, startup=8, chance=0.35)
    # judged from 400 examples (half an epoch of 800), where trials 0 and 2 are at the bar: each stopped after a
    # quarter of its examples, 75 of its 100 CPU s saved
    assert (barred["stopped"], barred["at_chance"]) == ([0, 2], [0, 2])
    assert barred["saved"] == pytest.approx(2 * 75 / 300)
    assert (barred["best"], barred["best_trial"]) == (0.85, 1)
    late = module.replay(trials, 400, warm_up=2.0, startup=8, chance=0.35)  # from 800: trial 2 has beaten it
    assert (late["stopped"], late["saved"]) == ([0], pytest.approx(50 / 300))
    # the bound stops every trial but the best (1) at its first evaluation past the warm-up: from 400 examples,
    # 75 of 100 CPU s saved on trials 0 and 2; from 1,200 (1.5 epochs of 800), 25 each
    assert module.bound(trials, 800, warm_up=0.5, best_number=1) == pytest.approx(150 / 300)
    assert module.bound(trials, 800, warm_up=1.5, best_number=1) == pytest.approx(50 / 300)
    # `progress` needs each trial's schedule: the replay gives it a trial's last step (a 1,600-example trial, then an
    # 800-example one). At 400 examples, half its schedule, the short trial (0.55) is under the long one at half of
    # its (0.6 at 800) and stopped; at equal examples it is above it (0.5 at 400, then 0.6 against 0.65 at 800)
    trials = [trial(0, [0.5, 0.6, 0.7, 0.9]), trial(1, [0.55, 0.65])]
    assert module.replay(trials, 400, warm_up=0.0, pruner="progress", startup=1)["stopped"] == [1]
    assert module.replay(trials, 400, warm_up=0.0, pruner="median", startup=1)["stopped"] == []


def test_the_pruning_variants_change_one_thing_each():
    """`benchmarks/pruning_variants.py`: each variant of the progress median decides as it says, on the short trial
    the progress median stops (0.55 at half its schedule, against the long trial's 0.6 at half of its)."""
    module = _benchmark("pruning_variants")
    trials = [_replayed_trial(0, [0.5, 0.6, 0.7, 0.9]), _replayed_trial(1, [0.55, 0.65])]

    def replayed(build):
        r = module.pruning_replay.replay(trials, 400, warm_up=0.0, pruner=build, startup=1)
        return r["stopped"], r["saved"]

    assert replayed(module.VARIANTS["progress (`--pruner progress`)"]) == ([1], pytest.approx(50 / 200))
    assert replayed(module.VARIANTS["0.01 under the median"]) == ([1], pytest.approx(50 / 200))  # 0.55 < 0.59
    # kept at half its schedule (0.55 >= 0.6 - 0.06); at its end, 0.65 against the long trial's 0.9 at its end
    assert replayed(lambda n: module.ProgressVariant(n, margin=0.06)) == ([1], 0.0)
    # not judged at half its schedule; at its end, 0.65 against the long trial's 0.9: stopped, nothing saved
    assert replayed(lambda n: module.ProgressVariant(n, min_share=0.6)) == ([1], 0.0)
    # at 400 examples the long trial is compared at 400 (0.5), not at half its schedule (0.6 at 800); at 800 the
    # short trial's best, 0.65, is above the long one's 0.6 at 800 (shipped: `--pruner progress-examples`)
    assert replayed(module.VARIANTS["the earlier of equal share and equal examples (`--pruner progress-examples`)"]) \
        == replayed("progress-examples") == ([], 0.0)
    # one standard error of 400 rows at 0.6 is 0.0245: 0.55 is still under 0.5755
    assert replayed(module.VARIANTS["one standard error under the median"])[0] == [1]
    # judged on the loss: at half its schedule its lowest loss, 0.45, is under the long trial's 0.5 at half of its;
    # at its end, 0.44 against the long trial's 0.3 at its end: stopped, nothing saved
    for t, losses in zip(trials, ([0.7, 0.5, 0.4, 0.3], [0.45, 0.44])):
        t["user_attrs"][module.EVAL_LOSS] = {400 * (i + 1): loss for i, loss in enumerate(losses)}
    assert replayed(module.VARIANTS["judged on the validation loss"]) == ([1], 0.0)
    # and only on the losses so far: at half its schedule 0.52 is above 0.5 (its later 0.40 is not seen yet)
    trials[1]["user_attrs"][module.EVAL_LOSS] = {400: 0.52, 800: 0.40}
    assert replayed(module.VARIANTS["judged on the validation loss"]) == ([1], pytest.approx(50 / 200))


def test_the_report_says_which_trials_were_stopped_as_no_better_than_chance():
    from hftl.tune.report import PRUNED_AT_CHANCE, PRUNED_BECAUSE
    from hftl.tune.summary import render_report

    def trial(number, state, **attrs):
        return {"number": number, "state": state, "value": 0.5, "params": {}, "intermediate_values": {"400": 0.5},
                "user_attrs": attrs}

    record = {"study": "s", "storage": "journal", "objective": {"metric": "f1", "direction": "maximize"},
              "pruner": "median", "startup_trials": 8, "prune_after_epochs": 0.5, "space_source": "config",
              "space": {}, "space_sources": {},
              "trials": [trial(0, "PRUNED", **{PRUNED_BECAUSE: PRUNED_AT_CHANCE}),
                         trial(1, "PRUNED", **{PRUNED_BECAUSE: "pruner"}), trial(2, "COMPLETE")]}
    rows = [line for line in render_report(record).splitlines() if line.startswith("| trial-")]
    assert [row.split(" | ")[1] for row in rows] == ["pruned (at chance)", "pruned", "complete"]


def _finished_trial(curve: dict):
    """A finished trial of `curve` (training examples -> objective) whose schedule ended at its last step."""
    from optuna.trial import create_trial

    from hftl.tune.pruners import SCHEDULE_EXAMPLES

    return create_trial(value=max(curve.values()), intermediate_values=curve,
                        user_attrs={SCHEDULE_EXAMPLES: max(curve)})


def _judged(pruner: str, curve: dict, total: int | None, comparators) -> bool:
    """Whether `pruner`, with 3 start-up trials and the finished `comparators` (curves), stops a trial that reported
    `curve` on a schedule of `total` examples."""
    import optuna

    from hftl.tune.pruners import SCHEDULE_EXAMPLES, make_pruner

    study = optuna.create_study(direction="maximize", pruner=make_pruner(pruner, 3))
    for c in comparators:
        study.add_trial(_finished_trial(c))
    trial = study.ask()
    trial.set_user_attr(SCHEDULE_EXAMPLES, total)
    for step, value in curve.items():
        trial.report(value, step)
    return trial.should_prune()


def test_the_progress_pruner_compares_at_an_equal_share_of_each_schedule(tmp_path):
    """`--pruner progress` judges a trial against the finished trials' values at the same share of their own
    schedules. SST-2, sampler seed 67, in small: a 4-epoch trial (14,400 examples), 0.864 so far after 9,200, was
    stopped by the median at equal examples, whose bar there is made only of finished 3-epoch trials near their
    end (0.866, 0.868); at 64% of its schedule the finished trials stood at 0.70-0.80 (their value at the last
    evaluation within 64% of theirs), and it goes on."""
    from hftl.tune.pruners import value_at_share

    two_epochs = {1600: 0.60, 3200: 0.70, 4800: 0.78, 6400: 0.80, 7200: 0.80}  # 7,200 examples
    three_epochs = {1600: 0.70, 3200: 0.75, 6400: 0.80, 9200: 0.866, 10800: 0.87}  # 10,800 examples
    assert value_at_share(_finished_trial(three_epochs), 9200 / 14400) == 0.80  # 64% of 10,800 = 6,912: at 6,400
    assert value_at_share(_finished_trial(two_epochs), 9200 / 14400) == 0.70  # 64% of 7,200 = 4,608: at 3,200

    def judged(pruner, curve, total=14400, comparators=(two_epochs, three_epochs, {**three_epochs, 9200: 0.868})):
        return _judged(pruner, curve, total, comparators)

    long_trial = {1600: 0.80, 4800: 0.84, 9200: 0.864}
    assert judged("median", long_trial)  # below 0.867, the median of the two 3-epoch trials at 9,200 examples
    assert not judged("progress", long_trial)  # above 0.80, the median at 64% of each schedule (0.70, 0.80, 0.80)
    # a 2-epoch trial at 44% of its schedule, against 0.70, 0.75, 0.75 (3,200 of 7,200; 3,200 of 10,800, twice)
    assert judged("progress", {1600: 0.55, 3200: 0.62}, total=7200)
    assert not judged("progress", {1600: 0.76, 3200: 0.74}, total=7200)  # its best so far, 0.76, is not under 0.75
    assert not judged("progress", long_trial, comparators=(two_epochs, three_epochs))  # 2 finished < 3 start-up
    assert not judged("progress", long_trial, total=None)  # no schedule recorded: not judged


def test_progress_examples_takes_no_comparator_past_the_judged_trials_examples():
    """`--pruner progress-examples` takes each finished trial at the earlier of the judged trial's share of its
    schedule and the judged trial's examples. SST-2, sampler seed 127, in small: a 2-epoch trial (7,200 examples)
    at 3,200 examples (44%) meets 4-epoch trials (14,400) at 44% of theirs, 6,400 examples, twice its own, and the
    progress median stops it; taken at 3,200 examples they stood at 0.76-0.78, and it goes on. Against shorter
    finished trials the share is the earlier point, so both pruners compare alike there."""
    from hftl.cli import build_parser
    from hftl.tune.defaults import DEFAULT_PRUNER
    from hftl.tune.pruners import ProgressMedianPruner

    four_epochs = [{1600: 0.70, 3200: 0.78, 4800: 0.82, 6400: 0.84, 14400: 0.88},
                   {1600: 0.68, 3200: 0.76, 4800: 0.80, 6400: 0.83, 14400: 0.87},
                   {1600: 0.72, 3200: 0.77, 4800: 0.83, 6400: 0.85, 14400: 0.89}]
    two_epoch_trial = {1600: 0.74, 3200: 0.80}  # the best so far, 0.80: under 0.84 (at 6,400), over 0.77 (at 3,200)
    assert _judged("progress", two_epoch_trial, 7200, four_epochs)
    assert not _judged("progress-examples", two_epoch_trial, 7200, four_epochs)
    assert _judged("progress-examples", {1600: 0.70, 3200: 0.75}, 7200, four_epochs)  # under 0.77 at 3,200 too

    shares = ProgressMedianPruner(3, no_more_examples=True).comparator_share
    assert shares(_finished_trial(four_epochs[0]), 3200, 7200) == 3200 / 14400  # equal examples: the earlier
    assert shares(_finished_trial({1600: 0.6, 3600: 0.7}), 6400, 14400) == 6400 / 14400  # equal share: the earlier
    assert ProgressMedianPruner(3).comparator_share(_finished_trial(four_epochs[0]), 3200, 7200) == 3200 / 7200
    # a 4-epoch trial at 6,400 (44%) against 1-epoch trials (3,600) at 44% of theirs (1,600): 0.60, 0.62, 0.64
    one_epoch = [{1600: 0.60 + i / 50, 3600: 0.70} for i in range(3)]
    for pruner in ("progress", "progress-examples"):
        assert _judged(pruner, {3200: 0.55, 6400: 0.61}, 14400, one_epoch)
        assert not _judged(pruner, {3200: 0.55, 6400: 0.63}, 14400, one_epoch)
    assert build_parser().parse_args(["tune", "c.yaml", "--pruner", "progress"]).pruner == "progress"
    assert DEFAULT_PRUNER == "progress-examples"
    assert build_parser().parse_args(["tune", "c.yaml"]).pruner == DEFAULT_PRUNER


def test_a_trial_records_its_schedule_in_examples(tmp_path):
    """The `progress` pruner needs each trial's schedule: the trial's process records it when training starts, as
    optimizer steps x the effective batch (the unit of the steps it reports): 450 steps x 4 x 4 accumulated x 2
    processes."""
    from transformers import TrainerControl

    from hftl.tune.pruners import SCHEDULE_EXAMPLES

    study, trial, callback = _callback_setup(tmp_path, [], pruner="progress")
    state = SimpleNamespace(**vars(_state(0, epoch=0.0)), max_steps=450)
    callback.on_train_begin(_train_args(4, accumulation=4, world_size=2), state, TrainerControl())
    assert study.get_trials(deepcopy=False)[trial.number].user_attrs[SCHEDULE_EXAMPLES] == 450 * 32


def test_the_trial_test_scores_read_each_completed_trial_beside_its_objective(tmp_path, monkeypatch, capsys):
    """`benchmarks/trial_test_scores.py`: every COMPLETE trial (a pruned one never trained to its end) gives its
    objective from `study.json`, its final validation and test values of the study's metric from its run folder, and
    the summary spans the test values of the trials within a point of the best objective."""
    module = _benchmark("trial_test_scores")
    study = tmp_path / "study"
    trials = []
    recorded = ((0, "COMPLETE", 0.87, 0.86, 0.81), (1, "PRUNED", 0.70, 0.69, 0.6),
                (2, "COMPLETE", 0.865, 0.865, 0.85), (3, "COMPLETE", 0.80, 0.79, 0.75))
    for number, state, objective, final, test in recorded:
        trials.append({"number": number, "state": state, "value": objective, "params": {"model.strategy": "lora"}})
        RunDir(study / f"trial-{number}").write_metrics({"validation": {"f1": final, "accuracy": 0.5},
                                                         "test": {"f1": test, "accuracy": 0.5}})
    (study / "study.json").write_text(json.dumps({"objective": {"metric": "f1"}, "trials": trials}))
    scores = module.trial_scores(study, "unused.tsv")  # every trial holds test metrics: nothing is evaluated again
    assert scores == {0: {"params": {"model.strategy": "lora"}, "objective": 0.87, "final_validation": 0.86,
                          "test": 0.81},
                      2: {"params": {"model.strategy": "lora"}, "objective": 0.865, "final_validation": 0.865,
                          "test": 0.85},
                      3: {"params": {"model.strategy": "lora"}, "objective": 0.80, "final_validation": 0.79,
                          "test": 0.75}}
    monkeypatch.setattr("sys.argv", ["trial_test_scores.py", str(study), "unused.tsv", "--keep", str(tmp_path / "k")])
    module.main()
    assert "2 trials within 0.01 of the best objective 0.8700: objectives 0.8650-0.8700; test 0.8100-0.8500 " \
           "(mean 0.8300); the best objective's test 0.8100" in capsys.readouterr().out
    kept = json.loads((tmp_path / "k" / "test_scores.json").read_text())
    assert sorted(kept) == ["0", "2", "3"] and kept["2"] == {"objective": 0.865, "final_validation": 0.865,
                                                            "test": 0.85}
