"""`compare_runs`: one table over finished runs, multi-seed groups and whole studies, with a config diff and
overlaid training curves. `hftl compare` prints it and writes it to a folder; the web UI shows the same object.

What a path may be:

* a run folder (`training.output_dir` of `hftl train`): one row;
* a multi-seed folder (`hftl train --seeds N`, `hftl.seeds`): one row, each metric the mean ± std over the seeds;
* any other folder holding such folders (a study of `hftl tune`, or a folder of runs): one row per member, in
  natural order (`trial-2` before `trial-10`).

Every value is read through `RunDir` (the run folder's layout) and the run's own saved config.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from hftl.errors import HftlError
from hftl.files import write_atomic
from hftl.run_dir import RunDir

logger = logging.getLogger(__name__)

#: config keys that differ between runs without being a choice of the user: never diffed
_NOT_SETTINGS = ("training.output_dir", "overwrite", "resume")
#: config keys shown as their own columns (not repeated among the differing hyperparameters)
_OWN_COLUMNS = {"task": "task", "model.name_or_path": "checkpoint", "model.strategy": "strategy"}
#: config keys naming data files: in the diff, not in the table
_DATA_FILES = ("data.train", "data.validation", "data.test")
SPLITS = ("validation", "test")


@dataclass
class Comparison:
    """What `compare_runs` returns.

    Args:
        rows (`list[dict]`): one per run or seed group, in the order given. Keys: `run` (its name), `path`, `task`,
            `checkpoint`, `strategy`, `seeds` (how many runs the row stands for), every differing hyperparameter by
            its dotted config key, `<split>_<metric>` (the mean for a seed group) and `<split>_<metric>_std` (seed
            groups only), `train_time_s` and `trainable_params`.
        config_diff (`dict[str, list]`): dotted config key -> its value in each row, for the keys that differ.
        curves (`list[list[dict]]`): per row, the Trainer's log history (`trainer_state.json`; a seed group's
            first seed).
        metrics (`list[str]`): the metric names of the `<split>_<metric>` columns, in order.
        studies (`list[Path]`): the study folders among the paths (their figures are drawn by `write`).
    """

    rows: list[dict]
    config_diff: dict[str, list]
    curves: list[list[dict]]
    metrics: list[str] = field(default_factory=list)
    studies: list[Path] = field(default_factory=list)

    # -- the table ----------------------------------------------------------------------------------
    @property
    def hyperparameters(self) -> list[str]:
        """The differing config keys shown as table columns (checkpoint, strategy and data files aside)."""
        return [k for k in self.config_diff if k not in _OWN_COLUMNS and k not in _DATA_FILES]

    def columns(self) -> list[str]:
        """The table's columns, in order (each a key of the rows)."""
        metric_columns = [f"{split}_{m}" for split in SPLITS for m in self.metrics
                          if any(f"{split}_{m}" in row for row in self.rows)]
        return ["run", "task", "checkpoint", "strategy", "seeds", *self.hyperparameters, *metric_columns,
                "train_time_s", "trainable_params"]

    def cell(self, row: dict, column: str) -> str:
        """A row's value as the table shows it: 'mean ± std' for seed groups, 4 decimals for metrics."""
        value = row.get(column)
        if value is None:
            return ""
        if column.split("_", 1)[0] in SPLITS and isinstance(value, float):
            std = row.get(f"{column}_std")
            return f"{value:.4f}" + (f" ± {std:.4f}" if std is not None else "")
        if column == "train_time_s":
            return f"{value:.1f}"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    def markdown(self) -> str:
        """The table and the config diff in Markdown."""
        columns = self.columns()
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(self.cell(r, c).replace("|", "\\|") for c in columns) + " |" for r in self.rows]
        lines += ["", "## Config diff", ""]
        if not self.config_diff:
            lines.append("The configs are identical (output folders aside).")
        else:
            names = [r["run"] for r in self.rows]
            lines += ["| key | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
            lines += [f"| {key} | " + " | ".join("" if v is None else str(v) for v in values) + " |"
                      for key, values in self.config_diff.items()]
        return "\n".join(lines) + "\n"

    def terminal_table(self, max_width: int = 28) -> str:
        """The table as aligned plain text (cells cut at `max_width` characters)."""
        columns = self.columns()
        cells = [[c.replace("validation_", "val_") for c in columns]] + [[self.cell(r, c) for c in columns] for r in self.rows]
        cells = [[v if len(v) <= max_width else v[:max_width - 1] + "…" for v in line] for line in cells]
        widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
        text = ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in cells]
        return "\n".join([text[0], "  ".join("-" * w for w in widths), *text[1:]])

    def csv(self) -> str:
        """Every column of the table, unformatted, plus the std of seed groups' metrics."""
        columns = self.columns()
        columns += [f"{c}_std" for c in columns if any(f"{c}_std" in r for r in self.rows)]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()

    # -- files --------------------------------------------------------------------------------------
    def write(self, folder: str | Path) -> dict[str, Path]:
        """Write `comparison.md`, `comparison.csv`, `curves.png` and, for each study, Optuna's figures, into
        `folder`; returns the files by role."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = {"markdown": folder / "comparison.md", "csv": folder / "comparison.csv"}
        curves = plot_overlaid_curves([r["run"] for r in self.rows], self.curves, folder / "curves.png",
                                      self.metrics[:1])
        figures = {}
        for study in self.studies:
            from hftl.tune.figures import study_figures

            figures.update(study_figures(study, folder))
        text = ["# Comparison", "", self.markdown()]
        if curves:
            files["curves"] = curves
            text += ["## Training curves", "", f"![training and validation curves]({curves.name})", ""]
        for name, path in figures.items():
            files[name] = path
            text += [f"![{name.replace('_', ' ')}]({path.name})", ""]
        write_atomic(files["markdown"], "\n".join(text))
        write_atomic(files["csv"], self.csv())
        return files


# -- reading runs -------------------------------------------------------------------------------------
def is_seed_group(path: Path) -> bool:
    """A `hftl train --seeds N` folder: its metrics list the seed runs it aggregates."""
    metrics = RunDir(path).metrics() if (path / RunDir.METRICS).is_file() else {}
    return not (path / RunDir.CONFIG).is_file() and isinstance(metrics.get("runs"), list)


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def expand(path: str | Path) -> list[Path]:
    """The runs and seed groups a path stands for (see the module docstring)."""
    path = Path(path)
    if not path.is_dir():
        raise HftlError(f"{path}: not a folder. Give run folders (training.output_dir), multi-seed folders or study "
                        "folders.")
    if (path / RunDir.CONFIG).is_file() or is_seed_group(path):
        return [path]
    members = [child for child in sorted(path.iterdir(), key=_natural_key)
               if child.is_dir() and ((child / RunDir.CONFIG).is_file() or is_seed_group(child))]
    if not members:
        raise HftlError(f"{path}: holds no hftl run (no {RunDir.CONFIG}), no multi-seed run and no study. Give the "
                        "training.output_dir of finished runs.")
    return members


def flatten(data, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    if not isinstance(data, dict):
        return {prefix: data}
    flat = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat


def _run_config(run: RunDir) -> tuple[dict, tuple[str, ...]]:
    """(the run's config, flattened, with local paths made absolute; the task's summary metrics)."""
    from hftl.tasks import recipe_for_run

    try:
        recipe = recipe_for_run(run.path)
    except HftlError as err:  # a config this version of hftl cannot read: compare what the file says
        logger.warning("%s: %s; its config is compared as saved.", run.path, err)
        import yaml

        return flatten(yaml.safe_load(run.config_file.read_text(encoding="utf-8")) or {}), ()
    config = flatten(recipe.config.to_dict())
    return config, tuple(recipe.summary_metrics)


def _display_path(value):
    """A local path as the user reaches it from here (relative to the working folder where shorter)."""
    import os

    if isinstance(value, str) and os.path.isabs(value):
        relative = os.path.relpath(value)
        return relative if len(relative) < len(value) else value
    return value


def _single_run(path: Path) -> tuple[dict, dict, list[dict], tuple[str, ...]]:
    """(row without config columns, flat config, log history, summary metrics) of one run folder."""
    run = RunDir(path)
    config, shown = _run_config(run)
    metrics = run.metrics()
    train = metrics.get("train") or {}
    row = {"seeds": 1, "train_time_s": train.get("train_runtime"), "trainable_params": train.get("trainable_params")}
    for split in SPLITS:
        for key, value in (metrics.get(split) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[f"{split}_{key}"] = float(value)
    return row, config, run.trainer_state().get("log_history", []), shown


def _seed_group(path: Path) -> tuple[dict, dict, list[dict], tuple[str, ...]]:
    """The same for a multi-seed folder: mean and std over its seeds; its first seed's config and curves."""
    aggregate = RunDir(path).metrics()
    runs = [path / name for name in aggregate["runs"] if (path / name / RunDir.CONFIG).is_file()]
    if not runs:
        raise HftlError(f"{path}: none of its seed runs ({', '.join(aggregate['runs'])}) is a finished run folder.")
    _, config, curves, shown = _single_run(runs[0])
    config["training.seed"] = ", ".join(str(s) for s in aggregate.get("seeds", []))
    train = aggregate.get("train") or {}
    row = {"seeds": len(aggregate["runs"]),
           "train_time_s": (train.get("train_runtime") or {}).get("mean"),
           "trainable_params": (train.get("trainable_params") or {}).get("mean")}
    if row["trainable_params"] is not None:
        row["trainable_params"] = int(row["trainable_params"])
    for split in SPLITS:
        for key, value in (aggregate.get(split) or {}).items():
            if isinstance(value, dict) and "mean" in value and "." not in key:
                row[f"{split}_{key}"] = float(value["mean"])
                row[f"{split}_{key}_std"] = value.get("std")
    return row, config, curves, shown


