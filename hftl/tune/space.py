"""The search space of `hftl tune`: the config's `search:` section (or the defaults), checked up front and sampled
once per trial.

The syntax is fixed, so configs stay portable: each key is a dotted config key, and its value is either a range,
a mapping `{low, high}` with optional `log: true` and `step`, or a list of choices:

    search:
      model.strategy: [full, lora]
      model.lora.r: [4, 8, 16]                                   # sampled only in lora trials
      training.learning_rate: {low: 1.0e-5, high: 3.0e-4, log: true}
      training.num_train_epochs: {low: 1, high: 4}               # ints stay ints (step 1)

Settings that apply to one strategy only (`model.lora.*` to `lora`, `model.trainable_layers` to `freeze`) are
conditional: a trial samples them only when its strategy is that one, so they are absent from the others.

When the strategy is searched, any key can take one range (or list) per strategy, since the strategies want
different values: LoRA trains at learning rates about ten times full fine-tuning's (docs/tuning.md).

      training.learning_rate:
        full: {low: 1.0e-5, high: 2.0e-4, log: true}
        lora: {low: 1.0e-4, high: 2.0e-3, log: true}

Each is a parameter of its own for Optuna (`training.learning_rate[lora]`), so TPE models each strategy's values
apart; a strategy the mapping leaves out keeps the config's value.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path

from hftl.config.parse import did_you_mean
from hftl.config.schema import Strategy

#: settings that apply to one strategy only: key prefix -> the strategy that uses them
CONDITIONAL = {"model.lora.": "lora", "model.trainable_layers": "freeze"}
#: keys a search may not name, and why
NOT_SEARCHABLE = {
    "task": "a study tunes one task",
    "training.output_dir": "each trial's folder is trial-N inside the study folder",
    "training.seed": "a seed is not a hyperparameter: picking the luckiest seed overfits validation; use "
                     "--top K --seeds S to re-run the best configurations over several seeds",
    "data.train": "every trial must be judged on the same data",
    "data.validation": "every trial must be judged on the same validation data",
    "data.test": "the test split is never seen during a search",
    "data.validation_fraction": "every trial must be judged on the same validation data",
    "overwrite": "not a hyperparameter",
    "resume": "not a hyperparameter",
}
_RANGE_KEYS = ("low", "high", "log", "step")
_STRATEGIES = typing.get_args(Strategy)
_SCALAR = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Param:
    """One searched config key.

    Args:
        key (`str`): the dotted config key, e.g. `training.learning_rate`.
        choices (`tuple`, *optional*): the values of a choice (None for a range).
        low, high (`int` or `float`, *optional*): the bounds of a range (both included).
        log (`bool`): sample the range on a log scale.
        step (`int` or `float`, *optional*): the range's grid (ints: default 1).
        strategy (`str`, *optional*): the strategy this setting applies to (sampled only in its trials).
        per_strategy (`bool`): one of a key's ranges per strategy; its Optuna name says which (`key[strategy]`).
    """

    key: str
    choices: tuple | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    strategy: str | None = None
    per_strategy: bool = False

    @property
    def name(self) -> str:
        """The parameter's name in the Optuna study (and its figures)."""
        return f"{self.key}[{self.strategy}]" if self.per_strategy else self.key

    @property
    def where(self) -> str:
        """Where the parameter is written in the config, for messages."""
        return f"search.{self.key}" + (f".{self.strategy}" if self.per_strategy else "")

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) and not isinstance(v, bool)
                                            for v in (self.low, self.high, self.step) if v is not None)

    def suggest(self, trial):
        """The value for `trial` (an `optuna.Trial`); list choices travel through Optuna as JSON strings."""
        if self.choices is not None:
            if all(isinstance(c, _SCALAR) for c in self.choices):
                return trial.suggest_categorical(self.name, list(self.choices))
            return json.loads(trial.suggest_categorical(self.name, [json.dumps(c) for c in self.choices]))
        if self.is_int:
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def values_to_check(self) -> list:
        """The values whose acceptance by the config checks stands for the whole parameter."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(json.dumps(c) for c in self.choices)
        text = f"{self.low} to {self.high}" + (" (log scale)" if self.log else "")
        return text + (f", step {self.step}" if self.step else "")

    def to_data(self):
        """The parameter in the `search:` syntax."""
        if self.choices is not None:
            return list(self.choices)
        data = {"low": self.low, "high": self.high}
        if self.log:
            data["log"] = True
        if self.step is not None:
            data["step"] = self.step
        return data


@dataclass(frozen=True)
class SearchSpace:
    """The parameters of a study, with where the space came from (`search:` or the defaults)."""

    params: tuple[Param, ...]
    source: str = "search"

    def to_data(self) -> dict:
        data = {}
        for p in self.params:
            if p.per_strategy:
                data.setdefault(p.key, {})[p.strategy] = p.to_data()
            else:
                data[p.key] = p.to_data()
        return data

    def summary(self) -> str:
        """One line: how many parameters, and which apply to one strategy only."""
        conditional = [f"{p.name} in {p.strategy} trials only" for p in self.params if p.strategy]
        return f"{len(self.params)} parameters" + (f" ({', '.join(conditional)})" if conditional else "")

    def sample(self, trial, base_strategy: str) -> dict:
        """Sample one configuration: dotted key -> value. The strategy is drawn first (when searched); settings of
        another strategy are not sampled at all."""
        values = {}
        ordered = sorted(self.params, key=lambda p: p.key != "model.strategy")
        for param in ordered:
            strategy = values.get("model.strategy", base_strategy)
            if param.strategy is None or param.strategy == strategy:
                values[param.key] = param.suggest(trial)
        return values


def overrides(values: dict) -> list[str]:
    """`--set` strings for sampled values (JSON is YAML: strings, numbers, lists and null all read back)."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


