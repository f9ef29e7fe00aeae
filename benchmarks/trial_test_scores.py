"""Does the validation objective rank a study's best trials on test? A diagnostic of the acceptance's data, never
part of a search: every completed trial of a finished study (run with `--pruner none`, so that every trial trained
to its end) is evaluated on the test data once, beside its objective (the best validation evaluation) and its final
validation value.

    python benchmarks/trial_test_scores.py STUDY_DIR TEST_FILE [--keep KEEP_DIR]

Prints one row a trial (best objective first) and, over the trials within a point of the best objective, the
spread of their test values and of their objectives. `--keep` writes `test_scores.json` (trial number -> objective,
final validation and test values) into a folder of `benchmarks/data/pruning/`, beside the study's `study.json`.
A trial that already holds test metrics (a study's pick) is not evaluated again.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from hftl.files import write_json
from hftl.inference import load
from hftl.run_dir import RunDir
from hftl.tune.folder import StudyDir

WITHIN = 0.01  # "the best trials": within a point of validation macro-F1 of the best objective


def trial_scores(study_dir: Path, test_file: str) -> dict[int, dict]:
    study = StudyDir(study_dir)
    record = study.record()
    metric = record["objective"]["metric"]
    scores = {}
    for trial in record["trials"]:
        if trial["state"] != "COMPLETE":
            continue
        run = RunDir(study.trial_dir(trial["number"]))
        metrics = run.metrics()
        test = metrics["test"] if "test" in metrics else load(run.path).evaluate(test_file)
        scores[trial["number"]] = {"params": trial["params"], "objective": trial["value"],
                                   "final_validation": metrics["validation"][metric], "test": test[metric]}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("test_file")
    parser.add_argument("--keep", type=Path, help="a folder to write test_scores.json into")
    args = parser.parse_args()
    scores = trial_scores(args.study_dir, args.test_file)
    ranked = sorted(scores.items(), key=lambda item: -item[1]["objective"])
    print("| trial | parameters | objective | final validation | test |\n|---:|---|---:|---:|---:|")
    for number, s in ranked:
        params = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                           for k, v in s["params"].items())
        print(f"| {number} | {params} | {s['objective']:.4f} | {s['final_validation']:.4f} | {s['test']:.4f} |")
    best = ranked[0][1]["objective"]
    top = [s for _, s in ranked if s["objective"] >= best - WITHIN]
    tests = [s["test"] for s in top]
    print(f"\n{len(top)} trials within {WITHIN} of the best objective {best:.4f}: objectives "
          f"{min(s['objective'] for s in top):.4f}-{best:.4f}; test {min(tests):.4f}-{max(tests):.4f} "
          f"(mean {statistics.fmean(tests):.4f}); the best objective's test {ranked[0][1]['test']:.4f}")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        write_json(args.keep / "test_scores.json",
                   {str(n): {k: v for k, v in s.items() if k != "params"} for n, s in scores.items()})


if __name__ == "__main__":
    main()
