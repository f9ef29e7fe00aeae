"""What the runs folder holds: one `RunSummary` per run folder (a `--seeds` group is one, with mean ± std), read
from the records `hftl.run_dir.RunDir` names, cheaply (no torch, no model), and never failing on a bad folder: a
half-written or corrupt one is a row that says what is wrong with it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from hftl.run_dir import RunDir
from hftl.training_log import read_training_log

try:  # libyaml's loader reads a config ~10x faster: 200 runs stay well under the Runs page's budget
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

FINISHED, RUNNING, INTERRUPTED, FAILED, CORRUPT = "finished", "running", "interrupted", "failed", "corrupt"
#: bookkeeping values of a metrics split, not metrics to show
_NOT_SHOWN = ("num_examples", "blocks", "tokens", "temperature", "runtime", "per_second", "ece_", "nll_", "epoch")
#: how many metrics a row shows
SHOWN = 4
#: folders never searched for runs
_SKIPPED = ("checkpoint-", ".", "__")
MAX_DEPTH = 4


@dataclass
class RunSummary:
    """One row of the Runs page."""

    id: str  # the folder, relative to the root
    task: str = ""
    checkpoint: str = ""
    strategy: str = ""
    status: str = ""
    detail: str = ""  # why a run is failed / corrupt, or which checkpoint resumes it
    date: str = ""
    split: str = ""  # the split the metrics are from
    metrics: dict = field(default_factory=dict)  # name -> value or "mean ± std"
    main_metric: str = ""
    main_value: float | None = None
    seeds: list = field(default_factory=list)
    members: list = field(default_factory=list)  # seed group: the seeds' folders

    def as_dict(self) -> dict:
        return asdict(self)


def scan_runs(root: str | Path, running: set[str] = frozenset()) -> list[RunSummary]:
    """Every run folder (and seed group) under `root`, newest first.

    Args:
        root (`str` or `Path`): the runs folder.
        running (`set[str]`, *optional*): real paths of run folders a job of this UI is training now.
    """
    root = Path(root)
    found: list[RunSummary] = []

    def visit(folder: Path, depth: int) -> None:
        try:
            children = sorted((c for c in os.scandir(folder) if c.is_dir() and not c.name.startswith(_SKIPPED)),
                              key=lambda c: c.name)
        except OSError:
            return
        for child in children:
            path = Path(child.path)
            if (path / RunDir.CONFIG).is_file():
                found.append(summarise_run(root, path, running))
            elif _seed_members(path):
                found.append(summarise_seed_group(root, path, running))
            elif depth < MAX_DEPTH:
                visit(path, depth + 1)

    visit(root, 1)
    return sorted(found, key=lambda r: (r.date, r.id), reverse=True)


def _seed_members(path: Path) -> list[Path]:
    try:
        return sorted((c for c in path.iterdir() if c.name.startswith("seed-") and (c / RunDir.CONFIG).is_file()),
                      key=lambda c: c.name)
    except OSError:
        return []


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def summarise_run(root: Path, path: Path, running: set[str] = frozenset()) -> RunSummary:
    """The row of one run folder; a folder whose records cannot be read gets status `corrupt` and the reason."""
    row = RunSummary(id=_relative(root, path))
    run = RunDir(path)
    try:
        config = yaml.load(run.config_file.read_text(encoding="utf-8"), Loader=_Loader)
        if not isinstance(config, dict):
            raise ValueError("not a mapping")
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        row.status, row.detail = CORRUPT, f"{RunDir.CONFIG} cannot be read: {_one_line(err)}"
        row.date = _mtime(run.config_file)
        return row
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    row.task, row.checkpoint, row.strategy = str(config.get("task", "")), str(model.get("name_or_path", "")), \
        str(model.get("strategy", ""))
    try:
        manifest = _read_json(path / RunDir.MANIFEST) if (path / RunDir.MANIFEST).is_file() else {}
        row.date = str(manifest.get("created", "")) or _mtime(run.config_file)
    except (OSError, ValueError) as err:
        row.date, row.status, row.detail = _mtime(run.config_file), CORRUPT, f"{RunDir.MANIFEST}: {_one_line(err)}"
    metrics_file = path / RunDir.METRICS
    if metrics_file.is_file():
        try:
            metrics = _read_json(metrics_file)
            _fill_metrics(row, metrics, _declared_summary(row.task))
            row.status = row.status or FINISHED
        except (OSError, ValueError, AttributeError) as err:
            row.status, row.detail = CORRUPT, f"{RunDir.METRICS} cannot be read (half-written?): {_one_line(err)}"
        return row
    if row.status:
        return row
    row.status, row.detail = unfinished_status(path, running)
    return row


def unfinished_status(path: Path, running: set[str] = frozenset()) -> tuple[str, str]:
    """(status, detail) of a run folder without metrics: running, interrupted (resumable) or failed."""
    if str(path.resolve()) in running or RunDir(path).lock().in_use_by() is not None:
        progress = read_training_log(path)
        where = f"step {progress.step}" + (f" of {progress.max_steps}" if progress.max_steps else "")
        return RUNNING, where
    checkpoint = last_complete_checkpoint(path)
    if checkpoint:
        return INTERRUPTED, f"resumable from {checkpoint}"
    return FAILED, "stopped before its first complete checkpoint"


def last_complete_checkpoint(path: Path) -> str | None:
    """The name of the newest complete checkpoint-N folder (`RunDir.checkpoint_problem` says which are)."""
    steps = []
    for child in path.iterdir() if path.is_dir() else ():
        number = child.name.rsplit("-", 1)[-1]
        if child.name.startswith("checkpoint-") and number.isdigit() and child.is_dir():
            steps.append((int(number), child))
    for _, child in sorted(steps, reverse=True):
        if RunDir.checkpoint_problem(child) is None:
            return child.name
    return None


def summarise_seed_group(root: Path, path: Path, running: set[str] = frozenset()) -> RunSummary:
    """One row for `hftl train --seeds N`'s folder: the seeds' config, the aggregate's mean ± std."""
    members = _seed_members(path)
    first = summarise_run(root, members[0], running)
    row = RunSummary(id=_relative(root, path), task=first.task, checkpoint=first.checkpoint, strategy=first.strategy,
                     date=first.date, members=[_relative(root, m) for m in members])
    try:
        metrics = _read_json(path / RunDir.METRICS) if (path / RunDir.METRICS).is_file() else None
    except (OSError, ValueError) as err:
        row.status, row.detail = CORRUPT, f"{RunDir.METRICS} cannot be read: {_one_line(err)}"
        return row
    if metrics is None:
        states = [summarise_run(root, m, running) for m in members]
        active = [s for s in states if s.status == RUNNING]
        row.status = RUNNING if active else (INTERRUPTED if states[-1].status == INTERRUPTED else FAILED)
        row.detail = f"{len(members)} seed(s) started" + (f"; {active[0].id}: {active[0].detail}" if active else "")
        return row
    row.seeds = list(metrics.get("seeds", []))
    _fill_metrics(row, metrics, _declared_summary(row.task))
    row.status = FINISHED
    row.detail = f"{len(row.seeds)} seeds: mean ± std"
    return row


