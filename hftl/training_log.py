"""The run's live training log: what the Trainer logs, appended to the run folder as it happens.

`hftl.callbacks.TrainingLogCallback` (added to every Trainer) writes one JSON object a line to
`RunDir.TRAINING_LOG`: a `begin` record (start step, total steps), every `log` (loss, learning rate, validation
metrics; the Trainer's own `log_history` entries), `progress` heartbeats at most once a second during training and
evaluation, and `end`. `trainer_state.json` holds the same history only at checkpoints; this file lets a watcher
(`hftl ui`) draw the curves and the ETA while the run trains. `read_training_log` folds the file into a
`TrainingProgress`: after a resume, the records of steps past the checkpoint it resumed from are dropped, as
the Trainer's own history drops them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from hftl.run_dir import RunDir

@dataclass
class TrainingProgress:
    """What a run's training log says: the log history, where training is, and how long it should still take."""

    history: list[dict] = field(default_factory=list)
    step: int = 0
    max_steps: int | None = None
    epoch: float | None = None
    phase: str = ""
    ended: bool = False
    started: float | None = None
    updated: float | None = None
    #: steps a second over the current session (since the last `begin`)
    rate: float | None = None

    @property
    def eta_s(self) -> float | None:
        if self.ended or not self.rate or not self.max_steps:
            return None
        return max(self.max_steps - self.step, 0) / self.rate


def read_training_log(path: str | Path) -> TrainingProgress:
    """The `TrainingProgress` of a run folder (or of a `training_log.jsonl` file); empty if there is none yet.

    A line cut off by a crash (or being written) is skipped.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RunDir.TRAINING_LOG
    progress = TrainingProgress()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return progress
    session_start = None
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        event, step = record.pop("event", None), int(record.get("step") or 0)
        when = record.pop("time", None)
        progress.updated = when or progress.updated
        if event == "begin":
            progress.history = [h for h in progress.history if h.get("step", 0) <= step]
            progress.max_steps, progress.ended, progress.started = record.get("max_steps"), False, when
            session_start = (when, step)
        elif event == "log":
            progress.history.append(record)
        elif event == "end":
            progress.ended = True
        if event in ("progress", "log", "end", "begin"):
            progress.step = step
            progress.epoch = record.get("epoch", progress.epoch)
            progress.phase = record.get("phase", progress.phase) if event == "progress" else progress.phase
        if session_start and when and session_start[0] and when > session_start[0] and step > session_start[1]:
            progress.rate = (step - session_start[1]) / (when - session_start[0])
    return progress
