"""The study's records in its folder: `study.json` (a snapshot of every trial, read back by `hftl compare` without
the storage) and `README.md` (the report)."""

from __future__ import annotations

import json

from hftl.files import write_atomic
from hftl.tune.folder import StudyDir


def _shown_storage(plan) -> str:
    from hftl.tune.report import shown_url

    default = f"journal:{plan.folder.journal}"
    return StudyDir.JOURNAL if plan.storage_url == default else shown_url(plan.storage_url)


def trial_snapshot(trial) -> dict:
    """One trial as plain data (its Optuna distributions as Optuna's JSON)."""
    from optuna.distributions import distribution_to_json

    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "params": trial.params,
        "distributions": {k: json.loads(distribution_to_json(d)) for k, d in trial.distributions.items()},
        "intermediate_values": {str(k): v for k, v in trial.intermediate_values.items()},
        "started": trial.datetime_start.isoformat(timespec="seconds") if trial.datetime_start else None,
        "completed": trial.datetime_complete.isoformat(timespec="seconds") if trial.datetime_complete else None,
        "user_attrs": trial.user_attrs,
    }


def write_study_record(plan, study, selection: dict | None = None) -> None:
    """Write `study.json` and the report from the storage's view of every trial (keeping a recorded selection)."""
    folder = plan.folder
    previous = folder.record()
    record = {
        "study": plan.study_name,
        "storage": _shown_storage(plan),
        "config": str(plan.config_path),
        "objective": {"metric": plan.metric, "direction": plan.direction, "at": "the trial's best evaluation"},
        "pruner": plan.pruner,
        "startup_trials": plan.startup_trials,
        "prune_after_epochs": plan.prune_after_epochs,
        "sampler": "TPE" + (f" (seed {plan.sampler_seed})" if plan.sampler_seed is not None else ""),
        "space_source": plan.space.source,
        "space": plan.space.to_data(),
        "space_sources": plan.space_sources,
        "trials": [trial_snapshot(t) for t in study.get_trials(deepcopy=False)],
        "selection": selection if selection is not None else previous.get("selection"),
    }
    record["overhead"] = overhead(record["trials"])
    folder.write_record(record)
    write_atomic(folder.report, render_report(record))


def overhead(trials: list[dict]) -> dict | None:
    """The tuner's cost per trial, means over the trials that ran a process: its bookkeeping (`tuner_seconds`), the
    start of the trial's process up to `hftl.cli`'s main (`process_start_seconds`: known for forked trials; the
    first one includes the fork server's start), the whole process (`process_seconds`); how processes started."""
    import statistics

    ran = [t["user_attrs"] for t in trials if "process_seconds" in t["user_attrs"]]
    if not ran:
        return None

    def mean(key):
        values = [a[key] for a in ran if isinstance(a.get(key), (int, float))]
        return round(statistics.fmean(values), 3) if values else None

    started_by: dict[str, int] = {}
    for attrs in ran:
        how = attrs.get("process_started_by") or "subprocess"
        started_by[how] = started_by.get(how, 0) + 1
    return {"trials": len(ran), "started_by": started_by, "mean_tuner_seconds": mean("tuner_seconds"),
            "mean_process_start_seconds": mean("process_start_seconds"),
            "mean_process_seconds": mean("process_seconds")}


def counts(record: dict) -> dict:
    """Trials by state (surplus asks, which never ran, left out)."""
    found: dict[str, int] = {}
    for trial in record["trials"]:
        if "surplus" not in str(trial["user_attrs"].get("failed_because", "")):
            found[trial["state"]] = found.get(trial["state"], 0) + 1
    return found


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if not isinstance(value, str) else value


def pruning_text(pruner: str, startup_trials: int | None, prune_after_epochs: float | None) -> str:
    """How a study pruned, in words (its report and the picked run's card)."""
    if pruner == "none":
        return "none"
    chance = "no better than an answer that ignores the input"  # `TrialReportCallback`'s own rule
    from hftl.tune.pruners import IN_WORDS  # imports optuna: only when a report or card is written

    parts = [IN_WORDS.get(pruner, pruner)]
    if startup_trials and pruner != "halving":  # successive halving compares within rungs, from the first trial
        parts.append(f"no trial stopped before {startup_trials} had finished unless {chance}")
    else:
        parts.append(f"a trial {chance} stopped")
    if prune_after_epochs:
        parts.append(f"none judged before epoch {prune_after_epochs:g}")
    return ", ".join(parts)


