"""Run configuration: schema (typed dataclasses), loading (YAML + overrides) and validation."""

from hftl.config.load import load_config
from hftl.config.schema import DataConfig, HubConfig, LoraConfig, ModelConfig, RunConfig, SpeedConfig

__all__ = ["load_config", "RunConfig", "ModelConfig", "LoraConfig", "DataConfig", "HubConfig", "SpeedConfig"]
