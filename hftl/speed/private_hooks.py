"""Every private torch / transformers API hftl relies on, listed and checked in one place.

Each `PrivateHook` names the trick it serves, what exactly it relies on, the file that uses it and the versions it
was checked on, and carries a probe: a cheap check, run once per process, that the API is still there and (where a
few tensors can tell) still behaves as the trick assumes. Where a probe fails, the trick is off, with the reason
logged once, and the stock path runs: a private API that changed can cost speed, never a wrong result.

`check_private_hooks()` runs every probe; `hftl.trainer.build_trainer` calls it before each run and records the
tricks it turned off in the run's manifest (`speedups.turned_off`). The tricks ask `available(name)` at the point
of use. evaluate's private `EvaluationModule._build_data_dir` is no longer used: `hftl.metrics` gives its metrics
a data directory through the public `cache_dir` argument.
"""

from __future__ import annotations

import functools
import inspect
import logging
import types
import warnings
from dataclasses import dataclass
from typing import Callable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrivateHook:
    """One private API and the trick that relies on it.

    Args:
        trick (`str`): what turns off without it (a `speed.*` switch, or one of hftl's fixes).
        relies_on (`str`): the private API and what the trick assumes of it.
        used_in (`str`): the file that uses it.
        checked_on (`str`): the versions it was checked on.
        probe (`Callable[[], str | None]`): None where the API is usable, else why not (raising counts as not).
    """

    trick: str
    relies_on: str
    used_in: str
    checked_on: str
    probe: Callable[[], str | None]


def _signature_problem(owner, name: str, parameters: tuple[str, ...]) -> str | None:
    """None if `owner.name` is a function taking `parameters` (after `self`), in that order: exactly, or a prefix
    of them followed by `*args` / `**kwargs` that take the rest (a wrapper's signature)."""
    function = getattr(owner, name, None)
    if not callable(function):
        return f"{owner.__name__}.{name} does not exist"
    found = list(inspect.signature(function).parameters.values())[1:]
    named = tuple(p.name for p in found if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    takes_the_rest = any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in found)
    if named == parameters or (takes_the_rest and parameters[:len(named)] == named):
        return None
    return f"{owner.__name__}.{name} takes ({', '.join(p.name for p in found)}), not ({', '.join(parameters)})"


def _trainer_method(name: str, *parameters: str) -> Callable[[], str | None]:
    def probe():
        from transformers import Trainer

        return _signature_problem(Trainer, name, parameters)

    return probe


def _probe_batch_sampler_path() -> str | None:
    """`Trainer._get_dataloader` hands a sampler that is a `BatchRebalanceSampler` to the DataLoader as its
    `batch_sampler`: run it, on a stand-in Trainer, with such a sampler over three rows."""
    import torch
    from transformers import Trainer
    from transformers.trainer_pt_utils import BatchRebalanceSampler

    class Batches(BatchRebalanceSampler):
        def __init__(self):  # none of BatchRebalanceSampler's own state: hftl's sampler keeps its own
            pass

        def __iter__(self):
            return iter([[2, 0], [1]])

        def __len__(self):
            return 2

    sampler = Batches()
    args = types.SimpleNamespace(
        dataloader_num_workers=0, dataloader_pin_memory=False, dataloader_persistent_workers=False,
        dataloader_multiprocessing_context=None, dataloader_prefetch_factor=None, dataloader_in_order=True,
        dataloader_drop_last=False, process_index=0)
    stand_in = types.SimpleNamespace(
        args=args, data_collator=torch.tensor, accelerator=types.SimpleNamespace(prepare=lambda loader: loader),
        _get_collator_with_removed_columns=lambda collator, description=None: collator)
    loader = Trainer._get_dataloader(stand_in, [10, 11, 12], "probe", 8, sampler_fn=lambda _: sampler,
                                     is_training=True)
    batches = [batch.tolist() for batch in loader]
    if getattr(loader, "batch_sampler", None) is not sampler or batches != [[12, 10], [11]]:
        return f"Trainer._get_dataloader did not batch by a BatchRebalanceSampler (batches: {batches})"
    return None


