"""Run configuration: schema (typed dataclasses), YAML + overrides, type checks. It knows no task: the caller hands
it the registered tasks' data classes (`hftl.preflight.load_config` does, and adds the checks that read files)."""

from hftl.config.load import read_config
from hftl.config.schema import DataConfig, HubConfig, LoraConfig, ModelConfig, RunConfig, SpeedConfig

__all__ = ["read_config", "RunConfig", "ModelConfig", "LoraConfig", "DataConfig", "HubConfig", "SpeedConfig"]