def _names(paths: list[Path]) -> list[str]:
    """Short distinct names: the folder name, with its parent's where two share one."""
    names = [p.name for p in paths]
    names = [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 and p.parent.name else p.name for p in paths]
    return [f"{n} ({i + 1})" if names.count(n) > 1 else n for i, n in enumerate(names)]


def compare_runs(paths) -> Comparison:
    """Compare run folders, multi-seed folders and study folders (see the module docstring).

    Args:
        paths (`list[str | Path]`): the folders, in the order the table shows them.
    """
    members, studies = [], []
    for path in paths:
        found = expand(path)
        if found != [Path(path)]:
            studies.append(Path(path))
        members += found
    rows, configs, curves, metrics = [], [], [], []
    for path, name in zip(members, _names(members)):
        read = _seed_group if is_seed_group(path) else _single_run
        row, config, history, shown = read(path)
        for key in _NOT_SETTINGS:
            config.pop(key, None)
        config = {k: _display_path(v) if k in ("model.name_or_path", *_DATA_FILES) else v for k, v in config.items()}
        rows.append({"run": name, "path": str(path), **{col: config.get(key) for key, col in _OWN_COLUMNS.items()},
                     **row})
        configs.append(config)
        curves.append(history)
        metrics += [m for m in shown if m not in metrics]
    diff = config_diff(configs)
    for row, config in zip(rows, configs):
        row.update({key: config.get(key) for key in diff if key not in _OWN_COLUMNS and key not in _DATA_FILES})
    if not metrics:  # configs this version cannot read: every numeric validation metric
        metrics = sorted({k.split("_", 1)[1] for r in rows for k in r if k.startswith("validation_")
                          and not k.endswith("_std")})
    studies = [s for s in studies if _is_study(s)]
    return Comparison(rows=rows, config_diff=diff, curves=curves, metrics=metrics, studies=studies)


