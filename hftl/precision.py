"""The precision a run computes its figures in, one rule for every task: float32, unless `speed.bf16: true`
asks for bfloat16 (`Recipe.inference_precision`), whatever precision training ran in. `hftl evaluate`, on the
finished run, computes the same figures.

accelerate puts its mixed-precision autocast on the model's forward at each `prepare`: in training, and in the
Trainer's first evaluation, before training. `evaluating_in` takes it off and keeps it off while a run evaluates.
"""

from __future__ import annotations

import contextlib
import logging

logger = logging.getLogger(__name__)

FLOAT32, BFLOAT16, FLOAT16 = "float32", "bfloat16", "float16"


def without_autocast(accelerator, model) -> None:
    """Take accelerate's mixed-precision forward wrappers off `model`, so that what it computes next is float32.
    accelerate wraps once per `prepare`, and `unwrap_model(keep_fp32_wrapper=False)`, its public way back,
    removes one layer (it pops the `_original_forward` it saved)."""
    model = accelerator.unwrap_model(model)
    for _ in range(8):  # a few layers at most
        if "_original_forward" not in model.__dict__:
            return
        accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    logger.warning("could not remove the mixed-precision autocast wrappers: evaluation may be in half precision")


def evaluation_precision(trainer, wanted: str) -> str:
    """What a run's evaluations compute in: `wanted`, or the training's own half precision (logged) where float32
    cannot be had beside it: under FSDP or DeepSpeed, whose mixed-precision policy keeps the parameters in half
    precision (accelerate sets one from the run's `mixed_precision`), or where accelerate's `prepare_model` no
    longer reads `native_amp` as `evaluating_in` expects (the private hook `accelerate_prepare`). The manifest
    records it."""
    half = BFLOAT16 if trainer.args.bf16 else FLOAT16 if trainer.args.fp16 else None
    if half is None or wanted != FLOAT32:
        return wanted if half else FLOAT32
    if getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False):
        logger.info("FSDP / DeepSpeed keep the parameters in %s (their mixed-precision policy): the run is "
                    "evaluated so", half)
        return half
    from hftl.speed.private_hooks import available

    if not available("accelerate_prepare"):  # the reason is logged by the probe
        return half
    return FLOAT32


@contextlib.contextmanager
def evaluating_in(trainer, precision: str):
    """Evaluate inside in `precision` (from `evaluation_precision`). float32 beside half-precision training:
    the autocast wrappers come off the model (and off a TRL trainer's reference model), none is added while inside,
    and the half-precision last evaluation of training is not reused (`HftlTrainer.reuse_final_eval`)."""
    if precision != FLOAT32 or not (trainer.args.bf16 or trainer.args.fp16):
        yield
        return
    accelerator = trainer.accelerator
    trainer.reuse_final_eval = False
    for model in (trainer.model, getattr(trainer, "ref_model", None)):
        if model is not None:
            without_autocast(accelerator, model)
    saved, accelerator.native_amp = accelerator.native_amp, False
    try:
        yield
    finally:
        accelerator.native_amp = saved


def autocast_for(model, precision: str):
    """bfloat16 autocast on the model's device for `precision` bfloat16; nothing for float32 (or no torch model:
    an ONNX export)."""
    import torch

    if precision != BFLOAT16 or not isinstance(model, torch.nn.Module):
        return contextlib.nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16)
