"""Parameter bookkeeping shared by the strategies."""

from __future__ import annotations


def count_parameters(model) -> dict[str, int | float]:
    """Trainable and total parameter counts (peft wrappers included), and the trainable share in percent."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": trainable, "total_params": total, "trainable_percent": 100.0 * trainable / max(total, 1)}


def head_module_names(model, candidates, newly_initialised) -> list[str]:
    """Top-level module names of the task head: known head names present in `model`, plus the modules
    owning parameters the checkpoint lacked (they start random and must train)."""
    children = dict(model.named_children())
    names = [c for c in candidates if c in children]
    for key in newly_initialised:
        top = key.split(".")[0]
        if top in children and top not in names and not _is_backbone(children[top]):
            names.append(top)
        elif top in children and _is_backbone(children[top]):
            # e.g. bert.pooler missing from a sentence-transformers checkpoint: train that sub-module.
            sub = ".".join(key.split(".")[:2])
            if sub not in names:
                names.append(sub)
    return names


def _is_backbone(module) -> bool:
    import torch

    return sum(p.numel() for p in module.parameters()) > 0 and any(
        isinstance(m, torch.nn.ModuleList) for m in module.modules()
    )