def _is_study(path: Path) -> bool:
    try:
        from hftl.tune.folder import StudyDir
    except ImportError:
        return False
    return StudyDir(path).is_study()


def config_diff(configs: list[dict]) -> dict[str, list]:
    """Dotted key -> value per config, for the keys whose values differ (a key a config lacks counts as None)."""
    keys = list(dict.fromkeys(k for config in configs for k in config))
    diff = {}
    for key in keys:
        values = [config.get(key) for config in configs]
        if any(v != values[0] for v in values[1:]):
            diff[key] = values
    return diff


# -- figures ------------------------------------------------------------------------------------------
def plot_overlaid_curves(names: list[str], histories: list[list[dict]], path: Path,
                         metrics: list[str] = ()) -> Path | None:
    """Training loss, validation loss and the first validation metric by step, one line per run; None if no run
    logged anything."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [("loss", "training loss"), ("eval_loss", "validation loss")]
    panels += [(f"eval_{m}", f"validation {m}") for m in metrics]
    panels = [(key, title) for key, title in panels if any(key in e for h in histories for e in h)]
    if not panels:
        return None
    figure = Figure(figsize=(5 * len(panels), 4))
    FigureCanvasAgg(figure)
    for i, (key, title) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), i)
        for name, history in zip(names, histories):
            points = [(e["step"], e[key]) for e in history if key in e and "step" in e]
            if points:
                axes.plot(*zip(*points), marker="o" if key.startswith("eval_") else None, markersize=3, label=name)
        axes.set(xlabel="step", title=title)
        axes.grid(alpha=0.3)
    figure.axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


__all__ = ["Comparison", "compare_runs", "config_diff", "expand", "flatten", "plot_overlaid_curves"]
