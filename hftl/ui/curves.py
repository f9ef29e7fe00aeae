"""Log histories (the Trainer's `log_history`, `hftl.training_log`) as the long tables Gradio's line plots draw."""

from __future__ import annotations

import pandas as pd

from hftl.run_dir import RunDir
from hftl.training_log import read_training_log

#: logged values that are not curves
_SKIP = ("epoch", "step", "grad_norm", "learning_rate", "total_flos", "runtime", "per_second", "num_input_tokens")
COLUMNS = ["step", "value", "series"]


def run_history(folder) -> list[dict]:
    """A run's log history: the live training log where there is one, else `trainer_state.json`'s."""
    progress = read_training_log(folder)
    if progress.history:
        return progress.history
    try:
        return list(RunDir(folder).trainer_state().get("log_history") or [])
    except (OSError, ValueError):
        return []


def curve_frames(history: list[dict], label: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(losses, validation metrics): rows of step, value, series. `label` prefixes the series (Compare)."""
    losses, metrics = [], []
    for entry in history:
        step = entry.get("step")
        if step is None:
            continue
        for key, value in entry.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or any(s in key for s in _SKIP):
                continue
            if key.startswith("train_"):  # the end-of-training summary, not a point of a curve
                continue
            name = f"{label}{key}" if label else key
            (losses if key.endswith("loss") else metrics).append((int(step), float(value), name))
    return pd.DataFrame(losses, columns=COLUMNS), pd.DataFrame(metrics, columns=COLUMNS)
