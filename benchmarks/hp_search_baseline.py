"""The baseline `hftl tune` is measured against: `Trainer.hyperparameter_search` with the Optuna backend and its
default space, written the way a transformers user writes it (the course / docs recipe):

    model_init -> Trainer(...) -> trainer.hyperparameter_search(direction="maximize", backend="optuna", n_trials=N,
    compute_objective=macro-F1) -> train again with the best hyperparameters -> evaluate on test

The final training builds a new Trainer with the best values in its TrainingArguments. The course sets them on
`trainer.args` instead, which leaves the batch size at the last trial's (see `make_trainer`).

transformers' default Optuna space (`default_hp_space_optuna`): learning rate 1e-6..1e-4 (log), epochs 1..5, seed
1..40, batch size 4/8/16/32/64. The study's pruner is Optuna's default (MedianPruner), fed the objective at each
evaluation by the Trainer; a trial is judged by its *last* evaluation (transformers #25247).

    python benchmarks/hp_search_baseline.py --model MODEL_DIR --train train.tsv --validation dev.tsv \\
        --test test.tsv --trials 24 --output-dir /tmp/hp-baseline --results /tmp/hp-baseline/results.json

The results file holds the best trial, the search and final-training times, and the final model's test metrics.

`--cpu-budget S` compares at equal compute instead of an equal trial count (24 trials of the default space, up to 5
epochs at batch 4, take hours on a 2-core CPU): no trial starts once the process has used S CPU seconds (the
default space is wrapped to stop the study there; the running trial finishes, so the budget is overshot by at most
one trial, which favours the baseline).

`--retrain RESULTS --seeds 35 36 37` searches nothing: it trains the best hyperparameters of an earlier results
file once per seed (the recorded seed replaced) and writes each seed's test metrics with their mean and standard
deviation, so the baseline's pick is compared with hftl's by the same seed spread.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint folder")
    parser.add_argument("--train", required=True)
    parser.add_argument("--validation", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--eval-steps", type=int, default=0,
                        help="evaluate every N steps (0: every epoch, the usual choice)")
    parser.add_argument("--cpu-budget", type=float, metavar="S",
                        help="start no trial after S CPU seconds of this process (default: --trials alone)")
    parser.add_argument("--retrain", metavar="RESULTS", help="no search: train the best hyperparameters recorded in "
                        "RESULTS (an earlier --results file) once per --seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[], help="with --retrain: the seeds")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--results", required=True)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    import numpy as np
    import optuna
    from datasets import load_dataset
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)
    from transformers.trainer_utils import default_hp_space_optuna

    args = parse_args(argv)
    files = {"train": args.train, "validation": args.validation, "test": args.test}
    raw = load_dataset("csv", data_files=files, delimiter="\t", quoting=3)  # TSV, no quoting
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    data = raw.map(lambda b: tokenizer(b[args.text_column], truncation=True, max_length=args.max_length),
                   batched=True)
    data = data.rename_column(args.label_column, "labels")

    def model_init(trial=None):
        return AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)

    def compute_metrics(prediction):
        predicted = np.argmax(prediction.predictions, axis=-1)
        return {"accuracy": accuracy_score(prediction.label_ids, predicted),
                "f1": f1_score(prediction.label_ids, predicted, average="macro")}

    steps = {"eval_strategy": "steps", "eval_steps": args.eval_steps} if args.eval_steps else {"eval_strategy": "epoch"}

    def make_trainer(**hyperparameters) -> Trainer:
        # The picked hyperparameters go into TrainingArguments: setting them on `trainer.args` after the search, as
        # the course does, leaves the Trainer's batch size at its last trial's (Trainer._train_batch_size is set at
        # init and by each trial's setup), so the final run could train another configuration than the one picked.
        training_args = TrainingArguments(output_dir=args.output_dir, save_strategy="no", report_to="none",
                                          logging_steps=50, per_device_eval_batch_size=128, **steps, **hyperparameters)
        return Trainer(model_init=model_init, args=training_args, train_dataset=data["train"],
                       eval_dataset=data["validation"], processing_class=tokenizer,
                       data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=compute_metrics)

    def cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    started_trials = []

    def hp_space(trial):
        if args.cpu_budget and started_trials and cpu_s() - cpu_started >= args.cpu_budget:
            trial.study.stop()  # no trial after this one, and this one ends before it trains (recorded as pruned)
            raise optuna.TrialPruned(f"the CPU budget of {args.cpu_budget} s is spent")
        started_trials.append(trial.number)
        return default_hp_space_optuna(trial)

    def train_and_test(trainer: Trainer) -> dict:
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        output = trainer.predict(data["test"])
        predicted = np.argmax(output.predictions, axis=-1)
        return {"final_training_s": round(seconds, 1), "validation_f1": trainer.evaluate()["eval_f1"],
                "test": {"accuracy": float(accuracy_score(output.label_ids, predicted)),
                         "f1": float(f1_score(output.label_ids, predicted, average="macro"))}}

    if args.retrain:
        picked = json.loads(Path(args.retrain).read_text(encoding="utf-8"))["best_trial"]["hyperparameters"]
        runs = {}
        for seed in args.seeds:
            runs[seed] = train_and_test(make_trainer(**{**picked, "seed": seed}))
        f1 = [run["test"]["f1"] for run in runs.values()]
        results = {"retrained": args.retrain, "hyperparameters": picked, "runs": runs,
                   "test_f1": {"mean": statistics.fmean(f1), "std": statistics.stdev(f1) if len(f1) > 1 else 0.0}}
        write_results(args.results, results)
        return

    trainer = make_trainer()
    started, cpu_started = time.perf_counter(), cpu_s()
    best = trainer.hyperparameter_search(direction="maximize", backend="optuna", n_trials=args.trials,
                                         hp_space=hp_space if args.cpu_budget else None,
                                         compute_objective=lambda metrics: metrics["eval_f1"])
    search_s, search_cpu_s = time.perf_counter() - started, cpu_s() - cpu_started

    final = train_and_test(make_trainer(**best.hyperparameters))  # train the best hyperparameters once more
    results = {
        "trials": args.trials,
        "best_trial": {"number": best.run_id, "objective": best.objective, "hyperparameters": best.hyperparameters},
        "trials_run": len(started_trials) if args.cpu_budget else args.trials,
        "cpu_budget_s": args.cpu_budget,
        "search_s": round(search_s, 1),
        "search_cpu_s": round(search_cpu_s, 1),
        "total_cpu_s": round(cpu_s() - cpu_started, 1),
        "final_training_s": final["final_training_s"],
        "total_s": round(search_s + final["final_training_s"], 1),
        "validation_f1": final["validation_f1"],
        "test": final["test"],
    }
    write_results(args.results, results)


def write_results(path: str, results: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
