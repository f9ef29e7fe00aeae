"""Adaptation strategies: what trains. One function per strategy, chosen by `model.strategy`.

Each takes the loaded model, the `ModelConfig`, and the names of the head modules (the task's head plus
anything the checkpoint did not contain, which starts from random weights and must train).
"""

from hftl.strategies.freeze import apply_freeze
from hftl.strategies.full import apply_full
from hftl.strategies.lora import apply_lora, resolve_lora_targets
from hftl.strategies.params import count_parameters

STRATEGIES = {"full": apply_full, "freeze": apply_freeze, "lora": apply_lora}


def apply_strategy(model, config, head_modules: list[str], peft_task_type: str | None = None):
    """Apply `config.strategy` to `model` and return the model to train."""
    return STRATEGIES[config.strategy](model, config, head_modules=head_modules, peft_task_type=peft_task_type)


__all__ = ["STRATEGIES", "apply_strategy", "count_parameters", "resolve_lora_targets"]
