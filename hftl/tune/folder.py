"""`StudyDir`: the layout of a study folder (the config's `training.output_dir` under `hftl tune`), as `RunDir` is
the layout of a run folder. Every trial is a normal run folder inside it.

    study.json           the study: its name, storage, objective, search space and a snapshot of every trial
    optuna-journal.log   the Optuna storage, unless --storage names another (the study's only shared state)
    trial-N/             trial N: a run folder (config, manifest, metrics, card), trained without the test split
    rerun-N/             --top K --seeds S: trial N's configuration under S seeds (seed-S/ runs; the trial itself
                         is the first seed)
    logs/trial-N.log     what each trial's process printed
    best.yaml            the picked configuration: `hftl train best.yaml` reproduces it
    README.md            the study report: space, trials, pruned, seeds, the pick and its test result
    compare/             `hftl compare` of the study: table, curves, Optuna's figures
"""

from __future__ import annotations

from pathlib import Path

from hftl.files import read_json, write_json


class StudyDir:
    """A study folder.

    Args:
        path (`str` or `Path`): the folder (`training.output_dir` of the config being tuned).
    """

    RECORD = "study.json"
    JOURNAL = "optuna-journal.log"
    BEST_CONFIG = "best.yaml"
    REPORT = "README.md"
    COMPARE = "compare"
    LOGS = "logs"
    SELECTION_LOCK = ".selection.lock"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"StudyDir({str(self.path)!r})"

    def is_study(self) -> bool:
        return (self.path / self.RECORD).is_file()

    def trial_dir(self, number: int) -> Path:
        return self.path / f"trial-{number}"

    def rerun_dir(self, number: int) -> Path:
        return self.path / f"rerun-{number}"

    def log_file(self, name: str) -> Path:
        return self.path / self.LOGS / f"{name}.log"

    @property
    def journal(self) -> Path:
        return self.path / self.JOURNAL

    @property
    def best_config(self) -> Path:
        return self.path / self.BEST_CONFIG

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def compare_dir(self) -> Path:
        return self.path / self.COMPARE

    def record(self) -> dict:
        return read_json(self.path / self.RECORD) if self.is_study() else {}

    def write_record(self, record: dict) -> None:
        write_json(self.path / self.RECORD, record)