# -- reading and checking the section ------------------------------------------------------------------
def known_keys(recipe_cls) -> list[str]:
    """Every dotted config key a search may name (`model.config_overrides.*` is open: checked per checkpoint)."""
    from transformers import TrainingArguments

    from hftl.config.schema import LoraConfig, ModelConfig, SpeedConfig
    from hftl.config.validate import HFTL_TRAINING_KEYS

    keys = [f"model.{f.name}" for f in dataclasses.fields(ModelConfig) if f.name not in ("lora", "config_overrides")]
    keys += [f"model.lora.{f.name}" for f in dataclasses.fields(LoraConfig)]
    keys += [f"data.{f.name}" for f in dataclasses.fields(recipe_cls.data_config_class)]
    keys += [f"training.{f.name}" for f in dataclasses.fields(TrainingArguments) if f.init]
    keys += [f"training.{k}" for k in HFTL_TRAINING_KEYS]
    keys += [f"speed.{f.name}" for f in dataclasses.fields(SpeedConfig)]
    return keys


def _strategy_of(key: str) -> str | None:
    return next((strategy for prefix, strategy in CONDITIONAL.items() if key.startswith(prefix)), None)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_params(key: str, spec, problems: list[str]) -> list[Param]:
    """One entry of `search:` (a range or list, or one per strategy); every problem of its syntax goes to
    `problems`."""
    if not (isinstance(spec, dict) and spec and any(k in _STRATEGIES for k in spec)):
        param = parse_param(key, spec, problems)
        return [param] if param is not None else []
    where = f"search.{key}"
    if not all(k in _STRATEGIES for k in spec):
        others = [str(k) for k in spec if k not in _STRATEGIES]
        problems.append(f"{where}: mixes strategies with {', '.join(others)}. Give either one range {{low, high}} or "
                        f"list for every trial, or one per strategy ({', '.join(_STRATEGIES)}).")
        return []
    if key == "model.strategy":
        problems.append(f"{where}: the strategy cannot be searched per strategy; give a list, e.g. [full, lora].")
        return []
    only = _strategy_of(key)
    if only is not None and set(spec) != {only}:
        problems.append(f"{where}: applies only to strategy '{only}'; give one range or list, not one per strategy.")
        return []
    params = []
    for strategy, sub in spec.items():
        param = parse_param(key, sub, problems, where=f"{where}.{strategy}")
        if param is not None:
            params.append(dataclasses.replace(param, strategy=strategy, per_strategy=True))
    return params


