"""The `hftl tune` acceptance on SST-2: tuned against the shipped default, against `Trainer.hyperparameter_search`,
with and without pruning, and the tuner's overhead per trial.

    .venv/bin/python benchmarks/hp_search.py                                  # the full acceptance (hours on CPU)
    nice -n 10 .venv/bin/python benchmarks/hp_search.py --rows 1000 --trials 6 --top 2 --seeds 2 \\
        --max-epochs 1 --workdir /tmp/hp-reduced                             # a reduced run

Steps, each a process of its own, on the same data files (the first --rows rows of SST-2's train.tsv, split 90/10
into train / validation with seed 42; test = the 872-row test.tsv) and the packaged all-MiniLM-L6-v2:

1. `hftl tune recipes/configs/sst2_minilm_tune.yaml --trials T --top K --seeds S` (median pruner);
2. the same study with `--pruner none --top 1 --seeds 1` (pruning savings: the trials' compute, and the best
   validation value, of the two studies);
3. `benchmarks/hp_search_baseline.py`: `Trainer.hyperparameter_search` (Optuna, its default space, T trials), then
   the final training with the best values, as a transformers user writes it;
4. the shipped default (`recipes/configs/sst2_minilm_lora.yaml`) trained with S seeds on the same data;
5. the tuner's overhead per trial: its bookkeeping (`tuner_seconds` of each trial: ask, sample, checks, tell) and
   a trial process's start (interpreter and imports, timed separately), against the mean trial time.

Writes `results.json` and `results.md` in --workdir. Wall-clock times on a shared machine are noisy: the
comparison of totals is meaningful only when the machine is otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import random
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with SST-2's train.tsv and test.tsv")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, default=3, help="upper end of the searched epochs")
    parser.add_argument("--eval-steps", type=int, default=25)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/hftl-hp-search"))
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    return parser.parse_args(argv)


def prepare_data(source: Path, rows: int, folder: Path) -> dict[str, Path]:
    """The first `rows` rows of train.tsv, split 90/10 (seed 42) into train / dev; test.tsv as it is."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = (source / "train.tsv").read_text(encoding="utf-8").splitlines()
    header, body = lines[0], lines[1:rows + 1]
    order = list(range(len(body)))
    random.Random(42).shuffle(order)
    n_dev = len(body) // 10
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


