"""After the search: re-run the best configurations over seeds, pick by the mean, evaluate the pick on test once,
write `best.yaml` and tell the picked run's card how its hyperparameters were chosen.

Picking the single best trial rewards luck: with many trials, the top one is partly the one whose seed suited the
validation set. `--top K --seeds S` re-runs the K best configurations with S seeds each (the trial itself is the
first seed, so S - 1 new runs each) and picks by the mean; the report shows mean ± standard deviation, and a
difference smaller than the spread is not a difference.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
from pathlib import Path

import yaml

from hftl.errors import HftlError
from hftl.files import portable_path, write_atomic
from hftl.run_dir import RunDir
from hftl.tune.study import VALUES, run_objective, run_settings, train_command
from hftl.tune.report import TRIAL_ENV
from hftl.tune.trial_process import _Stop, launch
from hftl.tune.space import overrides
from hftl.tune.summary import counts, pruning_text, write_study_record

logger = logging.getLogger(__name__)


def _rerun(plan, options, values: dict, run_dir: Path, seed: int) -> None:
    """Train one more seed of a configuration (test unseen), unless a finished run is already there."""
    if (run_dir / RunDir.METRICS).is_file():
        return
    settings = [*run_settings(plan, values, run_dir, seed=seed), "overwrite=true"]  # an unfinished one is replaced
    env = {k: v for k, v in os.environ.items() if k != TRIAL_ENV}
    logger.info("re-run: seed %d -> %s", seed, run_dir)
    try:
        code = launch(train_command(plan, options, settings), plan.folder.log_file(f"{run_dir.parent.name}-"
                                                                                   f"{run_dir.name}"), env)
    except _Stop:
        raise HftlError(f"interrupted while re-running {run_dir}; run hftl tune again to continue the selection "
                        "(finished re-runs are kept).") from None
    if code != 0:
        raise HftlError(f"the re-run {run_dir} failed (exit status {code}); see "
                        f"{plan.folder.log_file(run_dir.parent.name + '-' + run_dir.name)}.")


def _write_group(plan, group: Path, runs: list[Path], seeds: list[int]) -> None:
    """The seed group's aggregate, as `hftl train --seeds` writes it (`hftl.seeds`): `hftl compare` reads it."""
    from hftl.calibration import aggregate_seeds
    from hftl.seeds import render_seed_table
    from hftl.tasks import recipe_for_run

    aggregate = aggregate_seeds([RunDir(r).metrics() for r in runs])
    names = [os.path.relpath(r, group) for r in runs]
    RunDir(group).write_metrics({**aggregate, "seeds": seeds, "runs": names})
    recipe = recipe_for_run(runs[0])  # the configuration the runs trained: the trial's, not the study config's
    shown = tuple(dict.fromkeys((*recipe.summary_metrics, *recipe.card_metrics)))
    config = dataclasses.replace(recipe.config, training={**recipe.config.training, "output_dir": str(group)})
    write_atomic(group / RunDir.CARD, render_seed_table(aggregate, seeds, shown, config))


def evaluate_on_test(plan, runs: list[Path]) -> dict | None:
    """Evaluate each run of the pick on the config's test data, once (a run that holds test metrics is not
    evaluated again); returns the mean test metrics shown in the report, or None without test data."""
    from hftl.inference import load

    source = plan.config.data.test
    if not source:
        return None
    for run_dir in runs:
        run = RunDir(run_dir)
        metrics = run.metrics()
        if "test" not in metrics:
            logger.info("evaluating the pick on test (once): %s", run_dir)
            metrics["test"] = load(run_dir).evaluate(source)
            run.write_metrics(metrics)
    recipe = plan.recipe_cls(plan.config)
    tests = [RunDir(r).metrics()["test"] for r in runs]
    shown = {}
    for name in recipe.summary_metrics:
        values = [t[name] for t in tests if isinstance(t.get(name), (int, float))]
        if values:
            shown[name] = f"{statistics.fmean(values):.4f}" + (f" ± {statistics.stdev(values):.4f}"
                                                             if len(values) > 1 else "")
    return {"source": Path(source).name, "shown": shown}


