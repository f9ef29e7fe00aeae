"""Multi-seed runs: one config trained under several seeds (data order, head initialisation and the held-out
validation split all follow `training.seed`), and the mean and spread of every metric.

    hftl train CONFIG --seeds 3

writes `training.output_dir/seed-<seed>/` (complete runs, each with its card) and, in `training.output_dir`
itself, `metrics.json` (`{split: {metric: {mean, std, n}}}` and the seeds) and `README.md`, a table of
mean ± standard deviation. A difference between two configs smaller than this spread is not a difference.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from hftl.run_dir import RunDir

logger = logging.getLogger(__name__)


@dataclass
class SeedsResult:
    """What `run_seeds` returns: the aggregate folder, the aggregate metrics and each seed's `RunResult`."""

    run_dir: Path
    aggregate: dict
    seeds: list[int]
    runs: list = field(default_factory=list, repr=False)


def seed_values(base: int, count: int) -> list[int]:
    """`count` seeds starting at the config's own: base, base + 1, ..."""
    if count < 1:
        raise ValueError(f"--seeds must be at least 1, got {count}.")
    return [base + i for i in range(count)]


def run_seeds(config, seeds: int | list[int], recipe_class=None) -> SeedsResult:
    """Train `config` once per seed and aggregate the metrics.

    Args:
        config (`RunConfig`, `str` or `Path`): a loaded config, or a YAML file.
        seeds (`int` or `list[int]`): how many seeds (from the config's `training.seed` up), or the seeds.
        recipe_class (`type[Recipe]`, *optional*): default: the registered recipe of the config's task.
    """
    from hftl.calibration import aggregate_seeds
    from hftl.config.schema import RunConfig
    from hftl.runner import run_recipe
    from hftl.tasks import get_recipe_class

    if not isinstance(config, RunConfig):
        from hftl.preflight import load_config

        config = load_config(config)
    seeds = seed_values(config.seed, seeds) if isinstance(seeds, int) else list(seeds)
    recipe_class = recipe_class or get_recipe_class(config.task)
    out = RunDir(config.output_dir)
    main_process = os.environ.get("RANK", "0") == "0"  # a distributed launch: its other processes take no lock
    with out.lock() if main_process else contextlib.nullcontext():  # the aggregate folder; each seed's run its own
        out.prepare(config.overwrite, resume=False)
        runs = []
        for seed in seeds:
            one = copy.deepcopy(config)
            one.training = {**config.training, "seed": seed, "output_dir": str(out.path / f"seed-{seed}")}
            one.overwrite, one.resume = False, False
            logger.info("seed %d (%d of %d) -> %s", seed, len(runs) + 1, len(seeds), one.output_dir)
            runs.append(run_recipe(recipe_class(one)))
        aggregate = aggregate_seeds([r.metrics for r in runs])
        out.write_metrics({**aggregate, "seeds": seeds, "runs": [f"seed-{s}" for s in seeds]})
        recipe = runs[-1].recipe  # its problem type is resolved: it says which metrics to show
        shown = tuple(dict.fromkeys((*recipe.summary_metrics, *recipe.card_metrics)))
        (out.path / RunDir.CARD).write_text(render_seed_table(aggregate, seeds, shown, config), encoding="utf-8")
    return SeedsResult(run_dir=out.path, aggregate=aggregate, seeds=seeds, runs=runs)


def format_spread(value: dict, digits: int = 4) -> str:
    """'mean ± std' of one aggregated metric (just the mean where one run has it)."""
    if value.get("std") is None:
        return f"{value['mean']:.{digits}f}"
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


def render_seed_table(aggregate: dict, seeds: list[int], shown: tuple[str, ...], config) -> str:
    """The aggregate folder's README: mean ± sample standard deviation over the seeds, per split and metric."""
    lines = [f"# {Path(config.output_dir).name}: {len(seeds)} seeds", "",
             f"The same config (`{config.task}`, `{config.model.name_or_path}`, strategy {config.model.strategy}) "
             f"trained with seeds {', '.join(map(str, seeds))}: data order, head initialisation and the held-out "
             "validation split follow the seed. Each cell is the mean ± the sample standard deviation over the "
             "seeds; each run's own card is in its `seed-N/` folder. A difference smaller than the spread is not "
             "a difference.", ""]
    splits = [s for s in ("validation", "test") if s in aggregate]
    columns = [m for m in shown if any(m in aggregate[s] for s in splits)]
    lines += ["| split | " + " | ".join(c.replace("_", " ") for c in columns) + " |",
              "|---|" + "---|" * len(columns)]
    for split in splits:
        cells = [format_spread(aggregate[split][c]) if c in aggregate[split] else "" for c in columns]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_lines(result: SeedsResult, shown: tuple[str, ...]) -> list[str]:
    """The end-of-run lines of a multi-seed run."""
    lines = [f"{len(result.seeds)} seeds ({', '.join(map(str, result.seeds))}) saved in {result.run_dir}"]
    for split in ("validation", "test"):
        values = result.aggregate.get(split) or {}
        cells = [f"{m} {format_spread(values[m])}" for m in shown if m in values]
        if cells:
            lines.append(f"{split}: " + "  ".join(cells))
    return lines
