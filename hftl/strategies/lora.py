"""`lora`: peft LoRA adapters on the attention projections; the head trains fully (`modules_to_save`)."""

from __future__ import annotations

import torch

from hftl.errors import ConfigError

# Attention projection names by architecture family, in order of preference. Resolved from the model's
# own module names rather than its model_type, so renames (transformers 5 ViT: query -> q_proj) just work.
_AUTO_TARGETS = [
    ("q_proj", "v_proj"),  # Llama, Mistral, Qwen, transformers-5 ViT/DeiT, ...
    ("query", "value"),  # BERT, RoBERTa, ELECTRA, MiniLM
    ("q_lin", "v_lin"),  # DistilBERT
    ("c_attn",),  # GPT-2 (fused qkv Conv1D)
    ("query_key_value",),  # GPT-NeoX, Falcon
    ("Wqkv",),  # ModernBERT, MPT
    ("qkv",),  # Swin, BEiT-style fused
]


def _adaptable_leaf_names(model) -> set[str]:
    from transformers.pytorch_utils import Conv1D

    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))}


def resolve_lora_targets(model, requested: str | list[str]) -> list[str]:
    """The module names LoRA adapts: `requested` checked against the model, or the architecture's default."""
    available = _adaptable_leaf_names(model)
    if requested != "auto":
        missing = [name for name in requested if name not in available]
        if missing:
            raise ConfigError([
                f"model.lora.target_modules: {missing} match no Linear layer of this model. "
                f"Layers it has: {', '.join(sorted(available))}. Or use 'auto'."
            ])
        return list(requested)
    for group in _AUTO_TARGETS:
        if all(name in available for name in group):
            return list(group)
    raise ConfigError([
        "model.lora.target_modules: 'auto' knows no attention projections of this architecture. "
        f"Name them, choosing from: {', '.join(sorted(available))}."
    ])


def apply_lora(model, config, head_modules, peft_task_type=None):
    from peft import LoraConfig, get_peft_model

    lora = config.lora
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=resolve_lora_targets(model, lora.target_modules),
        modules_to_save=list(head_modules) or None,
        task_type=peft_task_type,
    )
    model = get_peft_model(model, peft_config)
    # peft's task models append their own head names (e.g. classifier, score for SEQ_CLS) to ours: keep each once,
    # so the saved adapter_config.json lists every module to save one time.
    saved = model.peft_config["default"].modules_to_save
    if saved:
        model.peft_config["default"].modules_to_save = list(dict.fromkeys(saved))
    return model