def timed(command: list[str], log: Path) -> float:
    """Run `command` (output to `log`), fail loudly, return its wall time."""
    print("$", " ".join(map(str, command)), flush=True)
    started = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(list(map(str, command)), stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - started
    if code != 0:
        sys.exit(f"failed (exit {code}): see {log}")
    return wall


def study_figures(study: Path) -> dict:
    """What a finished study folder says: trials by state, the trials' compute, the pick, overhead parts."""
    record = json.loads((study / "study.json").read_text())
    trials = [t for t in record["trials"] if t["state"] in ("COMPLETE", "PRUNED")]
    attrs = [t["user_attrs"] for t in trials]
    train = [a["train_ended"] - a["train_started"] for a in attrs if "train_ended" in a and "train_started" in a]
    values = [t["value"] for t in record["trials"] if t["state"] == "COMPLETE"]
    best = max(values) if record["objective"]["direction"] == "maximize" else min(values)
    out = {
        "trials": {s: sum(1 for t in record["trials"] if t["state"] == s) for s in ("COMPLETE", "PRUNED", "FAIL")},
        "trial_process_s": round(sum(a.get("process_seconds", 0) for a in attrs), 1),
        "trial_training_s": round(sum(train), 1),
        "mean_trial_process_s": round(statistics.fmean(a["process_seconds"] for a in attrs), 2),
        "mean_tuner_s": round(statistics.fmean(a["tuner_seconds"] for a in attrs), 3),
        "best_validation": best,
        "selection": record.get("selection"),
    }
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
    if not (args.data / "train.tsv").is_file():
        print(f"benchmark skipped: {args.data / 'train.tsv'} not found (give --data).")
        return
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    files = prepare_data(args.data, args.rows, work / "data")
    common = [*data_settings(files), f"training.eval_steps={args.eval_steps}"]
    tune_config = write_tune_config(work, args.max_epochs)
    hftl = [sys.executable, "-m", "hftl.cli"]
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results["settings"] = {k: str(v) for k, v in vars(args).items()}

    def settings(*extra):
        return [a for item in (*common, *extra) for a in ("--set", item)]

    if "tune" in args.steps:
        study = work / "study-pruned"
        wall = timed([*hftl, "tune", tune_config, "--trials", args.trials, "--top", args.top, "--seeds", args.seeds,
                      *settings(f"training.output_dir={study}")], work / "tune.log")
        results["tune"] = {"wall_s": round(wall, 1), **study_figures(study)}
    if "nopruning" in args.steps:
        study = work / "study-unpruned"
        wall = timed([*hftl, "tune", tune_config, "--trials", args.trials, "--pruner", "none",
                      *settings(f"training.output_dir={study}")], work / "nopruning.log")
        results["nopruning"] = {"wall_s": round(wall, 1), **study_figures(study)}
    if "baseline" in args.steps:
        out = work / "baseline"
        wall = timed([sys.executable, HERE / "hp_search_baseline.py", "--model", _packaged_model(), "--train",
                      files["train"], "--validation", files["dev"], "--test", files["test"], "--trials", args.trials,
                      "--max-length", 64, "--output-dir", out, "--results", out / "results.json"],
                     work / "baseline.log")
        results["baseline"] = {"wall_s": round(wall, 1), **json.loads((out / "results.json").read_text())}
    if "default" in args.steps:
        out = work / "default"
        wall = timed([*hftl, "train", DEFAULT_CONFIG, "--seeds", args.seeds, "--overwrite",
                      *[a for item in (*data_settings(files), f"training.output_dir={out}") for a in ("--set", item)]],
                     work / "default.log")
        aggregate = json.loads((out / "metrics.json").read_text())
        results["default"] = {"wall_s": round(wall, 1), "test_f1": aggregate["test"]["f1"],
                              "test_accuracy": aggregate["test"]["accuracy"],
                              "validation_f1": aggregate["validation"]["f1"]}
    if "overhead" in args.steps:
        results["overhead"] = {"import_s": import_seconds()}
    results_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    (work / "results.md").write_text(render(results))
    print(render(results))


def _packaged_model() -> str:
    from hftl.modeling import resolve_checkpoint

    return str(resolve_checkpoint("packaged:all-MiniLM-L6-v2"))


def render(results: dict) -> str:
    lines = ["# hftl tune acceptance", "", "settings: " + json.dumps(results.get("settings", {})), ""]
    tune, unpruned = results.get("tune"), results.get("nopruning")
    if tune:
        selection = tune["selection"] or {}
        lines += [f"- hftl tune: {tune['trials']}, wall {tune['wall_s']} s (search + re-runs + test), trials' "
                  f"processes {tune['trial_process_s']} s, best validation {tune['best_validation']:.4f}, picked "
                  f"trial-{selection.get('picked')}, test {json.dumps((selection.get('test') or {}).get('shown'))}"]
    if unpruned:
        lines += [f"- without pruning: {unpruned['trials']}, trials' processes {unpruned['trial_process_s']} s, best "
                  f"validation {unpruned['best_validation']:.4f}"]
        if tune:
            saved = 1 - tune["trial_process_s"] / unpruned["trial_process_s"]
            lines += [f"- pruning saved {saved:.0%} of the trials' compute (process seconds)"]
    baseline = results.get("baseline")
    if baseline:
        lines += [f"- Trainer.hyperparameter_search: wall {baseline['wall_s']} s (search {baseline['search_s']} s + "
                  f"final training {baseline['final_training_s']} s), best {json.dumps(baseline['best_trial'])}, "
                  f"test {json.dumps(baseline['test'])}"]
    default = results.get("default")
    if default:
        f1 = default["test_f1"]
        lines += [f"- shipped default ({DEFAULT_CONFIG.name}): test f1 {f1['mean']:.4f} ± {f1['std'] or 0:.4f}, "
                  f"wall {default['wall_s']} s"]
    overhead = results.get("overhead")
    if overhead and tune:
        per_trial = overhead["import_s"] + tune["mean_tuner_s"]
        lines += [f"- tuner overhead per trial: bookkeeping {tune['mean_tuner_s']} s + process start (imports) "
                  f"{overhead['import_s']} s = {per_trial:.2f} s, {per_trial / tune['mean_trial_process_s']:.1%} of "
                  f"the mean trial ({tune['mean_trial_process_s']} s)"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