def _probe_sdpa_math() -> str | None:
    """torch's CPU SDPA math kernel takes a keep-mask for dropout: compare with the attention written out."""
    import torch
    from transformers import AttentionInterface  # noqa: F401 (the registries the attention function joins)
    from transformers.configuration_utils import PretrainedConfig
    from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: F401
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface  # noqa: F401

    if "sdpa" not in ALL_MASK_ATTENTION_FUNCTIONS:
        return "transformers' mask registry has no 'sdpa' entry"
    if not hasattr(PretrainedConfig(), "_attn_implementation_internal"):
        return "PretrainedConfig has no _attn_implementation_internal"
    math_kernel = getattr(torch, "_scaled_dot_product_attention_math", None)
    if math_kernel is None:
        return "torch has no _scaled_dot_product_attention_math"
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(1, 2, 3, 4, generator=generator) for _ in range(3))
    keep = torch.rand(1, 2, 3, 3, generator=generator) > 0.5
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Dropout mask should only be used for testing")
        output, _ = math_kernel(query, key, value, None, 0.5, False, keep, scale=0.3)
    expected = ((query @ key.transpose(-1, -2) * 0.3).softmax(-1) * keep / 0.5) @ value
    if not torch.allclose(output, expected, atol=1e-5):
        return "torch._scaled_dot_product_attention_math does not apply its dropout mask as a keep-mask"
    return None


