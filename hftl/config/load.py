"""Read a run config: YAML file, `a.b=value` overrides on top, paths resolved, types checked."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from hftl.config.parse import check_keys, coerce, did_you_mean
from hftl.config.schema import DataConfig, DistillationConfig, HubConfig, ModelConfig, RunConfig, SpeedConfig
from hftl.config.validate import check_training_args
from hftl.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-4` (no dot) as a string; every ML config means a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


# Fields that name local inputs: resolved relative to the config file when such a path exists.
_INPUT_PATHS = {"model": ["name_or_path"], "data": ["train", "validation", "test"], "distillation": ["teacher"]}


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file not found: {path}. Check the path, or start from one in recipes/configs/."])
    try:
        data = parse_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError([f"not valid YAML: {err}"], source=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError([f"the top level must be a mapping of sections, got {type(data).__name__}."], str(path))
    return data


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Merge `section.key=value` overrides into the config data; values are parsed as YAML (`1e-4`, `true`, `[a, b]`)."""
    problems = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"override '{item}': expected KEY=VALUE, e.g. training.learning_rate=1e-4.")
            continue
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                problems.append(f"override '{item}': '{key}' is not a section.")
                break
            node = child
        else:
            node[keys[-1]] = parse_yaml(raw) if raw.strip() else None
    if problems:
        raise ConfigError(problems, source="--set")
    return data


def resolve_paths(data: dict, base_dir: Path) -> None:
    """Make relative input paths relative to the config file's folder (where they exist there)."""
    for section, keys in _INPUT_PATHS.items():
        values = data.get(section)
        if not isinstance(values, dict):
            continue
        for key in keys:
            value = values.get(key)
            if isinstance(value, str) and value and not os.path.isabs(value) and ":" not in value.split("/")[0]:
                candidate = base_dir / value
                if candidate.exists() or value.startswith(("./", "../")):
                    values[key] = str(candidate.resolve())


def parse_config(data: dict, tasks: Mapping[str, type[DataConfig]], source: str | None = None) -> RunConfig:
    """Turn config data into a `RunConfig`, raising one `ConfigError` that lists every problem.

    Args:
        data (`dict`): the config as read from YAML.
        tasks (`Mapping[str, type[DataConfig]]`): the known task names and the `data` section class of each
            (the caller asks the task registry; this layer knows no task).
        source (`str`, *optional*): the config file, named in the error.
    """
    config, problems, _ = build_config(data, tasks, source)
    if problems:
        raise ConfigError(problems, source)
    return config


def default_output_dir(source: str | None) -> str:
    """Where a run is saved when the config names no `training.output_dir`: `runs/<config file stem>`."""
    return str(Path("runs") / (Path(source).stem if source else "run"))


def build_config(data: dict, tasks: Mapping[str, type[DataConfig]], source: str | None = None):
    """`(config, problems, failed)`: the config with every section that parsed (None for those that did not, named
    in `failed`), and every problem found. Callers that check files go on with the parts that parsed, so one
    message reports structural and data problems together."""
    problems: list[str] = []
    check_keys(data, RunConfig.__dataclass_fields__, "config", problems)
    task = data.get("task")
    data_class = None
    if task is None:
        problems.append(f"config: missing required key 'task' (one of: {', '.join(tasks)}).")
    elif str(task) not in tasks:
        problems.append(f"config.task: unknown task '{task}'.{did_you_mean(str(task), tasks)} Known tasks: {', '.join(tasks)}.")
    else:
        data_class = tasks[str(task)]

    # a misspelt section ("trainng") is reported once, as an unknown key, not again as a missing section
    fields = RunConfig.__dataclass_fields__
    misspelt = {m for k in data if k not in fields for m in difflib.get_close_matches(str(k), fields, n=1, cutoff=0.6)}
    failed: set[str] = set()

    def section(name, cls, required=False):
        before = len(problems)
        if name not in data:
            if required and name not in misspelt:
                problems.append(f"config: missing required section '{name}'.")
            value = None if required else cls()
        else:
            value = coerce(data[name], cls, name, problems)
        if value is None or len(problems) > before:
            failed.add(name)
            return None
        return value

    model = section("model", ModelConfig, required=True)
    data_cfg = section("data", data_class, required=True) if data_class else None
    if data_class is None:
        failed.add("data")
    hub = section("hub", HubConfig)
    speed = section("speed", SpeedConfig)
    distillation = section("distillation", DistillationConfig)
    training = data.get("training") or {}
    if not isinstance(training, dict):
        problems.append(f"training: expected a mapping of TrainingArguments, got {training!r}.")
        training = {}
    training_problems = check_training_args(training)
    if training_problems:
        problems += training_problems
        failed.add("training")
    training = {"output_dir": default_output_dir(source), **training}
    flags = {k: coerce(data.get(k, False), bool, k, problems) for k in ("overwrite", "resume")}
    search = data.get("search") or {}
    if not isinstance(search, dict):  # its keys and ranges are checked by `hftl tune` (hftl.tune.space)
        problems.append(f"search: expected a mapping of config keys to ranges or choices, got {search!r}.")
        search = {}
    config = RunConfig(task=task, model=model, data=data_cfg, training=training, hub=hub, speed=speed,
                       distillation=distillation, search=search, **flags)
    return config, problems, failed


def read_config(source: str | Path | dict, tasks: Mapping[str, type[DataConfig]], overrides=(), partial: bool = False):
    """Read, override, resolve and type-check a run config (no file or checkpoint checks: see `hftl.preflight`).

    Args:
        source (`str`, `Path` or `dict`): a YAML file, or the config data itself.
        tasks (`Mapping[str, type[DataConfig]]`): see `parse_config`.
        overrides (`list[str]`, *optional*): `section.key=value` strings applied on top.
        partial (`bool`, *optional*, defaults to `False`): return `build_config`'s `(config, problems, failed)`
            instead of raising a `ConfigError`.
    """
    if isinstance(source, dict):
        data, name, base_dir = dict(source), None, Path.cwd()
    else:
        data, name, base_dir = read_yaml(source), str(source), Path(source).resolve().parent
    apply_overrides(data, list(overrides))
    resolve_paths(data, base_dir)
    return build_config(data, tasks, name) if partial else parse_config(data, tasks, name)