def render_report(record: dict) -> str:
    """The study's README.md."""
    objective = record["objective"]
    found = counts(record)
    pruning = pruning_text(record["pruner"], record.get("startup_trials"), record.get("prune_after_epochs"))
    lines = [f"# Study {record['study']}", "",
             f"Objective: validation **{objective['metric']}** at each trial's best evaluation "
             f"({objective['direction']}). The test split is never seen during the search; only the final pick is "
             f"evaluated on test, once. Sampler: Optuna TPE; pruner: {pruning}. "
             f"Storage: `{record['storage']}`.", "",
             "Trials: " + (", ".join(f"{n} {s.lower()}" for s, n in sorted(found.items())) or "none yet") + ".", "",
             "## Search space" + (" (the defaults for the task and strategy)" if record["space_source"] == "defaults"
                                  else " (the config's `search:`)"), "",
             "| key | range or choices | source |", "|---|---|---|"]
    for key, spec in record["space"].items():
        lines.append(f"| `{key}` | `{json.dumps(spec)}` | {record['space_sources'].get(key, 'the config')} |")
    trials = [t for t in record["trials"] if t["state"] != "FAIL" or "surplus" not in
              str(t["user_attrs"].get("failed_because", ""))]
    keys = list(dict.fromkeys(k for t in trials for k in t["params"]))
    lines += ["", "## Trials", "", "| trial | state | " + objective["metric"] + " | evaluations | " +
              " | ".join(f"`{k}`" for k in keys) + " |", "|---|---|---|---|" + "---|" * len(keys)]
    from hftl.tune.report import PRUNED_AT_CHANCE, PRUNED_BECAUSE

    for t in trials:
        value = "" if t["value"] is None else f"{t['value']:.4f}"
        state = t["state"].lower() + (" (at chance)" if t["user_attrs"].get(PRUNED_BECAUSE) == PRUNED_AT_CHANCE
                                      else "")
        cells = [_format(t["params"][k]) if k in t["params"] else "–" for k in keys]
        lines.append(f"| trial-{t['number']} | {state} | {value} | {len(t['intermediate_values'])} | "
                     + " | ".join(cells) + " |")
    failed = [t for t in trials if t["state"] == "FAIL"]
    if failed:
        lines += ["", "Failed trials (never counted; a new trial replaced each):", ""]
        lines += [f"- trial-{t['number']}: {t['user_attrs'].get('failed_because', 'unknown')}" for t in failed]
    cost = record.get("overhead")
    if cost:
        start = cost["mean_process_start_seconds"]
        lines += ["", f"Tuner overhead per trial (means over {cost['trials']} trial processes, started by "
                      + ", ".join(f"{how} {n}" for how, n in sorted(cost["started_by"].items())) + "): bookkeeping "
                      f"{cost['mean_tuner_seconds']} s, process start {'not measured' if start is None else f'{start} s'}"
                      f", of a {cost['mean_process_seconds']} s process."]
    selection = record.get("selection")
    if selection:
        lines += ["", render_selection(selection, objective["metric"])]
    return "\n".join(lines) + "\n"


def render_selection(selection: dict, metric: str) -> str:
    """The report's section on the re-runs, the pick and its test result."""
    seeds = selection["seeds"]
    lines = ["## Selection", ""]
    if seeds > 1:
        lines += [f"The {len(selection['candidates'])} best trials re-run with {seeds} seeds each (the trial itself is "
                  "the first seed); picked by the mean validation objective. Mean ± sample standard deviation over "
                  "the seeds:", "", f"| configuration | runs | validation {metric} |", "|---|---|---|"]
        for c in selection["candidates"]:
            std = f" ± {c['std']:.4f}" if c.get("std") is not None else ""
            lines.append(f"| trial-{c['trial']}{' **(picked)**' if c['trial'] == selection['picked'] else ''} | "
                         f"{', '.join(c['runs'])} | {c['mean']:.4f}{std} |")
        lines.append("")
    else:
        lines += [f"Picked: the best trial, trial-{selection['picked']} (no re-runs: use --top K --seeds S to pick "
                  "by the mean over seeds).", ""]
    test = selection.get("test")
    if test:
        cells = ", ".join(f"{name} {value}" for name, value in test["shown"].items())
        lines += [f"**Test** (evaluated once, after the search, on the picked configuration's "
                  f"{'runs' if seeds > 1 else 'run'}): {cells}.", ""]
    else:
        lines += ["The config names no test data: the pick is reported on validation only.", ""]
    lines += [f"`{StudyDir.BEST_CONFIG}` holds the picked configuration: `hftl train {StudyDir.BEST_CONFIG}` "
              "reproduces it (same seed, same data). `hftl compare` of this folder: `compare/`."]
    return "\n".join(lines)