def write_best_config(plan, values: dict) -> Path:
    """`best.yaml`: the user's config with the picked values, no `search:`, paths relative to the study folder,
    its own output folder; `hftl train best.yaml` trains the picked configuration again, same seed and data."""
    from hftl.config.load import apply_overrides, read_yaml, resolve_paths

    data = read_yaml(plan.config_path)
    apply_overrides(data, [*plan.overrides, *overrides(values)])
    data.pop("search", None)
    resolve_paths(data, plan.config_path.resolve().parent)
    for section, key in (("model", "name_or_path"), ("data", "train"), ("data", "validation"), ("data", "test")):
        if isinstance(data.get(section), dict) and key in data[section]:
            data[section][key] = portable_path(data[section][key], plan.folder.path)
    data.setdefault("training", {})
    data["training"]["output_dir"] = str(plan.folder.path / "best")
    data["training"]["seed"] = plan.config.seed
    for flag in ("overwrite", "resume"):
        data.pop(flag, None)
    header = (f"# The configuration `hftl tune` picked in study {plan.study_name} ({plan.folder.path}).\n"
              f"# Reproduce it:  hftl train {plan.folder.best_config}\n"
              "# (data paths are relative to this file; output_dir, as always, to the working folder)\n")
    write_atomic(plan.folder.best_config, header + yaml.safe_dump(data, sort_keys=False))
    return plan.folder.best_config


def tuning_record(plan, options, record_counts: dict, picked: dict, seeds: int) -> dict:
    """What the picked run's card says about how its hyperparameters were chosen."""
    return {
        "study": plan.study_name,
        "objective": f"validation {plan.metric} at each trial's best evaluation ({plan.direction})",
        "space_source": plan.space.source,
        "space": {p.name: p.describe() + (f" (only in {p.strategy} trials)" if p.strategy else "")
                  for p in plan.space.params},
        "sampler": "Optuna TPE" + (f" (seed {plan.sampler_seed})" if plan.sampler_seed is not None else ""),
        "pruner": pruning_text(plan.pruner, plan.startup_trials, plan.prune_after_epochs),
        "trials": record_counts,
        "top": options.top,
        "seeds": seeds,
        "picked_trial": picked["trial"],
        "values": picked["values"],
        "validation_mean": picked["mean"],
        "validation_std": picked.get("std"),
        "test": "evaluated once, after the search, on the picked configuration only",
    }


def select(plan, options, study) -> dict:
    """Re-run, pick, evaluate on test once, write `best.yaml`, the picked cards and the report's selection."""
    from optuna.trial import TrialState

    from hftl.card import render_run_card
    from hftl.seeds import seed_values

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise HftlError(f"no trial of study '{plan.study_name}' completed, so there is nothing to pick. The reasons "
                        f"are in {plan.folder.report}.")
    ranked = sorted(complete, key=lambda t: t.value, reverse=plan.direction == "maximize")[:options.top]
    seeds = seed_values(plan.config.seed, options.seeds)
    candidates = []
    for trial in ranked:
        values = trial.user_attrs.get(VALUES, trial.params)
        runs = [plan.folder.trial_dir(trial.number)]
        if options.seeds > 1:
            group = plan.folder.rerun_dir(trial.number)
            for seed in seeds[1:]:
                _rerun(plan, options, values, group / f"seed-{seed}", seed)
                runs.append(group / f"seed-{seed}")
            _write_group(plan, group, runs, seeds)
        objectives = [run_objective(RunDir(r), plan) for r in runs]
        candidates.append({"trial": trial.number, "values": values, "objectives": objectives,
                           "runs": [os.path.relpath(r, plan.folder.path) for r in runs],
                           "mean": statistics.fmean(objectives),
                           "std": statistics.stdev(objectives) if len(objectives) > 1 else None})
    better = max if plan.direction == "maximize" else min
    picked = better(candidates, key=lambda c: c["mean"])
    picked_runs = [plan.folder.path / r for r in picked["runs"]]
    test = evaluate_on_test(plan, picked_runs)
    if options.seeds > 1:
        _write_group(plan, plan.folder.rerun_dir(picked["trial"]), picked_runs, seeds)
    best = write_best_config(plan, picked["values"])
    selection = {"top": options.top, "seeds": options.seeds, "candidates": candidates, "picked": picked["trial"],
                 "picked_runs": picked["runs"], "test": test, "best_config": best.name}
    write_study_record(plan, study, selection)
    tuning = tuning_record(plan, options, counts(plan.folder.record()), picked, options.seeds)
    for run_dir in picked_runs:
        RunDir(run_dir).write_tuning(tuning)
        render_run_card(run_dir)
    return selection


def compare_study(plan) -> dict:
    """`hftl compare` of the whole study, written to its `compare/` folder."""
    from hftl.compare import compare_runs

    return compare_runs([plan.folder.path]).write(plan.folder.compare_dir)