def _probe_output_collector() -> str | None:
    """The context variable through which transformers' `capture_outputs` collects hidden states / attentions:
    set (a dict of what is collected) inside a model's forward, empty or None outside."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.utils.output_capturing import _active_collector

    if not callable(getattr(ALL_ATTENTION_FUNCTIONS, "get_interface", None)):
        return "transformers' ALL_ATTENTION_FUNCTIONS has no get_interface"
    if not callable(getattr(_active_collector, "get", None)):
        return "transformers.utils.output_capturing._active_collector has no get()"
    current = _active_collector.get()
    return None if current is None or isinstance(current, dict) else "_active_collector holds no dict"


def _probe_dataset_fingerprint() -> str | None:
    """A `datasets.Dataset` carries a fingerprint of its content (`_fingerprint`), the key of a reused evaluation."""
    import datasets

    fingerprint = getattr(datasets.Dataset.from_dict({"a": [1]}), "_fingerprint", None)
    return None if isinstance(fingerprint, str) and fingerprint else "datasets.Dataset has no _fingerprint"


def _probe_cpu_bf16_check() -> str | None:
    import torch

    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if not callable(check) or not isinstance(check(), bool):
        return "torch.cpu._is_avx512_bf16_supported is missing or answers no bool"
    return None


def _probe_accelerate_prepare() -> str | None:
    """`Accelerator.prepare_model` returns a model flagged `_is_accelerate_prepared` as it is, records what it
    prepared in `_models`, and puts autocast on the forward when `native_amp`: read in its source."""
    import inspect

    from accelerate import Accelerator

    source = inspect.getsource(Accelerator.prepare_model)
    missing = [name for name in ("_is_accelerate_prepared", "self._models", "self.native_amp") if name not in source]
    return f"Accelerator.prepare_model no longer reads {', '.join(missing)}" if missing else None


#: name -> hook; the names are what `available` is asked and what the manifest records
HOOKS: dict[str, PrivateHook] = {
    "train_sampler": PrivateHook(
        "speed.length_buckets, speed.token_budget",
        "Trainer._get_train_sampler(train_dataset) chooses the training sampler", "hftl/speed/trainer.py",
        "transformers 5.24, 5.25", _trainer_method("_get_train_sampler", "train_dataset")),
    "eval_sampler": PrivateHook(
        "speed.sort_eval_by_length",
        "Trainer._get_eval_sampler(eval_dataset) chooses the evaluation / prediction sampler", "hftl/speed/trainer.py",
        "transformers 5.24, 5.25", _trainer_method("_get_eval_sampler", "eval_dataset")),
    "evaluation_loop": PrivateHook(
        "speed.reuse_final_eval",
        "Trainer.evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix) "
        "runs every evaluation and prediction", "hftl/speed/trainer.py", "transformers 5.24, 5.25",
        _trainer_method("evaluation_loop", "dataloader", "description", "prediction_loss_only", "ignore_keys",
                        "metric_key_prefix")),
    "dataset_fingerprint": PrivateHook(
        "speed.reuse_final_eval",
        "datasets.Dataset._fingerprint identifies the evaluated data (with the step: the reused evaluation's key)",
        "hftl/speed/trainer.py", "datasets 5.2", _probe_dataset_fingerprint),
    "cpu_bf16_check": PrivateHook(
        "bf16: auto on CPUs (bfloat16 autocast where AVX512-BF16 / AMX run it natively; float32 without the check)",
        "torch.cpu._is_avx512_bf16_supported() tells whether this CPU has native bfloat16", "hftl/trainer.py",
        "torch 2.13", _probe_cpu_bf16_check),
    "batch_sampler_path": PrivateHook(
        "speed.token_budget",
        "Trainer._get_dataloader passes a trainer_pt_utils.BatchRebalanceSampler to the DataLoader as its "
        "batch_sampler (and keeps accelerate from re-sharding it)", "hftl/speed/token_budget.py",
        "transformers 5.24, 5.25", _probe_batch_sampler_path),
    "save": PrivateHook(
        "saving tied weights once under FSDP (hftl.speed.trainer.share_tied_weights)",
        "Trainer._save(output_dir, state_dict) writes the model, with the gathered state dict under FSDP",
        "hftl/speed/trainer.py", "transformers 5.24, 5.25", _trainer_method("_save", "output_dir", "state_dict")),
    "load_from_checkpoint": PrivateHook(
        "resuming checkpoints saved under original weight names (hftl.speed.trainer.load_renamed_checkpoint)",
        "Trainer._load_from_checkpoint(resume_from_checkpoint, model) restores the weights on resume",
        "hftl/speed/trainer.py", "transformers 5.24, 5.25",
        _trainer_method("_load_from_checkpoint", "resume_from_checkpoint", "model")),
    "sdpa_math_dropout": PrivateHook(
        "speed.cheap_dropout in attention (nn.Dropout layers keep it)",
        "torch._scaled_dot_product_attention_math takes a dropout keep-mask; transformers' "
        "integrations.sdpa_attention.sdpa_attention_forward, AttentionInterface / AttentionMaskInterface registries "
        "and PretrainedConfig._attn_implementation_internal", "hftl/speed/cheap_dropout.py",
        "torch 2.13, transformers 5.24, 5.25", _probe_sdpa_math),
    "accelerate_prepare": PrivateHook(
        "the before-training evaluation (data.baseline) and float32 figures after half-precision training",
        "Accelerator.prepare_model returns a model flagged _is_accelerate_prepared as it is (so the evaluation-only "
        "preparation of the Trainer's first evaluation is forgotten before training: else DDP would train without "
        "its wrapper), records it in Accelerator._models, and adds autocast when Accelerator.native_amp",
        "hftl/trainer.py, hftl/precision.py", "accelerate 1.16", _probe_accelerate_prepare),
    "output_collector": PrivateHook(
        "speed.first_token_last_layer",
        "transformers.utils.output_capturing._active_collector tells a layer whether hidden states or attentions "
        "are being collected; modeling_utils.ALL_ATTENTION_FUNCTIONS.get_interface",
        "hftl/speed/first_token_last_layer.py", "transformers 5.24, 5.25", _probe_output_collector),
}


@functools.cache
def problem(name: str) -> str | None:
    """Why hook `name` is not usable here (logged once, as a warning), or None."""
    hook = HOOKS[name]
    try:
        reason = hook.probe()
    except Exception as err:  # noqa: BLE001 (any failure of a probe means the API is not what the trick expects)
        reason = f"{type(err).__name__}: {err}"
    if reason is not None:
        logger.warning("%s: off, the stock path runs instead. It relies on %s (%s, checked on %s), and here %s.",
                       hook.trick, hook.relies_on, hook.used_in, hook.checked_on, reason)
    return reason


def available(name: str) -> bool:
    """Whether the trick relying on hook `name` may run."""
    return problem(name) is None


def check_private_hooks() -> dict[str, str]:
    """Probe every hook (once per process); returns {hook name: reason} for those not usable."""
    return {name: reason for name in HOOKS if (reason := problem(name)) is not None}


def recheck() -> None:
    """Forget the probes' results (tests that take an API away)."""
    problem.cache_clear()