def parse_param(key: str, spec, problems: list[str], where: str | None = None) -> Param | None:
    """One range or list of `search:`; every problem of its syntax goes to `problems`."""
    where = where or f"search.{key}"
    if isinstance(spec, list):
        if not spec:
            problems.append(f"{where}: the list of choices is empty; give at least one value, or remove the key.")
            return None
        try:
            encoded = [json.dumps(c, sort_keys=True) for c in spec]
        except TypeError:
            problems.append(f"{where}: choices must be plain values (numbers, strings, booleans, null or lists).")
            return None
        if len(set(encoded)) < len(encoded):
            problems.append(f"{where}: a choice is listed twice ({spec}); list each value once.")
            return None
        return Param(key, choices=tuple(spec), strategy=_strategy_of(key))
    if not isinstance(spec, dict):
        problems.append(f"{where}: expected a range {{low: ..., high: ...}} (optional log: true, step: ...) or a "
                        f"list of choices, got {spec!r}. For a fixed value, set it in the config instead.")
        return None
    before = len(problems)
    for unknown in (k for k in spec if k not in _RANGE_KEYS):
        hint = did_you_mean(str(unknown), _RANGE_KEYS + _STRATEGIES)
        problems.append(f"{where}: unknown range key '{unknown}'.{hint} A range takes low, high, log and step; one "
                        f"range per strategy is a mapping from {', '.join(_STRATEGIES)}.")
    low, high, log, step = (spec.get(k) for k in _RANGE_KEYS)
    for name, value in (("low", low), ("high", high)):
        if value is None:
            problems.append(f"{where}: missing '{name}'; a range needs both low and high.")
        elif not _number(value):
            problems.append(f"{where}.{name}: expected a number, got {value!r}.")
    if log is not None and not isinstance(log, bool):
        problems.append(f"{where}.log: expected true or false, got {log!r}.")
    if step is not None and (not _number(step) or step <= 0):
        problems.append(f"{where}.step: expected a positive number, got {step!r}.")
    if len(problems) > before:
        return None
    if low > high:
        problems.append(f"{where}: low ({low}) is greater than high ({high}); swap them.")
    if log and low <= 0:
        problems.append(f"{where}: a log range needs low > 0, got low = {low}. Use a positive low, or drop log.")
    if log and step is not None:
        problems.append(f"{where}: a log range cannot have a step (Optuna samples log ranges continuously); drop one.")
    if len(problems) > before:
        return None
    return Param(key, low=low, high=high, log=bool(log), step=step, strategy=_strategy_of(key))


def parse_space(search: dict, recipe_cls, base_strategy: str) -> tuple[SearchSpace | None, list[str]]:
    """The `search:` section as a `SearchSpace`, and every problem of its keys, syntax and conditions."""
    problems: list[str] = []
    if not search:
        return None, ["search: the space is empty. Name at least one config key, e.g. training.learning_rate: "
                      "{low: 1.0e-5, high: 3.0e-4, log: true}, or remove search: to use the defaults for the "
                      "task and strategy (docs/tuning.md)."]
    allowed = known_keys(recipe_cls)
    params = []
    for key, spec in search.items():
        key = str(key)
        if key in NOT_SEARCHABLE:
            problems.append(f"search.{key}: cannot be searched: {NOT_SEARCHABLE[key]}.")
            continue
        if key.startswith("hub."):
            problems.append(f"search.{key}: cannot be searched: where a model is pushed is not a hyperparameter.")
            continue
        if key not in allowed and not (key.startswith("model.config_overrides.") and key.count(".") == 2):
            hint = did_you_mean(key, allowed) or " Keys are dotted config keys such as training.learning_rate."
            problems.append(f"search: unknown key '{key}'.{hint}")
            continue
        params += parse_params(key, spec, problems)
    strategies = _reachable_strategies(params, base_strategy)
    for param in params:
        if param.strategy and param.strategy not in strategies:
            problems.append(
                f"{param.where}: applies only to strategy '{param.strategy}', which no trial uses "
                f"(model.strategy is '{base_strategy}'{' and' if len(strategies) == 1 else ', searched over'} "
                f"{'not searched' if len(strategies) == 1 else ', '.join(sorted(strategies))}). Add "
                f"'{param.strategy}' to search.model.strategy, or remove this key.")
    return (SearchSpace(tuple(params)) if params else None), problems


