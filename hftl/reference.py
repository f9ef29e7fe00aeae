"""The config reference (docs/config.md), generated from the help text on the config dataclasses.

    python -m hftl.reference > docs/config.md
"""

from __future__ import annotations

import dataclasses

from hftl.config.schema import DistillationConfig, HubConfig, LoraConfig, ModelConfig, RunConfig, SpeedConfig
from hftl.tasks import registered_tasks


def _default(f) -> str:
    if f.default is not dataclasses.MISSING:
        return "`" + repr(f.default).replace("'", "") + "`"
    if f.default_factory is dataclasses.MISSING:
        return "**required**"
    value = f.default_factory()
    return "(section)" if dataclasses.is_dataclass(value) or isinstance(value, dict) else f"`{value!r}`".replace("'", "")


def section_table(title: str, cls) -> str:
    rows = [f"## `{title}`", "", "| key | default | meaning |", "|---|---|---|"]
    rows += [f"| `{f.name}` | {_default(f)} | {f.metadata.get('help', '')} |" for f in dataclasses.fields(cls)]
    return "\n".join(rows)


def _hftl_training_keys() -> str:
    """hftl's own keys of the `training` section (the rest are `TrainingArguments` fields)."""
    from hftl.config.validate import HFTL_TRAINING_KEYS

    rows = ["## `training` (hftl's own keys)", "", "| key | default | meaning |", "|---|---|---|"]
    return "\n".join(rows + [f"| `{key}` | `None` | {text} |" for key, text in HFTL_TRAINING_KEYS.items()])


def render() -> str:
    parts = [
        "# Config reference",
        "Generated from the config dataclasses by `python -m hftl.reference`; do not edit by hand.\n"
        "A run config is one YAML file; `--set section.key=value` overrides any key from the command line.\n"
        "`training` takes any `transformers.TrainingArguments` field (unknown keys are rejected with a suggestion).\n"
        "Relative data and model paths are resolved against the config file's folder; `training.output_dir`\n"
        "against the working directory, as in transformers.",
        section_table("top level", RunConfig),
        section_table("model", ModelConfig),
        section_table("model.lora", LoraConfig),
    ]
    for task, recipe in registered_tasks().items():
        parts.append(section_table(f"data (task: {task})", recipe.data_config_class))
    parts.append(_hftl_training_keys())
    parts += [section_table("speed", SpeedConfig), section_table("hub", HubConfig),
              section_table("distillation", DistillationConfig)]
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    print(render(), end="")
