"""Dropout with cheaper random masks for CPU training (`speed.cheap_dropout`).

On CPU, torch draws every dropout mask element from its Mersenne Twister one at a time
(`bernoulli_`, ~6 ns per element on this project's machine): for a MiniLM step that is ~15% of the
step (`benchmarks/step_profile.py`). Here each 64-bit draw of the same generator gives the
keep/drop decisions of four elements (16 random bits each, compared with a threshold): ~5x cheaper. The masks are still Bernoulli(1 - p) with p quantised to 1/65536, the
kept values are scaled by 1 / (1 - p) of that p, and the generator is torch's global one, so
`set_seed` makes runs repeatable. The random stream differs from torch's, as a different seed would.

Two places draw masks: `nn.Dropout` modules (replaced by `CheapDropout`, which has no weights, so
saved checkpoints are unchanged) and attention-probability dropout inside SDPA, which on CPU runs
torch's math kernel whenever dropout is on; the `"sdpa_cheap_dropout"` attention function passes that
kernel a mask from `keep_mask`. Both fall back to torch outside CPU training (GPUs draw masks with a
fast counter-based generator already).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from hftl.speed import private_hooks

ATTENTION_NAME = "sdpa_cheap_dropout"
# The private APIs of the attention part (torch's CPU SDPA math kernel, which takes a precomputed dropout mask, and
# transformers' attention registries) are checked by `hftl.speed.private_hooks` ("sdpa_math_dropout"); without
# them the model keeps its attention function and only its `nn.Dropout` layers change.
_RESOLUTION = 1 << 16  # p is quantised to 1/65536: each mask element gets 16 random bits


def _threshold(p: float) -> int:
    return round(p * _RESOLUTION)


def keep_mask(shape, p: float, device=None) -> torch.Tensor:
    """A boolean mask, True with probability 1 - `effective_p(p)`, from torch's global generator."""
    count = math.prod(shape)
    # 64 random bits per draw (the full int64 range), read as four int16 lanes uniform on [-32768, 32767]
    draws = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-(1 << 63), None)
    lanes = draws.view(torch.int16)[:count].view(shape)
    return lanes >= _threshold(p) - (1 << 15)


def effective_p(p: float) -> float:
    """The drop probability `keep_mask` actually uses for `p`."""
    return _threshold(p) / _RESOLUTION


def _cheap_applies(p: float, tensor: torch.Tensor) -> bool:
    return tensor.device.type == "cpu" and 0 < _threshold(p) < _RESOLUTION


def cheap_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """`nn.functional.dropout(x, p, training=True)` with a `keep_mask` mask."""
    mask = keep_mask(x.shape, p, x.device)
    return torch.where(mask, x, 0).mul_(1.0 / (1.0 - effective_p(p)))


class CheapDropout(nn.Dropout):
    """`nn.Dropout` drawing its masks with `keep_mask` when training on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not _cheap_applies(self.p, x):
            return super().forward(x)
        return cheap_dropout(x, self.p)


def sdpa_cheap_dropout(module, query, key, value, attention_mask, dropout: float = 0.0, **kwargs):
    """transformers' SDPA attention function, with the dropout mask drawn by `keep_mask` on CPU.

    With dropout on, torch's CPU SDPA runs its math kernel, which takes an optional precomputed mask:
    the result is what SDPA computes, with this module's random stream. Anything else (no dropout,
    GPUs, position biases, GQA) goes to transformers' own `sdpa_attention_forward` unchanged.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = (
        not module.training
        or not _cheap_applies(dropout, query)
        or query.shape[1] != key.shape[1]  # grouped-query attention: leave head bookkeeping to transformers
        or kwargs.get("position_bias") is not None
        or (attention_mask is not None and attention_mask.dtype != torch.bool)
    )
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, **kwargs)
    is_causal = kwargs.get("is_causal")
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    is_causal = bool(query.shape[2] > 1 and attention_mask is None and is_causal)
    if attention_mask is not None:  # what SDPA does with a boolean mask before calling its math kernel
        attention_mask = torch.zeros_like(attention_mask, dtype=query.dtype).masked_fill_(~attention_mask, -torch.inf)
    batch, heads, q_length, _ = query.shape
    mask = keep_mask((batch, heads, q_length, key.shape[2]), dropout, query.device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Dropout mask should only be used for testing")
        output, _ = torch._scaled_dot_product_attention_math(
            query, key, value, attention_mask, effective_p(dropout), is_causal, mask, scale=kwargs.get("scaling")
        )
    return output.transpose(1, 2).contiguous(), None


def use_cheap_dropout(model: nn.Module) -> int:
    """Switch `model` to cheap dropout masks; returns how many dropout layers changed.

    `nn.Dropout` modules become `CheapDropout` (same `p`, no weights); a model running transformers'
    SDPA attention runs `sdpa_cheap_dropout` instead.
    """
    changed = 0
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = CheapDropout  # same attributes, new forward: parents keep their references
            changed += 1
    _use_cheap_attention(model)
    return changed


def _use_cheap_attention(model: nn.Module) -> None:
    """Point the model's attention at `sdpa_cheap_dropout` where the private APIs it relies on are as checked
    (`private_hooks`, "sdpa_math_dropout"); else the model keeps its attention."""
    if not private_hooks.available("sdpa_math_dropout"):
        return
    from transformers import AttentionInterface, PreTrainedModel
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    if ATTENTION_NAME not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionInterface.register(ATTENTION_NAME, sdpa_cheap_dropout)
        AttentionMaskInterface.register(ATTENTION_NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    for module in model.modules():
        config = getattr(module, "config", None)
        if (isinstance(module, PreTrainedModel) and getattr(config, "_attn_implementation", None) == "sdpa"
                and hasattr(config, "_attn_implementation_internal")):
            config._attn_implementation_internal = ATTENTION_NAME