def _reachable_strategies(params, base_strategy: str) -> set[str]:
    searched = next((p for p in params if p.key == "model.strategy"), None)
    return set(searched.choices) if searched is not None and searched.choices else {base_strategy}


def value_problems(space: SearchSpace, config_data: dict, base_dir, recipe_cls, source: str | None) -> list[str]:
    """Every value the space can give that the config checks reject: each choice, and each range's bounds, set on
    the config (with the strategy it applies to) and read as `hftl train` reads it (types, choices, ranges; a
    `model.name_or_path` choice must be a checkpoint that exists and fits the task). Problems the config has
    whatever the value are left to the config's own checks."""
    import copy

    from hftl.config.load import apply_overrides, build_config, resolve_paths
    from hftl.errors import ConfigError
    from hftl.modeling import check_model_source
    from hftl.checks import check_model_architecture

    tasks = {recipe_cls.task: recipe_cls.data_config_class}

    def read(settings: dict):
        data = copy.deepcopy(config_data)
        apply_overrides(data, overrides(settings))
        resolve_paths(data, base_dir)
        return build_config(data, tasks, source)

    _, existing, _ = read({})
    problems = []
    for param in space.params:
        for value in param.values_to_check():
            settings = {param.key: value, **({"model.strategy": param.strategy} if param.strategy else {})}
            try:
                config, found, failed = read(settings)
            except ConfigError as err:
                problems += [f"{param.where}: {p}" for p in err.problems]
                continue
            found = [p for p in found if p not in existing]
            if not found and param.key == "model.name_or_path" and "model" not in failed:
                found = check_model_source(config.model) or check_model_architecture(config, recipe_cls)
            shown = json.dumps(value)
            problems += [f"{param.where}: the value {shown} is rejected by the config checks: {p}" for p in found]
    return problems


def read_space(config_path: str | Path, user_overrides=(), defaults: bool = True):
    """`(space, sources, problems)`: the search space of the config at `config_path` as `hftl tune` reads it, its
    `search:` section (or, when it has none and `defaults`, the defaults for its task and strategy, with `sources`,
    key -> where its range comes from), and every problem of the space's keys, syntax and values. `hftl tune` and
    `hftl validate` both check a space here. A config whose task is unknown has no space (its own checks say why).
    """
    from hftl.config import read_config
    from hftl.config.load import apply_overrides, read_yaml
    from hftl.tasks import get_recipe_class, task_data_classes
    from hftl.tune.defaults import default_search

    first, _, _ = read_config(config_path, task_data_classes(), user_overrides, partial=True)
    raw = apply_overrides(read_yaml(config_path), list(user_overrides))
    given = "search" in raw  # `search: {}` is an empty space; no `search:` at all means the defaults
    if first.task not in task_data_classes() or not (given or defaults):
        return None, {}, []
    recipe_cls = get_recipe_class(first.task)
    strategy = first.model.strategy if first.model else "full"
    search, sources = (first.search, {}) if given else default_search(recipe_cls, strategy)
    space, problems = parse_space(search, recipe_cls, strategy)
    if space is not None:
        problems += value_problems(space, raw, Path(config_path).resolve().parent, recipe_cls, str(config_path))
        space = SearchSpace(space.params, "search" if given else "defaults")
    return space, sources, problems
