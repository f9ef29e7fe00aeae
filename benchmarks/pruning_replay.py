"""Replay the median pruner over a study run without pruning: which trials it would have stopped, at which warm-up,
what that saves and which best validation value survives. No training: it reads the study's `study.json`.

    python benchmarks/pruning_replay.py STUDY_DIR --train-rows 3600 [--warm-ups 0 0.5 1 1.5]

Each trial's reported values (step = training examples seen, as `hftl tune` reports them) are replayed in trial
order under Optuna's median rule as `hftl tune` configures it (`hftl/tune/report.py`: 4 finished trials first; a
trial whose best value so far is below the median of the finished trials' values after as many examples is
stopped; never before `warm-up` epochs). A trial's compute is its recorded process CPU seconds; a stopped trial is
charged the share of its examples trained (its start and final evaluation are not refunded, so the saving is a
slight overestimate). What it cannot show: a real pruned study's sampler sees the pruned values and samples other
trials afterwards; the replay keeps the unpruned study's trials.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def replay(trials: list[dict], train_rows: int, warm_up: float, step_examples: int = 1, keep: float = 50.0,
           startup: int = 4) -> dict:
    finished: list[dict] = []  # trials the replayed pruner let finish, in order
    cpu_full = cpu_pruned = 0.0
    stopped = []
    for trial in sorted(trials, key=lambda t: t["number"]):
        values = {int(k) * step_examples: v for k, v in trial["intermediate_values"].items()}
        cpu = trial["user_attrs"]["process_cpu_seconds"]
        cpu_full += cpu
        best, stop_at = float("-inf"), None
        for step in sorted(values):
            best = max(best, values[step])
            if len(finished) < startup or step / train_rows < warm_up:
                continue
            others = [f["values"][step] for f in finished if step in f["values"]]
            if others and best < float(np.percentile(others, 100 - keep)):
                stop_at = step
                break
        if stop_at is None:
            finished.append({"number": trial["number"], "values": values, "value": trial["value"]})
            cpu_pruned += cpu
        else:
            stopped.append(trial["number"])
            cpu_pruned += cpu * stop_at / max(values)
    best_trial = max(finished, key=lambda f: f["value"])
    return {"warm_up_epochs": warm_up, "stopped": stopped, "saved": 1 - cpu_pruned / cpu_full,
            "best": best_trial["value"], "best_trial": best_trial["number"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="a study folder of `hftl tune --pruner none`")
    parser.add_argument("--train-rows", type=int, required=True, help="training examples an epoch")
    parser.add_argument("--step-examples", type=int, default=1,
                        help="training examples a reported step stands for: 1 (examples seen, hftl tune since "
                             "2026-12-05); for earlier studies (step = the evaluation's number) the examples between "
                             "evaluations, e.g. 800 for 25 steps of 32")
    parser.add_argument("--keep", type=float, nargs="+", default=[50.0],
                        help="Optuna's PercentilePruner percentile: the top share of finished trials' values kept "
                             "going at each step (50: the median pruner)")
    parser.add_argument("--warm-ups", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5])
    args = parser.parse_args(argv)
    record = json.loads((args.study / "study.json").read_text())
    trials = [t for t in record["trials"] if t["state"] == "COMPLETE"]
    unpruned_best = max(t["value"] for t in trials)
    print(f"{args.study}: {len(trials)} complete trials, best validation {unpruned_best:.4f}")
    print("| kept (percentile) | warm-up (epochs) | trials stopped | CPU saved | best validation kept | best trial |")
    print("|---:|---:|---:|---:|---:|---:|")
    for keep in args.keep:
        for warm_up in args.warm_ups:
            r = replay(trials, args.train_rows, warm_up, args.step_examples, keep)
            print(f"| {keep:g} | {warm_up:g} | {len(r['stopped'])} | {r['saved']:.1%} | {r['best']:.4f} | "
                  f"trial-{r['best_trial']} |")


if __name__ == "__main__":
    main()
