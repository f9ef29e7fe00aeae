"""Replay a pruner over a study run without pruning: which trials it would have stopped, at which warm-up, what
that saves and which best validation value survives. No training: it reads the study's `study.json`.

    python benchmarks/pruning_replay.py STUDY_DIR --train-rows 3600 [--pruners progress median] [--warm-ups 0.4 1]
        [--startup-trials 4 8] [--chance 0.499]

Each trial's reported values (step = training examples seen, as `hftl tune` reports them) are told, in trial order,
to an in-memory Optuna study whose pruner is built by `hftl tune`'s own `make_pruner`, and asked `should_prune()`
at each step once the trial has trained `warm-up` epochs, as `TrialReportCallback` does (each replayed trial is
given its recorded schedule, `schedule_examples`, or its last step, for the `progress` pruner); no trial is stopped
before `startup-trials` trials finished (default: what `hftl tune` uses for the study's number of trials), except,
with `--chance`, one whose best value so far is no better than that bar: chance's validation score, which
`TrialReportCallback` is given by the task (`Recipe.chance_scores`: for SST-2's macro-F1, a random guess) and which
studies before 2026-12-05's fourth session did not record; each rule is replayed with and without it. A trial's
compute is its recorded process CPU seconds; a stopped trial is charged the share of its examples trained (its
start and final evaluation are not refunded, so the saving is a slight overestimate). What it cannot show: a real
pruned study's sampler sees the pruned values and samples other trials afterwards; the replay keeps the unpruned
study's trials. It first prints a bound for each warm-up: what a rule that foresaw the result would save, stopping
every trial but the best at its first evaluation past the warm-up.

The acceptance studies of sessions since 2026-12-06 are kept in `benchmarks/data/pruning/` (their `study.json`), so
their replays can be re-run: pass an unpruned study's folder, e.g. `benchmarks/data/pruning/sst2-seed53-unpruned`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import optuna

from hftl.tune.defaults import DEFAULT_PRUNER, PRUNERS, startup_trials
from hftl.tune.pruners import SCHEDULE_EXAMPLES, make_pruner
from hftl.tune.report import no_better


def replay(trials: list[dict], train_rows: int, warm_up: float,
           pruner: str | Callable[[int], optuna.pruners.BasePruner] = DEFAULT_PRUNER, startup: int = 4,
           step_examples: int = 1, direction: str = "maximize", chance: float | None = None) -> dict:
    """`pruner`: a `--pruner` name, or a function of the start-up trials that builds one (a rule not shipped, as
    `benchmarks/pruning_variants.py` replays)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    built = pruner(startup) if callable(pruner) else make_pruner(pruner, startup)
    study = optuna.create_study(direction=direction, pruner=built)
    cpu_full = cpu_pruned = 0.0
    stopped, kept, at_chance = [], {}, []
    for trial in sorted(trials, key=lambda t: t["number"]):
        values = {int(k) * step_examples: v for k, v in trial["intermediate_values"].items()}
        cpu = trial["user_attrs"]["process_cpu_seconds"]
        cpu_full += cpu
        replayed, stop_at, best = study.ask(), None, None
        for key, value in trial["user_attrs"].items():  # what the trial recorded, for a pruner that reads it
            replayed.set_user_attr(key, value)
        # as the trial's process records it (studies before 2026-12-06's second session did not: its last step)
        replayed.set_user_attr(SCHEDULE_EXAMPLES, trial["user_attrs"].get(SCHEDULE_EXAMPLES) or max(values))
        for step in sorted(values):
            replayed.report(values[step], step)
            if best is None or not no_better(values[step], best, direction):
                best = values[step]
            if step / train_rows < warm_up:
                continue
            if chance is not None and no_better(best, chance, direction):
                stop_at = step
                at_chance.append(trial["number"])
                break
            if replayed.should_prune():
                stop_at = step
                break
        if stop_at is None:
            study.tell(replayed, trial["value"])
            kept[trial["number"]] = trial["value"]
            cpu_pruned += cpu
        else:
            study.tell(replayed, state=optuna.trial.TrialState.PRUNED)
            stopped.append(trial["number"])
            cpu_pruned += cpu * stop_at / max(values)
    pick = max if direction == "maximize" else min
    best_trial = pick(kept, key=kept.get)
    return {"pruner": pruner, "startup_trials": startup, "warm_up_epochs": warm_up, "stopped": stopped,
            "at_chance": at_chance, "saved": 1 - cpu_pruned / cpu_full, "best": kept[best_trial],
            "best_trial": best_trial}


