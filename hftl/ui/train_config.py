"""The Train page's config: the form's fields and the YAML, kept in sync, and the file the UI validates and runs.

Paths in the form and the YAML are relative to the runs folder. `config_file` writes the config that `hftl
validate` and `hftl train` read: input paths and `training.output_dir` made absolute inside the root (a path
that leaves it is a problem, not a file read), remote code and pickle refused.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from hftl.errors import HftlError
from hftl.ui.jobs import UI_FOLDER

#: form field -> (config section, key)
FIELDS = {
    "task": (None, "task"),
    "checkpoint": ("model", "name_or_path"),
    "strategy": ("model", "strategy"),
    "train": ("data", "train"),
    "validation": ("data", "validation"),
    "test": ("data", "test"),
    "epochs": ("training", "num_train_epochs"),
    "learning_rate": ("training", "learning_rate"),
    "batch_size": ("training", "per_device_train_batch_size"),
    "max_steps": ("training", "max_steps"),
    "seed": ("training", "seed"),
}
_DATA_PATHS = ("train", "validation", "test")
#: what the UI never switches on (a run folder's base checkpoint or data could run code)
_REFUSED = (("model", "trust_remote_code"), ("model", "allow_pickle"))
_NUMBERS = {"epochs": float, "learning_rate": float, "batch_size": int, "max_steps": int, "seed": int}


def problem_key(field: str) -> str:
    section, key = FIELDS[field]
    return f"{section}.{key}" if section else key


def parse_yaml(text: str) -> tuple[dict, str | None]:
    """(the config dict, None) or ({}, what is wrong with the YAML)."""
    try:
        data = yaml.safe_load(text or "") or {}
    except yaml.YAMLError as err:
        return {}, f"YAML: {' '.join(str(err).split())}"
    if not isinstance(data, dict):
        return {}, "YAML: the config must be a mapping (task:, model:, data:, training:)."
    return data, None


def form_values(data: dict) -> dict:
    """The form's fields from a config dict ('' where the config has no value)."""
    values = {}
    for name, (section, key) in FIELDS.items():
        holder = data if section is None else data.get(section)
        value = holder.get(key, "") if isinstance(holder, dict) else ""
        values[name] = "" if value is None else value
    return values


def with_form(data: dict, values: dict) -> dict:
    """`data` with the form's fields set (an empty field removes its key; numbers parsed where they parse)."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for name, value in values.items():
        section, key = FIELDS[name]
        if isinstance(value, str):
            value = value.strip()
        if name in _NUMBERS and value not in ("", None):
            try:
                value = _NUMBERS[name](value)
                value = int(value) if isinstance(value, float) and value.is_integer() and name == "epochs" else value
            except (TypeError, ValueError):
                pass  # kept as typed: validation names the field
        holder = data if section is None else data.setdefault(section, {})
        if value in ("", None):
            holder.pop(key, None)
        else:
            holder[key] = value
    return {k: v for k, v in data.items() if v != {}}


def dump_yaml(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def config_file(paths, name: str, data: dict) -> tuple[Path | None, list[str]]:
    """Write the run config `name` for `hftl validate` / `hftl train`: (its file, problems the UI itself found).

    Args:
        paths (`RootPaths`): the root's gate.
        name (`str`): the run's name: its folder under the root (`training.output_dir` unless the YAML sets one).
        data (`dict`): the config as the page holds it (paths relative to the root).
    """
    problems = []
    name = (name or "").strip()
    if not name or "/" in name or name.startswith("."):
        return None, ["name: give the run a name (its folder under the runs folder; no '/', not starting with '.')."]
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for section, key in _REFUSED:
        if isinstance(data.get(section), dict) and data[section].get(key):
            problems.append(f"{section}.{key}: not enabled from the UI (it lets the checkpoint run code). Use "
                            "`hftl train` in a terminal if you trust it.")
    training = data.setdefault("training", {}) if isinstance(data.get("training", {}), dict) else {}
    try:
        training["output_dir"] = str(paths.resolve(training.get("output_dir") or name))
    except HftlError as err:
        problems.append(f"training.output_dir: {err}")
    section = data.get("data")
    for key in _DATA_PATHS:
        value = section.get(key) if isinstance(section, dict) else None
        if isinstance(value, str) and value.strip():
            try:
                section[key] = str(paths.resolve(value))
            except HftlError as err:
                problems.append(f"data.{key}: {err}")
    model = data.get("model")
    checkpoint = model.get("name_or_path") if isinstance(model, dict) else None
    if isinstance(checkpoint, str) and checkpoint and ":" not in checkpoint:
        local = Path(checkpoint).is_absolute() or checkpoint.startswith(".") or (paths.root / checkpoint).exists()
        if local:  # a folder (an earlier run...): inside the root; otherwise a Hub id, left as it is
            try:
                model["name_or_path"] = str(paths.resolve(checkpoint))
            except HftlError as err:
                problems.append(f"model.name_or_path: {err}")
    if problems:
        return None, problems
    folder = paths.root / UI_FOLDER / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(dump_yaml(data), encoding="utf-8")
    return path, []


def validation_problems(path: Path, overwrite: bool = False, resume: bool = False) -> list[str]:
    """Every problem `hftl validate` finds in the config file (the same `load_config`), [] if none."""
    from hftl.errors import ConfigError
    from hftl.preflight import load_config

    overrides = [f"{flag}=true" for flag, on in (("overwrite", overwrite), ("resume", resume)) if on]
    try:
        load_config(path, overrides)
    except ConfigError as err:
        return list(err.problems)
    except HftlError as err:
        return [str(err)]
    return []


def refused_overrides(overrides: list[str]) -> list[str]:
    """Problems with `--set KEY=VALUE` changes the UI passes on: no remote code or pickle, no other output folder."""
    problems = []
    for override in overrides:
        key, sep, _ = override.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"{override!r}: write KEY=VALUE, e.g. training.max_steps=2000.")
        elif key in {f"{s}.{k}" for s, k in _REFUSED} or key == "training.output_dir":
            problems.append(f"{key}: cannot be changed from the UI.")
    return problems
