"""`hftl tune`: hyperparameter and strategy search over hftl runs, on Optuna (docs/tuning.md).

A study is a folder (`StudyDir`) and an Optuna storage. Workers (`hftl.tune.study.run_worker`) ask the storage for
a trial, sample its configuration once (`hftl.tune.space`), check it as `hftl validate` does and train it as
`hftl train` with overrides in a process of its own; the trial's process reports each evaluation through a
Trainer callback (`hftl.tune.report`). The selection (`hftl.tune.selection`) re-runs the best configurations over
seeds, picks by the mean, evaluates the pick on test once and writes `best.yaml`.
"""

from hftl.tune.folder import StudyDir

__all__ = ["StudyDir"]