def bound(trials: list[dict], train_rows: int, warm_up: float, best_number: int, step_examples: int = 1) -> float:
    """The most any rule judging from `warm_up` can save on these trials: every trial but the best stopped at its
    first evaluation past the warm-up (charged as `replay` charges a stopped trial)."""
    cpu_full = cpu_bound = 0.0
    for trial in trials:
        steps = sorted(int(k) * step_examples for k in trial["intermediate_values"])
        cpu = trial["user_attrs"]["process_cpu_seconds"]
        cpu_full += cpu
        judged = [s for s in steps if s / train_rows >= warm_up]
        cpu_bound += cpu if trial["number"] == best_number or not judged else cpu * judged[0] / steps[-1]
    return 1 - cpu_bound / cpu_full


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="a study folder of `hftl tune --pruner none`")
    parser.add_argument("--train-rows", type=int, required=True, help="training examples an epoch")
    parser.add_argument("--step-examples", type=int, default=1,
                        help="training examples a reported step stands for: 1 (examples seen, hftl tune since "
                             "2026-12-05); for earlier studies (step = the evaluation's number) the examples between "
                             "evaluations, e.g. 800 for 25 steps of 32")
    parser.add_argument("--pruners", nargs="+", default=[DEFAULT_PRUNER], choices=[p for p in PRUNERS if p != "none"],
                        help="`hftl tune --pruner` names, built as hftl tune builds them")
    parser.add_argument("--warm-ups", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5])
    parser.add_argument("--startup-trials", type=int, nargs="+",
                        help="finished trials before any is stopped (default: hftl tune's for the study's trials)")
    parser.add_argument("--chance", type=float,
                        help="chance's validation score (hftl.tasks.classification_evaluation.chance_scores): "
                             "each rule is also replayed stopping trials no better than it")
    args = parser.parse_args(argv)
    record = json.loads((args.study / "study.json").read_text())
    trials = [t for t in record["trials"] if t["state"] == "COMPLETE"]
    direction = record["objective"]["direction"]
    unpruned_best = (max if direction == "maximize" else min)(t["value"] for t in trials)
    print(f"{args.study}: {len(trials)} complete trials, best validation {unpruned_best:.4f}")
    best_number = next(t["number"] for t in trials if t["value"] == unpruned_best)
    print("At most saved by any rule, if it stopped every trial but the best at its first evaluation past the warm-up: "
          + ", ".join(f"{bound(trials, args.train_rows, w, best_number, args.step_examples):.1%} from {w:g} epoch"
                      for w in args.warm_ups))
    print("| pruner | start-up trials | warm-up (epochs) | chance bar | trials stopped (by the bar) | "
          "CPU saved | best validation kept | best trial |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    bars = [None] if args.chance is None else [None, args.chance]
    for pruner in args.pruners:
        for startup in args.startup_trials or [record.get("startup_trials") or startup_trials(len(trials))]:
            for warm_up in args.warm_ups:
                for bar in bars:
                    r = replay(trials, args.train_rows, warm_up, pruner, startup, args.step_examples, direction, bar)
                    print(f"| {pruner} | {startup} | {warm_up:g} | {'–' if bar is None else f'{bar:.4f}'} | "
                          f"{len(r['stopped'])} ({len(r['at_chance'])}) | {r['saved']:.1%} | {r['best']:.4f} | "
                          f"trial-{r['best_trial']} |")


if __name__ == "__main__":
    main()