def _declared_summary(task: str) -> tuple[str, ...]:
    """The task's summary metrics where its recipe declares them as a class attribute (no recipe is built)."""
    from hftl.tasks import registered_tasks

    recipe = registered_tasks().get(task)
    declared = getattr(recipe, "summary_metrics", None) if recipe else None
    return tuple(declared) if isinstance(declared, (tuple, list)) else ()


def _fill_metrics(row: RunSummary, metrics: dict, preferred: tuple[str, ...]) -> None:
    split = next((s for s in ("test", "validation") if isinstance(metrics.get(s), dict)), None)
    if split is None:
        return
    values = metrics[split]
    shown = [k for k in preferred if k in values] or [
        k for k, v in values.items() if _is_scalar(v) and not any(part in k for part in _NOT_SHOWN) and k != "loss"]
    if not shown and "loss" in values:
        shown = ["loss"]
    row.split = split
    for name in shown[:SHOWN]:
        value = values[name]
        if isinstance(value, dict):  # a seed group's {"mean", "std", "n"}
            mean, std = value.get("mean"), value.get("std")
            row.metrics[name] = f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")
            value = mean
        else:
            row.metrics[name] = round(float(value), 4)
        if row.main_value is None:
            row.main_metric, row.main_value = name, float(value)


def _is_scalar(value) -> bool:
    if isinstance(value, dict):
        return isinstance(value.get("mean"), (int, float))
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _relative(root: Path, path: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _mtime(path: Path) -> str:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
    except OSError:
        return ""


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())[:200]


def filter_runs(rows: list[RunSummary], search: str = "", status: str = "", task: str = "", sort_by: str = "date",
                descending: bool = True) -> list[RunSummary]:
    """The Runs page's search (any word in the run's name, task, checkpoint, strategy or status), filters and sort."""
    words = search.lower().split()
    kept = [r for r in rows
            if (not status or r.status == status) and (not task or r.task == task)
            and all(w in f"{r.id} {r.task} {r.checkpoint} {r.strategy} {r.status} {r.detail}".lower() for w in words)]
    if sort_by == "metric":
        with_value = sorted((r for r in kept if r.main_value is not None), key=lambda r: r.main_value,
                            reverse=descending)
        return with_value + [r for r in kept if r.main_value is None]
    key = {"date": lambda r: (r.date, r.id), "name": lambda r: r.id, "task": lambda r: (r.task, r.id),
           "status": lambda r: (r.status, r.id)}.get(sort_by, lambda r: (r.date, r.id))
    return sorted(kept, key=key, reverse=descending)
