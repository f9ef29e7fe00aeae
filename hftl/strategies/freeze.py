"""`freeze`: the backbone is frozen and only the head trains (a linear probe), optionally with the top N blocks."""

from __future__ import annotations

import torch

from hftl.errors import ConfigError


def transformer_blocks(model) -> torch.nn.ModuleList | None:
    """The model's stack of transformer blocks: its largest `ModuleList` (encoder.layer, h, layers...)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()), default=None)


def apply_freeze(model, config, head_modules, peft_task_type=None):
    model.requires_grad_(False)
    for name in head_modules:
        model.get_submodule(name).requires_grad_(True)
    if config.trainable_layers:
        blocks = transformer_blocks(model)
        if blocks is None or config.trainable_layers > len(blocks):
            found = 0 if blocks is None else len(blocks)
            raise ConfigError([f"model.trainable_layers: {config.trainable_layers} asked, the model has {found} blocks. "
                               f"Use at most {found}."])
        for block in blocks[-config.trainable_layers:]:
            block.requires_grad_(True)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(["model.strategy: 'freeze' left nothing to train: the model has no head. Use 'full' or 'lora'."])
    return model
